"""Acting on text: batches of whole episodes for PPO, and LM networks that act through their KV cache.

:class:`EpisodeBatchCollector` plays a batch of B prompts to the end together (the text vector
env in ``autoreset_mode="disabled"``) and returns a time-major :class:`TextRollout` with a
``valid`` mask: a row that has ended stays in the batch as padding, masked, never recomputed.
The prompts plus the generated tokens form full sequences, so a PPO update can score every
token of a sequence in one forward pass.

:class:`CachedLMActorCritic` and :class:`CachedLMQNetwork` are the networks of ``agents.lm``
whose forward pass *without gradients* runs through the KV cache: a generic agent acting with
``network(obs)`` pays one token per row and step instead of a pass over the whole window. The
result equals the full pass (``agents.lm_cache``); the cache is dropped whenever the trainable
weights have changed since it was filled. With gradients, forward is the full pass.

:class:`PackedWindows` packs the text env's dict observation into one (B, 2, W) tensor for
agents whose replay buffer stores plain tensors (DQN); the networks above unpack it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor, nn

from agents.base import Agent, Observation, Rollout
from agents.lm import LMActorCritic, LMQNetwork

STEP_FIELDS = ("actions", "log_probs", "values", "rewards", "terminated", "truncated", "valid")


@dataclass
class TextRollout(Rollout):
    """A batch of B episodes of at most T generated tokens, time-major, with a valid mask.

    Shapes: the :class:`~agents.base.Rollout` fields (T, B, ...), obs windows (T, B, W);
    valid (T, B) bool; prompt_input_ids, prompt_attention_mask (B, W) int64.

    ``valid[t, b]``: row b generated a token at step t. After a row's last token its steps are
    padding: action = the pad token, log-prob, value and reward 0, flags False. The prompt
    windows are the observations the episodes started from.
    """

    valid: Tensor
    prompt_input_ids: Tensor
    prompt_attention_mask: Tensor

    def sequences(self) -> tuple[Tensor, Tensor, int]:
        """Prompt windows followed by the generated tokens, and the column where responses start.

        Shapes: returns input_ids, attention_mask (B, W + T) int64 and ``W``.
        """
        input_ids = torch.cat([self.prompt_input_ids, self.actions.T], dim=1)
        attention_mask = torch.cat([self.prompt_attention_mask, self.valid.T.long()], dim=1)
        return input_ids, attention_mask, int(self.prompt_input_ids.shape[1])


@dataclass
class TextEpisodeStats:
    """Scores and lengths of a batch of episodes, and sample texts to log (tag -> markdown)."""

    scores: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        if not self.scores:
            return {}
        count = len(self.scores)
        return {
            "charts/score": sum(self.scores) / count,
            "charts/response_length": sum(self.lengths) / count,
            "charts/episodes": float(count),
        }


def samples_markdown(prompts: list[str], completions: list[str], scores: list[float]) -> str:
    """A markdown table of prompts, completions and scores (for ``logger.text``)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ").strip() or " "

    rows = [
        f"| {cell(p)} | {cell(c)} | {s:.3f} |" for p, c, s in zip(prompts, completions, scores, strict=True)
    ]
    return "\n".join(["| prompt | completion | score |", "|---|---|---|", *rows])


def shift_in(window: dict[str, Tensor], tokens: Tensor, attended: Tensor) -> dict[str, Tensor]:
    """The windows shifted left by one with ``tokens`` appended, attended where ``attended``.

    Shapes: window input_ids, attention_mask (B, W); tokens, attended (B,) -> (B, W) each.
    """
    return {
        "input_ids": torch.cat([window["input_ids"][:, 1:], tokens[:, None]], dim=1),
        "attention_mask": torch.cat([window["attention_mask"][:, 1:], attended.long()[:, None]], dim=1),
    }


