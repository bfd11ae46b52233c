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
