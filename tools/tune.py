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
  :class:`~lmclip_mm.engine.hooks.OptunaPruningHook` reports every epoch's
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
import csv
import functools
import json
import math
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time
import warnings

HERE = osp.dirname(osp.abspath(__file__))
TRAIN_PY = osp.join(HERE, 'train.py')

#: LM-CLIP's released search space (Timmermann et al., the authors' Ray Tune
#: script): each entry is a searched value, ``key`` the config key(s) it sets.
PAPER_SPACE = dict(
    batch_size=dict(type='choice', values=[8, 16, 32, 64],
                    key='train_dataloader.batch_size'),
    gamma_neg=dict(type='loguniform', low=2.0, high=10.0,
                   key='model.loss.gamma_neg'),
    loss_weight=dict(type='loguniform', low=0.1, high=10.0,
                     key='model.loss.loss_weight'),
    sampler_power=dict(type='loguniform', low=1.0, high=2.0,
                       key='train_dataloader.sampler.power'),
    class_weight_power=dict(type='loguniform', low=1.0, high=2.0,
                            key='model.class_weight_power'),
)

DEFAULT_TUNE = dict(
    # the validation metric: a full key or the part after the evaluator's
    # prefix (resolved in each run, so a renamed prefix still works)
    metric='mAP_tail',
    mode='max',
    # the split the trials validate on ('test' needs --allow-test-split)
    split='val',
    # the held-out val split (None: the config's or the dataset's default,
    # 0.1 of the train list, seed 0)
    val_fraction=None,
    val_seed=None,
    num_samples=500,
    space=PAPER_SPACE,
    # any optuna.samplers class and its arguments
    sampler=dict(type='TPESampler', seed=0),
    # successive halving on epochs: rungs at grace_period * rf**k epochs,
    # max_t = train_cfg.max_epochs
    scheduler=dict(type='ASHA', grace_period=5, reduction_factor=2),
    # trials to run first, e.g. [dict(batch_size=8, gamma_neg=9.8)]; the
    # values a point leaves out are the config's own
    points_to_evaluate=[],
    # the value of a trial: its 'best' validation (the epoch whose
    # checkpoint is kept) or its 'last'
    objective='best',
    # trials validate every epoch (the pruner needs each epoch)
    val_interval=1,
    # 'best': delete a finished trial's epoch checkpoints, keep best_*.pth;
    # 'all': keep everything
    keep_checkpoints='best',
)

SPACE_TYPES = ('choice', 'uniform', 'loguniform', 'int', 'logint')
#: failures of one trial that do not stop the study
TRIAL_ERRORS = ('TrainingDivergedError', 'OutOfMemoryError',
                'CUDA out of memory')
HOST = socket.gethostname()
#: hooks that evaluate on the test split: left out of the trials
TEST_HOOKS = ('TestBestCheckpointHook', 'mmpretrain.TestBestCheckpointHook')


class TuneError(RuntimeError):
    """Bad tuning setup: the message says what to change."""


class TrialFailed(Exception):
    """A trial that failed by itself (diverged, out of memory)."""


class TrialCrashed(Exception):
    """A trial that failed for another reason: the study stops."""


# -- the tune dict ------------------------------------------------------------
def tune_settings(cfg):
    """The config's ``tune`` dict merged over :data:`DEFAULT_TUNE`
    (mmengine's merge: ``space=dict(_delete_=True, ...)`` replaces the
    paper's space instead of adding to it)."""
    from mmengine.config import Config, ConfigDict
    merged = Config(dict(tune=copy.deepcopy(DEFAULT_TUNE)))
    user = cfg.get('tune', None)
    if user:
        merged.merge_from_dict(dict(tune=user.to_dict() if isinstance(
            user, ConfigDict) else dict(user)))
    tune = merged.tune.to_dict()
    if tune['mode'] not in ('max', 'min'):
        raise TuneError(f"tune.mode must be 'max' or 'min', got "
                        f"{tune['mode']!r}")
    if tune['objective'] not in ('best', 'last'):
        raise TuneError("tune.objective must be 'best' or 'last', got "
                        f"{tune['objective']!r}")
    if tune['keep_checkpoints'] not in ('best', 'all'):
        raise TuneError("tune.keep_checkpoints must be 'best' or 'all', got "
                        f"{tune['keep_checkpoints']!r}")
    if not tune['space']:
        raise TuneError('tune.space is empty: nothing to search')
    for name, spec in tune['space'].items():
        check_space_entry(name, spec)
    return tune


