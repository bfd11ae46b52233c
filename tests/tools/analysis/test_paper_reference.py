"""lmclip_tools.analysis.paper_reference: the baseline's loss transcriptions
and the generated stand-in dataset, against independent computations."""
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lmclip_mm.datasets.mlt_format import (parse_captions_file,
                                           parse_labels_file,
                                           parse_split_file)
from lmclip_mm.models.losses.balanced_asymmetric_loss import \
    BalancedAsymmetricLoss
from lmclip_mm.models.losses.clip_contrastive_loss import CLIPContrastiveLoss
from lmclip_tools.analysis import paper_reference as B


@pytest.mark.parametrize('shift', [0.0, -30.0])  # -30: every logit < 0
def test_reference_bal_equals_the_module(shift):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 20, generator=g) * 5 + shift
    y = (torch.rand(8, 20, generator=g) < 0.2).float()
    w = torch.rand(20, generator=g)
    kw = dict(gamma_pos=0.5, gamma_neg=9.8, clip=0.05, eps=1e-8,
              label_smoothing=0.1)
    ours = BalancedAsymmetricLoss(class_weight=w, loss_weight=5.0, **kw)
    ref = B.reference_bal(x, y, class_weight=w, loss_weight=5.0, **kw)
    torch.testing.assert_close(ours(x, y), ref, rtol=1e-6, atol=0)


def test_reference_bal_by_hand():
    # one entry per case, computed with numpy: positive / negative target
    x = torch.tensor([[2.0, -1.0]])
    y = torch.tensor([[1.0, 0.0]])
    z = np.array([2.0, -1.0]) / 2.0
    p = 1 / (1 + np.exp(-z))
    q_neg = min(1 - p[1] + 0.05, 1)
    pos = np.log(p[0]) * (1 - p[0])**1.0
    neg = np.log(q_neg) * (1 - q_neg)**4.0
    expected = -(pos + neg) / 2
    out = B.reference_bal(x, y, gamma_pos=1.0, gamma_neg=4.0, clip=0.05,
                          eps=1e-8, label_smoothing=0.0, class_weight=None,
                          loss_weight=1.0)
    assert float(out) == pytest.approx(expected, rel=1e-6)


def test_reference_contrastive_equals_the_module():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(6, 16, generator=g)
    text = torch.randn(6, 16, generator=g)
    scale = torch.tensor(14.0)
    ref = B.reference_contrastive(F.normalize(image, dim=-1),
                                  F.normalize(text, dim=-1), scale)
    ours = CLIPContrastiveLoss()(image, text, scale)
    torch.testing.assert_close(ours, ref)


def test_standin_dataset_is_valid_lmpt_data(tmp_path):
    classes = B.class_names(20)
    labels = [[0], [0, 1], [2], [0], [3]]  # most classes missing
    files = B.write_standin_dataset(str(tmp_path), classes, 30,
                                    jpeg_size=(120, 90), label_lists=labels)
    assert parse_labels_file(osp.join(tmp_path, files['labels_file'])) == \
        tuple(classes)
    records = parse_split_file(osp.join(tmp_path, files['train_file']), 20)
    assert len(records) == 30
    assert {c for r in records for c in r.labels} == set(range(20))
    assert records[0].labels == (0, ) and records[1].labels == (0, 1)
    captions = parse_captions_file(osp.join(tmp_path,
                                            files['captions_file']))
    assert len(captions) == 30
    first = records[1]
    with Image.open(osp.join(tmp_path, first.path)) as img:
        assert img.format == 'JPEG' and img.size == (120, 90)
        pixels = np.asarray(img)
    assert pixels.std() > 10  # not a flat colour


def test_class_names():
    assert len(B.class_names(20)) == 20 and len(B.class_names(80)) == 80
    with pytest.raises(ValueError, match='20 .* or 80'):
        B.class_names(10)


def test_peak_rss_probe():
    rss = B.proc_status_kib('VmRSS')
    if rss is None:
        pytest.skip('no /proc/self/status')
    assert rss > 1000 and B.proc_status_kib('VmHWM') >= rss
    assert B.proc_status_kib('NoSuchKey') is None


@pytest.mark.parametrize('grad', [False, True])
def test_count_flops_of_attention_by_hand(grad):
    # nn.MultiheadAttention, (N, L, E) = (2, 5, 16), 4 heads: the in/out
    # projections and q@k^T, attn@v, by hand. Without the fast-path switch
    # (inference) or the CPU attention formula, parts would go uncounted.
    torch.manual_seed(0)
    n, length, e = 2, 5, 16
    mha = torch.nn.MultiheadAttention(e, 4, batch_first=True).eval()
    x = torch.randn(n, length, e, requires_grad=grad)
    projections = 2 * n * length * e * 3 * e + 2 * n * length * e * e
    attention = 2 * 2 * n * length * length * e  # q @ k^T and attn @ v

    def run():
        with torch.set_grad_enabled(grad):
            out = mha(x, x, x, need_weights=False)[0]
        if grad:
            out.sum().backward()

    # backward: 2x the projections; torch counts the attention backward as
    # 5 such matmuls (the scores are recomputed), i.e. 2.5x
    expected = (3 * projections + 3.5 * attention if grad else
                projections + attention)
    assert B.count_flops(run) == expected
    assert torch.backends.mha.get_fastpath_enabled()  # restored
