from __future__ import annotations

import copy
from functools import partial

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import Tensor, nn

from agents.core.base import Rollout
from agents.dqn.agent import (
    DQNAgent,
    linear_epsilon,
    next_state_values,
    polyak_update,
    td_targets,
)
from agents.dqn.tabular import StateIndexer, TabularQAgent
from agents.networks.mlp import QNetworkMLP
from rlenv.tictactoe.opponents import PerfectOpponent, move_values
from rlenv.tictactoe.vector_env import TicTacToeVectorEnv

torch.set_num_threads(1)


class TableQNetwork(nn.Module):
    """Q(s, .) is row s of a learnable table, so one SGD step is easy to compute by hand."""

    def __init__(self, observation_space: spaces.Discrete, action_space: spaces.Discrete):
        super().__init__()
        self.table = nn.Parameter(torch.zeros(int(observation_space.n), int(action_space.n)))

    def forward(self, obs: Tensor) -> Tensor:
        return self.table[obs.long()]


def rollout_of(obs, masks, actions, rewards, terminated, next_obs, next_masks, truncated=None) -> Rollout:
    """A rollout from (T, B, ...) tensors; the behaviour log-probs and values are zeros."""
    zeros = torch.zeros(actions.shape)
    truncated = torch.zeros_like(terminated) if truncated is None else truncated
    return Rollout(
        obs, masks, actions, zeros, zeros, rewards.float(), terminated, truncated, next_obs, next_masks
    )


def make_rollout(
    obs, actions, rewards, next_obs, terminated=None, truncated=None, next_masks=None, num_actions=3
):
    """A (T=1, B) rollout from per-transition lists; every action legal unless ``next_masks`` says."""
    no, full = [False] * len(actions), [[True] * num_actions] * len(actions)
    fields = (obs, full, actions, rewards, terminated or no, next_obs, next_masks or full, truncated or no)
    return rollout_of(*(torch.tensor([value]) for value in fields))


def table_dqn(**overrides) -> DQNAgent:
    kwargs = dict(
        network=TableQNetwork,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        gamma=0.9,
        buffer_size=10,
        batch_size=1,
        learning_starts=1,
        target_update_interval=1000,
        max_grad_norm=None,
        loss="mse",
    )
    agent = DQNAgent(spaces.Discrete(4), spaces.Discrete(3), **{**kwargs, **overrides})
    with torch.no_grad():
        agent.q_network.table.copy_(torch.tensor([[0.0, 2.0, 0.0], [0, 0, 0], [5, 9, 1], [0, 0, 0]]))
        agent.target_network.table.copy_(torch.tensor([[0.0, 0.0, 0.0], [0, 0, 0], [10, 20, 30], [0, 0, 0]]))
    return agent


def one_step(agent: DQNAgent, **transition) -> tuple[float, dict[str, float]]:
    """Learn from the single transition s=0, a=1, r=0.5, s'=2; returns the new Q(0, 1)."""
    fields = dict(obs=[0], actions=[1], rewards=[0.5], next_obs=[2], next_masks=[[True, False, True]])
    metrics = agent.learn(make_rollout(**{**fields, **transition}))
    return agent.q_network.table[0, 1].item(), metrics


def test_next_state_values_mask_and_double_q():
    online, target = torch.tensor([[5.0, 9.0, 1.0]]), torch.tensor([[10.0, 20.0, 30.0]])
    legal = torch.tensor([[True, False, True]])
    assert next_state_values(target, legal, online).item() == 10.0
    assert next_state_values(target, legal).item() == 30.0
    assert next_state_values(target, None, online).item() == 20.0
    no_legal = torch.zeros(1, 3, dtype=torch.bool)
    for values in (next_state_values(target, no_legal, online), next_state_values(target, no_legal)):
        assert values.item() == 0.0
    targets = td_targets(torch.tensor([1.0, 1.0]), torch.tensor([True, False]), torch.tensor([5.0, 5.0]), 0.5)
    assert targets.tolist() == [1.0, 3.5]


