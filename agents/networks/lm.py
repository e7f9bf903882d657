"""Language-model networks for the generic agents: an actor-critic for PPO, a Q-network for DQN.

Both wrap a causal LM (:class:`agents.networks.lm_core.CausalLMCore`: LoRA adapters, the reference
model = the same base weights with the adapter off) and read the text env's observation,
``{"input_ids": (B, W), "attention_mask": (B, W)}`` left-padded with the newest token last.

``forward(obs)`` with gradients is one full pass per window. Without gradients (acting) it
runs through the KV cache (:mod:`agents.networks.lm_cache`): a row whose window is the previous
call's window shifted by one token costs one token, an unchanged row costs nothing, other
rows are re-encoded; the result equals the full pass. The cache is dropped whenever the
trainable weights have changed since it was filled, and by ``reset_cache()``.

The actor-critic also scores whole episodes for PPO (``evaluate_episodes``: every
generated token's log-prob, entropy and value in one pass over prompt + completion) and
gives the reference policy for the KL penalty (``reference_logits``, ``reference_episodes``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from agents.core.base import EpisodeEvaluation
from agents.networks.lm_cache import split_observation
from agents.networks.lm_core import DEFAULT_LORA, CausalLMCore
from rlenv.text.tokens import append_tokens, token_log_probs

Observation = Mapping[str, Tensor] | Tensor


def num_actions(action_space: Any) -> int:
    """The number of tokens of a ``Discrete`` action space."""
    size = getattr(action_space, "n", None)
    if size is None:
        raise TypeError(f"LM networks need a Discrete action space over tokens, got {action_space!r}")
    return int(size)


def check_text_spaces(observation_space: Any, action_space: Any) -> None:
    """LM networks read the text env's windows and choose one token of its vocabulary."""
    keys = set(getattr(observation_space, "spaces", {}) or {})
    if not {"input_ids", "attention_mask"} <= keys:
        raise TypeError(
            "a language-model network needs the text env's Dict observation of 'input_ids' and "
            f"'attention_mask' context windows, got {observation_space}"
        )
    num_actions(action_space)


def value_head(hidden_size: int, hidden: int | None) -> nn.Module:
    """Linear (or one-hidden-layer MLP) value head whose output layer starts at zero."""
    layers: list[nn.Module] = []
    if hidden:
        layers += [nn.Linear(hidden_size, hidden), nn.Tanh()]
    output = nn.Linear(hidden or hidden_size, 1)
    nn.init.zeros_(output.weight)
    nn.init.zeros_(output.bias)
    return nn.Sequential(*layers, output)


def response_tokens(input_ids: Tensor, response_start: int, num_actions: int) -> Tensor:
    """The response tokens of full sequences, checked to be actions.

    Shapes: input_ids (B, S) -> (B, S - response_start).
    """
    if not 0 < response_start < input_ids.shape[1]:
        raise ValueError(
            f"response_start {response_start} must lie in [1, {input_ids.shape[1] - 1}] "
            f"for sequences of length {input_ids.shape[1]}"
        )
    tokens = input_ids[:, response_start:].long()
    if int(tokens.max()) >= num_actions or int(tokens.min()) < 0:
        raise ValueError(
            f"response tokens must be actions in [0, {num_actions}), got {tokens.min()}..{tokens.max()}"
        )
    return tokens


