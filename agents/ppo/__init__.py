"""PPO: the clipped-surrogate loss, one update loop over step or whole-episode batches, the KL penalty."""

from agents.ppo.agent import PPOAgent
from agents.ppo.kl import AdaptiveKLController, FixedKLController, KLController
from agents.ppo.loss import ppo_loss, ppo_update

__all__ = ["AdaptiveKLController", "FixedKLController", "KLController", "PPOAgent", "ppo_loss", "ppo_update"]
