"""A submodule whose state-dict entries sit at its parent's level.

When a part of a module moves into a submodule (LM-CLIP's losses and
decision rule into its head), its state-dict keys would gain the
submodule's name (``loss_module.class_weight`` becoming
``head.loss_module.class_weight``) and existing checkpoints would no longer
load. :func:`flatten_child` keeps the keys (and the ``_metadata`` entries)
as they were, both ways; :class:`ChildAttribute` keeps the parent's
attributes.
"""
import functools

import torch.nn as nn

__all__ = ['flatten_child', 'ChildAttribute']


def _save_flat(child, module, state_dict, prefix, local_metadata):
    """State-dict post hook: ``<prefix><child>.<key>`` -> ``<prefix><key>``,
    for the entries and for their ``_metadata``. The child's own parameters
    and buffers come first, where the module's own entries are."""
    nested = prefix + child + '.'
    sub = getattr(module, child)
    own = {nested + name for name in [*sub._parameters, *sub._buffers]}
    keys = [k for k in state_dict if k.startswith(prefix)]  # this module's
    entries = [(k, state_dict.pop(k)) for k in keys]
    for key, value in sorted(entries, key=lambda kv: kv[0] not in own):
        if key.startswith(nested):
            key = prefix + key[len(nested):]
        state_dict[key] = value
    metadata = getattr(state_dict, '_metadata', None)
    if metadata is not None:
        metadata.pop(nested[:-1], None)
        for key in [k for k in metadata if k.startswith(nested)]:
            metadata[prefix + key[len(nested):]] = metadata.pop(key)


def _load_flat(child, module, state_dict, prefix, *args):
    """Load-state-dict pre hook: ``<prefix><key>`` -> ``<prefix><child>.
    <key>`` for the keys whose first part is a parameter, buffer or
    submodule of the child (the child's own entries then load as usual)."""
    sub = getattr(module, child)
    names = set(sub._parameters) | set(sub._buffers) | set(sub._modules)
    for key in [k for k in state_dict if k.startswith(prefix)
                and k[len(prefix):].split('.', 1)[0] in names]:
        state_dict[prefix + child + '.' + key[len(prefix):]] = \
            state_dict.pop(key)


def flatten_child(module: nn.Module, child: str) -> None:
    """Save the entries of ``module.<child>`` without the ``<child>.`` part
    of their keys, and load them from such keys.

    The child's parameter, buffer and submodule names must not clash with
    the module's own.
    """
    module.register_state_dict_post_hook(
        functools.partial(_save_flat, child))
    module.register_load_state_dict_pre_hook(
        functools.partial(_load_flat, child))


class ChildAttribute:
    """A class attribute that reads and sets the attribute of the same name
    of a child module (``ChildAttribute('head')``), so that the parent keeps
    the attributes that moved into the child. Module values too:
    ``nn.Module.__setattr__`` is told to pass them on
    (:meth:`set_module`)."""

    def __init__(self, child: str):
        self.child = child

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return getattr(getattr(obj, self.child), self.name)

    def __set__(self, obj, value):
        setattr(getattr(obj, self.child), self.name, value)

    @staticmethod
    def set_module(obj: nn.Module, name: str, value) -> bool:
        """For ``obj.__setattr__``: set a module value of a
        :class:`ChildAttribute` on the child (``nn.Module.__setattr__``
        would register it on ``obj``). Whether it did."""
        attr = getattr(type(obj), name, None)
        if isinstance(value, nn.Module) and isinstance(attr, ChildAttribute):
            attr.__set__(obj, value)
            return True
        return False
