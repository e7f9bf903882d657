"""Opening a checkpoint is not code execution, and damaged files give our error, never another.

Each payload is planted in a real checkpoint's ``meta.json``; loading it through
``agents.load_agent``, ``resume=`` and ``agents.evaluate`` must refuse it (naming the file and
the key) with nothing run and nothing written.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agents
from agents import train
from agents.run.checkpoint import (
    META_FILE,
    STATE_FILE,
    TENSORS_FILE,
    CheckpointError,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from agents.run.registry import UntrustedConfigError, check_trusted, register_target
from tests.test_config import compose_config

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "agent=qlearning_tabular",
    "num_envs=4",
    "agent.rollout_steps=4",
    "train.total_env_steps=64",
    "train.checkpoint_every=1",
    "train.progress=false",
    "env.evaluation.episodes=4",
    "env.evaluation.num_envs=2",
]


class Planted:
    """A pickle that, if ever unpickled, writes a marker file (the stand-in for os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "run"
    train.run(compose_config(TINY), run_dir)
    return run_dir


def payloads(tmp: Path) -> dict[str, tuple[str, dict]]:
    """name -> (key path it is planted at, the payload); each would write under ``tmp``."""
    pickled = tmp / "payload.pkl"
    pickled.write_bytes(pickle.dumps(Planted(tmp / "unpickled")))
    return {
        "torch.load": ("agent", {"_target_": "torch.load", "f": str(pickled), "weights_only": False}),
        "builtins.open": ("agent", {"_target_": "builtins.open", "file": str(tmp / "opened"), "mode": "w"}),
        "Path.write_text": ("agent", {"_target_": "pathlib.Path.write_text", "self": str(tmp / "written")}),
        "numpy.save": ("agent", {"_target_": "numpy.save", "file": str(tmp / "saved.npy"), "arr": [1]}),
        "shutil.copy": (
            "agent",
            {"_target_": "shutil.copy", "src": str(pickled), "dst": str(tmp / "copied")},
        ),
        "nested network": ("agent.network", {"_target_": "os.system", "command": f"touch {tmp / 'system'}"}),
        "env target": ("env.vector", {"_target_": "subprocess.run", "args": ["touch", str(tmp / "ran")]}),
        "gym module import": (
            "env.vector",
            {"_target_": "rlenv.gym_vector.make_vector_env", "id": "evil:Env"},
        ),
        "interpolation": ("agent", {"_target_": "agents.dqn.tabular.TabularQAgent", "x": "${oc.env:HOME}"}),
    }


def plant(run_dir: Path, target: Path, key: str, payload: dict) -> Path:
    """Copy the run to ``target`` with ``payload`` merged into the saved config at ``key``."""
    import shutil

    shutil.copytree(run_dir, target)
    checkpoint = resolve_checkpoint(target)
    meta = json.loads((checkpoint / META_FILE).read_text())
    for config in ("config", "config_unresolved"):  # resume reads the unresolved one
        node = meta[config]
        for part in key.split("."):
            node = node.setdefault(part, {})
        node.update(payload)
    meta["agent_config"] = meta["config"]["agent"]
    (checkpoint / META_FILE).write_text(json.dumps(meta))
    return target


def nothing_written(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name not in ("payload.pkl",) and not p.is_dir())


PAYLOADS = [
    "torch.load",
    "builtins.open",
    "Path.write_text",
    "numpy.save",
    "shutil.copy",
    "nested network",
    "env target",
    "gym module import",
    "interpolation",
]


@pytest.mark.parametrize("name", PAYLOADS)
def test_planted_payload_is_refused_by_load_agent_and_resume(saved_run, tmp_path, name):
    bait = tmp_path / "bait"
    bait.mkdir()
    assert sorted(payloads(bait)) == sorted(PAYLOADS)
    key, payload = payloads(bait)[name]
    run_dir = plant(saved_run, tmp_path / "planted", key, payload)
    if key.startswith("agent"):
        with pytest.raises(UntrustedConfigError, match=r"meta\.json"):
            agents.load_agent(run_dir)
    overrides = [f"resume={run_dir}"]
    with pytest.raises(
        UntrustedConfigError, match=r"meta\.json.*not a registered target|would import|interpolation"
    ):
        train.run(compose_config([*TINY, *overrides]), tmp_path / "resumed", overrides=overrides)
    assert nothing_written(bait) == []
    assert not (tmp_path / "resumed" / "checkpoints").exists()


def test_evaluate_entry_point_refuses_a_planted_payload(saved_run, tmp_path):
    bait = tmp_path / "bait"
    bait.mkdir()
    key, payload = payloads(bait)["torch.load"]
    run_dir = plant(saved_run, tmp_path / "planted", key, payload)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "agents.evaluate", f"run={run_dir}", "episodes=2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "not a registered target" in done.stderr and "meta.json" in done.stderr
    assert nothing_written(bait) == []


def test_user_override_and_registration_are_trusted():
    config = {"agent": {"_target_": "mypkg.MyAgent"}}
    with pytest.raises(UntrustedConfigError, match="agent._target_='mypkg.MyAgent'"):
        check_trusted(config, "meta.json")
    check_trusted(config, "meta.json", trusted=["agent._target_"])
    register_target("mypkg.MyAgent2")
    check_trusted({"agent": {"_target_": "mypkg.MyAgent2"}}, "meta.json")
    with pytest.raises(ValueError, match="dotted path"):
        register_target("not a path")


def _checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "ckpt", {"w": torch.ones(3), "n": 1}, {"agent_config": {}})


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        (TENSORS_FILE, None, "not a valid safetensors file"),  # truncated
        (TENSORS_FILE, b"garbage", "not a valid safetensors file"),
        (META_FILE, b"\xff\xfe not utf-8", "not UTF-8"),
        (META_FILE, b"{not json", "not valid JSON"),
        (META_FILE, b"[1, 2]", "must hold a JSON object"),
        (STATE_FILE, b"[" * 100_000, "nested too deeply|not valid JSON"),
        (STATE_FILE, b'{"__tensor__": "missing"}', "does not hold"),
        (STATE_FILE, b'{"__ndarray__": [1], "dtype": "object"}', "array dtype"),
        (STATE_FILE, b'{"surprise": 1}', "unrecognised entry"),
    ],
)
def test_damaged_checkpoint_files_give_an_error_naming_the_file(tmp_path, file, content, message):
    directory = _checkpoint(tmp_path)
    path = directory / file
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2] if content is None else content)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(directory)
    assert file in str(error.value)


