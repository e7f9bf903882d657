import json
from pathlib import Path

import pytest
import torch

from rlenv.reward.model import RewardModel, mean_pool, pooling_mask, resolve_encoder
from rlenv.reward.tiny import tiny_reward_model

PROMPTS = ["a good day", "the movie", "i hate the plot", "nice"]
COMPLETIONS = ["was good .", "is very bad and not fine at all", "so sad", "love it ! ! !"]


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(mean_pool(hidden, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_score_is_batched_ordered_and_gradient_free() -> None:
    model = tiny_reward_model(seed=1)
    model.train()
    scores = model.score(PROMPTS, COMPLETIONS, batch_size=3)
    assert scores.shape == (4,) and scores.dtype == torch.float32 and not scores.requires_grad
    assert model.training
    one_by_one = torch.cat([model.score([p], [c]) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)])
    torch.testing.assert_close(scores, one_by_one, atol=1e-5, rtol=1e-5)
    assert model.reward(PROMPTS, COMPLETIONS).requires_grad


def test_pairs_use_token_types_and_truncate() -> None:
    model = tiny_reward_model(max_length=8)
    batch = model.tokenize(["a good day"], ["was good and nice and fine and happy"])
    assert batch["input_ids"].shape == (1, 8)
    assert batch["token_type_ids"][0].tolist()[-1] == 1


def test_save_load_round_trip_is_identical(tmp_path: Path) -> None:
    model = tiny_reward_model(seed=2)
    with torch.no_grad():
        model.head.bias.fill_(0.25)
    model.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm")
    assert torch.equal(model.score(PROMPTS, COMPLETIONS), loaded.score(PROMPTS, COMPLETIONS))
    assert loaded.max_length == model.max_length
    files = sorted(p.name for p in (tmp_path / "rm").rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pkl", ".pickle"))]
    assert "model.safetensors" in files


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    tiny_reward_model(seed=3).save(tmp_path / "rm")
    newer = tiny_reward_model(seed=4)
    newer.save(tmp_path / "rm")
    assert [p.name for p in tmp_path.iterdir()] == ["rm"]
    assert torch.equal(
        RewardModel.load(tmp_path / "rm").score(PROMPTS, COMPLETIONS), newer.score(PROMPTS, COMPLETIONS)
    )


def test_load_rejects_foreign_directories(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a saved reward model"):
        RewardModel.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="format"):
        RewardModel.load(tmp_path)


def test_resolve_encoder_errors_name_alias_and_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"neither a known alias \['minilm'\]"):
        resolve_encoder(tmp_path / "missing")


def test_minilm_alias_resolves_to_packaged_model() -> None:
    directory = resolve_encoder("minilm")
    assert (directory / "config.json").is_file() and (directory / "model.safetensors").is_file()


@pytest.mark.slow
def test_minilm_reward_model_scores_and_round_trips(tmp_path: Path) -> None:
    model = RewardModel.from_pretrained_encoder("minilm", max_length=64)
    scores = model.score(PROMPTS, COMPLETIONS, batch_size=2)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    model.save(tmp_path / "rm")
    loaded = RewardModel.load(tmp_path / "rm")
    torch.testing.assert_close(loaded.score(PROMPTS, COMPLETIONS), scores)


def test_completion_pooling_averages_the_second_segment_only() -> None:
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    types = torch.tensor([[0, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    assert pooling_mask(mask, types, "completion").tolist() == [[0, 0, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert torch.equal(pooling_mask(mask, types, "mean"), mask)
    model = tiny_reward_model(seed=1, pooling="completion")
    assert not torch.allclose(
        model.score(PROMPTS, COMPLETIONS), tiny_reward_model(seed=1).score(PROMPTS, COMPLETIONS)
    )
    summed = tiny_reward_model(seed=1, pooling="completion_sum")
    assert not torch.allclose(summed.score(PROMPTS, COMPLETIONS), model.score(PROMPTS, COMPLETIONS))
    with pytest.raises(
        ValueError, match=r"unknown pooling 'max' \(valid: \['mean', 'completion', 'completion_sum'\]\)"
    ):
        tiny_reward_model(pooling="max")


def test_trainable_layers_freeze_embeddings_and_lower_layers() -> None:
    model = tiny_reward_model(num_layers=2)
    total = sum(p.numel() for p in model.parameters())
    assert model.set_trainable_layers(None) == total
    head_only = model.set_trainable_layers(0)
    assert head_only == sum(p.numel() for p in model.head.parameters())
    top = model.set_trainable_layers(1)
    assert head_only < top < total
    assert all(p.requires_grad for p in model.encoder.encoder.layer[1].parameters())
    assert not any(p.requires_grad for p in model.encoder.encoder.layer[0].parameters())
    with pytest.raises(ValueError, match=r"trainable_layers must be in 0..2"):
        model.set_trainable_layers(3)
