"""The CUDA path of :func:`agents.gae.gae`: one Triton kernel, one pass over the inputs.

Each program owns a block of envs (columns) and walks time backwards, carrying the trace in
registers; loads and stores along the env axis are contiguous (time-major inputs). Runs on
CPU tensors too under Triton's interpreter (``TRITON_INTERPRET=1``), which is how it is
tested on machines without a GPU.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl
from torch import Tensor

BLOCK = 256  # envs per program


@triton.jit
def _gae_kernel(
    rewards,
    values,
    next_values,
    terminated,
    done,
    advantages,
    returns,
    num_steps,
    num_envs,
    gamma,
    trace,
    BLOCK_ENVS: tl.constexpr,
):
    envs = tl.program_id(0) * BLOCK_ENVS + tl.arange(0, BLOCK_ENVS)
    inside = envs < num_envs
    running = tl.zeros([BLOCK_ENVS], dtype=tl.float32)
    for step in range(num_steps):
        offsets = (num_steps - 1 - step) * num_envs + envs
        reward = tl.load(rewards + offsets, mask=inside, other=0.0)
        value = tl.load(values + offsets, mask=inside, other=0.0)
        next_value = tl.load(next_values + offsets, mask=inside, other=0.0)
        ends = tl.load(terminated + offsets, mask=inside, other=0).to(tl.float32)
        cuts = tl.load(done + offsets, mask=inside, other=0).to(tl.float32)
        running = reward + gamma * next_value * (1.0 - ends) - value + trace * running * (1.0 - cuts)
        tl.store(advantages + offsets, running, mask=inside)
        tl.store(returns + offsets, running + value, mask=inside)


def interpreted() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1``), on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def gae_triton(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
    advantages: Tensor,
    returns: Tensor,
) -> None:
    """Writes ``advantages`` and ``returns`` (T, B) float32 from contiguous (T, B) float32 inputs
    and uint8 episode flags, all on one device (:func:`agents.gae.gae` prepares them)."""
    num_steps, num_envs = rewards.shape
    grid = (triton.cdiv(num_envs, BLOCK),)
    _gae_kernel[grid](
        rewards,
        values,
        next_values,
        terminated,
        done,
        advantages,
        returns,
        num_steps,
        num_envs,
        float(gamma),
        float(gamma * lam),
        BLOCK_ENVS=BLOCK,
    )
