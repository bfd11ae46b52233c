"""pred_label of LMCLIPClassifier (thr / topk / fitted per-class
thresholds), the threshold fitting, the pred-label metric and the
multi-label inferencer."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from mmpretrain.registry import METRICS, MODELS  # noqa: E402
from mmpretrain.structures import DataSample  # noqa: E402
from sklearn.metrics import f1_score, precision_recall_fscore_support  # noqa

import lmclip_mm  # noqa: E402,F401
from lmclip_mm.evaluation import fit_class_thresholds  # noqa: E402
from lmclip_mm.models.heads.lmclip_head import DEFAULT_THR  # noqa: E402

CLASSES = ('cat', 'dog', 'person', 'car', 'traffic light')


def _model(**kwargs):
    cfg = dict(type='LMCLIPClassifier',
               clip=dict(model_name='lmclip-tiny-vit'), classes=CLASSES)
    cfg.update(kwargs)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    # a sharper random model: softmax probabilities spread over the classes
    with torch.no_grad():
        model.clip.logit_scale.fill_(np.log(300.))
    return model.eval()


def _inputs(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 64, 64), generator=g,
                         dtype=torch.uint8)


def _run(model, inputs):
    data = model.data_preprocessor(dict(inputs=inputs), False)
    with torch.no_grad():
        logits = model(data['inputs'], mode='tensor')
        preds = model(data['inputs'], mode='predict')
    return logits, preds


def test_default_rule_is_softmax_thr_and_scores_unchanged():
    model = _model()
    assert model.thr == DEFAULT_THR and model.topk is None
    logits, preds = _run(model, _inputs())
    probs = logits.double().softmax(-1)
    sizes = set()
    for row, p, pred in zip(logits, probs, preds):
        # the AP metrics rank the raw logits, untouched
        torch.testing.assert_close(pred.pred_score, row)
        expected = torch.nonzero(p >= DEFAULT_THR).flatten()
        assert pred.pred_label.tolist() == expected.tolist()
        sizes.add(len(expected))
    assert len(sizes) > 1  # a real decision: not all one size


def test_thr_topk_and_sigmoid_saturation():
    logits, preds = _run(_model(thr=0.3), _inputs())
    for row, pred in zip(logits.softmax(-1), preds):
        assert pred.pred_label.tolist() == torch.nonzero(
            row >= 0.3).flatten().tolist()
    logits, preds = _run(_model(topk=2), _inputs())
    for row, pred in zip(logits, preds):
        assert sorted(pred.pred_label.tolist()) == sorted(
            row.topk(2).indices.tolist())
    # thr wins over topk, as MultiLabelClsHead
    assert _model(thr=0.3, topk=2).topk == 2
    _, both = _run(_model(thr=0.3, topk=2), _inputs())
    assert [p.pred_label.tolist() for p in both] == \
        [p.pred_label.tolist() for p in _run(_model(thr=0.3), _inputs())[1]]
    with pytest.raises(ValueError, match='thr'):
        _model(thr=1.5)
    with pytest.raises(ValueError, match='topk'):
        _model(topk=0)


def test_class_thresholds_are_used_saved_and_loaded(tmp_path):
    model = _model()
    thresholds = torch.tensor([0.05, 0.5, 0.2, 0.9, 0.01])
    model.set_class_thresholds(thresholds)
    logits, preds = _run(model, _inputs())
    for p, pred in zip(logits.softmax(-1), preds):
        assert pred.pred_label.tolist() == torch.nonzero(
            p >= thresholds).flatten().tolist()
    sd = model.state_dict()
    assert torch.equal(sd['class_thresholds'], thresholds)
    path = tmp_path / 'm.pth'
    torch.save(dict(state_dict=sd, meta=dict(
        dataset_meta=dict(classes=list(CLASSES)))), path)

    from mmengine.runner import load_checkpoint
    fresh = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-vit')))
    assert fresh.class_thresholds is None
    load_checkpoint(fresh, str(path), map_location='cpu')
    assert torch.equal(fresh.class_thresholds, thresholds)
    fresh.eval()
    _, again = _run(fresh, _inputs())
    assert [p.pred_label.tolist() for p in again] == \
        [p.pred_label.tolist() for p in preds]
    with pytest.raises(ValueError, match='thresholds for 5 classes'):
        model.set_class_thresholds([0.1, 0.2])
    model.set_class_thresholds(None)
    assert 'class_thresholds' not in model.state_dict()


def _brute_force(score, positive):
    """sklearn's F1 at every distinct score (predict score >= t)."""
    best = (-1, None)
    for t in sorted(set(score.tolist()), reverse=True):
        f = f1_score(positive, score >= t, zero_division=0)
        if f > best[0] + 1e-12:
            best = (f, t)
    return best


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_fit_class_thresholds_maximises_each_f1(seed):
    rng = np.random.default_rng(seed)
    n, c = 60, 6
    target = (rng.random((n, c)) < np.linspace(0.5, 0.05, c)).astype(int)
    target[0, :] = 1
    score = rng.random((n, c)) * 0.6 + 0.35 * target
    score = np.round(score, 2)  # ties
    target[:, 5] = 0  # no positive: keeps the default
    thr, f1 = fit_class_thresholds(score, target, default=0.123)
    assert thr[5] == pytest.approx(0.123) and np.isnan(f1[5])
    for k in range(5):
        best_f1, _ = _brute_force(score[:, k], target[:, k])
        assert f1[k] == pytest.approx(best_f1, abs=1e-12)
        # the fitted threshold reproduces that F1
        assert f1_score(target[:, k], score[:, k] >= thr[k].item()) == \
            pytest.approx(best_f1, abs=1e-6)


