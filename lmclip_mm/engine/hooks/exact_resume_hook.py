# Copyright (c) lmclip_mm authors.
"""Resume training exactly where a checkpoint left it."""
import random
from typing import Any, Dict, Optional

import numpy as np
import torch
from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

STATE_KEY = 'exact_resume'
STATE_VERSION = 1

#: samplers with the resume API (``set_start_index``/``num_samples``)
SUPPORTED_SAMPLERS = ('ClassAwareRepeatSampler', 'ResumableDefaultSampler')


class ExactResumeError(RuntimeError):
    """A checkpoint cannot be resumed exactly (and ``strict=True``)."""


def capture_rng_state() -> Dict[str, Any]:
    """The global RNG states of python, numpy, torch (CPU and CUDA)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state = dict(
        python=dict(
            version=version,
            state=torch.tensor(internal, dtype=torch.int64),
            gauss=gauss),
        numpy=dict(
            bit_generator=np_state['bit_generator'],
            key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
            pos=int(np_state['state']['pos']),
            has_gauss=int(np_state['has_gauss']),
            gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any], logger=None) -> None:
    """Set the global RNGs to a :func:`capture_rng_state` result."""
    py = state['python']
    random.setstate((py['version'], tuple(int(x) for x in py['state']),
                     py['gauss']))
    npy = state['numpy']
    np.random.set_state(
        dict(
            bit_generator=npy['bit_generator'],
            state=dict(
                key=npy['key'].numpy().astype(np.uint32), pos=npy['pos']),
            has_gauss=npy['has_gauss'],
            gauss=npy['gauss']))
    torch.set_rng_state(state['torch'])
    cuda = state.get('cuda')
    if cuda is not None:
        if torch.cuda.is_available() and \
                torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        elif logger is not None:
            seen = torch.cuda.device_count() if torch.cuda.is_available() \
                else 0
            logger.warning(
                'ExactResumeHook: the checkpoint holds the RNG states of '
                f'{len(cuda)} CUDA devices, this process sees {seen}; the '
                'CUDA RNGs are not restored.')


def find_train_sampler(dataloader):
    """The sampler whose indices a train dataloader batches."""
    batch_sampler = getattr(dataloader, 'batch_sampler', None)
    inner = getattr(batch_sampler, 'sampler', None)
    for sampler in (getattr(dataloader, 'sampler', None), inner):
        if sampler is not None and hasattr(sampler, 'set_start_index'):
            return sampler
    return inner if inner is not None else getattr(dataloader, 'sampler',
                                                   None)


def _batch_size(dataloader) -> Optional[int]:
    if getattr(dataloader, 'batch_size', None) is not None:
        return dataloader.batch_size
    return getattr(getattr(dataloader, 'batch_sampler', None), 'batch_size',
                   None)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Make ``--resume`` continue training exactly where it stopped.

    mmengine saves the model, optimizer, schedulers and message hub, but
    neither the global RNG states nor the position of the train sampler, and
    its ``EpochBasedTrainLoop`` runs the whole epoch again after resuming
    from a checkpoint saved in the middle of an epoch (``CheckpointHook``
    with ``by_epoch=False``). This hook

    * adds to every checkpoint (``before_save_checkpoint``) the states of
      python's ``random``, numpy's global RNG, torch's CPU RNG and, when
      CUDA is initialised, every CUDA device's RNG, plus the position of
      training (epoch, batches done in it, batch size, world size);
    * on resume (``--resume``; not for ``load_from``) makes the train
      sampler yield only the indices the interrupted epoch had not consumed
      yet (the sampler needs the resume API: ``ClassAwareRepeatSampler`` or
      ``ResumableDefaultSampler`` in place of mmengine's ``DefaultSampler``)
      and restores the RNG states right before the first batch is loaded,
      so that data order, data augmentation (numpy/python/torch RNG in the
      main process) and any randomness of the model continue as if the run
      had not stopped;
    * gives the train sampler back the seed it had when the checkpoint was
      saved (with ``randomness=dict(seed=None)`` a resumed process builds
      its sampler with a new random seed before mmengine restores the
      checkpoint's seed);
    * runs validation with the RNG states saved before it and restores them
      afterwards (``isolate_val_rng``), so that training randomness does not
      depend on whether validation ran, which is what makes resuming from a
      checkpoint saved right before validation exact too.

    Guarantee: with ``randomness=dict(seed=S, deterministic=True)`` (``S``
    may be None), ``num_workers=0``, the same number of CPU threads and one
    process, a run
    interrupted at any point (SIGKILL included) and resumed from its last
    checkpoint ends with bit-identical weights, optimizer state and metrics
    as the uninterrupted run, on CPU (on GPU given deterministic kernels).

    Limits:

    * ``num_workers > 0``: sample order is still exact, but the workers'
      RNGs (which drive augmentation there) are seeded by mmengine's
      ``worker_init_fn`` when workers start and are not saved. Resuming at
      an epoch boundary is exact with non-persistent workers (they restart
      every epoch with the same seeds anyway); resuming mid-epoch, or with
      ``persistent_workers=True``, changes the augmentation randomness of
      the rest of that run.
    * several processes: positions are exact on every rank (same world size
      and batch size required); the RNG states are rank 0's (only rank 0
      saves) and are restored on every rank when ranks share the seed
      (``diff_rank_seed=False``), on rank 0 only otherwise.
    * ``EpochBasedTrainLoop`` only; other loops get a warning and mmengine's
      behaviour (``IterBasedTrainLoop`` already skips consumed batches but
      re-runs their augmentation).
    * checkpoints saved without this hook resume like mmengine (warning).

    Args:
        strict (bool): raise :class:`ExactResumeError` when a mid-epoch
            checkpoint cannot be resumed exactly (sampler without the resume
            API, different world size or batch size). With False, warn and
            fall back to mmengine's behaviour (the epoch runs again from its
            start). Defaults to True.
        isolate_val_rng (bool): see above. Defaults to True.
    """

    priority = 'LOW'  # after DistSamplerSeedHook, before CheckpointHook

    def __init__(self, strict: bool = True,
                 isolate_val_rng: bool = True) -> None:
        self.strict = strict
        self.isolate_val_rng = isolate_val_rng
        self._loaded: Optional[dict] = None
        self._loaded_meta: Optional[dict] = None
        self._pending_rng: Optional[dict] = None
        self._val_rng: Optional[dict] = None
        self._generator_epoch: Optional[int] = None
        self._saved_generator = None
        self._swapped = False

    # -- saving ------------------------------------------------------------
    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        rng = self._val_rng if self._val_rng is not None else \
            capture_rng_state()
        checkpoint[STATE_KEY] = dict(
            version=STATE_VERSION,
            rng=rng,
            progress=self._progress(runner, checkpoint.get('meta', {})))

    def _progress(self, runner, meta) -> Optional[dict]:
        loop = getattr(runner, '_train_loop', None)
        if not isinstance(loop, EpochBasedTrainLoop) or \
                'epoch' not in meta or 'iter' not in meta:
            return None
        iters_per_epoch = loop.max_iters // max(loop.max_epochs, 1)
        epoch, it = int(meta['epoch']), int(meta['iter'])
        done = it - epoch * iters_per_epoch
        if not 0 <= done <= iters_per_epoch:
            runner.logger.warning(
                f'ExactResumeHook: checkpoint at epoch {epoch}, iteration '
                f'{it} does not match {iters_per_epoch} iterations per '
                'epoch (was this run resumed without ExactResumeHook?); '
                'its sampler position is not saved.')
            return None
        dataloader = loop.dataloader
        sampler = find_train_sampler(dataloader)
        return dict(
            epoch=epoch,
            iter=it,
            batches_done=done,
            iters_per_epoch=iters_per_epoch,
            batch_size=_batch_size(dataloader),
            world_size=get_world_size(),
            sampler=type(sampler).__name__,
            sampler_seed=getattr(sampler, 'seed', None))

    # -- loading -----------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta', {})
        self._loaded = checkpoint.get(STATE_KEY)
        self._loaded_meta = dict(
            epoch=meta.get('epoch'), iter=meta.get('iter'))

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        loaded, meta = self._loaded, self._loaded_meta
        self._loaded = self._loaded_meta = None
        resuming = (meta is not None and getattr(runner, '_resume', False)
                    and runner.iter == meta['iter']
                    and runner.epoch == meta['epoch'])
        if not isinstance(loop, EpochBasedTrainLoop):
            runner.logger.warning(
                f'ExactResumeHook supports EpochBasedTrainLoop only, not '
                f'{type(loop).__name__}: resuming works as in mmengine.')
            return
        if not resuming:
            self._warn_unsupported_sampler(runner, loop)
            return
        if loaded is None:
            runner.logger.warning(
                'ExactResumeHook: the checkpoint has no exact-resume state '
                '(saved without ExactResumeHook): resuming as mmengine does '
                '(RNG states not restored, an interrupted epoch runs again '
                'from its start).')
            return
        progress = loaded.get('progress')
        self._restore_sampler_seed(runner, loop, progress)
        if progress is not None and progress['batches_done'] > 0:
            if not self._set_sampler_position(runner, loop, progress):
                return
            # The interrupted run created this epoch's dataloader iterator
            # (which draws a base seed from torch's global RNG) before the
            # checkpoint; do not draw it again from the restored RNG.
            self._generator_epoch = progress['epoch']
        self._pending_rng = loaded['rng']
        if get_world_size() > 1 and get_rank() != 0 and \
                runner._randomness_cfg.get('diff_rank_seed', False):
            runner.logger.warning(
                'ExactResumeHook: diff_rank_seed=True, the checkpoint holds '
                "rank 0's RNG states only: this rank's RNGs are not "
                'restored.')
            self._pending_rng = None
        where = 'the start of epoch' if not progress or \
            progress['batches_done'] == 0 else \
            f"batch {progress['batches_done']} of epoch"
        runner.logger.info(
            f'ExactResumeHook: resuming at {where} {runner.epoch + 1} '
            '(1-based), RNG states restored.')

    def _fail(self, runner, message: str) -> bool:
        if self.strict:
            raise ExactResumeError(message + ' (ExactResumeHook(strict='
                                   'False) falls back to mmengine\'s '
                                   'behaviour: the epoch runs again.)')
        runner.logger.warning(message + ' Resuming as mmengine does: the '
                              'interrupted epoch runs again from its start.')
        return False

    def _set_sampler_position(self, runner, loop, progress) -> bool:
        dataloader = loop.dataloader
        sampler = find_train_sampler(dataloader)
        world_size, batch_size = get_world_size(), _batch_size(dataloader)
        iters_per_epoch = loop.max_iters // max(loop.max_epochs, 1)
        if (progress['world_size'], progress['batch_size'],
                progress['iters_per_epoch']) != (world_size, batch_size,
                                                 iters_per_epoch):
            return self._fail(
                runner,
                'Cannot resume exactly in the middle of an epoch: the '
                f"checkpoint was saved with world size "
                f"{progress['world_size']}, batch size "
                f"{progress['batch_size']}, {progress['iters_per_epoch']} "
                f'iterations per epoch; this run has {world_size}, '
                f'{batch_size}, {iters_per_epoch}.')
        if sampler is None or not hasattr(sampler, 'set_start_index'):
            return self._fail(
                runner,
                'Cannot resume exactly in the middle of an epoch: the train '
                f'sampler {type(sampler).__name__} cannot start mid-epoch. '
                f'Use one of {", ".join(SUPPORTED_SAMPLERS)} (e.g. '
                "train_dataloader.sampler.type='ResumableDefaultSampler' in "
                "place of 'DefaultSampler'), or resume from an epoch "
                'checkpoint.')
        start = min(progress['batches_done'] * batch_size,
                    sampler.num_samples)
        sampler.set_start_index(start, progress['epoch'])
        return True

    @staticmethod
    def _restore_sampler_seed(runner, loop, progress) -> None:
        # With randomness=dict(seed=None) a resumed run draws a new seed and
        # builds its sampler with it before mmengine restores the
        # checkpoint's seed: the sample order would change from here on.
        seed = None if progress is None else progress.get('sampler_seed')
        sampler = find_train_sampler(loop.dataloader)
        current = getattr(sampler, 'seed', None)
        if seed is None or current is None or current == seed:
            return
        sampler.seed = seed
        runner.logger.info(
            f'ExactResumeHook: train sampler seed {current} -> {seed} (the '
            'seed it had when the checkpoint was saved).')

    def _warn_unsupported_sampler(self, runner, loop) -> None:
        mid_epoch = any(
            type(h).__name__.endswith('CheckpointHook')
            and not getattr(h, 'by_epoch', True) for h in runner.hooks)
        sampler = find_train_sampler(loop.dataloader)
        if mid_epoch and not hasattr(sampler, 'set_start_index'):
            runner.logger.warning(
                'ExactResumeHook: checkpoints are saved by iteration but the '
                f'train sampler {type(sampler).__name__} cannot resume in '
                f'the middle of an epoch; use one of '
                f'{", ".join(SUPPORTED_SAMPLERS)}.')

    # -- applying the RNG state --------------------------------------------
    def before_train_epoch(self, runner) -> None:
        if self._pending_rng is None:
            return
        if self._generator_epoch == runner.epoch:
            dataloader = runner.train_loop.dataloader
            self._saved_generator = dataloader.generator
            generator = torch.Generator()
            generator.manual_seed(int(runner.seed) + runner.epoch)
            dataloader.generator = generator
            self._swapped = True
        self._generator_epoch = None
        restore_rng_state(self._pending_rng, runner.logger)
        self._pending_rng = None

    def after_train_epoch(self, runner) -> None:
        if self._swapped:
            runner.train_loop.dataloader.generator = self._saved_generator
            self._saved_generator = None
            self._swapped = False

    # -- validation does not consume the training RNG -----------------------
    def before_val(self, runner) -> None:
        if self.isolate_val_rng:
            self._val_rng = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._val_rng is not None:
            restore_rng_state(self._val_rng, runner.logger)
            self._val_rng = None
