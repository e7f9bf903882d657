"""What every agent shares: the Agent protocol, typed rollouts and batches, replay, spaces as JSON."""

from agents.core.base import (
    Agent,
    EpisodeEvaluation,
    EpisodePolicy,
    Observation,
    PolicyStep,
    Rollout,
    batch_size,
    map_observation,
    masked_logits,
    move_observation,
)

__all__ = [
    "Agent",
    "EpisodeEvaluation",
    "EpisodePolicy",
    "Observation",
    "PolicyStep",
    "Rollout",
    "batch_size",
    "map_observation",
    "masked_logits",
    "move_observation",
]
