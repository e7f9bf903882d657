"""The causal LM inside the LM networks: LoRA adapters, the frozen reference, hidden states.

With LoRA (the default) the reference model is the same base weights with the adapter
switched off, so exactly one copy of the base sits in memory. Without LoRA every base
weight trains and a frozen deep copy serves as the reference: twice the parameter memory.

Checkpoints stay small: ``state_dict()`` leaves out frozen weights (they are rebuilt from
``model`` when the network is constructed) and the second name of tied weights; loading a
state without them keeps the current values. A deep copy (e.g. a DQN target network) shares
the frozen weights with the original and copies only the trainable ones.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor, nn

from agents.networks.lm_cache import ContextCache, split_observation
from rlenv.text.tokens import first_attended_column, position_ids

SHARED_PREFIX_MIN = 32  # tokens: a shorter common prefix is encoded with each row


def shared_prefix_length(input_ids: Tensor, attention_mask: Tensor, starts: Tensor, limit: int) -> int:
    """How many leading attended tokens every row has in common, at most ``limit``.

    Shapes: input_ids, attention_mask (B, L); starts (B,): each row's first attended column.
    """
    limit = min(limit, int((input_ids.shape[1] - starts).min()))
    if limit < 1:
        return 0
    index = starts[:, None] + torch.arange(limit, device=input_ids.device)[None]
    tokens, attended = input_ids.gather(1, index), attention_mask.gather(1, index).bool()
    same = ((tokens == tokens[:1]) & attended).all(0)
    return int(same.long().cumprod(0).sum())


DEFAULT_LORA: Mapping[str, Any] = MappingProxyType(
    {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ("q_proj", "v_proj")}
)


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """A torch dtype from a dtype or its name (``"float32"``, ``"bfloat16"``, ...)."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r} (valid: float32, float16, bfloat16, float64)")
    return resolved


def lora_config(lora: Mapping[str, Any]) -> Any:
    """A ``peft.LoraConfig`` from ``{r, alpha, dropout, target_modules}``; missing keys default."""
    from peft import LoraConfig

    unknown = set(lora) - set(DEFAULT_LORA)
    if unknown:
        raise ValueError(f"unknown LoRA options {sorted(unknown)} (valid: {sorted(DEFAULT_LORA)})")
    options = {**DEFAULT_LORA, **lora}
    return LoraConfig(
        r=int(options["r"]),
        lora_alpha=float(options["alpha"]),
        lora_dropout=float(options["dropout"]),
        target_modules=[str(name) for name in options["target_modules"]],
        bias="none",
    )


def unique_parameter_bytes(module: nn.Module) -> int:
    """Bytes of the distinct parameter storages of ``module`` (shared weights counted once)."""
    storages = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in module.parameters()}
    return sum(storages.values())


