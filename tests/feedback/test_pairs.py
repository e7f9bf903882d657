import pytest

from rlenv.feedback.pairs import Pair, pair_support, ranking_to_pairs, records_to_pairs, split_by_prompt
from rlenv.feedback.rankings import Label, RankingRecord


def test_seed_example_three_completions_ranked_2_1_3() -> None:
    pairs = ranking_to_pairs(["purple", "yellow", "green"], [2, 1, 3], prompt="p")
    assert pairs == [
        Pair("yellow", "purple", "p"),
        Pair("purple", "green", "p"),
        Pair("yellow", "green", "p"),
    ]


def test_n_choose_2_pairs_preferred_first() -> None:
    completions = ["a", "b", "c", "d", "e"]
    ranks = [5, 3, 1, 4, 2]
    pairs = ranking_to_pairs(completions, ranks)
    assert len(pairs) == 10
    rank = dict(zip(completions, ranks, strict=True))
    assert all(rank[p.chosen] < rank[p.rejected] for p in pairs)


def test_ties_give_no_pair() -> None:
    assert ranking_to_pairs(["a", "b", "c"], [1, 1, 2]) == [Pair("a", "c"), Pair("b", "c")]
    assert ranking_to_pairs(["a", "b"], [2, 2]) == []


def test_flagged_last_and_excluded() -> None:
    completions, ranks = ["a", "b", "c", "d"], [1, 2, 3, 4]
    last = ranking_to_pairs(completions, ranks, flagged=[0, 2], flagged_policy="last")
    assert last == [Pair("b", "a"), Pair("d", "a"), Pair("b", "c"), Pair("b", "d"), Pair("d", "c")]
    excluded = ranking_to_pairs(completions, ranks, flagged=[0, 2], flagged_policy="exclude")
    assert excluded == [Pair("b", "d")]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="got 2 ranks for 3 completions"):
        ranking_to_pairs(["a", "b", "c"], [1, 2])
    with pytest.raises(ValueError, match=r"unknown flagged_policy 'drop' \(valid: \['last', 'exclude'\]\)"):
        ranking_to_pairs(["a", "b"], [1, 2], flagged_policy="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="flagged index 2 out of range"):
        ranking_to_pairs(["a", "b"], [1, 2], flagged=[2])


def make(prompt: str, *labels: Label) -> RankingRecord:
    return RankingRecord(prompt, ("x", "y", "z"), "positivity", labels)


def test_records_to_pairs_uses_consensus_and_agreement_filter() -> None:
    agreeing = make("p", Label("a", (1, 2, 3)), Label("b", (1, 2, 3)))
    partly = make("q", Label("a", (1, 2, 3)), Label("b", (2, 1, 3)))
    single = make("r", Label("a", (3, 2, 1)))
    pairs = records_to_pairs([agreeing, partly, single])
    assert [p.prompt for p in pairs] == ["p"] * 3 + ["q"] * 2 + ["r"] * 3
    assert [p for p in pairs if p.prompt == "q"] == [Pair("x", "z", "q"), Pair("y", "z", "q")]
    assert [p for p in pairs if p.prompt == "r"][0] == Pair("y", "x", "r")
    filtered = records_to_pairs([agreeing, partly, single], min_agreement=0.8)
    assert [p.prompt for p in filtered] == ["p"] * 3 + ["r"] * 3


def test_split_by_prompt_keeps_prompts_apart_and_is_seeded() -> None:
    records = [make(f"p{i % 10}", Label("a", (1, 2, 3))) for i in range(30)]
    train, val = split_by_prompt(records, 0.2, seed=3)
    assert len(val) == 6 and len(train) == 24
    assert not {r.prompt for r in train} & {r.prompt for r in val}
    assert split_by_prompt(records, 0.2, seed=3) == (train, val)
    assert split_by_prompt(records, 0.0, seed=3) == (records, [])
    tiny_train, tiny_val = split_by_prompt(records[:2], 0.01)
    assert len(tiny_val) == 1 and len(tiny_train) == 1
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\), got 1.0"):
        split_by_prompt(records, 1.0)


def test_min_pair_agreement_drops_split_pairs() -> None:
    labels = (Label("a", (1, 2, 3)), Label("b", (1, 3, 2)), Label("c", (1, 2, 3)))
    record = RankingRecord("p", ("x", "y", "z"), "c", labels)
    assert len(records_to_pairs([record])) == 3
    unanimous = records_to_pairs([record], min_pair_agreement=1.0)
    assert unanimous == [Pair("x", "y", "p"), Pair("x", "z", "p")]
    assert pair_support(labels, 1, 2) == pytest.approx(2 / 3)
    assert records_to_pairs([record], min_pair_agreement=0.6) == records_to_pairs([record])
