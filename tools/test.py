# Copyright (c) lmclip_mm authors.
"""Evaluate a checkpoint with an lmclip_mm (or any mmpretrain) config.

The code is :mod:`lmclip_tools.test`.
"""
from lmclip_tools.test import cli

if __name__ == '__main__':
    cli()
