"""Minimax solution, perfect play, opponent mixtures and self-play against the oracle."""

from __future__ import annotations

from functools import cache

import pytest
import torch

from rlenv.tictactoe import opponents as opp

from . import oracle

torch.set_num_threads(1)


def _perspective_positions() -> list[oracle.Board]:
    """Every reachable non-final position seen by the player to move."""
    positions = [b for b in oracle.reachable_positions() if not oracle.is_over(b)]
    return [tuple(mark * oracle.to_move(b) for mark in b) for b in positions]


def test_minimax_values_and_optimal_moves_match_oracle() -> None:
    positions = _perspective_positions()
    batch = torch.tensor(positions, dtype=torch.int8)
    expected = torch.tensor([oracle.negamax(b) for b in positions], dtype=torch.int8)
    assert torch.equal(opp.minimax_values(batch), expected)
    expected_moves = [
        [
            cell in oracle.legal(b)
            and -oracle.negamax(oracle.flip(oracle.play(b, cell, 1))) == oracle.negamax(b)
            for cell in range(9)
        ]
        for b in positions
    ]
    assert torch.equal(opp.optimal_moves(batch), torch.tensor(expected_moves))
    assert opp.minimax_value([0] * 9) == 0
    assert opp.minimax_value([1, 1, 0, -1, -1, 0, 0, 0, 0]) == 1
    assert int(opp.move_values(batch[:1])[0].min()) >= opp.ILLEGAL_VALUE


@cache
def _optimal_cells(own_view: oracle.Board) -> tuple[int, ...]:
    mask = opp.optimal_moves(torch.tensor([own_view], dtype=torch.int8))[0]
    return tuple(torch.nonzero(mask).flatten().tolist())


@cache
def _search(board: oracle.Board, perfect_marks: frozenset[int]) -> int:
    """Worst result for the perfect side(s) over every game where ``perfect_marks`` play any
    optimal move and the others any legal move (exhaustive game tree), as +1/0/-1 for X."""
    if oracle.is_over(board):
        return oracle.winner(board)
    mover = oracle.to_move(board)
    if mover in perfect_marks:
        own_view = tuple(mark * mover for mark in board)
        cells = _optimal_cells(own_view)
        assert cells, board
    else:
        cells = tuple(oracle.legal(board))
    results = [_search(oracle.play(board, cell, mover), perfect_marks) for cell in cells]
    return min(results) if 1 in perfect_marks else max(results)


@pytest.mark.parametrize("perfect_mark", [1, -1])
def test_perfect_player_never_loses_against_any_move_sequence(perfect_mark: int) -> None:
    worst_for_perfect = _search(oracle.EMPTY_BOARD, frozenset({perfect_mark})) * perfect_mark
    assert worst_for_perfect >= 0


def test_two_perfect_players_always_draw() -> None:
    finals: set[int] = set()

    def walk(board: oracle.Board) -> None:
        if oracle.is_over(board):
            finals.add(oracle.winner(board))
            return
        mover = oracle.to_move(board)
        for cell in _optimal_cells(tuple(mark * mover for mark in board)):
            walk(oracle.play(board, cell, mover))

    walk(oracle.EMPTY_BOARD)
    assert finals == {0}


def test_known_limits_against_random_play() -> None:
    x_wins, o_wins, draws = oracle.random_vs_random(oracle.EMPTY_BOARD)
    assert (round(x_wins, 3), round(o_wins, 3), round(draws, 3)) == (0.585, 0.288, 0.127)
    assert [round(p, 4) for p in oracle.safe_best_vs_random(oracle.EMPTY_BOARD, 1)] == [0.9948, 0.0]
    assert [round(p, 4) for p in oracle.safe_best_vs_random(oracle.EMPTY_BOARD, -1)] == [0.9164, 0.0]


def test_perfect_opponent_tie_breaks() -> None:
    positions = torch.tensor(_perspective_positions(), dtype=torch.int8)
    legal = positions == 0
    best = opp.optimal_moves(positions)
    generator = torch.Generator().manual_seed(0)
    random_moves = opp.PerfectOpponent().act(positions, legal, generator)
    assert bool(best.gather(1, random_moves.unsqueeze(1)).all())
    first_moves = opp.PerfectOpponent(tie_break="first").act(positions, legal, generator)
    assert torch.equal(first_moves, best.to(torch.uint8).argmax(dim=1))
    empty = torch.zeros(4000, 9, dtype=torch.int8)
    spread = torch.bincount(opp.PerfectOpponent().act(empty, empty == 0, generator), minlength=9)
    assert int(spread.min()) > 300, "ties on the empty board are broken uniformly"
    with pytest.raises(ValueError, match="tie_break 'last'"):
        opp.PerfectOpponent(tie_break="last")


def test_random_opponent_picks_only_legal_cells_uniformly() -> None:
    legal = torch.tensor([[True, False, True, False, False, False, False, False, True]]).repeat(3000, 1)
    moves = opp.RandomOpponent().act(
        torch.zeros(3000, 9, dtype=torch.int8), legal, torch.Generator().manual_seed(1)
    )
    counts = torch.bincount(moves, minlength=9)
    assert counts[[1, 3, 4, 5, 6, 7]].sum() == 0
    assert all(900 < int(counts[c]) < 1100 for c in (0, 2, 8))


