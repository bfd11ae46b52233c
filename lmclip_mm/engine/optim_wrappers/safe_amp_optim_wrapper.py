# Copyright (c) lmclip_mm authors.
"""AmpOptimWrapper that refuses to step with a non-finite loss."""
from typing import Optional

from mmengine.optim import AmpOptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

from .safe_optim_wrapper import SafeOptimWrapperMixin


@OPTIM_WRAPPERS.register_module()
class SafeAmpOptimWrapper(SafeOptimWrapperMixin, AmpOptimWrapper):
    """:class:`~mmengine.optim.AmpOptimWrapper` with the checks of
    :class:`~lmclip_mm.engine.optim_wrappers.SafeOptimWrapper`.

    The loss is checked; the gradients are not by default
    (``check_grads=False``): with a loss scaler, non-finite gradients are
    the normal sign of a too large scale, and the scaler already skips that
    step and lowers the scale. Config (what ``--amp`` should select when the
    config uses ``SafeOptimWrapper``)::

        optim_wrapper = dict(type='SafeAmpOptimWrapper', loss_scale='dynamic',
                             optimizer=dict(type='AdamW', lr=1e-4))
    """

    def __init__(self, *args, check_grads: bool = False,
                 on_nonfinite: str = 'stop',
                 max_consecutive_skips: Optional[int] = 10,
                 **kwargs) -> None:
        super().__init__(
            *args,
            check_grads=check_grads,
            on_nonfinite=on_nonfinite,
            max_consecutive_skips=max_consecutive_skips,
            **kwargs)
