"""A DDP model wrapper that also works for models on the CPU (gloo)."""
from mmengine.model import MMDistributedDataParallel
from mmpretrain.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class DeviceAgnosticDDP(MMDistributedDataParallel):
    """:class:`~mmengine.model.MMDistributedDataParallel` for CPU and GPU.

    mmengine's runner always passes ``device_ids=[LOCAL_RANK]`` to DDP, which
    torch rejects for a module that lives on the CPU (multi-process CPU
    training with the gloo backend). This wrapper drops ``device_ids`` (and
    ``output_device``) when the module's parameters are on the CPU and is
    exactly :class:`MMDistributedDataParallel` otherwise, so one config runs
    under ``tools/dist_train.sh`` on GPUs (NCCL) and on CPUs (gloo).

    Like mmengine's default wrapping, ``broadcast_buffers`` defaults to
    False. Use it with
    ``model_wrapper_cfg=dict(type='mmpretrain.DeviceAgnosticDDP')`` (the
    scope prefix is needed: mmengine's runner looks model wrappers up in the
    root registry). ``tools/train.py`` selects it by itself on CPU machines.
    """

    def __init__(self, module, broadcast_buffers: bool = False, **kwargs):
        if _module_device_type(module) == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
        super().__init__(
            module=module, broadcast_buffers=broadcast_buffers, **kwargs)


def _module_device_type(module) -> str:
    for tensor in module.parameters():
        return tensor.device.type
    for tensor in module.buffers():
        return tensor.device.type
    return 'cpu'
