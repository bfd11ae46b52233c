"""tools/analysis/benchmark.py: figures, ratios and the parity check.

Runs the script on the tiny model for a couple of steps; it asserts what
is printed, never how fast anything is.
"""
import re

import pytest

pytestmark = pytest.mark.heavy(30)  # seconds on one CI core

ARGS = [
    'analysis/benchmark.py', '--model', 'lmclip-tiny-vit', '--classes', '20',
    '--steps', '2', '--warmup', '1', '--load-batches', '2', '--data-images',
    '24', '--memory-steps', '1', '--jpeg-size', '200', '150',
    '--peak-tflops', '1'
]
ROWS = ('train s/step (median)', 'train images/s',
        'eval images/s (median)', 'eval images/s (timed eval)',
        'peak RSS (MiB)', '  of which model+training')
NUMBER = r'(\d+(?:\.\d+)?)'
FLOAT = r'(\d+(?:\.\d+)?(?:e[+-]\d+)?)'


def test_benchmark_prints_every_figure_and_ratio(tool):
    out = tool(ARGS).stdout
    assert re.search(r'^parity .*: PASS$', out, re.M), out
    assert 'machine:' in out and 'load average at start' in out
    # every long phase says that it starts
    for phase in ('... counting FLOPs', '... training: ', '... evaluation: ',
                  '... the real dataloader: ', '... memory: '):
        assert phase in out, phase
    for row in ROWS:
        m = re.search(
            rf'^{re.escape(row)}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$', out,
            re.M)
        assert m, f'no row {row!r} in:\n{out}'
        ours, baseline, ratio = map(float, m.groups())
        assert ours > 0 and baseline > 0 and ratio > 0
    assert re.search(rf'real dataloader \(\d+ workers\): ours train '
                     rf'{NUMBER} s/step', out), out
    m = re.search(rf'data loading .*: {NUMBER} images/s .* = {NUMBER}x '
                  r"ours' training consumption", out)
    assert m and float(m.group(1)) > 0, out
    # counted FLOPs (not timings): ours skips the padding, the repeated
    # prompt prefix and, in evaluation, the text tower altogether
    flops = {k: float(g) for k, g, _ in re.findall(
        rf'(\w+ \w+) {FLOAT} GFLOP = {FLOAT} TFLOP/s', out)}
    assert set(flops) == {'ours train', 'baseline train', 'ours eval',
                          'baseline eval'}, out
    assert 0 < flops['ours train'] < flops['baseline train'] / 2
    assert 0 < flops['ours eval'] < flops['baseline eval'] / 2
    assert len(re.findall(r'\(MFU \d+(?:\.\d+)?%\)', out)) == 4, out


def test_benchmark_parity_fails_when_the_math_differs(tool):
    proc = tool(ARGS + ['--perturb-baseline', '0.01', '--memory', 'none',
                        '--no-dataloader'], check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(r'^parity .*: FAIL$', proc.stdout, re.M), proc.stdout
    assert 'train s/step' not in proc.stdout


def _benchmark_module():
    from lmclip_tools.analysis import benchmark
    return benchmark


def test_benchmark_data_dir_defaults_inside_the_repository(tmp_path, capsys):
    import os.path as osp

    mod = _benchmark_module()
    # no default points outside the repository
    assert osp.commonpath([mod.REPO_DATA, mod.REPO]) == mod.REPO
    args = mod.parse_args(['--classes', '20'])
    assert args.data_dir in (None, mod.REPO_DATA)
    if args.data_dir is None:
        assert not osp.isfile(osp.join(mod.REPO_DATA, mod.TRAIN_SPLITS[20][1]))
    # an explicit folder must exist and hold the split
    with pytest.raises(SystemExit) as exc:
        mod.parse_args(['--data-dir', str(tmp_path / 'nope')])
    assert exc.value.code == 2
    assert 'nope: no such folder' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mod.parse_args(['--classes', '80', '--data-dir', str(tmp_path)])
    err = capsys.readouterr().err
    assert 'coco_mlt/longtail2017/coco_lt_train.txt' in err
    assert 'COCO-MLT train split' in err
    split = tmp_path / 'voc_mlt' / 'longtail2012' / 'voc_lt_train.txt'
    split.parent.mkdir(parents=True)
    split.write_text('a.jpg 0\n')
    assert mod.parse_args(['--data-dir', str(tmp_path), '--classes',
                           '20']).data_dir == str(tmp_path)


DATA_ARGS = [
    'analysis/benchmark.py', '--part', 'data', '--data-train-images', '100',
    '--data-test-images', '60', '--data-rounds', '2',
    '--data-round-images', '6', '--protocol-epochs', '2', '--data-workers',
    '2'
]
DATA_ROWS = ('paper __getitem__', 'mmcv LoadImageFromFile + Resize (before)',
             'ours, first pass (LoadResizedImage)',
             'ours, repeated pass (image cache)',
             'ours, cache fill in 1 process (first pass, cached)')


def test_benchmark_data_part_prints_every_figure(tool):
    """--part data: per-core rows against the paper's __getitem__ for both
    splits, the goals, the protocol epochs, its total and the workers'
    cache memory; only printed figures are checked, never speeds."""
    out = tool(DATA_ARGS, timeout=900).stdout
    assert 'machine:' in out and 'scikit-learn' in out
    for split in ('train', 'test'):
        block = out.split(f'per core, {split} split', 1)[1]
        for row in DATA_ROWS:
            m = re.search(rf'^  {re.escape(row)}\s+{NUMBER} images/s\s+'
                          rf'{NUMBER}x$', block, re.M)
            assert m, f'no row {row!r} in:\n{out}'
            assert float(m.group(1)) > 0
        assert re.search(r'^  paper __getitem__\s+\S+ images/s\s+1\.00x$',
                         block, re.M)
    assert re.search(r'^goals per core: first pass >= 1\.0x: (met|NOT met) '
                     rf'\({NUMBER}x\); repeated pass >= 20x: (met|NOT met)',
                     out, re.M), out
    assert len(re.findall(r'^  epoch \d/2: paper \S+ s, ours \S+ s', out,
                          re.M)) == 2, out
    assert re.search(rf'^paper protocol data work: paper {NUMBER} s, ours '
                     rf'{NUMBER} s \(the cache fill included\) = {NUMBER} ',
                     out, re.M), out
    m = re.search(rf'cache pages in the 2 persistent train loader workers: '
                  rf'RSS summed {NUMBER} MiB, PSS summed {NUMBER} MiB', out)
    assert m, out
    rss, pss = map(float, m.groups())
    assert pss <= rss  # shared pages: PSS divides them between workers
