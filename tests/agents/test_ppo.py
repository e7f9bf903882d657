"""PPO: loss terms at the clip boundaries, masks, a learning step, early stop, resume, a bandit."""

from __future__ import annotations

import functools
import math

import gymnasium
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from agents.core.base import Agent, Rollout
from agents.networks.mlp import ActorCriticMLP
from agents.ppo.agent import PPOAgent
from agents.ppo.loss import logit_spread, ppo_loss

torch.set_num_threads(1)

BOARD = gymnasium.spaces.Box(low=-1, high=1, shape=(9,), dtype=np.int8)
NINE = gymnasium.spaces.Discrete(9)
METRIC_KEYS = {
    "loss/policy",
    "loss/value",
    "loss/entropy",
    "loss/total",
    "diag/approx_kl",
    "diag/clipfrac",
    "diag/explained_variance",
    "diag/entropy",
    "diag/learning_rate",
    "diag/epochs_run",
    "diag/skipped_updates",
}


def _policy_grad(ratio: float, advantage: float, clip_coef: float = 0.2) -> float:
    new_log_probs = torch.tensor([math.log(ratio)], requires_grad=True)
    zeros = torch.zeros(1)
    terms = ppo_loss(new_log_probs, zeros, torch.tensor([advantage]), zeros, zeros, zeros, zeros, clip_coef)
    terms.policy.backward()
    return float(new_log_probs.grad)


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [
        (1.5, 1.0, True),  # ratio above 1 + eps, positive advantage: no incentive to push further
        (1.1, 1.0, False),  # inside the trust region
        (0.5, 1.0, False),  # below 1 - eps with positive advantage: pessimistic term, still a gradient
        (0.5, -1.0, True),  # negative advantage mirror: below 1 - eps is clipped
        (0.9, -1.0, False),
        (1.5, -1.0, False),
    ],
)
def test_policy_clip_boundaries(ratio: float, advantage: float, clipped: bool) -> None:
    grad = _policy_grad(ratio, advantage)
    if clipped:
        assert grad == 0.0
    else:
        assert grad == pytest.approx(-advantage * ratio)


def test_value_clipping() -> None:
    returns, old_values = torch.tensor([1.0]), torch.tensor([0.0])
    new_values = torch.tensor([0.5], requires_grad=True)
    zeros = torch.zeros(1)
    unclipped = ppo_loss(zeros, zeros, zeros, new_values, old_values, returns, zeros, 0.2, None)
    torch.testing.assert_close(unclipped.value, torch.tensor(0.125))  # 0.5 * (0.5 - 1)^2
    clipped = ppo_loss(zeros, zeros, zeros, new_values, old_values, returns, zeros, 0.2, clip_value=0.2)
    torch.testing.assert_close(clipped.value, torch.tensor(0.32))  # 0.5 * max(0.25, (0.2 - 1)^2)
    clipped.value.backward()
    assert float(new_values.grad) == 0.0


def test_entropy_term_and_diagnostics() -> None:
    log_probs = torch.log(torch.tensor([1.0, 1.1, 1.5, 0.7]))
    zeros = torch.zeros(4)
    entropy = torch.tensor([1.0, 2.0, 3.0, 4.0])
    terms = ppo_loss(log_probs, zeros, zeros, zeros, zeros, zeros, entropy, clip_coef=0.2)
    torch.testing.assert_close(terms.entropy, torch.tensor(-2.5))
    torch.testing.assert_close(terms.clipfrac, torch.tensor(0.5))
    assert terms.approx_kl > 0
    same = ppo_loss(log_probs, log_probs, zeros, zeros, zeros, zeros, entropy, clip_coef=0.2)
    assert float(same.approx_kl) == 0.0 and float(same.clipfrac) == 0.0


def _small_net(observation_space: gymnasium.Space, action_space: gymnasium.Space) -> nn.Module:
    return ActorCriticMLP(observation_space, action_space, hidden_sizes=(32, 32))


def _agent(**overrides: object) -> PPOAgent:
    kwargs: dict[str, object] = {"network": _small_net, "num_epochs": 2, "num_minibatches": 2}
    kwargs.update(overrides)
    return PPOAgent(BOARD, NINE, **kwargs)  # type: ignore[arg-type]


def _random_rollout(agent: PPOAgent, num_steps: int = 8, num_envs: int = 4, seed: int = 0) -> Rollout:
    """A rollout on random boards with random masks, acted by ``agent``."""
    generator = torch.Generator().manual_seed(seed)
    shape = (num_steps, num_envs)
    obs = torch.randint(-1, 2, (*shape, 9), generator=generator, dtype=torch.int8)
    masks = torch.rand((*shape, 9), generator=generator) < 0.6
    masks[..., 4] = True
    steps = [agent.explore(obs[t], masks[t]) for t in range(num_steps)]
    terminated = torch.rand(shape, generator=generator) < 0.2
    return Rollout(
        obs=obs,
        action_masks=masks,
        actions=torch.stack([s.actions for s in steps]),
        log_probs=torch.stack([s.log_probs for s in steps]),
        values=torch.stack([s.values for s in steps]),
        rewards=torch.randn(shape, generator=generator),
        terminated=terminated,
        truncated=~terminated & (torch.rand(shape, generator=generator) < 0.1),
        next_obs=torch.randint(-1, 2, (*shape, 9), generator=generator, dtype=torch.int8),
        next_action_masks=torch.ones((*shape, 9), dtype=torch.bool),
    )


