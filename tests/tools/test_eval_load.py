"""tools/analysis/eval_load.py: COCO-MLT-sized evaluation, bounded memory."""
import pytest
from lmclip_testing import real_data_dir

pytestmark = pytest.mark.heavy(25)  # seconds on one CI core

DATA = real_data_dir('coco_mlt')
SPLITS = DATA / 'coco_mlt' / 'longtail2017' if DATA else None


@pytest.mark.slow
@pytest.mark.skipif(DATA is None, reason='needs the COCO-MLT split files')
def test_eval_load_memory_does_not_grow(tool, tmp_path):
    proc = tool(['analysis/eval_load.py', '--split-dir', SPLITS, '--sizes',
                 '500', '5000', '--image-size', '160', '120', '--root',
                 tmp_path / 'coco'])
    out = proc.stdout
    assert '5000 images:' in out and '500 images:' in out
    assert out.strip().endswith('PASS')


def _coco_like_splits(folder, n_test=6):
    folder.mkdir(parents=True)
    (folder / 'coco_labels.txt').write_text(
        ''.join(f'class{i} {i}\n' for i in range(80)))
    (folder / 'coco_lt_train.txt').write_text(
        ''.join(f'train2017/{i:012d}.jpg {i}\n' for i in range(80)))
    (folder / 'coco_lt_test.txt').write_text(
        ''.join(f'val2017/{i:012d}.jpg {i} {i + 1}\n' for i in range(n_test)))
    return folder


def test_eval_load_removes_its_images_unless_root_is_given(tool, tmp_path):
    """End to end: two test processes on the first 3 and 6 stand-in
    images, the growth check, and the stand-in images removed."""
    splits = _coco_like_splits(tmp_path / 'splits')
    scratch = tmp_path / 'tmp'
    scratch.mkdir()
    args = ['analysis/eval_load.py', '--split-dir', splits, '--sizes', '3',
            '6', '--image-size', '40', '30',
            '--num-workers', '0', '--max-growth-kib', '1e9']
    proc = tool(args, env={'TMPDIR': str(scratch)})
    out = proc.stdout
    assert '6 stand-in test images' in out and out.count('PASS') == 1, out
    assert '     3 images:' in out and '     6 images:' in out, out
    assert 'removed the stand-in images under ' + str(scratch) in out
    left = list(scratch.glob('coco_mlt_standin_*'))
    assert not left, left


def test_eval_load_keeps_its_images_under_root(tmp_path, monkeypatch,
                                               capsys):
    """--root keeps the stand-in images, says where, and a second run
    reuses them (the test processes, run above, are stood in for)."""
    from lmclip_tools.analysis import eval_load
    seen = []

    def run_test(root, count, args, work_dir):
        seen.append((root, count))
        return 1.0, 1000 + count, {'long-tail/mAP': 9.0}

    monkeypatch.setattr(eval_load, 'run_test', run_test)
    splits = _coco_like_splits(tmp_path / 'splits')
    keep = tmp_path / 'keep'
    argv = ['--split-dir', str(splits), '--sizes', '6', '--image-size', '40',
            '30', '--root', str(keep)]
    assert eval_load.main(argv) == 0
    assert f'kept the stand-in images under {keep}' in capsys.readouterr().out
    images = sorted((keep / 'val2017').glob('*.jpg'))
    assert len(images) == 6 and seen == [(str(keep), 6)]
    stamps = [p.stat().st_mtime_ns for p in images]
    assert eval_load.main(argv) == 0
    assert [p.stat().st_mtime_ns for p in images] == stamps  # reused


def test_eval_load_names_a_missing_split_dir(tool, tmp_path):
    proc = tool(['analysis/eval_load.py', '--split-dir', tmp_path],
                check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f'error: --split-dir {tmp_path}: no coco_labels.txt (the COCO-MLT '
        'split files; see data/README.md)')
