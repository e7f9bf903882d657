"""Tool use as a text env: the policy writes ReAct turns, the env writes observations back.

The state is still the context window and an action is still one token, but after each turn
the **env writes into the window**: when the text of the current turn contains a complete
``Action: name[argument]``, the env runs the action (a SQL query, a shipping label, a search,
a question to the customer...) and appends ``Observation: <result>`` plus the start of the
next turn (``turn_prefix``, default ``"Thought:"``). Those tokens are observations, not
actions: PPO's whole-episode batches find them by comparing consecutive windows and leave them
out of the policy loss and the KL penalty (:mod:`agents.ppo.batches`).

A task says what an episode is (:class:`ToolTask`): it draws an episode from a seeded
generator (:meth:`ToolTask.episode`), whose ``prompt`` opens the window, whose
:meth:`ToolEpisode.call` answers each action, and whose :meth:`ToolEpisode.outcome` judges
the end (``finish[answer]``, or ``None`` when the episode ended without one). Tasks:
:class:`rlenv.tools.shopbot.ShopTask` (``rlenv/ShopBot-v0``) and
:class:`rlenv.tools.review_qa.ReviewQATask` (``rlenv/ReviewQA-v0``).

Rewards: ``-turn_cost`` at each turn the env answers, and the outcome's score at the end, so
an episode's return is ``score - turn_cost * turns``. An episode ends (terminated) on
``finish[...]`` or the EOS token, and (truncated) after ``max_turns`` turns or when the next
turn would no longer fit the window. A turn of ``max_turn_tokens`` tokens without an action
gets an observation that says how to write one.

Info (every step, (B,) tensors unless noted): ``active``, ``turns`` (turns answered so far),
``score`` (the outcome at rows that ended, else 0), ``prompt`` and ``completion`` (lists of B
strings: the episode's prompt and, at rows that ended, everything after it),
``reward_detail`` (list: the outcome's explanation at rows that ended), ``episode_metrics``
(dict of (B,) float tensors at rows that ended: ``success`` and ``turns``, averaged by the
evaluation), and ``final_obs`` (same-step autoreset) or ``all_done`` (disabled), as in
:class:`rlenv.text.vector_env.TextGenerationVectorEnv`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from rlenv.text.env import check_action, decode_completion
from rlenv.text.tokenizers import load_tokenizer
from rlenv.text.tokens import left_pad
from rlenv.text.vector_env import AUTORESET_MODES, check_actions, rows_to_reset

ACTION = re.compile(r"Action:\s*([A-Za-z_][A-Za-z_0-9]*)\s*\[(.*?)\]", re.DOTALL)
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class Outcome:
    """How an episode ended: ``score`` (the final reward), ``success``, and why (``detail``)."""

    score: float
    success: bool
    detail: str


class ToolEpisode(Protocol):
    """One episode of a task: the opening text, the actions' results, the judgement."""

    prompt: str

    def call(self, action: str, argument: str) -> str:
        """The observation text of ``action[argument]`` (an error message, never an exception)."""
        ...

    def outcome(self, answer: str | None) -> Outcome:
        """The judgement at the end: ``answer`` of ``finish[answer]``, ``None`` without one."""
        ...


class ToolTask(Protocol):
    """Draws episodes; ``actions`` are the action names its episodes answer (``finish`` aside)."""

    actions: tuple[str, ...]

    def episode(self, rng: np.random.Generator, split: str) -> ToolEpisode: ...


def parse_action(turn: str) -> tuple[str, str] | None:
    """The first complete ``Action: name[argument]`` of a turn's text, else ``None``."""
    match = ACTION.search(turn)
    return None if match is None else (match.group(1), match.group(2).strip())


