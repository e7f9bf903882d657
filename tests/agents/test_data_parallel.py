"""Data-parallel training: two processes (gloo on CPU), each learning on half of the envs, keep
identical parameters, equal to one process learning on all the envs, for PPO on steps and on
whole text episodes (KL controller, advantage normalisation, early stop) and for DQN."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gymnasium import spaces
from torch import Tensor
from torch.testing import assert_close

from agents.collect.collector import RolloutCollector
from agents.core import distributed
from agents.core.base import Rollout, map_observation
from agents.core.replay import ReplayBatch
from agents.dqn.agent import DQNAgent
from agents.networks.mlp import QNetworkMLP
from agents.ppo.agent import PPOAgent
from agents.ppo.kl import PIKLController

WORLD = 2
BOX, ACTIONS = spaces.Box(-1.0, 1.0, (4,)), spaces.Discrete(3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def columns(rollout: Rollout, rank: int, world: int) -> Rollout:
    """The envs of ``rank``: a contiguous block of the rollout's B columns."""
    size = rollout.num_envs // world
    block = slice(rank * size, (rank + 1) * size)
    parts: dict[str, Any] = {}
    for name, value in vars(rollout).items():
        parts[name] = (
            value
            if value is None or isinstance(value, bool)
            else map_observation(lambda x: x[:, block], value)
        )
    return Rollout(**parts)


def step_ppo(**overrides: Any) -> PPOAgent:
    torch.manual_seed(0)
    settings = dict(rollout_steps=16, num_epochs=3, num_minibatches=4, target_kl=0.05, whiten_rewards=True)
    return PPOAgent(BOX, ACTIONS, **{**settings, **overrides})


def step_rollouts(count: int, num_envs: int = 8, steps: int = 16) -> list[Rollout]:
    agent, generator = step_ppo(), torch.Generator().manual_seed(1)
    rollouts = []
    for _ in range(count):
        obs = torch.rand(steps, num_envs, 4, generator=generator) * 2 - 1
        masks = torch.rand(steps, num_envs, 3, generator=generator) > 0.3
        masks[..., 0] = True
        with torch.no_grad():
            step = agent.explore(obs.flatten(0, 1), masks.flatten(0, 1))
        shape = (steps, num_envs)
        rollouts.append(
            Rollout(
                obs=obs,
                action_masks=masks,
                actions=step.actions.view(shape),
                log_probs=step.log_probs.view(shape),
                values=step.values.view(shape),
                rewards=torch.randn(shape, generator=generator),
                terminated=torch.rand(shape, generator=generator) < 0.1,
                truncated=torch.rand(shape, generator=generator) < 0.05,
                next_obs=torch.rand(steps, num_envs, 4, generator=generator),
                next_action_masks=torch.ones(steps, num_envs, 3, dtype=torch.bool),
            )
        )
    return rollouts


def text_ppo(kl_ceiling: float | None = None) -> PPOAgent:
    from tests.agents.test_text_ppo import make_agent, make_env

    torch.manual_seed(0)
    return make_agent(
        make_env(num_envs=8),
        kl=PIKLController(coef=0.1, target=0.5),
        kl_placement="loss",
        kl_estimator="k3",
        num_minibatches=4,
        kl_ceiling=kl_ceiling,
    )


def text_rollouts(count: int) -> list[Rollout]:
    from tests.agents.test_text_ppo import make_env

    agent, env = text_ppo(), make_env(num_envs=8)
    collector = RolloutCollector(env, agent, seed=3)
    rollouts = [collector.collect(agent.rollout_steps)[0] for _ in range(count)]
    generator = torch.Generator().manual_seed(5)
    for rollout in rollouts:  # behaviour log-probs away from the reference's: a KL for the controller
        shift = torch.rand(rollout.log_probs.shape, generator=generator) * torch.arange(8) / 4
        rollout.log_probs = rollout.log_probs + shift
        # rewards on every episode: with none sampled (and a critic that starts at 0) the first
        # gradient would be the rounding noise of the KL term at pi = pi_ref, which Adam's first
        # step blows up to full-size steps in a direction that differs with the batch's split
        noise = torch.randn(rollout.rewards.shape, generator=generator)
        rollout.rewards = rollout.rewards + torch.where(rollout.valid_mask, noise, 0.0)
    return rollouts


