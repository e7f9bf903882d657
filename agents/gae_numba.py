"""The compiled CPU loop of :func:`agents.gae.gae` (imported only where numba is installed).

One pass over the inputs in memory order: time backwards, envs innermost, branch-free, in the
same float32 operations and order as the torch loop, so its results are bitwise the loop's
(no fast-math: contracted or reordered arithmetic would make results depend on the arrays'
alignment, and a resumed run would no longer be bitwise the uninterrupted one). Compiled on
first use and cached on disk next to this file.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def gae_kernel(rewards, values, next_values, terminated, done, gamma, lam, advantages, returns):  # noqa: ANN001
    """Writes ``advantages`` and ``returns`` (T, B) float32 from (T, B) float32 arrays and the
    episode flags as (T, B) uint8 arrays (0 or 1)."""
    num_steps, num_envs = rewards.shape
    running = np.zeros(num_envs, dtype=np.float32)
    discount = np.float32(gamma)
    trace = np.float32(gamma * lam)
    for t in range(num_steps - 1, -1, -1):
        reward, value, next_value = rewards[t], values[t], next_values[t]
        ends, cuts = terminated[t], done[t]
        advantage_row, return_row = advantages[t], returns[t]
        for b in range(num_envs):
            keeps = np.float32(1) - np.float32(ends[b])
            continues = np.float32(1) - np.float32(cuts[b])
            advantage = (
                reward[b] + discount * next_value[b] * keeps - value[b] + trace * continues * running[b]
            )
            running[b] = advantage
            advantage_row[b] = advantage
            return_row[b] = advantage + value[b]
