# Copyright (c) lmclip_mm authors.
"""LongTailAveragePrecision against scikit-learn (computed independently)."""
import math
import warnings

import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmpretrain.evaluation.metrics import AveragePrecision
from mmpretrain.registry import METRICS
from mmpretrain.structures import DataSample
from sklearn.metrics import average_precision_score, roc_auc_score

from lmclip_mm.evaluation.metrics.long_tail_average_precision import (
    LongTailAveragePrecision, UndefinedMetricWarning,
    long_tail_average_precision, roc_auc_per_class)

N, C = 200, 12
HEAD, MIDDLE, TAIL = [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]
PREFIX = 'long-tail/'


def make_data(seed, ties=False, n=N, c=C):
    """Long-tailed labels (rate 0.5 .. 0.02) with every class positive at
    least once, and scores loosely correlated with the labels."""
    rng = np.random.default_rng(seed)
    rates = np.geomspace(0.5, 0.02, c)
    target = (rng.random((n, c)) < rates).astype(np.int64)
    for k in range(c):
        if not target[:, k].any():
            target[rng.integers(n), k] = 1
    score = rng.random((n, c)) + 0.7 * target
    if ties:
        score = np.round(score * 4) / 4  # ~8 distinct values per class
    score = score.astype(np.float32)
    if not ties:
        assert all(len(np.unique(score[:, k])) == n for k in range(c))
    return score, target


def sk_ap(score, target):
    return np.array([
        average_precision_score(target[:, k], score[:, k])
        for k in range(target.shape[1])
    ]) * 100


def sk_auc(score, target):
    return np.array([
        roc_auc_score(target[:, k], score[:, k])
        for k in range(target.shape[1])
    ]) * 100


def softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def to_samples(score, target):
    return [
        dict(
            pred_score=torch.from_numpy(s),
            gt_label=torch.from_numpy(np.flatnonzero(t)))
        for s, t in zip(score, target)
    ]


def run_metric(metric, score, target, chunks=1, meta=None):
    evaluator = Evaluator(metrics=metric)
    if meta is not None:
        evaluator.dataset_meta = meta
    samples = to_samples(score, target)
    for part in np.array_split(np.arange(len(samples)), chunks):
        evaluator.process([samples[i] for i in part])
    return evaluator.evaluate(len(samples))


@pytest.mark.parametrize('seed', [0, 1, 2, 3])
def test_matches_sklearn_tie_free(seed):
    score, target = make_data(seed)
    metric = LongTailAveragePrecision(
        head_classes=HEAD, middle_classes=MIDDLE, tail_classes=TAIL)
    res = run_metric(metric, score, target)
    ap, auc = sk_ap(score, target), sk_auc(score, target)
    assert set(res) == {
        PREFIX + k
        for k in ('mAP', 'mAP_head', 'mAP_middle', 'mAP_tail', 'AUROC',
                  'mAP_single_label', 'mAP_multi_label')
    }
    assert res[PREFIX + 'mAP'] == pytest.approx(ap.mean(), abs=1e-4)
    assert res[PREFIX + 'mAP_head'] == pytest.approx(ap[HEAD].mean(), abs=1e-4)
    assert res[PREFIX + 'mAP_middle'] == pytest.approx(
        ap[MIDDLE].mean(), abs=1e-4)
    assert res[PREFIX + 'mAP_tail'] == pytest.approx(ap[TAIL].mean(), abs=1e-4)
    assert res[PREFIX + 'AUROC'] == pytest.approx(auc.mean(), abs=1e-8)
    for v in res.values():
        assert isinstance(v, float)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_auroc_with_ties_matches_sklearn(seed):
    score, target = make_data(seed, ties=True)
    auc = roc_auc_per_class(score, target) * 100
    np.testing.assert_allclose(auc, sk_auc(score, target), rtol=0, atol=1e-10)
    res = long_tail_average_precision(score, target)
    assert res['AUROC'] == pytest.approx(sk_auc(score, target).mean(), abs=1e-10)


