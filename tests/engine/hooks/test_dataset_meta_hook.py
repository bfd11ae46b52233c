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

@pytest.fixture(autouse=True, scope='module')
def _one_torch_thread():
    # Tiny models: one thread is as fast, and it is not slowed down 50x by
    # OpenMP spinning when other processes share the CPU cores.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
