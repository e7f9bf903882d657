"""Checkpoints that load without executing code.

A checkpoint is a directory with three files:

- ``tensors.safetensors``: every tensor of the saved state (weights, optimizer moments,
  RNG states, replay buffers), under generated keys;
- ``state.json``: the structure of the state (nested dicts, lists, numbers, strings) with
  placeholders naming the tensors;
- ``meta.json``: what is needed to rebuild the agent (its config and the env spaces).

Nothing is unpickled on load. Directories are written under a temporary name and moved
into place with :func:`os.replace`, so a crash never leaves a half-written checkpoint, and
``latest`` (a one-line text file) is replaced atomically to point at the newest one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

TENSORS_FILE = "tensors.safetensors"
STATE_FILE = "state.json"
META_FILE = "meta.json"
LATEST_FILE = "latest"


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, dict):
        return {"__dict__": [[_encode_key(k), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_encode(v, tensors) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"cannot checkpoint a value of type {type(value).__name__}: state must hold only "
        "tensors, arrays, numbers, strings, None, lists, tuples and dicts"
    )


def _encode_key(key: Any) -> Any:
    if isinstance(key, (bool, int, float, str)) or key is None:
        return key
    raise TypeError(f"cannot checkpoint a dict key of type {type(key).__name__}: {key!r}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=value["dtype"])
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v, tensors) for k, v in value["__dict__"]}
    raise ValueError(f"unrecognised entry in checkpoint state: keys {sorted(value)}")


def rng_state() -> dict[str, Any]:
    """The state of every global random generator the project draws from."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_rng_state(),
        "python": _python_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def _numpy_rng_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")


def save_checkpoint(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` (nested, with tensors) and ``meta`` (JSON-able) atomically to ``directory``."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        tensors: dict[str, torch.Tensor] = {}
        structure = _encode(state, tensors)
        save_file(tensors, str(tmp / TENSORS_FILE))
        _write_json(tmp / STATE_FILE, structure)
        _write_json(tmp / META_FILE, meta)
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def write_latest(checkpoints_dir: str | Path, name: str) -> None:
    """Point ``checkpoints_dir/latest`` at checkpoint ``name`` (atomic replace)."""
    checkpoints_dir = Path(checkpoints_dir)
    tmp = checkpoints_dir / f".{LATEST_FILE}.tmp"
    tmp.write_text(name + "\n")
    os.replace(tmp, checkpoints_dir / LATEST_FILE)


def resolve_checkpoint(path: str | Path) -> Path:
    """Find the checkpoint directory for a run directory, a checkpoints dir or a checkpoint.

    Raises:
        FileNotFoundError: naming the path and what was looked for.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run or checkpoint: {str(path)!r}")
    if (path / TENSORS_FILE).is_file():
        return path
    for candidate in (path / "checkpoints", path):
        latest = candidate / LATEST_FILE
        if latest.is_file():
            target = candidate / latest.read_text().strip()
            if (target / TENSORS_FILE).is_file():
                return target
    raise FileNotFoundError(
        f"no checkpoint in {str(path)!r}: expected a run directory with checkpoints/latest, "
        f"or a checkpoint directory holding {TENSORS_FILE}"
    )


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``(state, meta)`` from a checkpoint (or a run directory's latest checkpoint)."""
    directory = resolve_checkpoint(path)
    tensors = load_file(str(directory / TENSORS_FILE))
    state = _decode(json.loads((directory / STATE_FILE).read_text()), tensors)
    meta = json.loads((directory / META_FILE).read_text())
    return state, meta
