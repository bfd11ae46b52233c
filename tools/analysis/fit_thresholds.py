# Copyright (c) lmclip_mm authors.
"""Fit per-class decision thresholds on a held-out split; save them with.

The code is :mod:`lmclip_tools.analysis.fit_thresholds`.
"""
from lmclip_tools.analysis.fit_thresholds import cli

if __name__ == '__main__':
    cli()