@pytest.mark.parametrize(("double_q", "target"), [(True, 0.5 + 0.9 * 10), (False, 0.5 + 0.9 * 30)])
def test_dqn_step_moves_q_toward_the_masked_target(double_q, target):
    agent = table_dqn(double_q=double_q)
    q_after, metrics = one_step(agent)
    assert q_after == pytest.approx(2.0 - 0.1 * 2 * (2.0 - target))
    assert metrics["loss/td"] == pytest.approx((2.0 - target) ** 2)
    assert metrics["diag/q_mean"] == pytest.approx(2.0)
    changed = agent.q_network.table.detach().clone()
    changed[0, 1] = 2.0
    assert torch.equal(changed, table_dqn().q_network.table.detach())


def test_huber_loss_caps_the_step():
    q_after, _ = one_step(table_dqn(loss="huber"))
    assert q_after == pytest.approx(2.0 + 0.1)


@pytest.mark.parametrize("next_masks", [[[True, False, True]], [[False, False, False]]])
def test_terminated_steps_do_not_bootstrap_but_truncated_ones_do(next_masks):
    q_terminal, _ = one_step(table_dqn(), terminated=[True], next_masks=next_masks)
    assert q_terminal == pytest.approx(2.0 - 0.2 * (2.0 - 0.5))
    q_truncated, metrics = one_step(table_dqn(double_q=False), truncated=[True])
    assert q_truncated == pytest.approx(2.0 - 0.2 * (2.0 - 27.5))
    assert np.isfinite(metrics["loss/td"])


def test_nonterminal_state_without_legal_actions_bootstraps_zero():
    q_after, metrics = one_step(table_dqn(), next_masks=[[False, False, False]])
    assert q_after == pytest.approx(2.0 - 0.2 * (2.0 - 0.5))
    assert np.isfinite(metrics["loss/td"]) and np.isfinite(q_after)


def test_learning_waits_for_learning_starts_and_train_frequency():
    agent = table_dqn(learning_starts=3, train_frequency=2, gradient_steps=3, batch_size=2)
    updates, keys = [], []
    for _ in range(6):
        keys.append(sorted(one_step(agent)[1]))
        updates.append(agent.updates)
    assert updates == [0, 0, 0, 3, 3, 6]
    assert keys[0] == ["charts/epsilon", "diag/buffer_size"]
    assert keys[3] == ["charts/epsilon", "diag/buffer_size", "diag/q_mean", "loss/td"]


def test_hard_target_update_copies_every_interval():
    agent = table_dqn(target_update_interval=3)
    initial_target = agent.target_network.table.detach().clone()
    for _ in range(2):
        one_step(agent)
    assert torch.equal(agent.target_network.table, initial_target)
    one_step(agent)
    assert torch.equal(agent.target_network.table, agent.q_network.table)


def test_polyak_target_update_moves_by_tau():
    agent = table_dqn(target_update="polyak", target_update_interval=1, tau=0.25)
    old_target = agent.target_network.table.detach().clone()
    one_step(agent)
    expected = 0.25 * agent.q_network.table.detach() + 0.75 * old_target
    torch.testing.assert_close(agent.target_network.table.detach(), expected)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    before = copy.deepcopy(frozen)
    polyak_update(before, frozen, 0.5)
    assert torch.equal(before.weight, frozen.weight)


def test_linear_epsilon_schedule():
    values = [linear_epsilon(step, 1.0, 0.1, 100) for step in (0, 50, 100, 1000)]
    assert values == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert linear_epsilon(0, 1.0, 0.2, 0) == 0.2
    agent = table_dqn(epsilon_start=1.0, epsilon_end=0.1, epsilon_decay_steps=4, learning_starts=100)
    seen = [agent.learn(make_rollout([0, 1], [0, 0], [0.0, 0.0], [1, 2]))["charts/epsilon"] for _ in range(3)]
    assert seen == pytest.approx([0.55, 0.1, 0.1])


