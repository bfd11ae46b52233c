"""LM-CLIP (the quickstart config, unchanged but for the dataset) trains on
mmpretrain's own multi-label datasets: MultiLabelDataset (json) and VOC,
built from generated images. Their samples carry no caption and their
metainfo no class counts or head/middle/tail groups."""
import json
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.runner import Runner  # noqa: E402
from PIL import Image  # noqa: E402

import lmclip_mm  # noqa: E402,F401
from lmclip_mm.engine.hooks.dataset_meta_hook import \
    count_classes  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
TOY_CFG = os.path.join(REPO, 'configs', 'lmclip_toy_mlt_tiny.py')
CLASSES = ['red', 'green', 'blue', 'dark']
COLOURS = {0: (220, 30, 30), 1: (30, 200, 30), 2: (30, 30, 220),
           3: (20, 20, 20)}


def _labels(n, seed):
    rng = np.random.default_rng(seed)
    rates = [0.8, 0.5, 0.3, 0.15]
    out = []
    for _ in range(n):
        labels = [c for c in range(4) if rng.random() < rates[c]] or [0]
        out.append(labels)
    return out


def _image(path, labels):
    img = np.full((64, 64, 3), 128, np.uint8)
    for k, c in enumerate(labels):
        img[16 * k:16 * k + 16, :] = COLOURS[c]
    Image.fromarray(img).save(path)


def _toy_cfg(tmp_path, dataset_train, dataset_val):
    cfg = Config.fromfile(TOY_CFG)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.train_dataloader.dataset = dataset_train
    cfg.train_dataloader.batch_size = 8
    cfg.val_dataloader.dataset = dataset_val
    cfg.test_dataloader = cfg.val_dataloader
    cfg.train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.log_level = 'WARNING'
    return cfg


def _train(cfg):
    torch.manual_seed(0)
    runner = Runner.from_cfg(cfg)
    seen = {}
    model = runner.model
    original = model.loss

    def spy(inputs, data_samples):
        seen.setdefault('captions', []).extend(
            model.template_caption(ds) if ds.get('caption') is None
            else ds.caption for ds in data_samples)
        seen['has_caption'] = any('caption' in ds for ds in data_samples)
        return original(inputs, data_samples)

    model.loss = spy
    runner.train()
    metrics = runner.val_loop.run()
    return runner, seen, metrics


def _check(runner, seen, metrics, train_labels):
    model = runner.model
    assert model.classes == tuple(CLASSES)
    # class weights from counts computed with get_cat_ids
    counts = [sum(c in labels for labels in train_labels) for c in range(4)]
    from lmclip_mm.datasets.class_stats import class_weights
    expected = class_weights(counts, len(train_labels), 1.0)
    np.testing.assert_allclose(model.loss_module.class_weight.numpy(),
                               expected, rtol=1e-6)
    # template captions from the labels and class names
    assert not seen['has_caption']
    assert all(c.startswith('a photo of a ') for c in seen['captions'])
    assert any(', ' in c for c in seen['captions'])
    for key in ('mAP', 'AUROC'):
        assert np.isfinite(metrics[f'long-tail/{key}']), key
    # the groups of the train counts (head >= 100, tail < 20 images), so
    # that save_best=['long-tail/mAP', 'long-tail/mAP_tail'] works
    groups = runner.val_loop.evaluator.dataset_meta
    assert groups['head_classes'] == []
    assert sorted(groups['middle_classes'] + groups['tail_classes']) == \
        [0, 1, 2, 3]
    assert groups['tail_classes'] == [c for c in range(4) if counts[c] < 20]
    assert np.isfinite(metrics['long-tail/mAP_tail'])
    assert any(f.startswith('best_long-tail_mAP_tail')
               for f in os.listdir(runner.work_dir))


