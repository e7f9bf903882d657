"""Multilayer perceptrons for flat observations: an actor-critic and a Q-network.

Both take ``(observation_space, action_space)`` like every network factory in ``agents/``,
accept a ``gymnasium.spaces.Box`` observation of any shape and dtype (cast to float and
flattened) and a ``gymnasium.spaces.Discrete`` action space. Leading batch dimensions are
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


def _observation_shape(observation_space: gymnasium.Space, owner: str) -> tuple[int, ...]:
    if not isinstance(observation_space, gymnasium.spaces.Box):
        raise TypeError(f"{owner} needs a Box observation space, got {observation_space!r}")
    return tuple(int(d) for d in observation_space.shape)


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


class ObservationEncoder(nn.Module):
    """Flat float features of a Box observation: the values cast to float, or one-hot codes.

    ``one_hot=True`` suits small integer spaces (a board of -1/0/1 cells): each element
    becomes ``high - low + 1`` indicator features. Shapes: (*batch, *obs_shape) -> (*batch, F).
    """

    def __init__(self, observation_space: gymnasium.Space, one_hot: bool = False, owner: str = "network"):
        super().__init__()
        self.obs_shape = _observation_shape(observation_space, owner)
        self.one_hot = one_hot
        self.num_features = math.prod(self.obs_shape)
        if one_hot:
            low, high = observation_space.low, observation_space.high
            if not np.issubdtype(observation_space.dtype, np.integer) or np.any(high - low > 255):
                raise ValueError(
                    "one_hot=True needs an integer Box with at most 256 values per element, "
                    f"got {observation_space!r}"
                )
            self.register_buffer("low", torch.as_tensor(low.reshape(-1), dtype=torch.long), persistent=False)
            self.num_classes = int((high - low).max()) + 1
            self.num_features *= self.num_classes

    def forward(self, obs: Tensor, dtype: torch.dtype) -> Tensor:
        if not self.one_hot:
            return flatten_observations(obs, self.obs_shape, dtype)
        flat = flatten_observations(obs, self.obs_shape, torch.long)
        return nn.functional.one_hot(flat - self.low, self.num_classes).flatten(-2).to(dtype)


class ActorCriticMLP(nn.Module):
    """Policy logits and state values from two MLPs (or one shared torso with two heads).

    Shapes: forward(obs (B, *obs_shape)) -> (logits (B, A), values (B,)).
    """

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
        self.obs_shape = self.encoder.obs_shape
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
        self.obs_shape = self.encoder.obs_shape
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
