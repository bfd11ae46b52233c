# Copyright (c) lmclip_mm authors.
"""Training-engine parts a config names: hooks and optimizer wrappers."""
from . import hooks, optim_wrappers  # noqa: F401
