"""The loggers: the only place that writes metrics to disk.

Agents and loops return metric dicts; a :class:`TensorBoardLogger` turns them into event
files under the run directory (scalars, text, hparams), a :class:`CSVLogger` into plain
files any tool reads, a :class:`WandbLogger` into a Weights & Biases run (offline by default).
:class:`NullLogger` discards them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter


class NullLogger:
    """Keeps nothing; use with ``logger=none``."""

    def __init__(self, log_dir: str | Path | None = None) -> None:
        self.log_dir = log_dir

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def text(self, tag: str, text: str, step: int = 0) -> None:
        pass

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        pass

    def flush(self) -> None:
        """Write what was logged to disk (done at every checkpoint)."""

    def close(self) -> None:
        pass


CONSTANT_COUNTS = ("perf/env_steps", "perf/torch_threads")
"""Metrics that are counts fixed by the config (the last part ``episodes`` of an ``eval/`` key too):
kept in ``metrics.json`` and plain files, not charted."""


def is_constant_count(key: str) -> bool:
    return key in CONSTANT_COUNTS or (key.startswith("eval/") and key.endswith("/episodes"))


SESSION_START, SESSION_END = "_hparams_/session_start_info", "_hparams_/session_end_info"  # HParams tags

KL_LAYOUT = {"KL": {"KL per completion and its target": ["Multiline", ["charts/kl", "charts/kl_target"]]}}
"""The Custom Scalars chart that shows the measured KL beside the controller's target."""


