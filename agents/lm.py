"""Language-model networks for the generic agents: an actor-critic for PPO, a Q-network for DQN.

Both wrap a causal LM (:class:`agents.lm_core.CausalLMCore`: LoRA adapters, the reference
model = the same base weights with the adapter off) and read the text env's observation,
``{"input_ids": (B, W), "attention_mask": (B, W)}`` left-padded with the newest token last.

Full passes (with gradients):
    ``forward(obs)``: one pass over every window, for a batch of states.
    ``evaluate_sequences(...)`` (actor-critic): one pass over whole prompt + response
    sequences giving every response token's log-prob, entropy and value, what a PPO update
    needs, instead of one pass per token.

Incremental acting (KV cache, no gradients), same results as ``forward``:
    ``forward_cached(obs)``: returns what ``forward(obs)`` returns. Rows whose window is
    the previous call's window shifted by one token cost one token; other rows (new
    episodes, new batches) are re-encoded. A rollout loop can call it on every observation
    the env returns; nothing else is needed.
    ``start(obs)`` = ``reset_cache()`` then ``forward_cached(obs)``.
    ``advance(actions, active=None)``: appends one token per row to the cached windows
    (inactive rows get the pad token, not attended) and returns the next outputs, for loops
    that track windows themselves.
    ``reset_cache()``: drop the cache (it holds the KV of the last batch of windows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from agents.lm_core import DEFAULT_LORA, CausalLMCore

Observation = Mapping[str, Tensor] | Tensor


@dataclass
class SequenceEvaluation:
    """Per-token quantities of response tokens, time-major.

    Shapes: log_probs, entropies, values (T, B). ``values[t]`` is the value of the state in
    which response token ``t`` was chosen.
    """

    log_probs: Tensor
    entropies: Tensor
    values: Tensor


def num_actions(action_space: Any) -> int:
    """The number of tokens of a ``Discrete`` action space."""
    size = getattr(action_space, "n", None)
    if size is None:
        raise TypeError(f"LM networks need a Discrete action space over tokens, got {action_space!r}")
    return int(size)


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


def token_log_probs(logits: Tensor, tokens: Tensor) -> Tensor:
    """Log-probabilities of ``tokens``. Shapes: logits (B, T, A), tokens (B, T) -> (B, T)."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class LMActorCritic(nn.Module):
    """Policy = the LM's next-token distribution; value = a head on the last hidden state.

    Args:
        observation_space: the text env's ``Dict`` space (unused beyond the contract).
        action_space: ``Discrete(vocab_size)``.
        model: a name/path for :func:`rlenv.text.models.load_causal_lm` or a loaded causal LM
            (LoRA layers are injected into it in place).
        lora: ``{r, alpha, dropout, target_modules}`` (missing keys take the defaults of
            ``agents.lm_core.DEFAULT_LORA``) or ``None`` to train all weights (the reference
            is then a frozen copy: twice the parameter memory).
        value_head_hidden: width of a hidden layer in the value head (``None``: linear).
        dtype: LM parameter dtype (name or dtype; ``None``: float32 / the given model's).
        device: where the network lives.
    """

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

    def forward(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """Logits of the next token and values, one full pass per window.

        Shapes: obs (B, W) -> logits (B, A), values (B,).
        """
        hidden, logits = self.core.encode_last(obs)
        return logits, self.values(hidden)

    @torch.no_grad()
    def forward_cached(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """``forward(obs)`` through the KV cache, without gradients (see the module docstring)."""
        hidden, logits = self.core.encode_last_cached(obs)
        return logits, self.values(hidden)

    def start(self, obs: Observation) -> tuple[Tensor, Tensor]:
        """Encode new prompts (dropping any cache). Shapes: obs (B, W) -> (B, A), (B,)."""
        self.reset_cache()
        return self.forward_cached(obs)

    def advance(self, actions: Tensor, active: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Append one token per row; inactive rows get the pad token. Shapes: (B,) -> (B, A), (B,)."""
        return self.forward_cached(self.core.next_window(actions, active))

    def reset_cache(self) -> None:
        self.core.context.reset()

    def evaluate_sequences(
        self, input_ids: Tensor, attention_mask: Tensor, response_start: int
    ) -> SequenceEvaluation:
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
        log_probs = torch.log_softmax(logits, dim=-1)
        entropies = -(log_probs.exp() * log_probs).sum(-1)
        chosen = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return SequenceEvaluation(chosen.T, entropies.T, self.values(hidden).T)

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
    """Q-values over the vocabulary from the LM head: ``q = scale * logits + bias``.

    Starts from the pretrained logits (scale ``logit_scale``, bias 0). With LoRA only the
    adapters, ``scale`` and the per-token ``bias`` train; a deep copy (the DQN target
    network) shares the frozen base weights. Arguments as for :class:`LMActorCritic`.

    ``forward(obs)`` -> q (B, A); ``forward_cached``, ``start``, ``advance`` and
    ``reset_cache`` act through the KV cache like the actor-critic's, returning q.
    """

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
        """Shapes: logits (B, A) -> (B, A)."""
        return self.scale * logits + self.bias

    def forward(self, obs: Observation) -> Tensor:
        """Shapes: obs (B, W) -> q (B, A)."""
        return self.q_values(self.core.encode_last(obs)[1])

    @torch.no_grad()
    def forward_cached(self, obs: Observation) -> Tensor:
        return self.q_values(self.core.encode_last_cached(obs)[1])

    def start(self, obs: Observation) -> Tensor:
        self.reset_cache()
        return self.forward_cached(obs)

    def advance(self, actions: Tensor, active: Tensor | None = None) -> Tensor:
        return self.forward_cached(self.core.next_window(actions, active))

    def reset_cache(self) -> None:
        self.core.context.reset()
