"""Running on several processes: ``torchrun`` sets RANK/WORLD_SIZE, hwnas joins the group (gloo on CPU, nccl on
CUDA) and splits work. With one process (no torchrun) every function here is a no-op, so library code calls them
unconditionally.

    torchrun --nproc-per-node 2 -m nas.cli search nasbert ...                     # one machine, 2 processes
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 \\
             --rdzv-backend c10d --rdzv-endpoint HOST:29400 -m nas.cli search nasbert ...   # node 0 of 2
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class World:
    """This process's place among all processes."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def world() -> World:
    """Join the process group torchrun describes (once); a single process without torchrun is ``World(0, 1)``."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(dist.get_rank(), dist.get_world_size())


def groups(w: World, jobs: int):
    """Split the processes into ``min(size, jobs)`` groups, job ``j`` going to group ``j % groups``.

    Returns ``(my group index, my rank in it, its size, its process group or None)``. Every process must call this
    with the same ``jobs`` (new_group is collective).
    """
    if w.size == 1:
        return 0, 0, 1, None
    import torch.distributed as dist

    n = min(w.size, jobs)
    members = [[r for r in range(w.size) if r % n == g] for g in range(n)]
    handles = [dist.new_group(m) for m in members]
    g = w.rank % n
    return g, members[g].index(w.rank), len(members[g]), handles[g]


def average_gradients(params, group, size: int) -> None:
    """All-reduce and average the gradients of ``params`` within ``group`` (what DDP does after backward)."""
    if size <= 1:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    flat /= size
    k = 0
    for g in grads:
        g.copy_(flat[k:k + g.numel()].view_as(g))
        k += g.numel()


def sum_tensor(x: torch.Tensor, group=None) -> torch.Tensor:
    """Sum ``x`` over the processes of ``group`` (in place; a no-op with one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(x, group=group)
    return x


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    """``obj`` of process ``src`` on every process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def shard(rows: torch.Tensor, rank: int, size: int) -> torch.Tensor:
    """This process's contiguous share of a global batch (sizes differ by at most one row)."""
    if size <= 1:
        return rows
    return torch.tensor_split(rows, size)[rank]


__all__ = ["World", "world", "groups", "average_gradients", "sum_tensor", "barrier", "broadcast_object", "shard"]
