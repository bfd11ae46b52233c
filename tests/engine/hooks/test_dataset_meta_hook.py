"""DatasetMetaHook passes the dataset metainfo to the (wrapped) model."""
import os
from types import SimpleNamespace

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import pytest  # noqa: E402
import torch  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402

import lmclip_mm.models  # noqa: E402,F401
from lmclip_mm.engine.hooks.dataset_meta_hook import \
    DatasetMetaHook  # noqa: E402


CLASSES = ('cat', 'dog', 'person')
META = dict(classes=CLASSES, class_counts=[3, 2, 4], num_train_images=6)


class _Recorder(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.metas = []

    def set_dataset_meta(self, metainfo):
        self.metas.append(metainfo)


def _runner(model, **metas):
    loops = {
        f'{phase}_loop': SimpleNamespace(
            dataloader=SimpleNamespace(
                dataset=SimpleNamespace(metainfo=meta)))
        for phase, meta in metas.items()
    }
    return SimpleNamespace(model=model, **loops)


def test_each_phase_gets_its_dataset_meta_through_wrappers():
    model = _Recorder()
    wrapped = torch.nn.DataParallel(model)  # an mmengine model wrapper
    train, val, test = dict(META, split='train'), dict(META, split='val'), \
        dict(META, split='test')
    runner = _runner(wrapped, train=train, val=val, test=test)
    hook = DatasetMetaHook()
    hook.before_train(runner)
    hook.before_val(runner)
    hook.before_test(runner)
    assert model.metas == [train, val, test]


def test_models_without_set_dataset_meta_are_left_alone():
    DatasetMetaHook().before_train(_runner(torch.nn.Linear(1, 1), train=META))
    # nor do they need metainfo
    DatasetMetaHook().before_val(_runner(torch.nn.Linear(1, 1), val=None))


class _PlainDataset(torch.utils.data.Dataset):
    """As mmpretrain's MultiLabelDataset: classes and get_cat_ids, no class
    counts nor groups in the metainfo."""
    labels = [[0]] * 100 + [[1]] * 30 + [[2]] * 5 + [[0, 2]] * 5
    metainfo = dict(classes=CLASSES)

    def __len__(self):
        return len(self.labels)

    def get_cat_ids(self, i):
        return self.labels[i]

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randint(0, 256, (3, 16, 16), generator=g,
                                         dtype=torch.uint8),
                    data_samples=DataSample().set_gt_label(self.labels[i]))


