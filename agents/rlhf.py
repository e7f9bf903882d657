"""The whole RLHF pipeline in one command: ``python -m agents.rlhf task=sentiment`` (or ``task=detox``).

Stages, all in one run directory (settings in ``conf/rlhf.yaml``):

1. **collect**: the policy LM samples ``collect.n_completions`` completions for each of
   ``collect.num_prompts`` training prompts; a panel of noisy simulated labelers (VADER
   sentiment or alt-profanity-check, by task) ranks them -> ``rankings.jsonl``.
2. **reward_model**: a MiniLM reward model is trained on the consensus pairs and calibrated
   (its scores have mean 0 and std 1 on the collected completions) -> ``reward_model/``.
3. **ppo**: :class:`agents.ppo.PPOAgent` fine-tunes the policy's LoRA adapters in the
   text env with the generic loop :func:`agents.train.train_loop`; the reward is the reward
   model's score, with a per-token KL penalty to the reference model (adapters off).
   The noise-free labeler scores the same completions on the side, and
   ``charts/rm_minus_labeler`` (both standardised on the collected completions) shows
   reward hacking: it grows when the policy finds what the reward model overrates.
4. **eval**: before and after PPO, the same held-out prompts are completed with the same
   sampling seed and reported: reward-model score, labeler score, KL to the reference
   (nats per completion, from the sampled tokens), length, and sample completions.

TensorBoard holds every stage: ``reward_model/`` (per optimizer step), ``charts/``,
``loss/``, ``diag/`` (per PPO env step), ``eval/before/``, ``eval/after/`` and ``perf/``
(seconds per stage). ``metrics.json`` holds the final numbers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from agents.run.jobs import prepare_command_line, set_job_threads, show_progress
from agents.train import (
    Checkpointer,
    Interrupted,
    build,
    claim_run_dir,
    group_choices,
    make_collector,
    resolve_device,
    seed_everything,
    train_loop,
    write_metrics,
    write_text,
)
from rlenv.logger import NullLogger, hyperparameters

log = logging.getLogger(__name__)
ScoreFn = Callable[[list[str], list[str]], Any]


@dataclass
class PolicyReport:
    """Held-out completions of one policy and their mean scores."""

    rm_score: float
    labeler_score: float
    kl: float
    length: float
    prompts: list[str]
    completions: list[str]

    def metrics(self, prefix: str) -> dict[str, float]:
        names = ("rm_score", "labeler_score", "kl", "length")
        return {f"{prefix}{name}": float(getattr(self, name)) for name in names}


class MonitoringLogger:
    """A logger that adds the metrics of ``sources`` (``drain() -> dict``) to every ``log`` call."""

    def __init__(self, logger: Any, *sources: Any) -> None:
        self.logger, self.sources = logger, sources

    def log(self, metrics: dict[str, float], step: int) -> None:
        extra = {k: v for source in self.sources for k, v in source.drain().items()}
        self.logger.log({**metrics, **extra}, step)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


@contextmanager
def stage(name: str, seconds: dict[str, float]) -> Iterator[None]:
    """Time a pipeline stage into ``seconds[name]`` and log its start and end."""
    log.info("stage %s ...", name)
    started = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - started
    log.info("stage %s done in %.1f s", name, seconds[name])


def labeler_kind(cfg: DictConfig) -> str:
    """``collect.labeler``, else the task's (``task.prompts``: sentiment -> sentiment, detox -> toxicity)."""
    from rlenv.feedback.collect import resolve_labeler_kind

    task = cfg.get("task", {}).get("prompts")
    return resolve_labeler_kind(cfg.collect.labeler, task if isinstance(task, str) else None)


def judge_kind(cfg: DictConfig) -> str:
    """The noise-free simulated labeler that scores the evaluation: ``collect.labeler`` when it is
    a simulated one, else (``ai``, ``human``) the task's."""
    from rlenv.feedback.collect import SIMULATED, resolve_labeler_kind

    kind = labeler_kind(cfg)
    if kind in SIMULATED:
        return kind
    task = cfg.get("task", {}).get("prompts")
    return resolve_labeler_kind(None, task if isinstance(task, str) else None)


