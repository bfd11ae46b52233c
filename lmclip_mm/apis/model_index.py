# Copyright (c) lmclip_mm authors.
"""Register the LM-CLIP configs as mmpretrain model names (a model's name
is its config's file name without ``.py``, as in MMPretrain)."""
import os.path as osp
from typing import List, Optional

from ..configs import MIM_DIR

__all__ = ['register_lmclip_models', 'LMCLIP_MODEL_INDEX']

#: the model index shipped in the package (``lmclip_mm/.mim``; in a clone a
#: link to the repository's ``model-index.yml``), its configs beside it
LMCLIP_MODEL_INDEX = osp.join(MIM_DIR, 'model-index.yml')


def register_lmclip_models(model_index: Optional[str] = None) -> List[str]:
    """Add the models of ``model_index`` (default: the package's) to
    mmpretrain's ``ModelHub`` with its public
    ``ModelHub.register_model_index``; its config paths are relative to the
    index's folder. An index whose models are all known already is skipped.
    Returns the names registered now (none when the file does not
    exist)."""
    model_index = model_index or LMCLIP_MODEL_INDEX
    if not osp.isfile(model_index):
        return []
    from mmpretrain.apis.model import ModelHub
    from modelindex.load_model_index import load

    index = load(model_index)
    index.build_models_with_collections()
    names = [m.name.lower() for m in index.models]
    if all(ModelHub.has(name) for name in names):
        return []
    ModelHub.register_model_index(
        model_index, config_prefix=osp.dirname(osp.abspath(model_index)))
    return names
