"""CLIPContrastiveLoss: float64 reference, and 2-process (gloo) parity."""
import math
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmclip_mm.models.losses.clip_contrastive_loss import CLIPContrastiveLoss


def reference_clip_loss(img, txt, scale, captions=None):
    """Direct float64 transcription (soft targets if captions given)."""
    img = img.double()
    txt = txt.double()
    img = img / img.norm(dim=1, keepdim=True)
    txt = txt / txt.norm(dim=1, keepdim=True)
    s = torch.as_tensor(scale).double()
    logits = s * img @ txt.T
    n = logits.shape[0]
    if captions is None:
        target = torch.eye(n, dtype=torch.float64)
    else:
        target = torch.tensor(
            [[float(a == b) for b in captions] for a in captions],
            dtype=torch.float64)
        target = target / target.sum(1, keepdim=True)

    def ce(lg):  # rows: -sum_j target_ij log softmax(lg)_ij, mean over i
        logp = lg - torch.log(torch.exp(lg).sum(1, keepdim=True))
        return -(target * logp).sum(1).mean()

    return (ce(logits) + ce(logits.T)) / 2


def _feats(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)


@pytest.mark.parametrize('captions', [None, ['a', 'b', 'a', 'c', 'b', 'a']])
def test_matches_reference(captions):
    img, txt = _feats()
    scale = torch.tensor(7.5)
    loss_fn = CLIPContrastiveLoss(
        loss_weight=0.5, caption_positives=captions is not None)
    i32 = img.clone().requires_grad_(True)
    t32 = txt.clone().requires_grad_(True)
    s32 = scale.clone().requires_grad_(True)
    loss = loss_fn(i32, t32, s32, captions)
    loss.backward()
    i64 = img.double().requires_grad_(True)
    t64 = txt.double().requires_grad_(True)
    s64 = scale.double().requires_grad_(True)
    ref = 0.5 * reference_clip_loss(i64, t64, s64, captions)
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-6)
    for a, b in ((i32, i64), (t32, t64), (s32, s64)):
        np.testing.assert_allclose(
            a.grad.numpy(), b.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_equal_captions_are_negatives_by_default():
    img, txt = _feats()
    captions = ['a', 'b', 'a', 'c', 'b', 'a']
    default = CLIPContrastiveLoss()(img, txt, 5.0, captions)
    np.testing.assert_allclose(
        default.item(), reference_clip_loss(img, txt, 5.0).item(), rtol=1e-6)
    positives = CLIPContrastiveLoss(caption_positives=True)(
        img, txt, 5.0, captions)
    assert not np.isclose(default.item(), positives.item())


def test_float32_under_autocast_and_errors():
    img, txt = _feats()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss = CLIPContrastiveLoss()(img.bfloat16(), txt.bfloat16(),
                                     torch.tensor(3.0))
    assert loss.dtype == torch.float32
    with pytest.raises(ValueError, match='same shape'):
        CLIPContrastiveLoss()(img, txt[:3], 1.0)
    with pytest.raises(ValueError, match='scalar'):
        CLIPContrastiveLoss()(img, txt, torch.ones(2))
    with pytest.raises(ValueError, match='one caption per sample'):
        CLIPContrastiveLoss(caption_positives=True)(img, txt, 1.0, ['a'])


# ----------------------------------------------------------------------------
# Distributed parity: 2 gloo processes vs. one process on all samples.


class _Towers(torch.nn.Module):
    """Two linear "towers" and a learnable log scale."""

    def __init__(self, d_in=4, d_out=5):
        super().__init__()
        self.visual = torch.nn.Linear(d_in, d_out)
        self.text = torch.nn.Linear(d_in, d_out)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.)))

    def forward(self, x_img, x_txt):
        return self.visual(x_img), self.text(x_txt), self.logit_scale.exp()