def task_prompts(cfg: DictConfig, split: str, count: int) -> list[str]:
    """The first ``count`` prompts of the env's prompt set (a task, a file or a list) for ``split``."""
    from rlenv.text.prompts import resolve_prompts

    prompts = cfg.env.vector.prompts
    source = prompts if isinstance(prompts, str) else OmegaConf.to_container(prompts)
    return resolve_prompts(source, split)[:count]


def collect_stage(cfg: DictConfig, run_dir: Path) -> tuple[list[Any], dict[str, float]]:
    """Sample completions with the policy and rank them with the simulated panel.

    With ``collect.rankings`` set, that file's records are used and nothing is collected.
    Returns the ranking records and the stage's metrics.
    """
    from rlenv.feedback.collect import mean_agreement
    from rlenv.feedback.rankings import load_rankings

    if cfg.collect.get("rankings"):
        from hydra.utils import to_absolute_path

        rankings = Path(to_absolute_path(str(cfg.collect.rankings)))
        log.info("using the ranked prompts of %s (nothing collected)", rankings)
    else:
        rankings = _collect(cfg, run_dir)
    records = load_rankings(rankings)
    metrics = {"collect/prompts": float(len(records)), "collect/labeler_agreement": mean_agreement(records)}
    return records, metrics


def _collect(cfg: DictConfig, run_dir: Path) -> Path:
    from rlenv.feedback.collect import collect_from_policy, labelers_for
    from rlenv.feedback.generate import generate_items
    from rlenv.text.models import load_causal_lm
    from rlenv.text.tokenizers import load_tokenizer

    settings = cfg.collect
    model = load_causal_lm(cfg.env.model, device=resolve_device(cfg.device))
    tokenizer = load_tokenizer(cfg.env.vector.tokenizer)
    sampling = OmegaConf.to_container(settings.generation, resolve=True)
    calls = iter(range(1 << 30))

    def generate(chunk: list[str]) -> list[list[str]]:
        seed = int(cfg.seed) * 1_000_003 + next(calls)
        return generate_items(model, tokenizer, chunk, int(settings.n_completions), seed=seed, **sampling)

    task = cfg.get("task", {}).get("prompts")
    panel = labelers_for(
        labeler_kind(cfg),
        settings,
        model=str(cfg.env.model),
        task=task if isinstance(task, str) else None,
        seed=int(cfg.seed),
        device=str(cfg.device),
    )
    rankings = run_dir / "rankings.jsonl"
    prompts = task_prompts(cfg, "train", int(settings.num_prompts))
    collect_from_policy(
        prompts,
        generate,
        panel,
        rankings,
        chunk_size=int(settings.chunk_size),
        meta={"model": str(cfg.env.model), **sampling},
        progress=show_progress(cfg.train.progress),
    )
    return rankings


def reward_stage(
    cfg: DictConfig, records: list[Any], run_dir: Path, logger: Any
) -> tuple[Any, dict[str, float]]:
    """Train and calibrate the reward model on the rankings; returns it and its metrics.

    With ``reward_model.path`` set, that saved model is loaded instead and measured on the
    rankings' validation split (held out when it was trained on these rankings with the same
    ``seed`` and ``val_fraction``, as a previous run of this pipeline does).
    """
    from hydra.utils import to_absolute_path

    from rlenv.reward.model import RewardModel
    from rlenv.reward.train import RewardTrainConfig, evaluate_reward_model, fit

    device = resolve_device(cfg.device)
    options = {k: v for k, v in cfg.reward_model.items() if k != "path"}
    settings = RewardTrainConfig(
        seed=int(cfg.seed), device=str(device), progress=show_progress(cfg.train.progress), **options
    )
    if not cfg.reward_model.get("path"):

        def log_metric(name: str, value: float, step: int) -> None:
            logger.log({name: value}, step)

        return fit(settings, records, run_dir / "reward_model", log_metric)
    path = Path(to_absolute_path(str(cfg.reward_model.path)))
    model = RewardModel.load(path, device=device)
    log.info("reward model loaded from %s (not trained in this run)", path)
    split = settings.split_options()
    return model, evaluate_reward_model(model, records, batch_size=settings.batch_size, **split)


