import json
import os
from pathlib import Path

import pytest

from rlenv.feedback.rankings import (
    Label,
    RankingFormatError,
    RankingRecord,
    append_ranking,
    load_rankings,
    merge_labels,
    write_rankings,
)

GOOD = {
    "prompt": "My house is too hot.",
    "completions": ["Open a window.", "Buy a fan.", "Move to the moon."],
    "criterion": "helpfulness",
    "labels": [{"labeler": "ana", "ranks": [2, 1, 3], "flagged": [2]}],
}


def record(prompt: str = "p", labeler: str = "ana", ranks: tuple[int, ...] = (1, 2)) -> RankingRecord:
    return RankingRecord(prompt, ("a", "b"), "positivity", (Label(labeler, ranks),))


def write_lines(path: Path, objects: list) -> None:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objects))


def with_(**changes) -> dict:
    return {**GOOD, **changes}


BROKEN = [
    ("{not json", "invalid JSON"),
    (json.dumps([1, 2]), "record must be a JSON object"),
    ({k: v for k, v in GOOD.items() if k != "criterion"}, "missing required field(s) ['criterion']"),
    (with_(lables=[]), "unknown field(s) ['lables']"),
    (with_(prompt=3), "prompt must be a string"),
    (with_(completions=["only one"]), "at least 2"),
    (with_(completions=["a", 2, "c"]), "completions must be a list of strings"),
    (with_(labels=[]), "labels must be a non-empty list"),
    (with_(labels=[{"labeler": "ana", "ranks": [1, 2]}]), "labels[0].ranks has 2 entries for 3 completions"),
    (with_(labels=[{"labeler": "ana", "ranks": [1, 0, 2]}]), "positive integers"),
    (with_(labels=[{"labeler": "ana", "ranks": [1, 1.5, 2]}]), "positive integers"),
    (with_(labels=[{"labeler": "ana", "ranks": [1, True, 2]}]), "positive integers"),
    (with_(labels=[{"labeler": "", "ranks": [1, 2, 3]}]), "labels[0].labeler must be a non-empty string"),
    (with_(labels=[{"labeler": "a", "ranks": [1, 2, 3], "flagged": [3]}]), "flagged index 3 out of range"),
    (with_(labels=[{"labeler": "a", "ranks": [1, 2, 3], "flagged": [1, 1]}]), "repeated"),
    (with_(labels=[{"labeler": "a", "ranks": [1, 2, 3]}] * 2), "['a'] appear more than once"),
    (with_(id=7), "id must be a string"),
]


@pytest.mark.parametrize(("line", "problem"), BROKEN)
def test_invalid_line_names_file_line_and_problem(tmp_path: Path, line, problem: str) -> None:
    path = tmp_path / "r.jsonl"
    write_lines(path, [GOOD, "", line, GOOD])
    with pytest.raises(RankingFormatError) as info:
        load_rankings(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")
    assert problem in str(info.value)


def test_good_record_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_lines(path, [with_(id="x1", meta={"model": "m"})])
    (loaded,) = load_rankings(path)
    assert loaded.completions == tuple(GOOD["completions"])
    assert loaded.labels == (Label("ana", (2, 1, 3), (2,)),)
    assert (loaded.id, loaded.meta) == ("x1", {"model": "m"})


def test_skip_invalid_reports_every_skipped_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "r.jsonl"
    write_lines(path, [GOOD, "{oops", GOOD, with_(completions=["x"])])
    with pytest.raises(RankingFormatError, match="and 1 more invalid line"):
        load_rankings(path)
    records = load_rankings(path, skip_invalid=True)
    assert len(records) == 2
    report = capsys.readouterr().err
    assert "skipped 2 invalid line(s)" in report
    assert "line 2: invalid JSON" in report and "line 4: completions must hold at least 2" in report


def test_round_trip_append_and_write(tmp_path: Path) -> None:
    records = [
        RankingRecord(
            "p ü",
            ("x", "y", "z"),
            "positivity",
            (Label("a", (1, 1, 2), (0,)), Label("b", (3, 2, 1))),
            "id",
            {"k": 1},
        ),
        record(),
    ]
    for r in records:
        append_ranking(tmp_path / "a.jsonl", r)
    write_rankings(tmp_path / "w.jsonl", records)
    assert load_rankings(tmp_path / "a.jsonl") == records
    assert load_rankings(tmp_path / "w.jsonl") == records
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "w.jsonl").read_bytes()


def test_record_constructor_validates() -> None:
    with pytest.raises(ValueError, match="ranks has 1 entries for 2 completions"):
        RankingRecord("p", ("a", "b"), "c", (Label("x", (1,)),))


def test_truncated_last_line_is_reported_and_repaired_on_append(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    append_ranking(path, record("first"))
    append_ranking(path, record("second"))
    intact = path.read_bytes()
    crashed = json.dumps({"prompt": "third", "completions": ["a", "b"]}).encode()[:25]
    with open(path, "ab") as handle:
        handle.write(crashed)
    with pytest.raises(RankingFormatError, match=r":3: invalid JSON.*interrupted write"):
        load_rankings(path)
    with pytest.warns(UserWarning, match="removed an incomplete last line"):
        append_ranking(path, record("fourth"))
    assert path.read_bytes().startswith(intact)
    assert [r.prompt for r in load_rankings(path)] == ["first", "second", "fourth"]
    assert (tmp_path / "r.jsonl.partial").read_bytes() == crashed + b"\n"


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(GOOD))
    assert len(load_rankings(path)) == 1
    append_ranking(path, record())
    assert len(load_rankings(path)) == 2


def test_append_refuses_invalid_record_and_leaves_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    append_ranking(path, record())
    before = path.read_bytes()
    with pytest.raises(ValueError, match="flagged index 5 out of range"):
        append_ranking(path, {**GOOD, "labels": [{"labeler": "a", "ranks": [1, 2, 3], "flagged": [5]}]})
    assert path.read_bytes() == before


def test_write_rankings_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_rankings(path, [record("old")])
    write_rankings(path, [record("new")])
    assert [r.prompt for r in load_rankings(path)] == ["new"]
    assert os.listdir(tmp_path) == ["r.jsonl"]


def test_merge_labels_joins_per_labeler_records() -> None:
    merged = merge_labels([record("p", "a"), record("q", "a"), record("p", "b", (2, 1))])
    assert [(r.prompt, [lab.labeler for lab in r.labels]) for r in merged] == [
        ("p", ["a", "b"]),
        ("q", ["a"]),
    ]
    with pytest.raises(ValueError, match="more than once"):
        merge_labels([record("p", "a"), record("p", "a")])