def random_masks(batch: int, num_actions: int, generator: torch.Generator) -> Tensor:
    masks = torch.rand(batch, num_actions, generator=generator) < 0.4
    masks[torch.arange(batch), torch.randint(num_actions, (batch,), generator=generator)] = True
    return masks


def mlp_dqn(seed: int = 0, **overrides) -> DQNAgent:
    torch.manual_seed(seed)
    kwargs = dict(
        network=partial(QNetworkMLP, hidden_sizes=(16,)),
        optimizer=partial(torch.optim.Adam, lr=1e-2),
        buffer_size=64,
        batch_size=8,
        learning_starts=12,
        target_update_interval=3,
        epsilon_decay_steps=200,
    )
    box = spaces.Box(-1.0, 1.0, (4,), np.float32)
    return DQNAgent(box, spaces.Discrete(5), **{**kwargs, **overrides})


def tabular_agent(**overrides) -> TabularQAgent:
    kwargs = dict(gamma=0.9, learning_rate=0.5, epsilon_decay_steps=10)
    return TabularQAgent(spaces.Discrete(4), spaces.Discrete(5), **{**kwargs, **overrides})


def random_obs(kind: str, batch: int, generator: torch.Generator) -> Tensor:
    if kind == "dqn":
        return torch.rand(batch, 4, generator=generator) * 2 - 1
    return torch.randint(4, (batch,), generator=generator)


@pytest.mark.parametrize("kind", ["dqn", "tabular"])
@pytest.mark.parametrize("epsilon", [0.0, 0.3, 1.0])
def test_masked_actions_are_never_chosen(kind, epsilon):
    agent = (
        mlp_dqn(epsilon_start=epsilon, epsilon_end=epsilon)
        if kind == "dqn"
        else tabular_agent(epsilon_start=epsilon, epsilon_end=epsilon)
    )
    if kind == "tabular":
        agent.q_table.normal_()
    generator = torch.Generator().manual_seed(1)
    obs, masks = random_obs(kind, 4000, generator), random_masks(4000, 5, generator)
    picks = [
        agent.act(obs, masks, deterministic=True),
        agent.act(obs, masks),
        agent.explore(obs, masks).actions,
    ]
    for actions in picks:
        assert actions.shape == (4000,) and actions.dtype == torch.int64
        assert masks[torch.arange(4000), actions].all()
    assert agent.explore(obs, masks).log_probs is None and agent.explore(obs, masks).values is None


@pytest.mark.parametrize("kind", ["dqn", "tabular"])
def test_full_exploration_is_uniform_over_legal_actions(kind):
    agent = (
        mlp_dqn(epsilon_start=1.0, epsilon_end=1.0)
        if kind == "dqn"
        else tabular_agent(epsilon_start=1.0, epsilon_end=1.0)
    )
    obs = random_obs(kind, 6000, torch.Generator().manual_seed(2))
    masks = torch.tensor([[True, False, True, False, True]]).expand(6000, 5)
    counts = torch.bincount(agent.explore(obs, masks).actions, minlength=5)
    assert counts[[1, 3]].sum() == 0
    assert torch.all((counts[[0, 2, 4]] - 2000).abs() < 200)


def test_act_rejects_rows_without_legal_actions():
    masks = torch.ones(3, 5, dtype=torch.bool)
    masks[1] = False
    with pytest.raises(ValueError, match=r"no legal action in batch rows \[1\]"):
        mlp_dqn().act(torch.zeros(3, 4), masks)
    with pytest.raises(ValueError, match=r"expected \(3, 5\)"):
        mlp_dqn().act(torch.zeros(3, 4), masks[:, :4])


def random_rollout(seed: int, steps: int = 2, envs: int = 3) -> Rollout:
    generator = torch.Generator().manual_seed(seed)
    masks = random_masks(steps * envs * 2, 5, generator).reshape(2, steps, envs, 5)
    return rollout_of(
        obs=torch.rand(steps, envs, 4, generator=generator),
        masks=masks[0],
        actions=torch.randint(5, (steps, envs), generator=generator),
        rewards=torch.randn(steps, envs, generator=generator),
        terminated=torch.rand(steps, envs, generator=generator) < 0.3,
        truncated=torch.rand(steps, envs, generator=generator) < 0.1,
        next_obs=torch.rand(steps, envs, 4, generator=generator),
        next_masks=masks[1],
    )


