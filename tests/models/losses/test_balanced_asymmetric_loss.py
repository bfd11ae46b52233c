"""BalancedAsymmetricLoss against a float64 direct transcription."""
import numpy as np
import pytest
import torch

from lmclip_mm.models.losses.balanced_asymmetric_loss import \
    BalancedAsymmetricLoss


def reference_bal(x, y, gamma_pos=0.0, gamma_neg=4.0, clip=0.05, eps=1e-8,
                  label_smoothing=0.0, class_weight=None, loss_weight=1.0,
                  _detach_max=False):
    """The six steps of the definition, written out in float64."""
    x = x.double()
    y = y.double()
    n, c = x.shape
    t = (1 - label_smoothing) * y + label_smoothing / c
    a = 1 - y
    if _detach_max:  # only to show the tests see the gradient of the max
        z = x / x.max().detach()
    elif x.max().item() > 0:
        z = x / x.max()
    elif x.abs().max().item() > 0:
        z = x / x.abs().max()
    else:
        z = x / 1.0
    p = 1 / (1 + torch.exp(-z))
    if clip:
        q = torch.minimum(1 - p + clip, torch.ones_like(p))
    else:
        q = 1 - p
    w = 1.0 if class_weight is None else 1 + torch.as_tensor(
        class_weight, dtype=torch.float64)
    L = t * torch.log(torch.maximum(p, torch.full_like(p, eps))) * w \
        + a * torch.log(torch.maximum(q, torch.full_like(q, eps)))
    if gamma_pos > 0 or gamma_neg > 0:
        base = torch.clamp(1 - p * t - q * a, min=0)
        L = L * base**(gamma_pos * t + gamma_neg * a)
    return loss_weight * -(L.sum() / (n * c))


def _data(seed=0, n=6, c=5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g) * scale
    y = (torch.rand(n, c, generator=g) < 0.35).float()
    y[0, 0] = 1
    return x, y


def _check(x, y, atol=1e-6, **cfg):
    module = BalancedAsymmetricLoss(**cfg)
    x32 = x.clone().float().requires_grad_(True)
    loss = module(x32, y)
    loss.backward()
    x64 = x.clone().double().requires_grad_(True)
    ref = reference_bal(x64, y, **cfg)
    ref.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(x32.grad).all()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5, atol=atol)
    np.testing.assert_allclose(
        x32.grad.numpy(), x64.grad.numpy(), rtol=1e-4, atol=atol)
    return loss, x32.grad


SETTINGS = {
    'default': dict(),
    'label_smoothing': dict(label_smoothing=0.1),
    'class_weight': dict(class_weight=[0.1, 1.0, 0.5, 0.25, 0.9]),
    'gamma_pos': dict(gamma_pos=1.0, gamma_neg=3.0),
    'no_focus_no_clip': dict(gamma_pos=0.0, gamma_neg=0.0, clip=None),
    'gamma_neg_0_clip_none': dict(gamma_pos=2.0, gamma_neg=0.0, clip=None),
    'all_options': dict(gamma_pos=0.5, gamma_neg=2.0, clip=0.1,
                        label_smoothing=0.2, loss_weight=0.7,
                        class_weight=[0.3, 1.0, 0.0, 0.2, 0.6]),
}


@pytest.mark.parametrize('name', sorted(SETTINGS))
def test_matches_reference(name):
    x, y = _data()
    _check(x, y, **SETTINGS[name])


def test_reference_gradient_is_right():
    # The float64 reference's autograd gradient against finite differences,
    # so the comparisons above test against an independently checked value.
    x, y = _data(seed=3, n=3, c=4)
    for cfg in (dict(), dict(gamma_pos=1.0, label_smoothing=0.1,
                             class_weight=[1., .5, .2, 0.])):
        torch.autograd.gradcheck(lambda v: reference_bal(v, y, **cfg),
                                 x.double().requires_grad_(True))


