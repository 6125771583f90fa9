"""torchrun support: which process this is, and the few collectives the training loop needs.

Launched by `torchrun --nproc_per_node=N training/train.py ...`, every process has RANK and
WORLD_SIZE in its environment; launched plainly, there is one process and every collective here
is a no-op, so the training code reads the same either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # the GPU this process drives

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0 alone runs the LR range test, evaluates and writes files."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: object) -> list:
        """Every process's `obj`, indexed by rank, on every process."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: object) -> object:
        """Rank 0's `obj` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor


def setup_distributed(device_arg: str) -> Dist:
    """Join the process group when torchrun set RANK/WORLD_SIZE: gloo on CPU, nccl on CUDA."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return Dist()
    ctx = Dist(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    use_cuda = device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return ctx


def teardown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
