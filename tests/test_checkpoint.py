"""Checkpoints: nested state round trip, atomic replace, RNG restore, no pickle."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from gymnasium import spaces

from agents.core.spaces import space_from_json, space_to_json
from agents.run.checkpoint import (
    load_checkpoint,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_latest,
)


def test_nested_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {
        "network": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "counters": {"updates": 7, "epsilon": 0.25, "name": "x", "none": None, "flag": True},
        "pair": (1, torch.arange(3)),
        "array": np.arange(4, dtype=np.int16),
    }
    save_checkpoint(tmp_path / "ckpt", state, {"k": 1})
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta == {"k": 1}
    torch.testing.assert_close(loaded["network"]["weight"], model.weight.detach())
    assert loaded["counters"] == state["counters"]
    assert loaded["pair"][0] == 1 and torch.equal(loaded["pair"][1], torch.arange(3))
    assert loaded["array"].dtype == np.int16 and loaded["array"].tolist() == [0, 1, 2, 3]
    # int keys of the optimizer state survive, so the optimizer loads it back
    assert set(loaded["optimizer"]["state"]) == {0, 1}
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]


def test_state_file_is_plain_json(tmp_path):
    save_checkpoint(tmp_path / "c", {"w": torch.ones(2)}, {})
    structure = json.loads((tmp_path / "c" / "state.json").read_text())
    assert "__dict__" in structure
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (tmp_path / "c").iterdir())


def test_unsupported_value_is_refused_and_nothing_written(tmp_path):
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "c", {"bad": object()}, {})
    assert not (tmp_path / "c").exists()
    assert list(tmp_path.iterdir()) == []


def test_overwrite_is_atomic_and_latest_resolves(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(run / "checkpoints" / "a", {"v": torch.zeros(1)}, {"n": 1})
    write_latest(run / "checkpoints", "a")
    save_checkpoint(run / "checkpoints" / "a", {"v": torch.ones(1)}, {"n": 2})
    assert resolve_checkpoint(run) == run / "checkpoints" / "a"
    state, meta = load_checkpoint(run)
    assert meta["n"] == 2 and state["v"].item() == 1.0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["a", "latest"]


def test_missing_checkpoint_error_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_checkpoint(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        load_checkpoint(tmp_path)


def test_rng_state_restores_all_generators():
    state = rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    second = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2] == second[2]


@pytest.mark.parametrize(
    "space",
    [
        spaces.Discrete(9),
        spaces.Box(-1, 1, shape=(9,), dtype=np.int8),
        spaces.MultiBinary(4),
        spaces.MultiDiscrete([3, 3]),
        spaces.Dict({"ids": spaces.Box(0, 99, shape=(5,), dtype=np.int64), "n": spaces.Discrete(2)}),
    ],
)
def test_spaces_round_trip(space):
    assert space_from_json(json.loads(json.dumps(space_to_json(space)))) == space
