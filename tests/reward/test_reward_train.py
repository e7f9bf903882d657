import json
import math
import random
from pathlib import Path

import pytest
import torch

from rlenv.feedback.pairs import Pair
from rlenv.feedback.rankings import Label, RankingRecord, write_rankings
from rlenv.reward.model import RewardModel
from rlenv.reward.tiny import tiny_reward_model
from rlenv.reward.train import (
    RewardTrainConfig,
    evaluate_reward_model,
    labeler_agreement,
    run,
    split_pairs,
    train_reward_model,
)

FILLER = "the a movie film day food story plot actor place time it was is very so and".split()


def toy_records(n_prompts: int, seed: int = 0) -> list[RankingRecord]:
    """Each prompt: one completion containing "good" (rank 1) and two without (tied rank 2)."""
    rng = random.Random(seed)

    def sentence(with_good: bool) -> str:
        words = rng.choices(FILLER, k=rng.randint(3, 7))
        if with_good:
            words.insert(rng.randrange(len(words) + 1), "good")
        return " ".join(words)

    records = []
    for k in range(n_prompts):
        completions = [sentence(True), sentence(False), sentence(False)]
        order = rng.sample(range(3), 3)
        shuffled = tuple(completions[i] for i in order)
        ranks = tuple(1 if i == 0 else 2 for i in order)
        records.append(
            RankingRecord(f"prompt {k} " + sentence(False), shuffled, "goodness", (Label("sim", ranks),))
        )
    return records


def test_tiny_model_learns_separable_preference(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tiny_reward_model(seed=0)
    logged: list[tuple[str, float, int]] = []
    metrics = train_reward_model(
        toy_records(80),
        model,
        epochs=4,
        batch_size=16,
        lr=3e-3,
        val_fraction=0.25,
        seed=0,
        log=lambda name, value, step: logged.append((name, value, step)),
        save_dir=tmp_path / "best",
        progress=False,
    )
    assert metrics["reward_model/val_accuracy"] > 0.9
    assert metrics["reward_model/num_val_pairs"] == 40 and metrics["reward_model/num_train_pairs"] == 120
    names = {name for name, _, _ in logged}
    assert {"reward_model/loss", "reward_model/val_accuracy", "reward_model/val_loss"} <= names
    val_acc = [value for name, value, _ in logged if name == "reward_model/val_accuracy"]
    assert len(val_acc) == 5 and max(val_acc) == metrics["reward_model/val_accuracy"]
    saved = RewardModel.load(tmp_path / "best")
    probe = (["a prompt", "a prompt"], ["the good movie", "the movie"])
    assert torch.equal(saved.score(*probe), model.score(*probe))
    assert saved.score(*probe)[0] > saved.score(*probe)[1]


def test_split_pairs_by_prompt_from_records_or_pairs() -> None:
    records = toy_records(20)
    split = split_pairs(records, 0.25, seed=1)
    train, val = split.train, split.val
    assert len(val) == 10 and not {p.prompt for p in train} & {p.prompt for p in val}
    assert len(split.val_records) == 5
    pairs = [Pair("good", "bad", f"p{k % 5}") for k in range(20)]
    split = split_pairs(pairs, 0.4, seed=1)
    assert len(split.val) == 8 and not {p.prompt for p in split.train} & {p.prompt for p in split.val}


def test_explicit_validation_set_is_held_out_and_must_not_share_prompts() -> None:
    records = toy_records(12)
    split = split_pairs(records[:9], 0.5, seed=0, val_data=records[9:])
    assert len(split.train) == 18 and len(split.val) == 6 and split.val_records == records[9:]
    with pytest.raises(ValueError, match="1 prompt.* in both the training and the validation"):
        split_pairs(records[:9], 0.1, seed=0, val_data=records[8:])
    model = tiny_reward_model(seed=0)
    metrics = train_reward_model(records[:9], model, epochs=1, lr=1e-3, val_data=records[9:], progress=False)
    assert metrics["reward_model/num_train_pairs"] == 18 and metrics["reward_model/num_val_pairs"] == 6


def test_no_training_pairs_is_explained() -> None:
    tied = [RankingRecord("p", ("a", "b"), "c", (Label("x", (1, 1)),))]
    with pytest.raises(ValueError, match="no training pairs from 1 item"):
        train_reward_model(tied, tiny_reward_model(), val_fraction=0.0, progress=False)


def test_run_writes_model_and_metrics(tmp_path: Path) -> None:
    data = tmp_path / "r.jsonl"
    write_rankings(data, toy_records(12))
    cfg = RewardTrainConfig(
        data=str(data),
        encoder="tiny",
        epochs=1,
        lr=1e-3,
        val_fraction=0.25,
        trainable_layers=1,
        progress=False,
    )
    metrics = run(cfg, tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "run" / "reward_model" / "model.safetensors").is_file()
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


def noisy_records() -> list[RankingRecord]:
    """Three labelers; the pair (0, 1) is unanimous, the pair involving 2 is split."""
    labels = (Label("a", (1, 2, 3)), Label("b", (1, 3, 2)), Label("c", (1, 2, 3)))
    return [RankingRecord(f"p{k}", ("x good", "y", "z"), "c", labels) for k in range(4)]


def test_min_pair_agreement_keeps_unanimous_pairs_and_reports_all() -> None:
    records = noisy_records()
    split = split_pairs(records, 0.25, seed=0, min_pair_agreement=1.0)
    assert {(p.chosen, p.rejected) for p in split.train} == {("x good", "y"), ("x good", "z")}
    assert len(split.val) == 2 and len(split.val_all) == 3
    stats = labeler_agreement(records)
    assert stats["labeler_agreement"] == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)
    assert stats["labeler_vs_consensus"] == pytest.approx((1 + 1 + 2 / 3) / 3)


