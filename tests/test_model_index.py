"""The configs as mmpretrain model names (model-index.yml, registered on
import): list_models, get_model and inference_model with a user's
checkpoint."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import lmclip_mm  # noqa: E402,F401

NAMES = ['lmclip_rn50_coco-mlt', 'lmclip_rn50_voc-mlt',
         'lmclip_tiny-rn_toy-mlt', 'lmclip_vit-b16_coco-mlt',
         'lmclip_vit-b16_voc-mlt']


def test_list_models_and_configs():
    import mmpretrain
    from mmpretrain.apis.model import ModelHub
    assert mmpretrain.list_models('lmclip*') == NAMES
    for name in NAMES:
        meta = ModelHub.get(name)
        assert meta.config.model.type == 'LMCLIPClassifier'
        assert meta.results[0].task == 'Image Classification'
        assert meta.weights is None  # no published weights
    assert ModelHub.get('lmclip_vit-b16_voc-mlt').config.model.clip \
        .model_name == 'ViT-B-16'
    # registering twice is a no-op (no name conflict error)
    from lmclip_mm.apis import register_lmclip_models
    assert register_lmclip_models() == []


def test_get_model_and_inference_model_with_a_user_checkpoint(tmp_path):
    import mmpretrain
    from mmpretrain.registry import MODELS
    from lmclip_mm.datasets.toy_mlt import CLASSES
    torch.manual_seed(0)
    model = MODELS.build(dict(type='LMCLIPClassifier',
                              clip=dict(model_name='lmclip-tiny-rn')))
    model.set_classes(CLASSES)
    ckpt = tmp_path / 'toy.pth'
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(CLASSES)))),
               ckpt)
    loaded = mmpretrain.get_model('lmclip_tiny-rn_toy-mlt',
                                  pretrained=str(ckpt))
    assert loaded.classes == tuple(CLASSES)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)

    img = tmp_path / 'x.jpg'
    Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    result = mmpretrain.inference_model('lmclip_tiny-rn_toy-mlt', str(img),
                                        pretrained=str(ckpt))
    assert result['pred_class'] in CLASSES
    assert result['pred_scores'].shape == (len(CLASSES), )
    with pytest.raises(ValueError, match='Failed to find'):
        mmpretrain.get_model('lmclip_nope')
