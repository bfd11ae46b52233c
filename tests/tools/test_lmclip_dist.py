"""The LM-CLIP toy config through the multi-process paths a user takes:
``tools/dist_train.sh 2`` (gloo on CPU) to the end with validation and
checkpoints, ``tools/dist_test.sh 2`` on its checkpoint (equal to one
process), ``--resume`` of the 2-process run, ``load_from`` and
``tools/infer.py`` on that checkpoint without the dataset, and bad data
under 2 processes."""
import json
import re
import shutil

import pytest
import torch
from lmclip_testing import data_root_options

pytestmark = pytest.mark.heavy(100)  # seconds on one CI core

CFG = 'configs/lmclip_toy_mlt_tiny.py'
TRAIN_IMAGES = 256  # of the toy train split's 804 (SUBSET)
SUBSET = f'train_dataloader.dataset.indices={TRAIN_IMAGES}'
BATCH = 32  # the toy config's per-process batch


def _records(work_dir):
    records = []
    for log in sorted(work_dir.glob('*/vis_data/scalars.json')):
        records += [json.loads(x) for x in log.read_text().splitlines()]
    return records


def _val(work_dir):
    return [r for r in _records(work_dir) if 'long-tail/mAP' in r]


@pytest.fixture(scope='module')
def dist_run(tmp_path_factory, tool, toy_root, new_port):
    """``dist_train.sh CONFIG 2``: 2 epochs, validation after each."""
    work_dir = tmp_path_factory.mktemp('dist_train')
    proc = tool(['dist_train.sh', CFG, '2', '--work-dir', work_dir,
                 '--cfg-options',
                 *data_root_options(toy_root, SUBSET, 'train_cfg.max_epochs=2',
                                    'train_cfg.val_interval=1')],
                env={'PORT': str(new_port())})
    return work_dir, proc


