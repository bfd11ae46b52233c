# Copyright (c) lmclip_mm authors.
"""Train a model with an lmclip_mm (or any mmpretrain) config.

The code is :mod:`lmclip_tools.train`.
"""
from lmclip_tools.train import cli

if __name__ == '__main__':
    cli()
