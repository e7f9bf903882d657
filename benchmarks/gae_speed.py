"""GAE on CPU: ``agents.gae.gae`` against a CleanRL-style loop and the streaming floor, same process.

For each size (T, B), float32, one torch thread, with random rewards, values and episode ends:

* the loop over time as CleanRL writes it (no input checks), the baseline;
* ``agents.gae.gae`` (its default path: the compiled loop where numba is installed) and the
  torch loop ``agents.gae.gae_loop``;
* the streaming floor: the time of ``torch.add`` over T x B elements (3 tensors moved),
  scaled to the 4 tensors GAE must move at least (rewards, values, next values in; advantages out).

On CUDA (``--device cuda``) the same loop against the Triton kernel, and the floor is the
device's copy bandwidth: the time of ``copy_`` over T x B float32 elements (2 tensors moved)
scaled to the bytes the kernel moves (3 float32 and 2 bool tensors in, 2 float32 out).

Each time is the median of ``--repeats`` runs after a warm-up (which also compiles).

    python -m benchmarks.gae_speed                      # T=1024 x B=1024 and T=32 x B=16
    python -m benchmarks.gae_speed --sizes 64x8 --repeats 3   # smoke
    python -m benchmarks.gae_speed --device cuda --sizes 1024x4096 1024x65536
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from agents.gae import gae, gae_loop


def cleanrl_loop(rewards, values, next_values, terminated, done, gamma, lam):  # noqa: ANN001
    """The loop of CleanRL's ppo.py, on (T, B) tensors with next values given per step."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    not_terminated, not_done = (~terminated).float(), (~done).float()
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_values[t] * not_terminated[t] - values[t]
        last = delta + gamma * lam * not_done[t] * last
        advantages[t] = last
    return advantages, advantages + values


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(num_steps: int, num_envs: int, repeats: int, device: torch.device) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    shape = (num_steps, num_envs)
    rewards, values, next_values = (torch.randn(shape, generator=generator).to(device) for _ in range(3))
    terminated = (torch.rand(shape, generator=generator) < 0.01).to(device)
    done = terminated | (torch.rand(shape, generator=generator) < 0.01).to(device)
    args = (rewards, values, next_values, terminated, done, 0.99, 0.95)
    out = torch.empty_like(rewards)
    times = {"cleanrl loop": median_seconds(lambda: cleanrl_loop(*args), repeats, device)}
    times["agents.gae.gae"] = median_seconds(lambda: gae(*args), repeats, device)
    if device.type == "cpu":
        times["agents.gae.gae_loop"] = median_seconds(lambda: gae_loop(*args), repeats, device)
        add = median_seconds(lambda: torch.add(rewards, values, out=out), repeats, device)
        times["floor (torch.add x 4/3)"] = add * 4 / 3
    else:
        copy = median_seconds(lambda: out.copy_(rewards), repeats, device)
        times["floor (copy x 2.75)"] = copy * 22 / 8  # bytes moved: 22 per element against 8
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1024x1024", "32x16"], help="TxB")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    for size in args.sizes:
        num_steps, num_envs = (int(x) for x in size.lower().split("x"))
        times = measure(num_steps, num_envs, args.repeats, device)
        baseline, floor = times["cleanrl loop"], list(times.values())[-1]
        print(
            f"T={num_steps} B={num_envs}, float32, {device}, {args.threads} thread(s), "
            f"median of {args.repeats}"
        )
        for name, seconds in times.items():
            print(
                f"  {name:<26}{seconds * 1e3:10.3f} ms   loop / this {baseline / seconds:8.2f}x"
                f"   this / floor {seconds / floor:8.2f}x"
            )


if __name__ == "__main__":
    main()
