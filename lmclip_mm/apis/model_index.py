# Copyright (c) lmclip_mm authors.
"""Register the LM-CLIP configs as mmpretrain model names (a model's name
is its config's file name without ``.py``, as in MMPretrain)."""
import os.path as osp
from typing import List, Optional

__all__ = ['register_lmclip_models', 'LMCLIP_MODEL_INDEX']

#: the repository's model-index (the configs live next to it; an editable
#: install, as the README's, keeps them there)
LMCLIP_MODEL_INDEX = osp.join(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
    'model-index.yml')


def register_lmclip_models(model_index: Optional[str] = None) -> List[str]:
    """Add the models of ``model_index`` (default: the repository's) to
    mmpretrain's ``ModelHub``; names already known are skipped. Returns the
    names registered now (none when the file does not exist, e.g. a
    non-editable install without the configs)."""
    model_index = model_index or LMCLIP_MODEL_INDEX
    if not osp.isfile(model_index):
        return []
    from mmpretrain.apis.model import ModelHub
    from modelindex.load_model_index import load

    index = load(model_index)
    index.build_models_with_collections()
    prefix = osp.dirname(osp.abspath(model_index))
    added = []
    for metainfo in index.models:
        name = metainfo.name.lower()
        if name in ModelHub._models_dict:
            continue
        metainfo.config = ModelHub._expand_config_path(metainfo, prefix)
        ModelHub._models_dict[name] = metainfo
        added.append(name)
    return added
