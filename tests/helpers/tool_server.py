"""Run the scripts of ``tools/`` without paying their imports each time.

A tool run by a test is a fresh ``python tools/<script>.py ...`` whose first
~7 s (on CI's cores) import torch, torchvision, mmengine, mmpretrain,
open_clip and lmclip_mm. This module keeps one *server* process per pytest
worker that imported them once, in the environment of
:func:`lmclip_testing.tool_env`, and has done nothing else (one thread, no
torch op ran). Each run is a ``fork()`` of that server which then does what
the interpreter does for ``python SCRIPT ARGS``: ``sys.argv``, ``sys.path[0]
= dirname(SCRIPT)``, the working directory and the environment of the call,
fresh random seeds, the script run as ``__main__``
(:func:`runpy.run_path`; ``python -m MODULE ARGS``: :func:`runpy.run_module`
with ``sys.path[0]`` the working directory), an uncaught exception printed
with its traceback
(exit 1), ``SystemExit`` codes, ``atexit`` handlers, and death by a signal
reported as ``-signum``. What the imports printed when the server started
is written first to every run's stdout/stderr, as a fresh interpreter would
print it.

What differs from a fresh interpreter: modules read some environment
variables once, when imported. A call whose environment differs from the
server's in any variable outside :data:`CALL_TIME_VARIABLES` therefore runs
in a fresh interpreter, as does every call when ``LMCLIP_TEST_FRESH_TOOLS=1``
(the whole suite then starts every tool fresh). A server started before
the session's own environment changed is replaced by one started in the
new environment.

:func:`run` is ``subprocess.run`` for a tool; :class:`ServedPopen` is
``subprocess.Popen`` with one log file, for code under test that starts
tools itself (an in-process tuner's trials).
"""
import json
import os
import subprocess
import sys
import threading

from forked import exit_status

#: variables the tools and their libraries read when called, not when
#: imported: a call may change them and still run in a fork of the server
CALL_TIME_VARIABLES = frozenset([
    'LMCLIP_TRACEBACK', 'LMCLIP_TRUSTED_CHECKPOINTS', 'LMCLIP_CACHE_DIR',
    'TMPDIR', 'PORT', 'PYTHONUNBUFFERED',
    # set by pytest for each test, read by nothing a tool imports
    'PYTEST_CURRENT_TEST'])

#: what the server imports before it serves (what every tool imports)
PRELOAD = ('torch', 'torchvision', 'mmengine.runner', 'mmpretrain',
           'open_clip', 'lmclip_mm', 'lmclip_tools.launch',
           'lmclip_tools.train', 'lmclip_tools.test', 'lmclip_tools.infer')

_SERVER = None
_LOCK = threading.Lock()


class _Server:

    def __init__(self, env):
        self.env = dict(env)
        self.proc = subprocess.Popen(
            [sys.executable, '-u', __file__], env=self.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            bufsize=1)
        ready = self.proc.stdout.readline()
        if not ready.startswith('READY'):
            raise RuntimeError(f'tool server failed to start: {ready!r}')

    def start(self, cmd, cwd, env, out, err) -> int:
        """Fork a run writing to the files ``out`` and ``err`` (one file
        when they are the same path); its pid."""
        request = dict(argv=[str(c) for c in cmd[1:]], cwd=str(cwd),
                       env=env, out=str(out), err=str(err))
        self.proc.stdin.write(json.dumps(request) + '\n')
        self.proc.stdin.flush()
        return int(json.loads(self.proc.stdout.readline())['pid'])

    def finish(self) -> int:
        """Wait for the run :meth:`start` forked; its return code."""
        return json.loads(self.proc.stdout.readline())['returncode']

    def run(self, cmd, cwd, env, timeout):
        import tempfile
        with tempfile.TemporaryDirectory(prefix='lmclip_tool_') as tmp:
            out, err = os.path.join(tmp, 'out'), os.path.join(tmp, 'err')
            pid = self.start(cmd, cwd, env, out, err)
            fired = []
            timer = threading.Timer(timeout, _kill, (pid, fired))
            timer.start()
            try:
                returncode = self.finish()
            finally:
                timer.cancel()
            with open(out, errors='replace') as f:
                stdout = f.read()
            with open(err, errors='replace') as f:
                stderr = f.read()
        if fired:
            raise subprocess.TimeoutExpired(cmd, timeout, stdout, stderr)
        return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()


def _kill(pid, fired):
    import signal
    fired.append(pid)
    _signal(pid, signal.SIGKILL)


