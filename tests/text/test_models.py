from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rlenv.text.models import load_causal_lm, tiny_causal_lm


def test_tiny_model_is_reproducible_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    first, second, other = tiny_causal_lm(32), tiny_causal_lm(32), tiny_causal_lm(32, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    ids = torch.tensor([[3, 4, 5]])
    assert_close(first(ids).logits, second(ids).logits)
    assert not torch.allclose(first(ids).logits, other(ids).logits)
    assert first(ids).logits.shape == (1, 3, 32) and not first.training


def test_tiny_alias_sets_the_vocabulary():
    assert load_causal_lm("tiny:40").config.vocab_size == 40
    with pytest.raises(ValueError, match="tiny:<vocab_size>"):
        load_causal_lm("tiny:big")


def test_local_directory_round_trips_with_dtype(tmp_path: Path):
    model = tiny_causal_lm(24)
    model.save_pretrained(str(tmp_path))
    loaded = load_causal_lm(str(tmp_path))
    ids = torch.tensor([[1, 2, 3, 4]])
    assert_close(loaded(ids).logits, model(ids).logits)
    assert load_causal_lm(str(tmp_path), dtype=torch.bfloat16).dtype == torch.bfloat16


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/dir", "missing-model.gguf"])
def test_missing_path_names_the_path(name: str):
    with pytest.raises(FileNotFoundError, match=name.replace(".", r"\.")):
        load_causal_lm(name)


def test_unknown_hub_id_fails_offline_with_a_clear_error():
    with pytest.raises(FileNotFoundError, match="not-a-real-org/not-a-model.*local cache"):
        load_causal_lm("not-a-real-org/not-a-model")


@pytest.mark.slow
def test_smollm2_is_converted_once_and_cached(tmp_path: Path):
    model = load_causal_lm("smollm2", cache_dir=tmp_path)
    cached = tmp_path / "smollm2"
    assert (cached / "config.json").is_file() and list(cached.glob("*.safetensors"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    reloaded = load_causal_lm("smollm2", cache_dir=tmp_path)
    ids = torch.tensor([[1, 504, 3458, 314]])
    with torch.no_grad():
        assert_close(reloaded(ids).logits, model(ids).logits)
    assert model.config.vocab_size == 49152 and not hasattr(reloaded.config, "quantization_config")


@pytest.mark.slow
def test_cached_smollm2_loads_fast():
    load_causal_lm("smollm2")
    started = time.perf_counter()
    model = load_causal_lm("smollm2")
    assert time.perf_counter() - started < 10.0
    with torch.no_grad():
        logits = model(torch.tensor([[1, 504, 3458]])).logits
    assert logits.shape == (1, 3, 49152) and torch.isfinite(logits).all()
