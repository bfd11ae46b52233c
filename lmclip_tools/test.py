# Copyright (c) lmclip_mm authors. Based on mmpretrain's tools/test.py.
"""Evaluate a checkpoint with an lmclip_mm (or any mmpretrain) config.

Same flags as mmpretrain's ``tools/test.py`` plus ``--trust-checkpoint`` and
``--zero-shot`` (evaluate the CLIP weights named in the config, e.g.
``clip.pretrained='openai'``, without any checkpoint)::

    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG --zero-shot
"""
import argparse
import os.path as osp
from copy import deepcopy

import lmclip_mm  # noqa: F401  registers components, guards checkpoints
import mmengine
from mmengine.config import Config, ConfigDict, DictAction
from mmengine.evaluator import DumpResults
from mmpretrain.utils import get_ori_model

from lmclip_tools import launch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='MMPreTrain test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument(
        'checkpoint', nargs='?', default=None,
        help='checkpoint file (omit with --zero-shot)')
    parser.add_argument(
        '--zero-shot',
        action='store_true',
        help='evaluate the pretrained weights the config names (no '
        'checkpoint, no training): CLIP zero-shot classification with the '
        'class prompts')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument('--out', help='the file to output results.')
    parser.add_argument(
        '--out-item',
        choices=['metrics', 'pred'],
        help='To output whether metrics or predictions. '
        'Defaults to output predictions.')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision test')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--tta',
        action='store_true',
        help='Whether to enable the Test-Time-Aug (TTA): flip TTA averaging '
        'the classification scores unless the config has tta_model and '
        'tta_pipeline.')
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='fully unpickle CHECKPOINT and the CLIP weights file of '
        'model.clip.pretrained (only for files you trust: unpickling '
        'can run code). By default it is loaded with torch\'s weights-only '
        'unpickler.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    # intermixed: CHECKPOINT is optional (--zero-shot), and a plain
    # parse_args would not find it after options (`CONFIG --work-dir D CKPT`).
    args = parser.parse_intermixed_args(argv)
    if args.zero_shot and args.checkpoint:
        parser.error('--zero-shot takes no CHECKPOINT')
    if not args.zero_shot and not args.checkpoint:
        parser.error('CHECKPOINT is required (or pass --zero-shot)')
    launch.ensure_local_rank(args.local_rank)
    return args


def merge_args(cfg, args):
    """Merge CLI arguments to config (mmpretrain's semantics)."""
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint  # None with --zero-shot

    if args.amp:
        cfg.test_cfg.fp16 = True

    if args.tta:
        if 'tta_model' not in cfg:
            cfg.tta_model = dict(type='mmpretrain.AverageClsScoreTTA')
        if 'tta_pipeline' not in cfg:
            test_pipeline = cfg.test_dataloader.dataset.pipeline
            cfg.tta_pipeline = deepcopy(test_pipeline)
            cfg.tta_pipeline[-1] = dict(
                type='TestTimeAug',
                transforms=[[
                    dict(type='RandomFlip', prob=1.),
                    dict(type='RandomFlip', prob=0.)
                ], [test_pipeline[-1]]])
        cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline

    if args.cfg_options is not None:
        launch.merge_cfg_options(cfg, args.cfg_options)
    # after --cfg-options: persistent_workers depends on the final
    # num_workers (torch rejects it without workers)
    launch.set_dataloader_defaults(
        cfg, fields=('test_dataloader', ), pin_memory=not args.no_pin_memory)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    if args.out is None and args.out_item is not None:
        raise ValueError('Please use `--out` argument to specify the '
                         'path of the output file before using `--out-item`.')

    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    with launch.config_errors(cfg):
        if args.trust_checkpoint:
            launch.trust_from_cli([cfg.load_from], cfg)
        launch.check_checkpoint(args.checkpoint)
        if args.zero_shot:
            launch.check_zero_shot(cfg)
            launch.check_pretrained_weights(cfg)
        launch.init_distributed(args.launcher, cfg)

        runner = launch.build_runner(cfg)
        if args.zero_shot:
            # no checkpoint: the CLIP weights of the config, as training
            # would start from them
            get_ori_model(runner.model).init_weights()

        if args.out and args.out_item in ['pred', None]:
            runner.test_evaluator.metrics.append(
                DumpResults(out_file_path=args.out))

        metrics = runner.test()

        if args.out and args.out_item == 'metrics':
            mmengine.dump(metrics, args.out)
        return metrics


def cli():
    """``python tools/test.py``."""
    launch.run_cli(main)


if __name__ == '__main__':
    cli()
