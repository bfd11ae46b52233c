# Copyright (c) lmclip_mm authors.
"""Check a quickstart run against the band measured on several CPU kernels.

The code is :mod:`lmclip_tools.analysis.check_quickstart`.
"""
from lmclip_tools.analysis.check_quickstart import cli

if __name__ == '__main__':
    cli()