def test_dist_train_lmclip_two_processes(dist_run, load_ckpt):
    work_dir, proc = dist_run
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    assert "'backend': 'gloo'" in log
    # no noise: the libraries' deprecations are silenced, and mmengine's
    # "GPU number" (the world size) says what it is on a CPU machine
    for noise in ('FutureWarning', 'pkg_resources', 'GPU number'):
        assert noise not in log, noise
    assert 'Processes (no GPU): 2' in log
    # the toy config's image cache, filled by the two ranks together (rank
    # 0 logs what it decoded, or that the other rank had filled it)
    assert re.search(r'image cache: \d+ images (decoded|from)', log), \
        log[-3000:]
    # each process takes half of the sampler's global draw
    per_epoch = -(-TRAIN_IMAGES // 2 // BATCH)  # 4 (one process: 8)
    ckpt = load_ckpt(work_dir / 'epoch_2.pth')
    assert ckpt['meta']['iter'] == 2 * per_epoch
    # tensors only in the state dict; the classes travel in the meta
    bad = [k for k, v in ckpt['state_dict'].items() if not torch.is_tensor(v)]
    assert not bad, bad
    from lmclip_mm.datasets.toy_mlt import CLASSES
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == CLASSES
    val = _val(work_dir)
    assert [r['step'] for r in val] == [1, 2]
    assert 'multi-label results on 345 images' in log
    assert list(work_dir.glob('best_long-tail_mAP_epoch_*.pth'))
    assert list(work_dir.glob('best_long-tail_mAP_tail_epoch_*.pth'))


def test_dist_test_equals_one_process(dist_run, tool, toy_root, tmp_path,
                                      new_port):
    work_dir, _ = dist_run
    ckpt = work_dir / 'epoch_2.pth'
    outs = {}
    for name, args in (
            ('one', ['test.py', CFG, ckpt]),
            ('two', ['dist_test.sh', CFG, ckpt, '2'])):
        out = tmp_path / f'{name}.json'
        tool(args + ['--work-dir', tmp_path / name, '--out', out,
                     '--out-item', 'metrics', '--cfg-options',
                     *data_root_options(toy_root,
                                        'test_evaluator.classwise=True')],
             env={'PORT': str(new_port())})
        outs[name] = json.loads(out.read_text())
    assert outs['one'].keys() == outs['two'].keys()
    for key, value in outs['one'].items():
        assert outs['two'][key] == pytest.approx(value, abs=1e-6), key
    # and the 2-process validation of the same weights during training
    last = _val(work_dir)[-1]
    assert last['long-tail/mAP'] == pytest.approx(
        outs['one']['long-tail/mAP'], abs=1e-3)


def test_resume_two_process_run(dist_run, tool, toy_root, tmp_path, new_port,
                                load_ckpt):
    work_dir = tmp_path / 'resumed'
    shutil.copytree(dist_run[0], work_dir)
    proc = tool(['dist_train.sh', CFG, '2', '--work-dir', work_dir,
                 '--resume', '--cfg-options',
                 *data_root_options(toy_root, SUBSET, 'train_cfg.max_epochs=3',
                                    'train_cfg.val_interval=1')],
                env={'PORT': str(new_port())})
    log = proc.stdout + proc.stderr
    per_epoch = -(-TRAIN_IMAGES // 2 // BATCH)
    assert f'resumed epoch: 2, iter: {2 * per_epoch}' in log
    ckpt = load_ckpt(work_dir / 'epoch_3.pth')
    assert ckpt['meta']['iter'] == 3 * per_epoch
    before = load_ckpt(dist_run[0] / 'epoch_2.pth')
    # the optimizer state was restored, not restarted
    steps = {int(s['step']) for s in ckpt['optimizer']['state'].values()}
    assert steps == {3 * per_epoch}, steps
    assert int(next(iter(before['optimizer']['state'].values()))['step']) \
        == 2 * per_epoch
    assert [r['step'] for r in _val(work_dir)][-1] == 3


def test_load_from_two_process_checkpoint(dist_run, tool, toy_root,
                                          tmp_path, load_ckpt):
    """``load_from`` (one process) starts a new run from the weights of the
    2-process checkpoint: with lr 0 every parameter stays the loaded one
    (BatchNorm's running statistics, updated by the forward passes, move)."""
    work_dir = tmp_path / 'load_from'
    src = dist_run[0] / 'epoch_2.pth'
    proc = tool(['train.py', CFG, '--work-dir', work_dir, '--cfg-options',
                 *data_root_options(toy_root, SUBSET, f'load_from={src}',
                                    'train_cfg.max_epochs=1',
                                    'train_cfg.val_interval=1',
                                    'optim_wrapper.optimizer.lr=0.0')])
    assert 'Load checkpoint from' in proc.stdout + proc.stderr
    loaded = load_ckpt(src)['state_dict']
    trained = load_ckpt(work_dir / 'epoch_1.pth')
    assert trained['meta']['epoch'] == 1  # a new run, not a resume
    assert trained['meta']['iter'] == -(-TRAIN_IMAGES // BATCH)
    params = [k for k in loaded
              if 'running_' not in k and 'num_batches_tracked' not in k]
    assert len(params) > 50
    for key in params:
        torch.testing.assert_close(trained['state_dict'][key], loaded[key],
                                   rtol=0, atol=0, msg=key)


def test_infer_uses_checkpoint_classes_without_dataset(dist_run, tool,
                                                       toy_root, tmp_path):
    """The dataset is gone (data_root points nowhere): the class names come
    from the checkpoint."""
    image = sorted((toy_root / 'images' / 'test').glob('*.jpg'))[0]
    proc = tool(['infer.py', CFG, dist_run[0] / 'epoch_2.pth', image,
                 '--topk', '3', '--cfg-options',
                 *data_root_options(tmp_path / 'no_such_dir')])
    from lmclip_mm.datasets.toy_mlt import CLASSES
    lines = proc.stdout.strip().splitlines()
    rows = lines[lines.index(str(image)) + 1:][:3]
    assert len(rows) == 3
    for row in rows:
        assert row.split('score')[0].strip() in CLASSES, row


def test_bad_data_two_processes(tool, toy_root, tmp_path, new_port):
    """A missing image under 2 processes: both ranks stop while the dataset
    is built, each with the one-line error naming the list file and line;
    no traceback from our code, nothing trained."""
    root = tmp_path / 'toy'
    shutil.copytree(toy_root, root)
    first = (root / 'toy_lt_train.txt').read_text().splitlines()[2].split()[0]
    (root / first).unlink()
    proc = tool(['dist_train.sh', CFG, '2', '--work-dir', tmp_path / 'wd',
                 '--cfg-options', *data_root_options(root)],
                env={'PORT': str(new_port())}, check=False, timeout=300)
    assert proc.returncode != 0
    errors = [x for x in proc.stderr.splitlines() if x.startswith('error: ')]
    assert len(errors) == 2, proc.stderr[-3000:]
    assert errors[0] == errors[1]
    assert 'toy_lt_train.txt' in errors[0]
    assert 'line 3' in proc.stderr and first in proc.stderr
    frames = re.findall(r'File "([^"]+)"', proc.stderr)
    ours = [f for f in frames if 'lmclip_mm' in f or f.endswith('train.py')]
    assert not ours, ours  # only torchrun's own report has a traceback
    assert not list((tmp_path / 'wd').glob('*.pth'))
