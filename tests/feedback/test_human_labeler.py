import io
import re
from pathlib import Path

import pytest

from rlenv.feedback.human import TerminalLabeler, parse_answer
from rlenv.feedback.items import Item
from rlenv.feedback.rankings import Label, load_rankings

ITEMS = [Item(f"prompt {k}", (f"a{k}", f"b{k}", f"c{k}"), id=f"id{k}") for k in range(4)]


class ScriptedInput:
    """Lines typed by a person; ``KeyboardInterrupt`` stands for Ctrl-C."""

    def __init__(self, lines: list) -> None:
        self.lines = list(lines)

    def readline(self) -> str:
        if not self.lines:
            return ""
        line = self.lines.pop(0)
        if line is KeyboardInterrupt:
            raise KeyboardInterrupt
        return line + "\n"


def session(lines: list) -> tuple[TerminalLabeler, io.StringIO]:
    out = io.StringIO()
    return TerminalLabeler("ana", "positivity", input_stream=ScriptedInput(lines), output_stream=out), out


def test_parse_answer() -> None:
    assert parse_answer("2 1 3 3", 4).ranks == (2, 1, 3, 3)
    answer = parse_answer(" 1,2,2 f3 u1", 3)
    assert (answer.kind, answer.ranks, answer.flag, answer.unflag) == ("rank", (1, 2, 2), {2}, {0})
    assert parse_answer("f2", 3).kind == "flags"
    assert [parse_answer(c, 3).kind for c in ("s", "Q", "?")] == ["skip", "quit", "help"]
    for bad, problem in [
        ("1 2", "got 2 ranks for 3 completions"),
        ("1 0 2", "bad token '0'"),
        ("1 x 2", "bad token 'x'"),
        ("f4", "bad flag 'f4'"),
        ("", "empty answer"),
        ("1 2 3 f1 u1", "both flagged and unflagged"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_answer(bad, 3)


def test_instructions_first_then_numbered_completions(tmp_path: Path) -> None:
    labeler, out = session(["1 2 3"])
    labeler.run(ITEMS[:1], tmp_path / "r.jsonl")
    text = out.getvalue()
    assert text.index("Labeling instructions") < text.index("prompt 0")
    for needle in ("Criterion: positivity", "Ties", "f<k>", "(1) a0", "(3) c0"):
        assert needle in text


def test_bad_input_is_explained_and_asked_again(tmp_path: Path) -> None:
    labeler, out = session(["1 2", "f3", "?", "2 1 3"])
    summary = labeler.run(ITEMS[:1], tmp_path / "r.jsonl")
    assert summary.labeled == 1
    assert "got 2 ranks for 3 completions" in out.getvalue()
    assert "flagged: [3]" in out.getvalue()
    (record,) = load_rankings(tmp_path / "r.jsonl")
    assert record.labels == (Label("ana", (2, 1, 3), (2,)),)
    assert (record.id, record.criterion) == ("id0", "positivity")


def test_interrupt_then_resume_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    labeler, out = session(["1 2 3", "s", "3 2 1 f1", KeyboardInterrupt])
    summary = labeler.run(ITEMS, path)
    assert summary.interrupted and (summary.labeled, summary.skipped, summary.remaining) == (2, 1, 2)
    assert "rerun the same command" in out.getvalue()
    assert [r.id for r in load_rankings(path)] == ["id0", "id2"]

    labeler, out = session(["1 1 2", "2 1 3"])
    summary = labeler.run(ITEMS, path)
    assert (summary.already_done, summary.labeled, summary.remaining) == (2, 2, 0)
    assert "prompt 1" in out.getvalue() and "prompt 0" not in out.getvalue()
    records = load_rankings(path)
    assert [r.id for r in records] == ["id0", "id2", "id1", "id3"]
    assert [r.labels[0].ranks for r in records] == [(1, 2, 3), (3, 2, 1), (1, 1, 2), (2, 1, 3)]
    assert records[1].labels[0].flagged == (0,)


def test_quit_and_end_of_input_stop_cleanly(tmp_path: Path) -> None:
    labeler, _ = session(["1 2 3", "q"])
    summary = labeler.run(ITEMS, tmp_path / "r.jsonl")
    assert summary.quit and summary.labeled == 1 and summary.remaining == 3
    labeler, _ = session([])
    assert labeler.run(ITEMS, tmp_path / "r.jsonl").quit


def test_other_labeler_labels_the_same_items(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    session(["1 2 3"])[0].run(ITEMS[:1], path)
    bob = TerminalLabeler(
        "bob", "positivity", input_stream=ScriptedInput(["3 2 1"]), output_stream=io.StringIO()
    )
    assert bob.run(ITEMS[:1], path).labeled == 1
    assert [r.labels[0].labeler for r in load_rankings(path)] == ["ana", "bob"]


HOSTILE = (
    "\x1b[2J\x1b[Hscreen cleared",
    "\x1b]0;new window title\x07 and \x1b]52;c;cm0gLXJmIH4=\x07 clipboard",
    "fine\n(2) forged option\n  (3) another forged one\r(1) overwritten",
    "\u202eevil\u202c \u2066isolate\u2069 \u202a\u202b\u202d \x1b[8mhidden\x1b[0m",
    "C1 \x9b2J \x9d0;title\x9c DEL \x7f NUL \x00 tag \U000e0041",
)
OPTION = re.compile(r"^\s*\(\d+\)")
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\U000e0000-\U000e007f]")


def shown(item: Item, flagged: frozenset[int] = frozenset()) -> str:
    labeler, out = session([])
    labeler.show(item, 1, 1, set(flagged))
    return out.getvalue()


def test_hostile_completions_are_shown_escaped_one_numbered_block_each() -> None:
    item = Item("Rate these.\n(1) forged by the prompt\x1b[2J", HOSTILE)
    for flagged in (frozenset(), frozenset({1, 2})):
        text = shown(item, flagged)
        assert not RAW_CONTROLS.search(text), RAW_CONTROLS.search(text)
        options = [line for line in text.splitlines() if OPTION.match(line)]
        assert len(options) == len(HOSTILE)
        assert [OPTION.match(line).group().strip() for line in options] == [f"({k})" for k in range(1, 6)]
    for escaped in (
        r"\x1b[2J",
        r"\x07",
        r"\x9b",
        r"\x7f",
        r"\x00",
        r"\u202e",
        r"\u2066",
        r"\x0d(1)",
        r"\U000e0041",
    ):
        assert escaped in text
    assert "      | (2) forged option" in text and "      |   (3) another forged one" in text
    assert "> (1) forged by the prompt" in text


def test_plain_text_is_shown_as_it_is() -> None:
    text = shown(Item("A prompt", ("first", "tab\there", "é 中文 🙂")))
    assert "> A prompt\n" in text
    assert "  (1) first\n  (2) tab\there\n  (3) é 中文 🙂\n" in text


def test_a_session_refuses_items_whose_ranking_could_not_be_saved(tmp_path: Path) -> None:
    labeler, out = session(["1 2"])
    bad = [Item("fine", ("a", "b")), Item("p", ("ok", "\x1b[2J"), id="x7")]
    with pytest.raises(
        ValueError, match=re.escape(r"item 1 (id 'x7') cannot be labeled") + ".*completions\\[1\\]"
    ):
        labeler.run(bad, tmp_path / "r.jsonl")
    assert out.getvalue() == "" and not (tmp_path / "r.jsonl").exists()
    assert labeler.input.lines == ["1 2"]
