"""What ``torchrun`` changes in a training run: one process per rank, each with its share of the envs.

``torchrun --nproc_per_node=N -m agents.train ...`` starts N copies of the run. Each joins
the process group (:func:`agents.core.distributed.init`), steps ``num_envs / N`` envs, and
seeds its envs and RNGs with ``seed + rank * num_envs / N`` (so the envs of a generic
Gymnasium run get the seeds one process would give them). The agents keep their parameters
identical across ranks (:mod:`agents.core.distributed`); only rank 0 writes the run
directory: logs, checkpoints (holding every rank's env and RNG state, so a resume continues
each rank where it stopped) and ``metrics.json``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from agents.core import distributed
from agents.run.jobs import in_multirun, prepare_command_line

RANK_OVERRIDES = ("hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled")
"""Hydra overrides for ranks > 0: they write no Hydra directory or log of their own."""


@dataclass
class Ranks:
    """This process's place in the run: rank, world size, its device, env count and seed."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    num_envs: int = 1
    seed: int = 0

    @property
    def env_overrides(self) -> dict[str, Any]:
        """Constructor arguments of this rank's vector env (its share of ``num_envs``)."""
        return {"num_envs": self.num_envs} if self.world > 1 else {}


def rank_argv(argv: list[str]) -> list[str]:
    """The command line of this process: ranks > 0 of a ``torchrun`` run get :data:`RANK_OVERRIDES`."""
    if distributed.launched_world_size() > 1 and distributed.launched_rank() > 0:
        return [*argv, "hydra.run.dir=.", *RANK_OVERRIDES]
    return argv


def start(cfg: DictConfig, device: torch.device) -> Ranks:
    """Join the ``torchrun`` process group if there is one; this rank's share of the run.

    Raises ``ValueError`` naming the numbers when ``num_envs`` does not split evenly, and
    when asked to run inside a multirun sweep.
    """
    world = distributed.launched_world_size()
    num_envs, seed = int(cfg.num_envs), int(cfg.seed)
    if world <= 1:
        return Ranks(device=device, num_envs=num_envs, seed=seed)
    if in_multirun():
        raise ValueError(
            "torchrun runs one training job; sweep with a Hydra launcher (hydra/launcher=...) instead of -m"
        )
    if num_envs % world:
        raise ValueError(
            f"num_envs={num_envs} does not split evenly over {world} processes (torchrun "
            f"--nproc_per_node={world}); use a multiple of {world}, "
            f"e.g. num_envs={world * max(1, num_envs // world)}"
        )
    rank_device = distributed.init(device.type) or device
    rank = distributed.rank()
    local = num_envs // world
    return Ranks(rank=rank, world=world, device=rank_device, num_envs=local, seed=seed + rank * local)


def check_agent(agent: Any) -> None:
    """Refuse agents that cannot share their learning across processes."""
    if distributed.is_distributed() and not getattr(agent, "data_parallel", False):
        raise ValueError(
            f"{type(agent).__name__} does not support data-parallel training (it has no gradients to "
            "share across processes); run it in one process, without torchrun"
        )


def stop() -> None:
    """Wait for every rank, then leave the process group (no-op in one process)."""
    if distributed.is_distributed():
        distributed.barrier()
    distributed.shutdown()


def main_argv() -> None:
    """Before Hydra reads ``sys.argv``: stop if a chosen launcher or sweeper plugin is missing,
    keep the command line for the run names of a sweep's jobs, give ranks > 0 their Hydra overrides."""
    prepare_command_line()
    sys.argv[:] = rank_argv(sys.argv)
