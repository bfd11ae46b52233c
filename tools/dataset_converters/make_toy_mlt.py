# Copyright (c) lmclip_mm authors.
"""Generate the toy long-tailed multi-label set (ToyMLT) into a folder.

The code is :mod:`lmclip_tools.dataset_converters.make_toy_mlt`.
"""
from lmclip_tools.dataset_converters.make_toy_mlt import cli

if __name__ == '__main__':
    cli()