def test_gradient_flows_through_the_max():
    x, y = _data(seed=1)
    _, grad = _check(x, y)
    # With the max detached the argmax entry would get another gradient
    # (much larger than the tolerance of the parity check above).
    xd = x.clone().double().requires_grad_(True)
    reference_bal(xd, y, _detach_max=True).backward()
    idx = x.argmax()
    assert abs(grad.flatten()[idx] - xd.grad.flatten()[idx]) > 1e-3


def test_all_negative_row():
    x, y = _data(seed=2)
    y[3] = 0
    _check(x, y)
    _check(x, y, label_smoothing=0.1, gamma_pos=1.0)


def test_all_negative_logits_uses_abs_max():
    x, y = _data(seed=4)
    x = -x.abs() - 0.1
    assert x.max() <= 0
    loss, _ = _check(x, y)
    # no sign flip: dividing by max(x) (< 0) would give another value
    flipped = reference_bal(x / x.max() * x.abs().max(), y)
    assert not np.isclose(loss.item(), flipped.item())


def test_all_zero_logits():
    x = torch.zeros(4, 3)
    y = torch.tensor([[1., 0, 0], [0, 1, 1], [0, 0, 0], [1, 1, 1]])
    loss, grad = _check(x, y)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_nonpositive_focusing_base_is_clamped():
    # Label smoothing + clipping: a very confident negative gets
    # 1 - p t - q a = -p eps_ls / C < 0; the factor is then 0, not NaN.
    x, y = _data(seed=5)
    x[2, 1] = -40.0
    y[2, 1] = 0
    cfg = dict(label_smoothing=0.3, gamma_neg=0.5, gamma_pos=0.5)
    loss, grad = _check(x, y, **cfg)
    assert torch.isfinite(grad).all()
    # and base exactly 0 (clip, no smoothing, gamma in (0, 1)) stays finite
    cfg = dict(gamma_neg=0.5, clip=0.2)
    module = BalancedAsymmetricLoss(**cfg)
    xg = x.clone().requires_grad_(True)
    module(xg, y).backward()
    assert torch.isfinite(xg.grad).all()


def test_bf16_autocast_returns_float32():
    x, y = _data(seed=6)
    lin = torch.nn.Linear(5, 5)
    torch.nn.init.eye_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    module = BalancedAsymmetricLoss(label_smoothing=0.1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = lin(x)
        assert logits.dtype == torch.bfloat16
        loss = module(logits, y)
    assert loss.dtype == torch.float32
    ref = reference_bal(logits.detach().double(), y, label_smoothing=0.1)
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)


def test_class_weight_setter_and_state_dict():
    x, y = _data()
    module = BalancedAsymmetricLoss()
    w = np.array([0.1, 1.0, 0.5, 0.25, 0.9])
    module.set_class_weight(w)
    loss = module(x, y)
    ref = reference_bal(x, y, class_weight=w)
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)
    # stored in the state dict; a fresh module adopts it when loading
    fresh = BalancedAsymmetricLoss()
    fresh.load_state_dict(module.state_dict())
    torch.testing.assert_close(fresh.class_weight, module.class_weight)
    module.set_class_weight(None)
    assert 'class_weight' not in module.state_dict()


def test_errors():
    module = BalancedAsymmetricLoss()
    x, y = _data()
    with pytest.raises(ValueError, match='shape'):
        module(x, y[:, :3])
    with pytest.raises(ValueError, match=r'\(N, C\)'):
        module(x[0], y[0])
    with pytest.raises(TypeError, match='floating'):
        module(x.long(), y)
    with pytest.raises(ValueError, match='class_weight has 3'):
        BalancedAsymmetricLoss(class_weight=[1, 2, 3])(x, y)
    with pytest.raises(ValueError, match='reduction_override'):
        module(x, y, reduction_override='max')
    with pytest.raises(ValueError, match='avg_factor can not be used'):
        module(x, y, avg_factor=3, reduction_override='sum')
    with pytest.raises(ValueError, match=r'\(N,\)'):
        module(x, y, weight=torch.ones(x.shape))
    with pytest.raises(ValueError, match='reduction'):
        BalancedAsymmetricLoss(reduction='max')
    with pytest.raises(ValueError, match='clip'):
        BalancedAsymmetricLoss(clip=1.5)