def check_space_entry(name, spec):
    kind = spec.get('type')
    if kind not in SPACE_TYPES:
        raise TuneError(f'tune.space.{name}: type must be one of '
                        f'{SPACE_TYPES}, got {kind!r}')
    if kind == 'choice':
        if not spec.get('values'):
            raise TuneError(f'tune.space.{name}: a choice needs values')
    elif not ('low' in spec and 'high' in spec and
              spec['low'] < spec['high']):
        raise TuneError(f'tune.space.{name}: needs low < high, got {spec}')
    elif kind.startswith('log') and spec['low'] <= 0:
        raise TuneError(f'tune.space.{name}: a log scale needs low > 0')


def space_keys(name, spec):
    key = spec.get('key', name)
    return [key] if isinstance(key, str) else list(key)


def optuna_distribution(spec):
    from optuna.distributions import (CategoricalDistribution,
                                      FloatDistribution, IntDistribution)
    kind = spec['type']
    if kind == 'choice':
        return CategoricalDistribution(list(spec['values']))
    if kind in ('uniform', 'loguniform'):
        return FloatDistribution(float(spec['low']), float(spec['high']),
                                 log=kind == 'loguniform')
    return IntDistribution(int(spec['low']), int(spec['high']),
                           log=kind == 'logint')


def build_sampler(spec, seed_offset=0):
    import optuna
    spec = dict(spec)
    cls = getattr(optuna.samplers, spec.pop('type'))
    if spec.get('seed') is not None:
        spec['seed'] = int(spec['seed']) + seed_offset
    return cls(**spec)


def pruner_spec(tune, max_epochs):
    """Optuna's successive halving for ``tune.scheduler`` (ASHA)."""
    sched = dict(tune['scheduler'] or {})
    kind = sched.pop('type', 'ASHA')
    if kind in (None, 'none', 'None'):
        return None
    if kind != 'ASHA':
        raise TuneError(f"tune.scheduler.type must be 'ASHA' or None, got "
                        f'{kind!r}')
    grace = int(sched.pop('grace_period', 5))
    rf = int(sched.pop('reduction_factor', 2))
    if sched:
        raise TuneError(f'tune.scheduler: unknown keys {sorted(sched)}')
    if grace > max_epochs:
        raise TuneError(f'tune.scheduler.grace_period={grace} is more than '
                        f'train_cfg.max_epochs={max_epochs}: nothing would '
                        'ever be pruned')
    return dict(type='SuccessiveHalvingPruner', min_resource=grace,
                reduction_factor=rf, min_early_stopping_rate=0)


# -- configs ------------------------------------------------------------------
def set_key(cfg, key, value):
    """``cfg.merge_from_dict({key: value})``: what ``--cfg-options`` does."""
    cfg.merge_from_dict({key: value})


def apply_params(cfg, space, params):
    for name, value in params.items():
        for key in space_keys(name, space[name]):
            set_key(cfg, key, value)
    return cfg


def set_val_split(cfg, tune, allow_test):
    """Make the trials validate on ``tune.split``; refuse the test split
    unless ``allow_test``.

    ``'val'`` (the default): the val loader reads the split held out of the
    train list (``split='val'``) and the train loader the train list
    without it (``holdout_val=True``), both with the same ``val_fraction``
    / ``val_seed`` (``tune.val_fraction`` / ``tune.val_seed`` when given,
    else the config's, else the dataset's defaults).
    """
    split = tune['split']
    loader = cfg.get('val_dataloader') or {}
    dataset = loader.get('dataset') or {}
    if split is None:
        if not allow_test:
            raise TuneError(
                'tune.split=None validates on the config\'s val_dataloader '
                'as it is, which may be the test split; pass '
                '--allow-test-split to do so knowingly')
        return cfg
    if split not in ('val', 'test'):
        raise TuneError(f"tune.split must be 'val', 'test' or None, got "
                        f'{split!r}')
    if split == 'test' and not allow_test:
        raise TuneError(
            "tune.split='test': tuning on the test split makes its scores "
            'optimistic; tune on the held-out val split (the default), or '
            'pass --allow-test-split to do it anyway')
    if not dataset or 'split' not in dataset:
        raise TuneError(
            'the config\'s val_dataloader.dataset has no `split` (it is not '
            'one of the long-tailed datasets): tools/tune.py cannot make it '
            'the val split. Set tune.split=None and pass --allow-test-split '
            'to validate on it as it is')
    cfg.val_dataloader.dataset.split = split
    if split == 'val':
        train = cfg.train_dataloader.dataset
        for key in ('val_fraction', 'val_seed'):
            value = tune.get(key)
            if value is None:
                found = {d[key] for d in (train, cfg.val_dataloader.dataset)
                         if d.get(key) is not None}
                if len(found) > 1:
                    raise TuneError(
                        f'train_dataloader.dataset.{key} and '
                        f'val_dataloader.dataset.{key} differ ({found}): '
                        'the val images would overlap the train images')
                value = found.pop() if found else None
            if value is not None:
                train[key] = value
                cfg.val_dataloader.dataset[key] = value
        train.holdout_val = True
    return cfg