def _stack_windows(windows: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {key: torch.stack([window[key] for window in windows]) for key in windows[0]}


class EpisodeBatchCollector:
    """Plays batches of whole episodes on a text vector env in ``autoreset_mode="disabled"``.

    Each :meth:`collect` resets every row with a new prompt and steps until all rows have
    ended; the agent acts through ``agent.explore(obs)``. A row that has ended is fed its
    window shifted by an unattended pad token, which a network acting through its KV cache
    serves without re-encoding the row; its outputs are masked out.

    Args:
        env: a :class:`rlenv.text.TextGenerationVectorEnv` with ``autoreset_mode="disabled"``
            whose window holds the longest prompt plus ``max_new_tokens``.
        agent: acts with ``explore(obs, action_mask=None)``.
        seed: seeds the prompt draw of the first batch.
        samples_every: batches between sample tables in ``TextEpisodeStats.texts`` (0: never).
        num_samples: rows shown per table.
    """

    def __init__(
        self, env: Any, agent: Agent, seed: int | None = None, samples_every: int = 10, num_samples: int = 4
    ) -> None:
        if env.metadata.get("autoreset_mode") != AutoresetMode.DISABLED:
            raise ValueError(
                f"EpisodeBatchCollector needs the text env with autoreset_mode='disabled' (batch episodes), "
                f"got {env.metadata.get('autoreset_mode')}"
            )
        config = env.config
        longest = max(len(tokens) for tokens in config.prompt_tokens)
        if longest + config.max_new_tokens > config.window:
            raise ValueError(
                f"window {config.window} is too small for the longest prompt ({longest} tokens) plus "
                f"max_new_tokens={config.max_new_tokens}: whole sequences must fit the window "
                f"(use window >= {longest + config.max_new_tokens})"
            )
        self.env = env
        self.agent = agent
        self.device = agent.device
        self.seed = seed
        self.samples_every, self.num_samples = int(samples_every), int(num_samples)
        self.max_new_tokens = int(config.max_new_tokens)
        self.pad_token_id = int(config.pad_token_id)
        self.batches = 0
        self.env_steps = 0

    @torch.no_grad()
    def collect(self, num_steps: int) -> tuple[TextRollout, TextEpisodeStats]:
        """One batch of B whole episodes (``num_steps`` must allow ``max_new_tokens`` steps)."""
        if num_steps < self.max_new_tokens:
            raise ValueError(
                f"a batch of episodes takes up to max_new_tokens={self.max_new_tokens} steps, but "
                f"num_steps={num_steps}; set the agent's rollout_steps >= max_new_tokens"
            )
        obs, _ = self.env.reset(seed=self.seed if self.batches == 0 else None)
        window = {key: value.to(self.device).clone() for key, value in obs.items()}
        windows = [window]
        steps: dict[str, list[Tensor]] = {name: [] for name in STEP_FIELDS}
        for _ in range(num_steps):
            policy = self.agent.explore(window, None)
            _, rewards, terminated, truncated, info = self.env.step(policy.actions)
            active = info["active"].to(self.device)
            tokens = torch.where(active, policy.actions.long(), self.pad_token_id)
            for name, value in (
                ("actions", tokens),
                ("log_probs", _masked(policy.log_probs, active)),
                ("values", _masked(policy.values, active)),
                ("rewards", rewards.to(self.device).float()),
                ("terminated", terminated.to(self.device)),
                ("truncated", truncated.to(self.device)),
                ("valid", active.clone()),
            ):
                steps[name].append(value)
            window = shift_in(window, tokens, active)
            windows.append(window)
            if info["all_done"]:
                break
        rollout = self._rollout(windows, {name: torch.stack(values) for name, values in steps.items()})
        self.batches += 1
        self.env_steps += int(rollout.valid.sum())
        return rollout, self._stats()

    def _rollout(self, windows: list[dict[str, Tensor]], steps: dict[str, Tensor]) -> TextRollout:
        stacked = _stack_windows(windows)
        num_steps, num_envs = steps["actions"].shape
        all_legal = torch.ones(1, 1, 1, dtype=torch.bool, device=self.device)
        all_legal = all_legal.expand(num_steps, num_envs, self.env.single_action_space.n)
        return TextRollout(
            obs={key: value[:-1] for key, value in stacked.items()},
            next_obs={key: value[1:] for key, value in stacked.items()},
            action_masks=all_legal,
            next_action_masks=all_legal,
            prompt_input_ids=windows[0]["input_ids"],
            prompt_attention_mask=windows[0]["attention_mask"],
            **steps,
        )

    def _stats(self) -> TextEpisodeStats:
        scores = self.env.final_scores.tolist()
        lengths = self.env.generated_tokens()[1].tolist()
        stats = TextEpisodeStats(scores=scores, lengths=lengths)
        if self.samples_every > 0 and (self.batches - 1) % self.samples_every == 0:
            shown = slice(0, self.num_samples)
            completions = self.env.completions()
            stats.texts["samples"] = samples_markdown(
                self.env.prompt_texts[shown], completions[shown], scores[shown]
            )
        return stats


def _masked(values: Tensor | None, active: Tensor) -> Tensor:
    if values is None:
        return torch.zeros(active.shape, device=active.device)
    return torch.where(active, values.float(), 0.0)


def pack_windows(obs: Mapping[str, Tensor]) -> Tensor:
    """Token ids and attention mask stacked into one tensor. Shapes: (B, W) each -> (B, 2, W)."""
    return torch.stack([obs["input_ids"], obs["attention_mask"]], dim=-2)


def unpack_windows(obs: Observation) -> Observation:
    """Undo :func:`pack_windows`; other observations pass through. Shapes: (B, 2, W) -> (B, W) each."""
    if isinstance(obs, Tensor) and obs.dim() == 3 and obs.shape[1] == 2:
        return {"input_ids": obs[:, 0], "attention_mask": obs[:, 1]}
    return obs


class PackedWindows(gym.vector.VectorWrapper):
    """The text vector env with each observation packed into one int64 tensor (B, 2, W).

    Row 0 holds the token ids, row 1 the attention mask (``info["final_obs"]`` likewise), for
    agents whose replay stores plain tensor observations (:class:`agents.qlearning.DQNAgent`).
    The networks of this module unpack it.
    """

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        ids, mask = env.single_observation_space["input_ids"], env.single_observation_space["attention_mask"]
        high = np.stack([ids.high, mask.high])
        self.single_observation_space = gym.spaces.Box(0, high, shape=high.shape, dtype=np.int64)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

    def reset(self, **kwargs: Any) -> tuple[Tensor, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return pack_windows(obs), info

    def step(self, actions: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Any]]:
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        if "final_obs" in info:
            info = {**info, "final_obs": pack_windows(info["final_obs"])}
        return pack_windows(obs), rewards, terminated, truncated, info


def packed_text_vector_env(**env_arguments: Any) -> PackedWindows:
    """A :class:`rlenv.text.TextGenerationVectorEnv` of ``env_arguments`` in :class:`PackedWindows`."""
    from rlenv.text import TextGenerationVectorEnv

    return PackedWindows(TextGenerationVectorEnv(**env_arguments))


def weights_version(module: nn.Module) -> int:
    """A number that changes whenever a trainable parameter is modified in place."""
    return sum(p._version for p in module.parameters() if p.requires_grad)


def _cached(network: CachedLMActorCritic | CachedLMQNetwork, obs: Observation) -> Any:
    version = weights_version(network)
    if network.cache_version != version:
        network.reset_cache()
        network.cache_version = version
    return network.forward_cached(obs)


class CachedLMActorCritic(LMActorCritic):
    """:class:`agents.lm.LMActorCritic` acting through its KV cache when gradients are off."""

    cache_version: int | None = None

    def forward(self, obs: Observation) -> tuple[Tensor, Tensor]:
        obs = unpack_windows(obs)
        if torch.is_grad_enabled():
            return super().forward(obs)
        return _cached(self, obs)


class CachedLMQNetwork(LMQNetwork):
    """:class:`agents.lm.LMQNetwork` acting through its KV cache when gradients are off."""

    cache_version: int | None = None

    def forward(self, obs: Observation) -> Tensor:
        obs = unpack_windows(obs)
        if torch.is_grad_enabled():
            return super().forward(obs)
        return _cached(self, obs)
