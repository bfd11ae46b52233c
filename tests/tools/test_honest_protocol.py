"""The honest protocol end to end on the toy config (issue 14.2).

configs/lmclip_toy_mlt_tiny_honest.py trains on the train list minus a
stratified val split, picks the best epoch on val and tests that checkpoint
once on the test split after training (BestCheckpointTestHook).
"""
import json
import re

import pytest
import torch
from mmengine.config import Config

from lmclip_testing import REPO, data_root_options

pytestmark = pytest.mark.heavy(25)  # seconds on one CI core

HONEST_CFG = 'configs/lmclip_toy_mlt_tiny_honest.py'
PAPER_CFG = 'configs/lmclip_toy_mlt_tiny.py'


@pytest.fixture(scope='module')
def honest_run(tmp_path_factory, tool, toy_root):
    """3 epochs, validation on the val split after each (~30 s)."""
    work_dir = tmp_path_factory.mktemp('honest')
    proc = tool(['train.py', HONEST_CFG, '--work-dir', work_dir,
                 '--cfg-options', *data_root_options(
                     toy_root, 'train_cfg.max_epochs=3',
                     'train_cfg.val_interval=1')])
    return work_dir, proc


def _split_sizes(root):
    from mmpretrain.registry import DATASETS

    import lmclip_mm  # noqa: F401
    cfg = Config.fromfile(str(REPO / HONEST_CFG))
    sizes = {}
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        ds_cfg = dict(cfg[key].dataset, data_root=str(root), pipeline=[])
        sizes[key] = len(DATASETS.build(ds_cfg))
    return sizes


def test_config_selects_the_val_split_and_the_hook():
    cfg = Config.fromfile(str(REPO / HONEST_CFG))
    paper = Config.fromfile(str(REPO / PAPER_CFG))
    assert cfg.train_dataloader.dataset.holdout_val is True
    assert cfg.val_dataloader.dataset.split == 'val'
    assert cfg.test_dataloader.dataset.split == 'test'
    assert cfg.default_hooks.test_best.type == 'BestCheckpointTestHook'
    # everything else is the paper's config
    for key in ('model', 'optim_wrapper', 'param_scheduler'):
        assert cfg[key] == paper[key], key
    assert 'test_best' not in paper.default_hooks
    assert paper.val_dataloader.dataset.split == 'test'
    assert not paper.train_dataloader.dataset.get('holdout_val', False)


def test_honest_run_tests_the_best_val_checkpoint_once(honest_run, toy_root,
                                                       tool, tmp_path):
    work_dir, proc = honest_run
    log = proc.stdout + proc.stderr
    sizes = _split_sizes(toy_root)
    assert sizes['train_dataloader'] + sizes['val_dataloader'] == 804
    n_val, n_test = sizes['val_dataloader'], sizes['test_dataloader']
    assert 70 <= n_val <= 90 and n_test == 345
    # validation ran on the val split after each of the 3 epochs; the test
    # split was evaluated exactly once
    assert log.count(f'multi-label results on {n_val} images') == 3
    assert log.count(f'multi-label results on {n_test} images') == 1

    result = json.loads((work_dir / 'test_best_checkpoint.json').read_text())
    ckpt = result['checkpoint']
    metric = result['metric']
    prefix = metric.split('/')[0]
    # the hook used the config's first save_best key and its best file
    cfg = Config.fromfile(str(REPO / HONEST_CFG))
    save_best = cfg.default_hooks.checkpoint.save_best
    assert metric == (save_best[0] if isinstance(save_best, list)
                      else save_best)
    best_files = list(work_dir.glob(
        f'best_{metric.replace("/", "_")}_epoch_*.pth'))
    assert [str(p) for p in best_files] == [ckpt]
    best_epoch = int(re.search(r'epoch_(\d+)\.pth$', ckpt).group(1))

    # the val score of that epoch is the best of the 3 val scores
    scalars = next(work_dir.glob('*/vis_data/scalars.json'))
    records = [json.loads(x) for x in scalars.read_text().splitlines()]
    val_scores = {r['step']: r[metric] for r in records if metric in r}
    assert sorted(val_scores) == [1, 2, 3]
    assert val_scores[best_epoch] == max(val_scores.values())
    assert result['val_score'] == pytest.approx(val_scores[best_epoch])

    # its test metrics are those of testing that checkpoint on the test
    # split with the paper config (tools/test.py)
    out = tmp_path / 'metrics.json'
    tool(['test.py', PAPER_CFG, ckpt, '--work-dir', tmp_path / 'w', '--out',
          out, '--out-item', 'metrics', '--cfg-options',
          *data_root_options(toy_root)])
    expected = json.loads(out.read_text())
    got = result['test_metrics']
    keys = [k for k in expected if k.startswith(prefix + '/')]
    assert keys
    for k in keys:
        assert got[k] == pytest.approx(expected[k], abs=1e-6), k
    # and differ from the last epoch's checkpoint when that was not the best
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert state['meta']['epoch'] == best_epoch


def test_no_validation_means_no_test(tool, toy_root, tmp_path):
    """Without a val loop there is no best checkpoint: the run fails loudly
    instead of silently skipping the test."""
    proc = tool(['train.py', HONEST_CFG, '--work-dir', tmp_path,
                 '--no-validate', '--cfg-options',
                 f'train_dataloader.dataset.data_root={toy_root}',
                 f'test_dataloader.dataset.data_root={toy_root}',
                 'train_cfg.max_epochs=3'], check=False)
    assert proc.returncode != 0
    log = proc.stdout + proc.stderr
    assert 'no validation loop' in log and 'no best checkpoint' in log
    # it fails before training, not after
    assert not list(tmp_path.glob('epoch_*.pth'))
