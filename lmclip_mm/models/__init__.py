# Copyright (c) lmclip_mm authors.
from . import classifiers, heads, losses, utils, wrappers  # noqa: F401
from .classifiers import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
