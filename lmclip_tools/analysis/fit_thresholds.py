# Copyright (c) lmclip_mm authors.
"""Fit per-class decision thresholds on a held-out split; save them with
the model.

    python tools/analysis/fit_thresholds.py CONFIG CHECKPOINT \\
        [--split val] [--out CHECKPOINT_thr.pth] [--min-positives 1]

Runs the checkpoint on ``test_dataloader`` with its dataset's ``split``
replaced by ``--split`` (default ``val``: the held-out part of the train
list; never fit on the split you report; a checkpoint whose run trained on
the split's images, e.g. one of a config without ``holdout_val``, is
refused unless ``--allow-train-images``), chooses for every class the
threshold on the softmax probability that maximises that class's F1
(:func:`lmclip_mm.evaluation.fit_class_thresholds`; classes without a
positive in the split keep the model's ``thr``), and writes a copy of the
checkpoint whose state dict has ``class_thresholds``. ``predict``,
``tools/infer.py`` and the inferencer then use them for ``pred_label``. The
scores the AP metrics rank are unchanged. Prints the split's macro
precision / recall / F1 with the model's default rule and with the fitted
thresholds.
"""
import argparse
import os.path as osp

import lmclip_mm  # noqa: F401  registers components, guards checkpoints
import torch
from lmclip_mm.evaluation import fit_class_thresholds
from mmengine.config import Config, DictAction
from mmengine.evaluator import BaseMetric
from mmengine.runner.checkpoint import _load_checkpoint, save_checkpoint
from mmpretrain.evaluation import MultiLabelMetric
from mmpretrain.structures import label_to_onehot
from mmpretrain.utils import get_ori_model

from lmclip_tools import launch


class _Collect(BaseMetric):
    """Keeps every prediction's score and target."""

    default_prefix = 'collect'  # mmengine warns when a metric has none

    def process(self, data_batch, data_samples):
        for ds in data_samples:
            score = ds['pred_score'].float().cpu()
            target = ds['gt_score'].cpu() if 'gt_score' in ds else \
                label_to_onehot(ds['gt_label'], score.numel())
            self.results.append((score, target))

    def compute_metrics(self, results):
        self.collected = results
        return {}


def decision_probs(model, scores: torch.Tensor) -> torch.Tensor:
    """The model's decision scores (softmax over the classes) from the
    ``pred_score`` of its ``score_activation``."""
    activation = getattr(model, 'score_activation', 'none')
    if activation == 'softmax':
        return scores
    if activation == 'sigmoid':
        p = scores.double().clamp(1e-12, 1 - 1e-12)
        scores = (p / (1 - p)).log()
    return model.decision_scores(scores)


def prf(labels, target) -> dict:
    """Macro precision / recall / F1 (mmpretrain's MultiLabelMetric)."""
    p, r, f, _ = MultiLabelMetric.calculate(
        labels, target, pred_indices=True, target_indices=False,
        num_classes=target.shape[1], average='macro')
    return dict(precision=float(p), recall=float(r), f1=float(f))


SPLIT_KEYS = ('val_fraction', 'val_seed')