def episode_transcripts(obs: Any, next_obs: Any, actions: Tensor, valid: Tensor) -> dict[str, Tensor] | None:
    """Each episode of a whole-episode rollout as one sequence, when the env wrote into it.

    Windows are left-padded and only grow (nothing is dropped on the left): step ``t``'s window
    holds ``L_t`` tokens and its action lands at sequence position ``L_t``. A plain text env
    appends one token per step (``L_{t+1} = L_t + 1``): then ``None`` (the episode is its first
    window plus its actions). An env that also writes tokens (an observation after a tool call)
    makes a window grow by more; the episode is then its final window, the one after its last
    valid step, with the action of step ``t`` at column ``W - L_final + L_t``.

    Shapes: obs, next_obs dicts of (T, B, W); actions, valid (T, B) -> ``input_ids``,
    ``attention_mask`` (B, W) and ``columns`` (B, T) int64 (invalid steps: the last column).

    Raises:
        ValueError: the windows are not one growing sequence (tokens were dropped on the left,
            or the final window does not hold the actions where they were taken).
    """
    if not isinstance(obs, Mapping) or "attention_mask" not in obs or "input_ids" not in obs:
        return None
    valid = valid.bool()
    lengths = obs["attention_mask"].long().sum(-1)  # (T, B)
    if not bool(valid[0].all()):
        raise ValueError("a whole-episode rollout must have every row valid at its first step")
    steps = valid.long().sum(0)  # (B,)
    last = (steps - 1).clamp(min=0)
    rows = torch.arange(valid.shape[1], device=valid.device)
    final_ids, final_mask = next_obs["input_ids"][last, rows], next_obs["attention_mask"][last, rows].long()
    final_lengths = final_mask.sum(-1)
    growth = torch.where(valid[1:], lengths[1:] - lengths[:-1], 1)
    if not bool((growth > 1).any()) and not bool((final_lengths - lengths[last, rows] > 1).any()):
        return None  # one token appended per step: nothing written by the env
    if bool((growth < 1).any()):
        raise ValueError(
            "the env's windows stopped growing within an episode (tokens dropped on the left), so its "
            "episodes cannot be scored as one sequence; use a larger window"
        )
    width = final_ids.shape[1]
    columns = torch.where(valid, width - final_lengths[None, :] + lengths, width - 1)  # (T, B)
    held = final_ids.gather(1, columns.T.clamp(0, width - 1)).T
    if bool((columns < 0).any()) or bool(torch.where(valid, held != actions.long(), False).any()):
        raise ValueError(
            "an episode's final window does not hold its actions where they were taken (tokens dropped "
            "on the left, or an env that rewrote the window); use a larger window"
        )
    return {"input_ids": final_ids, "attention_mask": final_mask, "columns": columns.T.contiguous()}


def _through_cache(network: LMActorCritic | LMQNetwork) -> None:
    """Drop the network's KV cache if its trainable weights changed since it was filled.

    A change shows as a new sum of the trainable parameters' in-place versions. The parameters
    are listed once per filled cache (walking every module of a language model at each token
    costs several percent of a rollout) and again whenever the cache is dropped, so a
    parameter made trainable later counts from then on.
    """
    trainable = network.__dict__.get("_trainable")
    if trainable is None or network.cache_version != sum(p._version for p in trainable):
        network.reset_cache()
        trainable = [p for p in network.parameters() if p.requires_grad]
        network.cache_version = sum(p._version for p in trainable)
        network.__dict__["_trainable"] = trainable


