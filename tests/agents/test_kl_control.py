"""KL control that holds its target, the k1/k2/k3 estimators, the KL as a loss term, and
group-relative advantages (GRPO, RLOO) through the same PPO."""

from __future__ import annotations

import math

import pytest
import torch

from agents.collect.collector import RolloutCollector
from agents.core.base import Rollout
from agents.ppo import PPOAgent
from agents.ppo.kl import AdaptiveKLController, PIKLController, kl_estimate, policy_kl_to_reference
from agents.train import progress_summary
from tests.agents.test_text_ppo import make_agent, make_env


def drive(controller, sensitivity: float, updates: int, lag: float = 0.3) -> list[float]:
    """A stand-in for a policy: its KL relaxes toward ``sensitivity / beta`` with a lag."""
    kl, seen = 0.0, []
    for _ in range(updates):
        kl += lag * (sensitivity / controller.coef - kl)
        seen.append(kl)
        controller.update(kl, 16)
    return seen


@pytest.mark.parametrize("target", [0.5, 1.0, 2.0, 4.0, 8.0])
@pytest.mark.parametrize("sensitivity", [0.05, 0.5, 5.0])
def test_pi_controller_holds_the_target_after_warm_up_whatever_the_run_length(target, sensitivity):
    for updates in (40, 400):
        seen = drive(PIKLController(coef=0.1, target=target), sensitivity, updates)
        settled = seen[25:]
        assert all(abs(kl / target - 1) <= 0.25 for kl in settled), (target, sensitivity, seen[20:30])


def test_the_episode_horizon_controller_does_not_hold_a_target_in_a_short_run():
    seen = drive(AdaptiveKLController(coef=0.1, target=1.0, horizon=10_000), 0.5, 40)
    assert abs(seen[-1] / 1.0 - 1) > 0.25  # what the PI controller fixes


def test_hold_until_reached_keeps_beta_until_the_kl_first_reaches_the_target():
    held = PIKLController(coef=0.1, target=1.0, hold_until_reached=True)
    free = PIKLController(coef=0.1, target=1.0)
    for kl in (0.01, 0.05, 0.2, 0.6):  # the policy has not moved yet
        held.update(kl, 16)
        free.update(kl, 16)
    assert held.coef >= 0.1 > free.coef and not held.reached
    held.update(1.5, 16)
    assert held.reached and held.coef > 0.1
    before = held.coef
    held.update(0.3, 16)  # below the target after reaching it: beta falls as usual
    assert held.coef < before
    restored = PIKLController(coef=0.1, target=1.0, hold_until_reached=True)
    restored.load_state_dict(held.state_dict())
    assert restored.reached and restored.coef == held.coef


def test_pi_controller_state_round_trips_and_ignores_non_finite_kl():
    controller = PIKLController(coef=0.2, target=1.0)
    controller.update(3.0, 8)
    copy = PIKLController(coef=0.2, target=1.0)
    copy.load_state_dict(controller.state_dict())
    assert copy.coef == controller.coef and copy.previous_error == controller.previous_error
    before = controller.coef
    controller.update(math.nan, 8)
    assert controller.coef == before
    with pytest.raises(ValueError, match="target"):
        PIKLController(target=0)
    fixed = PIKLController(coef=0.05, target=1.0, ki=0.0, kp=0.0)  # the fixed-coefficient mode
    for kl in (0.1, 5.0, 50.0):
        fixed.update(kl, 8)
    assert fixed.coef == 0.05


def test_estimators_match_their_definitions_and_k3_is_unbiased():
    torch.manual_seed(0)
    logits = torch.randn(50)
    policy = torch.softmax(logits, 0)
    reference = torch.softmax(logits + 0.3 * torch.randn(50), 0)  # near: where k3's variance is low
    exact = float((policy * (policy.log() - reference.log())).sum())
    samples = torch.multinomial(policy, 200_000, replacement=True)
    log_p, log_q = policy.log()[samples], reference.log()[samples]
    k1, k2, k3 = (kl_estimate(log_p, log_q, name) for name in ("k1", "k2", "k3"))
    assert torch.allclose(k2, 0.5 * (log_p - log_q) ** 2)
    assert bool((k3 >= -1e-6).all()) and not bool((k1 >= 0).all())
    assert float(k1.mean()) == pytest.approx(exact, rel=0.03)
    assert float(k3.mean()) == pytest.approx(exact, rel=0.03)
    assert float(k3.std()) < 0.5 * float(k1.std())
    with pytest.raises(ValueError, match="k4"):
        kl_estimate(log_p, log_q, "k4")