def trained_on_split(checkpoint: dict, cfg: Config, split: str):
    """Why the images of ``split`` (of ``cfg``'s test dataset) were trained
    on by the run that saved ``checkpoint`` (its config in ``meta['cfg']``),
    or None when they were held out. ``'unknown'`` when the checkpoint
    carries no config."""
    if split == 'test':
        return None
    if split == 'train':
        return 'the train split is what a checkpoint trains on'
    text = (checkpoint.get('meta') or {}).get('cfg')
    if not text:
        return 'unknown'
    trained = Config.fromstring(text, '.py').get('train_dataloader', {})
    trained = trained.get('dataset', {}) if trained else {}
    if not trained.get('holdout_val'):
        return ('its run trained on the whole train list (holdout_val is '
                'not set in its config), which includes the val images')
    fitted = cfg.test_dataloader.dataset
    for key in SPLIT_KEYS:
        if key in trained and key in fitted and trained[key] != fitted[key]:
            return (f'its run held out another val split ({key}='
                    f'{trained[key]!r}, here {fitted[key]!r})')
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--split', default='val',
                        help='dataset split to fit on (default: val)')
    parser.add_argument('--out', help='output checkpoint (default: '
                        'CHECKPOINT with a _thr suffix)')
    parser.add_argument('--min-positives', type=int, default=1,
                        help='classes with fewer positives in the split '
                        'keep the model\'s thr (default: 1)')
    parser.add_argument('--allow-train-images', action='store_true',
                        help='fit even when the split holds images the '
                        'checkpoint was trained on (the thresholds, and the '
                        'printed gain, are then optimistic)')
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--trust-checkpoint', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        launch.merge_cfg_options(cfg, args.cfg_options)
    cfg.test_dataloader.dataset.split = args.split
    cfg.load_from = args.checkpoint
    cfg.work_dir = args.work_dir or osp.join(
        './work_dirs', 'fit_thresholds',
        osp.splitext(osp.basename(args.config))[0])
    cfg.pop('visualizer', None)
    launch.set_dataloader_defaults(cfg, fields=('test_dataloader', ))
    with launch.config_errors(cfg):
        if args.trust_checkpoint:
            launch.trust_from_cli([args.checkpoint], cfg)
        launch.check_checkpoint(args.checkpoint)
        checkpoint = _load_checkpoint(args.checkpoint, map_location='cpu')
        why = trained_on_split(checkpoint, cfg, args.split)
        if why == 'unknown':
            print(f'warning: {args.checkpoint} carries no config: whether '
                  f'it trained on the {args.split} images cannot be checked')
        elif why and not args.allow_train_images:
            raise launch.ToolError(
                f'--split {args.split}: {args.checkpoint} was trained on '
                f'these images ({why}); thresholds fitted there look better '
                'than they are. Fit a checkpoint of an *_honest config (its '
                'val split is held out), or pass --allow-train-images')
        elif why:
            print(f'warning: fitting on images {args.checkpoint} was '
                  f'trained on ({why}): the thresholds and the gain below '
                  'are optimistic')
        runner = launch.build_runner(cfg)
        collect = _Collect()
        runner.test_evaluator.metrics.append(collect)
        runner.test()
    model = get_ori_model(runner.model)
    if not hasattr(model, 'set_class_thresholds'):
        raise TypeError(f'{type(model).__name__} has no per-class '
                        'thresholds (LMCLIPClassifier has)')
    scores = torch.stack([s for s, _ in collect.collected])
    target = torch.stack([t for _, t in collect.collected])
    probs = decision_probs(model, scores)
    model.set_class_thresholds(None)
    before = prf(model.predict_labels(probs.log()), target)
    default = model.thr if model.thr is not None else 0.5
    thresholds, class_f1 = fit_class_thresholds(
        probs, target, default, min_positives=args.min_positives)
    model.set_class_thresholds(thresholds)
    after = prf(model.predict_labels(probs.log()), target)

    state_dict = checkpoint.get('state_dict', checkpoint)
    state_dict['class_thresholds'] = thresholds.clone()
    checkpoint.setdefault('meta', {})['class_thresholds'] = dict(
        split=args.split, num_images=len(scores),
        fitted_classes=int((~class_f1.isnan()).sum()),
        default_rule=before, fitted=after)
    out = args.out or osp.splitext(args.checkpoint)[0] + '_thr.pth'
    save_checkpoint(checkpoint, out)
    print(f'{args.split} split, {len(scores)} images, macro P/R/F1 (%):')
    for name, m in (('default rule', before), ('fitted thresholds', after)):
        print(f'  {name:<18s} P {m["precision"]:6.2f}  R {m["recall"]:6.2f}'
              f'  F1 {m["f1"]:6.2f}')
    print(f'saved {out}')
    return dict(default_rule=before, fitted=after, out=out,
                thresholds=thresholds)


def cli():
    """``python tools/analysis/fit_thresholds.py``."""
    launch.run_cli(main)


if __name__ == '__main__':
    cli()