class _PrefersMasked(nn.Module):
    """Logits that put almost all mass on actions 0..3, which the test masks out."""

    def __init__(self, observation_space: gymnasium.Space, action_space: gymnasium.Space) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.preference = torch.tensor([30.0] * 4 + [0.0] * 5)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        logits = self.scale * self.preference.expand(obs.shape[0], 9)
        return logits + 0.1 * torch.randn_like(logits), torch.zeros(obs.shape[0])


def test_masked_actions_are_never_chosen() -> None:
    torch.manual_seed(0)
    agent = _agent(network=_PrefersMasked)
    obs = torch.zeros(4000, 9, dtype=torch.int8)
    masks = torch.ones(4000, 9, dtype=torch.bool)
    masks[:, :4] = False
    masks[:2000, 4:7] = False
    chosen = [
        agent.act(obs, masks),
        agent.act(obs, masks.to(torch.int8), deterministic=True),
        agent.explore(obs, masks).actions,
    ]
    for actions in chosen:
        assert masks.gather(1, actions[:, None]).all()
    step = agent.explore(obs, masks)
    assert torch.isfinite(step.log_probs).all()


def test_agent_satisfies_protocol() -> None:
    assert isinstance(_agent(), Agent)


def test_learn_changes_parameters_and_returns_finite_metrics() -> None:
    torch.manual_seed(0)
    agent = _agent()
    before = [p.detach().clone() for p in agent.network.parameters()]
    metrics = agent.learn(_random_rollout(agent))
    assert set(metrics) == METRIC_KEYS
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    assert metrics["diag/epochs_run"] == 2
    assert metrics["diag/entropy"] == pytest.approx(-metrics["loss/entropy"])
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.network.parameters(), strict=True))
    assert agent.updates == 1 and agent.env_steps == 32