def _rollout(rewards: torch.Tensor) -> Rollout:
    steps, rows = rewards.shape
    valid = torch.ones(steps, rows, dtype=torch.bool)
    done = torch.zeros(steps, rows, dtype=torch.bool)
    done[-1] = True
    zeros = torch.zeros(steps, rows)
    return Rollout(
        obs=zeros,
        action_masks=None,
        actions=zeros.long(),
        log_probs=zeros,
        values=zeros,
        rewards=rewards,
        terminated=done,
        truncated=torch.zeros_like(done),
        next_obs=zeros,
        next_action_masks=None,
        valid=valid,
        whole_episodes=True,
    )


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_group_relative_advantages(kind):
    import gymnasium

    agent = PPOAgent(
        gymnasium.spaces.Box(-1, 1, (1,)),
        gymnasium.spaces.Discrete(2),
        advantage=kind,
        group_size=2,
        gamma=1.0,
    )
    rewards = torch.zeros(3, 4)
    rewards[-1] = torch.tensor([1.0, 0.0, 3.0, 3.0])  # two groups: rows (0, 1) and (2, 3)
    advantages, returns = agent._group_advantages(_rollout(rewards), rewards)
    assert returns[0].tolist() == [1.0, 0.0, 3.0, 3.0]
    if kind == "rloo":
        assert advantages[0].tolist() == [1.0, -1.0, 0.0, 0.0]
    else:
        std = torch.tensor([1.0, 0.0]).std().item()
        assert advantages[0].tolist() == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 0.0, 0.0])
    assert torch.equal(advantages[0], advantages[2])  # every token of an episode shares it
    with pytest.raises(ValueError, match="group_size >= 2"):
        PPOAgent(gymnasium.spaces.Box(-1, 1, (1,)), gymnasium.spaces.Discrete(2), advantage=kind)


def _group_agent(kind: str, baseline: str, gamma: float = 1.0) -> PPOAgent:
    import gymnasium

    return PPOAgent(
        gymnasium.spaces.Box(-1, 1, (1,)),
        gymnasium.spaces.Discrete(2),
        advantage=kind,
        group_size=2,
        gamma=gamma,
        group_baseline=baseline,
    )


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_step_baseline_equals_the_episode_baseline_for_a_reward_at_the_end(kind):
    torch.manual_seed(0)
    rewards = torch.zeros(5, 6)
    rewards[-1] = torch.randn(6)
    rollout = _rollout(rewards)
    episode, _ = _group_agent(kind, "episode")._group_advantages(rollout, rewards)
    step, _ = _group_agent(kind, "step")._group_advantages(rollout, rewards)
    assert torch.allclose(episode, step)


@pytest.mark.parametrize("kind", ["grpo", "rloo"])
def test_step_baseline_judges_each_token_by_what_follows_it(kind):
    # dense rewards, gamma 0.5: G_t = r_t + 0.5 G_{t+1}; one group of two rows, then a second
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    rollout = _rollout(rewards)
    rollout.valid[2, 3] = False  # row 3 ended after two steps: alone at its group's last step
    rollout.terminated[1, 3] = True
    advantages, returns = _group_agent(kind, "step", gamma=0.5)._group_advantages(rollout, rewards)
    assert returns[:, 0].tolist() == [1.0, 0.0, 0.0] and returns[:, 1].tolist() == [0.5, 1.0, 2.0]
    # row 0 earns its token-0 reward, row 1 the tokens that led to its reward
    if kind == "rloo":
        assert advantages[:, 0].tolist() == [0.5, -1.0, -2.0]
        assert advantages[:, 1].tolist() == [-0.5, 1.0, 2.0]
        assert advantages[:, 2].tolist() == [1.0, 2.0, 0.0]  # alone at its last step: its own return (0)
        assert advantages[2, 3].item() == 0.0  # past its end
    else:
        scale = torch.tensor([1.0, 0.5]).std().item() + 1e-4  # the spread of the episode returns
        assert advantages[:, 0].tolist() == pytest.approx([0.25 / scale, -0.5 / scale, -1.0 / scale])
        assert advantages[:, 1].tolist() == pytest.approx([-0.25 / scale, 0.5 / scale, 1.0 / scale])
    with pytest.raises(ValueError, match="group_baseline"):
        _group_agent(kind, "token")


def test_text_env_gives_each_group_one_prompt():
    env = make_env(num_envs=6, group_size=3)
    env.reset(seed=0)
    prompts = env.prompt_texts
    assert prompts[:3] == [prompts[0]] * 3 and prompts[3:] == [prompts[3]] * 3
    with pytest.raises(ValueError, match="divide"):
        make_env(num_envs=4, group_size=3)
    with pytest.raises(ValueError, match="disabled"):
        make_env(num_envs=4, group_size=2, autoreset_mode="same_step")


