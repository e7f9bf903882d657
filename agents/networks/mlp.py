"""Multilayer perceptrons for flat observations: an actor-critic and a Q-network.

Both take ``(observation_space, action_space)`` like every network factory in ``agents/``,
accept any observation space of :class:`ObservationEncoder` (``Box`` of any shape and
dtype, ``Discrete``, ``MultiDiscrete``, ``MultiBinary``, ``Dict`` of them) and a
``gymnasium.spaces.Discrete`` action space. Leading batch dimensions are
free: an input ``(*batch, *obs_shape)`` gives outputs ``(*batch, A)`` and ``(*batch,)``.

Weights use orthogonal initialisation with zero biases: gain sqrt(2) for hidden layers,
0.01 for the policy head (near-uniform initial policy) and 1 for value and Q heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gymnasium
import numpy as np
import torch
from torch import Tensor, nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
}
HIDDEN_GAIN = math.sqrt(2.0)
POLICY_GAIN = 0.01


def layer_init(layer: nn.Linear, gain: float = HIDDEN_GAIN) -> nn.Linear:
    """Orthogonal weights with the given gain, zero bias; returns the layer."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _activation_class(activation: str | type[nn.Module]) -> type[nn.Module]:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r} (valid: {sorted(ACTIVATIONS)})")
        return ACTIVATIONS[activation]
    return activation


def torso(
    in_dim: int, hidden_sizes: Sequence[int], activation: str | type[nn.Module] = "tanh"
) -> tuple[nn.Sequential, int]:
    """Hidden layers, each followed by the activation; returns the module and its output width."""
    act = _activation_class(activation)
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(width, int(size))), act()]
        width = int(size)
    return nn.Sequential(*layers), width


def mlp(
    in_dim: int,
    out_dim: int,
    hidden_sizes: Sequence[int] = (),
    activation: str | type[nn.Module] = "tanh",
    output_gain: float = 1.0,
) -> nn.Sequential:
    """Linear layers ``in_dim -> *hidden_sizes -> out_dim`` with the activation between them.

    Shapes: (..., in_dim) -> (..., out_dim).
    """
    body, width = torso(in_dim, hidden_sizes, activation)
    body.append(layer_init(nn.Linear(width, out_dim), output_gain))
    return body


def _num_actions(action_space: gymnasium.Space, owner: str) -> int:
    if not isinstance(action_space, gymnasium.spaces.Discrete):
        raise TypeError(f"{owner} needs a Discrete action space, got {action_space!r}")
    return int(action_space.n)


