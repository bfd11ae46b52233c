"""What the tests share besides fixtures: the repository's paths, running
a tool of ``tools/`` in a fresh interpreter, free ports.

``tests/helpers`` is on the tests' ``sys.path`` (``pythonpath`` in
``pytest.ini``) and on the ``PYTHONPATH`` of the tools the tests run
(:func:`tool_env`), so these modules (and the test components of
``reliability_helpers`` / ``ddp_helpers``) import by name everywhere.
"""
import os
import socket
import sys
from pathlib import Path

import tool_server

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs'
TOOLS = REPO / 'tools'
HELPERS = Path(__file__).resolve().parent
TINY_CFG = HELPERS / 'tiny_cls.py'


def tool_env(env=None):
    """The environment of a tool run by a test: one OpenMP thread (two
    torch processes on 2 cores slow each other badly), unbuffered output,
    the test helpers importable (``custom_imports``), plus ``env``."""
    full = dict(os.environ)
    full.setdefault('OMP_NUM_THREADS', '1')
    full['PYTHONUNBUFFERED'] = '1'
    full['PYTHONPATH'] = os.pathsep.join(
        [str(HELPERS)] + [p for p in [os.environ.get('PYTHONPATH')] if p])
    if env:
        full.update(env)
    return full


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


#: the files the real-data tests read, per dataset folder
SPLIT_FILES = {
    'voc_mlt': ('longtail2012', ('voc_labels.txt', 'voc_lt_train.txt',
                                 'voc_lt_test.txt', 'voc_lt_captions.txt')),
    'coco_mlt': ('longtail2017', ('coco_labels.txt', 'coco_lt_train.txt',
                                  'coco_lt_test.txt', 'coco_lt_captions.txt')),
}


def has_split_files(root, dataset: str) -> bool:
    """Whether ``root/<dataset>/`` holds every split file of ``dataset``
    (``'voc_mlt'`` / ``'coco_mlt'``), each non-empty: a folder alone (e.g.
    what a failed download leaves) is not data."""
    sub, names = SPLIT_FILES[dataset]
    folder = Path(root) / dataset / sub
    return all((folder / n).is_file() and (folder / n).stat().st_size > 0
               for n in names)


def real_data_dir(dataset: str):
    """The folder whose ``<dataset>/`` has the real split files:
    ``$LMCLIP_DATA_DIR``, else the repository's ``data/`` (after
    ``data/download_*.sh``), else the developers' ``../shared/data``; None
    when none has them (the tests that need them skip)."""
    candidates = [Path(p) for p in [os.environ.get('LMCLIP_DATA_DIR')] if p]
    candidates += [REPO / 'data', REPO.parent / 'shared' / 'data']
    for path in candidates:
        if has_split_files(path, dataset):
            return path.resolve()
    return None


def read_split(path):
    """A split list file read plainly, independently of the library's
    parser: ``[(image path, [class ids])]`` per non-blank line."""
    rows = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if fields:
                rows.append((fields[0], [int(t) for t in fields[1:]]))
    return rows


LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def data_root_options(root, *extra, loaders=LOADERS):
    """``--cfg-options`` pointing the ``loaders``' datasets at ``root``,
    followed by ``extra``."""
    return [f'{k}.dataset.data_root={root}' for k in loaders] + list(extra)


def run_tool(args, cwd=REPO, timeout=600, env=None, check=True):
    """Run a tools/ script as ``python tools/<script> ARGS`` (``.sh``:
    ``bash``); return the CompletedProcess. Python scripts run in a fork of
    a process that has imported what every tool imports
    (:mod:`tool_server`; ``LMCLIP_TEST_FRESH_TOOLS=1``: a fresh interpreter
    each)."""
    full_env = tool_env(env)
    if args[0].endswith('.sh'):
        cmd = ['bash', str(TOOLS / args[0])] + [str(a) for a in args[1:]]
        full_env['PYTHON'] = sys.executable
    else:
        cmd = [sys.executable, str(TOOLS / args[0])] + [
            str(a) for a in args[1:]
        ]
    proc = tool_server.run(cmd, cwd, full_env, tool_env(), timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(cmd)} failed ({proc.returncode}):\n'
            f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


def load_checkpoint_file(path):
    """An mmengine checkpoint, loaded as the tools load it (weights-only,
    with lmclip_mm's allow-list)."""
    import lmclip_mm  # noqa: F401  (allow-lists mmengine's globals)
    from mmengine.runner.checkpoint import _load_checkpoint
    return _load_checkpoint(str(path), map_location='cpu')
