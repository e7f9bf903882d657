import io
import json
import os
import re
from pathlib import Path

import pytest

from rlenv.feedback.rankings import (
    MAX_NESTING,
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


def raw_line(path: Path, line: bytes) -> None:
    """A file whose second line is ``line`` (bytes as they are), between two good records."""
    good = json.dumps(GOOD).encode()
    path.write_bytes(good + b"\n" + line + b"\n" + good + b"\n")


def bad_line_error(tmp_path: Path, line: bytes) -> RankingFormatError:
    path = tmp_path / "r.jsonl"
    raw_line(path, line)
    with pytest.raises(RankingFormatError) as info:
        load_rankings(path)
    assert info.value.line == 2 and str(info.value).startswith(f"{path}:2: ")
    records = load_rankings(path, skip_invalid=True, report=io.StringIO())
    assert len(records) == 2
    return info.value


@pytest.mark.parametrize("depth", [65, 1_000, 100_000])
def test_deep_nesting_is_a_format_error_not_a_recursion_error(tmp_path: Path, depth: int) -> None:
    as_list = b"[" * depth + b"]" * depth
    in_meta = json.dumps(with_(meta={"deep": "X"})).encode().replace(b'"X"', as_list)
    for line in (as_list, in_meta):
        assert "nested too deeply" in bad_line_error(tmp_path, line).problem


def test_nesting_up_to_the_limit_loads_and_brackets_in_strings_do_not_count(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    deepest: list = []
    for _ in range(MAX_NESTING - 3):  # the record (level 1) and meta (2) hold "d" (3) ... down to 64
        deepest = [deepest]
    nested = with_(meta={"d": deepest}, prompt="[[[[" * 100 + '\\"[{' * 50)
    write_lines(path, [nested])
    (loaded,) = load_rankings(path)
    assert loaded.prompt == nested["prompt"] and loaded.meta == {"d": deepest}
    write_lines(path, [with_(meta={"d": [deepest]})])
    with pytest.raises(RankingFormatError, match="nested too deeply"):
        load_rankings(path)
    with pytest.raises(ValueError, match="nested too deeply"):
        append_ranking(tmp_path / "new.jsonl", with_(meta={"d": [deepest]}))
    append_ranking(tmp_path / "new.jsonl", nested)
    assert load_rankings(tmp_path / "new.jsonl") == [loaded]


@pytest.mark.parametrize(
    ("field", "value", "named", "char"),
    [
        ("prompt", "hi\ud800", "prompt", r"'\ud800'"),
        ("completions", ["a", "b", "x\x1b[2J"], "completions[2]", r"'\x1b'"),
        ("completions", ["\udfff", "b"], "completions[0]", r"'\udfff'"),
        ("criterion", "help\x07", "criterion", r"'\x07'"),
        ("id", "i\x00d", "id", r"'\x00'"),
        ("meta", {"model": ["ok", "\x9b31m"]}, "meta['model'][1]", r"'\x9b'"),
        ("meta", {"a\x7f": 1}, "the key 'a\\x7f' of meta", r"'\x7f'"),
        ("labels", [{"labeler": "an\x1ba", "ranks": [1, 2, 3]}], "labels[0].labeler", r"'\x1b'"),
    ],
)
def test_bad_characters_name_the_field_and_the_character(tmp_path, field, value, named, char) -> None:
    line = json.dumps(with_(**{field: value})).encode()
    problem = bad_line_error(tmp_path, line).problem
    assert problem.startswith(named + " holds ") and char in problem
    obj = with_(**{field: value})
    with pytest.raises(ValueError, match=re.escape(named)):
        append_ranking(tmp_path / "new.jsonl", obj)
    assert not (tmp_path / "new.jsonl").exists()


def test_newline_tab_carriage_return_and_other_unicode_are_kept(tmp_path: Path) -> None:
    texts = ("line 1\nline 2\ttab\r\n", "é ü 中文 🙂 \u2028 \u202e")
    record = RankingRecord("p\n", texts, "c", (Label("a\tb", (1, 2)),), "i\rd", {"k\n": ["v\t"]})
    write_rankings(tmp_path / "r.jsonl", [record])
    assert load_rankings(tmp_path / "r.jsonl") == [record]


def test_invalid_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    line = json.dumps(GOOD).encode().replace(b"My house", b"My \xff\xfe house")
    assert "not valid UTF-8" in (problem := bad_line_error(tmp_path, line).problem)
    assert "byte 15" in problem and r"b'\xff'" in problem
    encoded_surrogate = json.dumps(GOOD).encode().replace(b"My", b"\xed\xa0\x80")
    assert "not valid UTF-8" in bad_line_error(tmp_path, encoded_surrogate).problem


@pytest.mark.parametrize(
    ("ranks", "problem"),
    [
        ("[1, NaN, 2]", "ranks must be positive integers (1 = best), got [nan]"),
        ("[1, Infinity, 2]", "got [inf]"),
        ("[1, -Infinity, 2]", "got [-inf]"),
        ("[1, 1e400, 2]", "got [inf]"),
        ("[1, 2, 3000000000]", "labels[0].ranks[2] = 3000000000 is too large: ranks lie in 1..2147483647"),
        ("[1, 2, " + "9" * 30 + "]", "labels[0].ranks[2] = " + "9" * 30 + " is too large"),
        ("[1, 2, " + "9" * 5000 + "]", "with 5000 digits is out of range"),
    ],
)
def test_nan_infinity_and_huge_numbers_are_clear_errors(tmp_path: Path, ranks: str, problem: str) -> None:
    line = json.dumps(GOOD).replace("[2, 1, 3]", ranks).encode()
    assert problem in bad_line_error(tmp_path, line).problem


@pytest.mark.parametrize(
    ("meta", "problem"),
    [
        ('{"t": NaN}', "meta['t'] is nan: numbers must be finite"),
        ('{"t": [1, -Infinity]}', "meta['t'][1] is -inf: numbers must be finite"),
        ('{"seed": 18446744073709551616}', "meta['seed'] = 18446744073709551616 is out of range"),
    ],
)
def test_meta_numbers_must_be_finite_and_in_range(tmp_path: Path, meta: str, problem: str) -> None:
    line = json.dumps(with_(meta={})).replace('"meta": {}', f'"meta": {meta}').encode()
    assert problem in bad_line_error(tmp_path, line).problem


REFUSED_VALUES = [
    ({"completions": ("a", "\x1b]0;pwned\x07")}, r"completions[1] holds the control character '\x1b'"),
    ({"prompt": "\ud83d"}, r"prompt holds a lone surrogate '\ud83d'"),
    ({"criterion": "c\u0085"}, r"criterion holds the control character '\x85'"),
    ({"meta": {"t": float("nan")}}, "meta['t'] is nan"),
    ({"meta": {"t": [float("inf")]}}, "meta['t'][0] is inf"),
    ({"meta": {"t": 2**64}}, "meta['t'] = 18446744073709551616 is out of range"),
    ({"meta": {"t": 10**5000}}, "meta['t'] = <integer of about 5001 digits> is out of range"),
    ({"meta": {"t": {1, 2}}}, "meta['t'] must be JSON"),
    ({"meta": {3: "x"}}, "meta has a key 3 that is not a string"),
]


@pytest.mark.parametrize(("change", "problem"), REFUSED_VALUES)
def test_writer_and_constructor_refuse_what_the_reader_refuses(tmp_path: Path, change, problem) -> None:
    fields = {"prompt": "p", "completions": ("a", "b"), "criterion": "c", "labels": (Label("x", (1, 2)),)}
    fields.update(change)
    with pytest.raises(ValueError, match=re.escape(problem)):
        RankingRecord(**fields)
    path = tmp_path / "r.jsonl"
    append_ranking(path, record())
    before = path.read_bytes()
    as_dict = {
        **fields,
        "completions": list(fields["completions"]),
        "labels": [{"labeler": "x", "ranks": [1, 2]}],
    }
    with pytest.raises(ValueError, match=re.escape(problem)):
        append_ranking(path, as_dict)
    with pytest.raises(ValueError, match=re.escape(problem)):
        write_rankings(path, [as_dict])  # type: ignore[list-item]
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"meta": 5}, "meta must be a mapping, got int"),
        ({"labels": (Label("a", (1, 2**40)),)}, "labels[0].ranks[1] = 1099511627776 is too large"),
        ({"labels": ({"labeler": "a", "ranks": [1, 2]},)}, "labels must be a tuple of Label"),
        ({"labels": (Label("a", 12),)}, "labels[0]: ranks and flagged must be tuples of integers"),
        ({"completions": "ab"}, "completions must be a tuple of strings, got 'ab'"),
    ],
)
def test_record_constructor_refuses_fields_of_the_wrong_kind(change, problem) -> None:
    fields = {"prompt": "p", "completions": ("a", "b"), "criterion": "c", "labels": (Label("x", (1, 2)),)}
    with pytest.raises(ValueError, match=re.escape(problem)):
        RankingRecord(**{**fields, **change})


