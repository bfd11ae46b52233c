"""The base configs build on MMPretrain's and on one another as MMPretrain's
do: the runtime is MMPretrain's plus LM-CLIP's hooks, and each backbone
file is the generic LM-CLIP model with its own ``clip.model_name``."""
import copy
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / 'configs' / '_base_'


def _without_scope(cfg):
    """A config dict without the ``_scope_`` keys that an ``mmpretrain::``
    base adds."""
    if isinstance(cfg, dict):
        return {k: _without_scope(v) for k, v in cfg.items()
                if k != '_scope_'}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_without_scope(v) for v in cfg)
    return cfg


def test_runtime_is_mmpretrains_plus_lmclips_hooks(tmp_path):
    ours = _without_scope(
        Config.fromfile(str(BASE / 'default_runtime.py')).to_dict())
    mmpretrains = tmp_path / 'mmpretrain_runtime.py'
    mmpretrains.write_text(
        "_base_ = 'mmpretrain::_base_/default_runtime.py'\n")
    theirs = _without_scope(Config.fromfile(str(mmpretrains)).to_dict())
    assert ours.pop('custom_imports') == dict(
        imports=['lmclip_mm'], allow_failed_imports=False)
    assert ours.pop('runner_type') == 'mmpretrain.LMCLIPRunner'
    assert [h['type'] for h in ours.pop('custom_hooks')] == [
        'DatasetMetaHook', 'ExactResumeHook', 'SyncBuffersHook']
    hooks, their_hooks = ours.pop('default_hooks'), theirs.pop('default_hooks')
    assert hooks.pop('logger') == dict(type='LoggerHook', interval=50)
    assert hooks.pop('checkpoint') == dict(
        type='AtomicCheckpointHook', interval=1, max_keep_ckpts=1,
        save_best=['long-tail/mAP', 'long-tail/mAP_tail'],
        rule=['greater', 'greater'])
    for key in ('logger', 'checkpoint'):
        their_hooks.pop(key)
    assert hooks == their_hooks
    assert ours == theirs  # scope, env, visualizer, log level, randomness


@pytest.mark.parametrize('backbone, model_name', [
    ('lmclip_vitb16.py', 'ViT-B-16'), ('lmclip_rn50.py', 'RN50')])
def test_backbone_bases_set_only_the_clip_model(backbone, model_name):
    generic = Config.fromfile(str(BASE / 'models' / 'lmclip.py')).to_dict()
    model = Config.fromfile(str(BASE / 'models' / backbone)).to_dict()
    expected = copy.deepcopy(generic)
    expected['model']['clip']['model_name'] = model_name
    assert model == expected
    assert model['model']['clip'] == dict(model_name=model_name,
                                          pretrained='openai')
