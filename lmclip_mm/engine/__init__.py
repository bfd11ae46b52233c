# Copyright (c) lmclip_mm authors.
from . import hooks  # noqa: F401
