# Copyright (c) lmclip_mm authors.
from .open_clip_helpers import (MODEL_CONFIG_DIR, create_clip_model,
                                encode_image, encode_text,
                                encode_texts_packed, eot_truncate,
                                register_model_configs, sdpa_attention,
                                supports_class_token_shortcut,
                                supports_eot_truncation, supports_packing)

__all__ = [
    'MODEL_CONFIG_DIR', 'create_clip_model', 'encode_image', 'encode_text',
    'encode_texts_packed', 'eot_truncate', 'register_model_configs',
    'sdpa_attention', 'supports_class_token_shortcut',
    'supports_eot_truncation', 'supports_packing'
]
