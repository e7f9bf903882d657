"""Sweep summaries: the statistics over seeds, grouping, failed jobs, summary.json and the CLI."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from agents import summarize as summary_cli
from agents.run.results import JobError, check_event_file, find_job_dirs
from agents.stats import bootstrap_ci, describe, interquartile_mean, sample_std
from agents.summarize import SummaryError, curve_band, main, summarize

WIN_RATES = {"ppo": [0.1, 0.2, 0.9], "qlearning": [0.5, 0.5, 0.5]}
LEARNING_RATES = {"ppo": 0.001, "qlearning": 0.01}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---- statistics ----------------------------------------------------------------------------------


def test_iqm_of_one_to_eight_is_the_mean_of_the_middle_four():
    assert interquartile_mean(np.arange(1, 9)) == pytest.approx(4.5)  # (3 + 4 + 5 + 6) / 4


def test_iqm_of_four_values_ignores_the_extremes():
    assert interquartile_mean([10.0, 1.0, 3.0, 2.0]) == pytest.approx(2.5)  # (2 + 3) / 2
    assert interquartile_mean([1.0, 2.0, 3.0, 1000.0]) == pytest.approx(2.5)


def test_iqm_of_one_value_is_that_value():
    assert interquartile_mean([7.25]) == 7.25


def test_iqm_weights_the_values_at_the_quartiles_fractionally():
    # n = 3 keeps [0.75, 2.25]: a quarter of the lowest and highest value, all of the middle one
    assert interquartile_mean([0.9, 0.1, 0.2]) == pytest.approx((0.1 / 4 + 0.2 + 0.9 / 4) / 1.5)
    # n = 5 keeps [1.25, 3.75]: three quarters of the 2nd and 4th values
    assert interquartile_mean([1.0, 2.0, 4.0, 8.0, 16.0]) == pytest.approx((0.75 * 2 + 4 + 0.75 * 8) / 2.5)


def test_statistics_refuse_an_empty_sample():
    with pytest.raises(ValueError, match="non-empty"):
        interquartile_mean([])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])


def test_sample_std_uses_n_minus_one_and_is_undefined_for_one_value():
    assert sample_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx(math.sqrt(5 / 3))
    assert math.isnan(sample_std([3.0]))


def test_bootstrap_ci_contains_the_mean_and_has_width():
    values = [0.1, 0.4, 0.35, 0.8, 0.6]
    low, high = bootstrap_ci(values)
    assert low < np.mean(values) < high
    assert min(values) <= low and high <= max(values)


def test_bootstrap_ci_of_two_values_spans_them():
    # resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4
    low, high = bootstrap_ci([0.0, 1.0])
    assert (float(low), float(high)) == (0.0, 1.0)
    low, high = bootstrap_ci([0.0, 1.0], confidence=0.4)  # quantiles 0.3 and 0.7
    assert (float(low), float(high)) == (0.5, 0.5)


def test_bootstrap_ci_is_degenerate_for_identical_values():
    assert tuple(map(float, bootstrap_ci([0.1] * 7))) == (0.1, 0.1)  # not 0.1 +- rounding error
    assert tuple(map(float, bootstrap_ci([2.5]))) == (2.5, 2.5)


def test_bootstrap_ci_is_deterministic_and_ignores_the_global_rng():
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    np.random.seed(1)
    first = bootstrap_ci(values)
    np.random.seed(2)
    assert bootstrap_ci(values) == first
    assert bootstrap_ci(values, seed=1) != first


def test_bootstrap_ci_of_a_matrix_gives_one_interval_per_column():
    columns = np.array([[0.0, 1.0, 5.0], [1.0, 1.0, 7.0], [3.0, 1.0, 6.0]])  # (seeds, T)
    low, high = bootstrap_ci(columns)
    assert low.shape == high.shape == (3,)
    for column in range(3):
        expected = tuple(map(float, bootstrap_ci(columns[:, column])))
        assert (low[column], high[column]) == pytest.approx(expected)
    assert (low[1], high[1]) == (1.0, 1.0)


def test_bootstrap_ci_refuses_a_confidence_outside_zero_one():
    with pytest.raises(ValueError, match="confidence must lie in"):
        bootstrap_ci([1.0, 2.0], confidence=95)


def test_describe_reports_every_statistic():
    stats = describe(WIN_RATES["ppo"])
    assert stats.n == 3
    assert stats.mean == pytest.approx(0.4)
    assert stats.std == pytest.approx(math.sqrt(0.19))  # squared deviations 0.09 + 0.04 + 0.25, over 2
    assert stats.iqm == pytest.approx(0.3)  # (0.1 / 4 + 0.2 + 0.9 / 4) / 1.5
    assert stats.ci_low <= stats.mean <= stats.ci_high


# ---- curves --------------------------------------------------------------------------------------


def test_curves_logged_at_different_steps_meet_on_the_common_range():
    seed_a = (np.array([0, 10, 20]), np.array([0.0, 1.0, 2.0]))
    seed_b = (np.array([5, 15, 25]), np.array([0.5, 1.5, 2.5]))  # both: value = step / 10
    band = curve_band([seed_a, seed_b])
    assert band is not None and band.seeds == 2
    assert (band.steps[0], band.steps[-1]) == (5, 20)
    np.testing.assert_allclose(band.mean, band.steps / 10)
    np.testing.assert_allclose(band.low, band.mean)
    np.testing.assert_allclose(band.high, band.mean)


def test_curves_without_a_common_step_range_give_no_band():
    assert curve_band([(np.array([0, 1]), np.zeros(2)), (np.array([5, 6]), np.zeros(2))]) is None


# ---- a fake sweep --------------------------------------------------------------------------------


def write_job(
    directory: Path, overrides: list[str], metrics: dict | None = None, curve=None, lr=None
) -> Path:
    (directory / ".hydra").mkdir(parents=True)
    (directory / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if lr is not None:
        (directory / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"agent": {"lr": lr}}))
    if metrics is not None:
        (directory / "metrics.json").write_text(json.dumps(metrics))
    if curve is not None:
        writer = SummaryWriter(log_dir=str(directory))
        for step, value in zip(*curve, strict=True):
            writer.add_scalar("charts/episode_return", value, int(step))
        writer.add_scalar("loss/value", 1.0, 0)
        writer.close()
    return directory


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """2 configurations x 3 seeds, a job that failed (a log only), one with a corrupt metrics.json
    and one with a damaged event file."""
    root = tmp_path / "multirun" / "2026-01-01" / "00-00-00"
    number = 0
    for agent, rates in WIN_RATES.items():
        for seed, rate in enumerate(rates):
            steps = np.arange(0, 100, 10) + seed  # every seed logs at other steps
            write_job(
                root / f"{number}_agent={agent},seed={seed}",
                ["env=tictactoe", f"agent={agent}", f"seed={seed}"],
                {
                    "eval/random_as_x/win_rate": rate,
                    "eval/return_mean": 2 * rate,
                    "perf/env_steps": 1000 + seed,
                },
                curve=(steps, steps / 100 + (agent == "qlearning")),
                lr=LEARNING_RATES[agent],
            )
            number += 1
    failed = write_job(root / "6_agent=ppo,seed=3", ["env=tictactoe", "agent=ppo", "seed=3"])
    (failed / "train.log").write_text("[INFO] - collecting\n\n[ERROR] - RuntimeError: boom\n")
    (failed / "checkpoints").mkdir()
    (failed / "checkpoints" / "latest").write_text("update_0000100\n")
    corrupt = write_job(root / "7_agent=qlearning,seed=3", ["env=tictactoe", "agent=qlearning", "seed=3"])
    (corrupt / "metrics.json").write_text('{"eval/random_as_x/win_rate": 0.')
    damaged = write_job(
        root / "8_agent=ppo,seed=4",
        ["env=tictactoe", "agent=ppo", "seed=4"],
        {"eval/random_as_x/win_rate": 100.0},
    )
    (damaged / "events.out.tfevents.0.host.1.0").write_bytes(bytes(64))
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def by_name(summary) -> dict:
    return {configuration.name: configuration for configuration in summary.configurations}


def test_summary_groups_seeds_and_computes_the_statistics(sweep):
    summary = summarize(sweep)
    configurations = by_name(summary)
    assert list(configurations) == ["agent=ppo", "agent=qlearning"]
    assert summary.common == ["env=tictactoe"]
    ppo = configurations["agent=ppo"]
    assert ppo.seeds == [0, 1, 2]
    assert ppo.overrides == ["agent=ppo", "env=tictactoe"]
    stats = ppo.stats["eval/random_as_x/win_rate"]
    assert (stats.n, stats.mean, stats.iqm) == (3, pytest.approx(0.4), pytest.approx(0.3))
    assert stats.std == pytest.approx(math.sqrt(0.19))
    assert configurations["agent=qlearning"].stats["eval/return_mean"].mean == pytest.approx(1.0)
    assert summary.metrics == ["eval/random_as_x/win_rate", "eval/return_mean"]  # eval/ keys only


def test_summary_lists_failed_jobs_with_their_reasons(sweep):
    summary = summarize(sweep)
    reasons = {job.name: job.reason for job in summary.failed}
    assert sorted(reasons) == ["6_agent=ppo,seed=3", "7_agent=qlearning,seed=3", "8_agent=ppo,seed=4"]
    assert "no metrics.json" in reasons["6_agent=ppo,seed=3"]
    assert "update_0000100" in reasons["6_agent=ppo,seed=3"]
    assert "RuntimeError: boom" in reasons["6_agent=ppo,seed=3"]
    assert "metrics.json is damaged" in reasons["7_agent=qlearning,seed=3"]
    assert "events.out.tfevents.0.host.1.0 is damaged" in reasons["8_agent=ppo,seed=4"]
    assert summary.jobs == 9
    assert by_name(summary)["agent=ppo"].stats["eval/random_as_x/win_rate"].n == 3  # 100.0 left out


def test_summary_reads_the_learning_curves(sweep):
    summary = summarize(sweep)
    assert summary.curve_tag == "charts/episode_return"
    ppo = by_name(summary)["agent=ppo"].curve
    assert ppo is not None and ppo.seeds == 3
    assert (ppo.steps[0], ppo.steps[-1]) == (2, 90)  # the steps every seed logged around
    np.testing.assert_allclose(ppo.mean, ppo.steps / 100)
    qlearning = by_name(summary)["agent=qlearning"].curve
    np.testing.assert_allclose(qlearning.mean, qlearning.steps / 100 + 1)


def test_group_by_names_overrides_or_config_keys(sweep):
    by_seed = by_name(summarize(sweep, group_by=["seed"]))
    assert list(by_seed) == ["seed=0", "seed=1", "seed=2"]
    assert by_seed["seed=0"].stats["eval/random_as_x/win_rate"].mean == pytest.approx(0.3)
    by_lr = by_name(summarize(sweep, group_by=["agent.lr"]))
    assert list(by_lr) == ["agent.lr=0.001", "agent.lr=0.01"]


def test_extra_metrics_and_unknown_names_are_checked(sweep):
    summary = summarize(sweep, metrics=["perf/env_steps"])
    assert summary.metrics[-1] == "perf/env_steps"
    assert by_name(summary)["agent=ppo"].stats["perf/env_steps"].mean == pytest.approx(1001)
    with pytest.raises(SummaryError, match="'perf/nope'.*available: eval/random_as_x/win_rate"):
        summarize(sweep, metrics=["perf/nope"])
    with pytest.raises(SummaryError, match="'charts/nope'.*loss/value"):
        summarize(sweep, curve="charts/nope")


def test_main_prints_tables_and_writes_summary_json(sweep, capsys):
    assert main([str(sweep), "--metric", "perf/env_steps"]) == 0
    out = capsys.readouterr().out
    assert "eval/random_as_x/win_rate" in out and "perf/env_steps" in out
    ppo_row = next(line for line in out.splitlines() if line.startswith("agent=ppo ") and "0.4000" in line)
    assert ppo_row.split()[1:5] == ["3", "0.4000", f"{math.sqrt(0.19):.4f}", "0.3000"]
    assert "6_agent=ppo,seed=3" in out and "RuntimeError: boom" in out
    data = json.loads((sweep / "summary.json").read_text(), parse_constant=pytest.fail)
    assert [c["name"] for c in data["configurations"]] == ["agent=ppo", "agent=qlearning"]
    ppo = data["configurations"][0]
    assert ppo["seeds"] == [0, 1, 2]
    assert ppo["metrics"]["eval/random_as_x/win_rate"]["values"] == WIN_RATES["ppo"]
    assert ppo["metrics"]["eval/random_as_x/win_rate"]["iqm"] == pytest.approx(0.3)
    assert data["configurations"][1]["metrics"]["eval/random_as_x/win_rate"]["std"] == pytest.approx(0.0)
    assert len(ppo["curve"]["steps"]) == len(ppo["curve"]["mean"]) == len(ppo["curve"]["low"])
    failed = {entry["dir"]: entry for entry in data["failed"]}
    assert set(failed) == {"6_agent=ppo,seed=3", "7_agent=qlearning,seed=3", "8_agent=ppo,seed=4"}
    assert all(set(entry) == {"dir", "overrides", "reason"} for entry in data["failed"])
    assert failed["6_agent=ppo,seed=3"]["overrides"] == ["env=tictactoe", "agent=ppo", "seed=3"]
    assert not list(sweep.glob(".summary.json*"))  # no temporary file left behind


def test_main_writes_a_png_of_the_curves(sweep, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "plots" / "curves.png"
    assert main([str(sweep), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert f"wrote {png}" in capsys.readouterr().out


def test_png_without_matplotlib_says_how_to_install_it(sweep, tmp_path, monkeypatch, capsys):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)
    assert main([str(sweep), "--png", str(tmp_path / "curves.png")]) == 1
    assert "pip install matplotlib" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="pip install matplotlib"):
        summary_cli.plot_curves(summarize(sweep), tmp_path / "curves.png")


def test_missing_sweep_dir_exits_with_code_2_naming_it(tmp_path, capsys):
    missing = tmp_path / "multirun" / "nowhere"
    with pytest.raises(SystemExit) as exit_info:
        main([str(missing)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"sweep dir {missing} does not exist" in err and "Traceback" not in err


def test_dir_without_jobs_exits_with_code_2(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"no job directory under {tmp_path}" in capsys.readouterr().err


def test_event_file_check_finds_truncation_and_garbage(tmp_path):
    write_job(tmp_path / "job", ["seed=0"], curve=(np.arange(3), np.zeros(3)))
    (events,) = (tmp_path / "job").glob("events.out.tfevents.*")
    check_event_file(events)
    data = events.read_bytes()
    events.write_bytes(data[:-3])
    with pytest.raises(JobError, match="truncated record"):
        check_event_file(events)
    events.write_bytes(b"not a TensorBoard file")
    with pytest.raises(JobError, match="bad record header at byte 0"):
        check_event_file(events)


def test_job_dirs_come_in_job_number_order_without_their_subdirectories(tmp_path):
    for name in ("10_seed=10", "2_seed=2"):
        write_job(tmp_path / name, [f"seed={name.split('=')[1]}"], {"eval/return_mean": 0.0})
    nested = tmp_path / "2_seed=2" / "reward_model"
    nested.mkdir()
    (nested / "metrics.json").write_text("{}")  # a stage's own metrics inside a job, not a job
    assert [path.name for path in find_job_dirs(tmp_path)] == ["2_seed=2", "10_seed=10"]