def test_self_play_opponent_uses_policy_and_checks_it() -> None:
    boards = torch.tensor([[1, -1, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.int8)
    legal = boards == 0
    generator = torch.Generator().manual_seed(0)
    seen = []

    def last_free(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.append(obs.clone())
        return 8 - mask.flip(1).to(torch.uint8).argmax(dim=1)

    player = opp.SelfPlayOpponent()
    assert int(player.act(boards, legal, generator)[0]) in range(2, 9)
    player.set_policy(last_free)
    assert player.act(boards, legal, generator).tolist() == [8]
    assert torch.equal(seen[0], boards)
    player.set_policy(lambda obs, mask: torch.zeros(obs.shape[0], dtype=torch.int64))
    with pytest.raises(ValueError, match=r"illegal moves \[0\] on rows \[0\]"):
        player.act(boards, legal, generator)


def test_mixture_samples_opponents_by_weight() -> None:
    mixture = opp.OpponentMixture({"random": 1.0, "perfect": 3.0, "self_play": 0})
    assert mixture.names == ["random", "perfect", "self_play"]
    assert mixture.weights == [0.25, 0.75, 0.0]
    ids = mixture.sample(8000, torch.Generator().manual_seed(0))
    counts = torch.bincount(ids, minlength=3).tolist()
    assert counts[2] == 0 and 1800 < counts[0] < 2200
    # a self-play opponent of weight 0 gets the policy but is never played
    assert not mixture.set_self_play_policy(lambda obs, mask: mask.to(torch.uint8).argmax(dim=1))
    assert opp.OpponentMixture({"random": 1.0, "self_play": 0.5}).set_self_play_policy(None)
    assert not opp.OpponentMixture("perfect").set_self_play_policy(None)


def test_mixture_acts_with_each_boards_opponent() -> None:
    mixture = opp.OpponentMixture({"perfect": 1, "self_play": 1})
    mixture.set_self_play_policy(lambda obs, mask: torch.full((obs.shape[0],), 8))
    boards = torch.tensor([[1, 1, 0, -1, -1, 0, 0, 0, 0]] * 2, dtype=torch.int8)
    legal = boards == 0
    moves = mixture.act(boards, legal, torch.Generator(), torch.tensor([0, 1]), torch.tensor([True, True]))
    assert moves.tolist() == [2, 8]


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        ("perfec", ValueError, r"unknown opponent 'perfec' \(valid: 'random', 'perfect', 'self_play'\)"),
        ({"random": 1, "minimax": 1}, ValueError, "unknown opponent 'minimax'"),
        ({"random": -1}, ValueError, "weight for 'random' must be finite and >= 0, got -1"),
        ({"random": float("nan")}, ValueError, "must be finite"),
        ({"random": "1"}, ValueError, "must be a number, got '1'"),
        ({"random": True}, ValueError, "must be a number, got True"),
        ({"random": 0, "perfect": 0.0}, ValueError, "must not all be zero"),
        ({}, ValueError, "empty"),
        (3, TypeError, "got 3"),
    ],
)
def test_bad_opponent_specs_are_named(spec: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        opp.OpponentMixture(spec)  # type: ignore[arg-type]


def test_per_role_opponents_are_drawn_by_the_agent_s_mark():
    import torch

    from rlenv.tictactoe.opponents import OpponentMixture

    mixture = OpponentMixture({"x": "random", "o": {"random": 0.5, "perfect": 0.5}})
    assert mixture.per_role and set(mixture.names) == {"random", "perfect"}
    marks = torch.tensor([1, -1] * 2000, dtype=torch.int8)
    ids = mixture.sample(4000, torch.Generator().manual_seed(0), marks)
    names = [mixture.names[i] for i in ids.tolist()]
    as_x, as_o = names[0::2], names[1::2]
    assert set(as_x) == {"random"}
    assert 0.45 < as_o.count("perfect") / len(as_o) < 0.55
    with pytest.raises(ValueError, match="needs both roles"):
        OpponentMixture({"x": "random"})
    # shared weights beside a role: the mixture of the role not given (how a YAML preset merges)
    merged = OpponentMixture({"random": 0.9, "perfect": 0.1, "self_play": 0.0, "x": {"random": 1.0}})
    ids = merged.sample(4000, torch.Generator().manual_seed(1), marks)
    names = [merged.names[i] for i in ids.tolist()]
    assert set(names[0::2]) == {"random"}
    assert 0.07 < names[1::2].count("perfect") / 2000 < 0.13
    with pytest.raises(ValueError, match="unknown opponent 'rnd'"):
        OpponentMixture({"rnd": 1.0, "x": "random", "o": "random"})


def test_the_vector_env_plays_x_against_random_and_o_against_perfect():
    import torch

    from rlenv.tictactoe.vector_env import TicTacToeVectorEnv

    env = TicTacToeVectorEnv(num_envs=64, agent_plays="both", opponent={"x": "random", "o": "perfect"})
    _, info = env.reset(seed=0)
    for _ in range(12):  # pairings hold at reset and for the episodes restarted within steps
        names = [env.opponents.names[i] for i in env._opponent_ids.tolist()]
        assert all((n == "random") == (m == 1) for n, m in zip(names, env.agent_marks.tolist(), strict=True))
        _, _, _, _, info = env.step(info["action_mask"].int().argmax(dim=-1))
    assert torch.is_tensor(info["outcome"])
