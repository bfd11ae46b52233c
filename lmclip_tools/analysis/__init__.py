# Copyright (c) lmclip_mm authors.
"""The code of ``tools/analysis/``."""
