"""Tool use as a text env: the env writes observations into the window; PPO scores only the actions."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from agents.collect.collector import RolloutCollector
from agents.networks.lm import LMActorCritic, episode_transcripts
from agents.ppo.agent import PPOAgent
from agents.ppo.batches import EpisodeBatch
from agents.ppo.kl import FixedKLController
from rlenv.text import tiny_tokenizer
from rlenv.tools.react import Outcome, ToolUseEnv, ToolUseVectorEnv, parse_action

torch.set_num_threads(1)

WORDS = ["go", "Action:", "ping[x]", "finish[yes]", "Observation:", "pong", "Thought:", "hm", "zap[1]"]


class PingEpisode:
    prompt = "go"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def call(self, action: str, argument: str) -> str:
        self.calls.append((action, argument))
        return "pong"

    def outcome(self, answer: str | None) -> Outcome:
        return Outcome(float(answer == "yes"), answer == "yes", f"answer {answer!r}")


class PingTask:
    actions = ("ping",)

    def episode(self, rng: np.random.Generator, split: str) -> PingEpisode:
        return PingEpisode()


def tokenizer():
    return tiny_tokenizer(vocab_size=16, words=WORDS)


def ids(*words: str) -> list[int]:
    return tokenizer().convert_tokens_to_ids(list(words))


def make_env(num_envs: int = 2, **kwargs) -> ToolUseVectorEnv:
    settings = dict(window=40, max_turns=3, max_turn_tokens=4, turn_cost=0.1, tokenizer=tokenizer())
    return ToolUseVectorEnv(PingTask(), num_envs=num_envs, **(settings | kwargs))


def test_parse_action_reads_the_first_complete_action():
    assert parse_action("Thought: look\nAction: sql[SELECT 1]") == ("sql", "SELECT 1")
    assert parse_action("Action: label [17, kettle] then Action: finish[x]") == ("label", "17, kettle")
    assert parse_action("Action: sql[SELECT") is None and parse_action("no action") is None


def test_env_writes_the_observation_after_an_action_and_charges_the_turn():
    env = make_env(autoreset_mode="disabled")
    obs, _ = env.reset(seed=0)
    assert obs["attention_mask"].sum(-1).tolist() == [1, 1]
    for word in ("Action:", "ping[x]"):
        obs, rewards, terminated, truncated, info = env.step(ids(word, word))
    written = ids("Observation:", "pong", "Thought:")
    assert obs["input_ids"][0, -5:].tolist() == ids("Action:", "ping[x]") + written
    assert_close(rewards, torch.tensor([-0.1, -0.1])) and info["turns"].tolist() == [1, 1]
    assert not terminated.any() and not truncated.any()
    obs, rewards, terminated, _, info = env.step(ids("Action:", "hm"))
    obs, rewards, terminated, _, info = env.step(ids("finish[yes]", "hm"))
    assert terminated.tolist() == [True, False] and rewards[0].item() == pytest.approx(1.0)
    assert info["episode_metrics"]["success"].tolist() == [1.0, 0.0]
    assert info["completion"][0].startswith("Action: ping[x] Observation: pong Thought:")
    assert info["reward_detail"][0] == "answer 'yes'"


def test_turns_without_an_action_are_answered_and_the_turn_limit_truncates():
    env = make_env(num_envs=1, autoreset_mode="disabled", window=200)
    env.reset(seed=0)
    steps = 0
    while True:
        _, rewards, terminated, truncated, info = env.step(ids("hm"))
        steps += 1
        if truncated.any() or terminated.any():
            break
    assert truncated.tolist() == [True] and steps == 3 * 4 and info["turns"].tolist() == [3]
    assert info["completion"][0].count("Observation:") == 2  # the last turn's is not written
    assert info["reward_detail"][0] == "answer None"


def test_unknown_actions_name_the_valid_ones_and_eos_ends_the_episode():
    env = ToolUseVectorEnv(PingTask(), num_envs=1, window=200, autoreset_mode="disabled")  # SmolLM2's
    env.reset(seed=0)
    for token in env.tokenizer(" Action: zap[1]", add_special_tokens=False)["input_ids"]:
        env.step([token])
    assert "unknown action 'zap'; valid actions: ping, finish" in env.transcript(0)
    _, _, terminated, _, info = env.step([env.eos_token_id])
    assert terminated.tolist() == [True] and info["episode_metrics"]["success"].tolist() == [0.0]
    with pytest.raises(RuntimeError, match="after all 1 rows ended"):
        env.step([0])
    fresh = make_env(num_envs=1)
    fresh.reset(seed=0)
    with pytest.raises(ValueError, match="not token ids of the vocabulary"):
        fresh.step([999])


def test_prompts_that_leave_no_room_for_a_turn_are_refused():
    with pytest.raises(ValueError, match="does not fit the window"):
        make_env(window=3, max_turn_tokens=4).reset(seed=0)
    with pytest.raises(ValueError, match="turn_cost must be a number"):
        make_env(turn_cost=2)


def test_single_env_passes_check_env_and_renders():
    from gymnasium.utils.env_checker import check_env

    env = ToolUseEnv(PingTask(), render_mode="ansi", tokenizer=tokenizer(), window=40, max_turn_tokens=4)
    check_env(env, skip_render_check=True)
    env.reset(seed=1)
    for word in ("Action:", "ping[x]"):
        env.step(ids(word)[0])
    assert env.render() == "go Action: ping[x] Observation: pong Thought:"


def make_agent(env) -> PPOAgent:
    return PPOAgent(
        env.single_observation_space,
        env.single_action_space,
        network=functools.partial(LMActorCritic, model="tiny"),
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
        kl=FixedKLController(0.05),
        rollout_steps=24,
        gamma=1.0,
        num_epochs=1,
        num_minibatches=2,
    )


def test_env_written_tokens_are_left_out_of_the_policy_loss_and_the_kl():
    torch.manual_seed(0)
    env = make_env(num_envs=4, autoreset_mode="disabled", max_turns=4, max_turn_tokens=3)
    agent = make_agent(env)
    # turns of at most 3 tokens: the env writes an observation after each (an action's or a reminder)
    rollout, _ = RolloutCollector(env, agent, seed=0).collect(24)
    context = episode_transcripts(rollout.obs, rollout.next_obs, rollout.actions, rollout.valid_mask)
    assert context is not None, "the env wrote observations, so the episodes need their transcripts"
    final = context["input_ids"]
    columns = context["columns"]
    valid = rollout.valid_mask.T
    # every action sits at its column; every other attended column after the prompt is env-written
    assert torch.equal(final.gather(1, columns)[valid], rollout.actions.T[valid])
    written = context["attention_mask"].bool().clone()
    for row in range(final.shape[0]):
        written[row, columns[row][valid[row]]] = False
        written[row, : final.shape[1] - int(context["attention_mask"][row].sum()) + 1] = False  # the prompt
    assert bool(written.any()) and bool((final[written] == ids("Observation:")[0]).any())
    # scoring the episodes gives exactly the acting log-probs and values: one sample per action
    advantages = torch.zeros_like(rollout.rewards)
    batch = EpisodeBatch.from_rollout(rollout, advantages, advantages, network=agent.network)
    with torch.no_grad():
        samples = batch.evaluate(agent.network)
    assert samples.new_log_probs.shape[0] == int(rollout.valid_mask.sum())
    assert_close(samples.new_log_probs, rollout.log_probs.T[valid].float(), atol=1e-4, rtol=1e-4)
    assert_close(samples.new_values, rollout.values.T[valid].float(), atol=1e-4, rtol=1e-4)
    # the reference's log-probs of the same actions: step by step and in one pass agree
    reference = EpisodeBatch.reference_log_probs(agent.network, rollout, chunks=2)
    stepwise = torch.stack(
        [
            torch.log_softmax(agent.network.reference_logits({k: v[t] for k, v in rollout.obs.items()}), -1)
            .gather(-1, rollout.actions[t, :, None])
            .squeeze(-1)
            for t in range(rollout.actions.shape[0])
        ]
    )
    assert_close(reference[rollout.valid_mask], stepwise[rollout.valid_mask], atol=1e-4, rtol=1e-4)
    # the prompt-plus-actions sequence (what a plain text env's episode is) would score other tokens
    naive = agent.network.evaluate_episodes(batch.first_obs, batch.actions.T, batch.valid.T)
    assert not torch.allclose(naive.log_probs.T[valid], samples.new_log_probs, atol=1e-3)
    metrics = agent.learn(rollout)
    assert np.isfinite(metrics["loss/policy"])


def test_the_evaluation_reports_the_episode_metrics_of_a_tool_env():
    from agents.evaluate import format_table, play_episodes

    class Finisher:
        """Says 'Action: finish[yes]' in every row."""

        device = torch.device("cpu")

        def __init__(self) -> None:
            self.calls = 0

        def act(self, obs, mask=None, deterministic=True):
            word = ("Action:", "finish[yes]")[self.calls % 2]
            self.calls += 1
            return torch.tensor(ids(word) * obs["input_ids"].shape[0])

    result = play_episodes(Finisher(), make_env(num_envs=2), episodes=4, seed=0)
    assert result["success"] == 1.0 and result["turns"] == 0.0 and result["episodes"] == 4
    table = format_table({f"eval/heldout/{k}": v for k, v in result.items()})
    assert "success" in table.splitlines()[0] and "turns" in table.splitlines()[0]