def labeler_score_fn(kind: str) -> ScoreFn:
    """The noise-free score of a simulated labeler kind."""
    from rlenv.feedback.collect import SIMULATED

    return SIMULATED[kind](noise=0.0)


def monitored_reward(reward_model: Any, labeler: ScoreFn, records: list[Any]) -> Any:
    """The PPO reward (calibrated reward model) with the labeler's score recorded alongside."""
    from rlenv.reward.scoring import MonitoredReward, RewardModelReward, as_array, standardization

    prompts = [r.prompt for r in records for _ in r.completions]
    completions = [c for r in records for c in r.completions]
    mean, std = standardization(as_array(labeler(prompts, completions)).tolist())
    return MonitoredReward(RewardModelReward(reward_model), labeler, monitor_mean=mean, monitor_std=std)


@torch.no_grad()
def sample_and_measure(
    policy: Any,
    reference: Callable[[], AbstractContextManager[Any]],
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
) -> tuple[list[str], list[float], list[float]]:
    """One sampled completion per prompt, its KL to the reference and its length.

    ``reference()`` enters a context in which the reference model is available: it yields
    that model, or ``None`` when ``policy`` itself acts as the reference inside it (a PEFT
    model's ``disable_adapter()``). KL: k1 summed over each completion's tokens (nats).

    Returns:
        completions, KL per completion, length per completion (tokens), in prompt order.
    """
    from agents.ppo.kl import token_kl
    from rlenv.feedback.generate import response_log_probs, sample_completions

    batches = sample_completions(
        policy, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed
    )
    completions, kls, lengths = [], [], []
    for batch in batches:
        with torch.no_grad():
            log_probs = response_log_probs(policy, batch)
            with reference() as model:
                reference_log_probs = response_log_probs(policy if model is None else model, batch)
        kls += token_kl(log_probs, reference_log_probs, batch.response_mask).sum(dim=1).tolist()
        lengths += batch.lengths.float().tolist()
        completions += batch.completions
    return completions, kls, lengths


def evaluate_policy(
    core: Any, tokenizer: Any, prompts: list[str], reward: ScoreFn, labeler: ScoreFn, settings: DictConfig
) -> PolicyReport:
    """Sample one completion per prompt from the policy and score it (see the module docstring)."""
    from rlenv.reward.scoring import as_array

    completions, kls, lengths = sample_and_measure(
        core.policy_lm,
        lambda: core.using(reference=True),
        tokenizer,
        prompts,
        max_new_tokens=int(settings.max_new_tokens),
        batch_size=int(settings.batch_size),
        seed=int(settings.seed),
    )
    return PolicyReport(
        rm_score=float(as_array(reward(prompts, completions)).mean()),
        labeler_score=float(as_array(labeler(prompts, completions)).mean()),
        kl=float(np.mean(kls)),
        length=float(np.mean(lengths)),
        prompts=list(prompts),
        completions=completions,
    )