def test_any_model_gets_the_groups_in_its_long_tail_metrics(tmp_path):
    """MMPretrain's ImageClassifier on a dataset whose metainfo has no
    groups: LongTailAveragePrecision still reports the head/middle/tail mAP
    (groups of the train counts: head >= 100, tail < 20 images)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.runner import Runner

    def loader():
        return torch.utils.data.DataLoader(
            _PlainDataset(), batch_size=70, collate_fn=pseudo_collate)

    runner = Runner(
        model=dict(
            type='ImageClassifier',
            backbone=dict(type='ResNet', depth=18, num_stages=1,
                          strides=(1, ), dilations=(1, ), out_indices=(0, )),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='MultiLabelLinearClsHead', num_classes=3,
                      in_channels=64)),
        work_dir=str(tmp_path),
        train_dataloader=loader(),
        train_cfg=dict(by_epoch=False, max_iters=1, val_interval=1),
        val_dataloader=loader(),
        val_cfg=dict(),
        val_evaluator=dict(type='LongTailAveragePrecision'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=1e-3)),
        custom_hooks=[dict(type='DatasetMetaHook')],
        default_hooks=dict(checkpoint=None),
        default_scope='mmpretrain', log_level='WARNING')
    runner.train()
    metrics = runner.message_hub.log_scalars
    for group in ('head', 'middle', 'tail'):
        assert f'val/long-tail/mAP_{group}' in metrics, sorted(metrics)
    assert runner.val_evaluator.dataset_meta['head_classes'] == [0]
    assert runner.val_evaluator.dataset_meta['tail_classes'] == [2]


def test_dataset_without_metainfo_raises():
    with pytest.raises(RuntimeError, match='metainfo'):
        DatasetMetaHook().before_val(_runner(_Recorder(), val=None))


class _ToyDataset(torch.utils.data.Dataset):
    metainfo = META
    labels = [[0, 1], [2], [1, 2], [0], [0, 2], [2]]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        sample = DataSample().set_gt_label(self.labels[i])
        sample.set_field(
            'a photo of ' + ' and '.join(CLASSES[c] for c in self.labels[i]),
            'caption')
        return dict(
            inputs=torch.randint(0, 256, (3, 64, 64), generator=g,
                                 dtype=torch.uint8),
            data_samples=sample)


def _loader():
    from mmengine.dataset import pseudo_collate
    return torch.utils.data.DataLoader(
        _ToyDataset(), batch_size=3, collate_fn=pseudo_collate)


def test_runner_train_val_test_with_classes_from_the_dataset(tmp_path):
    from mmengine.runner import Runner
    model = dict(
        type='LMCLIPClassifier',
        clip=dict(model_name='lmclip-tiny-vit'),
        class_weight_power=1.0,
        score_activation='softmax')
    runner = Runner(
        model=model,
        work_dir=str(tmp_path),
        train_dataloader=_loader(),
        train_cfg=dict(by_epoch=False, max_iters=2, val_interval=2),
        val_dataloader=_loader(),
        val_cfg=dict(),
        val_evaluator=dict(type='AveragePrecision'),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3)),
        custom_hooks=[dict(type='DatasetMetaHook')],
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', interval=2, by_epoch=False),
            logger=dict(type='LoggerHook', interval=1)),
        default_scope='mmpretrain',
        log_level='WARNING')
    assert runner.model.classes is None
    runner.train()
    assert runner.model.classes == CLASSES
    assert runner.model.loss_module.class_weight is not None

    # a test runner restores the weights from the checkpoint; the hook
    # sets the test dataset's classes
    test_runner = Runner(
        model=model,
        work_dir=str(tmp_path / 'test'),
        test_dataloader=_loader(),
        test_cfg=dict(),
        test_evaluator=dict(type='AveragePrecision'),
        load_from=str(tmp_path / 'iter_2.pth'),
        custom_hooks=[dict(type='DatasetMetaHook')],
        default_scope='mmpretrain',
        log_level='WARNING')
    metrics = test_runner.test()
    assert test_runner.model.classes == CLASSES
    assert 'multi-label/mAP' in metrics
    trained = runner.model.state_dict()
    loaded = test_runner.model.state_dict()
    assert trained.keys() == loaded.keys()
    for key in trained:
        torch.testing.assert_close(trained[key], loaded[key], msg=key)


# ------------------------------------------------------------------------
# The loss class weights (the metainfo the hook hands to the model) and the
# sampler's repeat rates, on the toy configs, against values computed
# independently from the list file.

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


@pytest.fixture(scope='module')
def toy_set(tmp_path_factory):
    """The toy set (seed 0) and the train counts its generator aimed at."""
    from lmclip_mm.datasets.toy_mlt import generate_toy_mlt
    root = tmp_path_factory.mktemp('toy') / 'toy_mlt'
    made = generate_toy_mlt(str(root), seed=0)
    return root, made['class_counts']


def _toy_rows(root):
    """``[(path, [ids])]`` of the toy train list, read plainly."""
    from lmclip_mm.datasets.toy_mlt import TRAIN_FILE
    rows = []
    with open(root / TRAIN_FILE) as f:
        for line in f:
            fields = line.split()
            if fields:
                rows.append((fields[0], [int(t) for t in fields[1:]]))
    return rows


def _toy_run(config, root):
    """The config's train / val datasets, sampler and model on ``root``,
    and a runner stand-in with an evaluator that has no groups."""
    import copy

    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATA_SAMPLERS, DATASETS, MODELS
    cfg = Config.fromfile(os.path.join(REPO, 'configs', config))

    def dataset(loader):
        ds = copy.deepcopy(cfg[loader]['dataset'])
        ds.update(data_root=str(root), pipeline=[], check_images=False,
                  cache=False)
        return DATASETS.build(ds)

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        train, val = dataset('train_dataloader'), dataset('val_dataloader')
        sampler = DATA_SAMPLERS.build(
            cfg.train_dataloader.sampler,
            default_args=dict(dataset=train, seed=0))
        model = MODELS.build(cfg.model)
    evaluator = SimpleNamespace(dataset_meta={})
    runner = SimpleNamespace(
        model=model,
        train_loop=SimpleNamespace(
            dataloader=SimpleNamespace(dataset=train)),
        val_loop=SimpleNamespace(
            dataloader=SimpleNamespace(dataset=val), evaluator=evaluator))
    return cfg, train, sampler, model, runner


def _expected(rows, power):
    """Class weights, per-image sampler weights (numpy / Counter), counts."""
    import collections

    import numpy as np
    n = collections.Counter(c for ids in rows for c in set(ids))
    counts = np.array([n[c] for c in range(20)], dtype=np.float64)
    r = len(rows) / counts
    cw = r**power / (r**power).max()
    sw = np.array([r[sorted(set(ids))].sum() for ids in rows])**power
    return cw, sw / sw.max(), counts.astype(int).tolist()


def _groups(counts):
    import numpy as np
    counts = np.asarray(counts)
    return dict(
        head_classes=np.flatnonzero(counts >= 100).tolist(),
        middle_classes=np.flatnonzero((counts >= 20)
                                      & (counts < 100)).tolist(),
        tail_classes=np.flatnonzero(counts < 20).tolist())


def _trained_rows(train, rows):
    """The list-file rows of the images of ``train``, in its order."""
    from mmengine.fileio import join_path
    by_path = {join_path(train.img_prefix, p): ids for p, ids in rows}
    return [by_path[train.get_data_info(i)['img_path']]
            for i in range(len(train))]


def _class_weight(model):
    return model.loss_module.class_weight.double().cpu().numpy()


def test_honest_loss_weights_and_sampler_rates_count_the_trained_images(
        toy_set):
    """holdout_val=True: the loss class weights (from the metainfo the
    hook hands to the model) and the sampler's rates both count the images
    trained on (the train list without the val images)."""
    import numpy as np
    root, _ = toy_set
    cfg, train, sampler, model, runner = _toy_run(
        'lmclip_toy_mlt_tiny_honest.py', root)
    assert train.holdout_val and cfg.model.class_weight_power == \
        cfg.train_dataloader.sampler.power
    rows = _toy_rows(root)
    trained = _trained_rows(train, rows)
    assert len(trained) == len(train) < len(rows)
    cw, sw, counts = _expected(trained, cfg.model.class_weight_power)

    hook = DatasetMetaHook()
    hook.before_train(runner)
    # one set of counts: the trained images', for loss and sampler
    assert sampler.classes == list(range(20))
    assert sampler.class_counts == counts
    assert model.dataset_meta['class_counts'] == counts
    assert model.dataset_meta['num_train_images'] == len(trained)
    np.testing.assert_allclose(_class_weight(model), cw, rtol=1e-6)
    np.testing.assert_allclose(sampler.weights.numpy(), sw, rtol=1e-12)
    # validation does not change the loss class weights
    hook.before_val(runner)
    np.testing.assert_allclose(_class_weight(model), cw, rtol=1e-6)
    # the reported groups stay the benchmark's: the full train list's
    full = _expected([ids for _, ids in rows], 1.0)[2]
    assert runner.val_loop.evaluator.dataset_meta == _groups(full)


def test_paper_loss_weights_sampler_rates_and_groups_are_unchanged(
        toy_set):
    """No holdout (the paper's configs): everything from the full train
    list, as before the statistics got one home."""
    import numpy as np
    root, generated_counts = toy_set
    cfg, train, sampler, model, runner = _toy_run(
        'lmclip_toy_mlt_tiny.py', root)
    assert not train.holdout_val
    rows = [ids for _, ids in _toy_rows(root)]
    assert _trained_rows(train, _toy_rows(root)) == rows
    cw, sw, counts = _expected(rows, cfg.model.class_weight_power)
    # the generator's own per-class targets: an independent check
    assert counts == list(generated_counts)

    hook = DatasetMetaHook()
    hook.before_train(runner)
    assert train.metainfo['class_counts'] == counts
    assert train.metainfo['num_train_images'] == len(rows) == 804
    assert {k: train.metainfo[k] for k in _groups(counts)} == \
        _groups(counts)
    assert sampler.class_counts == counts
    np.testing.assert_allclose(_class_weight(model), cw, rtol=1e-6)
    np.testing.assert_allclose(sampler.weights.numpy(), sw, rtol=1e-12)
    hook.before_val(runner)
    np.testing.assert_allclose(_class_weight(model), cw, rtol=1e-6)
    assert runner.val_loop.evaluator.dataset_meta == _groups(counts)


def test_evaluation_phases_keep_the_train_counts():
    model = _Recorder()
    train = dict(META, head_classes=[2], middle_classes=[0, 1],
                 tail_classes=[])
    val = dict(classes=CLASSES, class_counts=[5, 5, 5], num_train_images=9)
    other = dict(classes=('a', 'b'), class_counts=[1, 1],
                 num_train_images=2)
    evaluator = SimpleNamespace(dataset_meta={})
    runner = _runner(model, train=train, val=val, test=other)
    runner.val_loop.evaluator = evaluator
    hook = DatasetMetaHook()
    hook.before_train(runner)
    hook.before_val(runner)
    hook.before_test(runner)
    # same classes: the train counts; other classes: the dataset's own
    assert model.metas[1] == dict(val, class_counts=[3, 2, 4],
                                  num_train_images=6)
    assert model.metas[2] == other
    # the train metainfo's groups (not recounted with other thresholds)
    assert evaluator.dataset_meta == dict(
        head_classes=[2], middle_classes=[0, 1], tail_classes=[])


def test_count_classes_of_a_dataset():
    from lmclip_mm.engine.hooks.dataset_meta_hook import count_classes

    class WithCatIds(_ToyDataset):

        def get_cat_ids(self, idx):
            return self.labels[idx]

    # labels [[0, 1], [2], [1, 2], [0], [0, 2], [2]]
    assert count_classes(WithCatIds()) == ([3, 2, 4], 6)
    assert count_classes(_ToyDataset()) is None  # no get_cat_ids

    class Bad(WithCatIds):
        labels = [[0], [3]]

    with pytest.raises(ValueError, match='outside 0..2'):
        count_classes(Bad())
