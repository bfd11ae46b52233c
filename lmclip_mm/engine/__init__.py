# Copyright (c) lmclip_mm authors.
from . import hooks  # noqa: F401
from .. import fileio  # noqa: F401,E402  registers 'atomic_local'
from . import optim_wrappers, samplers  # noqa: F401,E402
