# Copyright (c) lmclip_mm authors.
"""The Optuna backend: a study in an RDB storage; each trial is a
``tools/train.py`` process whose :class:`OptunaPruningHook` reports to it."""
import datetime
import json
import os
import os.path as osp
import subprocess
import time
import warnings

from .optuna_utils import build_pruner, quiet_optuna
from .report import finish
from .space import TuneError, build_sampler, fmt_params, pruner_spec, suggest
from .trial_config import build_trial_config, complete_points, report_hook
from .trials import (HOST, TRAIN_CMD, TRIAL_LOG, TrialCrashed, TrialFailed,
                     _die_with_parent, failed_line, is_trial_error, log,
                     outcome_line, process_token, prune_checkpoints,
                     read_report, trial_error, trial_row)


def counted_trials(study):
    """Trials that count towards ``--n-trials``: complete, pruned, and
    failed by themselves (diverged). Trials of a killed tuner do not count
    (they are re-queued)."""
    from optuna.trial import TrialState
    return [
        t for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
            t.state == TrialState.FAIL and 'fail_reason' in t.user_attrs)
    ]


def requeue(study, trial):
    """Queue the values of an interrupted trial again (a new trial)."""
    import optuna
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs={'retry_of': trial.number}))


#: seconds after which a RUNNING trial that never recorded its tuner's pid
#: is taken for lost (its tuner records it within milliseconds)
UNCLAIMED_S = 60


def _alive(attrs):
    token = process_token(attrs['pid'])
    return token is not None and token == attrs.get('pid_token')


def recover_interrupted(study):
    """RUNNING trials whose tuner process on this host is gone (killed):
    mark them FAIL (``interrupted``) and queue their values again; so too
    trials of any host that never recorded their tuner's pid (the tuner
    was killed between the trial's creation and its first step). Other
    trials of other hosts are left to the storage heartbeat."""
    from optuna.trial import TrialState
    storage = study._storage
    found = []
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if 'pid' not in attrs:
            # a tuner records its pid as the trial's first step: a trial
            # without one after UNCLAIMED_S lost its tuner in between
            age = (now - t.datetime_start).total_seconds() \
                if t.datetime_start else 0
            if age < UNCLAIMED_S:
                continue
            reason = 'tuner killed as the trial started'
        elif attrs.get('host') != HOST:
            continue
        elif _alive(attrs):
            continue  # still running (another worker on this host)
        else:
            reason = 'tuner process gone'
        storage.set_trial_user_attr(t._trial_id, 'interrupted', reason)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        requeue(study, t)
        found.append(t.number)
    if found:
        log(f'trials {found} were running when their tuner was killed: '
            'marked FAIL (interrupted) and queued again')
    return found


