"""The torch vector env: equals N single envs, autoresets in the same step, known win rates."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import rlenv  # noqa: F401
from rlenv.tictactoe import PerfectOpponent, TicTacToeEnv, TicTacToeVectorEnv, optimal_moves

torch.set_num_threads(1)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_spaces_metadata_and_make_vec() -> None:
    envs = gym.make_vec("rlenv/TicTacToe-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(envs, TicTacToeVectorEnv)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert envs.single_observation_space == gym.spaces.Box(-1, 1, (9,), np.int8)
    assert envs.single_action_space == gym.spaces.Discrete(9)
    assert envs.observation_space.shape == (3, 9) and envs.observation_space.dtype == np.int8
    assert envs.action_space == gym.spaces.MultiDiscrete([9, 9, 9])
    obs, info = envs.reset(seed=0)
    assert obs.dtype == torch.int8 and obs.shape == (3, 9)
    assert info["action_mask"].dtype == torch.bool and bool(info["action_mask"].all())


@pytest.mark.parametrize("agent_plays", ["x", "o", "both"])
@pytest.mark.parametrize("illegal_move", ["penalize", "raise"])
def test_vector_env_equals_single_envs(agent_plays: str, illegal_move: str) -> None:
    num_envs, rng = 6, np.random.default_rng(0)
    opponent = PerfectOpponent(tie_break="first")
    kwargs: dict[str, Any] = {"agent_plays": agent_plays, "opponent": opponent, "illegal_move": illegal_move}
    vector = TicTacToeVectorEnv(num_envs, **kwargs)
    singles = [TicTacToeEnv(**kwargs) for _ in range(num_envs)]
    obs, info = vector.reset(seed=1)
    single_obs = [env.reset(seed=i)[0] for i, env in enumerate(singles)]
    assert obs.numpy().tolist() == [o.tolist() for o in single_obs]
    episodes_ended = 0
    for _ in range(60):
        masks = info["action_mask"].numpy()
        actions = [int(rng.choice(np.flatnonzero(m))) for m in masks]
        if illegal_move == "penalize":
            actions = [int(rng.integers(9)) if rng.random() < 0.1 else a for a in actions]
        obs, rewards, terminated, truncated, info = vector.step(torch.tensor(actions))
        assert not bool(truncated.any())
        for i, env in enumerate(singles):
            s_obs, s_reward, s_terminated, _, s_info = env.step(actions[i])
            assert float(rewards[i]) == s_reward and bool(terminated[i]) == s_terminated
            assert bool(info["illegal_move"][i]) == s_info["illegal_move"]
            assert info["final_obs"][i].tolist() == s_obs.tolist()
            if s_terminated:
                episodes_ended += 1
                assert int(info["outcome"][i]) == s_info["outcome"]
                assert not bool(info["final_action_mask"][i].any())
                s_obs, s_info = env.reset()
            else:
                assert int(info["outcome"][i]) == 0
                assert info["final_action_mask"][i].tolist() == info["action_mask"][i].tolist()
            assert obs[i].tolist() == s_obs.tolist()
            assert info["action_mask"][i].numpy().astype(np.int8).tolist() == s_info["action_mask"].tolist()
    assert episodes_ended > 30


@pytest.mark.parametrize("device", DEVICES)
def test_step_outputs_live_on_device_with_contract_dtypes(device: str) -> None:
    envs = TicTacToeVectorEnv(4, opponent={"random": 1, "perfect": 1}, agent_plays="both", device=device)
    obs, info = envs.reset(seed=0)
    obs, rewards, terminated, truncated, info = envs.step(torch.zeros(4, dtype=torch.int64, device=device))
    for value, dtype in [
        (obs, torch.int8),
        (rewards, torch.float32),
        (terminated, torch.bool),
        (truncated, torch.bool),
    ]:
        assert value.device.type == device and value.dtype == dtype
    expected = {
        "action_mask": torch.bool,
        "final_obs": torch.int8,
        "final_action_mask": torch.bool,
        "outcome": torch.int8,
        "illegal_move": torch.bool,
    }
    assert {key: value.dtype for key, value in info.items()} == expected
    assert all(value.device.type == device for value in info.values())


def test_same_seed_same_rollout_and_numpy_actions() -> None:
    def rollout(seed: int) -> list[list[list[int]]]:
        envs = TicTacToeVectorEnv(8, opponent={"random": 2, "perfect": 1}, agent_plays="both")
        obs, info = envs.reset(seed=seed)
        trace = [obs.tolist()]
        for _ in range(12):
            actions = info["action_mask"].to(torch.uint8).argmax(dim=1).numpy()
            obs, _, _, _, info = envs.step(actions)
            trace.append(obs.tolist())
        return trace

    assert rollout(3) == rollout(3)
    assert rollout(3) != rollout(4)


def test_agent_plays_o_starts_after_the_opponent() -> None:
    envs = TicTacToeVectorEnv(5, agent_plays="o")
    obs, info = envs.reset(seed=0)
    assert (obs == -1).sum(dim=1).tolist() == [1] * 5 and (obs == 1).sum().item() == 0
    assert info["action_mask"].sum(dim=1).tolist() == [8] * 5
    assert envs.agent_marks.tolist() == [-1] * 5 and (envs.boards == 1).sum(dim=1).tolist() == [1] * 5


def test_illegal_moves_raise_mode_names_envs_and_keeps_state() -> None:
    envs = TicTacToeVectorEnv(3, illegal_move="raise", opponent=PerfectOpponent(tie_break="first"))
    envs.reset(seed=0)
    envs.step(torch.tensor([4, 4, 4]))
    boards = envs.boards
    with pytest.raises(
        ValueError, match=r"env indices \[1\]: env 1: move 4 \(legal: \[1, 2, 3, 5, 6, 7, 8\]\)"
    ):
        envs.step(torch.tensor([1, 4, 2]))
    assert torch.equal(envs.boards, boards)
    _, _, terminated, _, info = envs.step(torch.tensor([1, 2, 3]))
    assert not bool(terminated.any()) and not bool(info["illegal_move"].any())


def test_illegal_moves_penalize_mode_end_those_boards() -> None:
    envs = TicTacToeVectorEnv(3, opponent=PerfectOpponent(tie_break="first"))
    envs.reset(seed=0)
    envs.step(torch.tensor([4, 4, 4]))
    obs, rewards, terminated, _, info = envs.step(torch.tensor([1, 4, 0]))
    assert rewards.tolist() == [0.0, -1.0, -1.0] and terminated.tolist() == [False, True, True]
    assert info["illegal_move"].tolist() == [False, True, True] and info["outcome"].tolist() == [0, -1, -1]
    assert obs[1].tolist() == [0] * 9
    assert info["final_obs"][1].tolist() == [-1, 0, 0, 0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("illegal_move", ["penalize", "raise"])
@pytest.mark.parametrize(
    ("actions", "error", "message"),
    [
        (torch.tensor([0, 9, -1]), ValueError, r"out of range at env indices \[1, 2\]: \[9, -1\]"),
        (torch.tensor([0.0, 1.0, 2.0]), TypeError, "dtype torch.float32"),
        (torch.tensor([True, False, True]), TypeError, "dtype torch.bool"),
        (np.array([0.5, 1, 2]), TypeError, "dtype float64"),
        (["a", "b", "c"], TypeError, "dtype <U1"),
        (torch.tensor([0, 1]), ValueError, r"shape \(3,\), got \(2,\)"),
        (torch.tensor([[0, 1, 2]]), ValueError, r"got \(1, 3\)"),
    ],
)
def test_malformed_actions_raise_and_leave_state_intact(
    illegal_move: str, actions: Any, error: type, message: str
) -> None:
    envs = TicTacToeVectorEnv(3, illegal_move=illegal_move, opponent=PerfectOpponent(tie_break="first"))
    envs.reset(seed=0)
    envs.step(torch.tensor([4, 4, 4]))
    boards = envs.boards
    with pytest.raises(error, match=message):
        envs.step(actions)
    assert torch.equal(envs.boards, boards)
    _, _, terminated, _, _ = envs.step([1, 2, 3])
    assert not bool(terminated.any())


def test_step_before_reset_and_bad_num_envs() -> None:
    with pytest.raises(RuntimeError, match="reset"):
        TicTacToeVectorEnv(2).step(torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="num_envs must be a positive integer, got 0"):
        TicTacToeVectorEnv(0)


def test_self_play_policy_is_forwarded() -> None:
    envs = TicTacToeVectorEnv(4, opponent="self_play")
    assert envs.set_self_play_policy(lambda obs, mask: 8 - mask.flip(1).to(torch.uint8).argmax(dim=1))
    envs.reset(seed=0)
    obs, *_ = envs.step(torch.tensor([0, 1, 2, 3]))
    assert obs[:, 8].tolist() == [-1] * 4
    assert not TicTacToeVectorEnv(2, opponent="perfect").set_self_play_policy(None)


def _play_episodes(envs: TicTacToeVectorEnv, num_episodes: int, perfect_agent: bool) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    obs, info = envs.reset(seed=0)
    outcomes = []
    while sum(len(o) for o in outcomes) < num_episodes:
        mask = optimal_moves(obs) if perfect_agent else info["action_mask"]
        scores = torch.rand(mask.shape, generator=generator).masked_fill(~mask, -1.0)
        obs, _, terminated, _, info = envs.step(scores.argmax(dim=1))
        outcomes.append(info["outcome"][terminated])
    return torch.cat(outcomes)


def test_random_vs_random_win_rates() -> None:
    outcomes = _play_episodes(TicTacToeVectorEnv(2000, opponent="random"), 20000, perfect_agent=False).float()
    rates = [(outcomes == v).float().mean().item() for v in (1, -1, 0)]
    assert rates == pytest.approx([0.585, 0.288, 0.127], abs=0.015)


@pytest.mark.parametrize("agent_plays", ["x", "o"])
def test_perfect_agent_never_loses_to_random(agent_plays: str) -> None:
    envs = TicTacToeVectorEnv(1000, agent_plays=agent_plays, opponent="random")
    outcomes = _play_episodes(envs, 5000, perfect_agent=True)
    assert int((outcomes == -1).sum()) == 0


def test_opponent_mixture_with_zero_weight_never_uses_it() -> None:
    envs = TicTacToeVectorEnv(500, opponent={"perfect": 1.0, "random": 0.0})
    outcomes = _play_episodes(envs, 2000, perfect_agent=False)
    assert int((outcomes == 1).sum()) == 0
    mixed = _play_episodes(TicTacToeVectorEnv(500, opponent={"perfect": 1.0, "random": 1.0}), 2000, False)
    assert 0.2 < (mixed == 1).float().mean().item() < 0.4


@pytest.mark.parametrize("bad", [-1, 4, 1.5, True, "2"])
def test_random_opening_plies_out_of_range_is_refused(bad: Any) -> None:
    for make in (
        lambda: TicTacToeEnv(random_opening_plies=bad),
        lambda: TicTacToeVectorEnv(2, random_opening_plies=bad),
    ):
        with pytest.raises(ValueError, match=r"random_opening_plies must be an integer in 0\.\.3.*got"):
            make()


@pytest.mark.parametrize("agent_plays", ["x", "o"])
def test_random_openings_are_legal_unfinished_positions_with_the_agent_to_move(agent_plays: str) -> None:
    from rlenv.tictactoe import rules

    env = TicTacToeVectorEnv(4000, agent_plays=agent_plays, random_opening_plies=3)
    env.reset(seed=0)
    counts: set[int] = set()
    for step in range(3):
        boards = env.boards
        marks = (boards != 0).sum(dim=1)
        agent = 1 if agent_plays == "x" else -1
        assert bool((rules.player_to_move(boards) == agent).all())
        assert not bool(rules.game_over(boards).any())
        if step == 0:
            counts = set(marks.tolist())
        rng_actions = rules.random_legal_moves(rules.legal_moves(boards), torch.Generator().manual_seed(step))
        env.step(rng_actions)
    # 0..3 random plies, then the opponent's move where it is to move: X sees 0, 2, 4; O sees 1, 3.
    assert counts == ({0, 2, 4} if agent_plays == "x" else {1, 3})


def test_random_openings_cover_every_first_move_and_default_draws_nothing() -> None:
    env = TicTacToeVectorEnv(900, agent_plays="x", opponent="perfect", random_opening_plies=1)
    env.reset(seed=3)
    x_cells = (env.boards == 1).nonzero()[:, 1]
    assert set(x_cells.tolist()) == set(range(9))
    plain, explicit = TicTacToeVectorEnv(50, agent_plays="both"), TicTacToeVectorEnv(50, agent_plays="both")
    explicit.random_opening_plies = 0
    assert plain.reset(seed=5)[0].tolist() == explicit.reset(seed=5)[0].tolist()


def test_single_env_random_openings() -> None:
    from rlenv.tictactoe import rules

    env = TicTacToeEnv(agent_plays="both", random_opening_plies=3)
    env.reset(seed=7)
    seen: set[tuple[int, int]] = set()
    for _ in range(400):
        board = torch.as_tensor(env.board).unsqueeze(0)
        assert int(rules.player_to_move(board)[0]) == env.agent_mark
        assert not bool(rules.game_over(board)[0])
        seen.add((env.agent_mark, int((board != 0).sum())))
        env.reset()
    assert seen == {(1, 0), (1, 2), (1, 4), (-1, 1), (-1, 3)}


def test_random_cells_is_uniform_over_the_true_cells() -> None:
    from rlenv.tictactoe.tables import random_cells

    mask = torch.zeros(30_000, 9, dtype=torch.bool)
    mask[:, [1, 4, 8]] = True
    mask[:10_000, 0] = True
    mask[-1] = False
    cells = random_cells(mask, torch.Generator().manual_seed(0))
    assert int(cells[-1]) == 0
    assert bool(mask[torch.arange(29_999), cells[:-1]].all())
    share = torch.bincount(cells[10_000:-1], minlength=9).float() / 19_999
    assert torch.allclose(share[[1, 4, 8]], torch.full((3,), 1 / 3), atol=0.02)
    first = torch.bincount(cells[:10_000], minlength=9).float() / 10_000
    assert torch.allclose(first[[0, 1, 4, 8]], torch.full((4,), 0.25), atol=0.02)


def test_table_opponents_match_the_opponent_objects() -> None:
    """The looked-up perfect replies are optimal moves; the looked-up random ones reach every cell."""
    from rlenv.tictactoe.opponents import optimal_moves
    from rlenv.tictactoe.rules import perspective
    from rlenv.tictactoe.tables import random_cells

    generator = torch.Generator().manual_seed(0)
    for opponent in ("perfect", "random"):
        envs = TicTacToeVectorEnv(512, opponent=opponent, agent_plays="both")
        _, info = envs.reset(seed=0)
        seen: set[int] = set()
        replies = 0
        for _ in range(30):
            before, marks = envs.boards, envs.agent_marks.unsqueeze(1)
            _, _, _, _, info = envs.step(random_cells(info["action_mask"], generator))
            final = perspective(info["final_obs"], marks.squeeze(1))  # absolute, after the reply
            reply = (before != final) & (final == -marks)
            replied = reply.any(dim=1)
            replies += int(replied.sum())
            after_agent = torch.where(reply, 0, final).to(torch.int8)
            if opponent == "perfect":
                best = optimal_moves(perspective(after_agent, -marks.squeeze(1)))
                assert bool((best | ~reply)[replied].all())
            else:
                seen.update(reply[replied].nonzero()[:, 1].tolist())
        assert replies > 5000
        if opponent == "random":
            assert seen == set(range(9))
