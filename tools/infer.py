# Copyright (c) lmclip_mm authors.
"""Print the top labels of images with a trained LM-CLIP checkpoint.

The code is :mod:`lmclip_tools.infer`.
"""
from lmclip_tools.infer import cli

if __name__ == '__main__':
    cli()
