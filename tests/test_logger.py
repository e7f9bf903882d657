"""The CSV logger: plain files a resumed run appends to."""

from __future__ import annotations

import csv
import json

import pytest

from rlenv.logger import CSVLogger, hyperparameters
from tests.test_train import tiny_config, train


def read_scalars(path):
    with (path / "scalars.csv").open(newline="") as stream:
        return list(csv.DictReader(stream))


def test_csv_logger_writes_scalars_text_and_hparams(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log({"loss": 0.5, "charts/kl": float("nan"), "eval/win_rate": 1}, step=3)
    logger.text("samples", 'a, "quoted"\nline', step=3)
    logger.hparams({"agent.lr": 1e-3, "agent.kl": None, "flag": True}, {"eval/win_rate": 1.0})
    logger.close()
    rows = read_scalars(tmp_path)
    assert [(r["step"], r["tag"], float(r["value"])) for r in rows] == [
        ("3", "loss", 0.5),
        ("3", "eval/win_rate", 1.0),
    ]
    assert json.loads((tmp_path / "text.jsonl").read_text()) == {
        "step": 3,
        "tag": "samples",
        "text": 'a, "quoted"\nline',
    }
    hparams = json.loads((tmp_path / "hparams.json").read_text())
    assert hparams["hparams"] == {"agent.lr": 1e-3, "agent.kl": "None", "flag": True}
    again = CSVLogger(tmp_path)  # a resumed run appends below the same header
    again.log({"loss": 0.25}, step=4)
    again.close()
    assert [r["step"] for r in read_scalars(tmp_path)] == ["3", "3", "4"]


def test_training_with_logger_csv(tmp_path):
    metrics = train.run(tiny_config("qlearning_tabular", "logger=csv"), tmp_path)
    rows = read_scalars(tmp_path)
    tags = {row["tag"] for row in rows}
    assert "charts/episode_return" in tags and "eval/random_as_x/win_rate" in tags
    final = [float(r["value"]) for r in rows if r["tag"] == "eval/random_as_x/win_rate"][-1]
    assert final == metrics["eval/random_as_x/win_rate"]
    assert not list(tmp_path.glob("events.out.tfevents.*"))


def test_hyperparameters_leave_out_instantiation_keys_and_keep_booleans():
    config = {
        "agent": {"_target_": "agents.ppo.PPOAgent", "lr": 1e-3, "normalize": True, "kl": None},
        "network": {"_partial_": True, "sizes": [64, 64], "_private": {"depth": 2}},
        "seed": 0,
    }
    assert hyperparameters(config) == {
        "agent.lr": 1e-3,
        "agent.normalize": True,
        "agent.kl": "None",
        "network.sizes": "[64, 64]",
        "seed": 0,
    }


def test_wandb_logger_writes_an_offline_run_without_network(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for variable in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # the logger's own dir wins
    train.run(tiny_config("ppo", "logger=wandb", "logger.name=tiny"), tmp_path / "run")
    # finish() returns once the run is complete; its background service closes the file a
    # moment later (at the latest when the process exits): wait for that, as an exit would
    wandb.teardown()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = b"".join(path.read_bytes() for path in runs[0].glob("*.wandb"))
    for key in (b"charts/episode_return", b"eval/random_as_x/win_rate", b"agent.gamma", b"tiny"):
        assert key in records, key


def test_wandb_logger_refuses_an_unknown_mode(tmp_path):
    pytest.importorskip("wandb")
    from rlenv.logger import WandbLogger

    with pytest.raises(
        ValueError, match=r"logger.mode='onlin' is not a W&B mode \(valid: offline, online, disabled\)"
    ):
        WandbLogger(tmp_path, mode="onlin")


def test_tensorboard_hparams_session_keeps_booleans_and_leaves_out_plumbing_and_constant_counts(tmp_path):
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import metadata

    train.run(tiny_config("ppo"), tmp_path)
    session = event_accumulator.EventAccumulator(str(tmp_path / "hparams"))
    session.Reload()
    content = session.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG]
    hparams = metadata.parse_session_start_info_plugin_data(content).hparams
    assert hparams["agent.normalize_advantages"].WhichOneof("kind") == "bool_value"
    assert hparams["agent.normalize_advantages"].bool_value is True
    assert hparams["agent.gamma"].WhichOneof("kind") == "number_value"
    assert not [
        key for key in hparams if key.endswith("device") or key.startswith(("train.progress", "logger"))
    ]
    assert "eval/random_as_x/win_rate" in session.Tags()["scalars"]
    assert not [tag for tag in session.Tags()["scalars"] if tag.endswith("/episodes")]
    curves = event_accumulator.EventAccumulator(str(tmp_path))
    curves.Reload()
    assert "charts/episode_return" in curves.Tags()["scalars"]
    assert "perf/env_steps" not in curves.Tags()["scalars"]  # the x axis already
    with pytest.raises(KeyError):  # no experiment summary that would hide other runs' metric columns
        curves.PluginTagToContent("hparams")
