# Copyright (c) lmclip_mm authors.
from .open_clip_helpers import (MODEL_CONFIG_DIR, create_clip_model,
                                encode_text, eot_truncate,
                                register_model_configs,
                                supports_eot_truncation)

__all__ = [
    'MODEL_CONFIG_DIR', 'create_clip_model', 'encode_text', 'eot_truncate',
    'register_model_configs', 'supports_eot_truncation'
]