class LMActorCritic(nn.Module):
    """Policy = the LM's next-token distribution; value = a head on the last hidden state.

    Args:
        observation_space: the text env's ``Dict`` space (unused beyond the contract).
        action_space: ``Discrete(vocab_size)``.
        model: a name/path for :func:`rlenv.text.models.load_causal_lm` or a loaded causal LM
            (LoRA layers are injected into it in place).
        lora: ``{r, alpha, dropout, target_modules}`` (missing keys take the defaults of
            ``agents.networks.lm_core.DEFAULT_LORA``) or ``None`` to train all weights (the reference
            is then a frozen copy: twice the parameter memory).
        value_head_hidden: width of a hidden layer in the value head (``None``: linear).
        dtype: LM parameter dtype (name or dtype; ``None``: float32 / the given model's).
        device: where the network lives.
    """

    check_spaces = staticmethod(check_text_spaces)

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        *,
        model: str | nn.Module = "smollm2",
        lora: Mapping[str, Any] | None = DEFAULT_LORA,
        value_head_hidden: int | None = None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.core = CausalLMCore(model, num_actions(action_space), lora=lora, dtype=dtype, device=device)
        self.value_head = value_head(self.core.hidden_size, value_head_hidden).to(device)

    def values(self, hidden: Tensor) -> Tensor:
        """Shapes: hidden (..., H) -> (...)."""
        return self.value_head(hidden.float()).squeeze(-1)

    cache_version: int | None = None

    def forward(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """Logits of the next token and values (through the KV cache when gradients are off).

        Shapes: obs (B, W) -> logits (B, A), values (B,).
        """
        if torch.is_grad_enabled():
            hidden, logits = self.core.encode_last(obs)
        else:
            _through_cache(self)
            hidden, logits = self.core.encode_last_cached(obs)
        return logits, self.values(hidden)

    def reset_cache(self) -> None:
        self.core.context.reset()
        self.__dict__.pop("_trainable", None)

    def episode_context(self, rollout: Any) -> dict[str, Tensor] | None:
        """What scoring a rollout's episodes needs beyond their first windows and actions: for
        envs that write tokens into the window between actions (tool observations), each
        episode's final window and its actions' columns (:func:`episode_transcripts`); ``None``
        when every step appended just the action."""
        return episode_transcripts(rollout.obs, rollout.next_obs, rollout.actions, rollout.valid_mask)

    def evaluate_episodes(
        self, first_obs: Observation, actions: Tensor, valid: Tensor, context: dict[str, Tensor] | None = None
    ) -> EpisodeEvaluation:
        """Every generated token of whole episodes scored in one pass (PPO's episode batches).

        ``first_obs`` is each episode's first window; ``actions[t]`` the token of step ``t``,
        ``valid[t]`` False after the episode ended (those columns are not attended).
        ``context`` (from :meth:`episode_context`): the episodes' final windows, holding the
        tokens the env wrote; only the actions' columns are scored, so env-written tokens
        never enter the policy loss or the KL penalty.
        Shapes: first_obs (B, W); actions, valid (T, B) -> outputs (T, B).
        """
        if context is not None:
            hidden, logits = self.core.encode_at(*self._transcript(context, actions))
            return self._evaluation(hidden, logits, actions.T.to(logits.device).long())
        input_ids, attention_mask = self._sequences(first_obs, actions, valid)
        return self.evaluate_sequences(input_ids, attention_mask, input_ids.shape[1] - actions.shape[0])

    def reference_episodes(
        self, first_obs: Observation, actions: Tensor, valid: Tensor, context: dict[str, Tensor] | None = None
    ) -> Tensor:
        """log pi_ref of every generated token of whole episodes. Shapes as :meth:`evaluate_episodes`."""
        if context is not None:
            _, logits = self.core.encode_at(*self._transcript(context, actions), reference=True)
            return token_log_probs(logits, actions.T.to(logits.device)).T
        input_ids, attention_mask = self._sequences(first_obs, actions, valid)
        return self.reference_log_probs(input_ids, attention_mask, input_ids.shape[1] - actions.shape[0])

    def _transcript(self, context: dict[str, Tensor], actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Final windows and the columns whose hidden state chose each action. Shapes: (B, W) x2, (B, T)."""
        device = self.core.device
        columns = context["columns"].to(device)
        if tuple(columns.shape) != (actions.shape[1], actions.shape[0]):
            raise ValueError(
                f"context columns {tuple(columns.shape)} do not match actions {tuple(actions.shape)}"
            )
        return context["input_ids"].to(device), context["attention_mask"].to(device).long(), columns - 1

    def _sequences(self, first_obs: Observation, actions: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Prompt windows followed by the episodes' tokens; refused if acting dropped tokens."""
        input_ids, attention_mask = split_observation(first_obs, self.core.device)
        window = input_ids.shape[1]
        lengths = attention_mask.sum(-1) + valid.to(attention_mask.device).long().sum(0)
        if bool((lengths > window).any()):
            longest = int(lengths.max())
            raise ValueError(
                f"an episode of {longest} tokens (prompt plus completion) outgrew the context window of "
                f"{window} tokens, so the tokens the policy saw cannot be scored as one sequence; use a "
                f"window of at least {longest} (env.vector.window) or fewer env.vector.max_new_tokens"
            )
        return append_tokens(
            input_ids, attention_mask, actions.T.to(input_ids.device), valid.T.to(input_ids.device)
        )

    def evaluate_sequences(
        self, input_ids: Tensor, attention_mask: Tensor, response_start: int
    ) -> EpisodeEvaluation:
        """Log-probs, entropies and values of every response token in one forward pass.

        Sequences are left-padded prompts in columns ``[0, response_start)`` followed by the
        response tokens; a response column with mask 0 (a finished row fed the pad token)
        is evaluated like ``advance(..., active=False)`` would: callers mask it out. Equals
        step-by-step acting as long as prompt + response fit in the env's window.

        Shapes: input_ids, attention_mask (B, S); T = S - response_start; outputs (T, B).
        """
        input_ids, attention_mask = input_ids.to(self.core.device), attention_mask.to(self.core.device).long()
        tokens = response_tokens(input_ids, response_start, self.core.num_actions)
        hidden, logits = self.core.encode(input_ids[:, :-1], attention_mask[:, :-1], response_start - 1)
        return self._evaluation(hidden, logits, tokens)

    def _evaluation(self, hidden: Tensor, logits: Tensor, tokens: Tensor) -> EpisodeEvaluation:
        """Log-probs of ``tokens``, entropies and values, time-major. Shapes: (B, T, ...) -> (T, B)."""
        log_probs = torch.log_softmax(logits, dim=-1)
        entropies = -(log_probs.exp() * log_probs).sum(-1)
        chosen = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return EpisodeEvaluation(chosen.T, entropies.T, self.values(hidden).T)

    def reference_log_probs(self, input_ids: Tensor, attention_mask: Tensor, response_start: int) -> Tensor:
        """Log-probs of the response tokens under the reference model (no gradients).

        Shapes: input_ids, attention_mask (B, S) -> (T, B), T = S - response_start.
        """
        input_ids, attention_mask = input_ids.to(self.core.device), attention_mask.to(self.core.device).long()
        tokens = response_tokens(input_ids, response_start, self.core.num_actions)
        _, logits = self.core.encode(
            input_ids[:, :-1], attention_mask[:, :-1], response_start - 1, reference=True
        )
        return token_log_probs(logits, tokens).T

    def reference_logits(self, obs: Observation) -> Tensor:
        """Next-token logits of the reference model (no gradients). Shapes: obs (B, W) -> (B, A)."""
        return self.core.encode_last(obs, reference=True)[1]


class LMQNetwork(nn.Module):
    """Q-values over the vocabulary from the LM head: ``q = scale * log_softmax(logits) + bias``.

    Starts from the pretrained model's log-probabilities times ``logit_scale`` (bias 0): the
    greedy action is the LM's greedy token, the best token's value starts near 0 (the scale
    of end-of-episode rewards such as a sentiment score), and Boltzmann exploration at
    ``temperature = logit_scale`` samples exactly as the LM does. With LoRA only the adapters,
    ``scale`` and the per-token ``bias`` train; a deep copy (the DQN target network) shares
    the frozen base weights. Arguments as for :class:`LMActorCritic`.

    ``forward(obs)`` -> q (B, A), through the KV cache when gradients are off, like the
    actor-critic's.
    """

    check_spaces = staticmethod(check_text_spaces)

    def __init__(
        self,
        observation_space: Any,
        action_space: Any,
        *,
        model: str | nn.Module = "smollm2",
        lora: Mapping[str, Any] | None = DEFAULT_LORA,
        logit_scale: float = 1.0,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.core = CausalLMCore(model, num_actions(action_space), lora=lora, dtype=dtype, device=device)
        self.scale = nn.Parameter(torch.tensor(float(logit_scale), device=device))
        self.bias = nn.Parameter(torch.zeros(self.core.num_actions, device=device))

    def q_values(self, logits: Tensor) -> Tensor:
        """``scale * log_softmax(logits) + bias``. Shapes: logits (B, A) -> (B, A)."""
        return self.scale * torch.log_softmax(logits.float(), dim=-1) + self.bias

    cache_version: int | None = None

    def forward(self, obs: Observation) -> Tensor:
        """Q-values over the tokens (through the KV cache when gradients are off).

        Shapes: obs (B, W) -> q (B, A).
        """
        if torch.is_grad_enabled():
            return self.q_values(self.core.encode_last(obs)[1])
        _through_cache(self)
        return self.q_values(self.core.encode_last_cached(obs)[1])

    def reset_cache(self) -> None:
        self.core.context.reset()
        self.__dict__.pop("_trainable", None)
