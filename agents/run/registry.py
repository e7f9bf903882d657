"""What a saved config may name: the allow-list of ``_target_`` classes and functions.

A config composed from the user's own command line and YAML files is the user's to trust.
A config read back from a file (a checkpoint's ``meta.json`` on ``resume=``,
:func:`agents.load_agent` and ``agents.evaluate``) is not: it may only name the targets
registered here, so opening a checkpoint never chooses what code runs. Every ``_target_``
anywhere in such a config is checked (nested ones too, since Hydra instantiates them
recursively), as are the other strings that would import code (``module:EnvId`` Gymnasium
ids) and OmegaConf interpolations (``${...}``) other than references to keys and the
config-only resolvers ``oc.select`` and ``num_updates``.

Register your own agent, network or env with :func:`register_target` (or put it on the
command line of the resume: an override the user gives is trusted).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

TARGETS: set[str] = {
    # agents, their networks and parts
    "agents.ppo.PPOAgent",
    "agents.ppo.agent.PPOAgent",
    "agents.dqn.DQNAgent",
    "agents.dqn.agent.DQNAgent",
    "agents.dqn.TabularQAgent",
    "agents.dqn.tabular.TabularQAgent",
    "agents.networks.ActorCriticMLP",
    "agents.networks.QNetworkMLP",
    "agents.networks.mlp.ActorCriticMLP",
    "agents.networks.mlp.QNetworkMLP",
    "agents.networks.lm.LMActorCritic",
    "agents.networks.lm.LMQNetwork",
    "agents.ppo.kl.AdaptiveKLController",
    "agents.ppo.kl.FixedKLController",
    "agents.ppo.kl.PIKLController",
    "agents.core.augment.CellSymmetries",
    "rlenv.tictactoe.rules.board_symmetries",
    # envs
    "rlenv.gym_vector.make_vector_env",
    "rlenv.text.vector_env.TextGenerationVectorEnv",
    "rlenv.tictactoe.vector_env.TicTacToeVectorEnv",
    "rlenv.tools.shopbot.make_shopbot_vector_env",
    "rlenv.tools.review_qa.make_review_qa_vector_env",
    # prompts and rewards of tasks (conf/task/)
    "rlenv.tools.pal.math_prompts",
    "rlenv.tools.pal.MathReward",
    # loggers
    "rlenv.logger.TensorBoardLogger",
    "rlenv.logger.NullLogger",
    "rlenv.logger.CSVLogger",
    "rlenv.logger.WandbLogger",
}
# torch optimizers and learning-rate schedules by name (classes of torch itself)
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam")
SCHEDULES = (
    "LinearLR",
    "ConstantLR",
    "CosineAnnealingLR",
    "ExponentialLR",
    "StepLR",
    "MultiStepLR",
    "PolynomialLR",
)
TARGETS.update(f"torch.optim.{name}" for name in OPTIMIZERS)
TARGETS.update(f"torch.optim.lr_scheduler.{name}" for name in SCHEDULES)

_INTERPOLATION = re.compile(r"\$\{")
# interpolations a saved (unresolved) config may keep: references to other keys, and the
# resolvers that only read the config (no environment, no files, no code)
_SAFE_INTERPOLATION = re.compile(r"\$\{(?:[A-Za-z_][\w.]*|(?:oc\.select|num_updates):[\w.,:+\-\s]*)\}")
_GYM_MAKERS = ("rlenv.gym_vector.make_vector_env",)


class UntrustedConfigError(ValueError):
    """A config read from a file names code that is not on the allow-list."""


def register_target(*paths: str) -> None:
    """Allow ``paths`` (dotted ``module.Name``) as ``_target_`` in configs read from files."""
    for path in paths:
        if not isinstance(path, str) or not re.fullmatch(r"[A-Za-z_][\w.]*\.[A-Za-z_]\w*", path):
            raise ValueError(f"a target must be a dotted path such as 'mypkg.agents.MyAgent', got {path!r}")
        TARGETS.add(path)


def untrusted_entries(config: Any, trusted: Iterable[str] = ()) -> list[str]:
    """Problems with ``config`` (a plain nested dict/list), one string per offending key.

    ``trusted``: dotted key paths the user set explicitly (their values are not checked).
    """
    trusted_keys = set(trusted)
    problems: list[str] = []
    _walk(config, "", trusted_keys, problems)
    return problems


def check_trusted(config: Any, source: str, trusted: Iterable[str] = ()) -> None:
    """Raise :class:`UntrustedConfigError` naming ``source`` and each offending key.

    Args:
        config: the config read from ``source`` (plain dicts and lists).
        source: the file it came from, for the message.
        trusted: dotted key paths whose values the user gave explicitly.
    """
    problems = untrusted_entries(config, trusted)
    if problems:
        listed = "; ".join(problems)
        raise UntrustedConfigError(
            f"refusing to load {source}: {listed}. A checkpoint may only name registered classes "
            "(agents.run.registry.TARGETS); register your own with "
            "agents.run.registry.register_target('pkg.Class'), or give the value on the command line"
        )


def _safe_interpolations(text: str) -> bool:
    """Whether every ``${...}`` in ``text`` is a key reference or a config-only resolver."""
    remaining = text
    for _ in range(8):  # nested references such as ${num_updates:${train.total_env_steps},...}
        stripped = _SAFE_INTERPOLATION.sub("", remaining)
        if stripped == remaining:
            break
        remaining = stripped
    return "${" not in remaining


def _walk(node: Any, path: str, trusted: set[str], problems: list[str]) -> None:
    if isinstance(node, dict):
        target = node.get("_target_")
        key = f"{path}._target_" if path else "_target_"
        if "_target_" in node and key not in trusted:
            if not isinstance(target, str) or target not in TARGETS:
                problems.append(f"{key}={target!r} is not a registered target")
        if target in _GYM_MAKERS:
            env_id = node.get("id")
            id_key = f"{path}.id" if path else "id"
            if isinstance(env_id, str) and ":" in env_id and id_key not in trusted:
                problems.append(f"{id_key}={env_id!r} would import module {env_id.split(':')[0]!r}")
        for name, value in node.items():
            if not isinstance(name, str):
                problems.append(f"{path or '<root>'} has a non-string key {name!r}")
                continue
            if name == "_target_":
                continue
            _walk(value, f"{path}.{name}" if path else name, trusted, problems)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _walk(value, f"{path}[{index}]", trusted, problems)
    elif isinstance(node, str):
        if _INTERPOLATION.search(node) and path not in trusted and not _safe_interpolations(node):
            problems.append(f"{path}={node!r} is an interpolation that runs a resolver")
    elif not (node is None or isinstance(node, (bool, int, float))):
        problems.append(f"{path} holds a {type(node).__name__}, not plain data")
