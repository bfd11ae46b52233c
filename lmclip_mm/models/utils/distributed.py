"""Collectives with gradient, for losses over the global batch of DDP."""
import torch
import torch.distributed as dist
from mmengine.dist import get_rank, get_world_size

__all__ = ['all_gather_with_grad', 'global_batch_size']


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` whose backward sums each rank's gradient w.r.t. every
    rank's tensor and hands each rank the sum for its own tensor (the
    gradient of ``sum_r loss_r`` when every rank uses the gathered result).
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank = get_rank()
        world_size = get_world_size()
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.stack(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Stack the equally shaped ``tensor`` of every rank, ``(W, *shape)``.

    Every rank must call it (and back-propagate through it). Under DDP,
    whose gradient averaging divides by W, a loss that every rank computes
    from the gathered values back-propagates exactly like one process.
    Without a process group it returns ``tensor[None]``.
    """
    if get_world_size() == 1:
        return tensor[None]
    return _AllGatherWithGrad.apply(tensor)


def global_batch_size(n: int, device) -> torch.Tensor:
    """The sum of ``n`` over all ranks, as a float32 scalar tensor on
    ``device`` (no host synchronisation)."""
    total = torch.tensor(float(n), dtype=torch.float32, device=device)
    if get_world_size() > 1:
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total
