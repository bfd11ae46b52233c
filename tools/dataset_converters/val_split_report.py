# Copyright (c) lmclip_mm authors.
"""Per-class counts of the held-out validation split (split='val').

The code is :mod:`lmclip_tools.dataset_converters.val_split_report`.
"""
from lmclip_tools.dataset_converters.val_split_report import cli

if __name__ == '__main__':
    cli()
