"""tools/analysis/eval_load.py: COCO-MLT-sized evaluation, bounded memory."""
from pathlib import Path

import pytest

SPLITS = Path(__file__).resolve().parents[2].parent / 'shared' / 'data' / \
    'coco_mlt' / 'longtail2017'


@pytest.mark.slow
@pytest.mark.skipif(not SPLITS.is_dir(), reason='needs ../shared/data')
def test_eval_load_memory_does_not_grow(tool, tmp_path):
    proc = tool(['analysis/eval_load.py', '--split-dir', SPLITS, '--sizes',
                 '500', '5000', '--image-size', '160', '120', '--root',
                 tmp_path / 'coco'])
    out = proc.stdout
    assert '5000 images:' in out and '500 images:' in out
    assert out.strip().endswith('PASS')
