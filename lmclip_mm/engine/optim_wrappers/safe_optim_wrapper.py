# Copyright (c) lmclip_mm authors.
"""OptimWrapper that refuses to step with non-finite losses or gradients."""
from contextlib import contextmanager
from typing import Dict, List, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_rank, get_world_size
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS
from mmpretrain.utils import get_ori_model

ON_NONFINITE = ('stop', 'skip')


class TrainingDivergedError(FloatingPointError):
    """Raised when training produced a non-finite loss or gradient."""


class _LossRecorder:
    """Stands in for ``model.parse_losses`` and keeps its ``log_vars``."""

    _lmclip_loss_recorder = True

    def __init__(self, parse_losses, sink) -> None:
        self.parse_losses = parse_losses
        self.sink = sink

    def __call__(self, losses):
        loss, log_vars = self.parse_losses(losses)
        self.sink._last_terms = log_vars
        return loss, log_vars


def _format_value(value) -> str:
    try:
        v = float(value.detach().float().mean()) if torch.is_tensor(value) \
            else float(value)
    except (TypeError, ValueError, RuntimeError):
        return repr(value)
    return f'{v:.4g}'


def _total_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    get_total_norm = getattr(torch.nn.utils, 'get_total_norm', None)
    if get_total_norm is not None:  # torch >= 2.6
        return get_total_norm(grads, 2.0)
    device = grads[0].device
    return torch.linalg.vector_norm(
        torch.stack([
            torch.linalg.vector_norm(g, 2.0, dtype=torch.float32).to(device)
            for g in grads
        ]), 2.0)


class SafeOptimWrapperMixin:
    """Checks the loss and the gradients before every optimizer step.

    See :class:`SafeOptimWrapper`. Mixed into an :class:`OptimWrapper`
    subclass (``class X(SafeOptimWrapperMixin, SomeOptimWrapper)``).
    """

    def __init__(self,
                 *args,
                 on_nonfinite: str = 'stop',
                 max_consecutive_skips: Optional[int] = 10,
                 check_grads: bool = True,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(f'on_nonfinite must be one of {ON_NONFINITE}, '
                             f'got {on_nonfinite!r}')
        if max_consecutive_skips is not None and (
                isinstance(max_consecutive_skips, bool)
                or not isinstance(max_consecutive_skips, int)
                or max_consecutive_skips < 0):
            raise ValueError('max_consecutive_skips must be an int >= 0 or '
                             f'None, got {max_consecutive_skips!r}')
        self.on_nonfinite = on_nonfinite
        self.max_consecutive_skips = max_consecutive_skips
        self.check_grads = check_grads
        #: optimizer steps skipped in a row / in total
        self.consecutive_skips = 0
        self.total_skips = 0
        self._last_terms: Optional[Dict] = None
        self._module: Optional[torch.nn.Module] = None
        self._window: List[dict] = []  # micro-steps since the last update

    # -- getting the loss terms -----------------------------------------------
    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        self._watch(model)
        with super().optim_context(model):
            yield

    def _watch(self, model: torch.nn.Module) -> None:
        module = get_ori_model(model)
        self._module = module
        current = module.__dict__.get('parse_losses')
        if getattr(current, '_lmclip_loss_recorder', False):
            current.sink = self
            return
        parse_losses = getattr(module, 'parse_losses', None)
        if callable(parse_losses):
            module.__dict__['parse_losses'] = _LossRecorder(
                parse_losses, self)

    # -- the check ----------------------------------------------------------
    def update_params(  # type: ignore
            self,
            loss: torch.Tensor,
            step_kwargs: Optional[Dict] = None,
            zero_kwargs: Optional[Dict] = None) -> None:
        step_kwargs = step_kwargs or {}
        zero_kwargs = zero_kwargs or {}
        terms, self._last_terms = self._last_terms, None
        loss_finite = torch.isfinite(loss.detach()).all()
        self._window.append(
            dict(where=self._where(), terms=terms, loss=loss.detach(),
                 finite=loss_finite))
        # Backward also for a bad loss: every rank must join DDP's gradient
        # reduction; the gradients are dropped below.
        loss = self.scale_loss(loss)
        self.backward(loss)
        if not self.should_update():
            return
        window, self._window = self._window, []
        ok = torch.stack([m['finite'] for m in window]).all()
        grad_ok, grad_norm = None, None
        if self.check_grads:
            grad_ok, grad_norm = self._grads_finite()
            if grad_ok is not None:
                ok = ok & grad_ok.to(ok.device)
        if self._all_ranks_ok(ok):
            self.step(**step_kwargs)
            self.zero_grad(**zero_kwargs)
            self.consecutive_skips = 0
            return
        reason = self._reason(window, grad_ok, grad_norm)
        self.zero_grad(**zero_kwargs)
        if self.on_nonfinite == 'skip':
            self.consecutive_skips += 1
            self.total_skips += 1
            limit = self.max_consecutive_skips
            if limit is None or self.consecutive_skips <= limit:
                print_log(
                    f'Skipped the optimizer step: {reason}. Gradients '
                    f'zeroed ({self.consecutive_skips} consecutive skip(s)'
                    f'{"" if limit is None else f", at most {limit}"}; '
                    f'{self.total_skips} in total).',
                    logger='current', level=30)
                return
            message = (f'Training diverged: {reason}; '
                       f'{self.consecutive_skips} optimizer steps in a row '
                       'had non-finite values (max_consecutive_skips='
                       f'{limit}). The optimizer was not stepped with these '
                       'gradients; no checkpoint was saved for this '
                       'iteration.')
        else:
            message = (f'Training diverged: {reason}. The optimizer was not '
                       'stepped with these gradients and no checkpoint was '
                       'saved for this iteration: the last checkpoint on '
                       'disk is from before it. (Set on_nonfinite=\'skip\' '
                       'in optim_wrapper to skip such steps instead.)')
        print_log(message, logger='current', level=40)
        raise TrainingDivergedError(message)

    def _grads_finite(self):
        grads = [
            p.grad.detach() for group in self.optimizer.param_groups
            for p in group['params'] if p.grad is not None
        ]
        if not grads:
            return None, None
        norm = _total_norm(grads)
        return torch.isfinite(norm), norm

    @staticmethod
    def _all_ranks_ok(ok: torch.Tensor) -> bool:
        if get_world_size() > 1 and torch_dist.is_available() and \
                torch_dist.is_initialized():
            flag = ok.to(torch.int32)
            if torch_dist.get_backend() == 'nccl' and flag.device.type != \
                    'cuda':
                flag = flag.cuda()
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MIN)
            return bool(flag.item())
        return bool(ok.item())

    def _where(self) -> str:
        info = self.message_hub.runtime_info
        if 'iter' not in info:
            return f'update {self._inner_count + 1}'
        where = f'iteration {int(info["iter"]) + 1}'
        if 'epoch' in info and info.get('max_epochs') is not None and \
                info.get('loop_stage', 'train') == 'train':
            where += f' (epoch {int(info["epoch"]) + 1})'
        if get_world_size() > 1:
            where += f' on rank {get_rank()}'
        return where

    @staticmethod
    def _terms(record) -> str:
        terms = record['terms']
        if not terms:
            return f'loss={_format_value(record["loss"])}'
        return ', '.join(f'{k}={_format_value(v)}' for k, v in terms.items())

    def _reason(self, window, grad_ok, grad_norm) -> str:
        bad = [m for m in window if not bool(m['finite'])]
        if bad:
            first = bad[0]
            return (f'non-finite loss at {first["where"]}: '
                    f'{self._terms(first)}')
        last = window[-1]
        if grad_ok is not None and not bool(grad_ok):
            hint = '' if get_world_size() == 1 else (
                ' (gradients are averaged over the processes: the cause '
                'may be in another one)')
            return (f'non-finite gradients at {last["where"]} (total grad '
                    f'norm {_format_value(grad_norm)}{self._bad_params()})'
                    f'{hint}; loss terms: {self._terms(last)}')
        return (f'another process had a non-finite loss or gradient at '
                f'{last["where"]}; loss terms here: {self._terms(last)}')

    def _bad_params(self) -> str:
        names = {}
        if self._module is not None:
            names = {id(p): n for n, p in self._module.named_parameters()}
        bad = [
            names.get(id(p), f'<param {i}>') for i, p in enumerate(
                p for group in self.optimizer.param_groups
                for p in group['params'])
            if p.grad is not None and not bool(torch.isfinite(p.grad).all())
        ]
        if not bad:
            return ''
        more = f' (+{len(bad) - 5} more)' if len(bad) > 5 else ''
        return f'; non-finite in {", ".join(bad[:5])}{more}'