CAPTIONS = ['a', 'b', 'a', 'c', 'b', 'd']
# name, loss config, per-rank batch sizes
CASES = [
    ('full', dict(), (3, 3)),
    ('local', dict(local_loss=True), (3, 3)),
    ('captions', dict(caption_positives=True), (3, 3)),
    ('local_captions', dict(caption_positives=True, local_loss=True),
     (3, 3)),
    ('unequal', dict(caption_positives=True), (4, 2)),
    ('no_grad_gather', dict(gather_with_grad=False), (3, 3)),
]


def _run(model, x_img, x_txt, captions, cfg, ddp=False):
    net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    fi, ft, scale = net(x_img, x_txt)
    fi.retain_grad()
    ft.retain_grad()
    loss = CLIPContrastiveLoss(**cfg)(fi, ft, scale, captions)
    loss.backward()
    return dict(
        loss=loss.item(),
        grad_img=fi.grad.clone(),
        grad_txt=ft.grad.clone(),
        params={n: p.grad.clone() for n, p in model.named_parameters()})


def _worker(rank, world_size, port, out_file, state, x_img, x_txt):
    torch.set_num_threads(1)
    dist.init_process_group(
        'gloo',
        init_method=f'tcp://127.0.0.1:{port}',
        rank=rank,
        world_size=world_size)
    results = {}
    for name, cfg, sizes in CASES:
        lo = sum(sizes[:rank])
        hi = lo + sizes[rank]
        model = _Towers()
        model.load_state_dict(state)
        results[name] = _run(model, x_img[lo:hi], x_txt[lo:hi],
                             CAPTIONS[lo:hi], cfg, ddp=True)
    torch.save(results, f'{out_file}.{rank}')
    dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_parity(tmp_path):
    torch.manual_seed(0)
    state = _Towers().state_dict()
    x_img = torch.randn(6, 4)
    x_txt = torch.randn(6, 4)
    world_size = 2
    out_file = str(tmp_path / 'results')
    mp.start_processes(
        _worker,
        args=(world_size, _free_port(), out_file, state, x_img, x_txt),
        nprocs=world_size,
        start_method='fork')
    ranks = [torch.load(f'{out_file}.{r}') for r in range(world_size)]

    for name, cfg, sizes in CASES:
        model = _Towers()
        model.load_state_dict(state)
        single = _run(model, x_img, x_txt, CAPTIONS, cfg)
        # the one-process loss is the same with or without local_loss
        ref = reference_clip_loss(
            x_img @ state['visual.weight'].T + state['visual.bias'],
            x_txt @ state['text.weight'].T + state['text.bias'], 10.0,
            CAPTIONS if cfg.get('caption_positives') else None)
        np.testing.assert_allclose(single['loss'], ref.item(), rtol=1e-5)

        losses = [r[name]['loss'] for r in ranks]
        if cfg.get('local_loss'):
            # each rank has its rows; their mean is the global loss
            np.testing.assert_allclose(
                np.mean(losses), single['loss'], rtol=1e-5, err_msg=name)
        else:
            for loss in losses:
                np.testing.assert_allclose(
                    loss, single['loss'], rtol=1e-5, err_msg=name)

        # grads of a rank's own features: W x (with gradient gather) or
        # 1 x (without) the one-process grads of those samples
        factor = world_size if cfg.get('gather_with_grad', True) else 1
        for rank, res in enumerate(ranks):
            lo = sum(sizes[:rank])
            hi = lo + sizes[rank]
            for key in ('grad_img', 'grad_txt'):
                torch.testing.assert_close(
                    res[name][key],
                    factor * single[key][lo:hi],
                    rtol=1e-4,
                    atol=1e-6,
                    msg=f'{name} {key} rank {rank}')

        # DDP-averaged parameter grads: the one-process grads with gradient
        # gather. Without it the towers get 1/W of them (only the local
        # features carry gradients); the logit scale, used whole by every
        # rank, still gets the full gradient.
        for res in ranks:
            for pname, grad in single['params'].items():
                scaled = factor == 1 and pname != 'logit_scale'
                torch.testing.assert_close(
                    res[name]['params'][pname],
                    grad / world_size if scaled else grad,
                    rtol=1e-4,
                    atol=1e-6,
                    msg=f'{name} {pname}')
