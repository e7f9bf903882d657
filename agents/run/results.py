"""Reading a run directory's results: overrides, ``metrics.json``, TensorBoard scalars.

A run of ``agents.train`` (or ``agents.rlhf``) writes ``metrics.json`` only when it finishes;
a job directory of a Hydra sweep without one belongs to a run that failed, was stopped or
still runs, and :func:`unfinished_reason` says what its directory tells about it. Nothing here
raises for a damaged file: :func:`load_job` turns every problem into the job's ``reason``.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

METRICS_FILE = "metrics.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
EVENTS_MARKER = "tfevents"
LOG_TAIL_LINES = 8

Scalars = dict[str, tuple[np.ndarray, np.ndarray]]  # tag -> (steps (T,) int64, values (T,) float64)


class JobError(Exception):
    """A job's results cannot be read; the message is the reason reported for it."""


@dataclass
class Job:
    """One job directory: its overrides, final metrics and TensorBoard scalars.

    ``reason`` is ``None`` for a finished job, else why it is left out of the statistics.
    """

    directory: Path
    name: str
    overrides: list[str] | None
    metrics: dict[str, float] = field(default_factory=dict)
    scalars: Scalars = field(default_factory=dict)
    reason: str | None = None


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts job ``2_...`` before ``10_...``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_job_dirs(root: Path) -> list[Path]:
    """Every directory under ``root`` (itself included) with ``metrics.json``, TensorBoard events or
    ``.hydra/overrides.yaml``, in job-number order. A job's own subdirectories are not searched."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        path = Path(directory)
        is_job = METRICS_FILE in files or any(EVENTS_MARKER in name for name in files)
        if is_job or (path / OVERRIDES_FILE).is_file():
            found.append(path)
            subdirs[:] = []
        else:
            subdirs[:] = [name for name in subdirs if name != ".hydra"]
    return sorted(found, key=lambda path: _natural_key(path.relative_to(root)))


def read_overrides(directory: Path) -> list[str] | None:
    """The job's command-line overrides from ``.hydra/overrides.yaml``; ``None`` outside Hydra."""
    path = directory / OVERRIDES_FILE
    if not path.is_file():
        return None
    try:
        overrides = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise JobError(f"{OVERRIDES_FILE} cannot be read: {error}") from None
    if overrides is None:
        return []
    if not isinstance(overrides, list) or not all(isinstance(item, str) for item in overrides):
        raise JobError(f"{OVERRIDES_FILE}: expected a list of key=value strings, got {overrides!r}")
    return overrides