def test_multilabel_dataset_json(tmp_path):
    root = tmp_path / 'json'
    (root / 'img').mkdir(parents=True)
    files = {}
    for split, n, seed in (('train', 24, 0), ('val', 12, 1)):
        labels = _labels(n, seed)
        items = []
        for i, lab in enumerate(labels):
            name = f'{split}_{i}.png'
            _image(root / 'img' / name, lab)
            items.append(dict(img_path=f'img/{name}', gt_label=lab))
        ann = root / f'{split}.json'
        ann.write_text(json.dumps(dict(metainfo=dict(classes=CLASSES),
                                       data_list=items)))
        files[split] = (str(ann), labels)
    ds = lambda split, pipe: dict(  # noqa: E731
        type='MultiLabelDataset', data_root=str(root),
        ann_file=files[split][0], pipeline=pipe)
    base = Config.fromfile(TOY_CFG)
    cfg = _toy_cfg(tmp_path, ds('train', base.train_pipeline),
                   ds('val', base.test_pipeline))
    runner, seen, metrics = _train(cfg)
    _check(runner, seen, metrics, files['train'][1])


def _write_voc(root, split, n, seed, classes):
    """VOC layout; image i has class i % 20 and a random second class."""
    for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, (len(classes), 3))
    labels, ids = [], []
    for i in range(n):
        lab = sorted({i % len(classes), int(rng.integers(len(classes)))})
        labels.append(lab)
        img_id = f'{split}_{i:04d}'
        ids.append(img_id)
        img = np.full((64, 64, 3), 128, np.uint8)
        for k, c in enumerate(lab):
            img[32 * k:32 * k + 32, :] = palette[c]
        Image.fromarray(img).save(root / 'JPEGImages' / f'{img_id}.jpg')
        objects = ''.join(
            f'<object><name>{classes[c]}</name><difficult>0</difficult>'
            '</object>' for c in lab)
        (root / 'Annotations' / f'{img_id}.xml').write_text(
            f'<annotation>{objects}</annotation>')
    (root / 'ImageSets' / 'Main' / f'{split}.txt').write_text(
        '\n'.join(ids) + '\n')
    return labels


def test_voc(tmp_path):
    from mmpretrain.datasets import VOC
    voc_classes = list(VOC.METAINFO['classes'])
    root = tmp_path / 'VOC2007'
    train = _write_voc(root, 'trainval', 40, 0, voc_classes)
    _write_voc(root, 'test', 20, 1, voc_classes)
    base = Config.fromfile(TOY_CFG)
    cfg = _toy_cfg(
        tmp_path,
        dict(type='VOC', data_root=str(root), split='trainval',
             pipeline=base.train_pipeline),
        dict(type='VOC', data_root=str(root), split='test', test_mode=True,
             pipeline=base.test_pipeline))
    runner, seen, metrics = _train(cfg)
    model = runner.model
    assert model.classes == tuple(voc_classes)
    counts = [sum(c in lab for lab in train) for c in range(20)]
    assert count_classes(runner.train_dataloader.dataset) == (counts, 40)
    from lmclip_mm.datasets.class_stats import class_weights
    np.testing.assert_allclose(model.loss_module.class_weight.numpy(),
                               class_weights(counts, 40, 1.0), rtol=1e-6)
    assert all(c.startswith('a photo of a ') for c in seen['captions'])
    assert not seen['has_caption']
    assert np.isfinite(metrics['long-tail/mAP_tail'])
    assert any(f.startswith('best_long-tail_mAP_tail')
               for f in os.listdir(runner.work_dir))


def test_template_caption_and_validation_without_counts():
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample
    model = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-vit'),
                              classes=CLASSES, class_weight_power=1.0))
    assert model.template_caption(DataSample().set_gt_label([0, 2])) == \
        'a photo of a red, blue'
    assert model.template_caption(
        DataSample().set_gt_score(torch.tensor([0., 1., 0., 1.]))) == \
        'a photo of a green, dark'
    # validation/test metainfo without counts keeps the weights; a train
    # metainfo without them is still an error
    model.set_dataset_meta(dict(classes=CLASSES), training=False)
    with pytest.raises(KeyError, match='class_counts'):
        model.set_dataset_meta(dict(classes=CLASSES))