def test_target_kl_stops_early() -> None:
    torch.manual_seed(0)
    free = _agent(num_epochs=6, optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    assert free.learn(_random_rollout(free))["diag/epochs_run"] == 6
    stopped = _agent(num_epochs=6, target_kl=1e-6, optimizer=functools.partial(torch.optim.Adam, lr=1e-2))
    metrics = stopped.learn(_random_rollout(stopped))
    assert metrics["diag/epochs_run"] < 6
    assert metrics["diag/approx_kl"] > 0


def _parameters(agent: PPOAgent) -> list[Tensor]:
    return [p.detach().clone() for p in agent.network.parameters()]


def _linear_decay(total_iters: int) -> functools.partial:
    return functools.partial(
        torch.optim.lr_scheduler.LinearLR, start_factor=1.0, end_factor=0.0, total_iters=total_iters
    )


def test_state_dict_round_trip_resumes_identically() -> None:
    schedule = _linear_decay(total_iters=10)
    torch.manual_seed(0)
    original = _agent(lr_schedule=schedule)
    for seed in range(2):
        original.learn(_random_rollout(original, seed=seed))
    state = original.state_dict()
    torch.manual_seed(123)
    restored = _agent(lr_schedule=schedule)
    restored.load_state_dict(state)
    assert restored.updates == 2 and restored.env_steps == 64

    obs = torch.randint(-1, 2, (50, 9), dtype=torch.int8)
    torch.testing.assert_close(restored.act(obs, deterministic=True), original.act(obs, deterministic=True))
    rollout = _random_rollout(original, seed=7)
    results = []
    for agent in (original, restored):
        torch.manual_seed(42)
        results.append((agent.learn(rollout), _parameters(agent), agent.optimizer.param_groups[0]["lr"]))
    assert results[0][0] == results[1][0]
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.equal(a, b)
    assert results[0][2] == results[1][2] < 2.5e-4
    assert state["updates"] == 2, "the snapshot must not follow later learning"


def test_learning_rate_schedule_anneals() -> None:
    schedule = _linear_decay(total_iters=4)
    agent = _agent(lr_schedule=schedule)
    rates = [agent.learn(_random_rollout(agent, seed=s))["diag/learning_rate"] for s in range(3)]
    assert rates == pytest.approx([2.5e-4, 1.875e-4, 1.25e-4])


class _DictObsNet(nn.Module):
    """A network whose observations are dicts, as a language-model actor-critic's would be."""

    def __init__(self, observation_space: gymnasium.Space, action_space: gymnasium.Space) -> None:
        super().__init__()
        self.body = ActorCriticMLP(BOARD, action_space, hidden_sizes=(16,))

    def forward(self, obs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        return self.body(obs["board"] * obs["sign"][:, None])


def test_structured_observations_pass_through() -> None:
    torch.manual_seed(0)
    agent = _agent(network=_DictObsNet)
    flat = _random_rollout(_agent())
    wrap = lambda boards: {"board": boards, "sign": torch.ones(boards.shape[:-1], dtype=torch.int8)}  # noqa: E731
    steps = [agent.explore(wrap(flat.obs[t]), flat.action_masks[t]) for t in range(flat.num_steps)]
    flat.obs, flat.next_obs = wrap(flat.obs), wrap(flat.next_obs)
    flat.actions = torch.stack([s.actions for s in steps])
    flat.log_probs = torch.stack([s.log_probs for s in steps])
    flat.values = torch.stack([s.values for s in steps])
    assert all(math.isfinite(v) for v in agent.learn(flat).values())


def test_bad_settings_raise() -> None:
    with pytest.raises(ValueError, match="num_minibatches must be at least 1, got 0"):
        _agent(num_minibatches=0)
    with pytest.raises(ValueError, match="clip_value_loss must be a bool or a positive float"):
        _agent(clip_value_loss=-0.1)
    agent = _agent(num_minibatches=64)
    with pytest.raises(ValueError, match="fewer than num_minibatches=64"):
        agent.learn(_random_rollout(agent, num_steps=2, num_envs=2))


def _bandit_rollout(agent: PPOAgent, num_steps: int, num_envs: int) -> Rollout:
    """One-step episodes: observe a one-hot state in 0..3, reward 1 for the action equal to it."""
    states = torch.randint(0, 4, (num_steps, num_envs))
    obs = nn.functional.one_hot(states, 4).float()
    masks = torch.ones(num_steps, num_envs, 4, dtype=torch.bool)
    step = agent.explore(obs.flatten(0, 1), masks.flatten(0, 1))
    actions = step.actions.reshape(num_steps, num_envs)
    return Rollout(
        obs=obs,
        action_masks=masks,
        actions=actions,
        log_probs=step.log_probs.reshape(num_steps, num_envs),
        values=step.values.reshape(num_steps, num_envs),
        rewards=(actions == states).float(),
        terminated=torch.ones(num_steps, num_envs, dtype=torch.bool),
        truncated=torch.zeros(num_steps, num_envs, dtype=torch.bool),
        next_obs=obs,
        next_action_masks=masks,
    )


def test_learns_a_contextual_bandit() -> None:
    torch.manual_seed(0)
    space = gymnasium.spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
    agent = PPOAgent(
        space,
        gymnasium.spaces.Discrete(4),
        network=functools.partial(ActorCriticMLP, hidden_sizes=(32, 32)),
        optimizer=functools.partial(torch.optim.Adam, lr=3e-3),
        rollout_steps=8,
        num_epochs=4,
        num_minibatches=4,
    )
    for _ in range(30):
        agent.learn(_bandit_rollout(agent, num_steps=8, num_envs=16))
    states = torch.eye(4)
    assert agent.act(states, deterministic=True).tolist() == [0, 1, 2, 3]
    mean_reward = float(_bandit_rollout(agent, 8, 16).rewards.mean())
    assert mean_reward > 0.9


def test_logit_spread_counts_legal_actions_only() -> None:
    logits = torch.tensor([[1.0, 3.0, 100.0], [0.0, 0.0, 6.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    spread = logit_spread(logits, mask)
    assert spread.item() == pytest.approx((1.0 + 8.0) / 2)  # rows: 1.0 and (4 + 4 + 16) / 3
    spread.backward()
    assert logits.grad[0, 2] == 0.0
    assert logits.grad[0, 0] < 0 < logits.grad[0, 1]  # descent pulls both toward their mean
    with pytest.raises(ValueError, match="logit_coef must be >= 0, got -1"):
        _agent(logit_coef=-1.0)


def test_logit_penalty_unsaturates_a_policy_no_advantage_supports() -> None:
    """Reward 0 everywhere: the entropy bonus barely moves a saturated policy, the logit penalty does."""

    def saturated(**settings: float) -> tuple[PPOAgent, Tensor]:
        torch.manual_seed(0)
        space = gymnasium.spaces.Box(0.0, 1.0, shape=(4,), dtype=np.float32)
        agent = PPOAgent(
            space,
            gymnasium.spaces.Discrete(4),
            network=functools.partial(ActorCriticMLP, hidden_sizes=(16,)),
            optimizer=functools.partial(torch.optim.Adam, lr=1e-2),
            rollout_steps=8,
            **settings,
        )
        with torch.no_grad():
            agent.network.actor[-1].bias.copy_(torch.tensor([12.0, 0.0, 0.0, 0.0]))
        return agent, torch.eye(4)

    probs = {}
    for name, settings in {"entropy": {"entropy_coef": 0.01}, "logits": {"logit_coef": 0.01}}.items():
        agent, states = saturated(**settings)
        for _ in range(20):
            rollout = _bandit_rollout(agent, 8, 16)
            rollout.rewards.zero_()
            agent.learn(rollout)
        logits, _ = agent.network(states)
        probs[name] = torch.softmax(logits, -1)[:, 1:].sum(-1).min().item()
    assert probs["entropy"] < 1e-3 < 0.05 < probs["logits"]
