"""``python -c CODE`` without a fresh interpreter's ~6 s of imports.

:class:`ForkedPython` runs ``CODE`` in a ``fork()`` of the test process,
which has imported torch, mmengine, mmpretrain and lmclip_mm already, as
the image cache's own fill workers are forks of the process that fills.
It behaves as the ``subprocess.Popen`` of ``python -c CODE`` with stdout
and stderr merged into one pipe: ``stdout`` (text), ``pid``, ``poll()``,
``wait()``, ``communicate()``, ``send_signal()``, ``returncode`` (``-N``
for death by signal N), an uncaught exception printed with its traceback
(exit 1). The child leads a new process group (``pgid == pid``): the
processes it starts can be found with :func:`group_alive` after it died.

Tests that need what a fresh interpreter does differently (environment
read at import time, import side effects) start a real one instead.
"""
import logging
import os
import signal
import subprocess
import sys
import threading
import traceback


class ForkedPython:

    def __init__(self, code: str):
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            status = 1
            try:
                os.close(read_end)
                status = _child(code, write_end)
            except BaseException:
                traceback.print_exc()  # to the pipe once it is set up
            finally:
                os._exit(status)
        os.close(write_end)
        self.pid = pid
        self.returncode = None
        self.stdout = open(read_end, errors='replace')

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self):
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def communicate(self, timeout=None):
        """``(output, None)`` once the child ended; killed (and
        ``TimeoutExpired``) after ``timeout`` seconds."""
        timer = None
        fired = []
        if timeout is not None:
            def expire():
                fired.append(True)
                self.kill()
            timer = threading.Timer(timeout, expire)
            timer.start()
        try:
            out = self.stdout.read()
            self.wait()
        finally:
            if timer is not None:
                timer.cancel()
        self.stdout.close()
        if fired:
            raise subprocess.TimeoutExpired(f'forked python (pid {self.pid})',
                                            timeout, out)
        return out, None

    def send_signal(self, sig):
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self):
        try:
            self.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass


def exit_status(exc: SystemExit) -> int:
    """The exit status of a process that raised ``exc``, as the
    interpreter gives it (a message is printed and gives 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _child(code, write_end):  # pragma: no cover - runs in the child
    os.setpgid(0, 0)
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stdout = open(1, 'w', buffering=1, closefd=False)
    sys.stderr = open(2, 'w', buffering=1, closefd=False)
    # loggers made before the fork (mmengine's) write where the test
    # process's output went: to this child's output instead
    loggers = [logging.getLogger()] + [
        x for x in logging.Logger.manager.loggerDict.values()
        if isinstance(x, logging.Logger)]
    if 'mmengine.logging' in sys.modules:  # its loggers are its own
        from mmengine.logging import MMLogger
        loggers += list(MMLogger._instance_dict.values())
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and \
                    not isinstance(handler, logging.FileHandler):
                # not setStream(): it flushes the old stream, which may be
                # closed here (pytest-xdist's workers)
                handler.stream = sys.stdout
    try:
        exec(compile(code, '<forked python>', 'exec'),
             {'__name__': '__main__'})
        status = 0
    except SystemExit as exc:
        status = exit_status(exc)
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def group_alive(pgid: int) -> list:
    """PIDs of the living (not zombie) processes of process group
    ``pgid``."""
    pids = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                fields = f.read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != 'Z':
            pids.append(int(entry))
    return pids
