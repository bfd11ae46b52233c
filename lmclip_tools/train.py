# Copyright (c) lmclip_mm authors. Based on mmpretrain's tools/train.py.
"""Train a model with an lmclip_mm (or any mmpretrain) config.

Same flags as mmpretrain's ``tools/train.py``, plus ``--trust-checkpoint``.
Differences: works with ``num_workers=0``, runs multi-process on machines
without GPUs (gloo), and loads checkpoints with torch's weights-only
unpickler (see ``lmclip_mm.fileio.checkpoint_safety``).
"""
import argparse
import os
import os.path as osp

import lmclip_mm  # noqa: F401  registers components, guards checkpoints
from mmengine.config import Config, DictAction
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop

from lmclip_tools import launch


class RunAlreadyFinished(Exception):
    """``--resume`` found a run that already reached its last epoch."""


class FinishedRunCheck(Hook):
    """With ``--resume``: stop before the train loop (which would do nothing
    and exit silently) when the resumed checkpoint is the run's end."""

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            done, total, unit = runner.epoch, loop.max_epochs, 'epoch'
        else:
            done, total, unit = runner.iter, runner.max_iters, 'iteration'
        if done < total:
            return
        work_dir = runner.work_dir
        ckpts = sorted(f for f in os.listdir(work_dir) if f.endswith('.pth'))
        raise RunAlreadyFinished(
            f'The run in {work_dir} already finished ({unit} {done} of '
            f'{total}): nothing to resume. Its checkpoints, in {work_dir}: '
            f'{", ".join(ckpts) or "none"}. To train again, use another '
            '--work-dir.')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='If specify checkpoint path, resume from it, while if not '
        'specify, try to auto resume from the latest checkpoint '
        'in the work directory.')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='enable automatic-mixed-precision training')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='whether not to evaluate the checkpoint during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='whether to auto scale the learning rate according to the '
        'actual batch size and the original batch size.')
    parser.add_argument(
        '--no-pin-memory',
        action='store_true',
        help='whether to disable the pin_memory option in dataloaders.')
    parser.add_argument(
        '--no-persistent-workers',
        action='store_true',
        help='whether to disable the persistent_workers option in dataloaders.'
    )
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='fully unpickle the checkpoint given by --resume/load_from (or, '
        'with --resume and no path, the checkpoints in the work dir) and the '
        'CLIP weights file of model.clip.pretrained. Only '
        'for files you trust: unpickling can run code. By default, '
        'checkpoints are loaded with torch\'s weights-only unpickler.')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--tensorboard',
        action='store_true',
        help='also write TensorBoard event files (mmengine\'s '
        'TensorboardVisBackend, under WORK_DIR/<timestamp>/vis_data; needs '
        'the tensorboard package: pip install -e ".[tensorboard]")')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) / --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    launch.ensure_local_rank(args.local_rank)
    return args


def add_tensorboard(cfg):
    """Add mmengine's TensorboardVisBackend to the config's visualizer."""
    visualizer = cfg.get('visualizer') or dict(type='UniversalVisualizer')
    backends = list(visualizer.get('vis_backends') or
                    [dict(type='LocalVisBackend')])
    if not any('Tensorboard' in str(b.get('type')) for b in backends):
        backends.append(dict(type='TensorboardVisBackend'))
    visualizer['vis_backends'] = backends
    cfg.visualizer = visualizer


def merge_args(cfg, args):
    """Merge CLI arguments to config (mmpretrain's semantics)."""
    if args.no_validate:
        cfg.val_cfg = None
        cfg.val_dataloader = None
        cfg.val_evaluator = None

    cfg.launcher = args.launcher

    # work_dir is determined in this priority: CLI > segment in file > filename
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])

    if args.amp is True:
        launch.use_amp(cfg.optim_wrapper)

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    if args.auto_scale_lr:
        cfg.auto_scale_lr.enable = True

    if args.tensorboard:
        add_tensorboard(cfg)

    # the schedule follows a new train_cfg.max_epochs
    for note in launch.merge_cfg_options(cfg, args.cfg_options):
        print(f'note: {note}')
    # after --cfg-options: persistent_workers depends on the final
    # num_workers (torch rejects it without workers)
    launch.set_dataloader_defaults(
        cfg,
        pin_memory=not args.no_pin_memory,
        persistent_workers=not args.no_persistent_workers)
    return cfg


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg = merge_args(cfg, args)
    with launch.config_errors(cfg):
        if args.trust_checkpoint:
            launch.trust_from_cli([
                cfg.get('load_from'),
                cfg.work_dir if args.resume == 'auto' else None
            ], cfg)
        launch.check_checkpoint(
            cfg.get('load_from'),
            '--resume checkpoint' if cfg.get('resume') else 'load_from')
        if not cfg.get('resume'):
            launch.check_pretrained_weights(cfg)
        launch.init_distributed(args.launcher, cfg)

        runner = launch.build_runner(cfg)
        if cfg.get('resume'):
            runner.register_hook(FinishedRunCheck(), priority='HIGHEST')
        try:
            runner.train()
        except RunAlreadyFinished as done:
            print(done)  # --resume of a finished run: nothing to do
            return None


def cli():
    """``python tools/train.py``."""
    launch.run_cli(main)


if __name__ == '__main__':
    cli()