def test_training_calibrates_scores_and_freezes_lower_layers(tmp_path: Path) -> None:
    model = tiny_reward_model(seed=0, num_layers=2, pooling="completion")
    frozen = model.encoder.embeddings.word_embeddings.weight.clone()
    metrics = train_reward_model(
        toy_records(24),
        model,
        epochs=1,
        lr=3e-3,
        trainable_layers=1,
        val_fraction=0.25,
        progress=False,
        save_dir=tmp_path / "rm",
    )
    assert torch.equal(model.encoder.embeddings.word_embeddings.weight, frozen)
    assert metrics["reward_model/score_std"] > 0
    split = split_pairs(toy_records(24), 0.25, seed=0)
    unique = list(dict.fromkeys((p.prompt, c) for p in split.train for c in (p.chosen, p.rejected)))
    scores = model.score([p for p, _ in unique], [c for _, c in unique])
    assert abs(float(scores.mean())) < 1e-4 and abs(float(scores.std()) - 1) < 1e-4
    loaded = RewardModel.load(tmp_path / "rm")
    assert loaded.pooling == "completion" and loaded.score_std == model.score_std
    assert all(p.requires_grad for p in model.parameters())


def test_yaml_defaults_match_the_config_dataclass() -> None:
    from dataclasses import asdict

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(Path(__file__).parents[2] / "conf"), version_base="1.3"):
        yaml = compose(config_name="reward_train")
    assert OmegaConf.to_container(yaml) == asdict(RewardTrainConfig())


def test_feature_cache_matches_the_full_forward_pass() -> None:
    from rlenv.reward.features import FrozenFeatureCache

    prompts = ["a good day", "the movie was", "i hate"]
    completions = ["was good and nice", "bad", "the plot . it was so sad and not fine"]
    for layers, pooling in ((0, "completion"), (1, "completion_sum"), (3, "mean")):
        model = tiny_reward_model(seed=3, num_layers=3, pooling=pooling).eval()
        cache = FrozenFeatureCache(model, layers, batch_size=2)
        torch.testing.assert_close(
            cache.score(prompts, completions), model.score(prompts, completions, calibrated=False)
        )
        assert len(cache) == 3
    rewards = FrozenFeatureCache(model, 1).rewards(prompts, completions)
    assert rewards.requires_grad and rewards.shape == (3,)


def test_cached_training_matches_uncached_training() -> None:
    results = []
    for cache_features in (True, False):
        model = tiny_reward_model(seed=0, num_layers=2)
        model.encoder.config.hidden_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        metrics = train_reward_model(
            toy_records(16),
            model,
            epochs=1,
            lr=3e-3,
            trainable_layers=1,
            cache_features=cache_features,
            val_fraction=0.25,
            progress=False,
        )
        results.append((metrics["reward_model/val_loss"], model.head.weight.detach().clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-4)
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-5, rtol=1e-4)


def test_too_little_data_for_validation_fails_clearly_instead_of_nan(tmp_path: Path) -> None:
    one = toy_records(1)
    with pytest.raises(ValueError) as info:
        train_reward_model(one, tiny_reward_model(), progress=False)
    message = str(info.value)
    for needle in (
        "no validation pairs: 1 record(s) with 1 distinct prompt(s) give 2 training pair(s)",
        "at least 1 validation pair is needed",
        "val_fraction=0.1 holds out no prompt of 1",
        "add more ranked prompts",
        "val_data=",
        "require_validation=False",
    ):
        assert needle in message
    with pytest.raises(ValueError, match="val_fraction=0 holds out no prompt.*set val_fraction > 0"):
        train_reward_model(toy_records(8), tiny_reward_model(), val_fraction=0.0, progress=False)
    data = tmp_path / "one.jsonl"
    write_rankings(data, one)
    cfg = RewardTrainConfig(data=str(data), encoder="tiny", epochs=1, trainable_layers=1, progress=False)
    with pytest.raises(ValueError, match="no validation pairs: 1 record"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_held_out_records_without_usable_pairs_are_explained() -> None:
    train = toy_records(6)
    split = (Label("a", (1, 2)), Label("b", (1, 2)), Label("c", (2, 1)))
    disputed = [RankingRecord("held out", ("x", "y"), "c", split)]
    with pytest.raises(ValueError, match=r"1 item\(s\) of val_data give 1 pair\(s\), all dropped by min_"):
        train_reward_model(
            train, tiny_reward_model(), val_data=disputed, min_pair_agreement=1.0, progress=False
        )
    tied = [RankingRecord("held out", ("x", "y"), "c", (Label("a", (1, 1)),))]
    with pytest.raises(ValueError, match=r"val_data give no pair: their \(consensus\) ranks tie"):
        train_reward_model(train, tiny_reward_model(), val_data=tied, progress=False)
    with pytest.raises(ValueError, match="no validation pairs.*needed to measure val_accuracy"):
        evaluate_reward_model(tiny_reward_model(), train, val_data=tied)


def test_opting_out_of_validation_trains_and_reports_no_nan() -> None:
    logged: list[tuple[str, float, int]] = []
    metrics = train_reward_model(
        toy_records(1),
        tiny_reward_model(seed=0),
        epochs=2,
        lr=1e-3,
        require_validation=False,
        log=lambda name, value, step: logged.append((name, value, step)),
        progress=False,
    )
    json.dumps(metrics, allow_nan=False)
    assert not [name for name, value in metrics.items() if math.isnan(value)]
    assert not [name for name, value, _ in logged if math.isnan(value)]
    assert metrics["reward_model/num_val_pairs"] == 0 and metrics["reward_model/best_epoch"] == 2
    assert "reward_model/val_accuracy" not in metrics and metrics["reward_model/num_train_pairs"] == 2