class OptunaObjective:
    """One trial: ``tools/train.py`` on the trial config, in a child
    process; the child's :class:`OptunaPruningHook` reports to the study."""

    def __init__(self, base, tune, work_dir, storage_url, study_name,
                 pruner, allow_test):
        self.base = base
        self.tune = tune
        self.work_dir = work_dir
        self.storage_url = storage_url
        self.study_name = study_name
        self.pruner = pruner
        self.allow_test = allow_test
        self.max_epochs = int(base.train_cfg.max_epochs)

    def __call__(self, trial):
        import optuna
        pid = os.getpid()
        # 'pid' last: a trial with a pid has its host and token too
        trial.set_user_attr('host', HOST)
        trial.set_user_attr('pid_token', process_token(pid))
        trial.set_user_attr('pid', pid)
        params = {name: suggest(trial, name, spec)
                  for name, spec in self.tune['space'].items()}
        trial_dir = osp.join(self.work_dir, f'trial_{trial.number}')
        os.makedirs(trial_dir, exist_ok=True)
        trial.set_user_attr('work_dir', trial_dir)
        hook = report_hook(
            'OptunaPruningHook', self.tune, storage=self.storage_url,
            study_name=self.study_name, trial_id=trial._trial_id,
            pruner=self.pruner)
        cfg = build_trial_config(self.base, self.tune, params, trial_dir,
                                 hook, self.allow_test)
        cfg_path = osp.join(trial_dir, 'trial_config.py')
        cfg.dump(cfg_path)
        log_path = osp.join(trial_dir, TRIAL_LOG)
        log(f'trial {trial.number} started: {fmt_params(params)} '
            f'({trial_dir})')
        start = time.time()
        rc = self._train(cfg_path, trial_dir, log_path, trial)
        seconds = time.time() - start
        trial.set_user_attr('seconds', round(seconds, 1))
        report = read_report(trial_dir)
        if self.tune['keep_checkpoints'] == 'best':
            prune_checkpoints(trial_dir)
        if report:
            trial.set_user_attr('report', {
                k: report[k] for k in ('metric', 'objective', 'history',
                                       'value', 'value_epoch', 'last')})
            trial.set_user_attr('epochs', report['history'][-1][0])
            trial.set_user_attr('best_epoch', report['best_epoch'])
        if rc != 0:
            _, reason = trial_error(trial_dir)
            trial.set_user_attr('fail_reason', reason)
            log(failed_line(trial.number, reason, log_path, seconds))
            if is_trial_error(reason):
                raise TrialFailed(reason)
            raise TrialCrashed(
                f'trial {trial.number} failed: {reason}; see {log_path}. '
                'The study stops: this is not a divergence of the trial')
        if not report:
            reason = 'no validation ran (val_dataloader missing?)'
            trial.set_user_attr('fail_reason', reason)
            raise TrialCrashed(f'trial {trial.number}: {reason}')
        pruned = report['stopped_epoch'] is not None
        log(outcome_line(trial.number, 'PRUNED' if pruned else 'COMPLETE',
                         report, seconds, self.max_epochs))
        if pruned:
            raise optuna.TrialPruned(
                f'after epoch {report["stopped_epoch"]}')
        return report['value']

    def _train(self, cfg_path, trial_dir, log_path, trial):
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        cmd = [*TRAIN_CMD, cfg_path, '--work-dir', trial_dir]
        with open(log_path, 'w') as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                preexec_fn=_die_with_parent if os.name == 'posix' else None)
            trial.set_user_attr('train_pid', proc.pid)
            try:
                return proc.wait()
            except BaseException:
                # Ctrl-C or an error of the tuner: stop the trial, queue its
                # values again, then let Optuna record it
                proc.kill()
                proc.wait()
                trial.set_user_attr('interrupted', 'tuner interrupted')
                requeue(trial.study, trial.study._storage.get_trial(
                    trial._trial_id))
                raise


def _open_storage(url, heartbeat):
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from .optuna_utils import sqlite_engine_kwargs
    kwargs = {}
    if heartbeat:
        kwargs = dict(heartbeat_interval=heartbeat,
                      grace_period=max(4 * heartbeat, 120),
                      heartbeat_stale_trial_callback=requeue)
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=sqlite_engine_kwargs(url), **kwargs)
        except Exception:  # workers creating the tables at once
            if attempt == 4:
                raise
            time.sleep(1 + attempt)


def _flat(node, prefix=''):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flat(v, f'{prefix}{k}.'))
        return out
    return {prefix.rstrip('.'): node}


def trial_settings(base) -> dict:
    """What every trial of a study inherits from the base config (after
    ``--cfg-options``), flat and JSON-safe; the study folder and the tune
    dict (checked by the tune signature) aside."""
    cfg = base.to_dict()
    for key in ('work_dir', 'tune'):
        cfg.pop(key, None)
    return json.loads(json.dumps(_flat(cfg), default=str))


def changed_settings(saved, now) -> list:
    """``'key: was X, now Y'`` for every setting that differs."""
    if saved is None:
        return []
    keys = sorted(set(saved) | set(now))
    return [f'{k}: was {saved.get(k, "(absent)")!r}, now '
            f'{now.get(k, "(absent)")!r}'
            for k in keys if saved.get(k) != now.get(k)]


def run_optuna(args, base, tune):
    with quiet_optuna():
        return _run_optuna(args, base, tune)


