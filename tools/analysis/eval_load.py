# Copyright (c) lmclip_mm authors.
"""Evaluation under load: COCO-MLT-sized test split, tiny model, end to end.

The code is :mod:`lmclip_tools.analysis.eval_load`.
"""
from lmclip_tools.analysis.eval_load import cli

if __name__ == '__main__':
    cli()