def flatten_observations(obs: Tensor, obs_shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Cast to ``dtype`` and merge the observation dimensions into one feature dimension.

    Shapes: (*batch, *obs_shape) -> (*batch, prod(obs_shape)).
    """
    ndim = len(obs_shape)
    if obs.dim() < ndim or tuple(obs.shape[obs.dim() - ndim :]) != obs_shape:
        raise ValueError(
            f"observation batch of shape {tuple(obs.shape)} does not end with the space's shape {obs_shape}"
        )
    batch_shape = obs.shape[: obs.dim() - ndim]
    return obs.to(dtype).reshape(*batch_shape, math.prod(obs_shape))


SUPPORTED_SPACES = "Box, Discrete, MultiDiscrete, MultiBinary, or a Dict of them"


def check_observation_space(space: gymnasium.Space, owner: str = "network") -> None:
    """Raise a TypeError naming ``space`` unless :class:`ObservationEncoder` can read it."""
    spaces = gymnasium.spaces
    if isinstance(space, spaces.Dict):
        for child in space.spaces.values():
            check_observation_space(child, owner)
        return
    if not isinstance(space, (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)):
        raise TypeError(f"{owner} reads {SUPPORTED_SPACES} observations, got {space!r}")


class ObservationEncoder(nn.Module):
    """Flat float features of any observation space the agents support.

    * ``Box``: the values cast to float and flattened; ``one_hot=True`` (integer boxes with at
      most 256 values per element, e.g. a board of -1/0/1 cells) gives each element
      ``high - low + 1`` indicator features instead.
    * ``Discrete``: a one-hot code of the state. ``MultiDiscrete``: one code per element.
      ``MultiBinary``: the bits as floats.
    * ``Dict``: the features of every entry, concatenated in key order.

    Shapes: (*batch, *obs_shape) (a dict of such for ``Dict``) -> (*batch, num_features).
    """

    def __init__(self, observation_space: gymnasium.Space, one_hot: bool = False, owner: str = "network"):
        super().__init__()
        check_observation_space(observation_space, owner)
        spaces = gymnasium.spaces
        self.space = observation_space
        self.one_hot = one_hot
        self.children_by_key = nn.ModuleDict()
        if isinstance(observation_space, spaces.Dict):
            for key, child in observation_space.spaces.items():
                self.children_by_key[key] = ObservationEncoder(child, one_hot, owner)
            self.num_features = sum(child.num_features for child in self.children_by_key.values())
            return
        self.obs_shape = tuple(int(d) for d in (observation_space.shape or ()))
        low, classes = self._codes(observation_space, one_hot)
        self.num_classes = classes
        if low is not None:
            self.register_buffer("low", torch.as_tensor(low.reshape(-1), dtype=torch.long), persistent=False)
        self.num_features = max(1, math.prod(self.obs_shape)) * (classes or 1)

    @staticmethod
    def _codes(space: gymnasium.Space, one_hot: bool) -> tuple[np.ndarray | None, int | None]:
        """The offset and number of indicator codes per element (``None``: values as floats)."""
        spaces = gymnasium.spaces
        if isinstance(space, spaces.Discrete):
            return np.asarray([space.start]), int(space.n)
        if isinstance(space, spaces.MultiDiscrete):
            if np.any(space.nvec > 256):
                raise ValueError(
                    f"MultiDiscrete elements with more than 256 values are not supported: {space!r}"
                )
            return np.asarray(space.start).reshape(-1), int(space.nvec.max())
        if isinstance(space, spaces.Box) and one_hot:
            low, high = space.low, space.high
            if not np.issubdtype(space.dtype, np.integer) or np.any(high - low > 255):
                raise ValueError(
                    f"one_hot=True needs an integer Box with at most 256 values per element, got {space!r}"
                )
            return low.reshape(-1), int((high - low).max()) + 1
        return None, None

    def forward(self, obs: Tensor | dict[str, Tensor], dtype: torch.dtype) -> Tensor:
        if len(self.children_by_key) > 0:
            if not isinstance(obs, dict):
                raise TypeError(f"a Dict observation space needs dict observations, got {type(obs).__name__}")
            return torch.cat([child(obs[key], dtype) for key, child in self.children_by_key.items()], dim=-1)
        if self.num_classes is None:
            return flatten_observations(obs, self.obs_shape, dtype)
        flat = (
            flatten_observations(obs, self.obs_shape, torch.long) if self.obs_shape else obs.long()[..., None]
        )
        return nn.functional.one_hot(flat - self.low, self.num_classes).flatten(-2).to(dtype)


def check_mlp_spaces(observation_space: gymnasium.Space, action_space: gymnasium.Space) -> None:
    """The MLP networks read any observation :class:`ObservationEncoder` reads and need a
    ``Discrete`` action space."""
    check_observation_space(observation_space, "an MLP network")
    _num_actions(action_space, "an MLP network")


class ActorCriticMLP(nn.Module):
    """Policy logits and state values from two MLPs (or one shared torso with two heads).

    Shapes: forward(obs (B, *obs_shape)) -> (logits (B, A), values (B,)).
    """

    check_spaces = staticmethod(check_mlp_spaces)

    def __init__(
        self,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
        hidden_sizes: Sequence[int] = (256, 256),
        shared: bool = False,
        activation: str | type[nn.Module] = "tanh",
        one_hot: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space, one_hot, type(self).__name__)
        self.num_actions = _num_actions(action_space, type(self).__name__)
        in_dim = self.encoder.num_features
        self.shared = shared
        if shared:
            self.torso, width = torso(in_dim, hidden_sizes, activation)
            self.actor = layer_init(nn.Linear(width, self.num_actions), POLICY_GAIN)
            self.critic = layer_init(nn.Linear(width, 1), 1.0)
        else:
            self.torso = nn.Identity()
            self.actor = mlp(in_dim, self.num_actions, hidden_sizes, activation, POLICY_GAIN)
            self.critic = mlp(in_dim, 1, hidden_sizes, activation, 1.0)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        dtype = next(self.parameters()).dtype
        features = self.torso(self.encoder(obs, dtype))
        return self.actor(features), self.critic(features).squeeze(-1)


class QNetworkMLP(nn.Module):
    """Action values from an MLP; optionally dueling (``Q = V + A - mean(A)``).

    Shapes: forward(obs (B, *obs_shape)) -> q (B, A).
    """

    check_spaces = staticmethod(check_mlp_spaces)

    def __init__(
        self,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
        hidden_sizes: Sequence[int] = (256, 256),
        dueling: bool = False,
        activation: str | type[nn.Module] = "relu",
        one_hot: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space, one_hot, type(self).__name__)
        self.num_actions = _num_actions(action_space, type(self).__name__)
        self.dueling = dueling
        self.torso, width = torso(self.encoder.num_features, hidden_sizes, activation)
        self.action_head = layer_init(nn.Linear(width, self.num_actions), 1.0)
        self.value_head = layer_init(nn.Linear(width, 1), 1.0) if dueling else None

    def forward(self, obs: Tensor) -> Tensor:
        dtype = next(self.parameters()).dtype
        features = self.torso(self.encoder(obs, dtype))
        q = self.action_head(features)
        if self.value_head is None:
            return q
        return self.value_head(features) + q - q.mean(dim=-1, keepdim=True)
