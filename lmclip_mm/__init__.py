"""LM-CLIP as an MMPretrain plugin.

Importing this package registers every component (datasets, samplers,
models, losses, metrics, hooks, model wrappers) into MMPretrain's registries
(``mmpretrain.registry``) and makes mmengine's checkpoint loading work on
torch>=2.6 with ``weights_only`` loading (see
:mod:`lmclip_mm.fileio.checkpoint_safety`).

Use it from any MMPretrain config with::

    custom_imports = dict(imports=['lmclip_mm'], allow_failed_imports=False)
    default_scope = 'mmpretrain'
"""
import warnings

from .version import __version__

# mmcv-lite (the dependency: mmpretrain needs none of mmcv's compiled ops)
# warns on every import that its compiled deformable attention is missing.
warnings.filterwarnings(
    'ignore', message='Fail to import ``MultiScaleDeformableAttention``')
# deprecations inside the libraries, nothing a user can act on: open_clip's
# distributed loss (torch.distributed.nn.all_gather), mmengine's DDP wrapper
# (broadcast_buffers, torch>=2.13), mmengine's pkg_resources import
warnings.filterwarnings(
    'ignore', message='torch.distributed.nn.functional.all_gather is '
    'deprecated', category=FutureWarning)
warnings.filterwarnings(
    'ignore', message='`broadcast_buffers` is deprecated',
    category=FutureWarning, module=r'mmengine\.model\.wrappers')
warnings.filterwarnings(
    'ignore', message='pkg_resources is deprecated as an API',
    category=UserWarning)
from .fileio import checkpoint_safety as _checkpoint_safety  # noqa: E402

_checkpoint_safety.install()

from . import datasets, engine, evaluation, models  # noqa: E402,F401
from .models import wrappers  # noqa: E402,F401
from .apis import register_lmclip_models  # noqa: E402

# the configs as mmpretrain model names (mmpretrain.list_models('lmclip*'))
register_lmclip_models()

__all__ = ['__version__']
