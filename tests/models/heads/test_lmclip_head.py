"""LMCLIPHead: the losses and the decision rule of LM-CLIP, against
mmpretrain's MultiLabelClsHead semantics of ``thr``/``topk``."""
import pytest
import torch
from mmpretrain.models.heads import MultiLabelClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

import lmclip_mm  # noqa: F401
from lmclip_mm.models.heads import LMCLIPHead
from lmclip_mm.models.heads.lmclip_head import DEFAULT_THR
from lmclip_mm.models.losses import (BalancedAsymmetricLoss,
                                     CLIPContrastiveLoss)


def _logits(n=16, c=7, scale=30., seed=0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, c, generator=g, dtype=torch.float64)


def _mmpretrain_labels(probs, **kwargs):
    """pred_label of mmpretrain's MultiLabelClsHead on scores ``probs``
    (it thresholds ``sigmoid(cls_score)``: feed it ``logit(probs)``)."""
    head = MultiLabelClsHead(**kwargs)
    samples = head.predict((torch.logit(probs), ))
    return [sorted(s.pred_label.tolist()) for s in samples]


def _labels(head, logits):
    return [sorted(x.tolist()) for x in head.predict_labels(logits)]


@pytest.mark.parametrize('kwargs', [
    dict(thr=0.1), dict(thr=0.3), dict(thr=0.0), dict(thr=1.0),
    dict(topk=1), dict(topk=3), dict(thr=0.2, topk=3)])
def test_thr_topk_as_multi_label_cls_head_on_the_softmax(kwargs):
    # the same rule as mmpretrain's head, applied to the softmax over the
    # classes instead of a sigmoid; thr wins when both are given
    logits = _logits()
    probs = logits.float().softmax(-1).double()
    head = LMCLIPHead(**kwargs)
    assert (head.thr, head.topk) == (kwargs.get('thr'), kwargs.get('topk'))
    assert _labels(head, logits) == _mmpretrain_labels(probs, **kwargs)
    torch.testing.assert_close(head.decision_scores(logits),
                               logits.float().softmax(-1))


def test_defaults_and_bad_arguments():
    head = LMCLIPHead()
    # MultiLabelClsHead's default is thr=0.5 on a sigmoid; ours is 0.1 on
    # the softmax (see the class docstring)
    assert head.thr == DEFAULT_THR == 0.1 and head.topk is None
    assert head.score_activation == 'none'
    assert isinstance(head.loss_module, BalancedAsymmetricLoss)
    assert isinstance(head.contrastive_loss, CLIPContrastiveLoss)
    assert LMCLIPHead(topk=2).thr is None
    # no parameters of its own: the optimizer's groups are the CLIP's
    assert not list(head.parameters())
    assert type(MODELS.build(dict(type='LMCLIPHead'))) is LMCLIPHead
    with pytest.raises(ValueError, match='thr'):
        LMCLIPHead(thr=1.5)
    with pytest.raises(ValueError, match='topk'):
        LMCLIPHead(topk=0)
    with pytest.raises(ValueError, match='score_activation'):
        LMCLIPHead(score_activation='relu')


def test_topk_larger_than_the_classes():
    logits = _logits(c=3)
    assert all(len(x) == 3 for x in LMCLIPHead(topk=5).predict_labels(
        logits))


def test_class_thresholds_replace_thr_and_topk():
    logits = _logits(c=4)
    probs = logits.float().softmax(-1)
    thresholds = torch.tensor([0.05, 0.5, 0.2, 0.9])
    for kwargs in (dict(thr=0.3), dict(topk=2)):
        head = LMCLIPHead(**kwargs)
        head.set_class_thresholds(thresholds, num_classes=4)
        assert _labels(head, logits) == [
            torch.nonzero(p >= thresholds).flatten().tolist() for p in probs]
    with pytest.raises(ValueError, match='thresholds for 4 classes'):
        head.set_class_thresholds([0.1, 0.2], num_classes=4)
    with pytest.raises(ValueError, match=r'in \[0, 1\]'):
        head.set_class_thresholds([0.1, 1.2])
    head.set_class_thresholds(None)
    assert head.class_thresholds is None


def test_class_thresholds_load_into_a_head_without_them():
    head = LMCLIPHead()
    head.set_class_thresholds([0.1, 0.2, 0.3])
    fresh = LMCLIPHead()
    fresh.load_state_dict(head.state_dict(), strict=True)
    assert torch.equal(fresh.class_thresholds, head.class_thresholds)


@pytest.mark.parametrize('activation,fn', [
    ('none', lambda x: x), ('softmax', lambda x: x.softmax(-1)),
    ('sigmoid', torch.sigmoid)])
def test_predict_sets_scores_and_labels(activation, fn):
    logits = _logits(n=4).float()
    head = LMCLIPHead(score_activation=activation, topk=2)
    samples = head.predict(logits)
    torch.testing.assert_close(torch.stack([s.pred_score for s in samples]),
                               fn(logits))
    assert [sorted(s.pred_label.tolist()) for s in samples] == \
        _labels(head, logits)
    given = [DataSample() for _ in range(4)]
    assert head.predict(logits, given) is given
    with pytest.raises(ValueError, match='3 data samples for 4 images'):
        head.predict(logits, given[:3])


def test_targets_and_loss():
    logits = _logits(n=3, c=4).float().requires_grad_()
    samples = [DataSample().set_gt_label(label)
               for label in ([0, 2], [1], [])]
    target = LMCLIPHead.get_targets(samples, logits)
    assert target.dtype == torch.float32
    assert target.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]
    scores = [DataSample().set_gt_score(t) for t in target]
    assert torch.equal(LMCLIPHead.get_targets(scores, logits), target)
    with pytest.raises(ValueError, match='outside'):
        LMCLIPHead.get_targets([DataSample().set_gt_label([4])] * 3, logits)
    with pytest.raises(ValueError, match='2 data samples for 3 images'):
        LMCLIPHead.get_targets(samples[:2], logits)
    with pytest.raises(ValueError, match='needs data samples'):
        LMCLIPHead.get_targets([], logits)

    head = LMCLIPHead(loss=dict(type='BalancedAsymmetricLoss',
                                loss_weight=0.3), contrastive_loss=None)
    losses = head.loss(logits, target)
    assert set(losses) == {'loss_bal'}
    torch.testing.assert_close(
        losses['loss_bal'],
        BalancedAsymmetricLoss(loss_weight=0.3)(logits, target))
    losses['loss_bal'].backward()
    assert logits.grad is not None

    head = LMCLIPHead(loss=BalancedAsymmetricLoss())  # a module is taken
    image, caption = torch.randn(3, 8), torch.randn(3, 8)
    scale = torch.tensor(10.)
    losses = head.loss(logits, target, image, caption, scale,
                       ['a', 'b', 'c'])
    torch.testing.assert_close(
        losses['loss_contrastive'],
        CLIPContrastiveLoss()(image, caption, scale, ['a', 'b', 'c']))