def static_metric_key(cfg, metric):
    """The full key of ``metric`` as the config's val evaluator will name
    it (its ``prefix``, else its class's ``default_prefix``), for the
    trials' best checkpoint; None when it cannot be told before running."""
    if '/' in metric:
        return metric
    evaluators = cfg.get('val_evaluator')
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    prefixes = set()
    try:
        import lmclip_mm  # noqa: F401
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import METRICS
        init_default_scope(cfg.get('default_scope', 'mmpretrain'))
        for ev in evaluators or []:
            cls = METRICS.get(ev['type'])
            prefix = ev.get('prefix') or getattr(cls, 'default_prefix', None)
            prefixes.add(prefix)
    except Exception:  # a custom evaluator: leave the checkpoints alone
        return None
    if len(prefixes) != 1 or None in prefixes:
        return None
    return f'{prefixes.pop()}/{metric}'


def build_trial_config(base, tune, params, work_dir, hook, allow_test):
    """Base config (``--cfg-options`` applied) + the trial's values + the
    tuning settings: the val split, a validation every
    ``tune.val_interval`` epochs, the best checkpoint by the tuned metric
    only (when its key can be told) and ``hook`` (reports each validation
    to the tuner)."""
    cfg = copy.deepcopy(base)
    apply_params(cfg, tune['space'], params)
    set_val_split(cfg, tune, allow_test)
    cfg.work_dir = work_dir
    if tune.get('val_interval'):
        cfg.train_cfg.val_interval = int(tune['val_interval'])
    key = static_metric_key(cfg, tune['metric'])
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint')
    if key is not None and ckpt is not None:
        # the best checkpoint by the tuned metric only
        ckpt.save_best = key
        ckpt.rule = 'greater' if tune['mode'] == 'max' else 'less'
    # trials never touch the test split (the honest configs test the best
    # checkpoint after training: only the final training should)
    for name, h in list((cfg.get('default_hooks') or {}).items()):
        if h is not None and h.get('type') in TEST_HOOKS:
            cfg.default_hooks[name] = None
    hooks = [h for h in cfg.get('custom_hooks', None) or []
             if h.get('type') not in TEST_HOOKS]
    hooks.append(hook)
    cfg.custom_hooks = hooks
    cfg.pop('tune', None)
    return cfg


def get_key(cfg, key):
    value = cfg
    for part in key.split('.'):
        value = value[int(part)] if isinstance(value, (list, tuple)) \
            else value[part]
    return value


def complete_points(base, space, points):
    """``tune.points_to_evaluate`` with every searched value: the ones a
    point leaves out take the config's own value."""
    out = []
    for point in points or []:
        point = dict(point)
        unknown = sorted(set(point) - set(space))
        if unknown:
            raise TuneError(f'tune.points_to_evaluate: {unknown} are not in '
                            f'tune.space ({sorted(space)})')
        for name, spec in space.items():
            if name not in point:
                try:
                    point[name] = get_key(base, space_keys(name, spec)[0])
                except (KeyError, IndexError, TypeError):
                    raise TuneError(
                        f'tune.points_to_evaluate: {point} has no {name} and '
                        f'the config no {space_keys(name, spec)[0]}')
        out.append({name: point[name] for name in space})
    return out


