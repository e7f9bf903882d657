"""Checkpoints that load without executing code.

A checkpoint is a directory with three files:

- ``tensors.safetensors``: every tensor of the saved state (weights, optimizer moments,
  RNG states, replay buffers), under generated keys;
- ``state.json``: the structure of the state (nested dicts, lists, numbers, strings) with
  placeholders naming the tensors;
- ``meta.json``: what is needed to rebuild the agent (its config and the env spaces).

Nothing is unpickled on load, and loading never instantiates what a file names (see
:mod:`agents.run.registry`). Directories are written under a temporary name, flushed to disk
and moved into place with :func:`os.replace`, so a crash never leaves a half-written
checkpoint; ``latest`` and ``best`` (one-line text files) are replaced atomically. Damaged or
foreign files raise :class:`CheckpointError` naming the file and the problem.
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
BEST_FILE = "best"


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().to("cpu", copy=True).contiguous()  # no storage shared between keys
        return {"__tensor__": key}
    if isinstance(value, np.ndarray):
        if value.dtype.isnative and value.dtype.str.lstrip("<>=|") in _TENSOR_DTYPES:
            key = f"t{len(tensors)}"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(value)).clone()
            return {"__array__": key}
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


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


# numpy dtypes stored as tensors in the safetensors file (others go to state.json as lists)
_TENSOR_DTYPES = ("b1", "u1", "i1", "i2", "i4", "i8", "f2", "f4", "f8")
# dtypes an array in state.json may have (no object arrays)
_ARRAY_KINDS = "biuf"


def _decode(value: Any, tensors: dict[str, torch.Tensor], where: str = "state") -> Any:
    if isinstance(value, list):
        return [_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, dict):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ValueError(f"{where} holds a {type(value).__name__}")
    if set(value) == {"__tensor__"}:
        key = value["__tensor__"]
        if not isinstance(key, str) or key not in tensors:
            raise ValueError(f"{where} names tensor {key!r}, which {TENSORS_FILE} does not hold")
        return tensors[key]
    if set(value) == {"__array__"}:
        key = value["__array__"]
        if not isinstance(key, str) or key not in tensors:
            raise ValueError(f"{where} names tensor {key!r}, which {TENSORS_FILE} does not hold")
        return tensors[key].numpy().copy()
    if set(value) == {"__ndarray__", "dtype"}:
        dtype = np.dtype(value["dtype"]) if isinstance(value["dtype"], str) else None
        if dtype is None or dtype.kind not in _ARRAY_KINDS:
            raise ValueError(f"{where} has array dtype {value['dtype']!r}; valid: bool, integer, float")
        return np.asarray(value["__ndarray__"], dtype=dtype)
    if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
        return tuple(_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value["__tuple__"]))
    if set(value) == {"__dict__"} and isinstance(value["__dict__"], list):
        out: dict[Any, Any] = {}
        for entry in value["__dict__"]:
            if not (isinstance(entry, list) and len(entry) == 2):
                raise ValueError(f"{where} has a dict entry that is not a [key, value] pair: {entry!r:.80}")
            key, item = entry
            if not (key is None or isinstance(key, (bool, int, float, str))):
                raise ValueError(f"{where} has a dict key of type {type(key).__name__}")
            out[key] = _decode(item, tensors, f"{where}.{key}")
        return out
    raise ValueError(f"{where} is an unrecognised entry with keys {sorted(map(str, value))[:5]}")


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
    with open(path, "w", encoding="utf-8") as file:
        file.write(json.dumps(data, indent=1, allow_nan=True) + "\n")
        file.flush()
        os.fsync(file.fileno())


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (directories: the entries just renamed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``state`` (nested, with tensors) and ``meta`` (JSON-able) atomically to ``directory``.

    The files are written and flushed to disk in a temporary directory beside it, which is
    then renamed into place. Replacing an existing checkpoint moves the old one aside first
    (``.<name>.old-*``), so a crash at any instant leaves either the old or the new complete
    directory; :func:`recover_checkpoints` puts a moved-aside one back.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        tensors: dict[str, torch.Tensor] = {}
        structure = _encode(state, tensors)
        save_file(tensors, str(tmp / TENSORS_FILE))
        _fsync(tmp / TENSORS_FILE)
        _write_json(tmp / STATE_FILE, structure)
        _write_json(tmp / META_FILE, meta)
        _fsync(tmp)
        if directory.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
            os.replace(directory, old / directory.name)
            os.replace(tmp, directory)
            _fsync(directory.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
            _fsync(directory.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _check_pointer_name(name: str) -> bool:
    plain = "/" not in name and "\\" not in name and name.isprintable()
    return plain and name not in ("", ".", "..")


def write_pointer(checkpoints_dir: str | Path, pointer: str, name: str) -> None:
    """Point ``checkpoints_dir/<pointer>`` (``latest``, ``best``) at checkpoint ``name`` (atomic)."""
    if not _check_pointer_name(name):
        raise ValueError(f"checkpoint name must be a plain directory name, got {name!r}")
    checkpoints_dir = Path(checkpoints_dir)
    tmp = checkpoints_dir / f".{pointer}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(name + "\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, checkpoints_dir / pointer)
    _fsync(checkpoints_dir)


def write_latest(checkpoints_dir: str | Path, name: str) -> None:
    """Point ``checkpoints_dir/latest`` at checkpoint ``name`` (atomic replace)."""
    write_pointer(checkpoints_dir, LATEST_FILE, name)


def read_pointer(checkpoints_dir: Path, pointer: str) -> str | None:
    """The checkpoint name a pointer file holds, or ``None`` if it is missing or not a plain name."""
    try:
        name = (checkpoints_dir / pointer).read_bytes().decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _check_pointer_name(name) else None


def is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in (TENSORS_FILE, STATE_FILE, META_FILE))


def checkpoint_dirs(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints in ``checkpoints_dir``, oldest first (by name, then write time)."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if not p.name.startswith(".") and is_complete(p)]
    return sorted(found, key=lambda p: (p.name, (p / META_FILE).stat().st_mtime))


def _moved_aside(checkpoints_dir: Path, name: str) -> Path | None:
    for holder in sorted(checkpoints_dir.glob(f".{name}.old-*")):
        candidate = holder / name
        if candidate.is_dir() and is_complete(candidate):
            return candidate
    return None


def recover_checkpoints(checkpoints_dir: str | Path) -> list[str]:
    """Repair ``checkpoints_dir`` after a crash mid-write; returns what was done.

    A checkpoint moved aside by an interrupted replace is put back; temporary and
    moved-aside directories that nothing needs are removed; ``latest`` is re-pointed at the
    newest complete checkpoint if it named a missing one.
    """
    checkpoints_dir = Path(checkpoints_dir)
    done: list[str] = []
    if not checkpoints_dir.is_dir():
        return done
    for holder in sorted(checkpoints_dir.glob(".*.old-*")):
        name = holder.name[1:].rsplit(".old-", 1)[0]
        inner = holder / name
        if not (checkpoints_dir / name).exists() and inner.is_dir() and is_complete(inner):
            os.replace(inner, checkpoints_dir / name)
            done.append(f"restored {name} from {holder.name}")
        shutil.rmtree(holder, ignore_errors=True)
        done.append(f"removed {holder.name}")
    for leftover in sorted(checkpoints_dir.glob(".*.tmp-*")):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
        done.append(f"removed {leftover.name}")
    name = read_pointer(checkpoints_dir, LATEST_FILE)
    if name is None or not is_complete(checkpoints_dir / name):
        complete = checkpoint_dirs(checkpoints_dir)
        if complete:
            write_latest(checkpoints_dir, complete[-1].name)
            done.append(f"latest now names {complete[-1].name}")
    _fsync(checkpoints_dir)
    return done


def prune_checkpoints(checkpoints_dir: str | Path, keep: int | None) -> list[str]:
    """Delete all but the newest ``keep`` checkpoints and those ``latest`` and ``best`` name.

    ``keep=None`` keeps every checkpoint. Returns the names removed.
    """
    if keep is None:
        return []
    checkpoints_dir = Path(checkpoints_dir)
    complete = checkpoint_dirs(checkpoints_dir)
    protected = {read_pointer(checkpoints_dir, LATEST_FILE), read_pointer(checkpoints_dir, BEST_FILE)}
    kept = {p.name for p in complete[-keep:]} if keep > 0 else set()
    removed = []
    for path in complete:
        if path.name not in kept and path.name not in protected:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def resolve_checkpoint(path: str | Path) -> Path:
    """Find the checkpoint directory for a run directory, a checkpoints dir or a checkpoint.

    ``latest`` names the checkpoint; if it is missing, unreadable or names an incomplete
    directory (a crash mid-write), the newest complete checkpoint is used, including one
    an interrupted replace moved aside.

    Raises:
        FileNotFoundError: naming the path and what was looked for.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such run or checkpoint: {str(path)!r}")
    if (path / TENSORS_FILE).is_file():
        return path
    for candidate in (path / "checkpoints", path):
        if not candidate.is_dir():
            continue
        name = read_pointer(candidate, LATEST_FILE)
        if name is not None and is_complete(candidate / name):
            return candidate / name
        if name is not None:
            aside = _moved_aside(candidate, name)
            if aside is not None:
                return aside
        complete = checkpoint_dirs(candidate)
        if complete:
            return complete[-1]
    raise FileNotFoundError(
        f"no checkpoint in {str(path)!r}: expected a run directory with checkpoints/latest, "
        f"or a checkpoint directory holding {TENSORS_FILE}"
    )


