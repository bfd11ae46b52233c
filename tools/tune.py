# Copyright (c) lmclip_mm authors.
"""Hyper-parameter search for an lmclip_mm config, on the validation split.

The code is :mod:`lmclip_tools.tune`.
"""
from lmclip_tools.tune.main import cli

if __name__ == '__main__':
    cli()
