# Copyright (c) lmclip_mm authors.
"""``tools/tune.py``: hyper-parameter search on the validation split.

* :mod:`.space`: the config's ``tune`` dict, the search space, sampler and
  pruning schedule;
* :mod:`.trial_config`: a trial's config (values, val split, hook);
* :mod:`.trials`: a trial's process, report file and error line;
* :mod:`.optuna_backend` / :mod:`.ray_backend`: the two backends;
* :mod:`.report`: the table, ``trials.csv`` and ``best_config.py``;
* :mod:`.hooks`: what a trial registers to report to its tuner;
* :mod:`.main`: the command line.

Importing this package imports neither Optuna nor Ray.
"""
