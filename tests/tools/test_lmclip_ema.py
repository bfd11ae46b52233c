"""mmengine's EMAHook with the LM-CLIP model through tools/train.py and
tools/test.py: training, validation on the averaged weights, checkpoints."""
import json

import pytest
import torch

pytestmark = pytest.mark.heavy(15)  # seconds on one CI core

CFG = 'configs/lmclip_toy_mlt_tiny.py'


def test_ema_hook_trains_validates_and_tests(tool, toy_root, tmp_path,
                                             load_ckpt):
    root = toy_root
    cfg = tmp_path / 'toy_ema.py'
    from pathlib import Path
    base = Path(__file__).resolve().parents[2] / CFG
    cfg.write_text(f'''_base_ = {str(base)!r}
custom_hooks = [
    dict(type='DatasetMetaHook'),
    dict(type='ExactResumeHook'),
    dict(type='EMAHook', momentum=0.1, priority='ABOVE_NORMAL'),
]
''')
    roots = [f'{k}.dataset.data_root={root}'
             for k in ('train_dataloader', 'val_dataloader',
                       'test_dataloader')]
    work = tmp_path / 'work'
    # 2 epochs on 128 of the 804 train images, validation after each
    tool(['train.py', cfg, '--work-dir', work, '--cfg-options', *roots,
          'train_dataloader.dataset.indices=128', 'train_cfg.max_epochs=2',
          'train_cfg.val_interval=1'])
    ckpt = load_ckpt(work / 'epoch_2.pth')
    ema = ckpt['ema_state_dict']
    assert all(torch.is_tensor(v) for v in ema.values())
    # the checkpoint's state_dict holds the averaged weights (EMAHook swaps
    # them in), ema_state_dict the raw ones under 'module.'
    key = 'clip.visual.conv1.weight'
    assert not torch.equal(ckpt['state_dict'][key], ema['module.' + key])
    records = [json.loads(x) for x in next(
        work.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    val = [r for r in records if 'long-tail/mAP' in r]
    assert [r['step'] for r in val] == [1, 2]

    # tools/test.py on the checkpoint evaluates the averaged weights: the
    # same numbers as the validation after epoch 2 (which ran on them)
    out = tmp_path / 'test.json'
    tool(['test.py', cfg, work / 'epoch_2.pth', '--work-dir', tmp_path / 't',
          '--out', out, '--out-item', 'metrics', '--cfg-options', *roots])
    tested = json.loads(out.read_text())
    for name in ('mAP', 'mAP_head', 'mAP_middle', 'mAP_tail', 'AUROC'):
        assert tested[f'long-tail/{name}'] == pytest.approx(
            val[-1][f'long-tail/{name}'], abs=1e-3), name
