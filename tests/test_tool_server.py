"""tests/helpers/tool_server.py: a run in a fork of the preloaded server
looks, to the test, like ``python SCRIPT ARGS`` in a fresh interpreter."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import tool_server
from lmclip_testing import tool_env

SCRIPT = textwrap.dedent('''
    import json, os, random, sys, tempfile
    print(json.dumps(dict(
        argv=sys.argv, cwd=os.getcwd(), path0=sys.path[0],
        env=os.environ.get('LMCLIP_TRACEBACK'), tmp=tempfile.gettempdir(),
        rand=random.random(), main=__name__)))
    print('to stderr', file=sys.stderr)
    how = sys.argv[1]
    if how == 'exit3':
        sys.exit(3)
    if how == 'exit-text':
        sys.exit('a message')
    if how == 'raise':
        raise ValueError('boom')
    if how == 'kill':
        os.kill(os.getpid(), 9)
    if how == 'sleep':
        import time
        time.sleep(60)
''')


def _both(tmp_path, how, env=None):
    script = tmp_path / 'probe.py'
    script.write_text(SCRIPT)
    cwd = tmp_path / 'cwd'
    cwd.mkdir(exist_ok=True)
    base = tool_env()
    full = dict(base, **(env or {}))
    cmd = [sys.executable, str(script), how]
    forked = tool_server.run(cmd, cwd, full, base, timeout=120)
    fresh = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True,
                           text=True, timeout=120)
    return forked, fresh


def _facts(proc):
    import json
    line = next(x for x in proc.stdout.splitlines() if x.startswith('{'))
    return json.loads(line)


@pytest.mark.parametrize('how, code', [('ok', 0), ('exit3', 3),
                                       ('exit-text', 1), ('raise', 1),
                                       ('kill', -9)])
def test_a_fork_is_a_fresh_run(how, code, tmp_path):
    scratch = tmp_path / 'scratch'
    scratch.mkdir()
    env = dict(LMCLIP_TRACEBACK='1', TMPDIR=str(scratch))
    forked, fresh = _both(tmp_path, how, env)
    assert forked.returncode == fresh.returncode == code
    a, b = _facts(forked), _facts(fresh)
    assert a.pop('rand') != b.pop('rand')  # fresh seeds in every run
    assert a == b
    assert a['main'] == '__main__' and a['tmp'] == str(scratch)
    assert forked.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    assert 'to stderr' in forked.stderr
    if how == 'raise':
        assert forked.stderr.splitlines()[-1] == 'ValueError: boom'
        assert 'Traceback (most recent call last):' in forked.stderr
    if how == 'exit-text':
        assert forked.stderr.splitlines()[-1] == 'a message'


def test_a_module_run_is_a_fresh_run(tmp_path):
    """``python -m MODULE ARGS`` (how tools/tune.py starts its trials)."""
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    (cwd / 'probe_mod.py').write_text(SCRIPT)
    base = tool_env()
    cmd = [sys.executable, '-m', 'probe_mod', 'exit3']
    assert tool_server.forkable(cmd, base, base)
    forked = tool_server.run(cmd, cwd, base, base, timeout=120)
    fresh = subprocess.run(cmd, cwd=cwd, env=base, capture_output=True,
                           text=True, timeout=120)
    assert forked.returncode == fresh.returncode == 3
    a, b = _facts(forked), _facts(fresh)
    assert a.pop('rand') != b.pop('rand')
    assert a == b and a['main'] == '__main__'
    assert a['argv'][0] == str(cwd / 'probe_mod.py')
    assert forked.stderr.splitlines()[-1] == 'to stderr'
    assert 'RuntimeWarning' not in forked.stderr


def test_served_popen_is_popen_with_one_log(tmp_path):
    """ServedPopen: a fork that writes stdout and stderr to one log file,
    with a pid while it runs, wait() and kill()."""
    script = tmp_path / 'probe.py'
    script.write_text(SCRIPT)
    base = tool_env()
    log = tmp_path / 'run.log'
    proc = tool_server.ServedPopen([sys.executable, str(script), 'exit3'],
                                   log, base, base, cwd=tmp_path)
    assert proc.pid != os.getpid() and proc.poll() is None
    assert proc.wait() == 3 and proc.poll() == 3
    lines = log.read_text().splitlines()
    assert lines[-2].startswith('{') and lines[-1] == 'to stderr'
    sleeper = tool_server.ServedPopen([sys.executable, str(script), 'sleep'],
                                      log, base, base, cwd=tmp_path)
    assert os.path.exists(f'/proc/{sleeper.pid}')
    assert sleeper.poll() is None  # still running
    sleeper.kill()
    for _ in range(100):  # poll() sees the end (and frees the server)
        if sleeper.poll() is not None:
            break
        time.sleep(0.1)
    assert sleeper.poll() == -9 and sleeper.wait() == -9
    # the server is free again
    assert tool_server.run([sys.executable, str(script), 'ok'], tmp_path,
                           base, base, timeout=60).returncode == 0


def test_two_forks_have_different_seeds(tmp_path):
    forked, _ = _both(tmp_path, 'ok')
    again, _ = _both(tmp_path, 'ok')
    assert _facts(forked)['rand'] != _facts(again)['rand']


def test_timeout_kills_the_run(tmp_path):
    script = tmp_path / 'probe.py'
    script.write_text(SCRIPT)
    base = tool_env()
    with pytest.raises(subprocess.TimeoutExpired):
        tool_server.run([sys.executable, str(script), 'sleep'], tmp_path,
                        base, base, timeout=3)
    # the server serves the next run
    proc = tool_server.run([sys.executable, str(script), 'ok'], tmp_path,
                           base, base, timeout=60)
    assert proc.returncode == 0


def test_import_time_variables_get_a_fresh_interpreter():
    base = tool_env()
    cmd = [sys.executable, 'tools/train.py']
    assert tool_server.forkable(cmd, dict(base, LMCLIP_TRACEBACK='1'), base)
    offline = '0' if base.get('HF_HUB_OFFLINE') == '1' else '1'
    assert not tool_server.forkable(cmd, dict(base, HF_HUB_OFFLINE=offline),
                                    base)
    assert not tool_server.forkable(cmd, dict(base, OMP_NUM_THREADS='2'),
                                    base)
    del base['PATH']  # a variable removed counts too
    assert not tool_server.forkable(cmd, base, tool_env())
    assert not tool_server.forkable(['bash', 'tools/dist_train.sh'], base,
                                    base)


def test_fresh_tools_switch(monkeypatch):
    base = tool_env()
    monkeypatch.setenv('LMCLIP_TEST_FRESH_TOOLS', '1')
    assert not tool_server.forkable([sys.executable, 'tools/train.py'],
                                    base, base)


def test_threads_share_the_server_one_run_at_a_time(tmp_path):
    script = tmp_path / 'probe.py'
    script.write_text(SCRIPT)
    base = tool_env()
    results = []

    def one(i):
        proc = tool_server.run([sys.executable, str(script), f'ok{i}'],
                               tmp_path, base, base, timeout=120)
        results.append((i, proc.returncode, _facts(proc)['argv'][1]))

    threads = [threading.Thread(target=one, args=(i, )) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [(i, 0, f'ok{i}') for i in range(4)]


def test_a_test_changes_the_environment_for_itself_only():
    """tests/conftest.py's own_environment: a variable a test sets (as a
    tool's main() run in-process sets LOCAL_RANK) is gone for the next
    test (below), whose tools then still fork from the server."""
    os.environ['LMCLIP_TEST_LEAK_PROBE'] = '1'
    os.environ.pop('LMCLIP_CACHE_DIR')


def test_the_previous_tests_variables_are_gone():
    assert 'LMCLIP_TEST_LEAK_PROBE' not in os.environ
    assert os.environ['LMCLIP_CACHE_DIR']


def test_the_server_serves_every_test(tmp_path, request):
    """pytest sets PYTEST_CURRENT_TEST per test: a server started by an
    earlier test still serves this one."""
    script = tmp_path / 'ppid.py'
    script.write_text('import os\nprint(os.getppid())\n')
    base = tool_env()
    assert base['PYTEST_CURRENT_TEST'].startswith(request.node.nodeid)
    if tool_server._SERVER is not None:
        assert tool_server._SERVER.env['PYTEST_CURRENT_TEST'] != \
            base['PYTEST_CURRENT_TEST']
    proc = tool_server.run([sys.executable, str(script)], tmp_path, base,
                           base, timeout=120)
    assert int(proc.stdout.split()[-1]) != os.getpid()


def test_a_server_started_in_another_environment_is_replaced(
        tmp_path, monkeypatch):
    """An import-time variable set after the server started (e.g. by a
    test's monkeypatch): a new server, started in the new environment,
    serves the run (a fork: its parent is neither this process nor the old
    server), and the runs after it."""
    script = tmp_path / 'ppid.py'
    script.write_text('import os\nprint(os.getppid())\n')
    cmd = [sys.executable, str(script)]
    base = tool_env()
    served = tool_server.run(cmd, tmp_path, base, base, timeout=120)
    old = int(served.stdout.split()[-1])
    assert old != os.getpid()  # a fork
    monkeypatch.setenv('LMCLIP_TEST_IMPORT_TIME_PROBE', '1')
    changed = tool_env()
    runs = [tool_server.run(cmd, tmp_path, changed, changed, timeout=120)
            for _ in range(2)]
    parents = {int(p.stdout.split()[-1]) for p in runs}
    assert len(parents) == 1 and parents.isdisjoint({old, os.getpid()})
    assert tool_server._SERVER.env['LMCLIP_TEST_IMPORT_TIME_PROBE'] == '1'
    # (last in this file: the next tool run starts the session's server)
    tool_server.shutdown()
