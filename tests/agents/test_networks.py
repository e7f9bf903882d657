"""MLP networks: shapes for any Box observation, initialisation, dueling head, bad spaces."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from torch import nn

from agents.networks.mlp import ActorCriticMLP, QNetworkMLP, flatten_observations, mlp

torch.set_num_threads(1)

BOARD = gymnasium.spaces.Box(low=-1, high=1, shape=(9,), dtype=np.int8)
CUBE = gymnasium.spaces.Box(low=0.0, high=1.0, shape=(2, 3, 4), dtype=np.float32)
NINE = gymnasium.spaces.Discrete(9)


def test_mlp_layers_and_activation() -> None:
    net = mlp(4, 3, hidden_sizes=(8, 5), activation="relu")
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4, 8), (8, 5), (5, 3)]
    assert sum(isinstance(m, nn.ReLU) for m in net) == 2
    assert isinstance(net[-1], nn.Linear)
    assert mlp(4, 3)(torch.zeros(7, 4)).shape == (7, 3)


def test_mlp_unknown_activation() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        mlp(4, 3, (8,), activation="swish")


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("space", [BOARD, CUBE], ids=["int8-board", "float-cube"])
def test_actor_critic_shapes(space: gymnasium.spaces.Box, shared: bool) -> None:
    net = ActorCriticMLP(space, NINE, hidden_sizes=(16, 16), shared=shared)
    obs = torch.as_tensor(np.stack([space.sample() for _ in range(5)]))
    logits, values = net(obs)
    assert logits.shape == (5, 9) and values.shape == (5,)
    assert logits.dtype == values.dtype == torch.float32
    time_major_logits, time_major_values = net(obs.reshape(1, 5, *space.shape))
    torch.testing.assert_close(time_major_logits[0], logits)
    torch.testing.assert_close(time_major_values[0], values)


def test_shared_torso_has_fewer_parameters() -> None:
    separate = ActorCriticMLP(BOARD, NINE, hidden_sizes=(32, 32))
    shared = ActorCriticMLP(BOARD, NINE, hidden_sizes=(32, 32), shared=True)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(shared) < count(separate)


def test_initial_policy_is_near_uniform_and_biases_zero() -> None:
    torch.manual_seed(0)
    net = ActorCriticMLP(BOARD, NINE)
    logits, _ = net(torch.as_tensor(np.stack([BOARD.sample() for _ in range(64)])))
    assert logits.abs().max() < 0.2
    for module in net.modules():
        if isinstance(module, nn.Linear):
            assert torch.count_nonzero(module.bias) == 0
    first = net.actor[0].weight  # (256, 9): orthogonal columns scaled by gain sqrt(2)
    torch.testing.assert_close(first.T @ first, 2.0 * torch.eye(9), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dueling", [False, True])
def test_q_network_shapes(dueling: bool) -> None:
    net = QNetworkMLP(CUBE, NINE, hidden_sizes=(16,), dueling=dueling)
    q = net(torch.rand(6, 2, 3, 4))
    assert q.shape == (6, 9)


def test_dueling_mean_q_is_state_value() -> None:
    net = QNetworkMLP(BOARD, NINE, hidden_sizes=(16,), dueling=True)
    obs = torch.as_tensor(np.stack([BOARD.sample() for _ in range(4)]))
    q = net(obs)
    values = net.value_head(net.torso(obs.float())).squeeze(-1)
    torch.testing.assert_close(q.mean(dim=-1), values)


@pytest.mark.parametrize("cls", [ActorCriticMLP, QNetworkMLP])
def test_bad_spaces_raise(cls: type[nn.Module]) -> None:
    with pytest.raises(TypeError, match="reads Box, Discrete, MultiDiscrete, MultiBinary"):
        cls(gymnasium.spaces.Text(5), NINE)
    with pytest.raises(TypeError, match="reads Box"):
        cls(gymnasium.spaces.Dict({"board": BOARD, "name": gymnasium.spaces.Text(5)}), NINE)
    with pytest.raises(TypeError, match="needs a Discrete action space"):
        cls(BOARD, gymnasium.spaces.Box(-1, 1, shape=(2,)))


@pytest.mark.parametrize("cls", [ActorCriticMLP, QNetworkMLP])
def test_discrete_multidiscrete_and_dict_observations_are_encoded(cls: type[nn.Module]) -> None:
    spaces = gymnasium.spaces
    space = spaces.Dict(
        {
            "state": spaces.Discrete(5, start=1),
            "dice": spaces.MultiDiscrete([3, 2]),
            "flags": spaces.MultiBinary(2),
            "board": BOARD,
        }
    )
    net = cls(space, NINE, hidden_sizes=(8,))
    assert net.encoder.num_features == 5 + 2 * 3 + 2 + 9
    obs = {
        "state": torch.tensor([1, 5]),
        "dice": torch.tensor([[0, 1], [2, 0]]),
        "flags": torch.tensor([[1, 0], [0, 1]], dtype=torch.int8),
        "board": torch.zeros(2, 9, dtype=torch.int8),
    }
    features = net.encoder(obs, torch.float32)
    assert features.shape == (2, 22)
    # the space's key order (Gymnasium sorts it): board 0:9, dice 9:15, flags 15:17, state 17:22
    assert features[0, 17:].tolist() == [1, 0, 0, 0, 0] and features[1, 17:].tolist() == [0, 0, 0, 0, 1]
    assert features[1, 9:15].tolist() == [0, 0, 1, 1, 0, 0]  # dice (2, 0): codes of 3 values each
    assert features[1, 15:17].tolist() == [0, 1]
    output = net(obs)
    assert (output[0] if isinstance(output, tuple) else output).shape == (2, 9)


def test_wrong_observation_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"does not end with the space's shape \(9,\)"):
        flatten_observations(torch.zeros(4, 8), (9,), torch.float32)
    net = ActorCriticMLP(BOARD, NINE, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="does not end with"):
        net(torch.zeros(4, 3, 3))


def test_one_hot_encoder_codes_each_cell():
    gym_spaces = gymnasium.spaces
    board_space = gym_spaces.Box(-1, 1, shape=(9,), dtype=np.int8)
    network = ActorCriticMLP(board_space, gym_spaces.Discrete(9), hidden_sizes=(16,), one_hot=True)
    obs = torch.tensor([[1, 0, -1, 0, 0, 0, 0, 0, 0]], dtype=torch.int8)
    features = network.encoder(obs, torch.float32)
    assert features.shape == (1, 27)
    assert features[0, :9].tolist() == [0, 0, 1, 0, 1, 0, 1, 0, 0]
    logits, values = network(obs)
    assert logits.shape == (1, 9) and values.shape == (1,)
    assert QNetworkMLP(board_space, gym_spaces.Discrete(9), one_hot=True)(obs).shape == (1, 9)
    with pytest.raises(ValueError, match="one_hot=True needs an integer Box"):
        ActorCriticMLP(gym_spaces.Box(-1.0, 1.0, shape=(3,)), gym_spaces.Discrete(2), one_hot=True)
