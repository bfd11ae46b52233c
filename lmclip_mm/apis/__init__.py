# Copyright (c) lmclip_mm authors.
from .inferencer import MultiLabelClsInferencer
from .model_index import LMCLIP_MODEL_INDEX, register_lmclip_models

__all__ = [
    'MultiLabelClsInferencer', 'register_lmclip_models', 'LMCLIP_MODEL_INDEX'
]
