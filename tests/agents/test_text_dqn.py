"""DQN on a language model: dict observations in replay, cached acting, a toy reward, the entry point."""

from __future__ import annotations

import functools
import math

import torch
from torch.testing import assert_close

from agents import train
from agents.collect.collector import RolloutCollector
from agents.dqn.agent import DQNAgent
from agents.networks.lm import LMQNetwork
from rlenv.text import TextGenerationVectorEnv
from tests.agents.test_text_ppo import PROMPTS, TINY_TEXT
from tests.test_config import compose_config

torch.set_num_threads(1)


def make_env(num_envs: int = 4, max_new_tokens: int = 4) -> TextGenerationVectorEnv:
    return TextGenerationVectorEnv(
        num_envs=num_envs,
        tokenizer="tiny",
        prompts=PROMPTS,
        reward_fn="token_count:good",
        window=16,
        max_new_tokens=max_new_tokens,
    )


def make_agent(env: TextGenerationVectorEnv, **kwargs) -> DQNAgent:
    settings = dict(
        rollout_steps=4,
        batch_size=8,
        learning_starts=16,
        gradient_steps=2,
        target_update_interval=2,
        epsilon_start=0.5,
        epsilon_end=0.1,
        epsilon_decay_steps=200,
        store_action_masks=False,
    )
    settings.update(kwargs)
    return DQNAgent(
        env.single_observation_space,
        env.single_action_space,
        network=functools.partial(LMQNetwork, model="tiny"),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        **settings,
    )


def test_cached_q_values_equal_the_full_pass_and_follow_weight_changes():
    env = make_env(num_envs=3)
    network = LMQNetwork(env.single_observation_space, env.single_action_space, model="tiny")
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        with torch.no_grad():
            cached = network(obs)
        assert_close(cached, network(obs).detach(), atol=1e-5, rtol=1e-5)
        actions = cached.argmax(-1)
        obs = env.step(actions)[0]
        with torch.no_grad():
            network.scale.mul_(1.5)
            next(p for n, p in network.named_parameters() if "lora_B" in n).add_(0.3)


def test_dqn_learns_from_text_transitions_without_storing_vocabulary_masks():
    torch.manual_seed(0)
    env = make_env(num_envs=4)
    agent = make_agent(env)
    before = [p.detach().clone() for p in agent.q_network.parameters() if p.requires_grad]
    collector = RolloutCollector(env, agent, seed=0)
    metrics: dict[str, float] = {}
    for _ in range(6):
        rollout, _ = collector.collect(agent.rollout_steps)
        metrics = agent.learn(rollout)
    assert agent.updates > 0
    assert math.isfinite(metrics["loss/td"]) and math.isfinite(metrics["diag/q_mean"])
    after = [p.detach() for p in agent.q_network.parameters() if p.requires_grad]
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    assert "action_masks" not in agent.replay.storage
    assert agent.replay.storage["obs/input_ids"].shape[1:] == (16,)
    assert agent.replay.storage["next_obs/attention_mask"].shape[1:] == (16,)
    batch = agent.replay.sample(4)
    assert set(batch.obs) == {"input_ids", "attention_mask"} and batch.action_masks is None


def test_train_entry_point_runs_text_dqn_with_the_tiny_model(tmp_path):
    cfg = compose_config(
        [
            "agent=qlearning",
            *TINY_TEXT,
            "train.total_env_steps=96",
            "agent.rollout_steps=4",
            "agent.learning_starts=32",
            "agent.batch_size=8",
        ]
    )
    metrics = train.run(cfg, tmp_path)
    assert metrics["eval/heldout/episodes"] == 8
    assert math.isfinite(metrics["eval/heldout/return_mean"])
    assert (tmp_path / "checkpoints" / "latest").is_file()
