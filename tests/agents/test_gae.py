"""GAE: a hand-computed case, agreement with the reference loop, flags and input checks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.gae import gae, gae_reference

torch.set_num_threads(1)


def _hand_case(dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    # Column 0: one episode that terminates at t=2. Column 1: truncated at t=1, then a new episode.
    return {
        "rewards": torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]], dtype=dtype),
        "values": torch.tensor([[0.5, 1.0], [1.0, 2.0], [1.5, 0.5]], dtype=dtype),
        "next_values": torch.tensor([[1.0, 2.0], [1.5, 4.0], [3.0, 1.0]], dtype=dtype),
        "terminated": torch.tensor([[False, False], [False, False], [True, False]]),
        "done": torch.tensor([[False, False], [False, True], [True, False]]),
    }


def test_hand_computed_three_steps() -> None:
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    # Column 0 (terminated at t=2, so its next value 3.0 is ignored):
    #   t=2: delta = 2 + 0         - 1.5 = 0.5    A = 0.5
    #   t=1: delta = 0 + 0.9 * 1.5 - 1.0 = 0.35   A = 0.35 + 0.72 * 0.5  = 0.71
    #   t=0: delta = 1 + 0.9 * 1.0 - 0.5 = 1.4    A = 1.4  + 0.72 * 0.71 = 1.9112
    # Column 1 (truncated at t=1: bootstraps from 4.0 but the trace from t=2 is cut):
    #   t=2: delta = 0 + 0.9 * 1.0 - 0.5 = 0.4    A = 0.4
    #   t=1: delta = 1 + 0.9 * 4.0 - 2.0 = 2.6    A = 2.6
    #   t=0: delta = 0 + 0.9 * 2.0 - 1.0 = 0.8    A = 0.8  + 0.72 * 2.6  = 2.672
    expected_advantages = torch.tensor([[1.9112, 2.672], [0.71, 2.6], [0.5, 0.4]])
    expected_returns = expected_advantages + _hand_case()["values"]

    for fn in (gae, gae_reference):
        advantages, returns = fn(**_hand_case(), gamma=gamma, lam=lam)
        torch.testing.assert_close(advantages, expected_advantages)
        torch.testing.assert_close(returns, expected_returns)


def test_truncation_bootstraps_and_termination_does_not() -> None:
    zeros = torch.zeros(1, 2)
    advantages, returns = gae(
        rewards=zeros,
        values=zeros,
        next_values=torch.full((1, 2), 5.0),
        terminated=torch.tensor([[False, True]]),
        done=torch.tensor([[True, True]]),
        gamma=0.5,
        lam=0.9,
    )
    torch.testing.assert_close(advantages, torch.tensor([[2.5, 0.0]]))
    torch.testing.assert_close(returns, advantages)


def _random_inputs(
    shape: tuple[int, int], generator: torch.Generator, terminated: torch.Tensor, done: torch.Tensor
) -> dict[str, torch.Tensor]:
    """GAE inputs: standard-normal rewards, values and next values with the given flags."""
    floats = {name: torch.randn(shape, generator=generator) for name in ("rewards", "values", "next_values")}
    return {**floats, "terminated": terminated, "done": done}


@settings(max_examples=60, deadline=None)
@given(
    num_steps=st.integers(1, 12),
    num_envs=st.integers(1, 6),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_on_random_flags(
    num_steps: int, num_envs: int, gamma: float, lam: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    shape = (num_steps, num_envs)
    terminated = torch.rand(shape, generator=generator) < 0.2
    truncated = torch.rand(shape, generator=generator) < 0.2
    inputs = _random_inputs(shape, generator, terminated, terminated | truncated)
    advantages, returns = gae(**inputs, gamma=gamma, lam=lam)
    expected_advantages, expected_returns = gae_reference(**inputs, gamma=gamma, lam=lam)
    torch.testing.assert_close(advantages, expected_advantages, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(returns, expected_returns, rtol=1e-5, atol=1e-5)


def test_float64_inputs_give_float32() -> None:
    advantages, returns = gae(**_hand_case(torch.float64), gamma=0.9, lam=0.8)
    assert advantages.dtype == returns.dtype == torch.float32
    expected, _ = gae_reference(**_hand_case(), gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages, expected)


def test_empty_rollout() -> None:
    empty = torch.zeros(0, 3)
    flags = torch.zeros(0, 3, dtype=torch.bool)
    advantages, returns = gae(empty, empty, empty, flags, flags, gamma=0.9, lam=0.9)
    assert advantages.shape == returns.shape == (0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda() -> None:
    inputs = {k: v.cuda() for k, v in _hand_case().items()}
    advantages, _ = gae(**inputs, gamma=0.9, lam=0.8)
    assert advantages.device.type == "cuda"
    expected, _ = gae_reference(**_hand_case(), gamma=0.9, lam=0.8)
    torch.testing.assert_close(advantages.cpu(), expected)


@pytest.mark.parametrize(
    ("field", "bad", "error", "message"),
    [
        ("values", torch.zeros(3, 3), ValueError, "values has shape"),
        ("done", torch.zeros(2, 2, dtype=torch.bool), ValueError, "done has shape"),
        ("terminated", torch.zeros(3, 2, dtype=torch.int64), TypeError, "terminated must be a bool"),
        ("rewards", torch.zeros(3, 2, dtype=torch.int64), TypeError, "rewards must be a floating"),
        ("next_values", [[0.0, 0.0]] * 3, TypeError, "next_values must be a torch.Tensor"),
    ],
)
def test_bad_inputs_raise(field: str, bad: object, error: type[Exception], message: str) -> None:
    inputs = _hand_case()
    inputs[field] = bad  # type: ignore[assignment]
    with pytest.raises(error, match=message):
        gae(**inputs, gamma=0.9, lam=0.8)


def test_rewards_must_be_time_major_2d() -> None:
    flat = torch.zeros(3)
    with pytest.raises(ValueError, match=r"must be \(T, B\)"):
        gae(flat, flat, flat, flat.bool(), flat.bool(), gamma=0.9, lam=0.8)


def _available_backends() -> list[str]:
    from agents.gae import _numba_kernel

    return ["loop"] + (["numba"] if _numba_kernel() is not None else [])


def _flags(
    kind: str, shape: tuple[int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    if kind == "all":
        return torch.ones(shape, dtype=torch.bool), torch.ones(shape, dtype=torch.bool)
    if kind == "none":
        return torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
    terminated = torch.rand(shape, generator=generator) < 0.05
    return terminated, terminated | (torch.rand(shape, generator=generator) < 0.05)


@pytest.mark.parametrize("backend", _available_backends())
@pytest.mark.parametrize(
    ("num_steps", "num_envs", "kind", "gamma", "lam"),
    [
        (1, 1, "random", 0.99, 0.95),
        (64, 8, "all", 0.99, 0.95),
        (64, 8, "none", 0.99, 0.95),
        (257, 33, "random", 0.99, 0.95),
        (3000, 3, "none", 1.0, 1.0),  # no discount over a long horizon: the trace never shrinks
        (500, 4, "random", 1.0, 1.0),
    ],
)
def test_every_backend_matches_the_float64_reference(
    backend: str, num_steps: int, num_envs: int, kind: str, gamma: float, lam: float
) -> None:
    generator = torch.Generator().manual_seed(num_steps * 31 + num_envs)
    shape = (num_steps, num_envs)
    terminated, done = _flags(kind, shape, generator)
    inputs = _random_inputs(shape, generator, terminated, done)
    advantages, returns = gae(**inputs, gamma=gamma, lam=lam, backend=backend)
    expected, expected_returns = gae_reference(**inputs, gamma=gamma, lam=lam, dtype=torch.float64)
    for got, want in ((advantages, expected), (returns, expected_returns)):
        error = (got.double() - want).abs().max() / want.abs().max().clamp(min=1e-12)
        assert float(error) <= 1e-5, f"{backend}: relative max-norm error {float(error):.2e}"


def test_unknown_or_unavailable_backend_is_refused() -> None:
    case = _hand_case()
    with pytest.raises(ValueError, match=r"unknown backend 'fast' \(valid: auto, loop, numba, triton\)"):
        gae(**case, gamma=0.9, lam=0.9, backend="fast")
    if "numba" in _available_backends() and not torch.cuda.is_available():
        return
    with pytest.raises(ValueError, match="backend='numba' runs on CPU tensors with numba installed"):
        moved = {k: v.cuda() for k, v in case.items()} if torch.cuda.is_available() else case
        gae(**moved, gamma=0.9, lam=0.9, backend="numba")


TRITON_CHECK = """
import torch
from agents.gae import gae, gae_reference
cases = [(1, 1, 0.99, 0.95), (64, 300, 0.99, 0.95), (700, 5, 1.0, 1.0)]
for num_steps, num_envs, gamma, lam in cases:
    g = torch.Generator().manual_seed(num_steps)
    shape = (num_steps, num_envs)
    terminated = torch.rand(shape, generator=g) < 0.05
    inputs = dict(
        rewards=torch.randn(shape, generator=g), values=torch.randn(shape, generator=g),
        next_values=torch.randn(shape, generator=g), terminated=terminated,
        done=terminated | (torch.rand(shape, generator=g) < 0.05),
    )
    got = gae(**inputs, gamma=gamma, lam=lam, backend="triton")
    want = gae_reference(**inputs, gamma=gamma, lam=lam, dtype=torch.float64)
    for a, b in zip(got, want):
        error = float((a.double() - b).abs().max() / b.abs().max())
        assert error <= 1e-5, (num_steps, num_envs, error)
print("ok")
"""


def test_triton_kernel_matches_the_reference_under_the_interpreter() -> None:
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (it comes with CUDA builds of torch; pip install triton)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.parametrize("backend", _available_backends())
def test_every_cpu_backend_is_bitwise_the_torch_loop(backend: str) -> None:
    # exact equality keeps runs reproducible whatever path and memory alignment (resume is bitwise)
    from agents.gae import gae_loop

    for num_steps, num_envs in ((1, 1), (37, 129), (256, 64)):
        generator = torch.Generator().manual_seed(num_steps)
        shape = (num_steps, num_envs)
        terminated, done = _flags("random", shape, generator)
        inputs = _random_inputs(shape, generator, terminated, done)
        for offset in (0, 1):  # a view one element in: another alignment of the same values
            shifted = {
                k: torch.cat([v.flatten()[:offset], v.flatten()])[offset:].view(shape)
                for k, v in inputs.items()
            }
            got = gae(**shifted, gamma=0.99, lam=0.95, backend=backend)
            want = gae_loop(**inputs, gamma=0.99, lam=0.95)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
