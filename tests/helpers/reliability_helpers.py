"""Test-only components for the reliability tests (exact resume, atomic
checkpoints, divergence). Importable in-process and by
training subprocesses (``custom_imports``; see ``lmclip_testing``)."""
import os
import random
import signal

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmpretrain.registry import DATASETS, HOOKS, METRICS, MODELS

from lmclip_mm.fileio import AtomicLocalBackend
from mmengine.fileio import LocalBackend, register_backend


@DATASETS.register_module(force=True)
class RandomAugDataset:
    """Fixed features; ``__getitem__`` adds noise from python's, numpy's and
    torch's global RNGs (like random transforms in the main process)."""

    metainfo = dict(classes=('a', 'b'))

    def __init__(self, n=10, dim=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def get_cat_ids(self, idx):
        return [int(self.y[idx])]

    def __getitem__(self, idx):
        x = self.x[idx].clone()
        x += 0.1 * float(np.random.rand())      # numpy (mmcv transforms)
        x += 0.1 * random.random()              # python
        x += 0.1 * torch.rand(()).item()        # torch
        if np.random.rand() < 0.5:              # a "flip"
            x = x.flip(0)
        return dict(inputs=x, labels=self.y[idx])


@MODELS.register_module(force=True)
class ToyNet(BaseModel):
    """Linear model with dropout (torch RNG in the forward pass)."""

    def __init__(self, dim=6, nan_at_iter=None, inf_grad_at_iter=None,
                 nan_rank=None):
        super().__init__()
        self.nan_rank = nan_rank
        self.fc = torch.nn.Linear(dim, 2)
        self.drop = torch.nn.Dropout(0.3)
        self.nan_at_iter = nan_at_iter
        self.inf_grad_at_iter = inf_grad_at_iter
        self.calls = 0

    def forward(self, inputs, labels=None, mode='tensor'):
        if isinstance(inputs, (list, tuple)):
            inputs = torch.stack(list(inputs))
        logits = self.fc(self.drop(inputs))
        if mode == 'loss':
            self.calls += 1
            from mmengine.logging import MessageHub
            it = MessageHub.get_current_instance().get_info('iter', 0) + 1
            loss_ce = torch.nn.functional.cross_entropy(logits, labels)
            loss_aux = 0.01 * logits.pow(2).mean()
            from mmengine.dist import get_rank
            if self.nan_at_iter is not None and it in self.nan_at_iter and \
                    self.nan_rank in (None, get_rank()):
                loss_aux = loss_aux * float('nan')
            if self.inf_grad_at_iter is not None and \
                    it in self.inf_grad_at_iter:
                # finite value, infinite gradient: d sqrt(x)/dx at 0
                loss_aux = loss_aux + torch.sqrt(
                    (self.fc.weight * 0).sum().abs())
            return dict(loss_ce=loss_ce, loss_aux=loss_aux,
                        acc=(logits.argmax(1) == labels).float().mean())
        if mode == 'predict':
            return [dict(pred=p, gt=t) for p, t in zip(logits.argmax(1),
                                                       labels)]
        return logits


@METRICS.register_module(force=True)
class ToyAccuracy(BaseMetric):

    def process(self, data_batch, data_samples):
        for s in data_samples:
            self.results.append(float(s['pred'] == s['gt']))

    def compute_metrics(self, results):
        return dict(acc=sum(results) / max(len(results), 1))


@HOOKS.register_module(force=True)
class InterruptAtIterHook(Hook):
    """Stops the process after iteration ``at`` (1-based; with
    ``epoch=True`` after epoch ``at``) was checkpointed, or with
    ``before=True`` in the middle of iteration ``at`` (its batch loaded, not
    trained): ``mode='raise'`` raises KeyboardInterrupt, ``'kill'``
    SIGKILLs the process."""

    priority = 'LOWEST'  # after CheckpointHook

    def __init__(self, at, mode='raise', epoch=False, before=False):
        self.at = at
        self.mode = mode
        self.epoch = epoch
        self.before = before

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if self.before and runner.iter + 1 == self.at:
            self._stop()

    def _stop(self):
        if self.mode == 'kill':
            os.kill(os.getpid(), signal.SIGKILL)
        raise KeyboardInterrupt(f'interrupted after {self.at}')

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        if not self.epoch and not self.before and runner.iter + 1 == self.at:
            self._stop()

    def after_train_epoch(self, runner):
        if self.epoch and runner.epoch + 1 == self.at:
            self._stop()


def _kill_mid_write(fd, data, counter_env='LMCLIP_TEST_KILL_AT_WRITE'):
    """Write half of ``data``, then SIGKILL this process when the write
    count reaches $LMCLIP_TEST_KILL_AT_WRITE (a file holds the count)."""
    target = int(os.environ.get(counter_env, '0'))
    count_file = os.environ.get('LMCLIP_TEST_WRITE_COUNT_FILE')
    count = 0
    if count_file:
        if os.path.exists(count_file):
            count = int(open(count_file).read() or 0)
        count += 1
        with open(count_file, 'w') as f:
            f.write(str(count))
    if target and count == target:
        half = len(data) // 2
        os.write(fd, data[:half])
        os.fsync(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class KillingAtomicBackend(AtomicLocalBackend):
    """The atomic backend, killed in the middle of its N-th write."""

    def _write_payload(self, fd, data):
        _kill_mid_write(fd, data)


class KillingPlainBackend(LocalBackend):
    """mmengine's plain in-place write, killed in the middle of its N-th
    write (the control: what happens without the atomic backend)."""

    def put(self, obj, filepath):
        os.makedirs(os.path.dirname(filepath), exist_ok=True)
        fd = os.open(filepath, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _kill_mid_write(fd, obj)
        finally:
            os.close(fd)

    def put_text(self, obj, filepath, encoding='utf-8'):
        self.put(obj.encode(encoding), filepath)


register_backend('test_killing_atomic', KillingAtomicBackend, force=True)
register_backend('test_killing_plain', KillingPlainBackend, force=True)
