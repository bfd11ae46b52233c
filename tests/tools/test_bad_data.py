"""Bad data through tools/train.py: a one-line error naming file and line.

Each case breaks a copy of the generated toy set in one way; training must
stop when the dataset is built, with the list file, the line (or image path)
and the problem in a single ``error:`` line and no traceback.
"""
import shutil

import pytest

CFG = 'configs/lmclip_toy_mlt_tiny.py'


@pytest.fixture(scope='module')
def toy_set(tmp_path_factory):
    from lmclip_mm.datasets.toy_mlt import generate_toy_mlt
    root = tmp_path_factory.mktemp('toy_src') / 'toy'
    generate_toy_mlt(str(root), seed=0)
    return root


def _edit_line(path, line_no, new):
    lines = path.read_text().splitlines()
    lines[line_no - 1] = new
    path.write_text('\n'.join(lines) + '\n')


def _break(root, case):
    train = root / 'toy_lt_train.txt'
    if case == 'missing image':
        first = train.read_text().splitlines()[2].split()[0]
        (root / first).unlink()
        return 'toy_lt_train.txt', ['line 3', first, 'missing']
    if case == 'truncated jpeg':
        first = train.read_text().splitlines()[4].split()[0]
        data = (root / first).read_bytes()
        (root / first).write_bytes(data[:len(data) // 2])
        return 'toy_lt_train.txt', ['line 5', first, 'truncated JPEG']
    if case == 'malformed line':
        _edit_line(train, 7, 'images/train/000006.jpg 3 x')
        return 'toy_lt_train.txt', ['line 7', "'x'"]
    if case == 'unknown class id':
        _edit_line(train, 9, 'images/train/000008.jpg 1 20')
        return 'toy_lt_train.txt', ['line 9', '20']
    if case == 'empty split':
        train.write_text('')
        return 'toy_lt_train.txt', ['no image']
    if case == 'duplicate class names':
        labels = root / 'toy_labels.txt'
        lines = labels.read_text().splitlines()
        name = lines[0].rsplit(' ', 1)[0]
        lines[3] = f'{name} 3'
        labels.write_text('\n'.join(lines) + '\n')
        return 'toy_labels.txt', ['line 4', name]
    raise ValueError(case)


@pytest.mark.parametrize('case', [
    'missing image', 'truncated jpeg', 'malformed line', 'unknown class id',
    'empty split', 'duplicate class names'
])
def test_bad_data_fails_clearly(case, toy_set, tool, tmp_path):
    root = tmp_path / 'toy'
    shutil.copytree(toy_set, root)
    file_name, expected = _break(root, case)
    proc = tool(['train.py', CFG, '--work-dir', tmp_path / 'wd',
                 '--cfg-options'] + [
                     f'{k}.dataset.data_root={root}'
                     for k in ('train_dataloader', 'val_dataloader',
                               'test_dataloader')
                 ], check=False, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = [x for x in proc.stderr.splitlines() if x.startswith('error: ')]
    assert len(err) == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr
    assert file_name in err[0], err[0]
    for text in expected:
        assert text in proc.stderr, (text, err[0])
    # nothing was trained
    assert not list((tmp_path / 'wd').glob('*.pth'))
