"""tools/analysis/toy_ablation.py runs each variant with its own settings."""
import json

import pytest


@pytest.mark.slow
def test_ablation_runs_variants_and_prints_table(tool, tmp_path):
    work_dir = tmp_path / 'abl'
    proc = tool(['analysis/toy_ablation.py', '--epochs', '1', '--variants',
                 'bce', 'lmclip', '--work-dir', work_dir, '--data-root',
                 tmp_path / 'toy'])
    out = proc.stdout
    assert 'Toy long-tailed set, 1 epochs, seed 0 (test mAP, %):' in out
    # progress and where everything went
    assert f'[1/2 bce] BCE (ERM), uniform sampling: training 1 epochs into ' \
        f'{work_dir / "bce"}' in out
    assert f'training log: {work_dir / "bce" / "train_output.log"}' in out
    assert '[2/2 lmclip] done in ' in out
    assert f'table written to {work_dir / "results.txt"}' in out
    assert (work_dir / 'results.txt').read_text().startswith(
        'Toy long-tailed set, 1 epochs')
    header = next(x for x in out.splitlines() if x.startswith('variant'))
    assert [c.strip() for c in header.split('|')] == [
        'variant', 'mAP', 'head', 'middle', 'tail', 'time (s)']
    rows = [x for x in out.splitlines() if x.startswith(('BCE', 'BAL'))]
    assert len(rows) == 2
    for row in rows:
        values = [float(c) for c in row.split('|')[1:5]]
        assert all(0 <= v <= 100 for v in values)

    def losses(name):
        scalars = next((work_dir / name).glob('*/vis_data/scalars.json'))
        recs = [json.loads(x) for x in scalars.read_text().splitlines()]
        return {k for r in recs for k in r if k.startswith('loss')}

    # BCE variant: no contrastive term, mmpretrain's loss in place of BAL.
    assert losses('bce') == {'loss', 'loss_bal'}
    assert losses('lmclip') == {'loss', 'loss_bal', 'loss_contrastive'}
    cfg_dump = next((work_dir / 'bce').glob('*/vis_data/config.py')).read_text()
    assert "type='CrossEntropyLoss'" in cfg_dump
    assert "type='DefaultSampler'" in cfg_dump
