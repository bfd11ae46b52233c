# Copyright (c) lmclip_mm authors.
"""The text tokenizer of an open_clip model, with one clear error when it
needs what is missing (open_clip's ``tokenizer.py`` seam)."""
from typing import Optional

import open_clip

__all__ = ['create_tokenizer', 'ClipDependencyError']


class ClipDependencyError(RuntimeError):
    """A part of an open_clip model (e.g. the Hugging Face tokenizer of
    SigLIP models) needs a package or files that are missing."""


def create_tokenizer(model_name: str, context_length: Optional[int] = None):
    """:func:`open_clip.get_tokenizer`, with one clear error
    (:class:`ClipDependencyError`) when the tokenizer needs a package that
    is not installed (``transformers`` for SigLIP and other Hugging Face
    tokenizers) or files that cannot be downloaded."""
    try:
        return open_clip.get_tokenizer(model_name,
                                       context_length=context_length)
    except ImportError as e:
        package = getattr(e, 'name', None) or str(e)
        raise ClipDependencyError(
            f'the tokenizer of {model_name} needs the package {package!r}, '
            f'which is not installed: pip install {package}') from e
    except OSError as e:  # the hub: offline, no cached files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ''
        raise ClipDependencyError(
            f'the tokenizer of {model_name} could not be loaded '
            f'({type(e).__name__}: {first}): its files come from the '
            'Hugging Face hub; run once with network access') from e
