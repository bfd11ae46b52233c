"""The configs as mmpretrain model names (model-index.yml, registered on
import; a model's name is its config's file name): list_models, get_model
and inference_model with a user's checkpoint."""
import os
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import lmclip_mm  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[1]
#: the paper, toy and honest configs (configs/lmclip_*.py)
CONFIGS = sorted(p.stem for p in (REPO / 'configs').glob('lmclip_*.py'))
NAMES = [f'lmclip_{data}_mlt_{arch}{protocol}'
         for data, arch in (('coco', 'rn50'), ('coco', 'vitb16'),
                            ('toy', 'tiny'), ('voc', 'rn50'),
                            ('voc', 'vitb16'))
         for protocol in ('', '_honest')]


def test_list_models_and_configs():
    import mmpretrain
    from mmpretrain.apis.model import ModelHub
    assert mmpretrain.list_models('lmclip*') == NAMES
    for name in NAMES:
        meta = ModelHub.get(name)
        assert meta.config.model.type == 'LMCLIPClassifier'
        assert meta.results[0].task == 'Image Classification'
        assert meta.weights is None  # no published weights
    assert ModelHub.get('lmclip_voc_mlt_vitb16').config.model.clip \
        .model_name == 'ViT-B-16'
    # registering twice is a no-op (no name conflict error)
    from lmclip_mm.apis import register_lmclip_models
    assert register_lmclip_models() == []


def test_model_names_are_config_file_names():
    """As in MMPretrain: every lmclip* model is named after its config's
    file (without .py), which exists, and every top-level config is a
    model."""
    import mmpretrain
    from mmpretrain.apis.model import ModelHub
    from modelindex.load_model_index import load

    from lmclip_mm.apis import LMCLIP_MODEL_INDEX
    names = mmpretrain.list_models('lmclip*')
    assert names == CONFIGS == NAMES
    for name in names:
        config = ModelHub._models_dict[name].config  # a Config once got
        config = Path(getattr(config, 'filename', config))
        assert config.is_file(), name
        assert config.suffix == '.py' and config.stem == name
        # the package's configs (lmclip_mm/.mim, here the clone's)
        assert config.parent == REPO / 'lmclip_mm' / '.mim' / 'configs'
        assert config.resolve().parent == REPO / 'configs'
    # the index file itself, relative to the repository
    index = load(LMCLIP_MODEL_INDEX)
    index.build_models_with_collections()
    for meta in index.models:
        assert meta.config == f'configs/{meta.name}.py', meta.name


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
    loaded = mmpretrain.get_model('lmclip_toy_mlt_tiny',
                                  pretrained=str(ckpt))
    assert loaded.classes == tuple(CLASSES)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)

    img = tmp_path / 'x.jpg'
    Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (64, 64, 3), dtype=np.uint8)).save(img)
    result = mmpretrain.inference_model('lmclip_toy_mlt_tiny', str(img),
                                        pretrained=str(ckpt))
    assert result['pred_class'] in CLASSES
    assert result['pred_scores'].shape == (len(CLASSES), )
    with pytest.raises(ValueError, match='Failed to find'):
        mmpretrain.get_model('lmclip_nope')
