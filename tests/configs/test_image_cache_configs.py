"""The paper, honest and toy configs (and the LM-CLIP own-data example)
cache their images: every dataset has cache=True and a pipeline that starts
with LoadResizedImage (the cached, deterministic step), followed by the
random flip (train) and PackInputs."""
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.name for p in (REPO / 'configs').glob('lmclip_*.py'))


@pytest.mark.parametrize(
    'config', CONFIGS + ['examples/lmclip_own_list_files.py'])
def test_every_dataset_caches_load_resized_image(config):
    cfg = Config.fromfile(str(REPO / 'configs' / config))
    size = 64 if 'toy' in config else 224
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[key].dataset
        assert dataset.cache is True, (config, key)
        first, *rest = dataset.pipeline
        assert first == dict(type='LoadResizedImage', scale=(size, size))
        types = [t['type'] for t in rest]
        expected = (['RandomFlip', 'PackInputs'] if key == 'train_dataloader'
                    else ['PackInputs'])
        assert types == expected, (config, key, types)


def test_all_paper_honest_and_toy_configs_are_checked():
    assert len(CONFIGS) == 10
    assert sum('honest' in c for c in CONFIGS) == 5
