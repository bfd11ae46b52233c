# Copyright (c) lmclip_mm authors.
"""Is my install healthy? Compare a quickstart run with the measured band.

    python tools/analysis/check_quickstart.py [WORK_DIR]

Reads the last evaluation of ``python tools/train.py
configs/lmclip_toy_mlt_tiny.py`` (default work dir
``work_dirs/lmclip_toy_mlt_tiny``) and says whether its mAP lies in the
band that runs of the unchanged quickstart reached. The result is exact for
one machine and thread count, but the CPU's kernels (AVX2 or not, oneDNN,
MKL) and the number of threads change the float32 rounding, which 30 epochs
of training amplify: on one 2-core AMD EPYC, runs with 1 or 2 threads and
forced-down instruction sets ended between 74.24 and 78.90 mAP (tail 69.62
to 74.41). A run well below the band (chance is about 8.7) means something
is broken. Exit status 0 inside the band, 1 outside it.
"""
import argparse
import glob
import json
import os.path as osp
import sys

#: the band accepted (a margin around what was measured)
BAND = dict(mAP=(72.0, 81.0), mAP_tail=(65.0, 78.0))
#: what was measured (README "Quickstart")
MEASURED = dict(mAP=(74.24, 78.90), mAP_tail=(69.62, 74.41))
EPOCHS = 30


def last_evaluation(work_dir: str) -> dict:
    """The last ``long-tail/*`` record of the newest run in ``work_dir``."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data',
                                     'scalars.json')))
    if not runs:
        raise FileNotFoundError(
            f'no run in {work_dir} (its <timestamp>/vis_data/scalars.json): '
            'train first: python tools/train.py '
            'configs/lmclip_toy_mlt_tiny.py')
    with open(runs[-1], encoding='utf-8') as f:
        records = [json.loads(line) for line in f if line.strip()]
    evals = [r for r in records if 'long-tail/mAP' in r]
    if not evals:
        raise ValueError(f'{runs[-1]} holds no evaluation yet')
    return evals[-1]


def check(record: dict) -> tuple:
    """``(healthy, lines)`` of one evaluation record."""
    step = record.get('step')
    lines, healthy = [], True
    if step != EPOCHS:
        lines.append(f'note: this evaluation is of epoch {step}; the band '
                     f'is for the quickstart\'s epoch {EPOCHS}')
    for key, (low, high) in BAND.items():
        value = record[f'long-tail/{key}']
        inside = low <= value <= high
        healthy = healthy and inside
        m_low, m_high = MEASURED[key]
        where = 'inside' if inside else 'OUTSIDE'
        lines.append(f'{key:<9s} {value:6.2f}  {where} the band '
                     f'{low:.0f}-{high:.0f} (measured {m_low:.2f}-'
                     f'{m_high:.2f})')
    lines.append('healthy: the run trains as the quickstart does'
                 if healthy else
                 'NOT healthy: this run does not train as the quickstart '
                 'does (changed config? broken install?)')
    return healthy, lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('work_dir', nargs='?',
                        default='work_dirs/lmclip_toy_mlt_tiny')
    args = parser.parse_args(argv)
    try:
        record = last_evaluation(args.work_dir)
    except (FileNotFoundError, ValueError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    healthy, lines = check(record)
    print('\n'.join(lines))
    return 0 if healthy else 1


def cli():
    """``python tools/analysis/check_quickstart.py``."""
    sys.exit(main())


if __name__ == '__main__':
    cli()
