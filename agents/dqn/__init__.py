"""Q-learning: DQN (replay, target network, double Q) and tabular Q, epsilon-greedy over legal actions."""

from agents.dqn.agent import DQNAgent
from agents.dqn.tabular import TabularQAgent

__all__ = ["DQNAgent", "TabularQAgent"]
