# Copyright (c) lmclip_mm authors.
"""The Ray Tune backend: ``OptunaSearch`` (the same TPE sampler and space)
and ``ASHAScheduler``; one trial per GPU (per CPU without GPUs)."""
import contextlib
import functools
import logging
import os
import os.path as osp
import re
import time
import traceback

from .optuna_utils import quiet_optuna
from .report import finish
from .space import (TuneError, build_sampler, fmt_params,
                    optuna_distribution, pruner_spec)
from .trial_config import build_trial_config, complete_points, report_hook
from .trials import (TRIAL_LOG, dropped_log_records, error_line,
                     failed_line, log, outcome_line, prune_checkpoints,
                     read_report, report_state, trial_error, trial_row)


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
    hook = report_hook('RayTuneReportHook', tune)
    cfg = build_trial_config(base, tune, dict(params), trial_dir, hook,
                             allow_test)
    # the trial trains what its trial_config.py says, named after it (as
    # tools/train.py does in an Optuna trial; a config from a string would
    # be dumped under a temporary file's name)
    cfg_path = osp.join(trial_dir, 'trial_config.py')
    cfg.dump(cfg_path)
    cfg = Config.fromfile(cfg_path)
    launch.set_dataloader_defaults(cfg)
    # the trial's output in its folder, as a tools/train.py trial's
    with open(osp.join(trial_dir, TRIAL_LOG), 'w') as out, \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            launch.build_runner(cfg).train()
        except BaseException:
            traceback.print_exc()
            raise


def _trial_callback(work_dir, tune, max_epochs):
    """The tuner's log lines of the Optuna backend (a trial's start and
    end), and its checkpoint policy, for Ray trials (built here: Ray is
    imported only for ``--backend ray``)."""
    from ray.tune import Callback

    class TrialLog(Callback):

        def __init__(self):
            super().__init__()
            self.started = {}
            #: trial number -> wall seconds from its start to its end
            self.seconds = {}

        def _trial(self, trial):
            number = _ray_trial_number(trial.path)
            return number, osp.join(work_dir, f'trial_{number}')

        def _end(self, trial):
            number, trial_dir = self._trial(trial)
            if tune['keep_checkpoints'] == 'best' and osp.isdir(trial_dir):
                prune_checkpoints(trial_dir)
            if number in self.started:
                self.seconds[number] = round(
                    time.time() - self.started[number], 1)
            return number, trial_dir, self.seconds.get(number)

        def on_trial_start(self, iteration, trials, trial, **info):
            number, trial_dir = self._trial(trial)
            self.started[number] = time.time()
            log(f'trial {number} started: {fmt_params(trial.config)} '
                f'({trial_dir})')

        def on_trial_complete(self, iteration, trials, trial, **info):
            number, trial_dir, seconds = self._end(trial)
            report = read_report(trial_dir)
            if report:
                log(outcome_line(number, report_state(report, max_epochs),
                                 report, seconds, max_epochs))
            else:
                log(f'trial {number} ended without a validation')

        def on_trial_error(self, iteration, trials, trial, **info):
            number, trial_dir, seconds = self._end(trial)
            log_path, reason = trial_error(trial_dir)
            log(failed_line(number, reason, log_path, seconds))

    return TrialLog()


#: Ray's "Trial task failed" traceback and "Trials did not complete": the
#: tuner's ``failed`` line says it in one line, naming the trial's log, and
#: the table lists it (as with Optuna)
RAY_FAILURE_RECORDS = (('ray.tune.execution.tune_controller', 'ray.tune.tune'),
                       ('Trial task failed', 'Trials did not complete'))


def run_ray(args, base, tune):
    import ray
    if args.resume:
        raise TuneError(
            '--resume is for the Optuna backend (its SQLite/RDB study); a '
            'Ray experiment is restored with ray.tune.Tuner.restore('
            f'{osp.join(base.work_dir, "ray", args.study_name)!r}, ...)')
    os.environ.setdefault('RAY_CHDIR_TO_TRIAL_DIR', '0')
    # Ray's own progress tables and experiment boxes off: the tuner prints
    # a line per trial start and end, as with Optuna
    os.environ.setdefault('RAY_AIR_NEW_OUTPUT', '0')
    pruner = pruner_spec(tune, int(base.train_cfg.max_epochs))
    init = dict(include_dashboard=False, ignore_reinit_error=True,
                log_to_driver=False, logging_level=logging.ERROR)
    if args.ray_address:
        init['address'] = args.ray_address
    elif args.ray_num_cpus:
        init['num_cpus'] = args.ray_num_cpus
    ray.init(**init)
    try:
        with quiet_optuna(), dropped_log_records(*RAY_FAILURE_RECORDS):
            rows = _fit(args, base, tune, pruner)
    finally:
        ray.shutdown()
    return finish(args, base, tune, rows)


def _fit(args, base, tune, pruner):
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch
    work_dir = base.work_dir
    max_epochs = int(base.train_cfg.max_epochs)
    metric = tune['metric']
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
    trial_log = _trial_callback(work_dir, tune, max_epochs)
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
            callbacks=[trial_log],
            # the tuner's own lines, as with Optuna
            verbose=0))
    results = tuner.fit()
    return ray_rows(results, max_epochs, work_dir, trial_log.seconds)


def ray_rows(results, max_epochs, work_dir, seconds=None):
    """The table's rows, from each trial's report file as for Optuna;
    ``seconds``: each trial's wall time (as the Optuna backend measures
    its trial process), by trial number."""
    rows = []
    for result in results:
        number = _ray_trial_number(result.path)
        trial_dir = osp.join(work_dir, f'trial_{number}')
        report = read_report(trial_dir)
        if result.error is not None:
            state, note = 'FAIL', error_line(str(result.error))
        elif report:
            state, note = report_state(report, max_epochs), ''
        else:
            state, note = 'FAIL', 'no validation ran'
        rows.append(trial_row(number, state, report, result.config or {},
                              seconds=(seconds or {}).get(number), note=note,
                              work_dir=trial_dir))
    rows.sort(key=lambda r: (r['trial'] is None, r['trial']))
    return rows