def write_best_config(base, tune, params, path, header):
    cfg = copy.deepcopy(base)
    apply_params(cfg, tune['space'], params)
    text = ''.join(f'# {line}\n' for line in header) + cfg.pretty_text
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def read_report(trial_dir):
    path = osp.join(trial_dir, 'trial_report.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def prune_checkpoints(trial_dir):
    """Delete a finished trial's epoch/iter checkpoints (the best ones by
    the tuned metric stay)."""
    for name in os.listdir(trial_dir):
        if re.fullmatch(r'(epoch|iter)_\d+\.pth', name) or \
                name == 'last_checkpoint':
            os.remove(osp.join(trial_dir, name))


def error_line(log_text):
    """The last exception line of a log ('TypeName: message')."""
    lines = [x.strip() for x in log_text.splitlines() if x.strip()]
    for line in reversed(lines):
        m = re.match(r'^(?:error: )?([A-Za-z_][\w.]*(?:Error|Exception|'
                     r'Interrupt)): (.*)$', line)
        if m:
            return f'{m.group(1).rsplit(".", 1)[-1]}: {m.group(2)}'
    return lines[-1] if lines else '(no output)'


def is_trial_error(message):
    return any(x in message for x in TRIAL_ERRORS)


# -- processes ----------------------------------------------------------------
def _die_with_parent():  # pragma: no cover - runs in the child
    """Linux: the trial process is killed when the tuner dies (SIGKILL
    included), so a killed study leaves no orphan training."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def process_token(pid):
    """``pid`` and its start time (None when no such process): a reused pid
    is another token."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f'{pid}:{f.read().rsplit(")", 1)[1].split()[19]}'
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return str(pid)


# -- the Optuna backend -------------------------------------------------------
def log(msg):
    print(f'[tune] {msg}', flush=True)


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


def recover_interrupted(study):
    """RUNNING trials whose tuner process on this host is gone (killed):
    mark them FAIL (``interrupted``) and queue their values again. Trials
    of other hosts are left to the storage heartbeat."""
    from optuna.trial import TrialState
    storage = study._storage
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get('host') != HOST or 'pid' not in attrs:
            continue
        if process_token(attrs['pid']) == attrs.get('pid_token'):
            continue  # still running (another worker on this host)
        storage.set_trial_user_attr(t._trial_id, 'interrupted',
                                    'tuner process gone')
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        requeue(study, t)
        found.append(t.number)
    if found:
        log(f'trials {found} were running when their tuner was killed: '
            'marked FAIL (interrupted) and queued again')
    return found


def suggest(trial, name, spec):
    kind = spec['type']
    if kind == 'choice':
        return trial.suggest_categorical(name, list(spec['values']))
    if kind in ('uniform', 'loguniform'):
        return trial.suggest_float(name, float(spec['low']),
                                   float(spec['high']),
                                   log=kind == 'loguniform')
    return trial.suggest_int(name, int(spec['low']), int(spec['high']),
                             log=kind == 'logint')


def fmt_params(params):
    return ' '.join(f'{k}={_fmt(v)}' for k, v in params.items())


