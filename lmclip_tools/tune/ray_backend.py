# Copyright (c) lmclip_mm authors.
"""The Ray Tune backend: ``OptunaSearch`` (the same TPE sampler and space)
and ``ASHAScheduler``; one trial per GPU (per CPU without GPUs)."""
import functools
import os
import os.path as osp
import re

from .report import finish
from .space import (TuneError, build_sampler, optuna_distribution,
                    pruner_spec)
from .trial_config import build_trial_config, complete_points
from .trials import error_line, log


def _ray_trial_number(trial_dir):
    """0-based index of a Ray trial from its folder name
    (``<trainable>_<trial id>_<index>_<params>...``, index from 1)."""
    m = re.search(r'_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})_(\d+)(?:_|$)',
                  osp.basename(str(trial_dir).rstrip('/')))
    return int(m.group(2)) - 1 if m else None


def ray_trainable(params, base_text, tune, work_dir, cwd, allow_test):
    """One Ray Tune trial, in the Ray worker process: the trial config is
    built as for the Optuna backend and trained with mmengine's Runner;
    :class:`RayTuneReportHook` reports each epoch to Ray (ASHA stops the
    trial by ending this worker)."""
    os.chdir(cwd)
    import lmclip_mm  # noqa: F401
    from lmclip_tools import launch
    from lmclip_tools.tune import hooks  # noqa: F401  registers the hooks
    from mmengine.config import Config
    from ray import tune as ray_tune
    base = Config.fromstring(base_text, '.py')
    number = _ray_trial_number(ray_tune.get_context().get_trial_dir())
    trial_dir = osp.join(work_dir, f'trial_{number}')
    os.makedirs(trial_dir, exist_ok=True)
    hook = dict(type='RayTuneReportHook', metric=tune['metric'],
                rule='greater' if tune['mode'] == 'max' else 'less')
    cfg = build_trial_config(base, tune, dict(params), trial_dir, hook,
                             allow_test)
    cfg.dump(osp.join(trial_dir, 'trial_config.py'))
    launch.set_dataloader_defaults(cfg)
    launch.build_runner(cfg).train()


def run_ray(args, base, tune):
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch
    if args.resume:
        raise TuneError(
            '--resume is for the Optuna backend (its SQLite/RDB study); a '
            'Ray experiment is restored with ray.tune.Tuner.restore('
            f'{osp.join(base.work_dir, "ray", args.study_name)!r}, ...)')
    os.environ.setdefault('RAY_CHDIR_TO_TRIAL_DIR', '0')
    work_dir = base.work_dir
    max_epochs = int(base.train_cfg.max_epochs)
    pruner = pruner_spec(tune, max_epochs)
    metric = tune['metric']
    init = dict(include_dashboard=False, ignore_reinit_error=True,
                log_to_driver=False)
    if args.ray_address:
        init['address'] = args.ray_address
    elif args.ray_num_cpus:
        init['num_cpus'] = args.ray_num_cpus
    ray.init(**init)
    try:
        gpus = ray.cluster_resources().get('GPU', 0)
        resources = dict(cpu=args.cpus_per_trial, gpu=1 if gpus else 0)
        space = {name: optuna_distribution(spec)
                 for name, spec in tune['space'].items()}
        searcher = OptunaSearch(
            space=space, metric=metric, mode=tune['mode'],
            sampler=build_sampler(tune['sampler']),
            points_to_evaluate=complete_points(
                base, tune['space'], tune['points_to_evaluate']) or None)
        if pruner is None:
            scheduler = FIFOScheduler()
        else:
            scheduler = ASHAScheduler(
                time_attr='epoch', max_t=max_epochs, metric=metric,
                mode=tune['mode'],
                grace_period=pruner['min_resource'],
                reduction_factor=pruner['reduction_factor'])
        trainable = ray_tune.with_resources(
            ray_tune.with_parameters(
                functools.partial(
                    ray_trainable, tune=tune, work_dir=work_dir,
                    cwd=os.getcwd(), allow_test=args.allow_test_split),
                base_text=base.pretty_text),
            resources)
        log(f'Ray Tune: {args.n_trials or tune["num_samples"]} trials, '
            f'{resources} each, metric {metric} ({tune["mode"]}), split '
            f'{tune["split"]!r}, ASHA {pruner}')
        tuner = ray_tune.Tuner(
            trainable,
            tune_config=ray_tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler,
                num_samples=args.n_trials or int(tune['num_samples']),
                max_concurrent_trials=args.max_concurrent or None,
                reuse_actors=False),
            run_config=ray_tune.RunConfig(
                name=args.study_name,
                storage_path=osp.join(work_dir, 'ray'),
                failure_config=ray_tune.FailureConfig(
                    max_failures=0, fail_fast=False),
                verbose=1))
        results = tuner.fit()
        rows = ray_rows(results, metric, max_epochs, work_dir)
    finally:
        ray.shutdown()
    return finish(args, base, tune, rows)


def ray_rows(results, metric, max_epochs, work_dir):
    rows = []
    for result in results:
        number = _ray_trial_number(result.path)
        df = result.metrics_dataframe
        history = []
        if df is not None and metric in df:
            history = list(zip(df['epoch'].tolist(), df[metric].tolist()))
        epochs = history[-1][0] if history else None
        params = {k: v for k, v in (result.config or {}).items()}
        seconds = None
        if df is not None and 'time_total_s' in df and len(df):
            seconds = round(float(df['time_total_s'].iloc[-1]), 1)
        value = max(v for _, v in history) if history else None
        if result.error is not None:
            state = 'FAIL'
            note = error_line(str(result.error))
        elif epochs is not None and epochs < max_epochs:
            state, note = 'PRUNED', f'stopped by ASHA after epoch {epochs}'
        else:
            state, note = 'COMPLETE', ''
        rows.append(dict(trial=number, state=state, value=value,
                         epochs=epochs, seconds=seconds, params=params,
                         note=note, metric=metric,
                         work_dir=osp.join(work_dir, f'trial_{number}')))
    rows.sort(key=lambda r: (r['trial'] is None, r['trial']))
    return rows