@OPTIM_WRAPPERS.register_module()
class SafeOptimWrapper(SafeOptimWrapperMixin, OptimWrapper):
    """:class:`~mmengine.optim.OptimWrapper` that guards against divergence.

    Before every optimizer step it checks that the loss of each accumulated
    iteration and the total gradient norm are finite (one host sync per
    step; with several processes the decision is all-reduced so that all
    ranks act alike). When they are not:

    * ``on_nonfinite='stop'`` (default): raises
      :class:`TrainingDivergedError` naming the iteration, the epoch and every
      loss term (``log_vars`` of ``model.parse_losses``, e.g.
      ``non-finite loss at iteration 57 (epoch 3): loss=nan, loss_bal=nan,
      loss_contrastive=1.23``) or the parameters with non-finite gradients.
      The optimizer is not stepped, and since the error leaves
      ``train_step`` before ``after_train_iter``, no checkpoint is written
      for that iteration: the last checkpoint on disk is the last good one.
    * ``on_nonfinite='skip'``: logs a warning with the same details, zeroes
      the gradients and continues; after ``max_consecutive_skips``
      consecutive skipped steps the next one stops as above (``None``: no
      limit).

    Works with any model whose ``train_step`` calls ``self.parse_losses``
    (every mmengine ``BaseModel``; the terms are recorded by wrapping the
    model's ``parse_losses`` when :meth:`optim_context` is entered; other
    models get the total loss only). Config::

        optim_wrapper = dict(type='SafeOptimWrapper', on_nonfinite='stop',
                             optimizer=dict(type='AdamW', lr=1e-4))

    Args:
        on_nonfinite (str): ``'stop'`` or ``'skip'``.
        max_consecutive_skips (int, optional): see above. Defaults to 10.
        check_grads (bool): also check the gradient norm. Defaults to True.
        **kwargs: :class:`~mmengine.optim.OptimWrapper`'s arguments.
    """
