# Copyright (c) lmclip_mm authors.
"""The search space: the ``tune`` dict of a config, its entries, samplers
and the pruning schedule."""
import copy

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


class TuneError(RuntimeError):
    """Bad tuning setup: the message says what to change."""


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


def build_sampler(spec, per_trial=False):
    """The ``optuna.samplers`` class of ``spec`` with its arguments. With
    ``per_trial`` and a ``seed``, trial ``n`` is sampled by its own instance
    seeded ``seed + n`` (:func:`trial_seeded_sampler`): workers sharing a
    study draw distinct, reproducible points, whenever they start."""
    import optuna
    spec = dict(spec)
    cls = getattr(optuna.samplers, spec.pop('type'))
    if per_trial and spec.get('seed') is not None:
        return trial_seeded_sampler(cls, spec)
    return cls(**spec)


def trial_seeded_sampler(cls, spec):
    """An Optuna sampler that samples trial ``n`` with ``cls(**spec)``
    seeded ``spec['seed'] + n``. Trial numbers are unique in a study (the
    storage hands them out), so two workers that ask at the same instant,
    with the same history, still draw from different seeds; and the same
    study history gives the same points again."""
    import optuna
    base_seed = int(spec['seed'])

    class TrialSeededSampler(optuna.samplers.BaseSampler):

        def __init__(self):
            self._samplers = {}

        def _of(self, trial):
            if trial.number not in self._samplers:
                self._samplers[trial.number] = cls(
                    **dict(spec, seed=base_seed + trial.number))
            return self._samplers[trial.number]

        def infer_relative_search_space(self, study, trial):
            return self._of(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._of(trial).sample_relative(study, trial,
                                                   search_space)

        def sample_independent(self, study, trial, param_name,
                               param_distribution):
            return self._of(trial).sample_independent(
                study, trial, param_name, param_distribution)

        def before_trial(self, study, trial):
            self._of(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            sampler = self._samplers.pop(trial.number, None)
            if sampler is not None:
                sampler.after_trial(study, trial, state, values)

    return TrialSeededSampler()


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