def test_in_mmpretrain_multilabel_head():
    from mmpretrain.models.heads import MultiLabelLinearClsHead
    from mmpretrain.structures import DataSample

    torch.manual_seed(0)
    head = MultiLabelLinearClsHead(
        num_classes=5,
        in_channels=4,
        loss=dict(type='BalancedAsymmetricLoss', label_smoothing=0.1))
    feats = (torch.randn(3, 4), )
    samples = [DataSample().set_gt_label(lbl) for lbl in ([0, 2], [1], [])]
    losses = head.loss(feats, samples)
    logits = head(feats)
    y = torch.zeros(3, 5)
    y[0, [0, 2]] = 1
    y[1, 1] = 1
    ref = reference_bal(logits.detach(), y, label_smoothing=0.1)
    # the head passes avg_factor=N: sum / N = C times the paper's mean over
    # N * C, the scale of mmpretrain's own multi-label losses
    np.testing.assert_allclose(losses['loss'].item(), 5 * ref.item(),
                               rtol=1e-5)
    # the paper's reduction (what LMCLIPClassifier calls) is unchanged
    np.testing.assert_allclose(head.loss_module(logits, y).item(),
                               ref.item(), rtol=1e-5)


@pytest.mark.parametrize('gamma_pos,gamma_neg,clip', [(0., 4., 0.05),
                                                      (1., 2., None)])
def test_mmpretrain_loss_protocol_equals_asymmetric_loss(gamma_pos, gamma_neg,
                                                         clip):
    """With max(x) = 1, BAL without class weights or smoothing is
    element-wise mmpretrain's AsymmetricLoss: weight, avg_factor and every
    reduction must then give AsymmetricLoss's numbers."""
    from mmpretrain.models.losses import AsymmetricLoss
    x, y = _data(3, n=7, c=6)
    x = x / x.max()  # max(x) == 1: z == x
    cfg = dict(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip,
               loss_weight=0.7)
    bal = BalancedAsymmetricLoss(**cfg)
    asl = AsymmetricLoss(**cfg)
    w = torch.rand(7) + 0.5
    for kwargs in (dict(), dict(avg_factor=7), dict(avg_factor=2.5),
                   dict(weight=w), dict(weight=w, avg_factor=7),
                   dict(reduction_override='sum'),
                   dict(reduction_override='sum', weight=w),
                   dict(reduction_override='none'),
                   dict(reduction_override='none', weight=w),
                   dict(reduction_override='mean', avg_factor=4)):
        np.testing.assert_allclose(bal(x, y, **kwargs).detach().numpy(),
                                   asl(x, y, **kwargs).detach().numpy(),
                                   rtol=2e-5, atol=1e-7, err_msg=str(kwargs))
    assert bal(x, y, reduction_override='none').shape == (7, 6)
    # reduction set at construction, as AsymmetricLoss
    for red in ('sum', 'none'):
        np.testing.assert_allclose(
            BalancedAsymmetricLoss(reduction=red, **cfg)(x, y).numpy(),
            AsymmetricLoss(reduction=red, **cfg)(x, y).numpy(), rtol=2e-5,
            atol=1e-7)