def _run_optuna(args, base, tune):
    import optuna
    work_dir = base.work_dir
    storage_url = args.storage or \
        f'sqlite:///{osp.join(work_dir, "study.db")}'
    study_name = args.study_name
    storage = _open_storage(storage_url, args.heartbeat)
    names = optuna.study.get_all_study_names(storage)
    exists = study_name in names
    if exists and not (args.resume or args.storage):
        raise TuneError(
            f'study {study_name!r} already exists in {storage_url}: pass '
            '--resume to continue it, or use another --work-dir / '
            '--study-name')
    if args.resume and not exists:
        raise TuneError(f'--resume: no study {study_name!r} in '
                        f'{storage_url} to resume')
    max_epochs = int(base.train_cfg.max_epochs)
    pruner = pruner_spec(tune, max_epochs)
    signature = json.dumps(
        dict(space=tune['space'], metric=tune['metric'], mode=tune['mode'],
             objective=tune['objective'], split=tune['split'],
             pruner=pruner), sort_keys=True)
    try:  # one worker creates the study, and only it enqueues the points
        study = optuna.create_study(
            storage=storage, study_name=study_name,
            direction='maximize' if tune['mode'] == 'max' else 'minimize',
            pruner=build_pruner(pruner))
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage,
                                  pruner=build_pruner(pruner))
        created = False
    saved = study.user_attrs.get('tune_signature')
    deadline = time.time() + 60
    while not created and saved is None and time.time() < deadline:
        time.sleep(0.5)  # its creator is writing the study's settings
        saved = optuna.load_study(
            study_name=study_name, storage=storage).user_attrs.get(
                'tune_signature')
    settings = trial_settings(base)
    if saved is not None:
        changed = changed_settings(study.user_attrs.get('base_settings'),
                                   settings)
        if changed:
            raise TuneError(
                f'study {study_name!r} ran its trials with other settings; '
                'continuing would mix trials of two setups: '
                + '; '.join(changed) + ' (give the same config and '
                '--cfg-options, or use another --study-name)')
    if saved is None and not created:
        raise TuneError(f'study {study_name!r} in {storage_url} has no '
                        'tune settings: it was not created by tools/tune.py '
                        '(or its creator died at once); use another '
                        '--study-name')
    if saved is None:
        study.set_user_attr('base_settings', settings)
        study.set_user_attr('tune_signature', signature)
        study.set_user_attr('config', osp.abspath(args.config))
        for point in complete_points(base, tune['space'],
                                     tune['points_to_evaluate']):
            study.enqueue_trial(point)
    elif saved != signature:
        changed = changed_settings(_flat(json.loads(saved)),
                                   _flat(json.loads(signature)))
        raise TuneError(
            f'study {study_name!r} was started with another search: '
            + '; '.join(f'tune.{c}' for c in changed) +
            ' (use the same tune settings, or another --study-name)')
    recover_interrupted(study)
    # trial n sampled with seed + n: distinct points for every worker,
    # reproducible from the study's history
    study.sampler = build_sampler(tune['sampler'], per_trial=True)

    n_total = args.n_trials or int(tune['num_samples'])
    done = len(counted_trials(study))
    log(f'study {study_name!r} in {storage_url}: {done} of {n_total} trials '
        f'done; metric {tune["metric"]} ({tune["mode"]}), split '
        f'{tune["split"]!r}, pruner {pruner}')

    def stop_when_done(study, _trial):
        if len(counted_trials(study)) >= n_total:
            study.stop()

    crashed = None
    if done < n_total:
        objective = OptunaObjective(base, tune, work_dir, storage_url,
                                    study_name, pruner, args.allow_test_split)
        try:
            study.optimize(objective, n_trials=n_total - done,
                           catch=(TrialFailed,), callbacks=[stop_when_done])
        except TrialCrashed as e:
            crashed = e  # the table and trials.csv first
    rows = optuna_rows(study)
    result = finish(args, base, tune, rows)
    if crashed is not None:
        raise crashed
    return result


def optuna_rows(study):
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        state = t.state.name
        note = a.get('fail_reason') or a.get('interrupted') or ''
        if a.get('retry_of') is not None:
            note = f'retry of trial {a["retry_of"]}' + (
                f'; {note}' if note else '')
        rows.append(trial_row(
            t.number, state, a.get('report'), t.params,
            seconds=a.get('seconds'), note=note,
            work_dir=a.get('work_dir')))
    return rows