def test_non_finite_weights_are_refused(tmp_path):
    directory = save_checkpoint(tmp_path / "c", {"agent": {"w": torch.tensor([1.0, float("nan")])}}, {})
    with pytest.raises(CheckpointError, match=r"non-finite.*agent\.w"):
        load_checkpoint(directory)
    state, _ = load_checkpoint(directory, allow_non_finite=True)
    assert torch.isnan(state["agent"]["w"][1])


def test_checkpoint_of_another_agent_is_a_clear_error(tmp_path):
    ppo = [*TINY[1:], "agent=ppo", "agent.rollout_steps=8"]
    train.run(compose_config(ppo), tmp_path / "ppo")
    meta_path = resolve_checkpoint(tmp_path / "ppo") / META_FILE
    meta = json.loads(meta_path.read_text())
    dqn = compose_config([*TINY[1:], "agent=qlearning"])
    from omegaconf import OmegaConf

    meta["agent_config"] = OmegaConf.to_container(dqn.agent, resolve=True)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not hold a DQNAgent"):
        agents.load_agent(tmp_path / "ppo")


def loads_or_names_the_file(directory: Path) -> None:
    """Loading gives a state and meta, or our error naming a file of the checkpoint; nothing else."""
    try:
        state, meta = load_checkpoint(directory)
    except CheckpointError as error:
        assert error.path.startswith(str(directory)) and error.problem
        assert Path(error.path).name in (TENSORS_FILE, STATE_FILE, META_FILE)
    else:
        assert isinstance(state, dict) and isinstance(meta, dict)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from([TENSORS_FILE, STATE_FILE, META_FILE]), data=st.binary(max_size=512))
def test_arbitrary_bytes_in_any_file_give_our_error(tmp_path, which, data):
    directory = tmp_path / "ckpt"
    if not directory.exists():
        _checkpoint(tmp_path)
    original = {name: (directory / name).read_bytes() for name in (TENSORS_FILE, STATE_FILE, META_FILE)}
    try:
        (directory / which).write_bytes(data)
        loads_or_names_the_file(directory)
    finally:
        for name, content in original.items():
            (directory / name).write_bytes(content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    structure=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["__tensor__", "__dict__", "__tuple__", "__ndarray__", "dtype", "x"]),
                children,
                max_size=3,
            )
        ),
        max_leaves=20,
    )
)
def test_arbitrary_state_structures_give_our_error(tmp_path, structure):
    directory = tmp_path / "ckpt"
    if not directory.exists():
        _checkpoint(tmp_path)
    original = (directory / STATE_FILE).read_bytes()
    try:
        (directory / STATE_FILE).write_text(json.dumps(structure))
        loads_or_names_the_file(directory)
    finally:
        (directory / STATE_FILE).write_bytes(original)


def test_every_target_the_shipped_configs_name_is_registered():
    import re

    from agents.run.registry import TARGETS

    conf = ROOT / "conf"
    named = {
        match.group(1)
        for path in conf.rglob("*.yaml")
        for match in re.finditer(r"_target_:\s*([\w.]+)", path.read_text())
    }
    assert named and named <= TARGETS, sorted(named - TARGETS)
