"""Text generation as a Gymnasium environment, and the rules it shares with the vector env."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from rlenv.text.prompts import PromptSet, resolve_prompts
from rlenv.text.rewards import RewardFn, make_reward_fn, validate_scores
from rlenv.text.tokenizers import load_tokenizer
from rlenv.text.tokens import left_pad, push_tokens

PROMPT_OVERFLOW = ("error", "truncate")
REWARD_SHAPING = ("none", "potential")


@dataclass
class TextEnvConfig:
    """The resolved arguments shared by the single and the vector text env."""

    tokenizer: Any
    prompts: list[str]
    prompt_tokens: list[list[int]]
    reward_fn: RewardFn
    window: int
    max_new_tokens: int
    vocab_size: int
    eos_token_id: int | None
    pad_token_id: int
    prompt_overflow: str
    reward_shaping: str = "none"

    @property
    def shaped(self) -> bool:
        """Whether every step is rewarded with the change of the completion's score."""
        return self.reward_shaping == "potential"

    @property
    def observation_space(self) -> spaces.Dict:
        ids = spaces.Box(0, self.vocab_size - 1, shape=(self.window,), dtype=np.int64)
        mask = spaces.Box(0, 1, shape=(self.window,), dtype=np.int64)
        return spaces.Dict({"input_ids": ids, "attention_mask": mask})