def _fmt(v):
    if isinstance(v, float):
        return f'{v:.4g}'
    return str(v)


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
        trial.set_user_attr('host', HOST)
        trial.set_user_attr('pid', pid)
        trial.set_user_attr('pid_token', process_token(pid))
        params = {name: suggest(trial, name, spec)
                  for name, spec in self.tune['space'].items()}
        trial_dir = osp.join(self.work_dir, f'trial_{trial.number}')
        os.makedirs(trial_dir, exist_ok=True)
        trial.set_user_attr('work_dir', trial_dir)
        hook = dict(
            type='OptunaPruningHook', storage=self.storage_url,
            study_name=self.study_name, trial_id=trial._trial_id,
            pruner=self.pruner, metric=self.tune['metric'],
            rule='greater' if self.tune['mode'] == 'max' else 'less')
        cfg = build_trial_config(self.base, self.tune, params, trial_dir,
                                 hook, self.allow_test)
        cfg_path = osp.join(trial_dir, 'trial_config.py')
        cfg.dump(cfg_path)
        log_path = osp.join(trial_dir, 'tune_trial.log')
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
            trial.set_user_attr('metric', report['metric'])
            trial.set_user_attr('epochs', report['history'][-1][0])
            trial.set_user_attr('best', report['best'])
            trial.set_user_attr('best_epoch', report['best_epoch'])
        if rc != 0:
            with open(log_path, errors='replace') as f:
                reason = error_line(f.read())
            trial.set_user_attr('fail_reason', reason)
            log(f'trial {trial.number} failed after {seconds:.1f} s: '
                f'{reason} (log: {log_path})')
            if is_trial_error(reason):
                raise TrialFailed(reason)
            raise TrialCrashed(
                f'trial {trial.number} failed: {reason}; see {log_path}. '
                'The study stops: this is not a divergence of the trial')
        if not report:
            reason = 'no validation ran (val_dataloader missing?)'
            trial.set_user_attr('fail_reason', reason)
            raise TrialCrashed(f'trial {trial.number}: {reason}')
        value = report['best'] if self.tune['objective'] == 'best' \
            else report['last']
        if report['stopped_epoch'] is not None:
            log(f'trial {trial.number} pruned after epoch '
                f'{report["stopped_epoch"]} ({report["metric"]}='
                f'{report["last"]:.4f}, {seconds:.1f} s)')
            raise optuna.TrialPruned(
                f'after epoch {report["stopped_epoch"]}')
        log(f'trial {trial.number} complete: {report["metric"]}={value:.4f} '
            f'(epoch {report["best_epoch"]} of {report["history"][-1][0]}, '
            f'{seconds:.1f} s)')
        return value

    def _train(self, cfg_path, trial_dir, log_path, trial):
        env = dict(os.environ, PYTHONUNBUFFERED='1')
        cmd = [sys.executable, TRAIN_PY, cfg_path, '--work-dir', trial_dir]
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
    from lmclip_mm.engine.hooks.optuna_pruning_hook import \
        sqlite_engine_kwargs
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


def run_optuna(args, base, tune):
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
             split=tune['split'], pruner=pruner), sort_keys=True)
    from lmclip_mm.engine.hooks.optuna_pruning_hook import build_pruner
    study = optuna.create_study(
        storage=storage, study_name=study_name,
        direction='maximize' if tune['mode'] == 'max' else 'minimize',
        pruner=build_pruner(pruner), load_if_exists=True)
    saved = study.user_attrs.get('tune_signature')
    if saved is None:
        study.set_user_attr('tune_signature', signature)
        study.set_user_attr('config', osp.abspath(args.config))
        for point in complete_points(base, tune['space'],
                                     tune['points_to_evaluate']):
            study.enqueue_trial(point)
    elif saved != signature:
        raise TuneError(
            f'study {study_name!r} was started with another search '
            f'(space/metric/split/pruner):\n  {saved}\nnow:\n  {signature}\n'
            'use another --study-name or the same tune settings')
    recover_interrupted(study)
    # a resumed or second worker draws a new stream of samples
    offset = len(study.trials) + (os.getpid() if args.storage else 0)
    study.sampler = build_sampler(tune['sampler'], offset)

    n_total = args.n_trials or int(tune['num_samples'])
    done = len(counted_trials(study))
    log(f'study {study_name!r} in {storage_url}: {done} of {n_total} trials '
        f'done; metric {tune["metric"]} ({tune["mode"]}), split '
        f'{tune["split"]!r}, pruner {pruner}')

    def stop_when_done(study, _trial):
        if len(counted_trials(study)) >= n_total:
            study.stop()

    if done < n_total:
        objective = OptunaObjective(base, tune, work_dir, storage_url,
                                    study_name, pruner, args.allow_test_split)
        study.optimize(objective, n_trials=n_total - done,
                       catch=(TrialFailed,), callbacks=[stop_when_done])
    rows = optuna_rows(study)
    return finish(args, base, tune, rows)


def optuna_rows(study):
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        state = t.state.name
        note = a.get('fail_reason') or a.get('interrupted') or ''
        if a.get('retry_of') is not None:
            note = f'retry of trial {a["retry_of"]}' + (
                f'; {note}' if note else '')
        rows.append(dict(
            trial=t.number, state=state,
            value=a.get('best') if state == 'PRUNED' else t.value,
            epochs=a.get('epochs'), seconds=a.get('seconds'),
            params=dict(t.params), note=note,
            metric=a.get('metric'), work_dir=a.get('work_dir')))
    return rows


