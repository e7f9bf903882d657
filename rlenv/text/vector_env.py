"""A batch of text-generation rollouts held as torch tensors on one device."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from rlenv.text.env import (
    decode_completion,
    encode_prompts,
    episode_ends,
    left_pad,
    make_config,
    push_tokens,
    reward_details,
    score_completions,
)
from rlenv.text.prompts import PromptSet
from rlenv.text.rewards import RewardFn

AUTORESET_MODES = {
    "same_step": AutoresetMode.SAME_STEP,
    "disabled": AutoresetMode.DISABLED,
    AutoresetMode.SAME_STEP: AutoresetMode.SAME_STEP,
    AutoresetMode.DISABLED: AutoresetMode.DISABLED,
}
RESET_OPTIONS = ("prompts", "reset_mask")


def check_actions(actions: Any, num_envs: int, vocab_size: int, active: Tensor) -> Tensor:
    """Token ids of a batch of actions on ``active``'s device; only active rows are range-checked.

    Shapes: actions (B,) integers (torch, NumPy or a list); active (B,) bool; returns (B,) int64.
    """
    if not isinstance(actions, Tensor):
        try:
            actions = torch.as_tensor(np.asarray(actions))
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"actions must be integer token ids, got {actions!r}") from error
    if actions.dtype == torch.bool or actions.is_floating_point() or actions.is_complex():
        raise TypeError(f"actions must be integer token ids, got dtype {actions.dtype}: {actions.tolist()}")
    if tuple(actions.shape) != (num_envs,):
        raise ValueError(f"actions must have shape ({num_envs},), got {tuple(actions.shape)}")
    actions = actions.to(device=active.device, dtype=torch.int64)
    bad = active & ((actions < 0) | (actions >= vocab_size))
    if bad.any():
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(
            f"actions {actions[bad].tolist()} at rows {rows} are not token ids "
            f"of the vocabulary [0, {vocab_size})"
        )
    return actions


def rows_to_reset(reset_mask: Any, num_envs: int, first: bool) -> list[int]:
    """The rows of ``options["reset_mask"]`` (every row when it is ``None``), checked.

    Raises:
        ValueError: the mask is not a (num_envs,) bool array, or it leaves rows out of the
            ``first`` reset.
    """
    if reset_mask is None:
        return list(range(num_envs))
    mask = torch.as_tensor(np.asarray(reset_mask) if not isinstance(reset_mask, Tensor) else reset_mask)
    if mask.dtype != torch.bool or tuple(mask.shape) != (num_envs,):
        raise ValueError(
            f"options['reset_mask'] must be a ({num_envs},) bool array, "
            f"got dtype {mask.dtype} shape {tuple(mask.shape)}"
        )
    if first and not bool(mask.all()):
        raise ValueError(f"the first reset must restart every row; got reset_mask {mask.tolist()}")
    return mask.cpu().nonzero().flatten().tolist()


class TextGenerationVectorEnv(VectorEnv):
    """``num_envs`` text-generation rollouts stepped together, state kept as torch tensors.

    The rules, spaces and arguments are those of :class:`rlenv.text.env.TextGenerationEnv`
    (see its manual); observations, rewards and flags are torch tensors on ``device``.
    ``step(actions)`` takes a (B,) integer tensor (NumPy or a list also work) and returns
    ``obs`` (dict of ``input_ids`` and ``attention_mask``, (B, window) int64), ``rewards`` (B,)
    float32, ``terminated`` and ``truncated`` (B,) bool, and ``info``. The reward function is
    called once per step in which some rows end, on those rows together (with
    ``reward_shaping="potential"``: once per step, on every row that generated a token).

    Returned tensors share memory with the env's state: copy them before modifying in place.

    ## Autoreset modes (``autoreset_mode``, also in ``metadata["autoreset_mode"]``)

    ``"same_step"`` (default, as in the Tic-Tac-Toe vector env): a row whose episode ends is
    restarted in the same step with a new prompt sampled from the prompt list; the returned
    obs row is the new episode's first observation and ``info["final_obs"]`` holds the final
    observation of the episode that ended (rows that did not end: equal to obs). Every row
    generates at every step, so a fixed-length PPO rollout over tokens wastes no compute and
    needs no mask: GAE cuts traces at ``terminated | truncated``.

    ``"disabled"`` ("batch episodes", for evaluation or rollouts of a fixed batch of
    prompts): ``reset()`` starts B prompts; a row that has ended stays ended, its further
    actions are ignored and it returns reward 0, ``terminated = truncated = False`` and an
    unchanged observation; ``info["active"]`` tells which rows used their action and
    ``info["all_done"]`` is True once every row has ended (stepping further raises).
    ``reset(options={"reset_mask": mask})`` restarts only the rows of ``mask``.

    ## Info (every step)

    - ``active`` (B,) bool: the row generated a token at this step (always True in same-step mode).
    - ``length`` (B,) int64: tokens generated so far in the row's episode (final length for a
      row that ended at this step).
    - ``score`` (B,) float32: reward-function score of rows that ended at this step, else 0.
    - ``prompt``, ``completion``: lists of B strings, the episode's prompt and, for rows that
      ended at this step, its completion ("" elsewhere).
    - ``all_done``: bool (disabled mode), ``final_obs``: dict (same-step mode).

    ## Reset options

    ``prompts``: one prompt per row being reset (else drawn with ``self.np_random``);
    ``reset_mask``: (B,) bool rows to restart (disabled mode; the first reset restarts all).

    ``group_size=N`` (disabled mode): a reset of every row draws B / N prompts and gives each
    to N consecutive rows, the groups of group-relative advantages (``agent.advantage=grpo``).

    After or during a batch, :meth:`generated_tokens`, :meth:`completions`,
    :attr:`prompt_texts`, :attr:`final_scores` and :attr:`finished` describe the rows.
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        num_envs: int = 8,
        tokenizer: Any = "smollm2",
        prompts: str | PromptSet | list[str] = "sentiment",
        reward_fn: str | RewardFn = "sentiment",
        window: int = 64,
        max_new_tokens: int = 32,
        eos_token_id: int | None = None,
        split: str = "train",
        prompt_overflow: str = "error",
        vocab_size: int | None = None,
        autoreset_mode: str | AutoresetMode = "same_step",
        device: str | torch.device = "cpu",
        render_mode: str | None = None,
        group_size: int = 1,
        reward_shaping: str = "none",
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
        if num_envs % group_size:
            raise ValueError(f"group_size={group_size} must divide num_envs={num_envs}")
        if group_size > 1 and AUTORESET_MODES.get(autoreset_mode) != AutoresetMode.DISABLED:
            raise ValueError(
                f"group_size={group_size} needs autoreset_mode='disabled' (groups of one prompt are "
                f"started together), got {autoreset_mode!r}"
            )
        self.group_size = group_size
        if autoreset_mode not in AUTORESET_MODES:
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; valid: ['same_step', 'disabled']")
        if render_mode is not None:
            raise ValueError(f"unknown render_mode {render_mode!r}; the vector text env does not render")
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
        self.metadata = {**type(self).metadata, "autoreset_mode": AUTORESET_MODES[autoreset_mode]}
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.render_mode = None
        self.single_observation_space = self.config.observation_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.single_action_space = spaces.Discrete(self.config.vocab_size)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, self.config.vocab_size))
        shape = (num_envs, self.config.window)
        self._input_ids = torch.full(shape, self.config.pad_token_id, dtype=torch.int64, device=self.device)
        self._attention_mask = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self._generated = torch.full(
            (num_envs, max_new_tokens), self.config.pad_token_id, dtype=torch.int64, device=self.device
        )
        self._lengths = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self._active = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._finished = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._scores = torch.zeros(num_envs, dtype=torch.float32, device=self.device)
        self._potential = torch.zeros(num_envs, dtype=torch.float32, device=self.device)
        self._prompts = [""] * num_envs
        self._any_active = False
        self._needs_reset = True

    @property
    def same_step(self) -> bool:
        return self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP

    @property
    def prompt_texts(self) -> list[str]:
        """The prompt of each row's current episode."""
        return list(self._prompts)

    @property
    def final_scores(self) -> Tensor:
        """(B,) float32: score of each row's latest episode ended since its reset (else 0)."""
        return self._scores.clone()

    @property
    def finished(self) -> Tensor:
        """(B,) bool: the row has ended an episode since its last reset (disabled mode: its batch episode)."""
        return self._finished.clone()

    def generated_tokens(self) -> tuple[Tensor, Tensor]:
        """Tokens generated in each row's current episode, padded with the pad id.

        Shapes: returns tokens (B, max_new_tokens) int64 and lengths (B,) int64.
        """
        return self._generated.clone(), self._lengths.clone()

    def completions(self) -> list[str]:
        """Decoded text of each row's current episode (special tokens removed)."""
        tokens, lengths = self.generated_tokens()
        return self._decode(tokens.cpu(), lengths.cpu())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Any]]:
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"unknown reset options {unknown}; valid: {list(RESET_OPTIONS)}")
        rows = self._rows_to_reset(options.get("reset_mask"))
        prompts = options.get("prompts")
        if prompts is None and self.group_size > 1 and len(rows) == self.num_envs:
            prompts, tokens = self._sample_prompts(len(rows) // self.group_size)
            prompts = [p for p in prompts for _ in range(self.group_size)]
            tokens = [t for t in tokens for _ in range(self.group_size)]
        elif prompts is None:
            prompts, tokens = self._sample_prompts(len(rows))
        else:
            if isinstance(prompts, str) or len(prompts) != len(rows):
                raise ValueError(
                    f"options['prompts'] must hold {len(rows)} prompts (one per row reset), got {prompts!r}"
                )
            config = self.config
            tokens = encode_prompts(config.tokenizer, list(prompts), config.window, config.prompt_overflow)
        self._start_rows(rows, list(prompts), tokens)
        if rows:
            index = torch.tensor(rows, dtype=torch.int64, device=self.device)
            self._finished = self._finished.index_fill(0, index, False)
            self._scores = self._scores.index_fill(0, index, 0.0)
        self._any_active = bool(self._active.any())
        self._needs_reset = False
        return self._observation(), {"prompt": self.prompt_texts}

    def step(self, actions: Any) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor, dict[str, Any]]:
        if self._needs_reset:
            raise RuntimeError("step() called before reset(); call reset() first")
        if not self._any_active:
            raise RuntimeError(f"step() called after all {self.num_envs} rows ended; call reset() first")
        config, active = self.config, self._active
        tokens = check_actions(actions, self.num_envs, config.vocab_size, active)
        tokens = torch.where(active, tokens, config.pad_token_id)
        # the new state is built aside and kept only once the reward function has succeeded
        column = self._lengths.clamp(max=config.max_new_tokens - 1)[:, None]
        kept = torch.where(active[:, None], tokens[:, None], self._generated.gather(1, column))
        generated = self._generated.scatter(1, column, kept)
        lengths = self._lengths + active.long()
        input_ids, attention_mask = push_tokens(self._input_ids, self._attention_mask, tokens, active)
        terminated, truncated = episode_ends(
            tokens, lengths, active, config.eos_token_id, config.max_new_tokens
        )
        ended = terminated | truncated
        rows = ended.nonzero().flatten()
        # rows whose text is scored at this step: those that ended (every active row if shaped)
        scored = active.nonzero().flatten() if config.shaped else rows
        texts: list[str] = []
        values = torch.zeros(0, dtype=torch.float32, device=self.device)
        if len(scored):
            texts = self._decode(generated[scored].cpu(), lengths[scored].cpu())
            prompts = [self._prompts[row] for row in scored.tolist()]
            values = torch.as_tensor(score_completions(config.reward_fn, prompts, texts), device=self.device)
        details = reward_details(config.reward_fn, len(texts)) if len(scored) else None
        if config.shaped:
            picked = ended[scored].nonzero().flatten().tolist()
            completions, scores = [texts[i] for i in picked], values[picked]
            details = None if details is None else [details[i] for i in picked]
            potential = self._potential.index_copy(0, scored, values)
            shaped = torch.where(active, potential - self._potential, 0.0)
            self._potential = potential
        else:
            completions, scores = texts, values
        self._generated, self._lengths = generated, lengths
        self._input_ids, self._attention_mask = input_ids, attention_mask
        rewards = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        info: dict[str, Any] = {
            "active": active,
            "length": self._lengths,
            "score": rewards,
            "prompt": self.prompt_texts,
            "completion": [""] * self.num_envs,
        }
        if self.same_step:
            info["final_obs"] = self._observation()
        else:
            info["all_done"] = False
        if details is not None:  # the reward function's word on each finished row (PAL: why a program failed)
            info["reward_detail"] = [""] * self.num_envs
            for row, detail in zip(rows.tolist(), details, strict=True):
                info["reward_detail"][row] = detail
        if len(rows):
            rewards = self._finish_rows(ended, rows, completions, scores, info)
        if config.shaped:
            rewards = shaped
        return self._observation(), rewards, terminated, truncated, info

    def _finish_rows(
        self, ended: Tensor, rows: Tensor, completions: list[str], scores: Tensor, info: dict[str, Any]
    ) -> Tensor:
        row_list = rows.tolist()
        rewards = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device).index_copy(
            0, rows, scores
        )
        self._scores = self._scores.index_copy(0, rows, scores)
        self._finished = self._finished | ended
        for row, completion in zip(row_list, completions, strict=True):
            info["completion"][row] = completion
        info["score"] = rewards
        if self.same_step:
            self._start_rows(row_list, *self._sample_prompts(len(row_list)))
        else:
            self._active = self._active & ~ended
            self._any_active = bool(self._active.any())
            info["all_done"] = not self._any_active
        return rewards

    def _rows_to_reset(self, reset_mask: Any) -> list[int]:
        return rows_to_reset(reset_mask, self.num_envs, first=self._needs_reset)

    def _sample_prompts(self, count: int) -> tuple[list[str], list[list[int]]]:
        indices = self.np_random.integers(len(self.config.prompts), size=count).tolist()
        return [self.config.prompts[i] for i in indices], [self.config.prompt_tokens[i] for i in indices]

    def _start_rows(self, rows: list[int], prompts: list[str], tokens: list[list[int]]) -> None:
        if not rows:
            return
        config = self.config
        index = torch.tensor(rows, dtype=torch.int64, device=self.device)
        input_ids, attention_mask = left_pad(tokens, config.window, config.pad_token_id, self.device)
        self._input_ids = self._input_ids.index_copy(0, index, input_ids)
        self._attention_mask = self._attention_mask.index_copy(0, index, attention_mask)
        self._generated = self._generated.index_fill(0, index, config.pad_token_id)
        self._lengths = self._lengths.index_fill(0, index, 0)
        self._potential = self._potential.index_fill(0, index, 0.0)
        self._active = self._active.index_fill(0, index, True)
        for row, prompt in zip(rows, prompts, strict=True):
            self._prompts[row] = prompt

    def _decode(self, tokens: Tensor, lengths: Tensor) -> list[str]:
        return [
            decode_completion(self.config.tokenizer, row[:length].tolist())
            for row, length in zip(tokens, lengths.tolist(), strict=True)
        ]

    def _observation(self) -> dict[str, Tensor]:
        return {"input_ids": self._input_ids, "attention_mask": self._attention_mask}