def assert_plain_state(value) -> None:
    """A state holds only tensors, numbers, strings, lists and dicts."""
    if isinstance(value, dict):
        for item in value.values():
            assert_plain_state(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            assert_plain_state(item)
    else:
        assert isinstance(value, (Tensor, int, float, str, bool)) or value is None, type(value)


def test_dqn_state_dict_round_trip_resumes_identically():
    agent = mlp_dqn(seed=0)
    for seed in range(5):
        agent.learn(random_rollout(seed))
    state = copy.deepcopy(agent.state_dict())
    assert_plain_state(state)
    restored = mlp_dqn(seed=1)
    restored.load_state_dict(state)
    obs, masks = torch.rand(64, 4), random_masks(64, 5, torch.Generator().manual_seed(9))
    results = []
    for resumed in (agent, restored):
        torch.manual_seed(7)
        actions = resumed.act(obs, masks)
        metrics = [resumed.learn(random_rollout(seed)) for seed in range(10, 16)]
        weights = {
            **resumed.q_network.state_dict(),
            **{f"t.{k}": v for k, v in resumed.target_network.state_dict().items()},
        }
        results.append((actions, metrics, weights, resumed.replay.state_dict()["storage"]))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1] and "loss/td" in results[0][1][-1]
    for name, weight in results[0][2].items():
        assert torch.equal(weight, results[1][2][name]), name
    for name, stored in results[0][3].items():
        assert torch.equal(stored, results[1][3][name]), name


def test_dqn_learning_rate_schedule_starts_with_learning_and_resumes():
    decay = partial(torch.optim.lr_scheduler.LinearLR, start_factor=1.0, end_factor=0.0, total_iters=4)
    agent = mlp_dqn(seed=0, lr_schedule=decay)  # 6 transitions per rollout: learns from the 2nd call
    rates = [agent.learn(random_rollout(seed))["charts/learning_rate"] for seed in range(4)]
    assert rates == pytest.approx([1e-2, 1e-2, 7.5e-3, 5e-3]), "no decay before the first gradient step"
    restored = mlp_dqn(seed=1, lr_schedule=decay)
    restored.load_state_dict(copy.deepcopy(agent.state_dict()))
    for resumed in (agent, restored):
        assert [resumed.learn(random_rollout(seed))["charts/learning_rate"] for seed in (4, 5, 6)] == (
            pytest.approx([2.5e-3, 0.0, 0.0])
        )


def chain_agent(**overrides) -> TabularQAgent:
    kwargs = dict(gamma=0.9, learning_rate=0.5, epsilon_start=1.0, epsilon_end=0.3, epsilon_decay_steps=2000)
    return TabularQAgent(spaces.Discrete(3), spaces.Discrete(2), **{**kwargs, **overrides})


def test_tabular_state_dict_round_trip_resumes_identically():
    agent = chain_agent()
    chain = ChainMDP(8)
    for _ in range(20):
        agent.learn(chain.rollout(agent, steps=2))
    restored = chain_agent()
    restored.load_state_dict(copy.deepcopy(agent.state_dict()))
    assert_plain_state(agent.state_dict())
    obs = torch.randint(3, (100,))
    tables = []
    for resumed in (agent, restored):
        torch.manual_seed(3)
        actions = resumed.act(obs)
        resumed.learn(ChainMDP(8, seed=5).rollout(resumed, steps=3))
        tables.append((actions, resumed.q_table.clone(), resumed.env_steps))
    assert torch.equal(tables[0][0], tables[1][0]) and torch.equal(tables[0][1], tables[1][1])
    assert tables[0][2] == tables[1][2] == 8 * (2 * 20 + 3)