class ToolUseVectorEnv(VectorEnv):
    """``num_envs`` tool-use episodes (see the module docstring) stepped together.

    Args:
        task: a :class:`ToolTask`.
        num_envs: rows.
        tokenizer: a Hugging Face tokenizer or a name for :func:`rlenv.text.tokenizers.load_tokenizer`.
        window: context tokens; the whole episode (prompt, turns and observations) must fit.
        max_turns: turns the env answers before the episode is truncated.
        max_turn_tokens: tokens of one turn before the env asks for an action.
        max_observation_tokens: an observation longer than this is cut (and says so).
        turn_cost: reward subtracted at each answered turn.
        turn_prefix: text the env writes after each observation, starting the next turn.
        split: ``"train"`` or ``"heldout"`` episodes of the task.
        eos_token_id: ends an episode (default the tokenizer's).
        autoreset_mode: ``"same_step"`` or ``"disabled"`` (batches of whole episodes), as in
            the text env.
        device: where the windows live.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        task: ToolTask,
        num_envs: int = 8,
        tokenizer: Any = "smollm2",
        window: int = 1024,
        max_turns: int = 6,
        max_turn_tokens: int = 64,
        max_observation_tokens: int = 96,
        turn_cost: float = 0.02,
        turn_prefix: str = "Thought:",
        split: str = "train",
        eos_token_id: int | None = None,
        vocab_size: int | None = None,
        autoreset_mode: str | AutoresetMode = "same_step",
        device: str | torch.device = "cpu",
        render_mode: str | None = None,
        group_size: int = 1,
    ) -> None:
        for name, value in (
            ("num_envs", num_envs),
            ("window", window),
            ("max_turns", max_turns),
            ("max_turn_tokens", max_turn_tokens),
            ("max_observation_tokens", max_observation_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if group_size != 1:
            raise ValueError(f"group_size={group_size}: tool-use envs start every row on its own episode")
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {list(SPLITS)}")
        if autoreset_mode not in AUTORESET_MODES:
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; valid: ['same_step', 'disabled']")
        if render_mode is not None:
            raise ValueError(f"unknown render_mode {render_mode!r}; the vector tool env does not render")
        if not isinstance(turn_cost, (int, float)) or not 0 <= turn_cost < 1:
            raise ValueError(f"turn_cost must be a number in [0, 1), got {turn_cost!r}")
        missing = [name for name in ("actions", "episode") if not hasattr(task, name)]
        if missing:
            raise TypeError(f"task {task!r} is not a ToolTask: it lacks {missing}")
        self.task = task
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        vocab = len(self.tokenizer) if vocab_size is None else int(vocab_size)
        if vocab < len(self.tokenizer):
            raise ValueError(f"vocab_size {vocab} is smaller than the tokenizer's vocabulary")
        self.vocab_size = vocab
        self.eos_token_id = self.tokenizer.eos_token_id if eos_token_id is None else int(eos_token_id)
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else (self.eos_token_id or 0))
        self.window, self.max_turns, self.max_turn_tokens = window, max_turns, max_turn_tokens
        self.max_observation_tokens, self.turn_cost = max_observation_tokens, float(turn_cost)
        self.turn_prefix, self.split = str(turn_prefix), split
        self.metadata = {**type(self).metadata, "autoreset_mode": AUTORESET_MODES[autoreset_mode]}
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.render_mode = None
        ids = spaces.Box(0, vocab - 1, shape=(window,), dtype=np.int64)
        mask = spaces.Box(0, 1, shape=(window,), dtype=np.int64)
        self.single_observation_space = spaces.Dict({"input_ids": ids, "attention_mask": mask})
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.single_action_space = spaces.Discrete(vocab)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, vocab))
        self._contexts: list[list[int]] = [[] for _ in range(num_envs)]
        self._prompt_lengths = [0] * num_envs
        self._turns: list[list[int]] = [[] for _ in range(num_envs)]
        self._turn_counts = [0] * num_envs
        self._episodes: list[ToolEpisode | None] = [None] * num_envs
        self._active = [False] * num_envs
        self._needs_reset = True

    @property
    def same_step(self) -> bool:
        return self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP

    @property
    def prompt_texts(self) -> list[str]:
        return [episode.prompt if episode is not None else "" for episode in self._episodes]

    def transcript(self, row: int) -> str:
        """Everything after the row's prompt so far: its turns and the observations."""
        return decode_completion(self.tokenizer, self._contexts[row][self._prompt_lengths[row] :])

    def context_text(self, row: int) -> str:
        """The row's whole context so far: prompt, turns and observations."""
        return decode_completion(self.tokenizer, self._contexts[row])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"reset_mask"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: ['reset_mask']")
        rows = rows_to_reset(options.get("reset_mask"), self.num_envs, first=self._needs_reset)
        for row in rows:
            self._start(row)
        self._needs_reset = False
        return self._observation(), {"prompt": self.prompt_texts}

    def _start(self, row: int) -> None:
        episode = self.task.episode(self.np_random, self.split)
        tokens = list(self.tokenizer(episode.prompt, add_special_tokens=True)["input_ids"])
        if len(tokens) + self.max_turn_tokens > self.window:
            raise ValueError(
                f"an episode's prompt is {len(tokens)} tokens; with max_turn_tokens={self.max_turn_tokens} "
                f"it does not fit the window of {self.window} tokens: raise window"
            )
        self._episodes[row], self._contexts[row] = episode, tokens
        self._prompt_lengths[row], self._turns[row], self._turn_counts[row] = len(tokens), [], 0
        self._active[row] = True

    def step(self, actions: Any) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset(); call reset() first")
        if not any(self._active):
            raise RuntimeError(f"step() called after all {self.num_envs} rows ended; call reset() first")
        active = torch.tensor(self._active, dtype=torch.bool)
        tokens = check_actions(actions, self.num_envs, self.vocab_size, active).tolist()
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        scores = np.zeros(self.num_envs, dtype=np.float32)
        success = np.zeros(self.num_envs, dtype=np.float32)
        turns = np.zeros(self.num_envs, dtype=np.float32)
        completions, details = [""] * self.num_envs, [""] * self.num_envs
        prompts = self.prompt_texts
        for row in np.flatnonzero(active.numpy()).tolist():
            end = self._advance(row, tokens[row], rewards)
            if end is None:
                continue
            outcome, cut = end
            rewards[row] += outcome.score
            terminated[row], truncated[row] = not cut, cut
            scores[row], success[row] = outcome.score, float(outcome.success)
            turns[row] = self._turn_counts[row]
            completions[row], details[row] = self.transcript(row), outcome.detail
        info: dict[str, Any] = {
            "active": active.to(self.device),
            "turns": torch.tensor(self._turn_counts, device=self.device),
            "score": torch.as_tensor(scores, device=self.device),
            "prompt": prompts,
            "completion": completions,
            "reward_detail": details,
            "episode_metrics": {
                "success": torch.as_tensor(success, device=self.device),
                "turns": torch.as_tensor(turns, device=self.device),
            },
        }
        ended = np.flatnonzero(terminated | truncated).tolist()
        if self.same_step:
            info["final_obs"] = self._observation()
            for row in ended:
                self._start(row)
        else:
            for row in ended:
                self._active[row] = False
            info["all_done"] = not any(self._active)
        return (
            self._observation(),
            torch.as_tensor(rewards, device=self.device),
            torch.as_tensor(terminated, device=self.device),
            torch.as_tensor(truncated, device=self.device),
            info,
        )

    def _advance(self, row: int, token: int, rewards: np.ndarray) -> tuple[Outcome, bool] | None:
        """Append the row's token; answer a finished turn. Returns (outcome, truncated) at the end."""
        episode = self._episodes[row]
        assert episode is not None
        self._contexts[row].append(token)
        if token == self.eos_token_id:
            return episode.outcome(None), False
        turn = self._turns[row]
        turn.append(token)
        action = parse_action(decode_completion(self.tokenizer, turn))
        if action is None and len(turn) < self.max_turn_tokens:
            return None
        if action is not None and action[0] == "finish":
            return episode.outcome(action[1]), False
        if action is None:
            observation = "no action in this turn; end a turn with one line `Action: name[argument]`"
        elif action[0] in self.task.actions:
            observation = episode.call(*action)
        else:
            valid = ", ".join([*self.task.actions, "finish"])
            observation = f"unknown action {action[0]!r}; valid actions: {valid}"
        self._turn_counts[row] += 1
        rewards[row] -= self.turn_cost
        written = self._observation_tokens(observation)
        room = self.window - len(self._contexts[row]) - len(written)
        if self._turn_counts[row] >= self.max_turns or room < self.max_turn_tokens:
            return episode.outcome(None), True
        self._contexts[row].extend(written)
        self._turns[row] = []
        return None

    def _observation_tokens(self, observation: str) -> list[int]:
        ids = list(self.tokenizer(f"\nObservation: {observation}", add_special_tokens=False)["input_ids"])
        if len(ids) > self.max_observation_tokens:
            note = list(self.tokenizer(" ... (cut)", add_special_tokens=False)["input_ids"])
            ids = ids[: max(0, self.max_observation_tokens - len(note))] + note
        tail = list(self.tokenizer(f"\n{self.turn_prefix}", add_special_tokens=False)["input_ids"])
        return ids + tail

    def _observation(self) -> dict[str, Tensor]:
        input_ids, attention_mask = left_pad(self._contexts, self.window, self.pad_token_id, self.device)
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def close(self, **kwargs: Any) -> None:
        close = getattr(self.task, "close", None)
        if close is not None:
            close()
        super().close(**kwargs)


class ToolUseEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """The single-episode tool-use env: :class:`ToolUseVectorEnv` with one row, NumPy arrays.

    Arguments as for :class:`ToolUseVectorEnv` (``num_envs``, ``device`` and the autoreset
    mode aside); ``render_mode="ansi"`` renders the transcript so far.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, task: ToolTask, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']}")
        for key in ("num_envs", "autoreset_mode", "device"):
            if key in kwargs:
                raise ValueError(f"{key} is not an argument of the single tool-use env")
        self.env = ToolUseVectorEnv(task, num_envs=1, autoreset_mode="disabled", **kwargs)
        self.render_mode = render_mode
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self._ended = True
        self._started = False

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; the tool-use env takes none")
        self.env.np_random = self.np_random  # one generator: the env's seeding draws the episodes
        obs, info = self.env.reset()
        self._ended, self._started = False, True
        return self._numpy(obs), {"prompt": info["prompt"][0]}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")
        if self._ended:
            raise RuntimeError("step() called after the episode ended; call reset() first")
        token = check_action(action, self.env.vocab_size)
        obs, reward, terminated, truncated, info = self.env.step([token])
        done = bool(terminated[0] or truncated[0])
        self._ended = done
        out: dict[str, Any] = {"turns": int(info["turns"][0])}
        if done:
            out |= {
                "prompt": info["prompt"][0],
                "completion": info["completion"][0],
                "score": float(info["score"][0]),
                "reward_detail": info["reward_detail"][0],
                "success": bool(info["episode_metrics"]["success"][0]),
            }
        return self._numpy(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), out

    def render(self) -> str | None:
        if self.render_mode != "ansi" or not self._started:
            return None
        return self.env.context_text(0)

    def close(self) -> None:
        self.env.close()

    @staticmethod
    def _numpy(obs: dict[str, Tensor]) -> dict[str, np.ndarray]:
        return {key: value[0].cpu().numpy().copy() for key, value in obs.items()}


def make_tool_env(task_class: type, task: Mapping[str, Any] | None = None, **kwargs: Any) -> ToolUseEnv:
    """The single tool-use env on ``task_class(**task)`` (the registered ids' entry points)."""
    return ToolUseEnv(task_class(**dict(task or {})), **kwargs)


def make_tool_vector_env(
    task_class: type, num_envs: int = 8, task: Mapping[str, Any] | None = None, **kwargs: Any
) -> ToolUseVectorEnv:
    """The batched tool-use env on ``task_class(**task)`` (``gymnasium.make_vec`` and the env configs)."""
    kwargs.pop("vectorization_mode", None)
    return ToolUseVectorEnv(task_class(**dict(task or {})), num_envs=num_envs, **kwargs)
