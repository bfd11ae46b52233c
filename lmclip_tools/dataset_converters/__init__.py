# Copyright (c) lmclip_mm authors.
"""The code of ``tools/dataset_converters/``."""
