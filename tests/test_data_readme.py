"""data/README.md and README.md agree on the own-data example, and its
data folder is git-ignored (issue 15, item 11)."""
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEYS = ('data_root', 'labels_file', 'train_file', 'test_file')


def _example(text):
    """The own-data file names of a README's LongTailMultiLabelDataset
    example (``data_root`` may be given through a variable)."""
    found = {}
    for key in KEYS:
        m = re.search(rf"{key}\s*=\s*'([^']+)'", text)
        found[key] = m.group(1) if m else None
    return found


def test_both_readmes_name_the_same_own_data_files():
    data_readme = _example((REPO / 'data' / 'README.md').read_text())
    readme = _example((REPO / 'README.md').read_text())
    assert data_readme['train_file'] == 'train.txt'
    for key in KEYS:
        assert data_readme[key] is not None, key
        assert data_readme[key].rstrip('/') == readme[key].rstrip('/'), key


def test_own_data_and_dataset_folders_are_git_ignored():
    root = _example((REPO / 'README.md').read_text())['data_root']
    paths = [f'{root.rstrip("/")}/train.txt', 'data/voc_mlt/x',
             'data/coco_mlt/x', 'data/toy_mlt/x', 'data/anything/a.jpg']
    proc = subprocess.run(['git', 'check-ignore', '--no-index', *paths],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.split() == paths, proc.stdout + proc.stderr
    # ... but not the tracked files of data/
    tracked = ['data/README.md', 'data/download_voc_mlt.sh']
    proc = subprocess.run(['git', 'check-ignore', '--no-index', *tracked],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and not proc.stdout, proc.stdout
