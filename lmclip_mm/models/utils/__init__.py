# Copyright (c) lmclip_mm authors.
"""Helpers of the models: building open_clip models
(:mod:`.clip_factory`) and their tokenizers (:mod:`.clip_tokenizer`), the
towers' fast forward passes
(:mod:`.fast_encoders`) and collectives with gradient
(:mod:`.distributed`)."""
from .clip_factory import (MODEL_CONFIG_DIR, PretrainedWeightsUnavailable,
                           check_clip_weights, create_clip_model,
                           load_clip_weights, register_model_configs)
from .clip_tokenizer import ClipDependencyError, create_tokenizer
from .fast_encoders import (encode_image, encode_text, encode_texts_packed,
                            eot_truncate, sdpa_attention,
                            supports_class_token_shortcut,
                            supports_eot_truncation, supports_packing)

__all__ = [
    'MODEL_CONFIG_DIR', 'create_clip_model', 'encode_image', 'encode_text',
    'encode_texts_packed', 'eot_truncate', 'register_model_configs',
    'sdpa_attention', 'supports_class_token_shortcut',
    'supports_eot_truncation', 'supports_packing',
    'PretrainedWeightsUnavailable', 'check_clip_weights', 'load_clip_weights',
    'ClipDependencyError', 'create_tokenizer'
]