def test_meta_cycles_and_deep_python_objects_are_refused_not_recursed(tmp_path: Path) -> None:
    cyclic: dict = {}
    cyclic["self"] = cyclic
    deep: list = []
    cursor = deep
    for _ in range(100_000):
        cursor.append([])
        cursor = cursor[0]
    for meta in ({"c": cyclic}, {"d": deep}):
        with pytest.raises(ValueError, match="nested too deeply"):
            append_ranking(tmp_path / "r.jsonl", with_(meta=meta))
    assert not (tmp_path / "r.jsonl").exists()


def test_repair_of_a_deeply_nested_partial_line_does_not_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    append_ranking(path, record("first"))
    with open(path, "ab") as handle:
        handle.write(b"[" * 100_000)
    with pytest.warns(UserWarning, match="removed an incomplete last line"):
        append_ranking(path, record("second"))
    assert [r.prompt for r in load_rankings(path)] == ["first", "second"]


def test_items_file_lines_may_hold_line_separators_and_bad_text_is_named(tmp_path: Path) -> None:
    from rlenv.feedback.items import Item, append_item, load_items

    path = tmp_path / "items.jsonl"
    item = Item("p\u2028q", ("a\u2029b", "c\u0301 d"), id="x")
    append_item(path, item)
    assert load_items(path) == [item]
    with open(path, "ab") as handle:
        handle.write(json.dumps({"prompt": "p", "completions": ["ok", "bad\x1b[8m"]}).encode() + b"\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:2: completions[1] holds the control character")):
        load_items(path)
    path.write_bytes(b"[" * 10_000 + b"\n")
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}:1: nested too deeply"):
        load_items(path)
    path.write_bytes(b'{"prompt": "\xff"}\n')
    with pytest.raises(ValueError, match=":1: not valid UTF-8"):
        load_items(path)
    for bad, problem in [
        (Item("p", ("ok", "\x1b]52;c;eA==\x07")), r"completions[1] holds the control character '\x1b'"),
        (Item("p\udc00", ("a", "b")), r"prompt holds a lone surrogate '\udc00'"),
        (Item("p", ("a", "b"), meta={"t": float("nan")}), "meta['t'] is nan"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            append_item(tmp_path / "new.jsonl", bad)
    assert not (tmp_path / "new.jsonl").exists()


def test_storable_text_marks_what_a_rankings_file_cannot_hold():
    from rlenv.feedback.rankings import check_text, storable_text

    raw = "ok\x1b[2J\ud800 line\nnext\ttab\x07"
    cleaned = storable_text(raw)
    check_text(cleaned, "completion")
    assert cleaned == "ok\ufffd[2J\ufffd line\nnext\ttab\ufffd"
    assert storable_text("plain text") == "plain text"
