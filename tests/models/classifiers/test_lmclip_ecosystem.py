"""LMCLIPClassifier in mmengine's model tools: FLOP counting on the paper
configs' models (what mmpretrain's tools/analysis_tools/get_flops.py
calls) and SyncBatchNorm conversion (``sync_bn='torch'``)."""
import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmpretrain.registry import MODELS  # noqa: E402

import lmclip_mm  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.heavy(55)  # seconds on one CI core


@pytest.fixture(autouse=True, scope='module')
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _paper_model(config):
    """The paper config's model as built: offline, without its 'openai'
    weights (init_weights would load them)."""
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    assert cfg.model.clip.pretrained == 'openai'
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def test_paper_model_names_build_offline_and_load_at_init_weights(
        monkeypatch, tmp_path):
    """mmpretrain.get_model on a paper model name needs no CLIP weights
    (nothing is downloaded: a checkpoint would replace them); its
    init_weights() is where they load, and offline that is the one clear
    error."""
    import open_clip.pretrained
    from mmpretrain import get_model

    from lmclip_mm.models.utils import PretrainedWeightsUnavailable

    def no_download(*args, **kwargs):
        raise AssertionError('a download was attempted')

    monkeypatch.setattr(open_clip.pretrained, 'download_pretrained',
                        no_download)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('HF_HOME', str(tmp_path))  # an empty hub cache
    model = get_model('lmclip_voc_mlt_rn50')
    assert model.clip_weights_pending
    with pytest.raises(PretrainedWeightsUnavailable, match='HF_HUB_OFFLINE'):
        model.init_weights()


def test_mmpretrain_get_flops_on_a_paper_config_offline(tmp_path):
    """MMPretrain's own tools/analysis_tools/get_flops.py (as its wheel
    ships it) on a paper config, offline with an empty hub cache."""
    import subprocess
    import sys

    import mmpretrain
    from lmclip_testing import tool_env
    tool = Path(mmpretrain.__file__).parent / '.mim' / 'tools' / \
        'analysis_tools' / 'get_flops.py'
    if not tool.is_file():
        pytest.skip('this mmpretrain wheel ships no .mim/tools')
    env = tool_env(dict(HF_HUB_OFFLINE='1', HF_HOME=str(tmp_path)))
    config = REPO / 'configs' / 'lmclip_voc_mlt_rn50.py'
    proc = subprocess.run([sys.executable, str(tool), str(config)],
                          capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'Flops:' in proc.stdout and 'Params:' in proc.stdout


@pytest.mark.parametrize('config,image_gflops', [
    ('lmclip_coco_mlt_vitb16.py', (14.0, 18.0)),
    ('lmclip_voc_mlt_rn50.py', (4.0, 6.5)),
])
def test_get_model_complexity_info_on_paper_models(config, image_gflops):
    """``mmengine.analysis.get_model_complexity_info`` traces the model with
    its state as inputs: works on the tensors-only state dict, for the image
    tower as get_flops.py calls it and for the full classifier."""
    from mmengine.analysis import get_model_complexity_info
    model = _paper_model(config)
    model.set_classes([f'class {i}' for i in range(20)])
    full = get_model_complexity_info(model, input_shape=(3, 224, 224),
                                     show_table=False, show_arch=False)
    # mmpretrain's get_flops.py: model.forward = model.extract_feat
    model.forward = model.extract_feat
    image = get_model_complexity_info(model, input_shape=(3, 224, 224),
                                      show_table=False, show_arch=False)
    # fvcore-style FLOPs (one per multiply-add); the tracer skips the fused
    # attention kernel and our last ViT block computes the class token only
    lo, hi = image_gflops
    assert lo * 1e9 < image['flops'] < hi * 1e9, image['flops_str']
    # the full forward adds the 20 class prompts' text tower
    assert full['flops'] > image['flops']
    assert full['params'] == image['params']
    # get_flops.py --shape 160: a readable size (ints, not traced tensors)
    with pytest.raises(ValueError, match=r'images are \(160, 160\) but '
                       f'{model.model_name} expects \\(224, 224\\)'):
        get_model_complexity_info(model, input_shape=(3, 160, 160),
                                  show_table=False, show_arch=False)


def test_sync_bn_converts_lmclip_rn_model():
    """``sync_bn='torch'`` (mmengine's runner calls
    ``convert_sync_batchnorm`` when distributed) turns every BatchNorm of an
    LM-CLIP ResNet CLIP into SyncBatchNorm with the same state; evaluation
    is unchanged. (torch's SyncBatchNorm only trains on GPUs.)"""
    from mmengine.model import convert_sync_batchnorm
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='LMCLIPClassifier', clip=dict(model_name='lmclip-tiny-rn'),
        classes=['a', 'b', 'c'])).eval()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) > 10
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(images)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    synced = convert_sync_batchnorm(model, implementation='torch').eval()
    syncs = [m for m in synced.modules()
             if isinstance(m, torch.nn.SyncBatchNorm)]
    assert len(syncs) == len(bns)
    assert not [m for m in synced.modules()
                if isinstance(m, torch.nn.BatchNorm2d)]
    new_state = synced.state_dict()
    assert new_state.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(new_state[key], value, msg=key)
    with torch.no_grad():
        torch.testing.assert_close(synced(images), ref)
