"""tools/dist_train.sh with 2 CPU processes (gloo) runs to completion."""
import json

import pytest


@pytest.mark.slow  # the LM-CLIP run of tests/tools/test_lmclip_dist.py covers it
def test_dist_train_two_cpu_processes(tool, tiny_cfg, tiny_options, port,
                                      tmp_path):
    proc = tool(['dist_train.sh', tiny_cfg, '2', '--work-dir', tmp_path,
                 '--cfg-options', 'train_cfg.max_epochs=1', *tiny_options],
                env={'PORT': str(port)})
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log
    assert "'backend': 'gloo'" in log
    assert (tmp_path / 'epoch_1.pth').is_file()
    # 8 images, batch 4 per process, 2 processes: 1 iteration per epoch
    # (a single process would need 2): the sampler sharded the data.
    scalars = next(tmp_path.glob('*/vis_data/scalars.json'))
    records = [json.loads(x) for x in scalars.read_text().splitlines()]
    assert [r['step'] for r in records if 'loss' in r] == [1]
    assert any('accuracy/top1' in r for r in records)
