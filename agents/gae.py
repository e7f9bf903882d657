"""Generalized Advantage Estimation: the one implementation every agent calls.

With ``delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)``, the advantage is
``A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}`` and the return target is
``R_t = A_t + V(s_t)``.

``terminated`` (the episode reached a terminal state) cuts the bootstrap: the value of the
next state is zero. ``done`` (terminated or truncated) cuts the trace: the next step belongs
to another episode. A truncated step therefore still bootstraps from ``next_values``, which
must hold the value of the episode's final observation, not of the reset observation.

:func:`gae` picks the fastest correct path: on CUDA one Triton kernel (a single pass, the
trace in registers), on CPU a compiled loop (numba: one branch-free pass over the inputs in
memory order), and without them the loop over time in torch (:func:`gae_loop`, one vector
step per time step).
:func:`gae_reference` (Python floats) is the oracle every path is tested against.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import Tensor

BACKENDS = ("auto", "loop", "numba", "triton")


def _check_inputs(
    rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor, done: Tensor
) -> None:
    named = {
        "rewards": rewards,
        "values": values,
        "next_values": next_values,
        "terminated": terminated,
        "done": done,
    }
    for name, tensor in named.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"gae: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if rewards.dim() != 2:
        raise ValueError(f"gae: rewards must be (T, B), got shape {tuple(rewards.shape)}")
    for name, tensor in named.items():
        if tensor.shape != rewards.shape:
            raise ValueError(
                f"gae: {name} has shape {tuple(tensor.shape)}, expected (T, B) = {tuple(rewards.shape)} "
                "like rewards"
            )
        if tensor.device != rewards.device:
            raise ValueError(f"gae: {name} is on {tensor.device}, rewards on {rewards.device}")
    for name in ("rewards", "values", "next_values"):
        if not named[name].is_floating_point():
            raise TypeError(f"gae: {name} must be a floating-point tensor, got {named[name].dtype}")
    for name in ("terminated", "done"):
        if named[name].dtype != torch.bool:
            raise TypeError(f"gae: {name} must be a bool tensor, got {named[name].dtype}")


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Advantages and return targets by GAE(gamma, lam), computed backwards in time.

    Shapes: rewards, values, next_values, terminated, done: (T, B) -> advantages, returns: (T, B).

    Args:
        rewards: reward received after the action at step t (any float dtype).
        values: V(s_t) from the behaviour policy's critic.
        next_values: V(s_{t+1}); for a step that ended an episode, the value of its final
            observation (ignored when that step is terminated).
        terminated: bool, the step reached a terminal state (no bootstrap).
        done: bool, the step ended the episode, terminated or truncated (trace reset).
        gamma: discount factor.
        lam: GAE trace-decay parameter (0 = one-step TD, 1 = Monte Carlo with bootstrap).
        backend: ``"auto"`` (on CUDA the Triton kernel when Triton is installed, on CPU the
            compiled loop when numba is, else the torch loop), ``"loop"``, ``"numba"`` (CPU
            tensors) or ``"triton"`` (CUDA tensors; CPU ones under ``TRITON_INTERPRET=1``).

    Returns:
        ``(advantages, returns)``, float32 on the inputs' device; ``returns = advantages + values``.
    """
    _check_inputs(rewards, values, next_values, terminated, done)
    if backend not in BACKENDS:
        raise ValueError(f"gae: unknown backend {backend!r} (valid: {', '.join(BACKENDS)})")
    on_cpu = rewards.device.type == "cpu"
    if backend == "numba" and (not on_cpu or _numba_kernel() is None):
        why = "numba is not installed" if on_cpu else f"the inputs are on {rewards.device}"
        raise ValueError(f"gae: backend='numba' runs on CPU tensors with numba installed, but {why}")
    if backend == "triton":
        triton_gae = _triton_gae()
        if triton_gae is None or not (rewards.device.type == "cuda" or _triton_interpreted()):
            why = "Triton is not installed" if triton_gae is None else f"the inputs are on {rewards.device}"
            raise ValueError(
                f"gae: backend='triton' runs on CUDA tensors (CPU ones under TRITON_INTERPRET=1), but {why}"
            )
        return _run_kernel(triton_gae, rewards, values, next_values, terminated, done, gamma, lam)
    if backend == "auto" and rewards.device.type == "cuda" and _triton_gae() is not None:
        return _run_kernel(_triton_gae(), rewards, values, next_values, terminated, done, gamma, lam)
    if backend != "loop" and on_cpu and _numba_kernel() is not None:
        return _run_kernel(_numba_on_tensors, rewards, values, next_values, terminated, done, gamma, lam)
    return _loop(rewards, values, next_values, terminated, done, gamma, lam)