def test_pred_label_metric_matches_sklearn():
    rng = np.random.default_rng(0)
    n, c = 40, 5
    target = (rng.random((n, c)) < 0.3).astype(int)
    pred = (rng.random((n, c)) < 0.3).astype(int)
    samples = [
        DataSample().set_pred_score(torch.randn(c)).set_pred_label(
            np.flatnonzero(p).tolist()).set_gt_label(np.flatnonzero(t)
                                                     .tolist()).to_dict()
        for p, t in zip(pred, target)]
    metric = METRICS.build(dict(type='PredLabelMultiLabelMetric'))
    metric.process(None, samples)
    res = metric.evaluate(n)
    p, r, f, _ = precision_recall_fscore_support(target, pred,
                                                 average='macro',
                                                 zero_division=0)
    assert res['pred-label/precision'] == pytest.approx(p * 100, abs=1e-3)
    assert res['pred-label/recall'] == pytest.approx(r * 100, abs=1e-3)
    assert res['pred-label/f1-score'] == pytest.approx(f * 100, abs=1e-3)


def test_multilabel_inferencer_returns_the_predicted_classes(tmp_path):
    from mmengine.config import Config
    from PIL import Image

    from lmclip_mm.apis import MultiLabelClsInferencer
    model = _model()
    model.set_class_thresholds([0.05, 0.5, 0.2, 0.9, 0.01])
    ckpt = tmp_path / 'm.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(
        dataset_meta=dict(classes=list(CLASSES)))), ckpt)
    cfg = Config(dict(
        model=dict(type='LMCLIPClassifier',
                   clip=dict(model_name='lmclip-tiny-vit')),
        test_dataloader=dict(dataset=dict(pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='Resize', scale=(64, 64)),
            dict(type='PackInputs')])),
        default_scope='mmpretrain'))
    img = tmp_path / 'a.png'
    Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    inferencer = MultiLabelClsInferencer(cfg, pretrained=str(ckpt))
    result = inferencer(str(img), show_dir=str(tmp_path / 'vis'))[0]
    sample = inferencer(str(img), return_datasamples=True)[0]
    assert result['pred_labels'] == sample.pred_label.tolist()
    assert result['pred_classes'] == [CLASSES[i] for i in
                                      result['pred_labels']]
    assert 'pred_label' in result and 'pred_class' in result  # mmpretrain's
    assert list((tmp_path / 'vis').iterdir())


def test_inferencer_loads_files_with_the_config_loader(tmp_path):
    """A JPEG tagged EXIF orientation 6 (landscape pixels shown as
    portrait): with the paper configs' loader (pillow, orientation
    ignored) the inferencer sees exactly what the test pipeline sees, not
    mmcv.imread's rotated default."""
    from mmengine.config import Config
    from mmcv.transforms import Compose
    from mmpretrain.registry import TRANSFORMS
    from PIL import Image

    from lmclip_mm.apis import MultiLabelClsInferencer
    model = _model()
    ckpt = tmp_path / 'm.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(
        dataset_meta=dict(classes=list(CLASSES)))), ckpt)
    pipeline = [
        dict(type='LoadImageFromFile', imdecode_backend='pillow',
             color_type='color_ignore_orientation'),
        dict(type='Resize', scale=(64, 64), backend='pillow',
             interpolation='bilinear'),
        dict(type='PackInputs')]
    cfg = Config(dict(
        model=dict(type='LMCLIPClassifier',
                   clip=dict(model_name='lmclip-tiny-vit')),
        test_dataloader=dict(dataset=dict(pipeline=pipeline)),
        default_scope='mmpretrain'))
    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, 120)[None, :, None] * np.ones((90, 1, 3))
    pixels = np.clip(gradient + rng.normal(0, 20, (90, 120, 3)), 0, 255)
    img = tmp_path / 'rotated.jpg'
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels.astype(np.uint8)).save(img, exif=exif)

    inferencer = MultiLabelClsInferencer(cfg, pretrained=str(ckpt))
    batch = next(iter(inferencer.preprocess([str(img)])))
    got = batch['inputs'][0]
    from mmengine.registry import init_default_scope
    init_default_scope('mmpretrain')
    expected = Compose([TRANSFORMS.build(t) for t in pipeline])(
        dict(img_path=str(img)))['inputs']
    assert torch.equal(got, expected)
    # mmpretrain's own inferencer rotates the image: other pixels
    from mmpretrain.apis import ImageClassificationInferencer
    plain = ImageClassificationInferencer(cfg, pretrained=str(ckpt))
    rotated = next(iter(plain.preprocess([str(img)])))['inputs'][0]
    assert not torch.equal(rotated, expected)
