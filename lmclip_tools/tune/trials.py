# Copyright (c) lmclip_mm authors.
"""What both backends share about a trial process: its report file, its
checkpoints, its error line, its process and the tuner's log lines."""
import json
import logging
import os
import os.path as osp
import re
import signal
import socket
import sys
from contextlib import contextmanager

from .space import TuneError

#: failures of one trial that do not stop the study
TRIAL_ERRORS = ('TrainingDivergedError', 'OutOfMemoryError',
                'CUDA out of memory')
HOST = socket.gethostname()

#: how a trial trains: this package's ``tools/train.py``
TRAIN_CMD = (sys.executable, '-m', 'lmclip_tools.train')
#: a trial's output, in its folder
TRIAL_LOG = 'tune_trial.log'


class TrialFailed(Exception):
    """A trial that failed by itself (diverged, out of memory)."""


class TrialCrashed(TuneError):
    """A trial that failed for another reason (a config error would fail
    every trial): the study stops, with one ``error:`` line."""


def read_report(trial_dir):
    path = osp.join(trial_dir, 'trial_report.json')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def trial_row(number, state, report, params, seconds=None, note='',
              work_dir=None, metric=None):
    """One trial of the table and ``trials.csv``, alike for both backends:
    its value, the epoch it comes from and its last metric are the trial's
    report file's (see ``TrialReportHook``), so the table shows the value
    the pruner was given and the log printed."""
    report = report or {}
    history = report.get('history') or []
    return dict(
        trial=number, state=state, value=report.get('value'),
        value_epoch=report.get('value_epoch'), last=report.get('last'),
        epochs=history[-1][0] if history else None,
        seconds=None if seconds is None else round(float(seconds), 1),
        params=dict(params), note=note,
        metric=report.get('metric') or metric, work_dir=work_dir)


def report_state(report, max_epochs):
    """'PRUNED' for a report that ended before ``max_epochs``, else
    'COMPLETE'."""
    return 'PRUNED' if report['history'][-1][0] < max_epochs else 'COMPLETE'


def trial_error(trial_dir):
    """``(log path, error line)`` of a failed trial, from its log."""
    path = osp.join(trial_dir, TRIAL_LOG)
    if not osp.isfile(path):
        return path, '(no trial log)'
    with open(path, errors='replace') as f:
        return path, error_line(f.read())


def failed_line(number, reason, log_path, seconds=None):
    """The tuner's log line for a trial that failed."""
    took = '' if seconds is None else f' after {seconds:.1f} s'
    return f'trial {number} failed{took}: {reason} (log: {log_path})'


def outcome_line(number, state, report, seconds, max_epochs):
    """The tuner's log line for a trial that ended with a report."""
    epochs = report['history'][-1][0]
    where = f'epoch {epochs}' if report['objective'] == 'last' or \
        epochs == 1 else \
        f'best of epochs 1-{epochs}, at epoch {report["value_epoch"]}'
    if seconds is not None:
        where += f'; {seconds:.1f} s'
    what = f'pruned after epoch {epochs} of {max_epochs}' \
        if state == 'PRUNED' else 'complete'
    return (f'trial {number} {what}: {report["metric"]}='
            f'{report["value"]:.4f} ({where})')


def prune_checkpoints(trial_dir):
    """Delete a finished trial's epoch/iter checkpoints (the best ones by
    the tuned metric stay)."""
    for name in os.listdir(trial_dir):
        if re.fullmatch(r'(epoch|iter)_\d+\.pth', name) or \
                name == 'last_checkpoint':
            os.remove(osp.join(trial_dir, name))


def error_line(log_text):
    """The last exception line of a log ('TypeName: message')."""
    lines = [x.strip() for x in log_text.splitlines() if x.strip()]
    for line in reversed(lines):
        m = re.match(r'^(?:error: )?([A-Za-z_][\w.]*(?:Error|Exception|'
                     r'Interrupt)): (.*)$', line)
        if m:
            return f'{m.group(1).rsplit(".", 1)[-1]}: {m.group(2)}'
    for line in reversed(lines):  # a tool's one-line error
        if line.startswith('error: '):
            return line[len('error: '):]
    return lines[-1] if lines else '(no output)'


def is_trial_error(message):
    return any(x in message for x in TRIAL_ERRORS)


# -- processes ----------------------------------------------------------------
def _die_with_parent():  # pragma: no cover - runs in the child
    """Linux: the trial process is killed when the tuner dies (SIGKILL
    included), so a killed study leaves no orphan training."""
    try:
        import ctypes
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def process_token(pid):
    """``pid`` and its start time (None when no such process): a reused pid
    is another token."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f'{pid}:{f.read().rsplit(")", 1)[1].split()[19]}'
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return str(pid)


def log(msg):
    print(f'[tune] {msg}', flush=True)


@contextmanager
def dropped_log_records(logger_names, prefixes):
    """Leave out the records of the loggers ``logger_names`` whose message
    starts with one of ``prefixes`` (a backend's lines that say again what
    the tuner's ``[tune]`` lines and table say)."""
    def keep(record):
        return not str(record.msg).startswith(tuple(prefixes))

    loggers = [logging.getLogger(name) for name in logger_names]
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(keep)
