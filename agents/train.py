"""Train any agent on any env: ``python -m agents.train env=tictactoe agent=ppo``.

The loop: collect ``agent.rollout_steps`` steps from the vector env, ``agent.learn`` on
them, log, checkpoint every ``train.checkpoint_every`` updates, and evaluate at the end.
Every run directory holds the composed config, TensorBoard events, checkpoints and a final
``metrics.json``. ``resume=<run dir>`` continues a run from its latest checkpoint; Ctrl-C
writes a checkpoint before the process exits.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agents import load_agent_state
from agents.collect.collector import RolloutCollector
from agents.core import distributed
from agents.core.base import Agent
from agents.core.spaces import space_to_json
from agents.evaluate import evaluate_agent, format_table
from agents.run import parallel
from agents.run.checkpoint import (
    BEST_FILE,
    load_checkpoint,
    prune_checkpoints,
    recover_checkpoints,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_latest,
    write_pointer,
)
from agents.run.compat import IncompatiblePairError, check_pair
from agents.run.jobs import in_multirun, set_job_threads, show_progress
from agents.run.registry import check_trusted
from agents.run.schema import check_config
from rlenv.logger import NullLogger, hyperparameters

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(
            f"device={name!r} is not a valid torch device (try cpu, cuda, cuda:0, auto)"
        ) from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} asked for CUDA, but this machine has none; use device=cpu")
    return device


def build(cfg: DictConfig, device: torch.device, **env_overrides: Any) -> tuple[Any, Agent]:
    """The vector env (``cfg.env.vector`` with ``env_overrides``) and the agent, built from its spaces.

    The agent's and its network's needs are checked against the env's spaces before the agent
    is built (:func:`agents.run.compat.check_pair`).
    """
    env = instantiate(cfg.env.vector, device=str(device), **env_overrides)
    try:
        check_pair(
            cfg.agent,
            env.single_observation_space,
            env.single_action_space,
            env_name=str(cfg.env.get("name", "env")),
            agent_name=_choice("agent"),
        )
    except IncompatiblePairError:
        env.close()
        raise
    agent = instantiate(
        cfg.agent,
        observation_space=env.single_observation_space,
        action_space=env.single_action_space,
        device=str(device),
    )
    return env, agent


def _choice(group: str) -> str | None:
    """The option chosen for a config group in this Hydra run (``None`` outside one)."""
    if not HydraConfig.initialized():
        return None
    choice = HydraConfig.get().runtime.choices.get(group)
    return str(choice) if choice is not None else None


def group_choices() -> dict[str, str]:
    """The config-group options of this Hydra run (``env``, ``agent``, ...; empty outside one)."""
    if not HydraConfig.initialized():
        return {}
    return {
        str(group): str(choice)
        for group, choice in HydraConfig.get().runtime.choices.items()
        if choice is not None and not str(group).startswith("hydra")
    }


def checkpoint_meta(
    cfg: DictConfig, env: Any, trainer: dict[str, Any], choices: dict[str, str]
) -> dict[str, Any]:
    return {
        "format": 2,
        "config": OmegaConf.to_container(cfg, resolve=True),
        # with its interpolations, so that an override on resume (num_envs=...) reaches every key
        # that refers to it
        "config_unresolved": OmegaConf.to_container(cfg, resolve=False),
        "agent_config": OmegaConf.to_container(cfg.agent, resolve=True),
        "choices": choices,
        "observation_space": space_to_json(env.single_observation_space),
        "action_space": space_to_json(env.single_action_space),
        "trainer": trainer,
    }


class Checkpointer:
    """Writes a run's checkpoints: ``latest`` always, ``best`` by mean episode return since the
    previous checkpoint, and keeps the newest ``train.keep_checkpoints`` (plus the best)."""

    def __init__(
        self,
        run_dir: Path,
        cfg: DictConfig,
        env: Any,
        agent: Agent,
        collector: RolloutCollector,
        choices: dict[str, str] | None = None,
    ) -> None:
        self.directory = run_dir / "checkpoints"
        self.cfg, self.env, self.agent, self.collector = cfg, env, agent, collector
        self.choices = dict(choices or {})
        self.self_play = SelfPlay(env, agent)

    def write(self, trainer: dict[str, Any], evaluation: float | None = None) -> Path:
        """Write a checkpoint (rank 0 of a data-parallel run; the other ranks hand it their state).

        ``evaluation``: the score of an evaluation at this point (``train.eval_every``); in runs
        that evaluate during training the best checkpoint is the best evaluated one, else the one
        with the best mean training episode return since the checkpoint before."""
        name = f"update_{trainer['updates']:07d}"
        count = trainer.pop("score_count", 0)
        total = trainer.pop("score_sum", 0.0)
        score = total / count if count else None
        if self.cfg.train.get("eval_every"):
            score = evaluation
        best = trainer.get("best_score")
        is_best = score is not None and (best is None or score > best)
        if is_best:
            trainer["best_score"] = score
        trainer["score_sum"], trainer["score_count"] = 0.0, 0
        agent_state = self.agent.state_dict()
        ranks = self.rank_states(agent_state)
        if distributed.rank() != 0:
            return self.directory / name
        state = {
            "agent": agent_state,
            "collector": self.collector.state_dict(),
            "rng": rng_state(),
            "trainer": dict(trainer),
        }
        if self.self_play.state is not None:
            state["self_play"] = self.self_play.state
        if ranks is not None and len(ranks) > 1:
            state["ranks"] = ranks
        meta = checkpoint_meta(self.cfg, self.env, dict(trainer), self.choices) | {"score": score}
        directory = save_checkpoint(self.directory / name, state, meta)
        write_latest(self.directory, name)
        if is_best:
            write_pointer(self.directory, BEST_FILE, name)
        prune_checkpoints(self.directory, self.cfg.train.get("keep_checkpoints"))
        return directory

    def rank_states(self, agent_state: dict[str, Any]) -> list[dict[str, Any]] | None:
        """Every rank's own state (env, RNG, the per-rank parts of ``agent_state``) on rank 0;
        checks that the ranks' networks agree. ``None`` on the other ranks and in one process."""
        if not distributed.is_distributed():
            return None
        distributed.check_in_sync(distributed.modules_of(self.agent), "checkpoint")
        keys = [key for key in getattr(self.agent, "rank_state_keys", ()) if key in agent_state]
        own = {key: agent_state[key] for key in keys}
        return distributed.gather_objects(
            {"collector": self.collector.state_dict(), "rng": rng_state(), "agent": own}
        )