@pytest.mark.parametrize(
    "settings",
    [
        {"advantage": "grpo", "group_size": 4},
        {"advantage": "rloo", "group_size": 4},
        {"kl_placement": "loss", "kl_estimator": "k3"},
        {"kl_estimator": "k2"},
    ],
    ids=["grpo", "rloo", "kl-in-loss-k3", "kl-in-reward-k2"],
)
def test_every_variant_raises_a_toy_reward(settings):
    torch.manual_seed(0)
    env = make_env(num_envs=16, max_new_tokens=8, group_size=settings.get("group_size", 1))
    agent = make_agent(env, **settings)
    collector = RolloutCollector(env, agent, seed=0)
    scores = []
    for _ in range(15):
        rollout, stats = collector.collect(agent.rollout_steps)
        metrics = agent.learn(rollout)
        scores.append(stats.metrics()["charts/episode_return"])
    assert sum(scores[-3:]) / 3 > sum(scores[:3]) / 3 + 1.0, scores
    assert metrics["charts/kl"] > 0 and math.isfinite(metrics["loss/policy"])


def test_progress_bar_shows_score_and_kl_with_its_target():
    shown = progress_summary({"charts/episode_return": 0.4567, "charts/kl": 1.234, "charts/kl_target": 1.0})
    assert shown == {"score": "0.457", "kl": "1.23/1"}
    assert progress_summary({"charts/win_rate": 0.5, "charts/loss_rate": 0.1}) == {
        "win": "0.50",
        "loss": "0.10",
    }


@pytest.mark.parametrize("target", [0.5, 1.0, 4.0])
def test_pi_controller_settles_after_a_slow_start_without_winding_beta_down(target):
    """The policy barely moves for 10 updates, then drifts fast: beta must not have collapsed."""
    controller, kl, seen = PIKLController(coef=0.1, target=target), 0.0, []
    for update in range(60):
        kl += (0.05 if update < 10 else 0.4) * (0.3 / controller.coef - kl)
        seen.append(kl)
        controller.update(kl, 16)
        if update == 9:
            assert controller.coef > 0.1 * math.exp(-0.3 * 10 * 0.5) * 0.99  # fell at half the rate
    tail = seen[30:]
    assert abs(sum(tail) / len(tail) / target - 1) <= 0.25
    assert max(seen) < 3 * target


def test_the_ceiling_estimate_has_the_gradient_of_the_kl_to_the_reference():
    torch.manual_seed(0)
    logits = torch.randn(20, requires_grad=True)
    reference = torch.log_softmax(torch.randn(20), 0)
    log_policy = torch.log_softmax(logits, 0)
    exact = (log_policy.exp() * (log_policy - reference)).sum()
    (exact_gradient,) = torch.autograd.grad(exact, logits)
    samples = torch.multinomial(log_policy.detach().exp(), 400_000, replacement=True)
    new = torch.log_softmax(logits, 0)[samples]
    estimate = policy_kl_to_reference(new, new.detach(), reference[samples])
    (gradient,) = torch.autograd.grad(estimate, logits)
    assert float(estimate.detach()) == pytest.approx(float(exact), rel=0.02)
    assert torch.allclose(gradient, exact_gradient, atol=0.01), (gradient, exact_gradient)


def _kl_per_update(ceiling, updates: int = 20) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    env = make_env(num_envs=16, max_new_tokens=8)
    # a fixed, tiny beta and a large step: without the ceiling the KL runs away
    controller = PIKLController(coef=0.01, target=1.0, ki=0.0, kp=0.0)
    agent = make_agent(
        env, lr=1e-2, kl=controller, kl_ceiling=ceiling, kl_placement="loss", num_epochs=1, num_minibatches=4
    )
    collector = RolloutCollector(env, agent, seed=0)
    kls, switched = [], []
    for _ in range(updates):
        rollout, _ = collector.collect(agent.rollout_steps)
        metrics = agent.learn(rollout)
        kls.append(metrics["charts/kl"])
        switched.append(metrics.get("diag/kl_ceiling_steps", 0.0))
    return kls, switched


def test_the_ceiling_bounds_the_kl_inside_the_update():
    free, none_switched = _kl_per_update(None)
    bounded, switched = _kl_per_update(1.2)
    assert sum(none_switched) == 0 and sum(switched) > 0
    assert min(free[10:]) > 4.0, free  # beta alone does not hold it
    assert max(bounded[10:]) < min(free[10:]) and sum(bounded[10:]) / 10 < 2.0, (bounded, free)


def test_the_ceiling_needs_a_controller_with_a_target():
    env = make_env(num_envs=4)
    with pytest.raises(ValueError, match="kl_ceiling=1.2 .*FixedKLController"):
        make_agent(env, kl_ceiling=1.2)
    with pytest.raises(ValueError, match="kl_ceiling must be a positive"):
        make_agent(env, kl=PIKLController(target=1.0), kl_ceiling=0.0)