def test_policy_snapshot_is_frozen_and_small():
    agent = mlp_dqn(seed=0, epsilon_start=0.0, epsilon_end=0.0, learning_starts=0)
    snapshot = agent.policy_snapshot()
    obs = torch.rand(256, 4)
    before = snapshot(obs, None)
    for seed in range(20):
        agent.learn(random_rollout(seed))
    assert torch.equal(snapshot(obs, None), before)
    assert not torch.equal(agent.act(obs, deterministic=True), before)


class ChainMDP:
    """States 0 and 1; action 1 moves right, action 0 left (or stays at 0); 1 --right--> end, reward 1.

    The end state is observed as 2. With discount gamma: Q*(1, right) = 1, Q*(0, right) = gamma,
    Q*(0, left) = Q*(1, left) = gamma ** 2.
    """

    def __init__(self, num_envs: int, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)
        self.states = torch.randint(2, (num_envs,), generator=self.generator)

    def rollout(self, agent: TabularQAgent, steps: int) -> Rollout:
        obs, actions, next_obs = [], [], []
        for _ in range(steps):
            obs.append(self.states)
            actions.append(agent.explore(self.states).actions)
            next_obs.append(torch.where(actions[-1] == 1, self.states + 1, torch.zeros_like(self.states)))
            restart = torch.randint(2, self.states.shape, generator=self.generator)
            self.states = torch.where(next_obs[-1] == 2, restart, next_obs[-1])
        obs_, actions_, next_obs_ = (torch.stack(x) for x in (obs, actions, next_obs))
        full = torch.ones(*obs_.shape, 2, dtype=torch.bool)
        ended = next_obs_ == 2
        return rollout_of(obs_, full, actions_, ended.float(), ended, next_obs_, full)


def test_tabular_converges_to_the_chain_optimum():
    agent = chain_agent()
    chain = ChainMDP(8)
    for _ in range(300):
        metrics = agent.learn(chain.rollout(agent, steps=4))
    expected = torch.tensor([[0.81, 0.9], [0.81, 1.0], [0.0, 0.0]])
    torch.testing.assert_close(agent.q_table, expected, atol=1e-5, rtol=0)
    assert metrics["loss/td"] < 1e-9 and metrics["charts/epsilon"] == pytest.approx(0.3)


def test_tabular_averages_duplicate_pairs_in_one_update():
    agent = tabular_agent(learning_rate=0.5)
    ended = [True, True, True]
    agent.learn(make_rollout([1, 1, 1], [2, 2, 0], [1.0, 3.0, -4.0], [3, 3, 3], ended, num_actions=5))
    assert agent.q_table[1, 2].item() == pytest.approx(0.5 * 2.0)
    assert agent.q_table[1, 0].item() == pytest.approx(0.5 * -4.0)
    assert agent.q_table.abs().sum().item() == pytest.approx(3.0)


def test_state_indexer_spaces_and_limits():
    device = torch.device("cpu")
    assert StateIndexer(spaces.Discrete(3, start=2), 100, device)(torch.tensor([2, 4])).tolist() == [0, 2]
    multi = StateIndexer(spaces.MultiDiscrete([2, 3], start=[0, -1]), 100, device)
    assert multi.num_states == 6 and multi(torch.tensor([[1, 1], [0, -1]])).tolist() == [5, 0]
    board = StateIndexer(spaces.Box(-1, 1, (3, 3), np.int8), 10**7, device)
    assert board.num_states == 3**9 and board(torch.ones(1, 3, 3, dtype=torch.int8)).item() == 3**9 - 1
    with pytest.raises(ValueError, match="100,000,000 states"):
        StateIndexer(spaces.Box(0, 9, (8,), np.int64), 10**7, device)
    with pytest.raises(ValueError, match="integer Box"):
        StateIndexer(spaces.Box(0.0, 1.0, (2,), np.float32), 10**7, device)
    with pytest.raises(ValueError, match=r"observation \[2, 0\] \(row 1\) is outside"):
        multi(torch.tensor([[0, 0], [2, 0]]))


