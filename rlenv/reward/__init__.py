"""Reward model: a BERT-like encoder with a scalar head, its pairwise loss and its training."""

from typing import Any

from rlenv.reward.features import FrozenFeatureCache
from rlenv.reward.loss import bradley_terry_loss, pairwise_accuracy
from rlenv.reward.model import RewardModel, mean_pool, resolve_encoder
from rlenv.reward.scoring import MonitoredReward, RewardModelReward
from rlenv.reward.tiny import tiny_reward_model, tiny_tokenizer

_TRAIN_NAMES = ("RewardTrainConfig", "evaluate_pairs", "train_reward_model")


def __getattr__(name: str) -> Any:
    # train.py is also run as ``python -m rlenv.reward.train``: import it only on use.
    if name in _TRAIN_NAMES:
        from rlenv.reward import train

        return getattr(train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FrozenFeatureCache",
    "MonitoredReward",
    "RewardModel",
    "RewardModelReward",
    "RewardTrainConfig",
    "bradley_terry_loss",
    "evaluate_pairs",
    "mean_pool",
    "pairwise_accuracy",
    "resolve_encoder",
    "tiny_reward_model",
    "tiny_tokenizer",
    "train_reward_model",
]
