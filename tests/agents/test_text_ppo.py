"""PPO on a language model: batches of whole episodes through the one collector, learning a toy
reward, refusal of bad input, and the Hydra entry point with a tiny model."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch
from torch.testing import assert_close

import agents
from agents import train
from agents.collect.collector import RolloutCollector
from agents.core.base import PolicyStep, Rollout
from agents.networks.lm import LMActorCritic
from agents.networks.lm_cache import ContextCache
from agents.ppo.agent import PPOAgent
from agents.ppo.kl import FixedKLController
from agents.run.checkpoint import load_checkpoint
from rlenv.text import TextGenerationVectorEnv, tiny_tokenizer
from rlenv.text.tokens import append_tokens
from tests.test_config import compose_config

torch.set_num_threads(1)

PROMPTS = ["the movie is", "a film was very", "it was"]
PAD, EOS = 0, 1
GOOD = tiny_tokenizer().convert_tokens_to_ids("good")
TINY_TEXT = [
    "env=text",
    "env.model=tiny",
    "env.vector.prompts=[the movie is,a film was very,it was]",
    "env.vector.reward_fn=token_count:good",
    "env.vector.window=16",
    "env.vector.max_new_tokens=6",
    "num_envs=8",
    "train.progress=false",
    "train.torch_threads=1",
    "env.evaluation.episodes=8",
    "env.evaluation.num_envs=4",
]


def make_env(num_envs: int = 8, max_new_tokens: int = 6, reward_fn="token_count:good", **kwargs):
    kwargs.setdefault("autoreset_mode", "disabled")
    return TextGenerationVectorEnv(
        num_envs=num_envs,
        tokenizer="tiny",
        prompts=PROMPTS,
        reward_fn=reward_fn,
        window=16,
        max_new_tokens=max_new_tokens,
        **kwargs,
    )


def make_agent(env, lr: float = 3e-3, kl_coef: float = 0.01, **kwargs) -> PPOAgent:
    settings = dict(
        rollout_steps=env.config.max_new_tokens,
        gamma=1.0,
        num_epochs=4,
        num_minibatches=2,
        entropy_coef=0.0,
        value_coef=0.1,
        max_grad_norm=1.0,
        bootstrap_truncated=False,
    )
    settings.update(kwargs)
    return PPOAgent(
        env.single_observation_space,
        env.single_action_space,
        network=functools.partial(LMActorCritic, model="tiny"),
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        **({"kl": FixedKLController(kl_coef)} | settings),
    )


class ScriptedAgent:
    """Plays token ``script[t][b]`` at step t and records the windows it was shown."""

    def __init__(self, script: list[list[int]]) -> None:
        self.script = torch.tensor(script)
        self.device = torch.device("cpu")
        self.rollout_steps = len(script)
        self.seen: list[dict[str, torch.Tensor]] = []

    def explore(self, obs, action_mask=None) -> PolicyStep:
        step = len(self.seen)
        self.seen.append({key: value.clone() for key, value in obs.items()})
        batch = self.script.shape[1]
        return PolicyStep(self.script[step], torch.full((batch,), -1.0), torch.full((batch,), 2.0))


def test_collector_masks_finished_rows_and_records_whole_sequences():
    env = make_env(num_envs=4, max_new_tokens=4)
    script = [
        [EOS, GOOD, GOOD, GOOD],
        [GOOD, GOOD, GOOD, GOOD],
        [GOOD, EOS, GOOD, GOOD],
        [GOOD, GOOD, GOOD, EOS],
    ]
    agent = ScriptedAgent(script)
    collector = RolloutCollector(env, agent, seed=0, samples_every=1)
    rollout, stats = collector.collect(4)
    valid = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    assert rollout.whole_episodes and rollout.num_valid == int(valid.sum())
    assert torch.equal(rollout.valid, valid)
    assert torch.equal(rollout.actions, torch.tensor(script))
    assert torch.equal(rollout.log_probs, torch.where(valid, -1.0, 0.0))
    assert torch.equal(rollout.values, torch.where(valid, 2.0, 0.0))
    ended = torch.zeros(4, 4, dtype=torch.bool)
    ended[0, 0] = ended[2, 1] = ended[3, 3] = True
    assert torch.equal(rollout.terminated, ended)
    assert rollout.truncated.nonzero().tolist() == [[3, 2]]
    expected_rewards = torch.zeros(4, 4)
    expected_rewards[2, 1], expected_rewards[3, 2], expected_rewards[3, 3] = 2.0, 4.0, 3.0
    assert torch.equal(rollout.rewards, expected_rewards)
    assert rollout.action_masks is None  # the text env reports no masks: every token is legal
    # row 0 ended with EOS at step 0; from then on its window stays as it was
    assert agent.seen[1]["input_ids"][0, -1] == EOS and agent.seen[1]["attention_mask"][0, -1] == 1
    assert torch.equal(agent.seen[3]["input_ids"][0], agent.seen[1]["input_ids"][0])
    input_ids, attention_mask = append_tokens(
        rollout.obs["input_ids"][0], rollout.obs["attention_mask"][0], rollout.actions.T, valid.T
    )
    assert input_ids.shape == (4, 20) and torch.equal(attention_mask[:, 16:], valid.T.long())
    assert torch.equal(input_ids[:, :16], agent.seen[0]["input_ids"])
    assert stats.metrics() == {
        "charts/episode_return": 2.25,
        "charts/episode_length": 3.0,
        "charts/episodes": 4.0,
    }
    assert "| prompt | completion | return |" in stats.texts["samples"]


def test_episodes_that_outgrow_the_window_are_refused():
    env = make_env(num_envs=2, max_new_tokens=14)
    agent = make_agent(env, num_minibatches=1)
    rollout, _ = RolloutCollector(env, ScriptedAgent([[GOOD, GOOD]] * 14), seed=0).collect(14)
    with pytest.raises(ValueError, match="window of 16 tokens"):
        agent.learn(rollout)


def test_acting_through_the_cache_matches_one_pass_over_whole_sequences(monkeypatch):
    env = make_env(num_envs=6, max_new_tokens=6)
    agent = make_agent(env)
    encodes = {"all": 0, "rows": 0}
    original_all, original_rows = ContextCache._encode_all, ContextCache._reencode_rows

    def count(name, original):
        def wrapped(self, *args):
            encodes[name] += 1
            return original(self, *args)

        return wrapped

    monkeypatch.setattr(ContextCache, "_encode_all", count("all", original_all))
    monkeypatch.setattr(ContextCache, "_reencode_rows", count("rows", original_rows))
    rollout, _ = RolloutCollector(env, agent, seed=3).collect(6)
    assert encodes == {"all": 1, "rows": 0}  # prompts encoded once; finished rows never re-encoded
    assert not bool(rollout.valid.all())  # the tiny model does stop some rows early
    first = {key: value[0] for key, value in rollout.obs.items()}
    evaluation = agent.network.evaluate_episodes(first, rollout.actions, rollout.valid)
    valid = rollout.valid
    assert_close(evaluation.log_probs[valid], rollout.log_probs[valid], atol=1e-5, rtol=1e-5)
    assert_close(evaluation.values[valid], rollout.values[valid], atol=1e-5, rtol=1e-5)


def test_advantages_end_each_episode_at_its_last_valid_step():
    env = make_env(num_envs=2, max_new_tokens=3)
    agent = make_agent(env, num_minibatches=1, gae_lambda=1.0)
    rollout, _ = RolloutCollector(env, ScriptedAgent([[GOOD, GOOD], [GOOD, EOS], [GOOD, GOOD]])).collect(3)
    assert rollout.valid.tolist() == [[True, True], [True, True], [True, False]]
    rollout.values = torch.tensor([[0.5, 0.25], [1.0, 0.5], [1.5, 9.0]])
    advantages, returns = agent._advantages(rollout, rollout.rewards)
    assert_close(returns, torch.tensor([[3.0, 1.0], [3.0, 1.0], [3.0, 0.0]]))
    assert_close(advantages, torch.tensor([[2.5, 0.75], [2.0, 0.5], [1.5, 0.0]]))


def test_ppo_raises_a_toy_reward_within_a_few_iterations():
    torch.manual_seed(0)
    env = make_env(num_envs=16, max_new_tokens=8)
    agent = make_agent(env)
    collector = RolloutCollector(env, agent, seed=0)
    scores, metrics, tokens = [], {}, 0
    for _ in range(15):
        rollout, stats = collector.collect(agent.rollout_steps)
        metrics = agent.learn(rollout)
        scores.append(stats.metrics()["charts/episode_return"])
        tokens += int(rollout.valid.sum())
    start, end = sum(scores[:3]) / 3, sum(scores[-3:]) / 3
    assert end > start + 1.0, scores
    assert metrics["charts/kl"] > 0 and metrics["charts/kl_coef"] == 0.01
    assert all(
        math.isfinite(metrics[k]) for k in ("loss/policy", "loss/value", "diag/entropy", "diag/clipfrac")
    )
    assert metrics["diag/skipped_updates"] == 0
    assert agent.env_steps == tokens  # generated tokens, not padding


def trainable(agent: PPOAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.network.parameters() if p.requires_grad]


def test_non_finite_loss_or_gradient_is_refused_and_reported():
    torch.manual_seed(0)
    env = make_env(num_envs=4, max_new_tokens=4)
    agent = make_agent(env)
    rollout, _ = RolloutCollector(env, agent, seed=0).collect(4)
    before = trainable(agent)
    poisoned = Rollout(**{**rollout.__dict__, "rewards": torch.full_like(rollout.rewards, math.nan)})
    metrics = agent.learn(poisoned)
    assert metrics["diag/skipped_updates"] == agent.num_epochs * agent.num_minibatches
    assert all(torch.equal(b, a) for b, a in zip(before, trainable(agent), strict=True))

    lora = next(p for name, p in agent.network.named_parameters() if "lora_A" in name)
    handle = lora.register_hook(lambda grad: grad * math.nan)
    metrics = agent.learn(rollout)
    handle.remove()
    assert metrics["diag/skipped_updates"] == agent.num_epochs * agent.num_minibatches
    assert math.isfinite(metrics["loss/total"])
    assert all(torch.equal(b, a) for b, a in zip(before, trainable(agent), strict=True))
    assert agent.learn(rollout)["diag/skipped_updates"] == 0
    assert any(not torch.equal(b, a) for b, a in zip(before, trainable(agent), strict=True))


@pytest.mark.parametrize(
    ("reward_fn", "message"),
    [
        (lambda prompts, completions: [math.nan] * len(completions), "non-finite"),
        (lambda prompts, completions: [1.0] * (len(completions) + 1), "scores"),
    ],
)
def test_bad_reward_function_output_stops_collection(reward_fn, message):
    env = make_env(num_envs=2, max_new_tokens=3, reward_fn=reward_fn)
    with pytest.raises(ValueError, match=message):
        RolloutCollector(env, make_agent(env, num_minibatches=1)).collect(3)


def test_missing_model_path_is_named_in_the_error():
    env = make_env(num_envs=2)
    with pytest.raises(FileNotFoundError, match="/no/such/model"):
        LMActorCritic(env.single_observation_space, env.single_action_space, model="/no/such/model")


def test_same_step_text_rollouts_train_the_same_agent_step_by_step():
    torch.manual_seed(0)
    env = make_env(num_envs=4, max_new_tokens=3, autoreset_mode="same_step")
    agent = make_agent(env, num_minibatches=2)
    before = trainable(agent)
    rollout, _ = RolloutCollector(env, agent, seed=0).collect(5)
    assert not rollout.whole_episodes and rollout.valid is None
    metrics = agent.learn(rollout)
    assert abs(metrics["charts/kl"]) < 1e-4  # LoRA starts at zero: the policy is its reference
    assert metrics["diag/skipped_updates"] == 0
    assert any(not torch.equal(b, a) for b, a in zip(before, trainable(agent), strict=True))
    assert agent.env_steps == 20


def test_kl_coef_zero_from_the_config_turns_the_penalty_off():
    cfg = compose_config(["agent=ppo", *TINY_TEXT, "agent.kl.coef=0", "agent.num_minibatches=2"])
    env, agent = train.build(cfg, torch.device("cpu"))
    assert isinstance(agent, PPOAgent) and agent.kl.coef == 0
    collector = RolloutCollector(env, agent, seed=0)
    metrics = agent.learn(collector.collect(agent.rollout_steps)[0])
    assert metrics["charts/kl_coef"] == 0 and metrics["charts/non_score_reward"] == 0
    assert agent.kl.coef == 0


def test_train_entry_point_runs_text_ppo_with_the_tiny_model(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_config(
        [
            "agent=ppo",
            *TINY_TEXT,
            "train.total_env_steps=60",
            "agent.num_minibatches=2",
            "train.samples_every=1",
        ]
    )
    metrics = train.run(cfg, tmp_path)
    assert metrics["eval/heldout/episodes"] == 8
    assert math.isfinite(metrics["eval/heldout/return_mean"])
    assert json.loads((tmp_path / "metrics.json").read_text())["perf/env_steps"] >= 60
    events = EventAccumulator(str(tmp_path)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {
        "charts/episode_return",
        "charts/kl",
        "charts/kl_coef",
        "charts/episode_length",
        "diag/entropy",
        "diag/clipfrac",
        "diag/skipped_updates",
    } <= scalars
    assert "samples/text_summary" in events.Tags()["tensors"]
    loaded = agents.load_agent(tmp_path)
    state, _ = load_checkpoint(tmp_path)
    assert isinstance(loaded, PPOAgent)
    assert loaded.kl.coef == state["agent"]["kl"]["coef"] != 0.1  # adaptive: moved, saved, restored
    obs, _ = make_env(num_envs=3).reset(seed=0)
    assert loaded.act(obs, deterministic=True).shape == (3,)