class TensorBoardLogger(NullLogger):
    """Writes scalars, text and hparams to TensorBoard event files in ``log_dir``.

    Scalars that are constant counts (:func:`is_constant_count`) are not charted. The HParams
    session (hyper-parameters, booleans as booleans, and the final metrics) goes to the
    ``hparams`` sub-run, so that every kind of run (Tic-Tac-Toe, text, RLHF) shows its own
    final metrics as columns while its curves stay in the run itself.
    """

    def __init__(self, log_dir: str | Path, flush_secs: int = 10) -> None:
        super().__init__(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), flush_secs=flush_secs)
        self.writer.add_custom_scalars(KL_LAYOUT)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value) and not is_constant_count(key):
                self.writer.add_scalar(key, value, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """Register this run in the HParams tab: flat ``hparams`` against final ``metrics``.

        Written as a session in the ``hparams`` sub-run with the metrics as its only scalars;
        no experiment summary is written, so TensorBoard lists the union of every run's
        hyper-parameters and metrics (one experiment summary would hide other kinds of runs'
        metric columns).
        """
        from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

        start = plugin_data_pb2.SessionStartInfo(start_time_secs=time.time())
        for key, value in hparams.items():
            value = _hparam_value(value)
            if isinstance(value, bool):  # before numbers: a bool is an int to Python
                start.hparams[key].bool_value = value
            elif isinstance(value, (int, float)):
                start.hparams[key].number_value = float(value)
            else:
                start.hparams[key].string_value = value
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time())
        with SummaryWriter(log_dir=str(Path(self.log_dir) / "hparams")) as writer:
            file_writer = writer._get_file_writer()
            file_writer.add_summary(_hparams_summary(SESSION_START, session_start_info=start))
            for key, value in metrics.items():
                if math.isfinite(float(value)) and not is_constant_count(key):
                    writer.add_scalar(key, float(value), 0)
            file_writer.add_summary(_hparams_summary(SESSION_END, session_end_info=end))

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _hparams_summary(tag: str, **info: Any) -> Any:
    """A summary carrying one HParams plugin record (session start or end)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import metadata, plugin_data_pb2

    data = plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, **info)
    return Summary(value=[Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data))])


class CSVLogger(NullLogger):
    """Plain files in ``log_dir`` (``logger=csv``).

    - ``scalars.csv``: one row per scalar, ``step,tag,value,wall_time`` (long format, so
      metrics that appear later need no new column); appended to, so a resumed run continues
      the same file.
    - ``text.jsonl``: one JSON object per text entry, ``{"step", "tag", "text"}``.
    - ``hparams.json``: the flat hyper-parameters and final metrics (replaced atomically).
    """

    FIELDS = ("step", "tag", "value", "wall_time")

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__(log_dir)
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "scalars.csv"
        new = not path.exists() or path.stat().st_size == 0
        self._scalars = path.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._scalars)
        if new:
            self._writer.writerow(self.FIELDS)
        self._text = (self.dir / "text.jsonl").open("a", encoding="utf-8")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        now = time.time()
        for key, value in metrics.items():
            value = float(value)
            if math.isfinite(value):
                self._writer.writerow((int(step), key, repr(value), f"{now:.3f}"))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self._text.write(json.dumps({"step": int(step), "tag": tag, "text": text}) + "\n")

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        record = {
            "hparams": {k: _hparam_value(v) for k, v in hparams.items()},
            "metrics": {k: float(v) for k, v in metrics.items()},
        }
        path = self.dir / "hparams.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def flush(self) -> None:
        for stream in (self._scalars, self._text):
            stream.flush()
            os.fsync(stream.fileno())

    def close(self) -> None:
        if not self._scalars.closed:
            self.flush()
            self._scalars.close()
            self._text.close()


class WandbLogger(NullLogger):
    """Weights & Biases (``logger=wandb``; needs ``pip install 'rlenv[wandb]'``).

    Scalars go to the run's history at the env step, text entries to one-column tables, the
    flat hyper-parameters to the run config and the final metrics to its summary. The default
    ``mode="offline"`` needs no network or account: the run is written under
    ``<log_dir>/wandb/`` and ``wandb sync <that dir>`` uploads it later; ``mode="online"``
    streams it (after ``wandb login``), ``mode="disabled"`` keeps nothing.
    """

    def __init__(
        self,
        log_dir: str | Path,
        project: str = "rlenv",
        mode: str = "offline",
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        entity: str | None = None,
    ) -> None:
        super().__init__(log_dir)
        modes = ("offline", "online", "disabled")
        if mode not in modes:
            raise ValueError(f"logger.mode={mode!r} is not a W&B mode (valid: {', '.join(modes)})")
        try:
            import wandb
        except ImportError:
            raise ImportError("logger=wandb needs the wandb package: pip install 'rlenv[wandb]'") from None
        self._wandb = wandb
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            dir=str(log_dir),
            project=project,
            mode=mode,
            name=name,
            group=group,
            tags=list(tags or []),
            entity=entity,
            settings=wandb.Settings(silent=True, console="off"),
        )

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        values = {
            k: float(v) for k, v in metrics.items() if math.isfinite(float(v)) and not is_constant_count(k)
        }
        if values:
            self.run.log(values, step=int(step))

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.run.log({tag: self._wandb.Table(columns=["text"], data=[[text]])}, step=int(step))

    def hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self.run.config.update({k: _hparam_value(v) for k, v in hparams.items()}, allow_val_change=True)
        self.run.summary.update({k: float(v) for k, v in metrics.items()})

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


PLUMBING = (
    "device",
    "resume",
    "objective",
    "logger",
    "hydra",
    "train.progress",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.samples_every",
    "train.num_samples",
    "train.torch_threads",
    "env.evaluation",
)
"""Config keys (and what lies below them) that say how a run is run, not what is learnt."""


def hyperparameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """The flat hyper-parameters of a resolved config, for the HParams tab.

    Instantiation keys (``_target_``, ``_partial_``, any key starting with ``_``) and what
    lies below them are plumbing, not choices, and are left out, as are the keys of
    :data:`PLUMBING` (any ``device`` too); numbers, strings and booleans keep their types,
    None and lists become strings.
    """
    flat = flatten(config)
    return {
        key: _hparam_value(value)
        for key, value in flat.items()
        if not any(part.startswith("_") for part in key.split(".")) and not _is_plumbing(key)
    }


def _is_plumbing(key: str) -> bool:
    if key.split(".")[-1] == "device":
        return True
    return any(key == p or key.startswith(p + ".") for p in PLUMBING)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"agent": {"lr": 1e-3}}`` -> ``{"agent.lr": 1e-3}`` (lists kept as values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
