"""Experience replay: a fixed-capacity ring buffer of transitions kept on the agent's device.

Observations are opaque tensors: the buffer stores whatever shape and dtype the first
transitions arrive with (token ids, board cells, pixels) and never interprets them.

The buffer's contents are part of the agent's ``state_dict`` so that training resumes
exactly. That state can be large: ``capacity`` times the bytes of one transition
(two observations, two masks of ``A`` bools each, and a few scalars). See
:meth:`ReplayBuffer.memory_bytes`; for large action spaces where every action is always
legal, build the buffer with ``store_action_masks=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from agents.core.base import Observation, Rollout, map_observation


@dataclass
class ReplayBatch:
    """A batch of transitions, flat (no time axis).

    Shapes: N transitions, A actions.
        obs, next_obs: (N, *obs_shape) of any dtype, or a dict of such tensors.
        action_masks, next_action_masks: (N, A) bool (True = legal), or ``None`` when
            the buffer does not store masks (every action legal).
        actions: (N,) int64. rewards: (N,) float32.
        terminated: (N,) bool; truncation is not stored because a truncated step still
            bootstraps from its next observation.
    """

    obs: Observation
    action_masks: Tensor | None
    actions: Tensor
    rewards: Tensor
    next_obs: Observation
    next_action_masks: Tensor | None
    terminated: Tensor

    def __len__(self) -> int:
        return int(self.actions.shape[0])


MASK_FIELDS = ("action_masks", "next_action_masks")


def flatten_rollout(rollout: Rollout, keep_action_masks: bool = True) -> ReplayBatch:
    """The rollout's valid transitions as one flat batch, in time-major order (padding dropped).

    Shapes: rollout fields (T, B, ...) -> batch fields (N, ...), N = ``rollout.num_valid``.
    """
    keep = rollout.valid_mask.flatten()

    def flat(x: Tensor) -> Tensor:
        return x.flatten(0, 1)[keep]

    def flat_mask(x: Tensor | None) -> Tensor | None:
        return flat(x).bool() if keep_action_masks and x is not None else None

    return ReplayBatch(
        obs=map_observation(flat, rollout.obs),
        action_masks=flat_mask(rollout.action_masks),
        actions=flat(rollout.actions).long(),
        rewards=flat(rollout.rewards).float(),
        next_obs=map_observation(flat, rollout.next_obs),
        next_action_masks=flat_mask(rollout.next_action_masks),
        terminated=flat(rollout.terminated).bool(),
    )


def _leaves(name: str, value: Any) -> dict[str, Tensor]:
    """Flat storage keys: ``obs`` for a tensor, ``obs/<key>`` for each tensor of a dict."""
    if isinstance(value, dict):
        return {f"{name}/{key}": item for key, item in value.items()}
    return {name: value}


class ReplayBuffer:
    """Fixed-capacity FIFO store of transitions with uniform sampling.

    Storage for all ``capacity`` transitions is allocated on ``device`` at the first
    :meth:`add`, from the shapes and dtypes of the transitions given (dict observations are
    stored key by key); later adds must match them. When full, each new transition
    overwrites the oldest one. Action masks are stored when ``store_action_masks`` is set and
    the first transitions carry them.
    """

    def __init__(self, capacity: int, device: torch.device | str = "cpu", store_action_masks: bool = True):
        if capacity < 1:
            raise ValueError(f"replay capacity must be a positive integer, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.store_action_masks = store_action_masks
        self.position = 0
        self.size = 0
        self.storage: dict[str, Tensor] = {}

    def __len__(self) -> int:
        return self.size

    def _values(self, transitions: ReplayBatch) -> dict[str, Tensor]:
        values: dict[str, Tensor] = {}
        for f in fields(ReplayBatch):
            value = getattr(transitions, f.name)
            if f.name in MASK_FIELDS and (not self.store_action_masks or value is None):
                if self.storage and f.name in self.storage:
                    raise ValueError(f"{f.name} is None but this buffer stores action masks")
                continue
            values |= _leaves(f.name, value)
        return values

    def _check(self, values: dict[str, Tensor], n: int) -> None:
        if self.storage and set(values) != set(self.storage):
            raise ValueError(
                f"transitions hold {sorted(values)}, but the buffer stores {sorted(self.storage)}"
            )
        for name, value in values.items():
            if value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} rows, expected {n} (one per transition)")
            if self.storage and value.shape[1:] != self.storage[name].shape[1:]:
                raise ValueError(
                    f"{name} has per-transition shape {tuple(value.shape[1:])}, "
                    f"but the buffer stores {tuple(self.storage[name].shape[1:])}"
                )

    def _allocate(self, like: dict[str, Tensor]) -> None:
        self.storage = {
            name: torch.zeros((self.capacity, *value.shape[1:]), dtype=value.dtype, device=self.device)
            for name, value in like.items()
        }

    def add(self, transitions: ReplayBatch) -> None:
        """Append transitions in order; if more than ``capacity`` arrive, only the last ones stay."""
        n = len(transitions)
        values = self._values(transitions)
        self._check(values, n)
        if n == 0:
            return
        if not self.storage:
            self._allocate(values)
        if n > self.capacity:
            values = {name: value[n - self.capacity :] for name, value in values.items()}
            n = self.capacity
        index = (self.position + torch.arange(n, device=self.device)) % self.capacity
        for name, value in values.items():
            self.storage[name][index] = value.to(self.device, self.storage[name].dtype)
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ReplayBatch:
        """``batch_size`` transitions drawn uniformly with replacement.

        Indices come from ``generator`` if given, else from torch's global RNG of the
        buffer's device.
        """
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer; add transitions first")
        draw_device = generator.device if generator is not None else self.device
        index = torch.randint(self.size, (batch_size,), generator=generator, device=draw_device)
        return self.gather(index.to(self.device))

    def gather(self, index: Tensor) -> ReplayBatch:
        """The stored transitions at ``index`` (N,), slot numbers in [0, len(self))."""
        values: dict[str, Any] = {f.name: None for f in fields(ReplayBatch)}
        for key, stored in self.storage.items():
            name, _, sub = key.partition("/")
            if sub:
                values[name] = values[name] or {}
                values[name][sub] = stored[index]
            else:
                values[name] = stored[index]
        return ReplayBatch(**values)

    def memory_bytes(self) -> int:
        """Bytes held by the preallocated storage (0 before the first add)."""
        return sum(t.numel() * t.element_size() for t in self.storage.values())

    def state_dict(self) -> dict[str, Any]:
        """Position, size and the filled part of the storage (copies); can be large."""
        return {
            "capacity": self.capacity,
            "position": self.position,
            "size": self.size,
            "store_action_masks": self.store_action_masks,
            "storage": {name: t[: self.size].clone() for name, t in self.storage.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["capacity"] != self.capacity or state["store_action_masks"] != self.store_action_masks:
            raise ValueError(
                f"replay state has capacity={state['capacity']}, store_action_masks="
                f"{state['store_action_masks']}; this buffer has capacity={self.capacity}, "
                f"store_action_masks={self.store_action_masks}"
            )
        saved: dict[str, Tensor] = state["storage"]
        self.storage = {}
        if saved:
            self._allocate(saved)
            for name, value in saved.items():
                self.storage[name][: value.shape[0]] = value.to(self.device)
        self.position = int(state["position"])
        self.size = int(state["size"])