def dqn() -> DQNAgent:
    torch.manual_seed(0)
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3)
    return DQNAgent(
        BOX, ACTIONS, network=QNetworkMLP, optimizer=optimizer, batch_size=8, target_update_interval=2
    )


def replay_batches(count: int, size: int = 16) -> list[ReplayBatch]:
    generator = torch.Generator().manual_seed(2)
    return [
        ReplayBatch(
            obs=torch.rand(size, 4, generator=generator),
            actions=torch.randint(0, 3, (size,), generator=generator),
            rewards=torch.randn(size, generator=generator),
            next_obs=torch.rand(size, 4, generator=generator),
            terminated=torch.rand(size, generator=generator) < 0.2,
            action_masks=None,
            next_action_masks=None,
        )
        for _ in range(count)
    ]


CASES = {
    "ppo_steps": (step_ppo, functools.partial(step_rollouts, 3)),
    "ppo_text": (text_ppo, functools.partial(text_rollouts, 2)),
    # far above its KL target: switching steps, decided from every rank's estimate
    "ppo_text_ceiling": (functools.partial(text_ppo, 1.5), functools.partial(text_rollouts, 2)),
    "dqn": (dqn, functools.partial(replay_batches, 3)),
}


def learn(case: str, agent: Any, data: list[Any], rank: int, world: int) -> dict[str, Tensor]:
    """Apply every batch of ``data`` (this rank's part of it); the networks' parameters after."""
    for index, item in enumerate(data):
        torch.manual_seed(100 + index)  # rank 0 draws the minibatch order from this RNG
        if case == "dqn":
            size = item.actions.shape[0] // world
            part = ReplayBatch(
                **{k: v if v is None else v[rank * size : (rank + 1) * size] for k, v in vars(item).items()}
            )
            agent.update(part)
        else:
            agent.learn(columns(item, rank, world))
    modules = distributed.modules_of(agent)
    result = {name: p.detach().clone() for name, p in modules.named_parameters()}
    if getattr(agent, "kl", None) is not None:  # the KL controller's state, fed by every rank's KL
        result["kl_coef"] = torch.tensor(agent.kl.coef, dtype=torch.float64)
        result["ceiling_steps"] = torch.tensor(
            float(agent.ceiling.steps if agent.ceiling is not None else 0), dtype=torch.float64
        )
    return result


def _worker(rank: int, port: int, case: str, data_path: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        make_agent, _ = CASES[case]
        data = torch.load(data_path, weights_only=False)
        torch.save(learn(case, make_agent(), data, rank, WORLD), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_keep_identical_parameters_equal_to_one_process(case: str, tmp_path: Path) -> None:
    make_agent, make_data = CASES[case]
    data = make_data()
    torch.save(data, tmp_path / "data.pt")
    mp.start_processes(
        _worker,
        args=(_free_port(), case, str(tmp_path / "data.pt"), str(tmp_path)),
        nprocs=WORLD,
        start_method="spawn",
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    single = learn(case, make_agent(), data, 0, 1)
    start = {name: p.detach() for name, p in distributed.modules_of(make_agent()).named_parameters()}
    moved = sum(float((single[name] - start[name]).abs().sum()) for name in start)
    assert moved > 0  # the updates did change the parameters
    if case == "ppo_text_ceiling":
        assert float(single["ceiling_steps"]) > 0
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between the ranks"
        assert_close(
            ranks[0][name], value, rtol=1e-4, atol=1e-5, msg=functools.partial("{}: {}".format, name)
        )


def test_helpers_are_identities_in_one_process() -> None:
    values = torch.randn(7)
    assert distributed.all_sum(values) is values
    assert distributed.sum_floats(1, 2.5) == [1.0, 2.5]
    mean, std = distributed.mean_std(values)
    assert_close(mean, values.mean()) and assert_close(std, values.std())
    assert distributed.gather_objects({"a": 1}) == [{"a": 1}]
    torch.manual_seed(4)
    parts = distributed.minibatch_rows(10, 3, torch.device("cpu"))
    torch.manual_seed(4)
    assert [p.tolist() for p in parts] == [p.tolist() for p in torch.randperm(10).tensor_split(3)]