def test_ap_is_mmpretrain_code_and_tie_behaviour(monkeypatch):
    """AP comes from mmpretrain's AveragePrecision.calculate (so, with tied
    scores, mmpretrain's order-dependent tie handling, which may differ from
    sklearn's tie-block thresholds)."""
    score, target = make_data(5, ties=True)
    res = long_tail_average_precision(score, target, classwise=True)
    expected = AveragePrecision.calculate(
        torch.from_numpy(score).double(), torch.from_numpy(target),
        average=None)
    np.testing.assert_allclose(res['AP_classwise'], expected.numpy(),
                               atol=1e-6)

    calls = []
    original = AveragePrecision.calculate

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(AveragePrecision, 'calculate', staticmethod(spy))
    long_tail_average_precision(score, target)
    assert calls == [(N, C)]

    # the documented tie example: sklearn treats the tie block as one
    # threshold (40.0); mmpretrain depends on the order of the tied entries
    t = np.array([0, 1, 0, 1, 0, 0])
    s = np.array([.5, .5, .5, .5, .9, .1])
    assert average_precision_score(t, s) == pytest.approx(0.4)
    orders = [np.arange(6), np.arange(6)[::-1]]
    values = {
        round(long_tail_average_precision(s[o, None], t[o, None])['mAP'], 4)
        for o in orders
    }
    assert len(values) == 2  # order-dependent under ties


@pytest.mark.parametrize('seed', [0, 7])
def test_apply_softmax_matches_sklearn_on_softmaxed(seed):
    score, target = make_data(seed)
    score = score * 5  # logits-like
    sm = softmax(score)
    res = run_metric(
        LongTailAveragePrecision(
            apply_softmax=True,
            head_classes=HEAD,
            middle_classes=MIDDLE,
            tail_classes=TAIL), score, target)
    ap = sk_ap(sm, target)
    assert res[PREFIX + 'mAP'] == pytest.approx(ap.mean(), abs=1e-4)
    assert res[PREFIX + 'mAP_tail'] == pytest.approx(ap[TAIL].mean(), abs=1e-4)
    assert res[PREFIX + 'AUROC'] == pytest.approx(
        sk_auc(sm, target).mean(), abs=1e-8)
    # softmax changes the per-class ranking, hence the result
    plain = long_tail_average_precision(score, target)
    assert plain['mAP'] != pytest.approx(res[PREFIX + 'mAP'], abs=1e-3)


def test_single_positive_class_and_image_without_positive():
    score, target = make_data(11)
    target[:, 3] = 0
    target[17, 3] = 1  # class 3: a single positive
    target[5] = 0  # image 5: no positive at all (empty gt_label)
    target[8] = 0
    assert target[:, 3].sum() == 1
    samples = to_samples(score, target)
    assert samples[5]['gt_label'].numel() == 0
    metric = LongTailAveragePrecision(classwise=True, prefix='lt')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # no groups
        metric.process(None, samples)
        res = metric.evaluate(len(samples))
    ap = sk_ap(score, target)
    np.testing.assert_allclose(res['lt/AP_classwise'], ap, atol=1e-4)
    assert res['lt/mAP'] == pytest.approx(ap.mean(), abs=1e-4)
    assert res['lt/AUROC'] == pytest.approx(
        sk_auc(score, target).mean(), abs=1e-8)


def test_class_without_positive_is_excluded_with_warning():
    score, target = make_data(3)
    target[:, 9] = 0  # tail class without any positive
    target[:, 0] = 1  # head class without any negative: AP 100, no AUROC
    meta = dict(
        classes=[f'c{k}' for k in range(C)],
        head_classes=HEAD,
        middle_classes=MIDDLE,
        tail_classes=TAIL)
    metric = LongTailAveragePrecision(classwise=True, no_positive='exclude')
    with pytest.warns(UndefinedMetricWarning) as record:
        res = run_metric(metric, score, target, meta=meta)
    messages = [str(w.message) for w in record]
    assert any('no positive' in m and '9 (c9)' in m for m in messages)
    assert any('no negative' in m and '0 (c0)' in m for m in messages)

    keep = [k for k in range(C) if k != 9]
    ap = sk_ap(score[:, keep], target[:, keep])
    ap_by_class = dict(zip(keep, ap))
    classwise = res[PREFIX + 'AP_classwise']
    assert len(classwise) == C and math.isnan(classwise[9])
    assert classwise[0] == pytest.approx(100.0)
    assert res[PREFIX + 'mAP'] == pytest.approx(ap.mean(), abs=1e-4)
    assert not math.isnan(res[PREFIX + 'mAP'])
    assert res[PREFIX + 'mAP_tail'] == pytest.approx(
        np.mean([ap_by_class[k] for k in TAIL if k != 9]), abs=1e-4)
    auc_keep = [k for k in range(C) if k not in (0, 9)]
    assert res[PREFIX + 'AUROC'] == pytest.approx(
        sk_auc(score[:, auc_keep], target[:, auc_keep]).mean(), abs=1e-8)


