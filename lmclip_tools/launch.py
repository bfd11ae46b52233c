"""What the tools share (``tools/train.py``, ``test.py``, ``infer.py``...).

CLI-to-config merging with mmpretrain's semantics, one-line errors
(:func:`run_cli`, :func:`config_errors`), plus the two fixes the tools need
on top of mmengine 0.10.x:

* dataloaders with ``num_workers=0`` must not get ``persistent_workers=True``
  (torch raises ``ValueError`` then; MMPretrain's train.py defaults it);
* multi-process training on machines without GPUs (gloo,
  :class:`~lmclip_mm.models.wrappers.DeviceAgnosticDDP`).

Both fixes live in the library's :class:`~lmclip_mm.engine.runner.
LMCLIPRunner` (which this project's configs name, so MMPretrain's own tools
get them too); the tools apply them to any config.
"""
import difflib
import os
import re
import sys
from contextlib import contextmanager
from copy import deepcopy
from typing import Iterator, List, Optional

from mmengine.config import Config, ConfigDict

# the runner's helpers, for the tools that build mmengine's Runner
from lmclip_mm.engine.runner import cuda_usable, init_cpu_distributed
from lmclip_mm.fileio import checkpoint_safety

DATALOADER_FIELDS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def set_dataloader_defaults(cfg: Config, fields=DATALOADER_FIELDS,
                            pin_memory: bool = True,
                            persistent_workers: bool = True) -> None:
    """Apply mmpretrain's tool defaults to the dataloaders of ``cfg``.

    ``persistent_workers`` is only set where ``num_workers > 0``, and
    ``pin_memory`` only where CUDA is usable (pinning is useless without a
    GPU and warns on every worker).
    """
    for field in fields:
        if cfg.get(field, None) is None:
            continue
        loader = ConfigDict(collate_fn=dict(type='default_collate'))
        loader.pin_memory = pin_memory and cuda_usable()
        if field == 'train_dataloader':
            loader.persistent_workers = persistent_workers
        loader.update(cfg[field])
        if not pin_memory:
            loader.pin_memory = False
        if loader.get('num_workers', 0) == 0:
            loader.persistent_workers = False
        elif not persistent_workers and field == 'train_dataloader':
            loader.persistent_workers = False
        cfg[field] = loader


def init_distributed(launcher: str, cfg: Config) -> Optional[str]:
    """``cfg.launcher = launcher`` and the CPU process group (see
    :func:`lmclip_mm.engine.runner.init_cpu_distributed`, which
    :class:`~lmclip_mm.engine.runner.LMCLIPRunner` applies for configs that
    name it). Returns ``'gloo'`` when it initialised one, else None."""
    cfg.launcher = launcher
    return init_cpu_distributed(cfg)


