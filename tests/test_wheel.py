"""The package as a plain ``pip install`` gets it: the wheel carries the
configs and the model index (``lmclip_mm/.mim``), so that, without a clone
on the path, the model names register with MMPretrain, configs load, and a
project's config inherits a paper config under MMPretrain's own
``tools/train.py``."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import mmpretrain
import pytest
from lmclip_testing import REPO, tool_env

pytestmark = pytest.mark.heavy(35)  # seconds on one CI core

MMPRETRAIN_TRAIN = os.path.join(os.path.dirname(mmpretrain.__file__),
                                '.mim', 'tools', 'train.py')
#: what a checkout holds besides the sources (not copied to build from)
NOT_SOURCES = shutil.ignore_patterns(
    '.git', '.venv*', 'work_dirs', 'data', 'build', 'dist', '*.egg-info',
    '__pycache__', '.pytest_cache', '*.pth')


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The wheel built from a copy of the sources, installed into a fresh
    target folder; the environment that puts it (and not the clone) on
    the path."""
    tmp = tmp_path_factory.mktemp('wheel')
    src = tmp / 'src'
    shutil.copytree(REPO, src, symlinks=True, ignore=NOT_SOURCES)
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                    '--no-build-isolation', '-q', str(src), '-w',
                    str(tmp / 'dist')], check=True, capture_output=True)
    wheel, = (tmp / 'dist').glob('lmclip_mm-*.whl')
    target = tmp / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps',
                    '-q', '--target', str(target), str(wheel)], check=True,
                   capture_output=True)
    env = tool_env()
    env['PYTHONPATH'] = str(target)  # the helpers too stay off the path
    return target, env, tmp


def _python(code, env, cwd):
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_wheel_carries_configs_and_model_names(installed):
    target, env, tmp = installed
    found = _python('''
        import json, os
        import lmclip_mm, lmclip_tools, mmpretrain
        from mmengine.config import Config
        from lmclip_mm.configs import config_dir, config_path
        cfg = Config.fromfile(config_path('lmclip_voc_mlt_vitb16'))
        model = mmpretrain.get_model('lmclip_toy_mlt_tiny')
        print(json.dumps(dict(
            package=lmclip_mm.__file__, configs=config_dir(),
            tools_configs=lmclip_tools.CONFIGS,
            names=mmpretrain.list_models('lmclip*'),
            model=type(model).__name__, clip=cfg.model.clip.model_name,
            dataset=cfg.train_dataloader.dataset.type)))
    ''', env, tmp)
    assert found['package'].startswith(str(target))
    assert found['configs'] == str(target / 'lmclip_mm' / '.mim' / 'configs')
    assert found['tools_configs'] == found['configs']
    assert len(found['names']) == 10 and \
        'lmclip_voc_mlt_vitb16' in found['names']
    assert (found['model'], found['clip'], found['dataset']) == (
        'LMCLIPClassifier', 'ViT-B-16', 'VOCMLT')
    proc = subprocess.run([sys.executable, '-m', 'lmclip_mm', 'configs',
                           'lmclip_toy_mlt_tiny'], env=env, cwd=tmp,
                          capture_output=True, text=True)
    assert proc.stdout.strip() == found['configs'] + \
        '/lmclip_toy_mlt_tiny.py', proc.stderr[-2000:]


@pytest.mark.skipif(not os.path.isfile(MMPRETRAIN_TRAIN),
                    reason="this mmpretrain wheel ships no .mim/tools")
def test_project_config_inherits_an_installed_config_under_mmpretrain_tools(
        installed, toy_root):
    """The README's route: ``LMCLIP_MM_CONFIGS=$(python -m lmclip_mm
    configs)`` and ``_base_ = ['{{$LMCLIP_MM_CONFIGS:configs}}/...']``,
    trained by MMPretrain's own tools/train.py."""
    target, env, tmp = installed
    # what `python -m lmclip_mm configs` prints (tested above)
    configs = str(target / 'lmclip_mm' / '.mim' / 'configs')
    project = tmp / 'my_project'
    project.mkdir()
    (project / 'my_toy.py').write_text(textwrap.dedent(f'''
        _base_ = ['{{{{$LMCLIP_MM_CONFIGS:configs}}}}/lmclip_toy_mlt_tiny.py']
        data_root = {str(toy_root)!r}
        train_dataloader = dict(dataset=dict(data_root=data_root,
                                             indices=16))
        val_dataloader = dict(dataset=dict(data_root=data_root))
        test_dataloader = dict(dataset=dict(data_root=data_root))
        train_cfg = dict(max_epochs=1)
    '''))
    proc = subprocess.run(
        [sys.executable, MMPRETRAIN_TRAIN, 'my_toy.py', '--work-dir',
         str(tmp / 'work')], env=dict(env, LMCLIP_MM_CONFIGS=configs),
        cwd=project, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp / 'work' / 'epoch_1.pth').is_file()
