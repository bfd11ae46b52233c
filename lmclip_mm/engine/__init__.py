# Copyright (c) lmclip_mm authors.
"""Training-engine parts a config names: hooks, optimizer wrappers and the
runner."""
from . import hooks, optim_wrappers, runner  # noqa: F401