def _signal(pid, sig):
    """``os.kill(pid, sig)``; a run that already ended is not an error."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def forkable(cmd, env, base_env) -> bool:
    """Whether ``cmd`` with ``env`` may run in a fork of a server started
    with ``base_env``: ``python SCRIPT.py ...`` or ``python -m MODULE ...``,
    an environment that differs only in :data:`CALL_TIME_VARIABLES`, and no
    ``LMCLIP_TEST_FRESH_TOOLS``."""
    if os.environ.get('LMCLIP_TEST_FRESH_TOOLS') == '1':
        return False
    if len(cmd) < 2 or cmd[0] != sys.executable:
        return False
    if not (str(cmd[1]).endswith('.py') or
            (str(cmd[1]) == '-m' and len(cmd) > 2)):
        return False
    keys = set(env) | set(base_env)
    return all(env.get(k) == base_env.get(k) for k in keys
               if k not in CALL_TIME_VARIABLES)


def run(cmd, cwd, env, base_env, timeout):
    """``subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
    text=True, timeout=timeout)``, in a fork of the server when
    :func:`forkable` against ``base_env`` (the environment of a tool run
    without extra variables); the server is (re)started with ``base_env``
    when there is none or it was started in another environment."""
    if forkable(cmd, env, base_env):
        with _LOCK:
            return _server_for(cmd, env, base_env).run(cmd, cwd, env, timeout)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _server_for(cmd, env, base_env):
    """The server (started now if there is none, or if it was started in
    another environment than ``base_env``: one new server, not a fresh
    interpreter per call). Called with :data:`_LOCK` held."""
    global _SERVER
    if _SERVER is not None and not forkable(cmd, env, _SERVER.env):
        _SERVER.close()
        _SERVER = None
    if _SERVER is None or _SERVER.proc.poll() is not None:
        _SERVER = _Server(base_env)
    return _SERVER


class ServedPopen:
    """``subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
    env=env)`` for a tool the server can fork (:func:`forkable` against
    ``base_env``), e.g. the training processes an in-process tuner starts:
    ``pid``, ``wait()``, ``poll()``, ``kill()``, ``send_signal()``. The
    server runs one tool at a time: the server is this object's until
    :meth:`wait` returned (or :meth:`poll` saw the run end)."""

    def __init__(self, cmd, log_path, env, base_env, cwd=None):
        if not forkable(cmd, env, base_env):
            raise ValueError(f'not a run the tool server can fork: {cmd} '
                             '(see forkable)')
        _LOCK.acquire()
        try:
            self._server = _server_for(cmd, env, base_env)
            self.pid = self._server.start(cmd, cwd or os.getcwd(), env,
                                          log_path, log_path)
        except BaseException:
            _LOCK.release()
            raise
        self.returncode = None

    def wait(self):
        if self.returncode is None:
            try:
                self.returncode = self._server.finish()
            finally:
                _LOCK.release()
        return self.returncode

    def poll(self):
        if self.returncode is None and not _running(self.pid):
            self.wait()  # gone: the server is about to report it
        return self.returncode

    def send_signal(self, sig):
        if self.returncode is None:
            _signal(self.pid, sig)

    def kill(self):
        import signal
        self.send_signal(signal.SIGKILL)


def _running(pid) -> bool:
    """Whether ``pid`` exists and is not a zombie (Linux ``/proc``)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def shutdown():
    global _SERVER
    if _SERVER is not None:
        _SERVER.close()
        _SERVER = None


# -- the server ---------------------------------------------------------------
def _child(request, banner_out, banner_err):  # pragma: no cover - forked
    import atexit
    import random
    import runpy
    import traceback
    out = os.open(request['out'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    err = out if request['err'] == request['out'] else os.open(
        request['err'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, 'w', buffering=1, closefd=False)
    sys.stderr = open(2, 'w', buffering=1, closefd=False)
    sys.stdout.write(banner_out)
    sys.stderr.write(banner_err)
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    import tempfile
    tempfile.tempdir = None  # computed from $TMPDIR at first use, as fresh
    argv = list(request['argv'])
    module = argv.pop(1) if argv[0] == '-m' else None
    if module is None:
        script = os.path.abspath(argv[0])
        sys.argv = argv
        sys.path[0] = os.path.dirname(script)
    else:  # python -m MODULE: sys.path[0] is the working directory
        import importlib.util
        sys.path[0] = os.getcwd()
        # as fresh: the module not imported yet (runpy would warn)
        sys.modules.pop(module, None)
        sys.argv = [importlib.util.find_spec(module).origin] + argv[1:]
    # a fresh interpreter's seeds are random: so are a fork's
    import numpy as np
    import torch
    random.seed()
    np.random.seed()
    torch.seed()
    code = 0
    try:
        if module is None:
            runpy.run_path(script, run_name='__main__')
        else:
            runpy.run_module(module, run_name='__main__', alter_sys=True)
    except SystemExit as exc:
        code = exit_status(exc)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _serve():  # pragma: no cover - runs in the server process
    import importlib
    import io
    import tempfile
    reply = sys.stdout
    # what the imports print goes to every run's output, as in a fresh run
    captured = [tempfile.TemporaryFile('w+'), tempfile.TemporaryFile('w+')]
    saved = os.dup(1), os.dup(2)
    os.dup2(captured[0].fileno(), 1)
    os.dup2(captured[1].fileno(), 2)
    sys.stdout, sys.stderr = (io.TextIOWrapper(os.fdopen(
        os.dup(fd), 'wb'), line_buffering=True) for fd in (1, 2))
    for name in PRELOAD:
        importlib.import_module(name)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    banners = []
    for f in captured:
        f.seek(0)
        banners.append(f.read())
    sys.stdout, sys.stderr = reply, sys.__stderr__
    reply.write('READY\n')
    reply.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request, *banners)
        reply.write(json.dumps(dict(pid=pid)) + '\n')
        reply.flush()
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            code = -os.WTERMSIG(status)
        else:
            code = os.WEXITSTATUS(status)
        reply.write(json.dumps(dict(returncode=code)) + '\n')
        reply.flush()


if __name__ == '__main__':
    _serve()