def make_config(
    tokenizer: Any,
    prompts: str | PromptSet | list[str],
    reward_fn: str | RewardFn,
    window: int,
    max_new_tokens: int,
    eos_token_id: int | None,
    split: str,
    prompt_overflow: str,
    vocab_size: int | None,
    reward_shaping: str = "none",
) -> TextEnvConfig:
    """Resolve and check the env arguments (see :class:`TextGenerationEnv`)."""
    if reward_shaping not in REWARD_SHAPING:
        raise ValueError(f"unknown reward_shaping {reward_shaping!r}; valid: {list(REWARD_SHAPING)}")
    if isinstance(tokenizer, str):
        tokenizer = load_tokenizer(tokenizer)
    for name, value in (("window", window), ("max_new_tokens", max_new_tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if prompt_overflow not in PROMPT_OVERFLOW:
        raise ValueError(f"unknown prompt_overflow {prompt_overflow!r}; valid: {list(PROMPT_OVERFLOW)}")
    vocab = len(tokenizer) if vocab_size is None else vocab_size
    if vocab < len(tokenizer):
        raise ValueError(f"vocab_size {vocab} is smaller than the tokenizer's vocabulary ({len(tokenizer)})")
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is not None and not 0 <= eos < vocab:
        raise ValueError(f"eos_token_id {eos} is not a token id of the vocabulary [0, {vocab})")
    pad = next((token for token in (tokenizer.pad_token_id, eos) if token is not None), 0)
    prompt_list = resolve_prompts(prompts, split)
    return TextEnvConfig(
        tokenizer=tokenizer,
        prompts=prompt_list,
        prompt_tokens=encode_prompts(tokenizer, prompt_list, window, prompt_overflow),
        reward_fn=make_reward_fn(reward_fn, tokenizer),
        window=window,
        max_new_tokens=max_new_tokens,
        vocab_size=vocab,
        eos_token_id=eos,
        pad_token_id=pad,
        prompt_overflow=prompt_overflow,
        reward_shaping=reward_shaping,
    )


def encode_prompts(tokenizer: Any, prompts: list[str], window: int, overflow: str) -> list[list[int]]:
    """Token ids of each prompt, checked to be non-empty and to fit the window.

    Raises:
        ValueError: a prompt is blank, encodes to no token, or (``overflow="error"``) is
            longer than the window; the message names the prompt.
    """
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt {prompt!r} is a {type(prompt).__name__}; prompts are strings")
        if not prompt.strip():
            raise ValueError(f"empty prompt {prompt!r}: prompts need visible text")
    encoded = [list(ids) for ids in tokenizer(list(prompts), add_special_tokens=True)["input_ids"]]
    for prompt, ids in zip(prompts, encoded, strict=True):
        if not ids:
            raise ValueError(f"prompt {prompt!r} encodes to no token")
        if len(ids) > window and overflow == "error":
            raise ValueError(
                f"prompt {_shorten(prompt)!r} is {len(ids)} tokens long but the context window holds "
                f"{window}; use a larger window or prompt_overflow='truncate'"
            )
    return [ids[-window:] for ids in encoded]


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def episode_ends(
    tokens: Tensor, lengths: Tensor, active: Tensor, eos_token_id: int | None, max_new_tokens: int
) -> tuple[Tensor, Tensor]:
    """Which active rows end with this token: terminated (EOS) or truncated (length limit).

    Shapes: tokens, lengths (B,) int64 (lengths count this token); active (B,) bool;
    returns terminated, truncated (B,) bool, never both true.
    """
    if eos_token_id is None:
        terminated = torch.zeros_like(active)
    else:
        terminated = active & (tokens == eos_token_id)
    truncated = active & ~terminated & (lengths >= max_new_tokens)
    return terminated, truncated


def decode_completion(tokenizer: Any, tokens: list[int]) -> str:
    """The completion text of generated token ids (special tokens such as EOS dropped)."""
    return tokenizer.decode(tokens, skip_special_tokens=True)


class RewardFunctionError(RuntimeError):
    """The reward function raised; the env step that called it did not happen."""


def score_completions(reward_fn: RewardFn, prompts: list[str], completions: list[str]) -> np.ndarray:
    """Call the reward function once on a batch and check its scores. Shapes: returns (N,) float32.

    Raises:
        RewardFunctionError: the reward function raised (the original error is its cause).
        ValueError: it returned scores of the wrong shape or non-finite values.
    """
    try:
        scores = reward_fn(list(prompts), list(completions))
    except Exception as error:
        name = getattr(reward_fn, "__name__", type(reward_fn).__name__)
        raise RewardFunctionError(
            f"reward function {name!r} failed on {len(completions)} completion(s) "
            f"({type(error).__name__}: {error}); the step was not taken, the env state is unchanged"
        ) from error
    return validate_scores(scores, len(completions))


def reward_details(reward_fn: RewardFn, count: int) -> list[str] | None:
    """What a reward function says about its last ``count`` scores (its ``last_details``, one
    text per completion, such as why a program failed), else ``None``."""
    details = getattr(reward_fn, "last_details", None)
    if isinstance(details, list) and len(details) == count:
        return [str(detail) for detail in details]
    return None


def check_action(action: Any, vocab_size: int) -> int:
    """The token id of a single-env action, checked to be an integer in the vocabulary."""
    if isinstance(action, (np.ndarray, torch.Tensor)) and action.ndim == 0:
        action = action.item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise TypeError(
            f"action must be an integer token id in [0, {vocab_size}), "
            f"got {action!r} ({type(action).__name__})"
        )
    if not 0 <= action < vocab_size:
        raise ValueError(f"action {action} is not a token id of the vocabulary [0, {vocab_size})")
    return int(action)


class TextGenerationEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """Generate a completion of a prompt one token at a time; a reward function scores it.

    ## Description

    Language-model fine-tuning (RLHF) as a Markov decision process. An episode starts from a
    prompt sampled from a prompt set; each action appends one vocabulary token to the
    context; the episode ends on the end-of-sequence token or after ``max_new_tokens``
    tokens. Only then does the reward function score the completion, e.g. the sentiment of
    a movie-review continuation, a toxicity score, or a reward model trained on rankings.

    ## Action Space

    ``Discrete(vocab_size)``: the id of the next token (``vocab_size`` defaults to the
    tokenizer's vocabulary size, ``len(tokenizer)``). Every token is legal.

    ## Observation Space

    ``Dict`` of two int64 arrays of shape ``(window,)``, left-padded so that the newest token
    is last:

    - ``input_ids``: ``Box(0, vocab_size - 1)``, the token ids of the context window
      (prompt plus generated tokens), pad id where there is no token.
    - ``attention_mask``: ``Box(0, 1)``, 1 where a position holds a token.

    When the context grows beyond ``window`` tokens the oldest are dropped (left truncation).

    ## Rewards

    0 on every step except the last, which (terminated or truncated) gives the score of the
    reward function on (prompt, completion). The completion is the decoded text of the
    generated tokens, special tokens (EOS) removed.

    ``reward_shaping="potential"`` rewards every step instead with the change of the score of
    the completion so far: ``r_t = f(prompt, text_t) - f(prompt, text_{t-1})``, the empty
    completion's score taken as 0. The rewards of an episode sum to the same final score, and
    this potential-based shaping keeps the optimal policies (Ng, Harada and Russell, 1999),
    while telling a learner which token moved the score (a lexicon score such as VADER moves
    at the word that carries it). The reward function is then called at every step, on the
    partial completions of the rows that generated a token; ``info["score"]`` stays the final
    score.

    ## Starting State

    A prompt drawn uniformly from the prompt list of the split with ``self.np_random``, or
    ``options={"prompt": "<text>"}``. ``info["prompt"]`` holds it.

    ## Episode End

    - Termination: the action is ``eos_token_id`` (the EOS token counts as generated).
    - Truncation: ``max_new_tokens`` tokens have been generated without EOS.

    The last step's info holds ``prompt``, ``completion``, ``score`` and ``length`` (tokens
    generated). Stepping after the end raises an error until ``reset`` is called.

    ## Arguments

    - ``tokenizer``: a Hugging Face tokenizer or a name for :func:`rlenv.text.tokenizers.load_tokenizer`
      (default ``"smollm2"``, the SmolLM2-135M-Instruct tokenizer).
    - ``prompts``: a list of strings, a :class:`rlenv.text.prompts.PromptSet`, a task name
      (``"sentiment"`` default, ``"detox"``) or a prompt file (``.jsonl`` or text).
    - ``reward_fn``: ``f(prompts, completions) -> scores`` or a name for
      :func:`rlenv.text.rewards.make_reward_fn` (default ``"sentiment"``). Scores must be
      finite, one per completion.
    - ``window``: context length in tokens (default 64).
    - ``max_new_tokens``: completion length limit (default 32).
    - ``eos_token_id``: ends an episode; default the tokenizer's EOS (``None`` if it has none:
      episodes then end by truncation only).
    - ``split``: ``"train"`` (default) or ``"heldout"`` part of a prompt set.
    - ``prompt_overflow``: ``"error"`` (default) rejects a prompt longer than ``window``
      tokens; ``"truncate"`` keeps its last ``window`` tokens.
    - ``vocab_size``: size of the action space if larger than the tokenizer's (a model head).
    - ``reward_shaping``: ``"none"`` (default: the score at the end) or ``"potential"`` (above).
    - ``render_mode``: ``None`` or ``"ansi"``.

    ## Version History

    - v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        tokenizer: Any = "smollm2",
        prompts: str | PromptSet | list[str] = "sentiment",
        reward_fn: str | RewardFn = "sentiment",
        window: int = 64,
        max_new_tokens: int = 32,
        eos_token_id: int | None = None,
        split: str = "train",
        prompt_overflow: str = "error",
        vocab_size: int | None = None,
        render_mode: str | None = None,
        reward_shaping: str = "none",
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; valid: {self.metadata['render_modes']}")
        self.config = make_config(
            tokenizer,
            prompts,
            reward_fn,
            window,
            max_new_tokens,
            eos_token_id,
            split,
            prompt_overflow,
            vocab_size,
            reward_shaping,
        )
        self.render_mode = render_mode
        self.observation_space = self.config.observation_space
        self.action_space = spaces.Discrete(self.config.vocab_size)
        self._prompt = ""
        self._generated: list[int] = []
        self._input_ids = torch.zeros((1, window), dtype=torch.int64)
        self._attention_mask = torch.zeros((1, window), dtype=torch.int64)
        self._started = False
        self._ended: str | None = None
        self._potential = 0.0

    @property
    def tokenizer(self) -> Any:
        return self.config.tokenizer

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        config, options = self.config, dict(options or {})
        unknown = sorted(set(options) - {"prompt"})
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: ['prompt']")
        if "prompt" in options:
            self._prompt = options["prompt"]
            (tokens,) = encode_prompts(
                config.tokenizer, [self._prompt], config.window, config.prompt_overflow
            )
        else:
            index = int(self.np_random.integers(len(config.prompts)))
            self._prompt, tokens = config.prompts[index], config.prompt_tokens[index]
        self._input_ids, self._attention_mask = left_pad([tokens], config.window, config.pad_token_id, "cpu")
        self._generated = []
        self._started, self._ended = True, None
        self._potential = 0.0
        return self._observation(), {"prompt": self._prompt}

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset(); call reset() first")
        if self._ended is not None:
            raise RuntimeError(f"step() called after the episode ended ({self._ended}); call reset() first")
        config = self.config
        token = check_action(action, config.vocab_size)
        # the new state is built aside and kept only once the reward function has succeeded
        generated = [*self._generated, token]
        tokens = torch.tensor([token])
        active = torch.ones(1, dtype=torch.bool)
        input_ids, attention_mask = push_tokens(self._input_ids, self._attention_mask, tokens, active)
        terminated, truncated = episode_ends(
            tokens, torch.tensor([len(generated)]), active, config.eos_token_id, config.max_new_tokens
        )
        reward, info, ended, potential = 0.0, {}, None, self._potential
        final = bool(terminated.item() or truncated.item())
        if final or config.shaped:
            completion = decode_completion(config.tokenizer, generated)
            score = float(score_completions(config.reward_fn, [self._prompt], [completion])[0])
            reward, potential = (score - self._potential, score) if config.shaped else (score, 0.0)
        if final:
            info = {
                "prompt": self._prompt,
                "completion": completion,
                "score": score,
                "length": len(generated),
            }
            details = reward_details(config.reward_fn, 1)
            if details is not None:
                info["reward_detail"] = details[0]
            reason = "EOS" if terminated.item() else f"max_new_tokens={config.max_new_tokens}"
            ended = f"{reason} after {len(generated)} tokens"
        self._generated, self._input_ids, self._attention_mask, self._ended = (
            generated,
            input_ids,
            attention_mask,
            ended,
        )
        self._potential = potential
        return self._observation(), reward, bool(terminated.item()), bool(truncated.item()), info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        completion = decode_completion(self.config.tokenizer, self._generated)
        status = f", ended: {self._ended}" if self._generated and self._ended else ""
        progress = f"{len(self._generated)}/{self.config.max_new_tokens} tokens{status}"
        return f"{self._prompt!r} -> {completion!r} [{progress}]"

    def _observation(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self._input_ids[0].numpy().copy(),
            "attention_mask": self._attention_mask[0].numpy().copy(),
        }