def test_in_head_is_on_the_scale_of_bce():
    """Inside MultiLabelLinearClsHead BAL and mmpretrain's sigmoid BCE are
    both sums over the classes averaged over the images."""
    from mmpretrain.models.heads import MultiLabelLinearClsHead
    from mmpretrain.structures import DataSample

    c = 20
    torch.manual_seed(0)
    heads = {
        name: MultiLabelLinearClsHead(num_classes=c, in_channels=8, loss=loss)
        for name, loss in (
            ('bal', dict(type='BalancedAsymmetricLoss', gamma_neg=0.,
                         clip=None)),
            ('bce', dict(type='CrossEntropyLoss', use_sigmoid=True)))}
    heads['bce'].load_state_dict(heads['bal'].state_dict())
    feats = (torch.randn(16, 8), )
    samples = [DataSample().set_gt_label([i % c, (3 * i) % c])
               for i in range(16)]
    logits = heads['bal'](feats).detach()
    # rescale the fc so that max(x) == 1: BAL (gammas 0, no clip) is BCE
    with torch.no_grad():
        for head in heads.values():
            head.fc.weight /= logits.max()
            head.fc.bias /= logits.max()
    bal = heads['bal'].loss(feats, samples)['loss'].item()
    bce = heads['bce'].loss(feats, samples)['loss'].item()
    assert bal == pytest.approx(bce, rel=1e-5)


# ----------------------------------------------------------------------------
# Distributed: W gloo processes (DDP) vs one process on all samples.

BAL_DIST_CASES = [
    # name, loss config, per-rank batch sizes, bias of the logits
    ('equal', dict(), (3, 3), 0.0),
    ('unequal', dict(), (4, 2), 0.0),
    ('weighted_smoothed', dict(gamma_pos=1.0, label_smoothing=0.1,
                               class_weight=[0.5, 1.0, 0.0, 2.0]), (3, 3),
     0.0),
    ('all_negative', dict(), (2, 4), -20.0),  # the max|x| branch
    ('per_rank', dict(global_batch=False), (3, 3), 0.0),
]


def _bal_run(state, x, y, cfg, bias, ddp=False):
    model = torch.nn.Linear(x.size(1), y.size(1))
    model.load_state_dict(state)
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    loss = BalancedAsymmetricLoss(**cfg)(net(x) + bias, y)
    loss.backward()
    return dict(loss=loss.item(),
                grads={n: p.grad.clone() for n, p in model.named_parameters()})


def _bal_worker(rank, world_size, port, out_file, state, x, y):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world_size)
    results = {}
    for name, cfg, sizes, bias in BAL_DIST_CASES:
        lo = sum(sizes[:rank])
        hi = lo + sizes[rank]
        results[name] = _bal_run(state, x[lo:hi], y[lo:hi], cfg, bias,
                                 ddp=True)
    torch.save(results, f'{out_file}.{rank}')
    dist.destroy_process_group()


def test_global_batch_two_processes_equal_one(tmp_path):
    """With DDP over 2 processes, BAL's batch max and mean span the global
    batch: the averaged gradients equal one process on all samples, also
    for unequal rank batches and the all-negative branch (the global max
    sits on one rank; its gradient reaches that rank only)."""
    import socket

    import torch.multiprocessing as mp
    torch.manual_seed(0)
    state = torch.nn.Linear(5, 4).state_dict()
    x = torch.randn(6, 5)
    x[4] *= 4  # the largest logits on rank 1 (samples 3..5)
    y = (torch.rand(6, 4) < 0.4).float()
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out_file = str(tmp_path / 'bal')
    mp.start_processes(_bal_worker, args=(2, port, out_file, state, x, y),
                       nprocs=2, start_method='fork')
    ranks = [torch.load(f'{out_file}.{r}') for r in range(2)]
    for name, cfg, sizes, bias in BAL_DIST_CASES:
        single = _bal_run(state, x, y, cfg, bias)
        if cfg.get('global_batch', True):
            # a rank's loss is its share of the global mean
            total = sum(r[name]['loss'] for r in ranks) / 2
            np.testing.assert_allclose(total, single['loss'], rtol=1e-6,
                                       err_msg=name)
            for key, grad in single['grads'].items():
                for r in ranks:  # DDP: the same averaged grads on each rank
                    torch.testing.assert_close(
                        r[name]['grads'][key], grad, rtol=1e-5, atol=1e-7,
                        msg=f'{name} {key}')
        else:
            # each rank normalises by its own batch: not the one-process
            # gradient (max over 3 samples instead of 6)
            diff = (ranks[0][name]['grads']['weight'] -
                    single['grads']['weight']).abs().max()
            assert diff > 1e-3, diff
