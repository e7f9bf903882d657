"""Data-parallel training across processes with ``torch.distributed`` (``torchrun``).

Every function here is a no-op in a single process (no process group initialised), so the
agents call them unconditionally and a run without ``torchrun`` computes exactly what it did
before. Under ``torchrun --nproc_per_node=N`` each process (rank) steps its own share of the
envs, and the agents keep their parameters identical on every rank by

* summing gradients across ranks, each rank's gradient weighted by its share of the samples
  of the minibatch (:func:`reduce_gradients`), so a step equals the step of one process on
  the union of the ranks' minibatches;
* drawing minibatch orders from one permutation over all ranks' samples
  (:func:`minibatch_rows`), and standardising advantages with statistics over all ranks
  (:func:`mean_std`);
* deciding everything that changes the update (early stop, refusing a non-finite step, the
  KL controller's input, env-step counters) from quantities summed across ranks
  (:func:`all_sum`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    """Whether a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def launched_world_size() -> int:
    """The number of processes ``torchrun`` started (``WORLD_SIZE``), 1 without it."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def launched_rank() -> int:
    """This process's rank as ``torchrun`` set it (``RANK``), 0 without it."""
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def init(device_type: str) -> torch.device | None:
    """Join the process group ``torchrun`` describes (gloo on CPU, NCCL on CUDA).

    Returns this rank's CUDA device (``cuda:LOCAL_RANK``) for CUDA runs, ``None`` otherwise;
    does nothing when the process was not started by ``torchrun`` with more than one rank.
    """
    if launched_world_size() <= 1 or (dist.is_available() and dist.is_initialized()):
        return None
    if not dist.is_available():
        raise RuntimeError("torchrun started several processes, but this torch has no torch.distributed")
    device = None
    if device_type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    """Where the process group's collectives take tensors: the rank's GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: Tensor) -> Tensor:
    """``values`` summed over the ranks (a new tensor on their device; ``values`` itself in one process)."""
    if not is_distributed():
        return values
    total = values.to(_comm_device(), copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(values.device)


def sum_floats(*values: float) -> list[float]:
    """Python numbers summed over the ranks (the same numbers in one process)."""
    if not is_distributed():
        return [float(v) for v in values]
    return all_sum(torch.tensor(values, dtype=torch.float64)).tolist()


def minibatch_rows(count: int, num_minibatches: int, device: torch.device) -> list[Tensor]:
    """This rank's rows of each minibatch of one epoch.

    One process: ``randperm(count)`` split into ``num_minibatches`` parts, as always. Several:
    one permutation of all ranks' rows (rank 0's RNG, broadcast; ranks' rows numbered in rank
    order) split the same way, each part mapped back to this rank's row indices, so the
    union of the ranks' minibatches is the minibatch one process would draw on the
    concatenated batch.
    """
    if not is_distributed():
        return list(torch.randperm(count, device=device).tensor_split(num_minibatches))
    counts = all_gather_ints(count)
    offset, total = sum(counts[: rank()]), sum(counts)
    if rank() == 0:
        order = torch.randperm(total, device=device).to(_comm_device())
    else:
        order = torch.empty(total, dtype=torch.long, device=_comm_device())
    dist.broadcast(order, src=0)
    order = order.to(device)
    parts = []
    for part in order.tensor_split(num_minibatches):
        mine = (part >= offset) & (part < offset + count)
        parts.append(part[mine] - offset)
    return parts


def all_gather_ints(value: int) -> list[int]:
    """``value`` of every rank, in rank order."""
    if not is_distributed():
        return [int(value)]
    local = torch.tensor([value], dtype=torch.long, device=_comm_device())
    gathered = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(gathered, local)
    return [int(t.item()) for t in gathered]


def mean_std(values: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased standard deviation of all ranks' ``values`` together (any rank may have none)."""
    x = values.detach().double().reshape(-1)
    stats = all_sum(torch.stack([x.new_tensor(float(x.numel())), x.sum(), (x * x).sum()]))
    count, total, squares = stats[0], stats[1], stats[2]
    mean = total / count.clamp(min=1)
    var = (squares - count * mean * mean) / (count - 1).clamp(min=1)
    return mean.to(values.dtype), var.clamp(min=0).sqrt().to(values.dtype)


def trainable(parameters: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    return [p for p in parameters if p.requires_grad]


def reduce_gradients(parameters: Iterable[nn.Parameter], weight: float) -> None:
    """Replace each gradient by the sum over ranks of ``weight * gradient``.

    ``weight`` is this rank's share of the minibatch's samples, so the result is the gradient
    of the mean loss over all ranks' samples. Missing gradients count as zeros. No-op in one
    process (where the weight is 1).
    """
    if not is_distributed():
        return
    params = trainable(parameters)
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params]) * weight
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    start = 0
    for p in params:
        size = p.numel()
        p.grad.copy_(flat[start : start + size].view_as(p.grad))
        start += size


def parameter_checksum(module: nn.Module) -> float:
    """A number that differs between ranks whose parameters differ (sum of |p| and of p * i)."""
    total = 0.0
    for index, p in enumerate(module.parameters()):
        data = p.detach().double()
        total += float(data.abs().sum()) + (index + 1) * float(data.sum())
    return total


def modules_of(obj: Any) -> nn.ModuleList:
    """The ``nn.Module`` attributes of ``obj`` (an agent's networks), together."""
    return nn.ModuleList([value for value in vars(obj).values() if isinstance(value, nn.Module)])


def check_in_sync(module: nn.Module, what: str) -> None:
    """Raise on every rank when ``module``'s parameters differ between ranks."""
    if not is_distributed():
        return
    checksum = torch.tensor([parameter_checksum(module)], dtype=torch.float64, device=_comm_device())
    gathered = [torch.empty_like(checksum) for _ in range(world_size())]
    dist.all_gather(gathered, checksum)
    values = [float(t) for t in gathered]
    if max(values) - min(values) > 1e-9 * max(1.0, max(abs(v) for v in values)):
        raise RuntimeError(f"{what}: parameters differ between ranks (checksums {values})")


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (in rank order), ``None`` on the others; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()
