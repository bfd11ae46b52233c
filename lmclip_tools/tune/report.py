# Copyright (c) lmclip_mm authors.
"""The end of a study: the table of trials, ``trials.csv`` and
``best_config.py``."""
import csv
import json
import math
import os.path as osp

from .space import _fmt, space_keys
from .trial_config import write_best_config
from .trials import log


def best_row(rows, mode):
    done = [r for r in rows if r['state'] == 'COMPLETE'
            and r['value'] is not None and not math.isnan(r['value'])]
    if not done:
        return None
    pick = max if mode == 'max' else min
    return pick(done, key=lambda r: r['value'])


def format_table(rows, metric, best=None):
    names = []
    for r in rows:
        names += [k for k in r['params'] if k not in names]
    header = ['trial', 'state', metric, 'epochs', 'time (s)'] + names + \
        ['note']
    body = []
    for r in rows:
        mark = '*' if best is not None and r is best else ''
        value = '' if r['value'] is None else f'{r["value"]:.2f}' \
            if abs(r['value']) >= 1 else f'{r["value"]:.4f}'
        body.append([f'{r["trial"]}{mark}', r['state'], value,
                     '' if r['epochs'] is None else str(r['epochs']),
                     '' if r['seconds'] is None else f'{r["seconds"]:.1f}'] +
                    [_fmt(r['params'][n]) if n in r['params'] else ''
                     for n in names] + [r['note'][:60]])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'
    out = [line, '| ' + ' | '.join(h.ljust(w) for h, w in
                                   zip(header, widths)) + ' |', line]
    out += ['| ' + ' | '.join(str(c).ljust(w) for c, w in zip(row, widths))
            + ' |' for row in body]
    out.append(line)
    return '\n'.join(out)


def finish(args, base, tune, rows):
    work_dir = base.work_dir
    metric = next((r['metric'] for r in rows if r.get('metric')),
                  tune['metric'])
    best = best_row(rows, tune['mode'])
    print(f'\n{len(rows)} trials ({metric}, {tune["mode"]}imised on split '
          f'{tune["split"]!r}; * = best):', flush=True)
    print(format_table(rows, metric, best), flush=True)
    with open(osp.join(work_dir, 'trials.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        names = []
        for r in rows:
            names += [k for k in r['params'] if k not in names]
        writer.writerow(['trial', 'state', metric, 'epochs', 'seconds'] +
                        names + ['note', 'work_dir'])
        for r in rows:
            writer.writerow([r['trial'], r['state'], r['value'], r['epochs'],
                             r['seconds']] +
                            [r['params'].get(n) for n in names] +
                            [r['note'], r['work_dir']])
    if best is None:
        log('no trial completed: no best config written')
        return None
    path = osp.join(work_dir, 'best_config.py')
    header = [
        f'Best of {len(rows)} trials of tools/tune.py {args.config}',
        f'trial {best["trial"]} ({best["work_dir"]}): {metric} = '
        f'{best["value"]:.4f} on split {tune["split"]!r}',
    ] + [f'  {name} = {_fmt(value)}  ->  '
         f'{", ".join(space_keys(name, tune["space"][name]))}'
         for name, value in best['params'].items()] + [
        'Train it: python tools/train.py <this file> (into best_train/ '
        'beside it)', '']
    write_best_config(base, tune, best['params'], path, header)
    record = osp.join(work_dir, 'best_trial.json')
    with open(record, 'w', encoding='utf-8') as f:
        json.dump(dict(trial=best['trial'], state=best['state'],
                       metric=metric, value=best['value'],
                       mode=tune['mode'], split=tune['split'],
                       params=best['params'], epochs=best['epochs'],
                       work_dir=best['work_dir'], of_trials=len(rows),
                       config=osp.abspath(args.config),
                       cfg_options=getattr(args, 'cfg_options', None)),
                  f, indent=2, default=str)
    log(f'best: trial {best["trial"]}, {metric}={best["value"]:.4f}; '
        f'config written to {path}, the winner recorded in {record}')
    return path
