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
    """The winner: the best value of the trials that ran the whole schedule
    (the one ``best_config.py`` trains). A pruned trial's value is the one
    it was pruned with, from fewer epochs: listed, not a candidate."""
    done = [r for r in rows if r['state'] == 'COMPLETE'
            and r['value'] is not None and not math.isnan(r['value'])]
    if not done:
        return None
    pick = max if mode == 'max' else min
    return pick(done, key=lambda r: r['value'])


def _num(value):
    if value is None:
        return ''
    return f'{value:.2f}' if abs(value) >= 1 else f'{value:.4f}'


def _opt(value):
    return '' if value is None else str(value)


def param_names(rows):
    names = []
    for r in rows:
        names += [k for k in r['params'] if k not in names]
    return names


def format_table(rows, metric, best=None):
    names = param_names(rows)
    header = ['trial', 'state', metric, 'at epoch', 'last', 'epochs',
              'time (s)'] + names + ['note']
    body = []
    for r in rows:
        mark = '*' if best is not None and r is best else ''
        body.append([f'{r["trial"]}{mark}', r['state'], _num(r['value']),
                     _opt(r['value_epoch']), _num(r['last']),
                     _opt(r['epochs']),
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
    value = 'the best of the epochs it ran' if tune['objective'] == 'best' \
        else 'its last epoch\'s'
    print(f'\n{len(rows)} trials ({metric}, {tune["mode"]}imised on split '
          f'{tune["split"]!r}). A trial\'s value is {value} (tune.objective='
          f'{tune["objective"]!r}); a pruned trial shows the value it was '
          'pruned with. * = best complete trial:', flush=True)
    print(format_table(rows, metric, best), flush=True)
    with open(osp.join(work_dir, 'trials.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        names = param_names(rows)
        writer.writerow(['trial', 'state', metric, 'at_epoch', 'last',
                         'epochs', 'seconds'] + names + ['note', 'work_dir'])
        for r in rows:
            writer.writerow([r['trial'], r['state'], r['value'],
                             r['value_epoch'], r['last'], r['epochs'],
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
        f'{best["value"]:.4f} on split {tune["split"]!r} '
        f'({tune["objective"]} epoch: {best["value_epoch"]})',
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
                       value_epoch=best['value_epoch'],
                       objective=tune['objective'],
                       mode=tune['mode'], split=tune['split'],
                       params=best['params'], epochs=best['epochs'],
                       work_dir=best['work_dir'], of_trials=len(rows),
                       config=osp.abspath(args.config),
                       cfg_options=getattr(args, 'cfg_options', None)),
                  f, indent=2, default=str)
    log(f'best: trial {best["trial"]}, {metric}={best["value"]:.4f}; '
        f'config written to {path}, the winner recorded in {record}')
    return path