def train_against_perfect_player(agent: TabularQAgent, iterations: int) -> None:
    """Q-learning on the project's Tic-Tac-Toe vector env, playing X and O in turn.

    The opponent breaks ties by the lowest cell, so the positions it allows are few and fixed.
    """
    opponent = PerfectOpponent(tie_break="first")
    env = TicTacToeVectorEnv(num_envs=512, agent_plays="both", opponent=opponent)
    obs, info = env.reset(seed=0)
    mask = info["action_mask"]
    for _ in range(iterations):
        actions = agent.explore(obs, mask).actions
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        step = (obs, mask, actions, rewards, terminated, info["final_obs"], info["final_action_mask"])
        agent.learn(rollout_of(*(value[None] for value in step), truncated=truncated[None]))
        obs, mask = next_obs, info["action_mask"]


def test_tabular_q_learning_reaches_tic_tac_toe_minimax_values():
    """Against a perfect opponent with gamma = 1, Q* of each move is its minimax value.

    The table starts at 0.5, a value no move has, so every entry checked was learned.
    """
    agent = TabularQAgent(
        spaces.Box(-1, 1, (9,), np.int8),
        spaces.Discrete(9),
        gamma=1.0,
        learning_rate=1.0,
        epsilon_start=1.0,
        epsilon_end=1.0,
        epsilon_decay_steps=0,
        initial_q=0.5,
    )
    train_against_perfect_player(agent, iterations=400)
    expected = {  # board seen by the player to move (+1 own) -> value of each empty cell in order
        (0, 0, 0, 0, 0, 0, 0, 0, 0): [0] * 9,
        (-1, 0, 0, 0, 0, 0, 0, 0, 0): [-1, -1, -1, 0, -1, -1, -1, -1],
        (-1, 0, 0, 0, 1, 0, 0, 0, 0): [0] * 7,
        (1, -1, 0, 0, -1, 0, 0, 0, 1): [-1, -1, -1, -1, 0],
    }
    for board, values in expected.items():
        cells = torch.tensor([board], dtype=torch.int8)
        q = agent.q_table[agent.indexer(cells)][0]
        assert q[cells[0] == 0].tolist() == values, board
        assert values == move_values(cells)[0][cells[0] == 0].tolist()


def test_dqn_learns_the_chain_optimum():
    agent = DQNAgent(
        spaces.Discrete(3),
        spaces.Discrete(2),
        network=TableQNetwork,
        optimizer=partial(torch.optim.SGD, lr=0.5),
        gamma=0.9,
        buffer_size=256,
        batch_size=32,
        learning_starts=32,
        target_update_interval=10,
        loss="mse",
    )
    chain = ChainMDP(8)
    for _ in range(200):
        agent.learn(chain.rollout(agent, steps=1))
    expected = torch.tensor([[0.81, 0.9], [0.81, 1.0]])
    torch.testing.assert_close(agent.q_network.table.detach()[:2], expected, atol=0.01, rtol=0)


def test_boltzmann_exploration_samples_softmax_of_q_over_legal_actions():
    space = spaces.Box(0, 1, shape=(1,), dtype=np.float32)

    class FixedQ(torch.nn.Module):
        def __init__(self, observation_space, action_space):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, obs):
            return torch.tensor([[0.0, float(np.log(3.0)), 5.0]]).expand(obs.shape[0], 3) + 0 * self.weight

    agent = DQNAgent(
        space,
        spaces.Discrete(3),
        network=FixedQ,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        epsilon_start=0.0,
        epsilon_end=0.0,
        temperature=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    obs = torch.zeros(20000, 1)
    mask = torch.tensor([[True, True, False]]).expand(20000, 3)
    actions = agent.act(obs, mask)
    assert not bool((actions == 2).any())  # never a masked action, however high its value
    assert abs(float((actions == 1).float().mean()) - 0.75) < 0.02  # softmax(0, log 3) = (1/4, 3/4)
    assert agent.act(obs[:2], mask[:2], deterministic=True).tolist() == [1, 1]
    with pytest.raises(ValueError, match="temperature must be positive"):
        DQNAgent(space, spaces.Discrete(3), network=FixedQ, optimizer=torch.optim.SGD, temperature=0.0)
