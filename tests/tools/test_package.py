"""The house: ``lmclip_mm`` is the library configs name, ``lmclip_tools``
the tools' code, ``tools/*.py`` thin entry points into it."""
import importlib
import json
import pkgutil
import subprocess
import sys

import lmclip_tools
from lmclip_testing import REPO, TOOLS, run_tool, tool_env


def test_every_tools_module_imports():
    names = [m.name for m in pkgutil.walk_packages(lmclip_tools.__path__,
                                                   'lmclip_tools.')]
    assert 'lmclip_tools.tune.optuna_backend' in names
    for name in names:
        importlib.import_module(name)


def test_import_lmclip_mm_knows_nothing_of_the_tools_or_tuners():
    code = (
        'import json, sys; import lmclip_mm; '
        'from mmpretrain.registry import HOOKS; '
        'print(json.dumps(dict('
        'modules=sorted(m for m in sys.modules if m.split(".")[0] in '
        '("lmclip_tools", "optuna", "ray")), '
        'hooks=sorted(n for n in ("TrialReportHook", "OptunaPruningHook", '
        '"RayTuneReportHook", "BestCheckpointTestHook", '
        '"TestBestCheckpointHook") if n in HOOKS.module_dict))))')
    out = subprocess.run([sys.executable, '-c', code], env=tool_env(),
                         capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found['modules'] == []
    # the final-test hook under its name and the first releases' name
    assert found['hooks'] == ['BestCheckpointTestHook',
                              'TestBestCheckpointHook']


def test_tuning_hooks_register_with_the_tools_package():
    from mmpretrain.registry import HOOKS

    import lmclip_tools.tune.hooks as hooks
    for name in hooks.__all__[:3]:
        assert HOOKS.get(name) is getattr(hooks, name)


def test_tools_are_thin_entry_points():
    scripts = sorted(TOOLS.rglob('*.py'))
    assert len(scripts) == 12
    for path in scripts:
        text = path.read_text()
        rel = path.relative_to(TOOLS).with_suffix('')
        module = 'lmclip_tools.' + '.'.join(rel.parts)
        if rel.name == 'tune':
            module = 'lmclip_tools.tune.main'
        assert f'from {module} import cli' in text, path
        assert len(text.splitlines()) <= 12, path
        assert callable(importlib.import_module(module).cli)


def test_python_m_is_the_same_tool():
    out = subprocess.run(
        [sys.executable, '-m', 'lmclip_tools.tune.main', 'no_such.py'],
        cwd=REPO, env=tool_env(), capture_output=True, text=True)
    via_script = run_tool(['tune.py', 'no_such.py'], check=False)
    assert out.returncode == via_script.returncode != 0
    assert out.stderr.splitlines()[-1] == via_script.stderr.splitlines()[-1]


def test_import_from_a_folder_holding_a_folder_named_lmclip_mm(tmp_path):
    """The clone's parent, when the clone is named lmclip_mm: the installed
    package (README: editable_mode=compat), not an empty namespace."""
    (tmp_path / 'lmclip_mm').mkdir()
    code = ('import importlib.util; '
            'print(importlib.util.find_spec("lmclip_mm").origin)')
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path,
                         env=tool_env(), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(REPO / 'lmclip_mm' / '__init__.py')
