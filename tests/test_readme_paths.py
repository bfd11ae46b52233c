"""The README speaks to someone who cloned the repository: it names no path
outside it, and the repository files it names exist."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / 'README.md', REPO / 'data' / 'README.md']
#: placeholders a reader replaces (not paths of this machine)
PLACEHOLDERS = ('/path/to/', '/data/', '/tmp/')


def _text(path):
    return path.read_text(encoding='utf-8')


def test_no_path_outside_the_repository():
    for doc in DOCS:
        for no, line in enumerate(_text(doc).splitlines(), 1):
            assert '../' not in line, f'{doc.name}:{no}: {line}'
            assert 'shared/data' not in line, f'{doc.name}:{no}: {line}'
            for m in re.finditer(r'(?<![\w.:/~>$}-])(/[\w.-]+/[\w./-]*)', line):
                path = m.group(1)
                assert path.startswith(PLACEHOLDERS), \
                    f'{doc.name}:{no}: absolute path {path}'


def test_named_repository_files_exist():
    pattern = re.compile(
        r'(?<![\w./-])((?:configs|tools|data|lmclip_mm|tests|requirements)/'
        r'[\w./-]*\.(?:py|sh|txt|md|json))')
    missing = []
    for doc in DOCS:
        for path in pattern.findall(_text(doc)):
            if '*' in path or path.startswith(('data/my_', 'data/toy_mlt/')):
                continue  # globs and files the reader creates
            if path.startswith(('data/voc_mlt/', 'data/coco_mlt/')):
                continue  # written by data/download_*.sh
            if not (REPO / path).exists():
                missing.append(f'{doc.name}: {path}')
    assert not missing, missing
