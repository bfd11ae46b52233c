"""Each paper config has an honest-protocol twin that changes only the
protocol: held-out train, the val split for model selection, the best
checkpoint tested once (issue 14.2)."""
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
PAIRS = [(c, c.replace('.py', '_honest.py')) for c in (
    'lmclip_voc_mlt_vitb16.py', 'lmclip_voc_mlt_rn50.py',
    'lmclip_coco_mlt_vitb16.py', 'lmclip_coco_mlt_rn50.py',
    'lmclip_toy_mlt_tiny.py')]


@pytest.mark.parametrize('paper, honest', PAIRS)
def test_honest_twin_changes_only_the_protocol(paper, honest):
    p = Config.fromfile(str(REPO / 'configs' / paper)).to_dict()
    h = Config.fromfile(str(REPO / 'configs' / honest)).to_dict()
    # the paper's protocol: full train list, best epoch chosen on test
    assert p['val_dataloader']['dataset']['split'] == 'test'
    assert not p['train_dataloader']['dataset'].get('holdout_val', False)
    assert 'test_best' not in p['default_hooks']

    split = dict(val_fraction=0.1, val_seed=0)
    assert h.pop('val_split') == split
    assert h['train_dataloader']['dataset'].pop('holdout_val') is True
    assert h['val_dataloader']['dataset'].pop('split') == 'val'
    p['val_dataloader']['dataset'].pop('split')
    for key in ('train_dataloader', 'val_dataloader'):
        for k, v in split.items():
            assert h[key]['dataset'].pop(k) == v
    assert h['val_evaluator'].pop('no_positive') == 'exclude'
    assert h['default_hooks'].pop('test_best') == dict(
        type='BestCheckpointTestHook')
    assert h['test_dataloader']['dataset']['split'] == 'test'
    # nothing else differs (model, loss, schedule, pipelines, test split)
    assert h == p
