# Copyright (c) lmclip_mm authors.
"""Loss/sampler ablation of LM-CLIP on the generated toy long-tailed set.

The code is :mod:`lmclip_tools.analysis.toy_ablation`.
"""
from lmclip_tools.analysis.toy_ablation import cli

if __name__ == '__main__':
    cli()
