"""ClassAwareRepeatSampler: weights, draw rates, distribution, determinism."""
import math
from collections import Counter

import numpy as np
import pytest
from mmengine.dataset import BaseDataset
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import DATA_SAMPLERS

from lmclip_mm.datasets.samplers import class_aware_repeat_sampler as module
from lmclip_mm.datasets.samplers.class_aware_repeat_sampler import \
    ClassAwareRepeatSampler
from lmclip_mm.datasets.voc_mlt import VOCMLT


class ListDataset:
    """Any dataset with get_cat_ids (not one of ours)."""

    def __init__(self, cat_ids):
        self.cat_ids = cat_ids

    def __len__(self):
        return len(self.cat_ids)

    def __getitem__(self, idx):
        return idx

    def get_cat_ids(self, idx):
        return self.cat_ids[idx]


@pytest.fixture(scope='module')
def voc_train(voc_root):
    return VOCMLT(data_root=str(voc_root), split='train', check_images=False)


def plain_voc_rows(voc_root):
    rows = []
    with open(voc_root / 'longtail2012' / 'voc_lt_train.txt') as f:
        for line in f:
            fields = line.split()
            if fields:
                rows.append([int(t) for t in fields[1:]])
    return rows


def expected_weights(rows, power):
    """Sample weights with plain Python loops."""
    counts = Counter(c for ids in rows for c in ids)
    r = {c: len(rows) / n for c, n in counts.items()}
    raw = [sum(r[c] for c in ids)**power if ids else 0.0 for ids in rows]
    return [w / max(raw) for w in raw]


def with_world(monkeypatch, rank, world_size):
    monkeypatch.setattr(module, 'get_dist_info',
                        lambda: (rank, world_size))


@pytest.mark.parametrize('power', [0.0, 1.0, 1.5])
def test_weights_match_formula_on_real_voc(voc_train, voc_root, power):
    rows = plain_voc_rows(voc_root)
    sampler = ClassAwareRepeatSampler(voc_train, power=power, seed=0)
    np.testing.assert_allclose(
        sampler.weights.numpy(), expected_weights(rows, power), rtol=1e-12)
    # counts from get_cat_ids over the train split == metainfo contract
    assert sampler.classes == list(range(20))
    assert sampler.class_counts == voc_train.metainfo['class_counts']
    assert len(voc_train) == voc_train.metainfo['num_train_images']


def test_draw_rates_converge_to_expected(voc_train, voc_root):
    rows = plain_voc_rows(voc_root)
    power = 1.0
    w = expected_weights(rows, power)
    total_w = sum(w)
    expected = [
        sum(w[i] for i, ids in enumerate(rows) if c in ids) / total_w
        for c in range(20)
    ]
    n = 200_000
    sampler = ClassAwareRepeatSampler(
        voc_train, power=power, seed=123, num_samples=n)
    draws = list(sampler)
    assert len(draws) == n
    per_index = Counter(draws)
    rates = [0.0] * 20
    for i, k in per_index.items():
        for c in rows[i]:
            rates[c] += k / n
    for c in range(20):
        sigma = math.sqrt(expected[c] * (1 - expected[c]) / n)
        assert abs(rates[c] - expected[c]) < 5 * sigma + 1e-4, c
    # the point of the sampler: the rarest class is drawn far more often
    # than its share of the data (head classes that co-occur with rare ones,
    # like 'person', are drawn more often too: this is not class balancing)
    counts = voc_train.metainfo['class_counts']
    rarest = counts.index(min(counts))
    assert rates[rarest] > 5 * counts[rarest] / len(rows)


def test_images_without_class_are_never_drawn():
    ds = ListDataset([[0], [], [1], [0, 1], []])
    sampler = ClassAwareRepeatSampler(ds, power=0, seed=0, num_samples=2000)
    drawn = set(sampler)
    assert drawn == {0, 2, 3}


