"""Data-parallel training under ``torchrun``: one process (rank) per GPU, or per CPU share.

Every rank runs the same pipeline with the same seeds, so every rank draws the same batch
order and the same augmentations; within each global batch a rank takes a contiguous
shard of the samples (``shard``).  A step is one collective decision: each rank
backpropagates its shard's mean loss weighted by its share of the batch, the gradients
are summed across ranks in one flat buffer (``reduce_gradients``), so every rank applies
the gradient a single process would compute on the whole batch and the weights stay
equal everywhere.  BatchNorm's running statistics are averaged after each step; the
batch statistics themselves are per shard, the one difference from a single process.

The gradients are reduced explicitly rather than by ``DistributedDataParallel``'s
reducer: IEU's unlearning steps give each rank its own share of the queued samples,
which may be none at all, and a step must be skipped by all ranks together when no rank
has a finite loss; DDP requires every rank to run a backward pass through the wrapped
model in every synchronised step.

Outside ``torchrun`` (no process group) every function here is the single-process
identity, with no communication.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

# torchrun's variables; a process group is started from them
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous block of ``n`` items (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def world() -> World:
    """The ranks of the running process group, or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def launched_ranks() -> int:
    """How many ranks torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 outside torchrun), readable before the
    process group is joined."""
    return int(os.environ.get("RANK", "0"))


def start(timeout_minutes: float = 30.0) -> World:
    """Join the process group that torchrun's variables describe: NCCL with one GPU per
    rank (``LOCAL_RANK``) where this machine has a GPU for each of its ranks, else gloo.
    Outside torchrun, a world of one and nothing is started."""
    if dist.is_initialized() or launched_ranks() <= 1:
        return world()
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE is {launched_ranks()} but {', '.join(missing)} are not set; "
            "start the run with torchrun (docs/scaling.md)"
        )
    # NCCL needs a GPU of its own per rank; with fewer GPUs than ranks on this machine
    # the ranks share them through gloo
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", launched_ranks()))
    cuda = torch.cuda.is_available() and torch.cuda.device_count() >= local_ranks
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(minutes=timeout_minutes))
    here = world()
    log.info(
        "rank %d of %d joined the process group (%s)", here.rank, here.size, dist.get_backend()
    )
    if not here.main:
        # one copy of the run's log, from rank 0; the others report warnings and errors
        logging.disable(logging.INFO)
    return here


def join(enabled: bool) -> World:
    """The run's world: the torchrun ranks where ``distributed: true``, else one process.
    Several ranks without the setting would each write every artifact: refused."""
    ranks = launched_ranks()
    if ranks > 1 and not enabled:
        raise RuntimeError(
            f"torchrun started {ranks} ranks but the parameter distributed is false; "
            "add --params distributed=true (or set it in parameters.yml)"
        )
    return start() if enabled else World()


def stop() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        logging.disable(logging.NOTSET)


def _device() -> torch.device:
    """Where the collectives' tensors live: CUDA for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: Sequence[float]) -> np.ndarray:
    """Element-wise sums over ranks of ``values`` (float64; ``values`` itself for one rank)."""
    if world().size == 1:
        return np.asarray(values, dtype=np.float64)
    tensor = torch.tensor(list(values), dtype=torch.float64, device=_device())
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


def all_gather(values: np.ndarray) -> np.ndarray:
    """Every rank's 1-D int64 ``values`` (lengths may differ), concatenated in rank order."""
    here = world()
    values = np.asarray(values, dtype=np.int64)
    if here.size == 1:
        return values
    lengths = all_sum([len(values) if r == here.rank else 0 for r in range(here.size)])
    longest = int(lengths.max())
    padded = torch.zeros(longest, dtype=torch.int64, device=_device())
    padded[: len(values)] = torch.from_numpy(values)
    parts = [torch.empty_like(padded) for _ in range(here.size)]
    dist.all_gather(parts, padded)
    return np.concatenate([p[: int(n)].cpu().numpy() for p, n in zip(parts, lengths, strict=True)])


def reduce_sum(tensor: torch.Tensor) -> None:
    """``tensor`` replaced, in place, by its sum over the ranks."""
    if world().size == 1:
        return
    buffer = tensor.to(_device())
    dist.all_reduce(buffer)
    tensor.copy_(buffer)


def broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (before the first step)."""
    if world().size == 1:
        return
    for tensor in [*model.parameters(), *model.buffers()]:
        buffer = tensor.data.to(_device())
        dist.broadcast(buffer, src=0)
        tensor.data.copy_(buffer)


def reduce_gradients(params: Sequence[nn.Parameter]) -> None:
    """Sum every parameter's gradient over the ranks in one flat buffer.  A parameter
    with a gradient on some rank gets one on every rank (zeros where it had none); one
    without a gradient anywhere keeps none, as in a single process."""
    if world().size == 1:
        return
    has = all_sum([float(p.grad is not None) for p in params])
    used = [p for p, n in zip(params, has, strict=True) if n > 0]
    if not used:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in used]
    ).to(_device())
    dist.all_reduce(flat)
    flat = flat.to(used[0].device)
    offset = 0
    for p in used:  # views into the reduced buffer, no copies
        p.grad = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()


def average_buffers(model: nn.Module) -> None:
    """BatchNorm's running means and variances averaged over the ranks."""
    here = world()
    if here.size == 1:
        return
    buffers = [
        b
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        for b in (m.running_mean, m.running_var)
        if b is not None
    ]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1) for b in buffers]).to(_device())
    dist.all_reduce(flat)
    flat = flat.to(buffers[0].device) / here.size
    offset = 0
    for buffer in buffers:  # one collective for all of them
        buffer.data.copy_(flat[offset : offset + buffer.numel()].view_as(buffer))
        offset += buffer.numel()


def on_main(write: Callable[[], None], what: str) -> None:
    """Run ``write`` on rank 0 only; every rank returns once it has finished, and the
    other ranks raise if it failed (rank 0 raises its own error)."""
    here = world()
    if here.size == 1:
        write()
        return
    error: BaseException | None = None
    if here.main:
        try:
            write()
        except BaseException as exc:  # reported to the other ranks, then re-raised
            error = exc
    failed = all_sum([float(error is not None)])[0]
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"rank 0 failed to write {what}; see its log")