def test_group_without_any_positive_is_nan_with_warning():
    score, target = make_data(4)
    target[:, TAIL] = 0
    with pytest.warns(UndefinedMetricWarning) as record:
        res = long_tail_average_precision(
            score, target, HEAD, MIDDLE, TAIL, no_positive='exclude')
    messages = [str(w.message) for w in record]
    assert any('no positive' in m and '8, 9, 10, 11' in m for m in messages)
    assert any('tail group' in m and 'mAP_tail is nan' in m
               for m in messages)
    assert math.isnan(res['mAP_tail'])
    keep = HEAD + MIDDLE
    assert res['mAP'] == pytest.approx(
        sk_ap(score[:, keep], target[:, keep]).mean(), abs=1e-4)


def test_ignored_targets_minus_one():
    score, target = make_data(9)
    gt = target.astype(np.float32)
    gt[np.random.default_rng(0).random(gt.shape) < 0.1] = -1
    for k in range(C):  # keep a positive and a negative per class
        gt[np.flatnonzero(target[:, k])[0], k] = 1
        gt[np.flatnonzero(target[:, k] == 0)[0], k] = 0
    res = long_tail_average_precision(score, gt)
    ap, auc = [], []
    for k in range(C):
        m = gt[:, k] > -1
        ap.append(average_precision_score(gt[m, k], score[m, k]) * 100)
        auc.append(roc_auc_score(gt[m, k], score[m, k]) * 100)
    assert res['mAP'] == pytest.approx(np.mean(ap), abs=1e-4)
    assert res['AUROC'] == pytest.approx(np.mean(auc), abs=1e-8)


def test_groups_from_dataset_meta_vs_explicit():
    score, target = make_data(6)
    meta = dict(head_classes=HEAD, middle_classes=MIDDLE, tail_classes=TAIL)
    from_meta = run_metric(LongTailAveragePrecision(), score, target,
                           meta=meta)
    explicit = run_metric(
        LongTailAveragePrecision(
            head_classes=HEAD, middle_classes=MIDDLE, tail_classes=TAIL),
        score, target)
    assert from_meta == pytest.approx(explicit, abs=1e-12)

    # explicit arguments override dataset_meta (names accepted too)
    meta2 = dict(meta, classes=[f'c{k}' for k in range(C)])
    override = run_metric(
        LongTailAveragePrecision(tail_classes=['c10', 11]),
        score,
        target,
        meta=meta2)
    ap = sk_ap(score, target)
    assert override[PREFIX + 'mAP_tail'] == pytest.approx(
        ap[[10, 11]].mean(), abs=1e-4)
    assert override[PREFIX + 'mAP_head'] == pytest.approx(
        ap[HEAD].mean(), abs=1e-4)

    with pytest.raises(ValueError, match='out of'):
        long_tail_average_precision(score, target, tail_classes=[C])


