# Copyright (c) lmclip_mm authors.
"""Print the top labels of images with a trained LM-CLIP checkpoint.

    python tools/infer.py CONFIG CHECKPOINT IMAGE [IMAGE ...] [--topk 5]

Uses mmpretrain's ``ImageClassificationInferencer`` (the config's test
pipeline, the class names saved in the checkpoint). Scores are what the
model's predict mode returns (raw logits unless the config sets a score
activation), with each class's share of the softmax over the classes (the
paper's evaluation protocol ranks by it).
"""
import argparse
import os.path as osp

import lmclip_mm  # noqa: F401  registers components, guards checkpoints
import torch
from mmengine.config import Config, DictAction

from lmclip_tools import launch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config', help='config file')
    parser.add_argument(
        'checkpoint',
        help='checkpoint file; "none" for zero-shot with the weights named '
        'in the config (e.g. clip.pretrained=openai)')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument('--device', default=None, help='cpu, cuda, ...')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='fully unpickle CHECKPOINT (only for files you trust)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='as in train.py')
    return parser.parse_args(argv)


def build_inferencer(cfg, checkpoint, device=None):
    # mmpretrain's inferencer, whose results also carry the predicted
    # classes (the model's pred_label)
    from lmclip_mm.apis import \
        MultiLabelClsInferencer as ImageClassificationInferencer
    pretrained = None if checkpoint in (None, 'none') else checkpoint
    if pretrained is None:
        launch.check_zero_shot(cfg)
        launch.check_pretrained_weights(cfg)
    inferencer = ImageClassificationInferencer(
        model=cfg, pretrained=pretrained or False, device=device)
    model = inferencer.model
    if pretrained is None:
        model.init_weights()  # zero-shot: the config's CLIP weights
    meta = dict(getattr(model, '_dataset_meta', None) or {})
    if not meta.get('classes'):
        # Zero-shot / a checkpoint without dataset meta: the test dataset's
        # labels file names the classes.
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import DATASETS
        init_default_scope('mmpretrain')
        ds_cfg = cfg.test_dataloader.dataset.copy()
        ds_cfg.update(pipeline=[], lazy_init=True)
        meta = dict(DATASETS.build(ds_cfg).metainfo)
    if hasattr(model, 'set_dataset_meta'):
        # inference: class weights (train counts) are not needed
        model.set_dataset_meta(meta, training=False)
    inferencer.classes = list(meta['classes'])
    return inferencer


def check_image(path: str) -> None:
    """One line for an image that is missing or cannot be decoded, before
    the model is built."""
    from PIL import Image
    if not osp.isfile(path):
        raise launch.ToolError(f'image not found: {path}')
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as e:  # PIL's errors: unidentified, truncated, ...
        reason = str(e).split(' <')[0]  # no object reprs
        raise launch.ToolError(f'{path} cannot be read as an image '
                               f'({type(e).__name__}: {reason})') from None


def main(argv=None):
    args = parse_args(argv)
    for path in args.images:
        check_image(path)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        launch.merge_cfg_options(cfg, args.cfg_options)
    with launch.config_errors(cfg):
        if args.trust_checkpoint:
            launch.trust_from_cli([args.checkpoint])
        if args.checkpoint != 'none':
            launch.check_checkpoint(args.checkpoint)
        inferencer = build_inferencer(cfg, args.checkpoint, args.device)
        classes = inferencer.classes
        # preprocess + forward of mmpretrain's inferencer, without its progress
        # bar (which would interleave with the printed results).
        samples = []
        for batch in inferencer.preprocess(args.images,
                                           batch_size=args.batch_size):
            samples.extend(inferencer.forward(batch))
    results, predicted = [], []
    for path, sample in zip(args.images, samples):
        score = sample.pred_score.detach().float().cpu()
        share = torch.softmax(score, dim=0)
        top = torch.topk(score, k=min(args.topk, score.numel()))
        print(path)
        labels = sample.pred_label.tolist() \
            if 'pred_label' in sample else []
        predicted.append((path, [classes[i] for i in labels]))
        rows = []
        for s, i in zip(top.values.tolist(), top.indices.tolist()):
            rows.append((classes[i], s, share[i].item()))
            mark = '  predicted' if i in labels else ''
            print(f'  {classes[i]:<24s} score {s:9.4f}  '
                  f'softmax {share[i].item():.4f}{mark}')
        results.append((path, rows))
    # the model's decision (pred_label: thr / topk / fitted thresholds)
    model = inferencer.model
    if getattr(model, 'class_thresholds', None) is not None:
        print('predicted labels (the per-class thresholds saved in the '
              'checkpoint, see fit_thresholds.py):')
    else:
        print('predicted labels:')
    for path, names in predicted:
        print(f'  {path}: {", ".join(names) or "(none)"}')
    return results


def cli():
    """``python tools/infer.py``."""
    launch.run_cli(main)


if __name__ == '__main__':
    cli()
