"""The one collector: steps any vector env with an agent (same-step, next-step or disabled autoreset)."""

from agents.collect.collector import EpisodeStats, RolloutCollector, autoreset_mode

__all__ = ["EpisodeStats", "RolloutCollector", "autoreset_mode"]