def format_comparison(
    title: str, before: PolicyReport, after: PolicyReport, num_samples: int, toxicity: bool = False
) -> list[str]:
    """The before/after table and sample completions, as lines.

    ``toxicity``: the labeler score is ``1 - P(offensive)``; also show the toxicity ``P(offensive)``.
    """
    rows = [
        ("reward model score", "rm_score"),
        ("labeler score", "labeler_score"),
        ("KL to reference (nats)", "kl"),
        ("length (tokens)", "length"),
    ]
    lines = [title, f"{'':<26}{'before':>10}{'after':>10}{'change':>10}", "-" * 56]
    for label, name in rows:
        old, new = getattr(before, name), getattr(after, name)
        lines.append(f"{label:<26}{old:>10.3f}{new:>10.3f}{new - old:>+10.3f}")
    if toxicity:
        old, new = 1 - before.labeler_score, 1 - after.labeler_score
        lines.append(f"{'toxicity P(offensive)':<26}{old:>10.3f}{new:>10.3f}{new - old:>+10.3f}")
    lines.append("")
    for k in range(min(num_samples, len(before.prompts))):
        lines += [
            f"prompt: {before.prompts[k]!r}",
            f"  before: {before.completions[k]!r}",
            f"  after:  {after.completions[k]!r}",
        ]
    return lines


def format_report(
    title: str,
    before: PolicyReport,
    after: PolicyReport,
    rm: dict[str, float],
    seconds: dict[str, float],
    num_samples: int,
    toxicity: bool = False,
) -> str:
    """The before/after table, sample completions, reward-model accuracy and wall time per stage."""
    lines = format_comparison(title, before, after, num_samples, toxicity)
    ns = "reward_model/"
    lines += [
        "",
        (
            f"reward model: held-out pairwise accuracy {rm[ns + 'val_accuracy']:.3f} on "
            f"{int(rm[ns + 'num_val_pairs'])} filtered pairs, {rm[ns + 'val_accuracy_all']:.3f} on all "
            f"{int(rm[ns + 'num_val_pairs_all'])} consensus pairs; labelers agree "
            f"{rm.get(ns + 'labeler_agreement', float('nan')):.3f} (pairwise, held-out)"
        ),
    ]
    lines.append(format_seconds(seconds))
    return "\n".join(lines)


def format_seconds(seconds: dict[str, float]) -> str:
    times = " | ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    return f"wall time: {times} | total {sum(seconds.values()):.0f} s"


def ppo_and_eval(cfg: DictConfig, run_dir: Path, parts: dict[str, Any], seconds: dict[str, float]) -> dict:
    """Evaluate the base policy, train it with PPO, evaluate again; returns the reports and counters."""
    device = resolve_device(cfg.device)
    env, agent = build(cfg, device, reward_fn=parts["reward"])
    core, tokenizer, logger = agent.network.core, env.config.tokenizer, parts["logger"]
    heldout = task_prompts(cfg, "heldout", int(cfg.evaluation.num_prompts))
    scorers = (heldout, parts["reward"].reward_fn, parts["labeler"], cfg.evaluation)
    with stage("eval_before", seconds):
        before = evaluate_policy(core, tokenizer, *scorers)
    logger.log(before.metrics("eval/before/"), 0)
    trainer: dict[str, Any] = {"env_steps": 0, "updates": 0}
    collector = make_collector(cfg, env, agent)
    checkpointer = Checkpointer(run_dir, cfg, env, agent, collector, group_choices())
    try:
        with stage("ppo", seconds):
            monitored = MonitoringLogger(logger, parts["reward"])
            trainer = train_loop(cfg, env, agent, collector, checkpointer, monitored, trainer)
        checkpointer.write(trainer)
        with stage("eval_after", seconds):
            after = evaluate_policy(core, tokenizer, *scorers)
    finally:
        env.close()
    logger.log(after.metrics("eval/after/"), trainer["env_steps"])
    return {"before": before, "after": after, "trainer": trainer}


