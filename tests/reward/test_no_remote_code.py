"""Every Hugging Face load in rlenv passes ``trust_remote_code=False`` explicitly.

The loaders of ``rlenv.text.models``, ``rlenv.text.tokenizers`` and ``rlenv.reward`` are
wrapped to record the keyword arguments of each call made from rlenv code; calls that
can run offline go on to the real loader, the others (GGUF files, hub ids) stop there.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from rlenv.reward.model import RewardModel
from rlenv.reward.tiny import tiny_reward_model
from rlenv.text import models, tokenizers

LOADERS = [
    (AutoConfig, "from_pretrained"),
    (AutoModel, "from_pretrained"),
    (AutoModel, "from_config"),
    (AutoModelForCausalLM, "from_pretrained"),
    (AutoModelForCausalLM, "from_config"),
    (AutoTokenizer, "from_pretrained"),
]


class Stopped(Exception):
    """Raised by a recorder that does not call the real loader."""


class Recorder:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.forward = True
        for cls, name in LOADERS:
            monkeypatch.setattr(cls, name, self._wrap(cls, name, getattr(cls, name)))

    def _wrap(self, cls: type, name: str, original: Any) -> Any:
        def recorder(*args: Any, **kwargs: Any) -> Any:
            if sys._getframe(1).f_globals.get("__name__", "").startswith("rlenv."):
                self.calls.append((f"{cls.__name__}.{name}", kwargs))
                if not self.forward:
                    raise Stopped
            return original(*args, **kwargs)

        return recorder

    def take(self) -> list[str]:
        """Names of the calls so far (then forgotten); each must have passed trust_remote_code=False."""
        bad = [(name, kwargs) for name, kwargs in self.calls if kwargs.get("trust_remote_code") is not False]
        assert not bad, f"loads without trust_remote_code=False: {bad}"
        names = [name for name, _ in self.calls]
        self.calls = []
        return names


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    return Recorder(monkeypatch)


def test_causal_lm_loads_refuse_repository_code(recorder: Recorder, tmp_path: Path, monkeypatch) -> None:
    saved = tmp_path / "lm"
    models.tiny_causal_lm().save_pretrained(saved)
    models.load_causal_lm(str(saved))
    assert recorder.take() == ["AutoModelForCausalLM.from_pretrained"]
    models._strip_quantization(models.tiny_causal_lm())
    assert recorder.take() == ["AutoModelForCausalLM.from_config"]

    recorder.forward = False
    gguf = tmp_path / "weights" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"")
    cached = tmp_path / "cache" / "smollm2"
    for load in (
        lambda: models.load_causal_lm(str(gguf)),
        lambda: models.load_causal_lm("some-org/some-model"),
        lambda: models.load_causal_lm("smollm2", cache_dir=tmp_path / "cache"),
    ):
        with pytest.raises(Stopped):
            load()
    monkeypatch.setattr(models, "smollm2_gguf_path", lambda: gguf)
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    with pytest.raises(Stopped):
        models.load_causal_lm("smollm2", cache_dir=tmp_path / "cache")
    (cached / "config.json").unlink()
    with pytest.raises(Stopped):
        models.load_causal_lm("smollm2", cache_dir=tmp_path / "cache")
    assert recorder.take() == ["AutoModelForCausalLM.from_pretrained"] * 5


def test_tokenizer_loads_refuse_repository_code(recorder: Recorder, tmp_path: Path, monkeypatch) -> None:
    saved = tmp_path / "tok"
    tokenizers.tiny_tokenizer().save_pretrained(saved)
    tokenizers.load_tokenizer(str(saved))
    assert recorder.take() == ["AutoTokenizer.from_pretrained"]

    recorder.forward = False
    monkeypatch.setenv("RLENV_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    monkeypatch.setattr(tokenizers, "smollm2_gguf_path", lambda: gguf)
    for load in (lambda: tokenizers.load_tokenizer("some-org/some-model"), tokenizers.load_tokenizer):
        with pytest.raises(Stopped):
            load()
    cached = tmp_path / "cache" / "smollm2-tokenizer"
    cached.mkdir(parents=True)
    (cached / "tokenizer.json").write_text("{}")
    with pytest.raises(Stopped):
        tokenizers.load_tokenizer()
    assert recorder.take() == ["AutoTokenizer.from_pretrained"] * 3


def test_reward_model_loads_refuse_repository_code(recorder: Recorder, tmp_path: Path) -> None:
    model = tiny_reward_model()
    assert recorder.take() == ["AutoModel.from_config"]
    model.save(tmp_path / "rm")
    RewardModel.load(tmp_path / "rm")
    assert recorder.take() == [
        "AutoConfig.from_pretrained",
        "AutoModel.from_config",
        "AutoTokenizer.from_pretrained",
    ]
    model.encoder.save_pretrained(tmp_path / "encoder")
    model.tokenizer.save_pretrained(tmp_path / "encoder")
    RewardModel.from_pretrained_encoder(tmp_path / "encoder", max_length=32)
    assert recorder.take() == ["AutoModel.from_pretrained", "AutoTokenizer.from_pretrained"]
