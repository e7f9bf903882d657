"""The RLHF pipeline end to end with tiny models: collect, reward model, PPO, evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_module

import agents  # noqa: F401  (registers the config resolvers)
from agents import rlhf
from rlenv.feedback.rankings import load_rankings
from rlenv.reward.model import RewardModel

PROMPTS = "[the movie was,a film is very,it was not,this story is,the plot was,i love the]"
TINY = [
    "env.model=tiny",
    f"env.vector.prompts={PROMPTS}",
    "env.vector.window=16",
    "env.vector.max_new_tokens=6",
    "num_envs=4",
    "agent.num_minibatches=2",
    "train.total_env_steps=48",
    "train.progress=false",
    "train.torch_threads=1",
    "collect.labeler=sentiment",
    "collect.num_prompts=6",
    "collect.n_completions=3",
    "collect.chunk_size=4",
    "reward_model.encoder=tiny",
    "reward_model.epochs=2",
    "reward_model.lr=1e-3",
    "reward_model.val_fraction=0.34",
    "reward_model.min_pair_agreement=null",
    "reward_model.trainable_layers=1",
    "evaluation.num_prompts=4",
    "evaluation.num_samples=2",
]


def compose_rlhf(overrides: list[str]):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="rlhf", overrides=overrides)


@pytest.mark.parametrize("task", ["sentiment", "detox"])
def test_task_picks_prompts_and_labeler(task: str) -> None:
    cfg = compose_rlhf([f"task={task}"])
    assert cfg.env.vector.prompts == task
    assert rlhf.labeler_kind(cfg) == {"sentiment": "sentiment", "detox": "toxicity"}[task]
    assert cfg.env.vector.autoreset_mode == "disabled"
    assert cfg.collect.generation.max_new_tokens == cfg.env.vector.max_new_tokens


def test_pipeline_runs_every_stage_with_tiny_models(tmp_path, capsys) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.set_num_threads(1)
    metrics = rlhf.run(compose_rlhf(TINY), tmp_path)
    out = capsys.readouterr().out
    assert "before vs after PPO" in out and "wall time: collect" in out and "prompt: " in out
    assert json.loads((tmp_path / "metrics.json").read_text()) == pytest.approx(metrics, nan_ok=True)
    for name in ("collect", "reward_model", "eval_before", "ppo", "eval_after"):
        assert metrics[f"perf/seconds/{name}"] > 0
    assert metrics["eval/before/kl"] == pytest.approx(0.0, abs=1e-4)
    assert math.isfinite(metrics["eval/after/kl"]) and metrics["perf/env_steps"] >= 48
    assert len(load_rankings(tmp_path / "rankings.jsonl")) == 6
    assert RewardModel.load(tmp_path / "reward_model").score_std > 0
    assert (tmp_path / "checkpoints" / "latest").is_file() and (tmp_path / "config.yaml").is_file()
    scalars = set(EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"])
    expected = {
        "reward_model/loss",
        "reward_model/val_accuracy",
        "charts/episode_return",
        "charts/kl",
        "charts/rm_minus_labeler",
        "charts/labeler_score",
        "eval/before/rm_score",
        "eval/after/labeler_score",
        "collect/labeler_agreement",
        "perf/seconds/ppo",
    }
    assert expected <= scalars


def test_report_shows_toxicity_for_the_toxicity_labeler() -> None:
    before = rlhf.PolicyReport(0.0, 0.8, 0.0, 10.0, ["p"], ["a"])
    after = rlhf.PolicyReport(1.0, 0.9, 3.0, 9.0, ["p"], ["b"])
    rm = {
        "reward_model/val_accuracy": 0.8,
        "reward_model/num_val_pairs": 10.0,
        "reward_model/val_accuracy_all": 0.7,
        "reward_model/num_val_pairs_all": 12.0,
    }
    report = rlhf.format_report("t", before, after, rm, {"collect": 1.0}, 1, toxicity=True)
    row = next(line for line in report.splitlines() if line.startswith("toxicity P(offensive)"))
    assert row.split()[-3:] == ["0.200", "0.100", "-0.100"]
    assert "toxicity" not in rlhf.format_report("t", before, after, rm, {"collect": 1.0}, 1)


def test_pipeline_reuses_rankings_and_reward_model_of_a_previous_run(tmp_path) -> None:
    torch.set_num_threads(1)
    first = rlhf.run(compose_rlhf(TINY), tmp_path / "first")
    reuse = [
        f"collect.rankings={tmp_path / 'first' / 'rankings.jsonl'}",
        f"reward_model.path={tmp_path / 'first' / 'reward_model'}",
    ]
    second = rlhf.run(compose_rlhf(TINY + reuse), tmp_path / "second")
    assert not (tmp_path / "second" / "rankings.jsonl").exists()
    assert not (tmp_path / "second" / "reward_model").exists()
    assert second["collect/prompts"] == 6
    for name in ("val_accuracy", "num_val_pairs", "score_mean"):
        assert second[f"reward_model/{name}"] == pytest.approx(first[f"reward_model/{name}"], nan_ok=True)
    assert second["eval/before/rm_score"] == pytest.approx(first["eval/before/rm_score"], abs=1e-5)


def test_pipeline_with_dpo_trains_on_the_collected_pairs(tmp_path, capsys) -> None:
    torch.set_num_threads(1)
    dpo = ["method=dpo", "dpo.epochs=2", "dpo.batch_size=4", "dpo.lr=5e-3", "dpo.heldout_fraction=0.34"]
    metrics = rlhf.run(compose_rlhf(TINY + dpo), tmp_path)
    out = capsys.readouterr().out
    assert "before vs after DPO" in out
    assert metrics["dpo/train_pairs"] > 0 and metrics["dpo/steps"] == metrics["perf/env_steps"] > 0
    assert metrics["perf/seconds/dpo"] > 0 and "perf/seconds/ppo" not in metrics
    assert metrics["eval/before/kl"] == pytest.approx(0.0, abs=1e-4) and metrics["eval/after/kl"] != 0.0
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    with pytest.raises(ValueError, match="method='sft'"):
        rlhf.run(compose_rlhf(TINY + ["method=sft"]), tmp_path / "other")


def test_pipeline_with_the_ai_labeler_is_judged_by_the_task_labeler(tmp_path, capsys) -> None:
    from rlenv.text.models import tiny_causal_lm
    from tests.feedback.test_ai_labeler import letter_tokenizer

    torch.set_num_threads(1)
    judge = tmp_path / "judge"
    tiny_causal_lm().save_pretrained(judge)
    letter_tokenizer().save_pretrained(judge)
    overrides = [o for o in TINY if not o.startswith("collect.labeler=")]
    cfg = compose_rlhf([*overrides, "collect.labeler=ai", f"collect.ai_labeler.model={judge}"])
    assert rlhf.labeler_kind(cfg) == "ai" and rlhf.judge_kind(cfg) == "sentiment"
    rlhf.run(cfg, tmp_path / "run")
    records = load_rankings(tmp_path / "run" / "rankings.jsonl")
    assert len(records) == 6 and records[0].labels[0].labeler == "ai(positive)"
    assert "RLHF ai labels, sentiment judge" in capsys.readouterr().out