# -- the Ray Tune backend -----------------------------------------------------
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
    from lmclip_mm.utils import launch
    from mmengine.config import Config
    from mmengine.runner import Runner
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
    Runner.from_cfg(cfg).train()


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
    import ray.cloudpickle
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
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


# -- the end: table and best config -------------------------------------------
def best_row(rows, mode):
    done = [r for r in rows if r['state'] == 'COMPLETE'
            and r['value'] is not None and not math.isnan(r['value'])]
    if not done:
        return None
    pick = max if mode == 'max' else min
    return pick(done, key=lambda r: r['value'])


def format_table(rows, metric, best=None):
    names = []
    for r in rows:
        names += [k for k in r['params'] if k not in names]
    header = ['trial', 'state', metric, 'epochs', 'time (s)'] + names + \
        ['note']
    body = []
    for r in rows:
        mark = '*' if best is not None and r is best else ''
        value = '' if r['value'] is None else f'{r["value"]:.2f}' \
            if abs(r['value']) >= 1 else f'{r["value"]:.4f}'
        body.append([f'{r["trial"]}{mark}', r['state'], value,
                     '' if r['epochs'] is None else str(r['epochs']),
                     '' if r['seconds'] is None else f'{r["seconds"]:.1f}'] +
                    [_fmt(r['params'][n]) if n in r['params'] else ''
                     for n in names] + [r['note'][:60]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'
    out = [line, '| ' + ' | '.join(h.ljust(w) for h, w in
                                   zip(header, widths)) + ' |', line]
    out += ['| ' + ' | '.join(str(c).ljust(w) for c, w in zip(row, widths))
            + ' |' for row in body]
    out.append(line)
    return '\n'.join(out)


def finish(args, base, tune, rows):
    work_dir = base.work_dir
    metric = next((r['metric'] for r in rows if r.get('metric')),
                  tune['metric'])
    best = best_row(rows, tune['mode'])
    print(f'\n{len(rows)} trials ({metric}, {tune["mode"]}imised on split '
          f'{tune["split"]!r}; * = best):', flush=True)
    print(format_table(rows, metric, best), flush=True)
    with open(osp.join(work_dir, 'trials.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        names = []
        for r in rows:
            names += [k for k in r['params'] if k not in names]
        writer.writerow(['trial', 'state', metric, 'epochs', 'seconds'] +
                        names + ['note', 'work_dir'])
        for r in rows:
            writer.writerow([r['trial'], r['state'], r['value'], r['epochs'],
                             r['seconds']] +
                            [r['params'].get(n) for n in names] +
                            [r['note'], r['work_dir']])
    if best is None:
        log('no trial completed: no best config written')
        return None
    path = osp.join(work_dir, 'best_config.py')
    header = [
        f'Best of {len(rows)} trials of tools/tune.py {args.config}',
        f'trial {best["trial"]} ({best["work_dir"]}): {metric} = '
        f'{best["value"]:.4f} on split {tune["split"]!r}',
    ] + [f'  {name} = {_fmt(value)}  ->  '
         f'{", ".join(space_keys(name, tune["space"][name]))}'
         for name, value in best['params'].items()] + [
        'Train it: python tools/train.py <this file>', '']
    write_best_config(base, tune, best['params'], path, header)
    log(f'best: trial {best["trial"]}, {metric}={best["value"]:.4f}; '
        f'config written to {path}')
    return path


# -- CLI ----------------------------------------------------------------------
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
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    name = osp.splitext(osp.basename(args.config))[0]
    cfg.work_dir = osp.abspath(
        args.work_dir or osp.join('work_dirs', f'tune_{name}'))
    args.study_name = args.study_name or name
    if cfg.get('val_dataloader') is None or cfg.get('val_evaluator') is None:
        raise TuneError('the config has no val_dataloader/val_evaluator: '
                        'nothing to tune on')
    return cfg


def main(argv=None):
    args = parse_args(argv)
    base = load_base(args)
    tune = tune_settings(base)
    # fail now, not in every trial
    set_val_split(copy.deepcopy(base), tune, args.allow_test_split)
    os.makedirs(base.work_dir, exist_ok=True)
    if args.backend == 'ray':
        return run_ray(args, base, tune)
    return run_optuna(args, base, tune)


if __name__ == '__main__':
    try:
        main()
    except TuneError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(1)