def make_collector(cfg: DictConfig, env: Any, agent: Agent, seed: int | None = None) -> RolloutCollector:
    return RolloutCollector(
        env,
        agent,
        seed=int(cfg.seed) if seed is None else seed,
        samples_every=int(cfg.train.get("samples_every", 10)),
        num_samples=int(cfg.train.get("num_samples", 4)),
    )


def refresh_self_play(env: Any, agent: Agent) -> bool:
    """Hand a frozen copy of the learning agent to envs that play against it.

    Returns whether the env plays it (``set_self_play_policy`` returned True)."""
    setter = getattr(env, "set_self_play_policy", None)
    if setter is None:
        return False
    snapshot_fn = getattr(agent, "policy_snapshot", None)
    if snapshot_fn is not None:
        return bool(setter(snapshot_fn()))
    snapshot = copy.deepcopy(agent)
    return bool(setter(lambda obs, mask: snapshot.act(obs, mask, deterministic=False)))


class SelfPlay:
    """The self-play snapshot of a run, kept so that a resumed run plays the same opponent.

    The snapshot is remade from the agent's state at the last refresh: that state is loaded
    into the live agent, the snapshot taken as during training, and the live state put back.
    """

    def __init__(self, env: Any, agent: Agent) -> None:
        self.env, self.agent = env, agent
        self.state: dict[str, Any] | None = None

    def refresh(self) -> None:
        if refresh_self_play(self.env, self.agent):
            self.state = copy.deepcopy(self.agent.state_dict())

    def restore(self, state: dict[str, Any] | None) -> None:
        if state is None:
            return
        live = self.agent.state_dict()
        self.agent.load_state_dict(state)
        self.refresh()
        self.agent.load_state_dict(live)


