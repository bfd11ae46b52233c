# Copyright (c) lmclip_mm authors.
"""Hyper-parameter search for an lmclip_mm config, on the validation split.

    python tools/tune.py CONFIG [--work-dir DIR] [--n-trials N] [--resume]
        [--storage URL] [--study-name NAME] [--backend {optuna,ray}]
        [--allow-test-split] [--cfg-options KEY=VALUE ...]

The search space, the tuned metric and the pruning schedule are the
config's ``tune`` dict, merged over :data:`DEFAULT_TUNE` (LM-CLIP's released
search: TPE over batch size, gamma-, lambda, sampler power and class-weight
power; successive halving (ASHA) on the validation tail mAP with grace 5 and
reduction factor 2; 500 samples).

Backends:

* ``optuna`` (default): an Optuna study in an RDB storage
  (``sqlite:///<work_dir>/study.db`` unless ``--storage``). Each trial is a
  normal ``tools/train.py`` run in its own process and work dir
  (``<work_dir>/trial_<n>``: ``trial_config.py``, logs, best checkpoint);
  :class:`~lmclip_tools.tune.hooks.OptunaPruningHook` reports every epoch's
  metric to the study through the storage and stops pruned trials. Several
  workers (GPUs, machines) run the same study by giving the same
  ``--storage``/``--study-name``. A killed study continues with ``--resume``.
* ``ray``: Ray Tune with ``OptunaSearch`` (same TPE sampler and space) and
  ``ASHAScheduler``; one trial per GPU (per CPU without GPUs).

At the end it prints a table of the trials and writes ``best_config.py``:
the config as given (``--cfg-options`` included) with the best trial's
values, ready for ``tools/train.py``.
"""
import argparse
import copy
import os
import os.path as osp
import sys

from .space import TuneError, tune_settings
from .trial_config import set_val_split


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(
        description='Hyper-parameter search (Optuna TPE + successive '
        'halving, or Ray Tune) on the validation split')
    p.add_argument('config', help='the config to tune (its `tune` dict '
                   'holds the search space and the metric)')
    p.add_argument('--work-dir', help='the study folder (default '
                   'work_dirs/tune_<config name>)')
    p.add_argument('--n-trials', type=int, help='number of trials (default '
                   'tune.num_samples); for a shared study, the total of all '
                   'workers')
    p.add_argument('--backend', choices=['optuna', 'ray'], default='optuna')
    p.add_argument('--resume', action='store_true',
                   help='continue the study of --work-dir (trials running '
                   'when it was killed are re-queued)')
    p.add_argument('--storage', help='Optuna RDB storage URL shared by '
                   'several workers (sqlite:///path.db, postgresql://...); '
                   'default sqlite:///<work_dir>/study.db. Workers given '
                   'the same storage and study name join the study')
    p.add_argument('--study-name', help='default: the config name')
    p.add_argument('--heartbeat', type=int, default=60,
                   help='seconds between a running trial\'s heartbeats in '
                   'the storage; a trial without one for 4x as long (at '
                   'least 120 s) is failed and re-queued by another worker. '
                   '0: off')
    p.add_argument('--allow-test-split', action='store_true',
                   help='allow tune.split=\'test\' (or None): tuning on the '
                   'test split gives optimistic test scores')
    p.add_argument('--ray-address', help='Ray cluster address (default: '
                   'start a local Ray)')
    p.add_argument('--ray-num-cpus', type=int,
                   help='CPUs of the local Ray (default: all)')
    p.add_argument('--cpus-per-trial', type=float, default=1)
    p.add_argument('--max-concurrent', type=int, default=0,
                   help='Ray: trials at once (default: as resources allow)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings of the config (and of its tune '
                   'dict: tune.num_samples=50) for all trials')
    return p.parse_args(argv)


def load_base(args):
    import lmclip_mm  # noqa: F401
    from mmengine.config import Config
    from lmclip_tools import launch
    cfg = Config.fromfile(args.config)
    # every trial's schedule follows a new train_cfg.max_epochs, as in
    # tools/train.py
    for note in launch.merge_cfg_options(cfg, args.cfg_options):
        print(f'note: {note}')
    name = osp.splitext(osp.basename(args.config))[0]
    cfg.work_dir = osp.abspath(
        args.work_dir or osp.join('work_dirs', f'tune_{name}'))
    args.study_name = args.study_name or name
    if cfg.get('val_dataloader') is None or cfg.get('val_evaluator') is None:
        raise TuneError('the config has no val_dataloader/val_evaluator: '
                        'nothing to tune on')
    return cfg


def check_args(args):
    """What can be refused from the arguments alone, before the ~10 s of
    importing torch, MMPretrain and the config."""
    if not osp.isfile(args.config):
        raise TuneError(f'config not found: {args.config}')
    if args.n_trials is not None and args.n_trials < 1:
        raise TuneError(f'--n-trials must be at least 1, got {args.n_trials}')
    name = osp.splitext(osp.basename(args.config))[0]
    work_dir = osp.abspath(args.work_dir or
                           osp.join('work_dirs', f'tune_{name}'))
    if args.backend == 'ray' and args.resume:
        raise TuneError(
            '--resume is for the Optuna backend (its SQLite/RDB study); a '
            'Ray experiment is restored with ray.tune.Tuner.restore('
            f'{osp.join(work_dir, "ray", args.study_name or name)!r}, ...)')
    if args.resume and not args.storage:
        if not osp.isfile(osp.join(work_dir, 'study.db')):
            raise TuneError(f'--resume: no study in {work_dir} (no '
                            'study.db) to resume')


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    base = load_base(args)
    tune = tune_settings(base)
    # fail now, not in every trial
    set_val_split(copy.deepcopy(base), tune, args.allow_test_split)
    os.makedirs(base.work_dir, exist_ok=True)
    if args.backend == 'ray':
        from .ray_backend import run_ray
        return run_ray(args, base, tune)
    from .optuna_backend import run_optuna
    return run_optuna(args, base, tune)


def cli(argv=None):
    """``tools/tune.py``: bad tuning setups exit 1 with one line."""
    try:
        main(argv)
    except TuneError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    cli()