def build_runner(cfg: Config):
    """The runner of ``cfg`` as MMPretrain's tools build it: the config's
    ``runner_type`` from mmengine's registry (this project's configs name
    :class:`~lmclip_mm.engine.runner.LMCLIPRunner`), else mmengine's
    ``Runner``."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def use_amp(wrapper_cfg: ConfigDict) -> ConfigDict:
    """``tools/train.py --amp``: switch an optimizer wrapper config to
    mixed precision in place, keeping :class:`SafeOptimWrapper`'s divergence
    guard (``SafeAmpOptimWrapper``), with dynamic loss scaling unless a
    ``loss_scale`` is set."""
    safe = wrapper_cfg.get('type') == 'SafeOptimWrapper'
    wrapper_cfg.type = 'SafeAmpOptimWrapper' if safe else 'AmpOptimWrapper'
    wrapper_cfg.setdefault('loss_scale', 'dynamic')
    return wrapper_cfg


def merge_cfg_options(cfg: Config, options: Optional[dict]) -> List[str]:
    """Merge ``--cfg-options`` into ``cfg`` as MMPretrain's tools do, and let
    the schedule follow a new ``train_cfg.max_epochs``
    (:func:`follow_max_epochs`). Returns its notes, one line each."""
    if not options:
        return []
    max_epochs = cfg.get('train_cfg', {}).get('max_epochs')
    schedulers = deepcopy(cfg.get('param_scheduler'))
    before = cfg.to_dict()
    cfg.merge_from_dict(options)
    for key in options:
        check_new_key(before, cfg.to_dict(), key)
    return follow_max_epochs(cfg, max_epochs, schedulers)


#: the classes mmengine builds from the loops' dicts without a ``type``
_DEFAULT_TYPES = {'val_cfg': 'ValLoop', 'test_cfg': 'TestLoop'}


def _component_class(path: List[str], node: dict):
    """The class a config dict at ``path`` builds, when it is known."""
    name = node.get('type') if isinstance(node, dict) else None
    if name is None and path == ['train_cfg']:
        name = 'EpochBasedTrainLoop' if node.get('by_epoch', True) \
            else 'IterBasedTrainLoop'
    elif name is None and len(path) == 1:
        name = _DEFAULT_TYPES.get(path[0])
    if not isinstance(name, str):
        return None
    return _find_class(name.split('.')[-1])


def check_new_key(before: dict, after: dict, key: str) -> None:
    """``--cfg-options KEY=...`` that adds a key its component does not
    take (a typo: ``train_cfg.max_epoch``) fails now, in one line, before
    anything is built or logged. Keys the config had, keys of dicts whose
    class is unknown or takes ``**kwargs``, are left alone."""
    import inspect
    parts = key.split('.')
    if parts[-1] == 'type' or parts[-1].startswith('_'):
        return  # mmengine's own keys (_delete_, _scope_)
    node = before
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
        else:
            break
    else:
        return  # the config had it
    parent = after
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else \
            parent.get(part)
    cls = _component_class(parts[:-1], parent)
    if cls is None:
        return
    params = inspect.signature(cls.__init__).parameters
    if parts[-1] in params or any(p.kind == p.VAR_KEYWORD
                                  for p in params.values()):
        return
    raise ToolError(
        f'--cfg-options {key}: {_no_argument_message(cls, parts[-1])}')


def follow_max_epochs(cfg: Config, old_max_epochs: int,
                      old_schedulers) -> List[str]:
    """Let the lr/momentum schedule follow a new ``train_cfg.max_epochs``.

    ``--cfg-options train_cfg.max_epochs=N`` changes the loop only: the
    schedulers' ``end`` was computed from the config's own ``max_epochs``
    when the config was read (a cosine of a 30-epoch config would stop at
    epoch N far from its ``eta_min``). Each epoch-based scheduler that
    ended at the old ``max_epochs`` and that ``--cfg-options`` left alone
    (``old_schedulers``: the ``param_scheduler`` before the merge) gets
    ``end=N``, and ``T_max=N-begin`` where it was ``old-begin``. One that
    would start at or after epoch N is left as it is (it never acts).
    Returns one line per changed scheduler.
    """
    new_max = cfg.get('train_cfg', {}).get('max_epochs')
    schedulers = cfg.get('param_scheduler')
    if new_max is None or new_max == old_max_epochs or schedulers is None:
        return []
    single = isinstance(schedulers, dict)
    items = [schedulers] if single else list(schedulers)
    olds = [old_schedulers] if isinstance(old_schedulers, dict) else list(
        old_schedulers or [])
    notes = []
    for i, sched in enumerate(items):
        if not isinstance(sched, dict) or i >= len(olds) or sched != olds[i]:
            continue  # not a config dict, or set by --cfg-options itself
        begin = sched.get('begin', 0)
        if not sched.get('by_epoch', True) or \
                sched.get('end') != old_max_epochs or new_max <= begin:
            continue
        changes = [f'end {sched["end"]} -> {new_max}']
        sched['end'] = new_max
        if sched.get('T_max') == old_max_epochs - begin:
            changes.append(f'T_max {sched["T_max"]} -> {new_max - begin}')
            sched['T_max'] = new_max - begin
        where = 'param_scheduler' if single else f'param_scheduler[{i}]'
        notes.append(f'{where} ({sched.get("type")}): {", ".join(changes)} '
                     f'to follow train_cfg.max_epochs={new_max}')
    return notes


def ensure_local_rank(local_rank: int) -> None:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)


def trust_from_cli(paths, cfg: Optional[Config] = None) -> None:
    """Mark the files named for this run as trusted (``--trust-checkpoint``).

    ``paths`` are the checkpoints given on the command line; with ``cfg``,
    the CLIP weights file of an LM-CLIP model (``model.clip.pretrained``,
    when it is a path rather than a tag) is trusted too.
    """
    paths = list(paths)
    if cfg is not None:
        clip = (cfg.get('model') or {}).get('clip') or {}
        pretrained = clip.get('pretrained')
        if isinstance(pretrained, str) and os.path.isfile(
                os.path.expanduser(pretrained)):
            paths.append(pretrained)
    for path in paths:
        if path:
            checkpoint_safety.trust_checkpoint(path)


class ToolError(Exception):
    """A tool refuses what it was asked to do; :func:`run_cli` prints the
    message alone as ``error: <message>``."""


def _clip_cfg(cfg: Config):
    model = cfg.get('model') or {}
    if 'clip' not in model and isinstance(model.get('module'), dict):
        model = model['module']  # --tta wraps the model
    return model.get('clip') if isinstance(model, dict) else None


def check_zero_shot(cfg: Config) -> None:
    """Refuse zero-shot evaluation of a CLIP without pretrained weights:
    it would score a random model."""
    clip = _clip_cfg(cfg)
    if clip is not None and not clip.get('pretrained'):
        name = clip.get('model_name', 'the CLIP')
        raise ToolError(
            f'zero-shot needs pretrained weights, but model.clip.pretrained '
            f'is {clip.get("pretrained")!r} (a random {name}): set '
            '--cfg-options model.clip.pretrained=openai (or the path of a '
            'weights file, e.g. ViT-B-16.pt), or evaluate a trained '
            'checkpoint instead')


def check_pretrained_weights(cfg: Config) -> None:
    """Fail now, before the runner is built (and logs the config), when the
    CLIP weights ``model.clip.pretrained`` names cannot be had: a tag
    neither cached nor downloadable, a missing file. The model loads them
    in ``init_weights()``, when training starts."""
    clip = _clip_cfg(cfg)
    if isinstance(clip, dict) and clip.get('pretrained') and \
            clip.get('model_name'):
        from lmclip_mm.models.utils import check_clip_weights
        check_clip_weights(clip['model_name'], clip['pretrained'],
                           clip.get('cache_dir'))


def user_errors() -> tuple:
    """Errors that report bad input (data files, checkpoints) by themselves.

    The tools print their message alone, without a traceback; set
    ``LMCLIP_TRACEBACK=1`` to get the traceback as well.
    """
    from lmclip_mm.datasets import DatasetFormatError
    from lmclip_mm.models.utils import (ClipDependencyError,
                                        PretrainedWeightsUnavailable)
    return (DatasetFormatError, checkpoint_safety.UntrustedCheckpointError,
            PretrainedWeightsUnavailable, ClipDependencyError)


def _short_message(err: BaseException) -> str:
    message = str(err).strip()
    # torch re-raises a DataLoader worker's error with the worker's
    # traceback in the message: keep the error line itself.
    if 'Original Traceback' in message:
        tail = [x for x in message.splitlines() if x.strip()]
        message = tail[-1].split(': ', 1)[-1] if tail else message
    # mmengine's build_from_cfg re-raises a component's error prefixed with
    # "class `X` in file.py: " (once per nesting level)
    message = re.sub(r'^(class `[^`]+` in [^:]+: )+', '', message)
    return f'{type(err).__name__}: {message}'


@contextmanager
def config_errors(cfg: Config) -> Iterator[None]:
    """Inside: mmengine's "X is not in the registry" error of a component
    of ``cfg`` becomes a :class:`ToolError` naming the config key and the
    closest registered names (see :func:`registry_error_message`)."""
    try:
        yield
    except KeyError as err:
        message = registry_error_message(err, cfg)
        if message is None or os.environ.get('LMCLIP_TRACEBACK'):
            raise
        raise ToolError(message) from None
    except TypeError as err:
        message = unknown_argument_message(err, cfg)
        if message is None or os.environ.get('LMCLIP_TRACEBACK'):
            raise
        raise ToolError(message) from None


_UNEXPECTED = re.compile(
    r"(?P<cls>\w+)\.__init__\(\) got an unexpected keyword argument "
    r"'(?P<key>\w+)'")


def _registries() -> Iterator:
    """Every registry: mmengine's roots and their children, once each."""
    from mmengine import registry as mm_registry
    todo = [r for r in vars(mm_registry).values()
            if isinstance(r, mm_registry.Registry)]
    seen = set()
    while todo:
        reg = todo.pop()
        if id(reg) in seen:
            continue
        seen.add(id(reg))
        yield reg
        todo.extend(reg.children.values())


