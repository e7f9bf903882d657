"""Deep Q-learning: a Q-network with replay and a target network, and the acting and TD
functions it shares with tabular Q-learning (:mod:`agents.dqn.tabular`).

:class:`DQNAgent` only sees observations (tensors or dicts of tensors) and legal-action masks;
it never knows which environment produced them. It takes any network that maps a batch of
observations (B, ...) to Q-values (B, A), so the same agent runs on a small MLP over a board or
on a language model whose head scores the vocabulary.

Exploration is epsilon-greedy over legal actions only, with epsilon decaying linearly over
the env steps seen by :meth:`learn`. Targets bootstrap unless a step *terminated*; a
truncated step bootstraps from its final observation. A next state without any legal action
bootstraps with value 0.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Literal

import gymnasium
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.core import distributed
from agents.core.base import Observation, PolicyStep, Rollout, batch_size, masked_logits, move_observation
from agents.core.replay import ReplayBatch, ReplayBuffer, flatten_rollout
from agents.core.schedule import ScheduleFactory, load_schedule

NetworkFactory = Callable[[gymnasium.Space, gymnasium.Space], nn.Module]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """Epsilon after ``step`` env steps: ``start`` moving linearly to ``end`` over ``decay_steps``."""
    if decay_steps <= 0:
        return end
    return start + min(step / decay_steps, 1.0) * (end - start)


def masked_argmax(q_values: Tensor, action_mask: Tensor | None) -> Tensor:
    """Greedy legal actions; ties go to the lowest index.

    Shapes: q_values (B, A); action_mask (B, A) bool or int, nonzero = legal -> (B,) int64.
    """
    return masked_logits(q_values, action_mask).argmax(dim=-1)


def next_state_values(
    next_q_target: Tensor, next_action_mask: Tensor | None, next_q_online: Tensor | None = None
) -> Tensor:
    """Bootstrap values of next states, taken over legal actions only.

    Plain Q-learning (``next_q_online`` None): ``max_a' Q_target(s', a')``.
    Double Q-learning: ``Q_target(s', argmax_a' Q_online(s', a'))``.
    Rows whose mask has no legal action get 0 (never -inf or NaN).

    Shapes: next_q_target, next_q_online (N, A); next_action_mask (N, A) or None -> (N,).
    """
    if next_q_online is not None:
        best = masked_argmax(next_q_online, next_action_mask)
        values = next_q_target.gather(1, best.unsqueeze(1)).squeeze(1)
    else:
        values = masked_logits(next_q_target, next_action_mask).max(dim=-1).values
    if next_action_mask is not None:
        values = torch.where(next_action_mask.bool().any(dim=-1), values, torch.zeros_like(values))
    return values


def td_targets(rewards: Tensor, terminated: Tensor, next_values: Tensor, gamma: float) -> Tensor:
    """``r + gamma * (1 - terminated) * V(s')``.

    Shapes: all (N,) -> (N,).
    """
    return rewards + gamma * (~terminated.bool()).to(rewards.dtype) * next_values


def td_loss(q_taken: Tensor, targets: Tensor, kind: Literal["huber", "mse"]) -> Tensor:
    """Mean TD regression loss. Shapes: q_taken, targets (N,) -> scalar."""
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, targets)
    return F.mse_loss(q_taken, targets)


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target <- tau * online + (1 - tau) * target`` on trainable parameters; buffers are copied.

    Frozen parameters are skipped: they never change, so both copies already agree.
    """
    target_params = dict(target.named_parameters())
    for name, param in online.named_parameters():
        if param.requires_grad:
            target_params[name].lerp_(param, tau)
    target_buffers = dict(target.named_buffers())
    for name, buffer in online.named_buffers():
        target_buffers[name].copy_(buffer)


def _num_actions(action_space: gymnasium.Space) -> int:
    if not isinstance(action_space, gymnasium.spaces.Discrete) or int(action_space.start) != 0:
        raise ValueError(f"Q-learning needs a Discrete action space starting at 0, got {action_space}")
    return int(action_space.n)


def _check_choice(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r} (valid: {list(valid)})")


class _EpsilonGreedyAgent:
    """Acting shared by the Q-learning agents: greedy or epsilon-greedy over legal actions.

    Subclasses provide ``_q_values(obs) -> (B, A)`` and count ``env_steps`` in ``learn``.
    """

    def __init__(
        self,
        action_space: gymnasium.Space,
        device: torch.device | str,
        rollout_steps: int,
        epsilon_start: float,
        epsilon_end: float,
        epsilon_decay_steps: int,
        generator: torch.Generator | None,
    ):
        self.num_actions = _num_actions(action_space)
        self.device = torch.device(device)
        self.rollout_steps = rollout_steps
        self.epsilon_start = epsilon_start
        self.epsilon_end = epsilon_end
        self.epsilon_decay_steps = epsilon_decay_steps
        self.generator = generator
        self.temperature: float | None = None  # Boltzmann exploration (DQNAgent's option)
        self.env_steps = 0

    @staticmethod
    def check_spaces(observation_space: gymnasium.Space, action_space: gymnasium.Space) -> None:
        """Q-learning needs a ``Discrete`` action space starting at 0."""
        _num_actions(action_space)

    @property
    def epsilon(self) -> float:
        """Exploration rate in effect now, from the env steps seen so far."""
        return linear_epsilon(self.env_steps, self.epsilon_start, self.epsilon_end, self.epsilon_decay_steps)

    def _q_values(self, obs: Tensor) -> Tensor:
        raise NotImplementedError

    def _uniform(self, shape: tuple[int, ...]) -> Tensor:
        draw_device = self.generator.device if self.generator is not None else self.device
        return torch.rand(shape, generator=self.generator, device=draw_device).to(self.device)

    def _checked_mask(self, action_mask: Tensor | None, batch: int) -> Tensor | None:
        if action_mask is None:
            return None
        mask = action_mask.to(self.device).bool()
        if mask.shape != (batch, self.num_actions):
            expected = (batch, self.num_actions)
            raise ValueError(f"action_mask has shape {tuple(mask.shape)}, expected {expected}")
        no_legal = (~mask.any(dim=-1)).nonzero().flatten()
        if no_legal.numel() > 0:
            raise ValueError(f"no legal action in batch rows {no_legal.tolist()}")
        return mask

    @torch.no_grad()
    def act(self, obs: Observation, action_mask: Tensor | None = None, deterministic: bool = False) -> Tensor:
        """Greedy legal actions if ``deterministic``, else epsilon-greedy at the current epsilon
        (around Boltzmann samples instead of the greedy action when ``temperature`` is set).

        Shapes: obs (B, ...); action_mask (B, A) bool or int, nonzero = legal -> (B,) int64.
        """
        obs_on_device = move_observation(obs, self.device)
        mask = self._checked_mask(action_mask, batch_size(obs_on_device))
        q_values = self._q_values(obs_on_device).float()
        greedy = masked_argmax(q_values, mask)
        if deterministic:
            return greedy
        batch = int(greedy.shape[0])
        if self.temperature is not None:  # Boltzmann: a Gumbel-max sample of softmax(Q / temperature)
            gumbel = -torch.log(-torch.log(self._uniform((batch, self.num_actions)).clamp(1e-20, 1.0 - 1e-7)))
            greedy = masked_argmax(q_values / self.temperature + gumbel, mask)
        scores = self._uniform((batch, self.num_actions))
        if mask is not None:
            scores = scores.masked_fill(~mask, -1.0)
        random_legal = scores.argmax(dim=-1)
        return torch.where(self._uniform((batch,)) < self.epsilon, random_legal, greedy)

    def explore(self, obs: Observation, action_mask: Tensor | None = None) -> PolicyStep:
        """Epsilon-greedy actions for training; no log-probs or values."""
        return PolicyStep(actions=self.act(obs, action_mask, deterministic=False))

    def policy_snapshot(self) -> Callable[[Tensor, Tensor | None], Tensor]:
        """A frozen copy of the current epsilon-greedy policy (e.g. for a self-play opponent).

        The copy holds only what acting needs (no replay buffer or optimizer) and does not
        follow later learning.
        """
        frozen = copy.copy(self)
        frozen._freeze()
        return lambda obs, action_mask: frozen.act(obs, action_mask, deterministic=False)

    def _freeze(self) -> None:
        raise NotImplementedError

    def _counters(self) -> dict[str, Any]:
        state: dict[str, Any] = {"env_steps": self.env_steps}
        if self.generator is not None:
            state["generator"] = self.generator.get_state()
        return state

    def _load_counters(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state["env_steps"])
        if self.generator is not None and "generator" in state:
            self.generator.set_state(state["generator"])


class DQNAgent(_EpsilonGreedyAgent):
    """Deep Q-learning with experience replay, a target network and (by default) double Q.

    ``network(observation_space, action_space)`` builds the online Q-network (an already built
    ``nn.Module`` is accepted too); the target network is a deep copy of it. A network with
    frozen weights shares them with its copy (the LM networks do: only the LoRA adapters and
    the head are copied, so the base model is held once); any other network is held twice.
    ``optimizer(params)`` builds the optimizer over its trainable parameters.

    Each :meth:`learn` call pushes the rollout's valid transitions into the replay buffer and,
    once ``learning_starts`` env steps have been seen, on every ``train_frequency``-th call
    takes ``gradient_steps`` steps on minibatches of ``batch_size``. The replay buffer is part
    of :meth:`state_dict` (see :mod:`agents.core.replay` for its size).

    Args:
        observation_space, action_space: the env's single spaces (``Discrete`` actions from 0).
        network: factory ``(observation_space, action_space) -> module`` with
            ``forward(obs) -> q (B, A)``, or a built module.
        optimizer: factory ``params -> torch.optim.Optimizer``.
        lr_schedule: factory ``optimizer -> LRScheduler``, stepped once per :meth:`learn` call
            from the first gradient step on (``None``: a constant learning rate).
        device: where the networks, the replay buffer and learning live.
        rollout_steps: env steps per env collected before each :meth:`learn` call.
        gamma: discount in [0, 1].
        buffer_size: replay capacity in transitions (oldest overwritten first).
        batch_size: transitions per gradient step.
        learning_starts: env steps seen before the first gradient step.
        train_frequency: :meth:`learn` calls between gradient phases.
        gradient_steps: gradient steps per phase (0: never learn).
        target_update: ``"hard"`` (copy) or ``"polyak"`` (move by ``tau``).
        target_update_interval: gradient steps between target updates.
        tau: Polyak rate in (0, 1].
        double_q: bootstrap with the target network's value of the online network's choice.
        epsilon_start, epsilon_end, epsilon_decay_steps: exploration rate, linear in env steps.
        max_grad_norm: clip the gradient norm (``None``: no clip).
        loss: ``"huber"`` or ``"mse"`` TD loss.
        store_action_masks: keep legal-action masks in replay (when the env reports them);
            ``False`` for vocabulary-sized action spaces where every action is always legal.
        temperature: Boltzmann exploration: the non-random actions are sampled from
            ``softmax(Q / temperature)`` over legal actions instead of taken greedily (``None``:
            greedy; epsilon still mixes in uniformly random legal actions).
        augment: a transform of each replay minibatch, ``augment(batch, generator) -> batch``,
            e.g. :class:`agents.core.augment.CellSymmetries` (board symmetries); ``None``: none.
        generator: the RNG of exploration and replay sampling (``None``: torch's global RNG).
    """

    data_parallel = True  # torchrun: gradients summed over the processes (agents.core.distributed)
    rank_state_keys = ("replay", "counters")  # each process's own: checkpointed per rank

    def __init__(
        self,
        observation_space: gymnasium.Space,
        action_space: gymnasium.Space,
        *,
        network: NetworkFactory | nn.Module,
        optimizer: OptimizerFactory,
        lr_schedule: ScheduleFactory | None = None,
        device: torch.device | str = "cpu",
        rollout_steps: int = 1,
        gamma: float = 0.99,
        buffer_size: int = 100_000,
        batch_size: int = 64,
        learning_starts: int = 1_000,
        train_frequency: int = 1,
        gradient_steps: int = 1,
        target_update: Literal["hard", "polyak"] = "hard",
        target_update_interval: int = 500,
        tau: float = 0.005,
        double_q: bool = True,
        epsilon_start: float = 1.0,
        epsilon_end: float = 0.05,
        epsilon_decay_steps: int = 10_000,
        max_grad_norm: float | None = 10.0,
        loss: Literal["huber", "mse"] = "huber",
        store_action_masks: bool = True,
        temperature: float | None = None,
        augment: Any = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__(
            action_space, device, rollout_steps, epsilon_start, epsilon_end, epsilon_decay_steps, generator
        )
        _check_choice("target_update", target_update, ("hard", "polyak"))
        _check_choice("loss", loss, ("huber", "mse"))
        if min(batch_size, train_frequency, target_update_interval) < 1 or gradient_steps < 0:
            raise ValueError(
                f"batch_size={batch_size}, train_frequency={train_frequency} and target_update_interval="
                f"{target_update_interval} must be >= 1, gradient_steps={gradient_steps} must be >= 0"
            )
        if temperature is not None and not temperature > 0:
            raise ValueError(f"temperature must be positive or null (epsilon-greedy only), got {temperature}")
        self.temperature = None if temperature is None else float(temperature)
        if augment is not None:
            if not callable(augment):
                raise TypeError(f"augment must be a callable (batch, generator) -> batch, got {augment!r}")
            check = getattr(augment, "check_spaces", None)
            if check is not None:
                check(observation_space, action_space)
        self.augment = augment
        self.gamma, self.batch_size, self.learning_starts = gamma, batch_size, learning_starts
        self.train_frequency, self.gradient_steps = train_frequency, gradient_steps
        self.target_update, self.target_update_interval, self.tau = target_update, target_update_interval, tau
        self.double_q, self.max_grad_norm, self.loss = double_q, max_grad_norm, loss
        built = network if isinstance(network, nn.Module) else network(observation_space, action_space)
        self.q_network = built.to(self.device)
        self.target_network = copy.deepcopy(self.q_network).requires_grad_(False)
        self.optimizer = optimizer([p for p in self.q_network.parameters() if p.requires_grad])
        self.lr_schedule = lr_schedule(self.optimizer) if lr_schedule is not None else None
        self.replay = ReplayBuffer(buffer_size, self.device, store_action_masks)
        self.learn_calls = 0
        self.updates = 0

    def _q_values(self, obs: Tensor) -> Tensor:
        return self.q_network(obs)

    def _freeze(self) -> None:
        self.q_network = copy.deepcopy(self.q_network).requires_grad_(False)
        del self.target_network, self.optimizer, self.replay, self.lr_schedule

    def learn(self, rollout: Rollout) -> dict[str, float]:
        """Store the rollout's transitions, then train if it is time to."""
        self.replay.add(flatten_rollout(rollout.to(self.device), self.replay.store_action_masks))
        self.env_steps += int(distributed.sum_floats(rollout.num_valid)[0])  # all processes' steps
        self.learn_calls += 1
        metrics = {"charts/epsilon": self.epsilon, "diag/buffer_size": float(len(self.replay))}
        due = self.learn_calls % self.train_frequency == 0 and self.gradient_steps > 0
        if self.lr_schedule is not None:
            metrics["charts/learning_rate"] = self.optimizer.param_groups[0]["lr"]
        if self.env_steps < self.learning_starts:
            return metrics
        if due:
            metrics |= self._gradient_phase()
        if self.lr_schedule is not None and self.updates:
            self.lr_schedule.step()
        return metrics

    def _gradient_phase(self) -> dict[str, float]:
        """``gradient_steps`` TD steps on fresh minibatches; their mean loss and Q(s, a)."""
        losses, q_means = [], []
        for _ in range(self.gradient_steps):
            batch = self.replay.sample(self.batch_size, self.generator)
            if self.augment is not None:
                batch = self.augment(batch, self.generator)
            loss, q_mean = self.update(batch)
            losses.append(loss)
            q_means.append(q_mean)
        return {
            "loss/td": torch.stack(losses).mean().item(),
            "diag/q_mean": torch.stack(q_means).mean().item(),
        }

    def update(self, batch: ReplayBatch) -> tuple[Tensor, Tensor]:
        """One gradient step on ``batch``; returns the detached loss and mean Q(s, a)."""
        q_taken = self.q_network(batch.obs).float().gather(1, batch.actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            next_q_target = self.target_network(batch.next_obs).float()
            next_q_online = self.q_network(batch.next_obs).float() if self.double_q else None
            next_values = next_state_values(next_q_target, batch.next_action_masks, next_q_online)
            targets = td_targets(batch.rewards, batch.terminated, next_values, self.gamma)
        loss = td_loss(q_taken, targets, self.loss)
        self.optimizer.zero_grad()
        loss.backward()
        # data-parallel: the mean of the processes' gradients (each has batch_size transitions)
        distributed.reduce_gradients(self.q_network.parameters(), 1.0 / distributed.world_size())
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.q_network.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_update_interval == 0:
            self.update_target()
        return loss.detach(), q_taken.detach().mean()

    def update_target(self) -> None:
        """Refresh the target network now (hard copy or one polyak step)."""
        if self.target_update == "hard":
            self.target_network.load_state_dict(self.q_network.state_dict())
        else:
            polyak_update(self.target_network, self.q_network, self.tau)

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizer, replay contents (possibly large) and counters."""
        return {
            "q_network": self.q_network.state_dict(),
            "target_network": self.target_network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
            "counters": {**self._counters(), "learn_calls": self.learn_calls, "updates": self.updates},
        } | ({} if self.lr_schedule is None else {"lr_schedule": self.lr_schedule.state_dict()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_network.load_state_dict(state["q_network"])
        self.target_network.load_state_dict(state["target_network"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_schedule is not None and "lr_schedule" in state:
            load_schedule(self.lr_schedule, state["lr_schedule"])
        self.replay.load_state_dict(state["replay"])
        self._load_counters(state["counters"])
        self.learn_calls = int(state["counters"]["learn_calls"])
        self.updates = int(state["counters"]["updates"])