def test_ranks_take_disjoint_shares_of_one_global_draw(monkeypatch):
    ds = ListDataset([[i % 4] + ([4] if i % 7 == 0 else [])
                      for i in range(50)])
    world_size = 3
    per_rank = []
    for rank in range(world_size):
        with_world(monkeypatch, rank, world_size)
        sampler = ClassAwareRepeatSampler(ds, power=1, seed=7)
        sampler.set_epoch(2)
        assert len(sampler) == math.ceil(50 / world_size) == 17
        per_rank.append(list(sampler))
        assert len(per_rank[-1]) == 17
    draw = sampler.global_draw(2)
    assert len(draw) == 17 * world_size
    # rank r holds positions r, r + ws, ...: disjoint shares of one draw
    for rank in range(world_size):
        assert per_rank[rank] == draw[rank::world_size]
    assert Counter(sum(per_rank, [])) == Counter(draw)


def test_contiguous_positions_interleave_back(monkeypatch):
    ds = ListDataset([[0], [1], [0, 1], [2]])
    shares = []
    for rank in range(2):
        with_world(monkeypatch, rank, 2)
        shares.append(list(
            ClassAwareRepeatSampler(ds, seed=1, num_samples=9)))
    # ceil(9 / 2) = 5 per rank: total 10 drawn
    assert [len(s) for s in shares] == [5, 5]
    interleaved = [x for pair in zip(*shares) for x in pair]
    with_world(monkeypatch, 0, 1)
    single = ClassAwareRepeatSampler(ds, seed=1, num_samples=10)
    assert interleaved == list(single)


def test_deterministic_per_seed_and_epoch():
    ds = ListDataset([[i % 5] for i in range(40)])
    a = ClassAwareRepeatSampler(ds, power=1, seed=3)
    b = ClassAwareRepeatSampler(ds, power=1, seed=3)
    assert list(a) == list(b) == list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 != list(b)
    # resume: a fresh sampler set to the same epoch gives the same order
    c = ClassAwareRepeatSampler(ds, power=1, seed=3)
    c.set_epoch(1)
    assert list(c) == epoch1
    assert list(ClassAwareRepeatSampler(ds, power=1, seed=4)) != list(b)


def test_len_semantics(monkeypatch):
    ds = ListDataset([[0]] * 10)
    assert len(ClassAwareRepeatSampler(ds, seed=0)) == 10
    assert len(ClassAwareRepeatSampler(ds, seed=0, num_samples=25)) == 25
    with_world(monkeypatch, 1, 4)
    s = ClassAwareRepeatSampler(ds, seed=0)
    assert len(s) == 3 and len(list(s)) == 3
    s = ClassAwareRepeatSampler(ds, seed=0, num_samples=25)
    assert len(s) == 7 and len(list(s)) == 7


def test_seed_none_uses_sync_random_seed(monkeypatch):
    monkeypatch.setattr(module, 'sync_random_seed', lambda: 1234)
    assert ClassAwareRepeatSampler(ListDataset([[0]]), seed=None).seed == 1234


def test_errors():
    ds = ListDataset([[0], [1]])
    for power in (-0.5, float('nan'), 'x'):
        with pytest.raises(ValueError, match='power'):
            ClassAwareRepeatSampler(ds, power=power, seed=0)
    for num_samples in (0, -3, 2.5):
        with pytest.raises(ValueError, match='num_samples'):
            ClassAwareRepeatSampler(ds, num_samples=num_samples, seed=0)

    class NoCatIds:

        def __len__(self):
            return 2

    with pytest.raises(TypeError, match='get_cat_ids'):
        ClassAwareRepeatSampler(NoCatIds(), seed=0)

    class Plain(BaseDataset):  # mmengine's base raises NotImplementedError

        def load_data_list(self):
            return [dict(x=1)]

    with pytest.raises(TypeError, match='get_cat_ids'):
        ClassAwareRepeatSampler(Plain(), seed=0)
    with pytest.raises(ValueError, match='no image of the dataset has'):
        ClassAwareRepeatSampler(ListDataset([[], []]), seed=0)
    with pytest.raises(ValueError, match='empty'):
        ClassAwareRepeatSampler(ListDataset([]), seed=0)


