"""Summarise a sweep over seeds: ``python -m agents.summarize <sweep dir>`` (or ``rlenv-summarize``).

A Hydra multirun (``python -m agents.train -m agent=ppo,qlearning seed=0,1,2``) leaves one job
directory per run under ``hydra.sweep.dir``. This command finds them, groups them into
configurations (a job's overrides with ``seed=`` removed, or the keys named by ``--group-by``)
and prints, per metric of the jobs' ``metrics.json``, one row per configuration: the number of
seeds, mean, sample standard deviation, interquartile mean and a bootstrap 95% confidence
interval of the mean (:mod:`agents.stats` defines them). It reads the TensorBoard scalars for
learning curves (``--curve``, default ``charts/episode_return``) and with ``--png`` plots them:
mean over seeds with a shaded 95% interval. What it prints is also written, with every seed's
value and the curves, to ``summary.json`` in the sweep directory.

Jobs without a readable ``metrics.json`` (a run that failed, was stopped or still runs) or with
a damaged event file are listed with the reason found (for a missing ``metrics.json``: the
latest checkpoint and the last lines of the job's log) and left out of the statistics.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from agents.run.results import (
    METRICS_FILE,
    OVERRIDES_FILE,
    Job,
    find_job_dirs,
    job_value,
    load_job,
    split_override,
)
from agents.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, Stats, bootstrap_ci, describe

SUMMARY_FILE = "summary.json"
SEED_KEY = "seed"
DEFAULT_CURVE = "charts/episode_return"
CURVE_POINTS = 200  # points of the common step grid a configuration's curves are interpolated onto
MATPLOTLIB_HINT = "pip install matplotlib (or pip install 'rlenv[sweep]')"


class SummaryError(ValueError):
    """The sweep cannot be summarised as asked: no such directory, no job, an unknown metric or tag."""


class CurveBand(NamedTuple):
    """A configuration's learning curve on a common step grid; every array has shape (T,)."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: int


@dataclass
class Configuration:
    """The finished jobs that share a configuration, and their statistics per metric."""

    name: str
    overrides: list[str]
    jobs: list[Job]
    seeds: list[Any]
    values: dict[str, list[float]]
    stats: dict[str, Stats]
    curve: CurveBand | None = None


@dataclass
class Summary:
    """A summarised sweep: ``jobs`` job directories found, the finished ones grouped into
    ``configurations``, the others in ``failed`` (each with its ``reason``)."""

    root: Path
    metrics: list[str]
    group_by: list[str]
    curve_tag: str | None
    configurations: list[Configuration]
    failed: list[Job]
    jobs: int
    common: list[str] = field(default_factory=list)  # overrides every configuration has, left out of names


# ---- configurations ------------------------------------------------------------------------------


def configuration_of(job: Job, group_by: Sequence[str]) -> list[str]:
    """The ``key=value`` strings that name a job's configuration (sorted overrides less ``seed=``)."""
    if group_by:
        return [f"{key}={job_value(job, key) or '?'}" for key in group_by]
    if job.overrides is None:
        return [f"dir={job.name}"]  # outside Hydra: nothing says which jobs are seeds of one another
    return sorted(override for override in job.overrides if split_override(override)[0] != SEED_KEY)


def _seed(job: Job) -> Any:
    value = job_value(job, SEED_KEY)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value


def curve_band(curves: list[tuple[np.ndarray, np.ndarray]], points: int = CURVE_POINTS) -> CurveBand | None:
    """Mean and bootstrap 95% interval over seeds of curves logged at different steps.

    Each curve (steps (T_i,), values (T_i,)) is linearly interpolated onto a grid of at most
    ``points`` steps spanning the range every seed covers, so the mean is never over a changing
    set of seeds. ``None`` when the seeds' step ranges do not overlap.
    """
    start = max(int(steps[0]) for steps, _ in curves)
    stop = min(int(steps[-1]) for steps, _ in curves)
    if stop < start:
        return None
    count = min(points, max(len(steps) for steps, _ in curves))
    grid = np.unique(np.linspace(start, stop, num=max(count, 1)))
    matrix = np.stack([np.interp(grid, steps, values) for steps, values in curves])  # (seeds, T)
    low, high = bootstrap_ci(matrix)
    return CurveBand(grid, matrix.mean(axis=0), np.asarray(low), np.asarray(high), len(curves))


