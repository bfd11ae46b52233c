# Copyright (c) lmclip_mm authors.
"""The code of ``tools/``: what the command-line tools share and do.

``lmclip_mm`` is the library a config names (models, datasets, metrics,
hooks); this package is the plumbing of the tools that drive it, kept
apart as open_clip keeps ``open_clip_train`` beside ``open_clip``. Each
``tools/<name>.py`` is a thin entry point that calls the ``cli()`` of the
module of the same name here (``python -m lmclip_tools.train`` is the same
as ``python tools/train.py``):

* :mod:`.launch`: config merging with MMPretrain's flag semantics, CPU
  distributed launch, one-line errors (``run_cli``);
* :mod:`.train`, :mod:`.test`, :mod:`.infer`: the MMPretrain-style tools;
* :mod:`.tune`: ``tools/tune.py`` (Optuna / Ray Tune, trial hooks);
* :mod:`.analysis`: benchmarks and analyses (``tools/analysis/``);
* :mod:`.dataset_converters`: ``tools/dataset_converters/``.

Importing this package imports nothing else.
"""
import importlib.util
import os.path as osp

#: the repository (the clone) this package was installed from
REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: the configs ``lmclip_mm`` ships (``lmclip_mm/.mim/configs``, in a clone
#: the repository's ``configs/``), found without importing ``lmclip_mm``
CONFIGS = osp.realpath(osp.join(
    list(importlib.util.find_spec('lmclip_mm').submodule_search_locations)[0],
    '.mim', 'configs'))
