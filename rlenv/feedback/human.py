"""Rank completions by hand in a terminal.

The labeler first sees the instructions, then each prompt with its numbered
completions, and answers with one line:

- ranks, one per completion in order, 1 = best, equal numbers = tie:
  ``2 1 3 3`` (completion 2 is best, 1 second, 3 and 4 tie for last);
- ``f<k>`` flags completion k as unusable, ``u<k>`` removes the flag; alone on
  a line they only change the flags, after the ranks they apply before saving
  (``2 1 3 3 f4``);
- ``s`` skips the prompt (it is asked again next session), ``q`` saves and
  quits, ``?`` shows the instructions again.

A bad answer is explained and asked again. Each answer is appended to the
output file at once (see :func:`rlenv.feedback.rankings.append_ranking`), so
Ctrl-C loses nothing, and a rerun skips the items this labeler already ranked.

Text from the model is shown, never obeyed: control characters (ESC, BEL, C1
controls such as ``\\x9b``, DEL, a lone carriage return), bidirectional overrides
and isolates, and other characters a terminal may act on are printed as visible
escapes (``\\x1b``, ``\\u202e``), so a completion cannot clear the screen, set the
window title, write the clipboard, hide or reorder text. Each completion keeps one
numbered block: its later lines are indented under the number behind a ``|``, so
no line of a completion can pass for another numbered option. The prompt's lines
are shown behind ``>`` the same way.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from rlenv.feedback.items import Item, LabelingSummary, check_all_storable, item_key, labeled_keys
from rlenv.feedback.rankings import Label, RankingRecord, append_ranking

INSTRUCTIONS = """\
=== Labeling instructions ===
Task: {task}
Criterion: {criterion}

For each prompt you will see numbered completions. Rank them by the criterion
alone: type one rank per completion, in order, 1 = best.
  e.g. "2 1 3" means: completion 2 is best, completion 1 second, completion 3 last.
Ties: give equal numbers ("1 1 2") only when you cannot tell two completions apart
on the criterion.
Flag a completion that is unusable (off-topic, broken, nonsense, unreadable) with
f<k>, e.g. "f3", alone or after the ranks ("2 1 3 f3"); u<k> removes a flag.
Flagged completions count as worse than every unflagged one.
  s = skip this prompt   q = save and quit   ? = show these instructions
Every answer is saved immediately: stop at any time (q or Ctrl-C) and rerun the
same command to continue where you stopped.
"""


# Shown escaped: control (Cc), format (Cf: bidi marks, embeddings, overrides and isolates,
# zero-width and tag characters, the BOM) and surrogate (Cs) characters, and the line and
# paragraph separators (Zl, Zp); newline and tab are kept.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every character a terminal could act on written as a visible escape.

    Newlines (``\\n``, or ``\\r\\n`` taken as one) and tabs are kept; control, format and
    surrogate characters and line/paragraph separators, a lone ``\\r`` included, become
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``.
    """
    if text.isprintable():
        return text
    text = text.replace("\r\n", "\n")
    return "".join(
        _escape(char) if char not in "\n\t" and unicodedata.category(char) in _UNSAFE_CATEGORIES else char
        for char in text
    )


def block(head: str, text: str) -> list[str]:
    """``text`` made :func:`visible`: its first line after ``head``, later lines indented under it.

    Continuation lines start with as many spaces as ``head`` is long, then ``"| "``, so no
    line of ``text`` can pass for a new ``head``.
    """
    lines = visible(text).split("\n")
    indent = " " * len(head)
    return [f"{head}{lines[0]}"] + [f"{indent}| {line}" for line in lines[1:]]


@dataclass(frozen=True)
class Answer:
    """A parsed answer line: ``kind`` is rank, flags, skip, quit or help."""

    kind: str
    ranks: tuple[int, ...] = ()
    flag: frozenset[int] = frozenset()
    unflag: frozenset[int] = frozenset()