class CausalLMCore(nn.Module):
    """A causal LM with optional LoRA, its reference model and a KV cache for acting.

    Args:
        model: a name or path for :func:`rlenv.text.models.load_causal_lm`, or a loaded
            ``PreTrainedModel`` (LoRA layers are injected into it in place).
        num_actions: size of the action space; logits are cut to the first ``num_actions``
            tokens of the vocabulary.
        lora: ``{r, alpha, dropout, target_modules}`` or ``None`` to train every weight.
        dtype: parameter dtype (``None`` keeps a given model's dtype; names are accepted).
        device: where the model lives.
    """

    def __init__(
        self,
        model: str | nn.Module,
        num_actions: int,
        *,
        lora: Mapping[str, Any] | None = DEFAULT_LORA,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        base = _as_model(model, resolve_dtype(dtype), device)
        vocab_size = base.get_output_embeddings().weight.shape[0]
        if not 0 < num_actions <= vocab_size:
            raise ValueError(
                f"action space of {num_actions} tokens does not fit the LM vocabulary of {vocab_size}"
            )
        self.num_actions = num_actions
        self.pad_token_id = _pad_token_id(base.config)
        self.reference_lm: nn.Module | None = None
        if lora is not None:
            from peft import get_peft_model

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.lm: nn.Module = get_peft_model(base, lora_config(lora))
        else:
            self.lm = base.requires_grad_(True)
            self.reference_lm = copy.deepcopy(base).requires_grad_(False).eval()
        self.context = ContextCache()
        self._frozen, self._aliases = _omitted_names(self)
        self.register_state_dict_post_hook(_drop_omitted)
        self.register_load_state_dict_pre_hook(_restore_omitted)

    @property
    def policy_lm(self) -> nn.Module:
        """The causal LM being trained (adapters active)."""
        return self.lm.get_base_model() if self.reference_lm is None else self.lm

    @property
    def device(self) -> torch.device:
        return self.policy_lm.get_output_embeddings().weight.device

    @property
    def hidden_size(self) -> int:
        return int(self.policy_lm.get_output_embeddings().weight.shape[1])

    @contextmanager
    def using(self, reference: bool = False) -> Iterator[nn.Module]:
        """The policy LM, or the reference LM (without gradients) when ``reference``."""
        if not reference:
            yield self.policy_lm
        elif self.reference_lm is not None:
            with torch.no_grad():
                yield self.reference_lm
        else:
            with torch.no_grad(), self.lm.disable_adapter():
                yield self.lm.get_base_model()

    def hidden(
        self,
        lm: nn.Module,
        input_ids: Tensor,
        attention_mask: Tensor,
        position_ids: Tensor,
        cache: Any = None,
    ) -> Tensor:
        """Final-layer hidden states of ``lm``, extending ``cache`` when one is given.

        Shapes: input_ids, position_ids (B, L); attention_mask (B, cached + L) -> (B, L, H).
        """
        output = lm.get_decoder()(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=cache is not None,
        )
        return output.last_hidden_state

    def head(self, lm: nn.Module, hidden: Tensor) -> Tensor:
        """LM logits over the action tokens, float32. Shapes: (..., H) -> (..., A)."""
        return lm.get_output_embeddings()(hidden)[..., : self.num_actions].float()

    def encode(
        self, input_ids: Tensor, attention_mask: Tensor, first: int, *, reference: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Hidden states and logits at columns ``first`` onwards of full, left-padded sequences.

        Leading columns that are padding in every row are skipped; positions count attended
        tokens only, so left padding changes nothing. A prefix every row shares is encoded once
        (:meth:`sequence_hidden`).

        Shapes: input_ids, attention_mask (B, L) -> hidden (B, L - first, H), logits (B, L - first, A).
        """
        needed = torch.full((input_ids.shape[0],), first, dtype=torch.int64, device=input_ids.device)
        with self.using(reference) as lm:
            hidden, offset = self.sequence_hidden(lm, input_ids, attention_mask, needed)
            hidden = hidden[:, first - offset :]
            return hidden, self.head(lm, hidden)

    def encode_at(
        self, input_ids: Tensor, attention_mask: Tensor, columns: Tensor, *, reference: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Hidden states and logits at chosen columns of full, left-padded sequences.

        One pass over every attended column (a prefix every row shares encoded once); the LM
        head runs on the chosen columns only (sequences with tokens the env wrote between
        actions: only the actions' columns).

        Shapes: input_ids, attention_mask (B, L); columns (B, T) int64 in [0, L) ->
        hidden (B, T, H), logits (B, T, A).
        """
        with self.using(reference) as lm:
            hidden, offset = self.sequence_hidden(lm, input_ids, attention_mask, columns.min(-1).values)
            index = (columns - offset).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            hidden = hidden.gather(1, index)
            return hidden, self.head(lm, hidden)

    def sequence_hidden(
        self, lm: nn.Module, input_ids: Tensor, attention_mask: Tensor, needed: Tensor
    ) -> tuple[Tensor, int]:
        """Final hidden states of full, left-padded sequences from column ``offset`` on.

        ``needed[b]``: the first column of row ``b`` whose hidden state the caller reads;
        ``offset`` is at most every row's. When the rows open with the same tokens (a task's
        few-shot prefix, the prompt of a group) for at least ``SHARED_PREFIX_MIN`` tokens before
        any needed column, that prefix goes through the model once, its keys and values are
        shared by every row (gradients flow back through them, summed over the rows), and the
        rest of each row attends to them: the same states as one pass per row, for the cost of
        one prefix instead of B.

        Shapes: input_ids, attention_mask (B, L); needed (B,) -> hidden (B, L - offset, H).
        """
        attention_mask = attention_mask.long()
        starts = (attention_mask.cumsum(-1) == 0).sum(-1)  # first attended column of each row
        shared = shared_prefix_length(input_ids, attention_mask, starts, int((needed - starts).min()))
        if input_ids.shape[0] < 2 or shared < SHARED_PREFIX_MIN:
            start = min(first_attended_column(attention_mask), int(needed.min()))
            ids, mask = input_ids[:, start:], attention_mask[:, start:]
            return self.hidden(lm, ids, mask, position_ids(mask)), start
        from transformers import DynamicCache

        batch, length = input_ids.shape
        first = int(starts[0])
        prefix = input_ids[:1, first : first + shared]
        cache = DynamicCache()
        positions = torch.arange(shared, device=input_ids.device)[None]
        self.hidden(lm, prefix, torch.ones_like(prefix), positions, cache)
        for layer in cache.layers:
            layer.keys = layer.keys.expand(batch, -1, -1, -1)
            layer.values = layer.values.expand(batch, -1, -1, -1)
        offset = int((starts + shared).min())  # every row's rest starts at or after it
        columns = torch.arange(offset, length, device=input_ids.device)
        rest_mask = attention_mask[:, offset:] * (columns[None] >= (starts + shared)[:, None])
        mask = torch.cat([torch.ones_like(rest_mask[:, :1]).expand(-1, shared), rest_mask], dim=1)
        hidden = self.hidden(lm, input_ids[:, offset:], mask, position_ids(rest_mask) + shared, cache)
        return hidden, offset

    def encode_last(
        self, obs: Mapping[str, Tensor] | Tensor, *, reference: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Hidden state and logits of the newest token of each window, full forward pass.

        Shapes: obs (B, W) -> hidden (B, H), logits (B, A).
        """
        input_ids, attention_mask = split_observation(obs, self.device)
        hidden, logits = self.encode(input_ids, attention_mask, input_ids.shape[1] - 1, reference=reference)
        return hidden[:, -1], logits[:, -1]

    @torch.no_grad()
    def encode_last_cached(self, obs: Mapping[str, Tensor] | Tensor) -> tuple[Tensor, Tensor]:
        """Same as :meth:`encode_last` (policy LM) through the KV cache, without gradients."""
        input_ids, attention_mask = split_observation(obs, self.device)
        lm = self.policy_lm
        hidden = self.context.step(lambda *args: self.hidden(lm, *args), input_ids, attention_mask)
        return hidden, self.head(lm, hidden)

    def __deepcopy__(self, memo: dict[int, Any]) -> CausalLMCore:
        for parameter in self.parameters():
            if not parameter.requires_grad:
                memo.setdefault(id(parameter), parameter)
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for name, value in self.__dict__.items():
            object.__setattr__(clone, name, copy.deepcopy(value, memo))
        return clone


def _as_model(model: str | nn.Module, dtype: torch.dtype | None, device: str | torch.device) -> Any:
    if isinstance(model, str):
        from rlenv.text.models import load_causal_lm

        return load_causal_lm(model, dtype=dtype or torch.float32, device=device)
    if not hasattr(model, "get_decoder") or not hasattr(model, "get_output_embeddings"):
        raise TypeError(
            f"model must be a model name/path or a transformers causal LM, got {type(model).__name__}"
        )
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


def _pad_token_id(config: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def _omitted_names(module: nn.Module) -> tuple[frozenset[str], dict[str, str]]:
    """Names left out of checkpoints: frozen weights, and second names of tied weights
    (mapped to the name that is kept)."""
    first_name: dict[int, str] = {}
    frozen, aliases = set(), {}
    for name, parameter in module.named_parameters(remove_duplicate=False):
        if not parameter.requires_grad:
            frozen.add(name)
        elif id(parameter) in first_name:
            aliases[name] = first_name[id(parameter)]
        first_name.setdefault(id(parameter), name)
    return frozenset(frozen), aliases


def _drop_omitted(module: CausalLMCore, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for name in (*module._frozen, *module._aliases):
        state_dict.pop(prefix + name, None)


def _restore_omitted(module: CausalLMCore, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    for alias, kept in module._aliases.items():
        if prefix + kept in state_dict:
            state_dict.setdefault(prefix + alias, state_dict[prefix + kept])
    parameters = dict(module.named_parameters(remove_duplicate=False))
    for name in module._frozen:
        state_dict.setdefault(prefix + name, parameters[name].detach())
