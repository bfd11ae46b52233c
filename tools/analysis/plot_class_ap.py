# Copyright (c) lmclip_mm authors.
"""Plot per-class AP against train-split frequency, coloured by group.

The code is :mod:`lmclip_tools.analysis.plot_class_ap`.
"""
from lmclip_tools.analysis.plot_class_ap import cli

if __name__ == '__main__':
    cli()
