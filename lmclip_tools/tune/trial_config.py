# Copyright (c) lmclip_mm authors.
"""A trial's config: the base config with the trial's values, the val
split, the tuned checkpoint rule and the reporting hook."""
import copy
import os

from .space import TuneError, space_keys

TEST_HOOKS = ('BestCheckpointTestHook', 'mmpretrain.BestCheckpointTestHook',
              'TestBestCheckpointHook', 'mmpretrain.TestBestCheckpointHook')
#: the module that registers the trials' reporting hooks
HOOKS_MODULE = 'lmclip_tools.tune.hooks'


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


def report_hook(hook_type, tune, **kwargs):
    """The config of the hook through which a trial reports its value
    (metric, mode and objective of ``tune``) to a tuner."""
    return dict(type=hook_type, metric=tune['metric'],
                rule='greater' if tune['mode'] == 'max' else 'less',
                objective=tune['objective'], **kwargs)


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
    imports = dict(cfg.get('custom_imports') or {})
    modules = list(imports.get('imports') or [])
    if HOOKS_MODULE not in modules:
        modules.append(HOOKS_MODULE)
    cfg.custom_imports = dict(imports, imports=modules)
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
        given = set(point)
        for name, spec in space.items():
            if name not in point:
                try:
                    point[name] = get_key(base, space_keys(name, spec)[0])
                except (KeyError, IndexError, TypeError):
                    raise TuneError(
                        f'tune.points_to_evaluate: {point} has no {name} and '
                        f'the config no {space_keys(name, spec)[0]}')
            where = outside(spec, point[name])
            if where:
                source = 'given' if name in given else \
                    f"the config's {space_keys(name, spec)[0]}"
                print(f'warning: tune.points_to_evaluate[{len(out)}]: '
                      f'{name}={point[name]!r} ({source}) lies outside '
                      f'tune.space: {where}', flush=True)
        out.append({name: point[name] for name in space})
    return out


def outside(spec, value):
    """Why ``value`` is outside the search space entry ``spec`` (its range
    or choices), or None."""
    if spec['type'] == 'choice':
        return None if value in spec['values'] else \
            f'not one of {spec["values"]}'
    try:
        inside = spec['low'] <= value <= spec['high']
    except TypeError:
        return f'not a number in [{spec["low"]}, {spec["high"]}]'
    return None if inside else f'not in [{spec["low"]}, {spec["high"]}]'


def write_best_config(base, tune, params, path, header):
    """Write the config with the best trial's values to ``path``. Its
    ``work_dir`` is ``best_train`` beside it: training it never writes
    over the file (mmengine dumps the config into the work dir) nor into
    the study folder."""
    cfg = copy.deepcopy(base)
    apply_params(cfg, tune['space'], params)
    cfg.work_dir = os.path.join(os.path.dirname(os.path.abspath(path)),
                                'best_train')
    text = ''.join(f'# {line}\n' for line in header) + cfg.pretty_text
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)
    return path
