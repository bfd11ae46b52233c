# Copyright (c) lmclip_mm authors.
"""A CheckpointHook that never leaves a half-written checkpoint behind."""
import hashlib
import os.path as osp
import pickle
from typing import List, Tuple

from mmengine.dist import is_main_process, master_only
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ...fileio.atomic_local_backend import (AtomicLocalBackend,
                                            atomic_write_text,
                                            remove_stale_temp_files)

ATOMIC_BACKEND = 'atomic_local'


class _DeferredRemoval:
    """Proxy of a file backend that queues ``remove``/``rmtree`` calls."""

    def __init__(self, backend):
        self._backend = backend
        self.pending: List[Tuple[str, str]] = []

    def remove(self, path):
        self.pending.append(('remove', path))

    def rmtree(self, path):
        self.pending.append(('rmtree', path))

    def __getattr__(self, name):
        return getattr(self._backend, name)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` with crash-safe saving.

    Same arguments and behaviour as mmengine's hook, except that a process
    killed at any moment (SIGKILL, OOM killer, power loss) leaves the
    previous checkpoint complete and ``work_dir/last_checkpoint`` pointing
    at a complete checkpoint:

    * every checkpoint file (``epoch_N.pth``/``iter_N.pth``, ``best_*.pth``,
      published copies) is written through
      :class:`~lmclip_mm.fileio.AtomicLocalBackend` (temporary file in the
      same directory, fsync, :func:`os.replace`) when ``out_dir`` is local
      and ``backend_args`` does not name a backend (an explicit
      ``backend_args`` is used as given, e.g. for object stores, whose
      uploads are atomic by themselves);
    * the ``last_checkpoint`` pointer, which mmengine writes with a plain
      ``open(..., 'w')``, is written atomically, and only after the
      checkpoint it names is complete;
    * outdated checkpoints (``max_keep_ckpts``) and the previous best
      checkpoint (``save_best``) are removed only *after* the new file is
      complete (mmengine removes them first: with ``max_keep_ckpts=1`` a
      kill during the save loses the only checkpoint);
    * temporary files left by a killed run are removed in ``before_train``.

    Config::

        default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook',
                                             interval=1))

    Relies on the private structure of mmengine 0.10.x's ``CheckpointHook``
    (``_save_checkpoint_with_step``, ``_save_best_checkpoint``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._auto_atomic = (self.backend_args is None
                             and self.file_client_args is None)

    def before_train(self, runner) -> None:
        out_dir = self.out_dir if self.out_dir is not None else \
            runner.work_dir
        if self._auto_atomic and self._is_local(out_dir):
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        if not isinstance(self.file_backend, AtomicLocalBackend) and \
                isinstance(self.file_backend, LocalBackend):
            print_log(
                f'AtomicCheckpointHook: backend_args={self.backend_args} '
                'selects a non-atomic local backend; checkpoint files may '
                'be half-written if the process is killed while saving. Use '
                f"backend_args=dict(backend='{ATOMIC_BACKEND}').",
                logger='current', level=30)
        if is_main_process():
            dirs = {runner.work_dir}
            if isinstance(self.file_backend, LocalBackend):
                dirs.add(self.out_dir)
            for directory in dirs:
                for path in remove_stale_temp_files(directory):
                    runner.logger.info(
                        f'Removed {path}, left by a killed checkpoint save.')

    @staticmethod
    def _is_local(path) -> bool:
        return '://' not in str(path)

    def _remove(self, pending) -> None:
        if not is_main_process():
            return
        for op, path in pending:
            if op == 'remove':
                if self.file_backend.isfile(path):
                    self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)

    def _save_checkpoint_with_step(self, runner, step, meta):
        # mmengine's order: remove outdated, save, write last_checkpoint.
        # Here: save, write last_checkpoint (atomically), remove outdated.
        to_remove = []
        if self.max_keep_ckpts > 0:
            if len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step:
                pass
            else:
                if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                    _step = self.keep_ckpt_ids.popleft()
                    ckpt_path = self.file_backend.join_path(
                        self.out_dir, self.filename_tmpl.format(_step))
                    if _step != step:
                        to_remove.append(('remove', ckpt_path))
                self.keep_ckpt_ids.append(step)
                runner.message_hub.update_info('keep_ckpt_ids',
                                               list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return

        save_file = osp.join(runner.work_dir, 'last_checkpoint')
        self._write_pointer(save_file, str(self.last_ckpt))
        self._remove(to_remove)

    def _write_pointer(self, path: str, text: str) -> None:
        backend = getattr(self.file_backend, '_backend', self.file_backend)
        if isinstance(backend, AtomicLocalBackend):
            # the backend's own write (and its test seam)
            backend.put_text(text, path)
        else:
            atomic_write_text(path, text)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        # mmengine removes the previous best file before writing the new
        # one: defer the removals until the new files are complete.
        backend = self.file_backend
        proxy = _DeferredRemoval(backend)
        self.file_backend = proxy
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        self._remove(proxy.pending)

    @master_only
    def _publish_model(self, runner, ckpt_path: str) -> None:
        # mmengine's, with the file written through this hook's backend.
        from mmengine.runner import save_checkpoint
        from mmengine.runner.checkpoint import _load_checkpoint
        checkpoint = _load_checkpoint(ckpt_path)
        assert self.published_keys is not None
        removed_keys = []
        for key in list(checkpoint.keys()):
            if key not in self.published_keys:
                removed_keys.append(key)
                checkpoint.pop(key)
        if removed_keys:
            print_log(
                f'Key {removed_keys} will be removed because they are not '
                'found in published_keys. If you want to keep them, '
                f'please set `{removed_keys}` in published_keys',
                logger='current')
        checkpoint_data = pickle.dumps(checkpoint)
        sha = hashlib.sha256(checkpoint_data).hexdigest()
        final_path = osp.splitext(ckpt_path)[0] + f'-{sha[:8]}.pth'
        if self.file_client_args is None:
            save_checkpoint(
                checkpoint, final_path, backend_args=self.backend_args)
        else:
            save_checkpoint(
                checkpoint, final_path,
                file_client_args=self.file_client_args)
        print_log(
            f'The checkpoint ({ckpt_path}) is published to '
            f'{final_path}.',
            logger='current')
