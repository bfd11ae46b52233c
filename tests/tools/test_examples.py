"""configs/examples/: each trains for an epoch on generated list files
through tools/train.py (LM-CLIP on own list files; a plain MMPretrain
ResNet with BAL + ClassAwareRepeatSampler + LongTailAveragePrecision), and
--tensorboard writes TensorBoard events."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from lmclip_testing import REPO, run_tool

CLASSES = ['red', 'green', 'blue', 'dark']
PALETTE = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (20, 20, 20)]


@pytest.fixture(scope='module')
def list_files(tmp_path_factory):
    """Own data in the list-file format: labels.txt, train.txt, test.txt."""
    root = tmp_path_factory.mktemp('my_lt')
    (root / 'images').mkdir()
    rng = np.random.default_rng(0)
    (root / 'labels.txt').write_text(
        ''.join(f'{c} {i}\n' for i, c in enumerate(CLASSES)))
    for split, n in (('train', 24), ('test', 12)):
        lines = []
        for i in range(n):
            labels = sorted({i % 4} | ({int(rng.integers(4))}
                                       if rng.random() < 0.5 else set()))
            img = np.full((64, 64, 3), 128, np.uint8)
            for k, c in enumerate(labels):
                img[32 * k:32 * k + 32] = PALETTE[c]
            path = f'images/{split}_{i:03d}.jpg'
            Image.fromarray(img).save(root / path)
            lines.append(f'{path} ' + ' '.join(map(str, labels)))
        (root / f'{split}.txt').write_text('\n'.join(lines) + '\n')
    return root


def _data_options(root):
    return [f'{k}.dataset.data_root={root}/'
            for k in ('train_dataloader', 'val_dataloader',
                      'test_dataloader')] + [
        f'{k}.num_workers=0' for k in ('train_dataloader', 'val_dataloader',
                                       'test_dataloader')]


def _scalars(work_dir):
    runs = sorted(glob.glob(str(work_dir / '*' / 'vis_data' /
                                'scalars.json')))
    assert runs, list(work_dir.iterdir())
    return [json.loads(line) for line in open(runs[-1])]


def test_lmclip_own_list_files(list_files, tmp_path):
    work = tmp_path / 'lmclip'
    size = '(64,64)'
    run_tool([
        'train.py', REPO / 'configs/examples/lmclip_own_list_files.py',
        '--work-dir', work, '--tensorboard', '--cfg-options',
        *_data_options(list_files),
        'model.clip.model_name=lmclip-tiny-rn', 'model.clip.pretrained=None',
        f'train_dataloader.dataset.pipeline.0.scale={size}',
        f'val_dataloader.dataset.pipeline.0.scale={size}',
        f'test_dataloader.dataset.pipeline.0.scale={size}',
        'train_cfg.max_epochs=1', 'param_scheduler.T_max=1'])
    records = [r for r in _scalars(work) if 'long-tail/mAP' in r]
    assert records, _scalars(work)
    last = records[-1]
    for key in ('long-tail/mAP', 'long-tail/mAP_tail',
                'long-tail/mAP_single_label', 'pred-label/f1-score'):
        assert key in last, key
    assert glob.glob(str(work / 'best_long-tail_mAP_epoch_1.pth'))
    # --tensorboard: mmengine's TensorboardVisBackend wrote the same scalars
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    events = glob.glob(str(work / '*' / 'vis_data' / 'events.out.*'))
    assert events
    acc = EventAccumulator(os.path.dirname(events[0]))
    acc.Reload()
    tags = acc.Tags()['scalars']
    assert 'long-tail/mAP' in tags and 'loss' in tags
    assert acc.Scalars('long-tail/mAP')[-1].value == pytest.approx(
        last['long-tail/mAP'], abs=1e-4)


def test_resnet_bal_own_list_files(list_files, tmp_path):
    work = tmp_path / 'resnet'
    run_tool([
        'train.py', REPO / 'configs/examples/resnet_bal_own_list_files.py',
        '--work-dir', work, '--cfg-options', *_data_options(list_files),
        'model.backbone.depth=18', 'model.head.in_channels=512',
        'model.head.num_classes=4', 'data_preprocessor.num_classes=4',
        'train_dataloader.batch_size=8',
        'train_dataloader.dataset.pipeline.1.scale=64',
        'val_dataloader.dataset.pipeline.1.scale=72',
        'val_dataloader.dataset.pipeline.2.crop_size=64',
        'test_dataloader.dataset.pipeline.1.scale=72',
        'test_dataloader.dataset.pipeline.2.crop_size=64',
        'train_cfg.max_epochs=1'])
    records = [r for r in _scalars(work) if 'long-tail/mAP' in r]
    last = records[-1]
    # LongTailAveragePrecision and mmpretrain's AveragePrecision in one
    # evaluator: same mAP for the same scores
    assert last['long-tail/mAP'] == pytest.approx(last['multi-label/mAP'],
                                                  abs=1e-3)
    assert 'multi-label/f1-score' in last
    assert glob.glob(str(work / 'best_long-tail_mAP_epoch_1.pth'))
    # no --tensorboard: no events
    assert not glob.glob(str(work / '*' / 'vis_data' / 'events.out.*'))
    # DatasetMetaHook: the ResNet's metric reports the train counts' groups
    assert 'long-tail/mAP_tail' in last and 'long-tail/mAP_head' in last
    # the example's num_classes = 20 on a 4-class labels.txt: one error
    # line, nothing trained
    proc = run_tool([
        'train.py', REPO / 'configs/examples/resnet_bal_own_list_files.py',
        '--work-dir', tmp_path / 'wrong', '--cfg-options',
        *_data_options(list_files), 'model.backbone.depth=18',
        'model.head.in_channels=512', 'train_cfg.max_epochs=1'], check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        'error: DatasetFormatError: model.head.num_classes is 20 but the '
        'dataset of train_loop has 4 classes '
        f'({list_files / "labels.txt"}): set num_classes = 4 in the config')
    assert not glob.glob(str(tmp_path / 'wrong' / '*.pth'))
