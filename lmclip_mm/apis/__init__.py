# Copyright (c) lmclip_mm authors.
from .inferencer import MultiLabelClsInferencer

__all__ = ['MultiLabelClsInferencer']