def _read_json(path: Path) -> Any:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise CheckpointError(path, f"cannot be read ({error.strerror or error})") from None
    except UnicodeDecodeError as error:
        raise CheckpointError(path, f"is not UTF-8 text (byte {error.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(path, f"is not valid JSON ({error.msg} at line {error.lineno})") from None
    except RecursionError:
        raise CheckpointError(path, "is nested too deeply to be a checkpoint") from None


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(path, "is missing")
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types for damaged files
        problem = f"is not a valid safetensors file ({type(error).__name__}: {error})"
        raise CheckpointError(path, problem) from None


def non_finite_entries(value: Any, where: str = "state") -> list[str]:
    """Key paths of floating tensors or arrays in ``value`` holding NaN or infinity."""
    found: list[str] = []
    if isinstance(value, torch.Tensor):
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            found.append(f"{where} ({int((~torch.isfinite(value)).sum())} NaN/inf values)")
    elif isinstance(value, np.ndarray):
        if value.dtype.kind in "fc" and not bool(np.isfinite(value).all()):
            found.append(f"{where} ({int((~np.isfinite(value)).sum())} NaN/inf values)")
    elif isinstance(value, dict):
        for key, item in value.items():
            found.extend(non_finite_entries(item, f"{where}.{key}"))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found.extend(non_finite_entries(item, f"{where}[{index}]"))
    return found


def load_checkpoint(
    path: str | Path, allow_non_finite: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Load ``(state, meta)`` from a checkpoint (or a run directory's latest checkpoint).

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        CheckpointError: a damaged or foreign file (naming it and the problem), or tensors
            holding NaN or infinity (unless ``allow_non_finite``).
    """
    directory = resolve_checkpoint(path)
    tensors = _read_tensors(directory / TENSORS_FILE)
    structure = _read_json(directory / STATE_FILE)
    meta = _read_json(directory / META_FILE)
    if not isinstance(meta, dict):
        raise CheckpointError(directory / META_FILE, f"must hold a JSON object, got {type(meta).__name__}")
    try:
        state = _decode(structure, tensors)
    except RecursionError:
        raise CheckpointError(directory / STATE_FILE, "is nested too deeply to be a checkpoint") from None
    except (ValueError, TypeError, OverflowError) as error:
        raise CheckpointError(directory / STATE_FILE, str(error)) from None
    if not isinstance(state, dict):
        raise CheckpointError(directory / STATE_FILE, f"must describe a dict, got {type(state).__name__}")
    if not allow_non_finite:
        bad = non_finite_entries(state)
        if bad:
            listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise CheckpointError(directory / TENSORS_FILE, f"holds non-finite values, refused: {listed}")
    return state, meta
