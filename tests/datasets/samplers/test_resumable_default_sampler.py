"""ResumableDefaultSampler: DefaultSampler's order plus a start index."""
import pytest
from mmengine.dataset import DefaultSampler
from mmengine.dataset import sampler as mm_sampler

from lmclip_mm.datasets.samplers import ResumableDefaultSampler
from mmpretrain.registry import DATA_SAMPLERS


def test_same_order_as_default_sampler():
    ds = list(range(23))
    for shuffle in (True, False):
        a = DefaultSampler(ds, shuffle=shuffle, seed=3)
        b = ResumableDefaultSampler(ds, shuffle=shuffle, seed=3)
        for epoch in range(3):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            assert list(a) == list(b) and len(a) == len(b)
    assert DATA_SAMPLERS.get('ResumableDefaultSampler') is \
        ResumableDefaultSampler


def test_start_index_one_epoch_one_pass():
    ds = list(range(10))
    s = ResumableDefaultSampler(ds, shuffle=True, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_start_index(4, epoch=2)
    s.set_epoch(2)  # DistSamplerSeedHook of the same epoch keeps it
    assert len(s) == 6
    assert list(s) == full[4:]
    assert list(s) == full and len(s) == 10  # second pass: complete
    s.set_start_index(3, epoch=2)
    s.set_epoch(3)  # another epoch clears it
    assert len(s) == 10 and s.start_index == 0
    s.set_epoch(2)
    assert list(s) == full


def test_state_dict_and_errors(monkeypatch):
    ds = list(range(10))
    s = ResumableDefaultSampler(ds, seed=5)
    s.load_state_dict(dict(epoch=1, start_index=7, seed=5))
    assert s.epoch == 1 and s.state_dict() == dict(epoch=1, start_index=7,
                                                   seed=5)
    assert len(list(s)) == 3
    with pytest.raises(ValueError, match='seed'):
        s.load_state_dict(dict(epoch=1, start_index=0, seed=6))
    for bad in (-1, 11, 2.0, True):
        with pytest.raises(ValueError, match='start_index'):
            s.set_start_index(bad)
    s.set_start_index(10)
    assert list(s) == [] and len(s) == 0


def test_ranks(monkeypatch):
    monkeypatch.setattr(mm_sampler, 'get_dist_info', lambda: (1, 3))
    ds = list(range(10))
    s = ResumableDefaultSampler(ds, seed=0)
    full = list(s)
    s.set_start_index(2)
    assert list(s) == full[2:] and len(full) == 4
