"""Networks the agents plug in: MLPs for vector observations; the language models with LoRA,
their reference policy and their KV cache (the heavy libraries load only when an LM is built)."""

from agents.networks.lm import LMActorCritic, LMQNetwork
from agents.networks.mlp import ActorCriticMLP, ObservationEncoder, QNetworkMLP

__all__ = ["ActorCriticMLP", "LMActorCritic", "LMQNetwork", "ObservationEncoder", "QNetworkMLP"]