def test_built_by_mmengine_dataloader_builder():
    ds = ListDataset([[0], [1], [0, 1], [2]] * 3)
    assert DATA_SAMPLERS.get('ClassAwareRepeatSampler') is \
        ClassAwareRepeatSampler
    name = 'test_class_aware_repeat_sampler'
    if not DefaultScope.check_instance_created(name):
        DefaultScope.get_instance(name, scope_name='mmpretrain')
    loader = Runner.build_dataloader(
        dict(
            dataset=ds,
            batch_size=4,
            num_workers=0,
            sampler=dict(type='ClassAwareRepeatSampler', power=1.0),
            collate_fn=dict(type='default_collate')),
        seed=11)
    assert isinstance(loader.sampler, ClassAwareRepeatSampler)
    assert loader.sampler.seed == 11
    assert len(loader) == 3
    batches = [b.tolist() for b in loader]
    assert sum(batches, []) == loader.sampler.global_draw(0)


def test_start_index_resumes_the_epoch_it_was_set_for():
    ds = ListDataset([[i % 3] for i in range(11)])
    s = ClassAwareRepeatSampler(ds, power=1, seed=2)
    s.set_epoch(3)
    full = list(s)
    s.set_start_index(5, epoch=3)
    assert s.epoch == 3 and s.start_index == 5
    s.set_epoch(3)  # DistSamplerSeedHook of the same epoch keeps it
    assert len(s) == 6
    assert list(s) == full[5:]
    # one pass only: iterating the epoch again gives all of it
    assert list(s) == full and len(s) == 11
    # another epoch clears it
    s.set_start_index(4, epoch=3)
    s.set_epoch(4)
    assert s.start_index == 0 and len(list(s)) == 11
    s.set_epoch(3)
    assert list(s) == full


def test_start_index_per_rank(monkeypatch):
    ds = ListDataset([[i % 4] for i in range(20)])
    with_world(monkeypatch, 1, 3)
    s = ClassAwareRepeatSampler(ds, seed=0)
    full = list(s)
    s.set_start_index(3)
    assert list(s) == full[3:] == s.global_draw()[1::3][3:]


def test_state_dict_round_trip_and_errors():
    ds = ListDataset([[0], [1], [0, 1]] * 3)
    s = ClassAwareRepeatSampler(ds, seed=9)
    assert s.state_dict() == dict(epoch=0, start_index=0, seed=9)
    t = ClassAwareRepeatSampler(ds, seed=9)
    t.set_epoch(2)
    expected = list(t)[4:]
    s.load_state_dict(dict(epoch=2, start_index=4, seed=9))
    assert s.state_dict() == dict(epoch=2, start_index=4, seed=9)
    assert list(s) == expected
    with pytest.raises(ValueError, match='seed'):
        s.load_state_dict(dict(epoch=2, start_index=4, seed=8))
    for bad in (-1, 10, 1.5, True):
        with pytest.raises(ValueError, match='start_index'):
            s.set_start_index(bad)
    s.set_start_index(9)
    assert len(s) == 0 and list(s) == []


def test_resumed_dataloader_yields_the_rest_of_the_epoch():
    name = 'test_class_aware_repeat_sampler'
    if not DefaultScope.check_instance_created(name):
        DefaultScope.get_instance(name, scope_name='mmpretrain')
    ds = ListDataset([[0], [1], [0, 1], [2]] * 3)
    cfg = dict(
        dataset=ds, batch_size=4, num_workers=0,
        sampler=dict(type='ClassAwareRepeatSampler', power=1.0),
        collate_fn=dict(type='default_collate'))
    loader = Runner.build_dataloader(cfg, seed=5)
    loader.sampler.set_epoch(1)
    full = [b.tolist() for b in loader]
    resumed = Runner.build_dataloader(cfg, seed=5)
    resumed.sampler.set_start_index(4, epoch=1)
    resumed.sampler.set_epoch(1)
    assert len(resumed) == 2
    assert [b.tolist() for b in resumed] == full[1:]
