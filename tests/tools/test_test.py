"""tools/test.py evaluates a checkpoint; bad checkpoints are refused."""
import json
import os

import pytest
import torch


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, tool, tiny_cfg, tiny_options):
    work_dir = tmp_path_factory.mktemp('ckpt')
    tool(['train.py', tiny_cfg, '--work-dir', work_dir, '--cfg-options',
          'train_cfg.max_epochs=1', *tiny_options])
    return work_dir / 'epoch_1.pth'


class _RunsCommand:

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture
def evil_checkpoint(checkpoint, tmp_path):
    """A valid checkpoint of the tiny model plus a command in its meta."""
    import lmclip_mm  # noqa: F401
    from mmengine.runner.checkpoint import _load_checkpoint
    ckpt = _load_checkpoint(str(checkpoint))
    marker = tmp_path / 'PWNED'
    ckpt['meta']['payload'] = _RunsCommand(marker)
    path = tmp_path / 'evil.pth'
    torch.save(ckpt, path)
    return path, marker


def test_test_tool_reports_metrics(checkpoint, tool, tiny_cfg, tiny_options,
                                   tmp_path):
    out = tmp_path / 'metrics.json'
    tool(['test.py', tiny_cfg, checkpoint, '--work-dir', tmp_path, '--out',
          out, '--out-item', 'metrics', '--cfg-options', *tiny_options])
    metrics = json.loads(out.read_text())
    assert 0 <= metrics['accuracy/top1'] <= 100


def test_test_tool_dumps_predictions(checkpoint, tool, tiny_cfg,
                                     tiny_options, tmp_path):
    out = tmp_path / 'pred.pkl'
    tool(['test.py', tiny_cfg, checkpoint, '--work-dir', tmp_path, '--out',
          out, '--cfg-options', *tiny_options])
    assert out.stat().st_size > 0


@pytest.mark.parametrize('how', ['test', 'load_from', 'resume'])
def test_untrusted_checkpoint_refused_by_tools(how, evil_checkpoint, tool,
                                               tiny_cfg, tiny_options,
                                               tmp_path):
    path, marker = evil_checkpoint
    if how == 'test':
        args = ['test.py', tiny_cfg, path, '--cfg-options', *tiny_options]
    elif how == 'load_from':
        args = ['train.py', tiny_cfg, '--cfg-options', f'load_from={path}',
                *tiny_options]
    else:
        args = ['train.py', tiny_cfg, '--resume', path, '--cfg-options',
                *tiny_options]
    args[2:2] = ['--work-dir', tmp_path / 'wd']
    proc = tool(args, check=False)
    assert proc.returncode != 0
    assert 'UntrustedCheckpointError' in proc.stderr
    assert f'Refusing to load checkpoint "{path}"' in proc.stderr
    assert not marker.exists()
    # The same command with --trust-checkpoint loads the file (and so runs
    # the payload: proof that the refusal above was what protected us).
    proc = tool(args + ['--trust-checkpoint'], check=False)
    assert marker.exists(), proc.stderr[-3000:]