def build_configuration(
    overrides: list[str], jobs: list[Job], metrics: list[str], tag: str | None, shown: list[str] | None = None
) -> Configuration:
    """Statistics of ``jobs`` (the seeds of one configuration) for each of ``metrics``, and their
    ``tag`` learning curve; the configuration is named by ``shown`` (default: all ``overrides``)."""
    values = {
        key: [job.metrics[key] for job in jobs if key in job.metrics and math.isfinite(job.metrics[key])]
        for key in metrics
    }
    stats = {key: describe(sample) for key, sample in values.items() if sample}
    curves = [job.scalars[tag] for job in jobs if tag is not None and tag in job.scalars]
    return Configuration(
        name=" ".join(overrides if shown is None else shown) or "(no overrides)",
        overrides=overrides,
        jobs=jobs,
        seeds=[_seed(job) for job in jobs],
        values=values,
        stats=stats,
        curve=curve_band(curves) if curves else None,
    )


def _choose_metrics(finished: list[Job], extra: Sequence[str]) -> list[str]:
    available = sorted({key for job in finished for key in job.metrics})
    unknown = [key for key in extra if key not in available]
    if finished and unknown:
        raise SummaryError(
            f"--metric {unknown[0]!r} is in no finished job's {METRICS_FILE} "
            f"(available: {', '.join(available)})"
        )
    chosen = [key for key in available if key.startswith("eval/")]
    return chosen + [key for key in extra if key not in chosen]


def _choose_curve(finished: list[Job], curve: str | None, required: bool) -> str | None:
    tags = sorted({tag for job in finished for tag in job.scalars})
    tag = curve if curve is not None else (DEFAULT_CURVE if DEFAULT_CURVE in tags else None)
    if (tag is None and required) or (tag is not None and tag not in tags and finished):
        shown = ", ".join(tags[:30]) + (" ..." if len(tags) > 30 else "") if tags else "none"
        raise SummaryError(
            f"no finished job logged the TensorBoard scalar {tag or DEFAULT_CURVE!r}; "
            f"name one with --curve TAG (scalars logged: {shown})"
        )
    return tag


def summarize(
    sweep_dir: str | Path,
    metrics: Sequence[str] = (),
    curve: str | None = None,
    group_by: Sequence[str] = (),
    require_curve: bool = False,
) -> Summary:
    """Read every job under ``sweep_dir`` and compute the statistics per configuration and metric.

    Args:
        sweep_dir: a Hydra sweep directory (``hydra.sweep.dir``) or any directory above job dirs.
        metrics: metric keys to report besides every ``eval/`` key of the jobs' ``metrics.json``.
        curve: the TensorBoard scalar tag of the learning curves (default ``charts/episode_return``
            when logged).
        group_by: keys that name a configuration instead of the overrides less ``seed=``.
        require_curve: raise :class:`SummaryError` when there is no curve to plot.
    """
    root = Path(sweep_dir)
    expected = "a sweep directory (hydra.sweep.dir, e.g. multirun/<date>/<time>) holding job directories"
    if not root.exists():
        raise SummaryError(f"sweep dir {root} does not exist; expected {expected}")
    if not root.is_dir():
        raise SummaryError(f"sweep dir {root} is not a directory; expected {expected}")
    directories = find_job_dirs(root)
    if not directories:
        raise SummaryError(
            f"no job directory under {root}: expected {expected}, each with {METRICS_FILE}, "
            f"events.out.tfevents.* or {OVERRIDES_FILE.as_posix()}"
        )
    jobs = [load_job(directory, root) for directory in directories]
    finished = [job for job in jobs if job.reason is None]
    keys = _choose_metrics(finished, metrics)
    tag = _choose_curve(finished, curve, require_curve)
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in finished:
        groups.setdefault(tuple(configuration_of(job, group_by)), []).append(job)
    shared = set.intersection(*(set(name) for name in groups)) if len(groups) > 1 else set()
    configurations = [
        build_configuration(
            list(name), members, keys, tag, shown=[part for part in name if part not in shared]
        )
        for name, members in groups.items()
    ]
    failed = [job for job in jobs if job.reason is not None]
    common = sorted(shared)
    return Summary(root, keys, list(group_by), tag, configurations, failed, len(jobs), common)


