"""Typed configs: Hydra structured configs (dataclasses) for the train loop, the agents and the envs.

Each YAML of ``conf/`` that has a schema names it first in its defaults list (``ppo_schema``,
``train_schema``, ...); Hydra then checks every value's type as the config is composed, so
``train.total_env_steps=abc`` fails with the key in the message. Ranges and choices are checked
by :func:`check_config` before anything is built: ``train.checkpoint_every=0`` or
``agent.max_grad_norm=-1`` fail with ``ConfigError`` naming the key, the value and what is valid.

The values themselves (the defaults) live in the YAML files; the dataclasses say what each
key is and which values it accepts. An agent or env of the user's own needs no schema.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

Check = Callable[[Any], str | None]


class ConfigError(ValueError):
    """A config value out of its valid range; the message names the key."""


def at_least(low: float) -> Check:
    return lambda value: None if value >= low else f"must be >= {low}"


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def unit_interval(value: Any) -> str | None:
    return None if 0.0 <= value <= 1.0 else "must be in [0, 1]"


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {list(choices)}"


def optional(check: Check, meaning: str) -> Check:
    """``check`` for values that may also be ``None`` (``meaning``: what null does)."""

    def checked(value: Any) -> str | None:
        if value is None:
            return None
        problem = check(value)
        return f"{problem} or null ({meaning})" if problem else None

    return checked


def checked(default: Any = MISSING, check: Check | None = None) -> Any:
    """A dataclass field with a default and a range check for :func:`check_config`."""
    return field(default=default, metadata={"check": check} if check else {})


@dataclass
class TrainConfig:
    """The train loop (``train.*``).

    Attributes:
        total_env_steps: env steps to train for, padding excluded (``2e6`` is accepted).
        log_every: updates between scalar logs.
        checkpoint_every: updates between checkpoints.
        max_seconds: stop training once this much training time has passed (counted across
            resumes; null: no limit), then checkpoint and evaluate as at the end of the steps.
        keep_checkpoints: checkpoints kept (the newest K, plus the best by mean episode return
            since the checkpoint before; null keeps all).
        self_play_every: updates between refreshes of the self-play snapshot (envs that have one).
        samples_every: updates between tables of sample texts (envs that report completions; 0: never).
        num_samples: rows per table of sample texts.
        torch_threads: ``torch.set_num_threads`` (null keeps torch's default).
        progress: show a progress bar.
        eval_every: updates between evaluations during training (null: only the final one). Each
            logs ``eval/<setting>/*`` and ``eval/score`` curves and writes a checkpoint; the best
            checkpoint is then the best evaluated (``objective`` if it names an evaluation
            metric, else the mean return over the settings).
        eval_episodes: episodes per setting of those evaluations (null: ``env.evaluation.episodes``).
    """

    total_env_steps: float = checked(check=positive)
    log_every: int = checked(1, at_least(1))
    checkpoint_every: int = checked(100, at_least(1))
    keep_checkpoints: int | None = checked(3, optional(at_least(1), "keep all"))
    max_seconds: float | None = checked(None, optional(positive, "no time limit"))
    self_play_every: int = checked(10, at_least(1))
    samples_every: int = checked(10, at_least(0))
    num_samples: int = checked(4, at_least(0))
    torch_threads: int | None = checked(None, optional(at_least(1), "torch's default"))
    progress: bool = True
    eval_every: int | None = checked(None, optional(at_least(1), "only the final evaluation"))
    eval_episodes: int | None = checked(None, optional(at_least(1), "env.evaluation.episodes"))


@dataclass
class EvaluationConfig:
    """The final deterministic evaluation (``env.evaluation.*``).

    Attributes:
        episodes: episodes per setting.
        num_envs: envs stepped together while evaluating.
        settings: setting name -> overrides of the env's vector constructor (``{}``: as trained).
        max_steps: vector steps per setting after which evaluation stops with the episodes
            finished so far (a guard against policies that never end an episode).
    """

    episodes: int = checked(check=at_least(1))
    num_envs: int = checked(check=at_least(1))
    max_steps: int = checked(100_000, at_least(1))
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class EnvConfig:
    """An env (``env.*``).

    Attributes:
        name: shown in logs and tables.
        vector: the vector env's constructor (``_target_`` and its arguments).
        evaluation: how the trained policy is evaluated.
    """

    name: str = MISSING
    vector: Any = MISSING
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


@dataclass
class GymEnvConfig(EnvConfig):
    """Any registered Gymnasium env (``env=gym``).

    Attributes:
        id: the Gymnasium id (``CartPole-v1``; ``module:Id`` imports ``module`` first).
        kwargs: the env's constructor arguments (``env.kwargs={is_slippery: false}``).
    """

    id: str = MISSING
    kwargs: Any = None


@dataclass
class TextEnvConfig(EnvConfig):
    """The text env (``env=text``).

    Attributes:
        model: the policy LM and its tokenizer: ``smollm2``, ``tiny``, a local model directory
            or a Hugging Face id in the local cache.
    """

    model: str = MISSING


@dataclass
class PPOConfig:
    """:class:`agents.ppo.PPOAgent` (``agent=ppo``); see its docstring for each argument."""

    _target_: str = "agents.ppo.PPOAgent"
    device: str = MISSING
    network: Any = MISSING
    optimizer: Any = MISSING
    lr_schedule: Any = None
    rollout_steps: int = checked(check=at_least(1))
    gamma: float = checked(check=unit_interval)
    gae_lambda: float = checked(check=unit_interval)
    clip_coef: float = checked(check=positive)
    clip_value_loss: Any = True
    value_coef: float = checked(check=at_least(0))
    entropy_coef: float = 0.0
    logit_coef: float = checked(0.0, at_least(0))
    num_epochs: int = checked(check=at_least(1))
    num_minibatches: int = checked(check=at_least(1))
    normalize_advantages: bool = True
    max_grad_norm: float | None = checked(None, optional(positive, "no clipping"))
    target_kl: float | None = checked(None, optional(positive, "no early stop"))
    kl: Any = None
    whiten_rewards: bool = False
    bootstrap_truncated: bool = True
    kl_estimator: str = checked("k1", one_of("k1", "k2", "k3"))
    kl_placement: str = checked("reward", one_of("reward", "loss"))
    advantage: str = checked("gae", one_of("gae", "grpo", "rloo"))
    group_size: int = checked(1, at_least(1))
    kl_ceiling: float | None = checked(None, optional(positive, "no ceiling"))
    group_baseline: str = checked("episode", one_of("episode", "step"))


@dataclass
class EpsilonGreedyConfig:
    """Acting shared by the Q-learning agents."""

    device: str = MISSING
    rollout_steps: int = checked(check=at_least(1))
    gamma: float = checked(check=unit_interval)
    epsilon_start: float = checked(check=unit_interval)
    epsilon_end: float = checked(check=unit_interval)
    epsilon_decay_steps: int = checked(check=at_least(0))


@dataclass
class DQNConfig(EpsilonGreedyConfig):
    """:class:`agents.dqn.agent.DQNAgent` (``agent=qlearning``); see its docstring for each argument."""

    _target_: str = "agents.dqn.agent.DQNAgent"
    network: Any = MISSING
    optimizer: Any = MISSING
    lr_schedule: Any = None
    buffer_size: int = checked(check=at_least(1))
    batch_size: int = checked(check=at_least(1))
    learning_starts: int = checked(check=at_least(0))
    train_frequency: int = checked(check=at_least(1))
    gradient_steps: int = checked(check=at_least(0))
    target_update: str = checked("hard", one_of("hard", "polyak"))
    target_update_interval: int = checked(check=at_least(1))
    tau: float = checked(0.005, unit_interval)
    double_q: bool = True
    max_grad_norm: float | None = checked(None, optional(positive, "no clipping"))
    loss: str = checked("huber", one_of("huber", "mse"))
    store_action_masks: bool = True
    temperature: float | None = checked(None, optional(positive, "epsilon-greedy only"))
    augment: Any = None


@dataclass
class TabularQConfig(EpsilonGreedyConfig):
    """:class:`agents.dqn.tabular.TabularQAgent` (``agent=qlearning_tabular``); see its docstring."""

    _target_: str = "agents.dqn.tabular.TabularQAgent"
    learning_rate: float = checked(check=unit_interval)
    step_size: str = checked("constant", one_of("constant", "visits"))
    min_learning_rate: float = checked(0.0, unit_interval)
    initial_q: float = 0.0
    max_states: int = checked(10_000_000, at_least(1))


SCHEMAS: dict[tuple[str | None, str], type] = {
    (None, "train_schema"): TrainConfig,
    ("env", "gym_schema"): GymEnvConfig,
    ("env", "text_schema"): TextEnvConfig,
    ("env", "env_schema"): EnvConfig,
    ("agent", "ppo_schema"): PPOConfig,
    ("agent", "dqn_schema"): DQNConfig,
    ("agent", "tabular_schema"): TabularQConfig,
}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (safe to call more than once)."""
    store = ConfigStore.instance()
    for (group, name), node in SCHEMAS.items():
        package = "train" if name == "train_schema" else None
        store.store(group=group, name=name, node=node, package=package)


def check_config(cfg: Any, path: str = "") -> None:
    """Raise :class:`ConfigError` for the first value of a typed node outside its valid range."""
    if isinstance(cfg, ListConfig):
        for index, item in enumerate(cfg):
            check_config(item, f"{path}[{index}]")
        return
    if not isinstance(cfg, DictConfig):
        return
    schema = OmegaConf.get_type(cfg)
    checks = {}
    if schema is not None and dataclasses.is_dataclass(schema):
        checks = {f.name: f.metadata["check"] for f in dataclasses.fields(schema) if "check" in f.metadata}
    for key in cfg:
        name = str(key)
        where = f"{path}.{name}" if path else name
        if OmegaConf.is_missing(cfg, name):
            continue
        value = cfg[name]
        if name in checks and not isinstance(value, (DictConfig, ListConfig)):
            problem = checks[name](value)
            if problem:
                raise ConfigError(f"{where}={value!r} {problem}")
        check_config(value, where)