def gae_loop(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """:func:`gae` as a loop over time in torch, on any device (one vector step per time step)."""
    _check_inputs(rewards, values, next_values, terminated, done)
    return _loop(rewards, values, next_values, terminated, done, gamma, lam)


def _loop(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    rewards, values, next_values = (x.to(torch.float32) for x in (rewards, values, next_values))
    bootstrap = (~terminated).to(torch.float32)
    continues = (~done).to(torch.float32)
    deltas = rewards + gamma * bootstrap * next_values - values
    advantages = torch.empty_like(deltas)
    running = deltas.new_zeros(deltas.shape[1])
    for t in reversed(range(deltas.shape[0])):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running
    return advantages, advantages + values


@cache
def _numba_kernel() -> Any:
    """The compiled CPU loop (:mod:`agents.gae_numba`), or None without numba."""
    try:
        from agents.gae_numba import gae_kernel
    except ImportError:
        return None
    return gae_kernel


@cache
def _triton_gae() -> Any:
    """The Triton kernel's launcher (:mod:`agents.gae_triton`), or None without Triton."""
    try:
        from agents.gae_triton import gae_triton
    except ImportError:
        return None
    return gae_triton


def _triton_interpreted() -> bool:
    from agents.gae_triton import interpreted

    return interpreted()


def _run_kernel(
    kernel: Any,
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Call a compiled path ``kernel(rewards, values, next_values, terminated, done, gamma, lam,
    advantages, returns)`` on contiguous float32 inputs, uint8 flags and fresh float32 outputs."""
    r, v, nv = (x.detach().to(torch.float32).contiguous() for x in (rewards, values, next_values))
    ends, cuts = (x.contiguous().view(torch.uint8) for x in (terminated, done))
    advantages, returns = torch.empty_like(r), torch.empty_like(r)
    if r.numel():
        kernel(r, v, nv, ends, cuts, float(gamma), float(lam), advantages, returns)
    return advantages, returns


def _numba_on_tensors(*tensors_and_numbers: Any) -> None:
    """The numba kernel called on the numpy views of CPU tensors."""
    _numba_kernel()(*(x.numpy() if isinstance(x, Tensor) else x for x in tensors_and_numbers))


def gae_reference(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    done: Tensor,
    gamma: float,
    lam: float,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """GAE as a plain double loop over envs and steps, in Python floats: the test oracle.

    Shapes: rewards, values, next_values, terminated, done: (T, B) -> advantages, returns: (T, B),
    of ``dtype`` (float64 keeps the oracle's precision).
    """
    _check_inputs(rewards, values, next_values, terminated, done)
    num_steps, num_envs = rewards.shape
    r, v, nv = rewards.tolist(), values.tolist(), next_values.tolist()
    term, dn = terminated.tolist(), done.tolist()
    advantages = [[0.0] * num_envs for _ in range(num_steps)]
    for b in range(num_envs):
        following = 0.0
        for t in reversed(range(num_steps)):
            next_value = 0.0 if term[t][b] else nv[t][b]
            delta = r[t][b] + gamma * next_value - v[t][b]
            trace = 0.0 if dn[t][b] else following
            advantages[t][b] = delta + gamma * lam * trace
            following = advantages[t][b]
    adv = torch.tensor(advantages, dtype=dtype, device=rewards.device).reshape(num_steps, num_envs)
    return adv, adv + values.to(dtype)