# ---- output --------------------------------------------------------------------------------------


def _number(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned first column, right-aligned others."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]


def format_summary(summary: Summary) -> str:
    """The printed report: one table per metric, the curve at its last common step, failed jobs."""
    lines = [
        f"{summary.root}: {summary.jobs} job(s), {summary.jobs - len(summary.failed)} finished, "
        f"{len(summary.configurations)} configuration(s)"
    ]
    if summary.common:
        lines.append(f"every configuration has: {' '.join(summary.common)}")
    header = ["configuration", "seeds", "mean", "std", "IQM", "95% CI of mean"]
    for key in summary.metrics:
        rows = [
            [
                c.name,
                str(s.n),
                _number(s.mean),
                _number(s.std),
                _number(s.iqm),
                f"[{_number(s.ci_low)}, {_number(s.ci_high)}]",
            ]
            for c in summary.configurations
            if (s := c.stats.get(key)) is not None
        ]
        if rows:
            lines += ["", key, *_table(header, rows)]
    bands = [(c.name, c.curve) for c in summary.configurations if c.curve is not None]
    if bands:
        rows = [
            [
                name,
                str(band.seeds),
                str(int(band.steps[-1])),
                _number(float(band.mean[-1])),
                f"[{_number(float(band.low[-1]))}, {_number(float(band.high[-1]))}]",
            ]
            for name, band in bands
        ]
        lines += ["", f"{summary.curve_tag} (TensorBoard) at the last step all seeds reached"]
        lines += _table(["configuration", "seeds", "step", "mean", "95% CI of mean"], rows)
    if summary.failed:
        lines += ["", f"failed or incomplete jobs, left out of the statistics: {len(summary.failed)}"]
        for job in summary.failed:
            lines.append(f"  {job.name}")
            lines += [f"    {line}" for line in (job.reason or "").splitlines()]
    return "\n".join(lines)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def summary_to_json(summary: Summary) -> dict[str, Any]:
    """The machine-readable summary (``summary.json``); undefined statistics are ``null``."""
    configurations = []
    for c in summary.configurations:
        stats = {
            key: {name: (_finite(value) if name != "n" else value) for name, value in s._asdict().items()}
            | {"values": c.values[key]}
            for key, s in c.stats.items()
        }
        entry: dict[str, Any] = {
            "name": c.name,
            "overrides": c.overrides,
            "jobs": [job.name for job in c.jobs],
            "seeds": c.seeds,
            "metrics": stats,
        }
        if c.curve is not None:
            entry["curve"] = {
                "seeds": c.curve.seeds,
                **{name: getattr(c.curve, name).tolist() for name in ("steps", "mean", "low", "high")},
            }
        configurations.append(entry)
    return {
        "sweep_dir": str(summary.root),
        "jobs": summary.jobs,
        "group_by": summary.group_by or None,
        "common_overrides": summary.common,
        "statistics": {
            "std": "sample standard deviation over seeds (ddof=1)",
            "iqm": "mean of the middle 50% of seeds, values at the quartiles weighted fractionally",
            "ci": f"percentile bootstrap of the mean, {CONFIDENCE:.0%}, {BOOTSTRAP_RESAMPLES} resamples, "
            f"seed {BOOTSTRAP_SEED}",
        },
        "metrics": summary.metrics,
        "curve_tag": summary.curve_tag,
        "configurations": configurations,
        "failed": [
            {"dir": job.name, "overrides": job.overrides, "reason": job.reason} for job in summary.failed
        ],
    }


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(temp_path)``, then move the temporary file (same directory) onto ``path``."""
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        write(Path(temp))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_summary(summary: Summary, path: Path | None = None) -> Path:
    """Write ``summary.json`` (default: into the sweep directory) atomically; returns its path."""
    path = path or summary.root / SUMMARY_FILE
    text = json.dumps(summary_to_json(summary), indent=2, allow_nan=False) + "\n"
    _atomic_write(path, lambda temp: temp.write_text(text, encoding="utf-8"))
    return path


def plot_curves(summary: Summary, path: str | Path) -> Path:
    """Write a PNG of the learning curves: per configuration the mean over seeds against the step,
    shaded between the bootstrap 95% bounds. Needs matplotlib (Agg backend, no display)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise RuntimeError(
            f"writing a PNG needs matplotlib, which is not installed: {MATPLOTLIB_HINT}"
        ) from None
    path = Path(path)
    figure = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for c in summary.configurations:
        if c.curve is not None:
            marker = "o" if len(c.curve.steps) < 20 else None  # a curve of one point shows as a dot
            label = f"{c.name} (n={c.curve.seeds})"
            (line,) = axes.plot(c.curve.steps, c.curve.mean, marker=marker, markersize=3, label=label)
            axes.fill_between(c.curve.steps, c.curve.low, c.curve.high, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("step")
    axes.set_ylabel(summary.curve_tag or "")
    axes.set_title(f"{summary.curve_tag}: mean over seeds, 95% bootstrap interval", fontsize=10)
    axes.grid(alpha=0.3)
    if axes.lines:
        axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda temp: figure.savefig(temp, format="png"))
    return path


# ---- command line --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    program = Path(sys.argv[0]).name
    parser = argparse.ArgumentParser(
        prog="python -m agents.summarize" if program.endswith(".py") else program,
        description="Summarise a Hydra sweep over seeds: per configuration and metric the number of seeds, "
        "mean, std, IQM and a bootstrap 95% CI of the mean; learning curves from TensorBoard; "
        f"writes {SUMMARY_FILE} into the sweep directory.",
    )
    parser.add_argument(
        "sweep_dir", type=Path, help="the sweep directory (hydra.sweep.dir), e.g. multirun/<date>/<time>"
    )
    parser.add_argument(
        "--metric",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY",
        help="metrics.json keys to report besides every eval/ key (e.g. perf/env_steps)",
    )
    parser.add_argument(
        "--curve",
        metavar="TAG",
        help=f"TensorBoard scalar of the learning curves (default {DEFAULT_CURVE} if logged)",
    )
    parser.add_argument(
        "--png", type=Path, metavar="PATH", help="write the learning curves to this PNG (needs matplotlib)"
    )
    parser.add_argument(
        "--group-by",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY",
        help="keys that name a configuration (an override, a config group such as agent, or a config key "
        "such as agent.lr) instead of all overrides but seed",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (``argv`` defaults to ``sys.argv[1:]``; see :func:`build_parser`).

    Returns 0 on success and 1 when the output cannot be written; bad input (a missing directory,
    no job, an unknown metric or tag) exits with status 2 and the reason.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.png is not None and importlib.util.find_spec("matplotlib") is None:
        print(f"error: --png needs matplotlib, which is not installed: {MATPLOTLIB_HINT}", file=sys.stderr)
        return 1
    try:
        summary = summarize(
            args.sweep_dir,
            args.metric,
            curve=args.curve,
            group_by=args.group_by,
            require_curve=args.png is not None,
        )
    except SummaryError as error:
        parser.error(str(error))
    print(format_summary(summary))
    try:
        print(f"\nwrote {write_summary(summary)}")
        if args.png is not None:
            print(f"wrote {plot_curves(summary, args.png)}")
    except OSError as error:
        print(f"error: cannot write the summary: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