def test_no_groups_reports_map_and_auroc_with_one_warning():
    score, target = make_data(8)
    metric = LongTailAveragePrecision()
    with pytest.warns(UserWarning, match='not reported') as record:
        res = run_metric(metric, score, target)
    assert set(res) == {PREFIX + k for k in (
        'mAP', 'AUROC', 'mAP_single_label', 'mAP_multi_label')}
    assert len([w for w in record if 'not reported' in str(w.message)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no second warning
        metric.process(None, to_samples(score, target))
        metric.evaluate(N)


def test_classwise_and_registry_build():
    score, target = make_data(2)
    metric = METRICS.build(
        dict(
            type='LongTailAveragePrecision',
            apply_softmax=False,
            classwise=True,
            head_classes=HEAD,
            middle_classes=MIDDLE,
            tail_classes=TAIL,
            prefix=None))
    assert isinstance(metric, LongTailAveragePrecision)
    assert isinstance(metric, AveragePrecision)
    res = run_metric(metric, score, target)
    classwise = res[PREFIX + 'AP_classwise']
    assert isinstance(classwise, list) and len(classwise) == C
    np.testing.assert_allclose(classwise, sk_ap(score, target), atol=1e-4)


def test_evaluator_two_chunks_equals_one_and_datasample_input():
    score, target = make_data(10)
    kw = dict(
        classwise=True,
        head_classes=HEAD,
        middle_classes=MIDDLE,
        tail_classes=TAIL)
    one = run_metric(LongTailAveragePrecision(**kw), score, target, chunks=1)
    two = run_metric(LongTailAveragePrecision(**kw), score, target, chunks=2)
    assert one == two

    # DataSample objects (what a classifier's predict mode returns)
    evaluator = Evaluator(metrics=LongTailAveragePrecision(**kw))
    samples = [
        DataSample().set_pred_score(torch.from_numpy(s)).set_gt_label(
            np.flatnonzero(t).tolist()) for s, t in zip(score, target)
    ]
    evaluator.process(samples[:N // 2])
    evaluator.process(samples[N // 2:])
    assert evaluator.evaluate(N) == one


def test_summary_table_is_logged_with_every_group(capsys):
    from mmengine.logging import MMLogger
    from lmclip_mm.evaluation.metrics.long_tail_average_precision import \
        format_summary_table
    metrics = {'mAP': 50.0, 'mAP_head': 75.5, 'mAP_middle': 50.25,
               'mAP_tail': 12.0, 'AUROC': 80.125}
    groups = {'head': [0, 1], 'middle': [2], 'tail': [3, 4, 5]}
    table = format_summary_table(metrics, groups, 6, 10)
    lines = table.splitlines()
    assert lines[0] == 'multi-label results on 10 images:'
    assert '| all           |       6 | 50.00 |' in lines
    assert '| head          |       2 | 75.50 |' in lines
    assert '| middle        |       1 | 50.25 |' in lines
    assert '| tail          |       3 | 12.00 |' in lines
    assert '| AUROC (macro) |       6 | 80.12 |' in lines
    # Without group information only the overall rows remain.
    short = format_summary_table({'mAP': 1.0, 'AUROC': 2.0},
                                 {'head': None}, 6, 3)
    assert 'head' not in short and '| all ' in short

    MMLogger.get_instance('lmclip_table_test', log_level='INFO')
    metric = LongTailAveragePrecision(
        head_classes=[0], middle_classes=[1], tail_classes=[2])
    rng = np.random.default_rng(0)
    samples = [dict(pred_score=torch.tensor(rng.random(3)),
                    gt_label=torch.tensor([i % 3])) for i in range(6)]
    metric.process([], samples)
    metric.compute_metrics(metric.results)
    out = capsys.readouterr().out
    assert 'multi-label results on 6 images' in out and '| tail ' in out
    quiet = LongTailAveragePrecision(show_table=False)
    quiet.process([], samples)
    quiet.compute_metrics(quiet.results)
    assert 'multi-label results' not in capsys.readouterr().out


# --- mmpretrain's AP conventions and keys (issue 13, item 2) --------------

MMPRETRAIN_PRED = torch.tensor([[0.9, 0.8, 0.3, 0.2], [0.1, 0.2, 0.2, 0.1],
                                [0.7, 0.5, 0.9, 0.3], [0.8, 0.1, 0.1, 0.2]])
MMPRETRAIN_TRUE = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0],
                                [1, 0, 0, 0]])


def _samples(pred, true):
    return [DataSample(num_classes=pred.shape[1]).set_pred_score(p)
            .set_gt_label(torch.nonzero(t).flatten())
            for p, t in zip(pred, true)]


def test_default_map_equals_mmpretrain_on_its_fixture_and_both_fit_one_evaluator():
    """mmpretrain's TestAveragePrecision fixture: class 3 has no positive;
    mmpretrain counts AP 0 (70.83), so does the default here; both metrics
    sit in one evaluator (no key collision)."""
    evaluator = Evaluator([METRICS.build(cfg) for cfg in (
        dict(type='AveragePrecision'),
        dict(type='LongTailAveragePrecision', classwise=True))])
    evaluator.process(_samples(MMPRETRAIN_PRED, MMPRETRAIN_TRUE))
    with pytest.warns(UndefinedMetricWarning, match='counted with AP 0'):
        res = evaluator.evaluate(4)
    assert res['multi-label/mAP'] == pytest.approx(70.83333, abs=1e-4)
    assert res['long-tail/mAP'] == pytest.approx(res['multi-label/mAP'],
                                                 abs=1e-5)
    # scikit-learn (the paper's evaluate_mlc: nanmean of sklearn's APs)
    sk = average_precision_score(MMPRETRAIN_TRUE.numpy(),
                                 MMPRETRAIN_PRED.numpy(), average=None)
    assert res['long-tail/mAP'] == pytest.approx(np.nanmean(sk) * 100,
                                                 abs=1e-4)
    assert res['long-tail/AP_classwise'][3] == 0.0

    # the exclusion stays available
    excl = LongTailAveragePrecision(no_positive='exclude', classwise=True)
    excl.process(None, [s.to_dict() for s in _samples(MMPRETRAIN_PRED,
                                                      MMPRETRAIN_TRUE)])
    with pytest.warns(UndefinedMetricWarning, match='excluded from mAP'):
        res2 = excl.evaluate(4)
    assert res2['long-tail/mAP'] == pytest.approx(94.44444, abs=1e-4)
    assert math.isnan(res2['long-tail/AP_classwise'][3])
    with pytest.raises(ValueError, match='no_positive'):
        LongTailAveragePrecision(no_positive='drop')


def test_default_zero_rule_on_groups_matches_sklearn():
    score, target = make_data(3)
    target[:, 9] = 0
    with pytest.warns(UndefinedMetricWarning, match='9 \\(c9\\)'):
        res = long_tail_average_precision(
            score, target, HEAD, MIDDLE, TAIL, classwise=True,
            class_names=[f'c{k}' for k in range(C)])
    ap = average_precision_score(target, score, average=None) * 100
    assert ap[9] == 0
    assert res['mAP'] == pytest.approx(ap.mean(), abs=1e-4)
    assert res['mAP_tail'] == pytest.approx(ap[TAIL].mean(), abs=1e-4)
    keep = [k for k in range(C) if k != 9]
    assert res['AUROC'] == pytest.approx(
        sk_auc(score[:, keep], target[:, keep]).mean(), abs=1e-8)


def test_single_and_multi_label_image_subsets_match_sklearn():
    """The paper's test.py: mAP over the images with one positive and over
    those with several, computed with sklearn on the subsets."""
    score, target = make_data(12)
    target[:3] = 0  # images without a positive are in neither subset
    res = run_metric(LongTailAveragePrecision(apply_softmax=True,
                                              head_classes=HEAD,
                                              middle_classes=MIDDLE,
                                              tail_classes=TAIL),
                     score, target)
    sm = softmax(score)
    n_pos = target.sum(1)
    for key, rows in (('mAP_single_label', n_pos == 1),
                      ('mAP_multi_label', n_pos > 1)):
        assert rows.sum() > 10
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # sklearn: classes w/o positive
            ap = average_precision_score(target[rows], sm[rows],
                                         average=None)
        assert res[PREFIX + key] == pytest.approx(np.nanmean(ap) * 100,
                                                  abs=1e-4), key
    assert res[PREFIX + 'mAP_single_label'] != pytest.approx(
        res[PREFIX + 'mAP'], abs=1e-2)
    # an empty subset is nan; subsets=False drops the keys
    single_only = np.zeros((4, 3), np.int64)
    single_only[np.arange(4), [0, 1, 2, 0]] = 1
    out = long_tail_average_precision(np.random.rand(4, 3), single_only,
                                      subsets=True)
    assert math.isnan(out['mAP_multi_label'])
    assert 'mAP_single_label' not in long_tail_average_precision(
        np.random.rand(4, 3), single_only)
