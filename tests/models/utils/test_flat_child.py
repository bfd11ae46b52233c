"""flatten_child / ChildAttribute: a submodule whose state-dict entries and
attributes stay at its parent's level."""
import pytest
import torch

from lmclip_mm.models.utils.flat_child import ChildAttribute, flatten_child


class _Child(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer('own', torch.zeros(2))
        self.inner = torch.nn.Linear(2, 1)
        self.size = 3


class _Old(torch.nn.Module):
    """The layout before the child existed."""

    def __init__(self):
        super().__init__()
        self.register_buffer('own', torch.zeros(2))
        self.first = torch.nn.Linear(1, 1)
        self.inner = torch.nn.Linear(2, 1)


class _New(torch.nn.Module):
    inner = ChildAttribute('child')
    size = ChildAttribute('child')

    def __init__(self):
        super().__init__()
        self.first = torch.nn.Linear(1, 1)
        self.child = _Child()
        flatten_child(self, 'child')

    def __setattr__(self, name, value):
        if not ChildAttribute.set_module(self, name, value):
            super().__setattr__(name, value)


def test_keys_order_and_metadata_are_the_old_layouts():
    old, new = _Old(), _New()
    state = new.state_dict()
    assert list(state) == list(old.state_dict())
    assert set(state._metadata) == set(old.state_dict()._metadata)
    parent = torch.nn.Sequential(torch.nn.Linear(1, 1), new)
    old_parent = torch.nn.Sequential(torch.nn.Linear(1, 1), old)
    assert list(parent.state_dict()) == list(old_parent.state_dict())


@pytest.mark.parametrize('strict', [True, False])
def test_old_checkpoints_load_into_the_child(strict):
    torch.manual_seed(0)
    old = _Old()
    old.own.fill_(5)
    new = _New()
    result = new.load_state_dict(old.state_dict(), strict=strict)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(new.child.own, old.own)
    assert torch.equal(new.child.inner.weight, old.inner.weight)
    assert torch.equal(new.first.weight, old.first.weight)
    # and back
    again = _Old()
    again.load_state_dict(new.state_dict(), strict=True)
    assert torch.equal(again.inner.weight, old.inner.weight)


def test_child_attributes():
    new = _New()
    assert new.inner is new.child.inner and new.size == 3
    new.size = 4
    assert new.child.size == 4 and 'size' not in vars(new)
    linear = torch.nn.Linear(2, 1)
    new.inner = linear
    assert new.child.inner is linear and 'inner' not in new._modules
    assert isinstance(_New.inner, ChildAttribute)
