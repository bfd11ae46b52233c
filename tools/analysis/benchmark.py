# Copyright (c) lmclip_mm authors.
"""Speed and memory of LM-CLIP's runner path against the reference loop.

The code is :mod:`lmclip_tools.analysis.benchmark`.
"""
from lmclip_tools.analysis.benchmark import cli

if __name__ == '__main__':
    cli()
