import json
import random
from pathlib import Path

import pytest
import torch

from rlenv.feedback.pairs import Pair
from rlenv.feedback.rankings import Label, RankingRecord, write_rankings
from rlenv.reward.model import RewardModel
from rlenv.reward.tiny import tiny_reward_model
from rlenv.reward.train import RewardTrainConfig, run, split_pairs, train_reward_model

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
    assert metrics["eval/reward_val_accuracy"] > 0.9
    assert metrics["num_val_pairs"] == 40 and metrics["num_train_pairs"] == 120
    names = {name for name, _, _ in logged}
    assert {"loss/reward_bt", "eval/reward_val_accuracy", "eval/reward_val_loss"} <= names
    val_acc = [value for name, value, _ in logged if name == "eval/reward_val_accuracy"]
    assert len(val_acc) == 5 and max(val_acc) == metrics["eval/reward_val_accuracy"]
    saved = RewardModel.load(tmp_path / "best")
    probe = (["a prompt", "a prompt"], ["the good movie", "the movie"])
    assert torch.equal(saved.score(*probe), model.score(*probe))
    assert saved.score(*probe)[0] > saved.score(*probe)[1]


def test_split_pairs_by_prompt_from_records_or_pairs() -> None:
    records = toy_records(20)
    train, val = split_pairs(records, 0.25, seed=1)
    assert len(val) == 10 and not {p.prompt for p in train} & {p.prompt for p in val}
    pairs = [Pair("good", "bad", f"p{k % 5}") for k in range(20)]
    train_pairs, val_pairs = split_pairs(pairs, 0.4, seed=1)
    assert len(val_pairs) == 8 and not {p.prompt for p in train_pairs} & {p.prompt for p in val_pairs}


def test_no_training_pairs_is_explained() -> None:
    tied = [RankingRecord("p", ("a", "b"), "c", (Label("x", (1, 1)),))]
    with pytest.raises(ValueError, match="no training pairs from 1 item"):
        train_reward_model(tied, tiny_reward_model(), val_fraction=0.0, progress=False)


def test_run_writes_model_and_metrics(tmp_path: Path) -> None:
    data = tmp_path / "r.jsonl"
    write_rankings(data, toy_records(12))
    cfg = RewardTrainConfig(
        data=str(data), encoder="tiny", epochs=1, lr=1e-3, val_fraction=0.25, progress=False
    )
    metrics = run(cfg, tmp_path / "run", log=lambda *_: None)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "run" / "reward_model" / "model.safetensors").is_file()
