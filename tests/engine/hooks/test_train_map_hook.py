"""TrainMAPHook: the paper code's per-epoch train-set mAP, against
scikit-learn on the logits the loss saw."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

import lmclip_mm  # noqa: E402,F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def test_train_map_matches_sklearn_on_the_training_logits(tmp_path):
    cfg = Config.fromfile(os.path.join(REPO, 'configs',
                                       'lmclip_toy_mlt_tiny.py'))
    cfg.work_dir = str(tmp_path)
    cfg.train_dataloader.dataset.indices = 64
    cfg.train_cfg = dict(by_epoch=True, max_epochs=2, val_interval=10)
    cfg.param_scheduler = []
    cfg.val_dataloader = cfg.val_evaluator = cfg.val_cfg = None
    cfg.test_dataloader = cfg.test_evaluator = cfg.test_cfg = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=10)
    cfg.custom_hooks = list(cfg.custom_hooks) + [dict(type='TrainMAPHook')]
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    seen = []
    loss_module = runner.model.loss_module
    original = loss_module.forward

    def spy(logits, target, *args, **kwargs):
        seen.append((logits.detach().clone(), target.clone(), runner.epoch))
        return original(logits, target, *args, **kwargs)

    loss_module.forward = spy
    runner.train()
    hook = [h for h in runner.hooks if type(h).__name__ == 'TrainMAPHook'][0]
    last = [s for s in seen if s[2] == 1]  # the second epoch
    assert last and len(last) < len(seen)
    logits = torch.cat([s[0] for s in last]).double()
    target = torch.cat([s[1] for s in last]).numpy()
    probs = logits.softmax(-1).numpy()
    with np.errstate(all='ignore'):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            ap = average_precision_score(target, probs, average=None) * 100
    metrics = hook.last_metrics
    # class-aware sampling repeats images: tied scores, where mmpretrain's
    # AP (ours) and sklearn's differ slightly; mmpretrain's own
    # AveragePrecision on the same scores is exact
    from mmpretrain.evaluation import AveragePrecision
    mm_ap = AveragePrecision.calculate(torch.from_numpy(probs),
                                       torch.from_numpy(target),
                                       average=None).numpy()
    assert metrics['train/long-tail/mAP'] == pytest.approx(mm_ap.mean(),
                                                           abs=1e-3)
    assert metrics['train/long-tail/mAP'] == pytest.approx(ap.mean(), abs=2)
    meta = runner.train_dataloader.dataset.metainfo
    assert metrics['train/long-tail/mAP_tail'] == pytest.approx(
        mm_ap[meta['tail_classes']].mean(), abs=1e-3)
    assert runner.model.keep_train_logits is False
    # sent to the visualizer backends (scalars.json)
    import glob
    import json
    lines = [json.loads(line) for line in open(glob.glob(
        str(tmp_path / '*' / 'vis_data' / 'scalars.json'))[0])]
    assert any('train/long-tail/mAP' in r for r in lines)


class _Publisher(torch.nn.Module):
    """The two documented attributes TrainMAPHook reads, nothing else."""

    def __init__(self):
        super().__init__()
        self.keep_train_logits = False
        self.last_train_logits = None


class _Visualizer:
    def __init__(self):
        self.scalars = []

    def add_scalars(self, scalars, step=None):
        self.scalars.append((scalars, step))


def _fake_runner(model):
    from types import SimpleNamespace
    dataset = SimpleNamespace(metainfo=dict(
        classes=['a', 'b', 'c'], head_classes=['a'], tail_classes=[1, 2]))
    return SimpleNamespace(
        model=model, epoch=0, iter=3, visualizer=_Visualizer(),
        train_dataloader=SimpleNamespace(dataset=dataset))


def test_the_hook_reads_the_published_train_logits():
    """No back channel: the hook takes ``last_train_logits`` (and resets
    it), the model's documented attribute, after each iteration; what the
    model did not publish is not scored."""
    from mmpretrain.evaluation import AveragePrecision

    from lmclip_mm.engine.hooks import TrainMAPHook
    model = _Publisher()
    runner = _fake_runner(model)
    hook = TrainMAPHook()
    hook.before_train_epoch(runner)
    assert model.keep_train_logits is True
    g = torch.Generator().manual_seed(0)
    batches = []
    for i in range(3):
        logits = torch.randn(4, 3, generator=g)
        target = (torch.rand(4, 3, generator=g) < 0.5).float()
        target[0] = 1  # every class has a positive
        batches.append((logits, target))
        model.last_train_logits = (logits, target)
        hook.after_train_iter(runner, i)
        assert model.last_train_logits is None  # taken
    hook.after_train_iter(runner, 3)  # nothing published: nothing added
    model.__dict__['_last_train_logits'] = batches[0]  # the old channel
    hook.after_train_iter(runner, 4)
    hook.after_train_epoch(runner)
    assert model.keep_train_logits is False
    probs = torch.cat([b[0] for b in batches]).softmax(-1)
    target = torch.cat([b[1] for b in batches])
    ap = AveragePrecision.calculate(probs, target, average=None)
    metrics = hook.last_metrics
    assert metrics['train/long-tail/mAP'] == pytest.approx(
        float(ap.mean()), abs=1e-3)
    assert metrics['train/long-tail/mAP_head'] == pytest.approx(
        float(ap[0]), abs=1e-3)
    assert metrics['train/long-tail/mAP_tail'] == pytest.approx(
        float(ap[1:].mean()), abs=1e-3)
    assert runner.visualizer.scalars == [(metrics, 3)]


def test_the_hook_needs_a_model_that_publishes_its_logits():
    from lmclip_mm.engine.hooks import TrainMAPHook
    model = _Publisher()
    del model.last_train_logits
    with pytest.raises(TypeError, match='last_train_logits'):
        TrainMAPHook().before_train_epoch(_fake_runner(model))
