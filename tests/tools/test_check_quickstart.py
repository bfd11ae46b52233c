"""tools/analysis/check_quickstart.py: a quickstart run against the band
measured across CPU kernels and thread counts."""
import json

from lmclip_testing import run_tool


def _run_dir(root, epoch, mAP, tail):
    vis = root / '20261203_000000' / 'vis_data'
    vis.mkdir(parents=True)
    records = [dict(loss=1.0, step=1),
               {'long-tail/mAP': 50.0, 'long-tail/mAP_tail': 40.0,
                'step': 5},
               {'long-tail/mAP': mAP, 'long-tail/mAP_tail': tail,
                'step': epoch}]
    (vis / 'scalars.json').write_text(
        ''.join(json.dumps(r) + '\n' for r in records))
    return root


def test_inside_and_outside_the_band(tmp_path):
    healthy = _run_dir(tmp_path / 'ok', 30, 77.38, 74.41)
    proc = run_tool(['analysis/check_quickstart.py', healthy])
    assert proc.stdout.splitlines() == [
        'mAP        77.38  inside the band 72-81 (measured 74.24-78.90)',
        'mAP_tail   74.41  inside the band 65-78 (measured 69.62-74.41)',
        'healthy: the run trains as the quickstart does']
    broken = _run_dir(tmp_path / 'bad', 10, 8.7, 8.0)
    proc = run_tool(['analysis/check_quickstart.py', broken], check=False)
    assert proc.returncode == 1
    out = proc.stdout
    assert 'note: this evaluation is of epoch 10' in out
    assert 'mAP         8.70  OUTSIDE the band' in out
    assert out.strip().endswith('(changed config? broken install?)')
    proc = run_tool(['analysis/check_quickstart.py', tmp_path / 'none'],
                    check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(
        f'error: no run in {tmp_path / "none"}')
