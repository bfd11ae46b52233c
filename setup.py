import os.path as osp

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def read_requirements(name):
    """Requirement lines of ``requirements/<name>.txt`` (comments dropped)."""
    with open(osp.join(HERE, 'requirements', name), encoding='utf-8') as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def read_version():
    scope = {}
    with open(osp.join(HERE, 'lmclip_mm', 'version.py'), encoding='utf-8') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='lmclip_mm',
    version=read_version(),
    description='LM-CLIP (long-tailed multi-label classification with CLIP) '
    'as an MMPretrain plugin',
    long_description=open(osp.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    # the library (what configs name) and the tools' code (tools/*.py are
    # thin entry points into lmclip_tools, as open_clip_train beside
    # open_clip)
    packages=find_packages(
        include=['lmclip_mm', 'lmclip_mm.*', 'lmclip_tools', 'lmclip_tools.*']),
    # the configs and the model index inside the package, as OpenMMLab
    # packages ship theirs (lmclip_mm/.mim links to configs/ and
    # model-index.yml; a wheel holds copies): lmclip_mm.configs and
    # mmpretrain.get_model(name) work from any install
    package_data={'lmclip_mm': [
        'model_configs/*.json', '.mim/model-index.yml', '.mim/configs/*.py',
        '.mim/configs/*.yml', '.mim/configs/**/*.py']},
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'tests': read_requirements('tests.txt'),
        # tools/tune.py (the tests extra has them too: CI tests tuning)
        'tune': read_requirements('tune.txt'),
        # tools/train.py --tensorboard (the tests extra has it too)
        'tensorboard': read_requirements('tensorboard.txt'),
    },
    classifiers=[
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
)