def dpo_and_eval(
    cfg: DictConfig, run_dir: Path, parts: dict[str, Any], seconds: dict[str, float], records: list[Any]
) -> dict:
    """``method=dpo``: evaluate the base policy, train it with DPO on the collected rankings'
    pairs (:mod:`agents.dpo`; the reward model only scores the evaluation), evaluate again."""
    from agents.dpo import heldout_line, policy_core, train_and_evaluate

    core, tokenizer = policy_core(cfg.env.model, cfg.network.actor_critic.lora, resolve_device(cfg.device))
    heldout = task_prompts(cfg, "heldout", int(cfg.evaluation.num_prompts))
    scoring = (heldout, parts["reward"].reward_fn, parts["labeler"], cfg.evaluation)
    result = train_and_evaluate(
        core,
        tokenizer,
        records,
        cfg.dpo,
        scoring,
        parts["logger"],
        int(cfg.seed),
        bool(cfg.train.progress),
        seconds,
    )
    core.lm.save_pretrained(str(run_dir / "adapter"))
    line = heldout_line(result["metrics"])
    if line:
        log.info("%s", line)
    steps = result["trainer"].steps
    return {**result, "trainer": {"env_steps": steps, "updates": steps}}


METHODS = ("ppo", "dpo")


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run every stage as ``cfg`` says; returns the final metrics (also in ``metrics.json``)."""
    if cfg.get("method", "ppo") not in METHODS:
        raise ValueError(f"method={cfg.method!r} is not one of {list(METHODS)}")
    run_dir = Path(run_dir)
    claim_run_dir(run_dir)
    set_job_threads(cfg.train.torch_threads)
    seed_everything(int(cfg.seed))
    logger = instantiate(cfg.logger, log_dir=str(run_dir)) if cfg.logger else NullLogger()
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    logger.text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
    seconds: dict[str, float] = {}
    try:
        with stage("collect", seconds):
            records, collected = collect_stage(cfg, run_dir)
        logger.log(collected, 0)
        with stage("reward_model", seconds):
            reward_model, rm_metrics = reward_stage(cfg, records, run_dir, logger)
        labeler = labeler_score_fn(judge_kind(cfg))
        reward = monitored_reward(reward_model, labeler, records)
        parts = {"reward": reward, "labeler": labeler, "logger": logger}
        if cfg.get("method", "ppo") == "dpo":
            result = dpo_and_eval(cfg, run_dir, parts, seconds, records)
        else:
            result = ppo_and_eval(cfg, run_dir, parts, seconds)
        before, after = result["before"], result["after"]
        method = str(cfg.get("method", "ppo")).upper()
        title = (
            f"RLHF {labeler_kind(cfg)} labels, {judge_kind(cfg)} judge: "
            f"{len(before.prompts)} held-out prompts, before vs after {method}"
        )
        toxicity = judge_kind(cfg) == "toxicity"
        report = format_report(
            title, before, after, rm_metrics, seconds, int(cfg.evaluation.num_samples), toxicity
        )
        print(report)
        logger.text("eval/report", "```\n" + report + "\n```", result["trainer"]["env_steps"])
        final = {
            **collected,
            **rm_metrics,
            **before.metrics("eval/before/"),
            **after.metrics("eval/after/"),
            **result.get("metrics", {}),
            **{f"perf/seconds/{name}": value for name, value in seconds.items()},
            "perf/env_steps": result["trainer"]["env_steps"],
        }
        logger.log({k: v for k, v in final.items() if k.startswith("perf/")}, result["trainer"]["env_steps"])
        chosen = hyperparameters(OmegaConf.to_container(cfg, resolve=True))
        logger.hparams(chosen, after.metrics("eval/after/"))
        write_metrics(run_dir / "metrics.json", final)
    finally:
        logger.close()
    return final


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="rlhf")
def _main(cfg: DictConfig) -> float:
    try:
        metrics = run(cfg, HydraConfig.get().runtime.output_dir)
    except Interrupted as stop:
        log.warning("%s", stop)
        sys.exit(128 + stop.signum)
    return float(metrics["eval/after/labeler_score"])


def main() -> None:
    """The command line entry point (``python -m agents.rlhf``, ``rlenv-rlhf``)."""
    prepare_command_line()
    _main()


if __name__ == "__main__":
    main()