class Interrupted(Exception):
    """Training stopped by a signal after writing a checkpoint; ``signum`` says which."""

    def __init__(self, signum: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint written to {checkpoint}")
        self.signum = signum
        self.checkpoint = checkpoint


class StopSignals:
    """While active, SIGTERM and SIGINT ask the loop to stop at the end of the current update.

    A second signal of the same kind acts at once (its default action), for a user who does
    not want to wait for the update to finish.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals: main thread only
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def progress_summary(metrics: dict[str, float]) -> dict[str, str]:
    """What the progress bar shows of the last update: win/loss rates (envs with outcomes),
    else the mean episode return (score) and, with a KL penalty, the KL per episode and its target."""
    shown: dict[str, str] = {}
    if "charts/win_rate" in metrics:
        shown["win"] = f"{metrics['charts/win_rate']:.2f}"
        shown["loss"] = f"{metrics['charts/loss_rate']:.2f}"
    elif "charts/episode_return" in metrics:
        shown["score"] = f"{metrics['charts/episode_return']:.3g}"
    if "charts/kl" in metrics:
        shown["kl"] = f"{metrics['charts/kl']:.2f}"
        if "charts/kl_target" in metrics:
            shown["kl"] += f"/{metrics['charts/kl_target']:g}"
    return shown


def train_loop(
    cfg: DictConfig,
    env: Any,
    agent: Agent,
    collector: RolloutCollector,
    checkpointer: Checkpointer,
    logger: Any,
    trainer: dict[str, Any],
) -> dict[str, Any]:
    """Collect and learn until ``train.total_env_steps``; returns the trainer counters.

    SIGTERM and SIGINT stop the loop after the current update with a checkpoint
    (:class:`Interrupted`); so does Ctrl-C arriving as ``KeyboardInterrupt``.
    """
    total = int(cfg.train.total_env_steps)
    bar = tqdm(
        total=total,
        initial=min(trainer["env_steps"], total),
        unit="step",
        disable=not show_progress(cfg.train.progress) or distributed.rank() > 0,
        desc=f"{cfg.env.name}/{type(agent).__name__}",
        dynamic_ncols=True,
    )
    self_play = checkpointer.self_play
    if trainer.get("updates", 0) == 0 or self_play.state is None:
        self_play.refresh()
    started = time.perf_counter()
    seconds_at_start = float(trainer.get("train_seconds", 0.0))
    steps_at_start = trainer["env_steps"]

    def checkpoint(evaluation: float | None = None) -> Path:
        trainer["train_seconds"] = seconds_at_start + time.perf_counter() - started
        flush = getattr(logger, "flush", None)
        if flush is not None:
            flush()  # what was logged up to a checkpoint survives a kill after it
        return checkpointer.write(trainer, evaluation)

    with StopSignals() as signals:
        try:
            max_seconds = cfg.train.get("max_seconds")
            parallel_run = distributed.is_distributed()
            while trainer["env_steps"] < total:
                trained_seconds = seconds_at_start + time.perf_counter() - started
                out_of_time = max_seconds is not None and trained_seconds >= max_seconds
                if parallel_run:  # every rank stops at the same update
                    flags = distributed.sum_floats(out_of_time, signals.received or 0)
                    out_of_time, stopped = flags[0] > 0, flags[1] > 0
                    if stopped:  # a signal reached one rank: all checkpoint and stop
                        raise Interrupted(signals.received or signal.SIGTERM, checkpoint())
                if out_of_time:
                    log.info(
                        "stopping at train.max_seconds=%s after %d env steps",
                        max_seconds,
                        trainer["env_steps"],
                    )
                    break
                rollout, episodes = collector.collect(agent.rollout_steps)
                metrics = agent.learn(rollout)
                trainer["env_steps"] += (
                    int(distributed.sum_floats(rollout.num_valid)[0]) if parallel_run else rollout.num_valid
                )
                trainer["updates"] += 1
                trainer["score_sum"] = trainer.get("score_sum", 0.0) + float(sum(episodes.returns))
                trainer["score_count"] = trainer.get("score_count", 0) + len(episodes.returns)
                bar.update(rollout.num_valid)
                if trainer["updates"] % cfg.train.self_play_every == 0:
                    self_play.refresh()
                elapsed = time.perf_counter() - started
                metrics |= episodes.metrics()
                metrics["perf/steps_per_second"] = (trainer["env_steps"] - steps_at_start) / max(
                    elapsed, 1e-9
                )
                if trainer["updates"] % cfg.train.log_every == 0:
                    logger.log(metrics, trainer["env_steps"])
                    bar.set_postfix(progress_summary(metrics), refresh=False)
                for tag, text in getattr(episodes, "texts", {}).items():
                    logger.text(tag, text, trainer["env_steps"])
                eval_every = cfg.train.get("eval_every")
                if eval_every and trainer["updates"] % eval_every == 0:
                    checkpoint(evaluate_during_training(cfg, agent, logger, trainer["env_steps"]))
                elif trainer["updates"] % cfg.train.checkpoint_every == 0:
                    checkpoint()
                if signals.received is not None and not parallel_run:
                    raise Interrupted(signals.received, checkpoint())
        except KeyboardInterrupt:
            bar.close()
            path = checkpoint()
            log.warning("interrupted at %d env steps; checkpoint written to %s", trainer["env_steps"], path)
            raise
        finally:
            bar.close()
    trainer["train_seconds"] = seconds_at_start + time.perf_counter() - started
    return trainer


def evaluation_score(cfg: DictConfig, results: dict[str, float]) -> float:
    """What ``train.eval_every`` ranks checkpoints by: the ``objective`` metric when it is one of
    the results, else the mean over the evaluation settings of the mean episode return."""
    objective = cfg.get("objective")
    if objective and objective in results:
        return float(results[objective])
    returns = [value for key, value in results.items() if key.endswith("/return_mean")]
    return float(np.mean(returns)) if returns else float("nan")


def evaluate_during_training(cfg: DictConfig, agent: Agent, logger: Any, env_steps: int) -> float | None:
    """Evaluate the deterministic policy now (rank 0), log ``eval/*`` curves; its score, or None
    on the other ranks. Same episodes every time (a fixed seed), so the curve compares like with like."""
    if distributed.rank() != 0:
        return None
    episodes = cfg.train.get("eval_episodes")
    results = evaluate_agent(
        agent, cfg.env, seed=int(cfg.seed) + 2_000_003, device=agent.device, episodes=episodes
    )
    score = evaluation_score(cfg, results)
    logger.log({**results, "eval/score": score}, env_steps)
    return score


def restore(
    cfg: DictConfig, agent: Agent, collector: RolloutCollector, self_play: SelfPlay
) -> dict[str, Any]:
    """Load agent, collector (env state), self-play snapshot, RNG and counters from
    ``cfg.resume``; fresh counters when it is unset."""
    if not cfg.resume:
        return {"env_steps": 0, "updates": 0}
    directory = resolve_checkpoint(cfg.resume)
    state, _ = load_checkpoint(directory)
    saved_world, world = len(state.get("ranks") or [None]), distributed.world_size()
    if saved_world != world:
        raise ResumeError(
            f"checkpoint {directory} was written by {saved_world} process(es), this run has {world}; "
            f"resume it with as many (torchrun --nproc_per_node={saved_world}; without torchrun for 1)"
        )
    own = state["ranks"][distributed.rank()] if world > 1 else None
    if own is not None:
        state = {**state, "agent": {**state["agent"], **own["agent"]}}
        state = {**state, "collector": own["collector"], "rng": own["rng"]}
    load_agent_state(agent, state, directory)
    try:
        self_play.restore(state.get("self_play"))
        if "collector" in state:
            collector.load_state_dict(state["collector"])
        set_rng_state(state["rng"])
        trainer = dict(state["trainer"])
        int(trainer["env_steps"]), int(trainer["updates"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as error:
        raise ResumeError(
            f"checkpoint {directory} does not fit this run's env: {type(error).__name__}: {error}"
        ) from None
    log.info("resumed from %s at %d env steps", cfg.resume, trainer["env_steps"])
    return trainer


class ResumeError(ValueError):
    """``resume=`` cannot continue the saved run as asked (another pair, a foreign checkpoint)."""


def _override_key(override: str) -> tuple[str, str] | None:
    """``(key, value)`` of a command-line override (``+``/``++`` stripped); ``None`` for deletions."""
    if override.startswith("~") or "=" not in override:
        return None
    key, value = override.split("=", 1)
    return key.lstrip("+"), value


def resume_config(cfg: DictConfig, overrides: list[str] | None = None) -> tuple[DictConfig, dict[str, str]]:
    """For ``resume=<run>``: the saved run's config with the overrides this command gives.

    The saved config may only name registered classes (:mod:`agents.run.registry`); values the
    user overrides on the command line are the user's own. A config-group override (``agent=``,
    ``env=``, ...) must repeat the saved choice: resuming a run as another env/agent pair is
    refused. Returns the config and the saved group choices.
    """
    if not cfg.resume:
        return cfg, group_choices()
    directory = resolve_checkpoint(cfg.resume)
    recover_checkpoints(directory.parent)
    directory = resolve_checkpoint(cfg.resume)
    _, meta = load_checkpoint(directory)
    source = directory / "meta.json"
    saved_config = meta.get("config_unresolved", meta.get("config"))
    if not isinstance(saved_config, dict):
        raise ResumeError(f"{source}: has no saved run config (key 'config'); cannot resume from it")
    saved_choices = {str(k): str(v) for k, v in dict(meta.get("choices") or {}).items()}
    current_choices = group_choices()
    dotted: list[str] = []
    for override in overrides or []:
        parsed = _override_key(override)
        if parsed is None:
            raise ResumeError(f"override {override!r} cannot be applied on resume (only key=value)")
        key, value = parsed
        if key == "resume":
            continue
        if key in current_choices or key in saved_choices:
            saved = saved_choices.get(key)
            if saved is not None and saved != current_choices.get(key, value):
                raise ResumeError(
                    f"cannot resume {cfg.resume} with {key}={value}: the saved run is "
                    f"{_pair(saved_choices)}; resume keeps the saved {key} ({key}={saved}) or drop {key}="
                )
            continue
        dotted.append(key)
    check_trusted(saved_config, str(source), trusted=dotted)
    merged = OmegaConf.create(saved_config)
    for key in dotted:
        OmegaConf.update(merged, key, OmegaConf.select(cfg, key), merge=False, force_add=True)
    for key in ("agent._target_", "env.vector._target_"):
        before, after = OmegaConf.select(OmegaConf.create(saved_config), key), OmegaConf.select(merged, key)
        if before != after:
            raise ResumeError(f"cannot resume {cfg.resume} with {key}={after}: the saved run used {before}")
    merged.resume = str(cfg.resume)
    return merged, saved_choices


def _pair(choices: dict[str, str]) -> str:
    return f"env={choices.get('env', '?')} agent={choices.get('agent', '?')}"


RUN_MARKER = ".rlenv-run"


def claim_run_dir(run_dir: Path) -> None:
    """Make ``run_dir`` this run's own: refuse one that another run already uses.

    The marker file is created exclusively, so of two runs started on the same directory
    only one proceeds; the other fails naming the directory.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    taken = [name for name in ("config.yaml", "checkpoints", "metrics.json") if (run_dir / name).exists()]
    try:
        fd = os.open(run_dir / RUN_MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        taken.append(RUN_MARKER)
    else:
        with os.fdopen(fd, "w") as file:
            file.write(json.dumps({"pid": os.getpid(), "started": time.time()}) + "\n")
        if taken:
            os.unlink(run_dir / RUN_MARKER)
    if taken:
        raise FileExistsError(
            f"run directory {run_dir} already holds a run ({', '.join(taken)}); "
            f"start in a new directory (hydra.run.dir=...) or continue that run with resume={run_dir}"
        )


def run(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train, checkpoint and evaluate as ``cfg`` says; returns the final metrics.

    Args:
        cfg: the composed config.
        run_dir: a new directory for this run (a directory another run uses is refused).
        overrides: the command-line overrides (on ``resume=``, these change the saved config;
            taken from Hydra when ``None`` inside a Hydra app).
    """
    run_dir = Path(run_dir)
    check_config(cfg)
    if overrides is None and HydraConfig.initialized():
        overrides = list(HydraConfig.get().overrides.task)
    cfg, choices = resume_config(cfg, overrides)
    check_config(cfg)
    ranks = parallel.start(cfg, resolve_device(cfg.device))
    try:
        return _run(cfg, run_dir, overrides, choices, ranks)
    finally:
        parallel.stop()


def _run(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str] | None,
    choices: dict[str, str],
    ranks: parallel.Ranks,
) -> dict[str, Any]:
    run_dir = Path(distributed.broadcast_object(str(run_dir)))  # rank 0's directory
    if ranks.rank == 0:
        claim_run_dir(run_dir)
    threads = set_job_threads(cfg.train.torch_threads)
    seed_everything(int(cfg.seed))  # the same initial networks on every rank
    device = ranks.device
    env, agent = build(cfg, device, **ranks.env_overrides)
    parallel.check_agent(agent)
    if ranks.world > 1:
        seed_everything(ranks.seed)  # each rank acts with its own random numbers
    collector = make_collector(cfg, env, agent, seed=ranks.seed)
    checkpointer = Checkpointer(run_dir, cfg, env, agent, collector, choices)
    with_logger = cfg.logger and ranks.rank == 0
    logger = instantiate(cfg.logger, log_dir=str(run_dir)) if with_logger else NullLogger()
    try:
        if ranks.rank == 0:
            logger.text("config", "```\n" + OmegaConf.to_yaml(cfg) + "\n```")
            write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        trainer = restore(cfg, agent, collector, checkpointer.self_play)
        trainer = train_loop(cfg, env, agent, collector, checkpointer, logger, trainer)
        checkpointer.write(trainer)
        if ranks.rank > 0:  # rank 0 evaluates and reports
            return {}
        seed, progress = int(cfg.seed) + 1_000_003, show_progress(cfg.train.progress)
        results = evaluate_agent(agent, cfg.env, seed=seed, device=device, progress=progress)
        title = f"{cfg.env.name} / {type(agent).__name__}: deterministic policy"
        if in_multirun():  # which job of the sweep this table belongs to
            title += f" ({' '.join(overrides or []) or 'no overrides'})"
        print(format_table(results, title=title))
        final = {
            **results,
            "perf/train_seconds": trainer["train_seconds"],
            "perf/env_steps": trainer["env_steps"],
            "perf/torch_threads": threads,
        }
        logger.log(final, trainer["env_steps"])
        logger.hparams(hyperparameters(OmegaConf.to_container(cfg, resolve=True)), results)
        write_metrics(run_dir / "metrics.json", final)
    finally:
        logger.close()
        env.close()
    return final


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    write_text(path, json.dumps(metrics, indent=2, sort_keys=True) + "\n")


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def _main(cfg: DictConfig) -> float:
    try:
        metrics = run(cfg, HydraConfig.get().runtime.output_dir)
    except Interrupted as stop:
        log.warning("%s; continue with resume=%s", stop, HydraConfig.get().runtime.output_dir)
        sys.exit(128 + stop.signum)
    return float(metrics.get(cfg.get("objective") or "", 0.0))


def main() -> None:
    """The command line entry point (``python -m agents.train``, ``rlenv-train``, under ``torchrun`` too)."""
    parallel.main_argv()
    _main()


if __name__ == "__main__":
    main()
