import io
import json
from pathlib import Path

import pytest

from rlenv.feedback.collect import collect, main
from rlenv.feedback.human import TerminalLabeler
from rlenv.feedback.items import Item, load_items
from rlenv.feedback.labelers import SentimentLabeler, ToxicityLabeler
from rlenv.feedback.rankings import load_rankings

ITEMS = [
    ("How was the film?", ["It was awful and boring.", "I loved it, wonderful!"]),
    ("And the food?", ["Delicious and lovely.", "Terrible, I hated it.", "It was food."]),
]


def test_simulated_panel_collects_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    panel = [SentimentLabeler(noise=0.01, seed=s) for s in range(3)]
    assert collect(ITEMS[:1], panel, path).labeled == 1
    summary = collect(ITEMS, panel, path)
    assert (summary.already_done, summary.labeled) == (1, 1)
    records = load_rankings(path)
    assert [len(r.labels) for r in records] == [3, 3]
    assert records[0].criterion == "positivity"
    assert all(lab.ranks == (2, 1) for lab in records[0].labels)
    assert all(lab.ranks == (1, 3, 2) for lab in records[1].labels)


def test_mixed_criteria_need_explicit_criterion(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="different criteria"):
        collect(ITEMS, [SentimentLabeler(), ToxicityLabeler()], tmp_path / "r.jsonl")


def test_collect_with_a_person(tmp_path: Path) -> None:
    person = TerminalLabeler(
        "ana", "positivity", input_stream=io.StringIO("2 1\n1 2 3\n"), output_stream=io.StringIO()
    )
    assert collect([Item(p, tuple(c)) for p, c in ITEMS], person, tmp_path / "r.jsonl").labeled == 2


def test_command_line_simulated(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"prompt": p, "completions": c}) + "\n" for p, c in ITEMS))
    assert len(load_items(items)) == 2
    summary = main([str(items), str(tmp_path / "out.jsonl"), "--simulated", "sentiment", "--panel", "2"])
    assert summary.labeled == 2
    assert len(load_rankings(tmp_path / "out.jsonl")[0].labels) == 2


def test_load_items_names_bad_line(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"prompt": "p", "completions": ["a", "b"]}\n{"prompt": "p", "completions": ["a"]}\n')
    with pytest.raises(ValueError, match=r"items.jsonl:2: an item needs at least 2 completions"):
        load_items(items)