def read_metrics(directory: Path) -> dict[str, float]:
    """The numeric entries of the job's ``metrics.json``; :class:`JobError` if it is missing or damaged."""
    path = directory / METRICS_FILE
    if not path.is_file():
        raise JobError(unfinished_reason(directory))
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise JobError(f"{METRICS_FILE} is damaged: {error}") from None
    if not isinstance(metrics, dict):
        raise JobError(
            f"{METRICS_FILE}: expected a JSON object of metric name -> number, got {metrics!r:.80}"
        )
    return {
        str(key): float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def unfinished_reason(directory: Path) -> str:
    """Why a job has no ``metrics.json``, as far as its directory tells: latest checkpoint and log tail."""
    parts = [f"no {METRICS_FILE} (the run failed, was stopped or is still running)"]
    latest = directory / "checkpoints" / "latest"
    if latest.is_file():
        parts.append(f"latest checkpoint: {latest.read_text(encoding='utf-8', errors='replace').strip()}")
    logs = sorted(directory.glob("*.log"), key=lambda path: path.stat().st_mtime)
    if not logs:
        parts.append("no log file (*.log) in the job directory")
        return "; ".join(parts)
    with logs[-1].open("rb") as file:
        file.seek(max(0, logs[-1].stat().st_size - 65536))
        text = file.read().decode("utf-8", errors="replace")
    tail = [line.rstrip()[:300] for line in text.splitlines() if line.strip()][-LOG_TAIL_LINES:]
    if tail:
        parts.append(f"last lines of {logs[-1].name}:\n" + "\n".join(tail))
    else:
        parts.append(
            f"{logs[-1].name} is empty (Hydra prints a job's exception in the sweep command's output)"
        )
    return "; ".join(parts)


def check_event_file(path: Path) -> None:
    """Raise :class:`JobError` unless ``path`` is a sequence of whole TFRecord records.

    Each record is ``length (uint64) | masked CRC-32C of length | data | masked CRC-32C of data``;
    the length checksums are verified (this finds truncated, zero-filled and foreign files
    without reading the data twice). TensorBoard's reader checks the data checksums and stops
    at the first bad one.
    """
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data = path.read_bytes()
    offset = 0
    while offset < len(data):
        header = data[offset : offset + 12]
        if len(header) < 12:
            raise JobError(f"{path.name} is damaged: truncated record at byte {offset} of {len(data)}")
        (length,) = struct.unpack("<Q", header[:8])
        (checksum,) = struct.unpack("<I", header[8:])
        if masked_crc32c(header[:8]) != checksum:
            raise JobError(f"{path.name} is damaged: bad record header at byte {offset} of {len(data)}")
        offset += 12 + length + 4
        if offset > len(data):
            raise JobError(f"{path.name} is damaged: truncated record ending at byte {offset} of {len(data)}")


def read_scalars(directory: Path) -> Scalars:
    """Every scalar tag in the job's TensorBoard event files, sorted by step (the last value kept
    where a resumed run logged a step again)."""
    event_files = sorted(
        path for path in directory.iterdir() if EVENTS_MARKER in path.name and path.is_file()
    )
    if not event_files:
        return {}
    for path in event_files:
        check_event_file(path)
    from tensorboard.backend.event_processing import event_accumulator

    try:
        accumulator = event_accumulator.EventAccumulator(
            str(directory), size_guidance={event_accumulator.SCALARS: 0}
        )
        accumulator.Reload()
        scalars: Scalars = {}
        for tag in accumulator.Tags()["scalars"]:
            events = accumulator.Scalars(tag)
            steps = np.array([event.step for event in events], dtype=np.int64)
            values = np.array([event.value for event in events], dtype=np.float64)
            order = np.argsort(steps, kind="stable")
            steps, values = steps[order], values[order]
            last = np.append(steps[1:] != steps[:-1], True)
            scalars[tag] = (steps[last], values[last])
    except Exception as error:  # TensorBoard raises its own error types for unreadable files
        raise JobError(f"TensorBoard events cannot be read: {type(error).__name__}: {error}") from None
    return scalars


def load_job(directory: Path, root: Path) -> Job:
    """A :class:`Job`; any problem with its files becomes its ``reason``, never an exception."""
    name = directory.relative_to(root).as_posix() if directory != root else directory.name
    job = Job(directory=directory, name=name, overrides=None)
    try:
        job.overrides = read_overrides(directory)
        job.metrics = read_metrics(directory)
        job.scalars = read_scalars(directory)
    except (JobError, OSError) as error:
        job.reason = str(error)
    return job


def split_override(override: str) -> tuple[str, str]:
    """``(key, value)`` of a Hydra override, its ``+``/``++``/``~`` prefix dropped."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _yaml_file(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _select(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def job_value(job: Job, key: str) -> str | None:
    """``key``'s value for a job: its override, else Hydra's config-group choice (``agent``), else the
    value in the job's composed config (``agent.lr``); ``None`` when none of them has it."""
    for override in job.overrides or []:
        name, value = split_override(override)
        if name == key:
            return value
    choice = _select(_yaml_file(job.directory / ".hydra" / "hydra.yaml"), "hydra.runtime.choices")
    if isinstance(choice, dict) and choice.get(key) is not None:
        return str(choice[key])
    for config in (job.directory / ".hydra" / "config.yaml", job.directory / "config.yaml"):
        value = _select(_yaml_file(config), key)
        if value is not None:
            return str(value)
    return None
