"""tools/infer.py prints the model's predicted labels (pred_label, with the
checkpoint's fitted class thresholds) after the top-k rows."""
import torch
from lmclip_testing import REPO


def toy_checkpoint(tmp_path, thresholds=None):
    """A random tiny LM-CLIP with the toy classes (and class thresholds)."""
    from mmpretrain.registry import MODELS

    import lmclip_mm  # noqa: F401
    from lmclip_mm.datasets.toy_mlt import CLASSES
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-rn')))
    model.set_classes(CLASSES)
    if thresholds is not None:
        model.set_class_thresholds(thresholds)
    ckpt = tmp_path / 'toy.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(CLASSES)))),
               ckpt)
    return ckpt


def test_infer_prints_predicted_labels_from_class_thresholds(tmp_path,
                                                             capsys):
    from lmclip_tools import infer

    from lmclip_mm.datasets.toy_mlt import CLASSES

    # thresholds: class 3 always, class 7 never, the rest never
    thr = torch.ones(len(CLASSES))
    thr[3] = 0.0
    ckpt = toy_checkpoint(tmp_path, thr)
    images = sorted((REPO / 'data' / 'toy_mlt' / 'images' / 'test')
                    .glob('*.jpg'))[:2]
    if not images:  # written on first use
        from lmclip_mm.datasets.toy_mlt import generate_toy_mlt
        generate_toy_mlt(str(tmp_path / 'toy'), seed=0)
        images = sorted((tmp_path / 'toy' / 'images' / 'test')
                        .glob('*.jpg'))[:2]
    infer.main(['configs/lmclip_toy_mlt_tiny.py', str(ckpt),
                *map(str, images), '--topk', '3'])
    lines = capsys.readouterr().out.strip().splitlines()
    lines = lines[lines.index(str(images[0])):]
    assert lines[4] == str(images[1])  # 3 rows per image, as before
    for row in lines[1:4] + lines[5:8]:
        assert row.split('score')[0].strip() in CLASSES
    # said: the checkpoint's fitted thresholds decide
    summary = lines[lines.index(
        'predicted labels (the per-class thresholds saved in the checkpoint, '
        'see fit_thresholds.py):') + 1:]
    assert summary == [f'  {img}: {CLASSES[3]}' for img in images]


def test_toy_model_takes_photos_of_any_size(tmp_path, capsys, real_photos):
    """The toy config's test pipeline resizes (LoadResizedImage): ordinary
    photos of different sizes, in one batch, are classified."""
    from lmclip_tools import infer
    ckpt = toy_checkpoint(tmp_path)
    images = [real_photos['china'], real_photos['small'],
              real_photos['rgba']]  # 640x427, 150x100, PNG with alpha
    infer.main(['configs/lmclip_toy_mlt_tiny.py', str(ckpt), *images,
                '--topk', '2', '--batch-size', '3'])
    out = capsys.readouterr().out
    for img in images:
        assert img in out
    assert 'predicted labels:' in out