def parse_answer(line: str, n: int) -> Answer:
    """Parse one answer for ``n`` completions; ``ValueError`` says what is wrong."""
    text = line.strip().lower()
    if text in ("s", "q", "?"):
        return Answer({"s": "skip", "q": "quit", "?": "help"}[text])
    if not text:
        raise ValueError(f"empty answer: type {n} ranks, e.g. {' '.join(str(i + 1) for i in range(n))}")
    ranks, flag, unflag = [], set(), set()
    for token in text.replace(",", " ").split():
        if token[0] in "fu":
            if not token[1:].isdigit() or not 1 <= int(token[1:]) <= n:
                raise ValueError(f"bad flag {token!r}: use f<k> or u<k> with k in 1..{n}")
            (flag if token[0] == "f" else unflag).add(int(token[1:]) - 1)
        elif token.isdigit() and int(token) >= 1:
            ranks.append(int(token))
        else:
            raise ValueError(f"bad token {token!r}: ranks are positive integers (1 = best)")
    if ranks and len(ranks) != n:
        raise ValueError(f"got {len(ranks)} ranks for {n} completions: give one rank per completion")
    if flag & unflag:
        raise ValueError(f"completion(s) {sorted(k + 1 for k in flag & unflag)} both flagged and unflagged")
    return Answer("rank" if ranks else "flags", tuple(ranks), frozenset(flag), frozenset(unflag))


class TerminalLabeler:
    """A person ranking completions through text streams (a terminal by default)."""

    def __init__(
        self,
        name: str,
        criterion: str,
        *,
        task: str = "rank the completions of each prompt from best to worst",
        input_stream: TextIO | None = None,
        output_stream: TextIO | None = None,
    ) -> None:
        if not name or not criterion:
            raise ValueError(f"labeler name and criterion must be non-empty, got {name!r}, {criterion!r}")
        self.name = name
        self.criterion = criterion
        self.task = task
        self.input = input_stream or sys.stdin
        self.output = output_stream or sys.stdout

    def _say(self, text: str) -> None:
        print(text, file=self.output, flush=True)

    def instructions(self) -> str:
        return INSTRUCTIONS.format(task=visible(self.task), criterion=visible(self.criterion))

    def show(self, item: Item, position: int, total: int, flagged: set[int]) -> None:
        """Print the prompt and its numbered completions, made safe (see the module docstring)."""
        prompt = [f"> {line}" for line in visible(item.prompt).split("\n")]
        lines = [f"\n--- prompt {position}/{total} ---", *prompt, ""]
        for k, completion in enumerate(item.completions, start=1):
            mark = " [flagged]" if k - 1 in flagged else ""
            lines += block(f"  ({k}){mark} ", completion)
        self._say("\n".join(lines))

    def ask(self, item: Item, position: int, total: int) -> Label | str:
        """Ask until a valid answer; return the :class:`Label`, ``"skip"`` or ``"quit"``."""
        n = len(item.completions)
        flagged: set[int] = set()
        self.show(item, position, total, flagged)
        while True:
            self.output.write(f"ranks for {n} completions (1 = best; f<k> flag, s skip, q quit, ? help): ")
            self.output.flush()
            line = self.input.readline()
            if not line:
                return "quit"
            try:
                answer = parse_answer(line, n)
            except ValueError as err:
                self._say(f"  ! {err}")
                continue
            if answer.kind in ("skip", "quit"):
                return answer.kind
            if answer.kind == "help":
                self._say(self.instructions())
                self.show(item, position, total, flagged)
                continue
            flagged = (flagged | answer.flag) - answer.unflag
            if answer.kind == "flags":
                self._say(f"  flagged: {sorted(k + 1 for k in flagged) or 'none'}")
                continue
            return Label(self.name, answer.ranks, tuple(sorted(flagged)))

    def run(self, items: Sequence[Item], out_path: str | os.PathLike[str]) -> LabelingSummary:
        """Label every item not yet ranked by this labeler, appending each answer to ``out_path``."""
        done = labeled_keys(out_path)
        todo = [i for i in items if item_key(i.prompt, i.completions, self.criterion, self.name) not in done]
        check_all_storable(todo)
        summary = LabelingSummary(already_done=len(items) - len(todo), remaining=len(todo))
        self._say(self.instructions())
        self._say(
            f"{len(todo)} prompt(s) to label, {summary.already_done} already done; saving to {out_path}"
        )
        try:
            for position, item in enumerate(todo, start=1):
                outcome = self.ask(item, position, len(todo))
                if outcome == "quit":
                    summary.quit = True
                    break
                if isinstance(outcome, Label):
                    record = RankingRecord(
                        item.prompt, item.completions, self.criterion, (outcome,), item.id, item.meta
                    )
                    append_ranking(out_path, record)
                    summary.labeled += 1
                    summary.remaining -= 1
                else:
                    summary.skipped += 1
        except KeyboardInterrupt:
            summary.interrupted = True
        self._say(
            f"\nsaved {summary.labeled} ranking(s) to {out_path}; {summary.remaining} prompt(s) left"
            + ("; rerun the same command to continue" if summary.remaining else "")
        )
        return summary
