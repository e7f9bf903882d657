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


def test_a_replace_interrupted_between_its_renames_is_recovered(tmp_path):
    from agents.run.checkpoint import recover_checkpoints

    checkpoints = tmp_path / "run" / "checkpoints"
    save_checkpoint(checkpoints / "update_1", {"v": torch.zeros(1)}, {"n": 1})
    write_latest(checkpoints, "update_1")
    # the state a kill leaves after the old copy was moved aside, before the new one moved in
    aside = checkpoints / ".update_1.old-abc"
    aside.mkdir()
    (checkpoints / "update_1").rename(aside / "update_1")
    (checkpoints / ".update_1.tmp-def").mkdir()
    (checkpoints / ".update_1.tmp-def" / "tensors.safetensors").write_bytes(b"half")
    state, meta = load_checkpoint(tmp_path / "run")  # still loadable
    assert meta == {"n": 1}
    done = recover_checkpoints(checkpoints)
    assert any("restored update_1" in line for line in done)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "update_1"]
    assert load_checkpoint(tmp_path / "run")[1] == {"n": 1}


def test_latest_naming_a_missing_or_hostile_directory_falls_back_to_the_newest(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for n in (1, 2):
        save_checkpoint(checkpoints / f"update_{n}", {"v": torch.full((1,), float(n))}, {"n": n})
    for pointer in ("update_9\n", "../../etc\n", "\x00\xff"):
        (checkpoints / "latest").write_bytes(pointer.encode("latin-1"))
        assert resolve_checkpoint(tmp_path) == checkpoints / "update_2"


def test_pruning_keeps_the_newest_and_the_best(tmp_path):
    from agents.run.checkpoint import prune_checkpoints, write_pointer

    checkpoints = tmp_path / "checkpoints"
    for n in range(6):
        save_checkpoint(checkpoints / f"update_{n:07d}", {"v": torch.zeros(1)}, {"n": n})
    write_latest(checkpoints, "update_0000005")
    write_pointer(checkpoints, "best", "update_0000001")
    removed = prune_checkpoints(checkpoints, keep=2)
    assert removed == ["update_0000000", "update_0000002", "update_0000003"]
    left = sorted(p.name for p in checkpoints.iterdir() if p.name.startswith("update"))
    assert left == ["update_0000001", "update_0000004", "update_0000005"]
    assert prune_checkpoints(checkpoints, keep=None) == []


WRITER = """
import sys, torch
from agents.run.checkpoint import save_checkpoint, write_latest
root = sys.argv[1]
for i in range(10**6):
    name = f"update_{i % 3}"  # rewrites existing checkpoints too
    save_checkpoint(f"{root}/{name}", {"w": torch.full((20000,), float(i))}, {"i": i})
    write_latest(root, name)
    print(i, flush=True)
"""


def test_a_kill_at_any_instant_of_a_write_leaves_a_loadable_latest(tmp_path):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from agents.run.checkpoint import recover_checkpoints

    root_dir = Path(__file__).resolve().parents[1]
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(root_dir)}
    for attempt in range(4):
        checkpoints = tmp_path / f"c{attempt}"
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(checkpoints)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout is not None
        process.stdout.readline()  # one complete checkpoint exists
        time.sleep(rng.uniform(0.0, 0.5))
        process.send_signal(signal.SIGKILL)
        process.wait()
        state, meta = load_checkpoint(checkpoints)
        assert state["w"][0].item() == meta["i"]
        recover_checkpoints(checkpoints)
        assert not [p for p in checkpoints.iterdir() if p.name.startswith(".")]
        assert load_checkpoint(checkpoints)[1]["i"] >= meta["i"] - 3