def _find_class(name: str):
    """The class registered as ``name`` in any registry, or None."""
    return next((reg.module_dict[name] for reg in _registries()
                 if name in reg.module_dict), None)


def _no_argument_message(cls, key: str) -> str:
    """``X takes no argument 'k'; did you mean ...? (its arguments: ...)``
    of a component class ``cls``."""
    import inspect
    names = [n for n, p in inspect.signature(cls.__init__).parameters.items()
             if n != 'self' and p.kind not in (p.VAR_POSITIONAL,
                                               p.VAR_KEYWORD)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ''
    return (f'{cls.__name__} takes no argument {key!r}{hint} (its '
            f'arguments: {", ".join(names)})')


def _dict_paths(node, match, path: str = '') -> List[str]:
    """Config key paths (``a.b[0].c``; ``''`` for the top) of the dicts of
    ``node`` for which ``match(dict)`` holds."""
    found = []
    if isinstance(node, dict):
        if match(node):
            found.append(path)
        for key, value in node.items():
            found += _dict_paths(value, match,
                                 f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += _dict_paths(value, match, f'{path}[{i}]')
    return found


def unknown_argument_message(err: BaseException,
                             cfg: Optional[Config] = None) -> Optional[str]:
    """One line for a config key that a component does not take
    (``X.__init__() got an unexpected keyword argument 'k'``, e.g. a typo
    in ``--cfg-options train_cfg.max_epoch=1``): the key's place in the
    config, the closest argument of the component and its arguments. None
    for any other error, or when no dict of ``cfg`` holds that key (then it
    is not the config's)."""
    m = _UNEXPECTED.search(str(err))
    if not isinstance(err, TypeError) or m is None or cfg is None:
        return None
    cls_name, key = m.group('cls', 'key')
    paths = _dict_paths(cfg.to_dict(), lambda d: key in d)
    if not paths:
        return None
    where = ', '.join(f'{p}.{key}' if p else key for p in paths[:3])
    cls = _find_class(cls_name)
    if cls is None:
        return f'{where}: {cls_name} takes no argument {key!r}'
    return f'{where}: {_no_argument_message(cls, key)}'


def check_checkpoint(path: Optional[str], what: str = 'checkpoint') -> None:
    """A checkpoint path that is not there: one line now, not mmengine's
    traceback after the config dump. URLs are left to mmengine."""
    if path and '://' not in str(path) and not os.path.isfile(str(path)):
        raise ToolError(f'{what} not found: {path}')


_NOT_REGISTERED = re.compile(
    r"(?P<type>[^\s'\"`]+) is not in the (?:(?P<scope>[\w.-]+)::)?"
    r'(?P<name>[\w ._-]+?) registry')


def _find_registry(scope: Optional[str], name: str):
    return next((reg for reg in _registries() if reg.name == name and (
        scope is None or reg.scope == scope)), None)


def _registered_names(reg) -> List[str]:
    """The names ``reg`` resolves: its own, its ancestors' and, with the
    scope prefix, its descendants'."""
    names = set(reg.module_dict)
    parent = reg.parent
    while parent is not None:
        names.update(parent.module_dict)
        parent = parent.parent
    todo = list(reg.children.values())
    while todo:
        child = todo.pop()
        names.update(f'{child.scope}.{n}' for n in child.module_dict)
        todo.extend(child.children.values())
    return sorted(names)


def _type_paths(node, obj_type: str) -> List[str]:
    """Config key paths of the dicts whose ``type`` is ``obj_type``."""
    return [p or '<config>' for p in
            _dict_paths(node, lambda d: d.get('type') == obj_type)]


def registry_error_message(err: BaseException,
                           cfg: Optional[Config] = None) -> Optional[str]:
    """One line for mmengine's "X is not in the S::N registry" KeyError:
    the config key(s) with that ``type`` and the closest registered names.
    None for any other error."""
    m = _NOT_REGISTERED.search(str(err))
    if not isinstance(err, KeyError) or m is None:
        return None
    obj_type, scope, name = m.group('type', 'scope', 'name')
    where = f'{scope}::{name}' if scope else name
    paths = _type_paths(cfg.to_dict() if cfg is not None else {}, obj_type)
    prefix = f'{", ".join(paths)}: ' if paths else ''
    message = f"{prefix}type '{obj_type}' is not registered in {where}"
    reg = _find_registry(scope, name)
    if reg is None:
        return message
    names = _registered_names(reg)
    by_lower = {n.lower(): n for n in names}
    ratio = {n: difflib.SequenceMatcher(None, obj_type.lower(), n).ratio()
             for n in by_lower}
    best = max(ratio.values(), default=0.0)
    # the closest names: a clear typo gets one suggestion
    close = [by_lower[n] for n in sorted(ratio, key=lambda n: -ratio[n])
             if ratio[n] >= max(0.6, 0.9 * best)][:3]
    if len(close) == 1:
        return f"{message}; did you mean '{close[0]}'?"
    if close:
        return message + '; did you mean one of ' + ', '.join(
            f"'{n}'" for n in close) + '?'
    return (f'{message} (nor is any registered name close to it; is the '
            'module that registers it in custom_imports?)')


def run_cli(main, argv=None):
    """Call a tool's ``main``; bad input exits 1 with a one-line message.

    Bad input: the errors of :func:`user_errors`, and a ``type`` of the
    config that no registry knows (see :func:`registry_error_message`;
    inside :func:`config_errors` the message names the config key).
    ``LMCLIP_TRACEBACK=1`` raises them with their traceback instead.
    """
    try:
        return main(argv)
    except ToolError as err:
        if os.environ.get('LMCLIP_TRACEBACK'):
            raise
        print(f'error: {err}', file=sys.stderr)
        sys.exit(1)
    except user_errors() as err:
        if os.environ.get('LMCLIP_TRACEBACK'):
            raise
        print(f'error: {_short_message(err)}', file=sys.stderr)
        sys.exit(1)
    except KeyError as err:
        message = registry_error_message(err)
        if message is None or os.environ.get('LMCLIP_TRACEBACK'):
            raise
        print(f'error: {message}', file=sys.stderr)
        sys.exit(1)
