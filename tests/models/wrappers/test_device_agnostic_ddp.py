"""DeviceAgnosticDDP wraps a CPU module in a 1-process gloo group."""
import socket

import pytest
import torch
import torch.distributed as dist
from mmengine.model import BaseModel

from lmclip_mm.models.wrappers import DeviceAgnosticDDP


class _Model(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.fc(torch.stack(inputs)).pow(2).mean())


@pytest.fixture
def gloo_group():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    dist.init_process_group(
        'gloo', init_method=f'tcp://127.0.0.1:{port}', rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_cpu_module_with_device_ids_wraps_and_trains(gloo_group):
    model = _Model()
    # What mmengine's runner passes: device_ids=[LOCAL_RANK].
    ddp = DeviceAgnosticDDP(module=model, device_ids=[0])
    assert ddp.device_ids is None
    assert ddp.broadcast_buffers is False
    optim = torch.optim.SGD(ddp.parameters(), lr=0.1)
    from mmengine.optim import OptimWrapper
    wrapper = OptimWrapper(optim)
    data = dict(inputs=[torch.ones(3), torch.zeros(3)])
    before = model.fc.weight.detach().clone()
    ddp.train_step(data, wrapper)
    assert not torch.equal(before, model.fc.weight)


def test_plain_mmengine_ddp_rejects_cpu_device_ids(gloo_group):
    # The failure this wrapper exists for.
    from mmengine.model import MMDistributedDataParallel
    with pytest.raises(ValueError):
        MMDistributedDataParallel(module=_Model(), device_ids=[0])
