"""Rankings of completions by labelers, stored as JSON Lines.

## File format

A rankings file is UTF-8 text with one JSON object per line, one line per
prompt (blank lines are ignored). Each object has these keys:

- ``"prompt"`` (string, required): the prompt the completions answer.
- ``"completions"`` (list of strings, required, at least 2): the N completions
  that were ranked. Index ``i`` below always means ``completions[i]``
  (0-based).
- ``"criterion"`` (non-empty string, required): what the labelers ranked by,
  e.g. ``"positivity"``, ``"non-toxicity"``, ``"helpfulness"``.
- ``"labels"`` (list, required, at least 1): one object per labeler:

  - ``"labeler"`` (non-empty string, required): who ranked; unique within
    the record.
  - ``"ranks"`` (list of N positive integers, required): ``ranks[i]`` is the
    rank of completion ``i``; 1 is the best, a larger number is worse, equal
    numbers are a tie. Only the order matters: ``[1, 1, 2]`` and ``[1, 1, 3]``
    say the same thing.
  - ``"flagged"`` (list of distinct integers in ``[0, N)``, optional): indices
    of completions the labeler flagged as unusable (irrelevant, broken,
    off-topic). A flagged completion still carries a rank; when pairs are
    built it ranks below every unflagged one (or is dropped, see
    :mod:`rlenv.feedback.pairs`).

- ``"id"`` (string, optional): an identifier for the item.
- ``"meta"`` (object, optional): anything else (model name, sampling
  settings, ...); kept as is.

No other keys are allowed, so that a typo such as ``"lables"`` is reported
instead of silently ignored.

Text and numbers: every string (prompt, completions, criterion, labeler, id, and
the keys and strings inside ``meta``) must be valid Unicode without control
characters other than newline, tab and carriage return: no lone surrogate such
as the escape ``"\\ud800"``, no ``"\\u001b"`` (ESC), no C1 control. Integers lie
in ``-2**63 .. 2**63 - 1`` (ranks in ``1 .. 2**31 - 1``), numbers are finite (no
``NaN`` or ``Infinity``), and arrays and objects nest at most
:data:`MAX_NESTING` levels deep (the record object itself is level 1). The same
rules hold when reading and when writing, so a file written here always reads
back.

Example line::

    {"prompt": "My house is too hot.", "completions": ["Open a window.",
     "Buy a fan.", "Move."], "criterion": "helpfulness",
     "labels": [{"labeler": "ana", "ranks": [2, 1, 3], "flagged": [2]}]}

Several labelers may rank the same item either inside one record or in
separate records (one per labeler, as the terminal labeler writes them);
:func:`merge_labels` joins records that share prompt, completions and
criterion.

## Writing safely

Every writer (:func:`append_ranking`, :func:`write_rankings`, and the
:class:`RankingRecord` constructor) checks a record against the rules above
first and raises ``ValueError`` naming the field, writing nothing.
:func:`append_ranking` writes one whole line with a single write call, then
flushes and fsyncs, so a crash loses at most the line being written. If a
crash left a partial last line, the next append detects it, moves the
fragment to ``<file>.partial`` and truncates the file back to its last
complete line, so earlier lines are never touched.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX systems
    fcntl = None  # type: ignore[assignment]

REQUIRED_KEYS = ("prompt", "completions", "criterion", "labels")
OPTIONAL_KEYS = ("id", "meta")
LABEL_KEYS = ("labeler", "ranks", "flagged")

MAX_NESTING = 64
"""Most levels of arrays and objects in one line (the record object is level 1)."""
MAX_RANK = 2**31 - 1
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Longer integer literals are refused while parsing (Python converts at least 640 digits
# whatever its int_max_str_digits setting); shorter ones are range-checked with their field.
_MAX_INT_LITERAL = 640

# Unicode category Cc except \t, \n, \r, and every surrogate code point (category Cs).
_FORBIDDEN_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class _Brief(reprlib.Repr):
    """``repr`` shortened for error messages; never fails on huge integers or deep nesting."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict = 3, 8, 8, 6
        self.maxstring, self.maxother, self.maxlong = 60, 60, 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


_brief = _Brief().repr


def check_text(value: str, where: str) -> None:
    """``ValueError`` naming ``where`` and the character if ``value`` holds a lone surrogate
    or a control character other than ``\\n``, ``\\t`` and ``\\r`` (see the module docstring)."""
    found = _FORBIDDEN_CHAR.search(value)
    if found is None:
        return
    char, index = found.group(), found.start()
    if "\ud800" <= char <= "\udfff":
        raise ValueError(
            f"{where} holds a lone surrogate {char!r} at index {index}: not valid Unicode, so it "
            "cannot be stored as UTF-8"
        )
    raise ValueError(
        f"{where} holds the control character {char!r} at index {index}: only \\n, \\t and \\r "
        "are allowed in text"
    )


REPLACEMENT_CHAR = "\ufffd"


def storable_text(value: str) -> str:
    """``value`` with each character :func:`check_text` refuses replaced by U+FFFD (�).

    For text a model generated: a sampled token may decode to an escape sequence or half a
    surrogate pair; the replacement keeps the completion storable and visibly marks the spot.
    """
    return _FORBIDDEN_CHAR.sub(REPLACEMENT_CHAR, value)


def check_json_value(value: Any, where: str, depth: int) -> None:
    """``ValueError`` for the first part of ``value`` that is not plain, storable JSON.

    ``depth`` is the nesting level of ``value`` if it is an array or an object. Walks
    without recursion, so any nesting depth (or a cycle) gives an error, not a crash.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, depth)]
    while stack:
        item, at, level = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            check_text(item, at)
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                raise ValueError(
                    f"{at} = {_brief(item)} is out of range: integers must lie in -2**63..2**63-1 "
                    "(store larger numbers as strings)"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{at} is {item!r}: numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, (Mapping, list, tuple)):
            if level > MAX_NESTING:
                shown = at if len(at) <= 100 else f"{at[:60]}...{at[-30:]}"
                raise ValueError(
                    f"{shown} is nested too deeply: more than {MAX_NESTING} levels of arrays/objects"
                )
            if isinstance(item, Mapping):
                children = []
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise ValueError(f"{at} has a key {_brief(key)} that is not a string")
                    check_text(key, f"the key {_brief(key)} of {at}")
                    children.append((child, f"{at}[{_brief(key)}]", level + 1))
            else:
                children = [(child, f"{at}[{k}]", level + 1) for k, child in enumerate(item)]
            stack.extend(reversed(children))
        else:
            raise ValueError(
                f"{at} must be JSON (string, number, true/false, null, list or object), "
                f"got {type(item).__name__}: {_brief(item)}"
            )


def _parse_int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > _MAX_INT_LITERAL:
        raise ValueError(
            f"integer {literal[:12]}... with {digits} digits is out of range: integers must lie in "
            "-2**63..2**63-1"
        )
    return int(literal)


def _too_deep(text: str) -> bool:
    """Whether a JSON text nests arrays and objects more than :data:`MAX_NESTING` levels deep.

    Exact for valid JSON; linear time, no recursion.
    """
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    # Drop escaped backslashes, then escaped quotes: what remains splits on '"' into
    # outside-string (even) and inside-string (odd) parts.
    outside = "".join(text.replace("\\\\", "").replace('\\"', "").split('"')[::2])
    depth = 0
    for char in re.sub(r"[^\[\]{}]", "", outside):
        depth += 1 if char in "[{" else -1
        if depth > MAX_NESTING:
            return True
    return False


def loads_line(text: str) -> Any:
    """Parse one JSON line, refusing what would crash the parser: deep nesting, huge integers.

    Raises ``json.JSONDecodeError`` for malformed JSON and ``ValueError`` for the rest;
    never ``RecursionError``. ``NaN``, ``Infinity`` and out-of-range numbers parse;
    :func:`validate_record` refuses them naming their field.
    """
    if _too_deep(text):
        raise ValueError(f"nested too deeply: more than {MAX_NESTING} levels of arrays/objects")
    return json.loads(text, parse_int=_parse_int)


@dataclass(frozen=True)
class Label:
    """One labeler's ranking of a record's completions (1 = best, equal = tie)."""

    labeler: str
    ranks: tuple[int, ...]
    flagged: tuple[int, ...] = ()


@dataclass(frozen=True)
class RankingRecord:
    """One prompt, its N completions and the labels given to them."""

    prompt: str
    completions: tuple[str, ...]
    criterion: str
    labels: tuple[Label, ...]
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_record_fields(self)
        validate_record(record_to_dict(self))


def _is_sequence(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _check_record_fields(record: RankingRecord) -> None:
    """``ValueError`` for fields of the wrong kind, before :func:`record_to_dict` reads them."""
    if not _is_sequence(record.completions):
        raise ValueError(f"completions must be a tuple of strings, got {_brief(record.completions)}")
    if not _is_sequence(record.labels) or not all(isinstance(lab, Label) for lab in record.labels):
        raise ValueError(f"labels must be a tuple of Label, got {_brief(record.labels)}")
    for i, label in enumerate(record.labels):
        if not _is_sequence(label.ranks) or not _is_sequence(label.flagged):
            raise ValueError(
                f"labels[{i}]: ranks and flagged must be tuples of integers, got "
                f"{_brief(label.ranks)} and {_brief(label.flagged)}"
            )
    if not isinstance(record.meta, Mapping):
        raise ValueError(f"meta must be a mapping, got {type(record.meta).__name__}")


@dataclass(frozen=True)
class SkippedLine:
    """A line that :func:`load_rankings` skipped, and why."""

    line: int
    problem: str


class RankingFormatError(ValueError):
    """A rankings file holds a line that is not a valid record."""

    def __init__(self, path: str | os.PathLike[str], line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _unknown_keys(obj: Mapping[Any, Any], allowed: Sequence[str]) -> list[Any]:
    return sorted(set(obj) - set(allowed), key=repr)


def _validate_label(label: Any, n: int, where: str) -> None:
    if not isinstance(label, Mapping):
        raise ValueError(f"{where} must be an object, got {type(label).__name__}")
    unknown = _unknown_keys(label, LABEL_KEYS)
    if unknown:
        raise ValueError(f"{where} has unknown keys {_brief(unknown)} (allowed: {list(LABEL_KEYS)})")
    labeler = label.get("labeler")
    if not isinstance(labeler, str) or not labeler:
        raise ValueError(f"{where}.labeler must be a non-empty string, got {_brief(labeler)}")
    check_text(labeler, f"{where}.labeler")
    ranks = label.get("ranks")
    if not isinstance(ranks, list):
        raise ValueError(f"{where}.ranks must be a list of {n} positive integers, got {_brief(ranks)}")
    if len(ranks) != n:
        raise ValueError(f"{where}.ranks has {len(ranks)} entries for {n} completions: {_brief(ranks)}")
    bad = [r for r in ranks if not _is_int(r) or r < 1]
    if bad:
        raise ValueError(
            f"{where}.ranks must be positive integers (1 = best), got {_brief(bad)} in {_brief(ranks)}"
        )
    too_large = [k for k, r in enumerate(ranks) if r > MAX_RANK]
    if too_large:
        k = too_large[0]
        raise ValueError(
            f"{where}.ranks[{k}] = {_brief(ranks[k])} is too large: ranks lie in 1..{MAX_RANK} "
            "(only their order matters)"
        )
    flagged = label.get("flagged", [])
    if not isinstance(flagged, list) or not all(_is_int(i) for i in flagged):
        raise ValueError(f"{where}.flagged must be a list of completion indices, got {_brief(flagged)}")
    out_of_range = [i for i in flagged if not 0 <= i < n]
    if out_of_range:
        raise ValueError(f"{where}.flagged index {_brief(out_of_range[0])} out of range (valid: 0..{n - 1})")
    if len(set(flagged)) != len(flagged):
        raise ValueError(f"{where}.flagged has repeated indices: {_brief(flagged)}")


def validate_record(obj: Any) -> None:
    """Raise ``ValueError`` naming the first problem if ``obj`` is not a valid record dict.

    Checks everything the module docstring asks for, text and numbers included.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"record must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ValueError(f"missing required field(s) {missing}")
    unknown = _unknown_keys(obj, REQUIRED_KEYS + OPTIONAL_KEYS)
    if unknown:
        allowed = list(REQUIRED_KEYS + OPTIONAL_KEYS)
        raise ValueError(f"unknown field(s) {_brief(unknown)} (allowed: {allowed})")
    if not isinstance(obj["prompt"], str):
        raise ValueError(f"prompt must be a string, got {type(obj['prompt']).__name__}")
    check_text(obj["prompt"], "prompt")
    completions = obj["completions"]
    if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
        raise ValueError(f"completions must be a list of strings, got {_brief(completions)}")
    if len(completions) < 2:
        raise ValueError(f"completions must hold at least 2 entries, got {len(completions)}")
    for i, completion in enumerate(completions):
        check_text(completion, f"completions[{i}]")
    if not isinstance(obj["criterion"], str) or not obj["criterion"]:
        raise ValueError(f"criterion must be a non-empty string, got {_brief(obj['criterion'])}")
    check_text(obj["criterion"], "criterion")
    labels = obj["labels"]
    if not isinstance(labels, list) or not labels:
        raise ValueError(f"labels must be a non-empty list, got {_brief(labels)}")
    for i, label in enumerate(labels):
        _validate_label(label, len(completions), f"labels[{i}]")
    names = [label["labeler"] for label in labels]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"labeler(s) {_brief(repeated)} appear more than once in labels")
    if "id" in obj:
        if not isinstance(obj["id"], str):
            raise ValueError(f"id must be a string, got {_brief(obj['id'])}")
        check_text(obj["id"], "id")
    if "meta" in obj:
        if not isinstance(obj["meta"], Mapping):
            raise ValueError(f"meta must be an object, got {type(obj['meta']).__name__}")
        check_json_value(obj["meta"], "meta", 2)


def record_from_dict(obj: Any) -> RankingRecord:
    """Validate a parsed JSON object and build a :class:`RankingRecord`."""
    validate_record(obj)
    labels = tuple(
        Label(lab["labeler"], tuple(lab["ranks"]), tuple(lab.get("flagged", []))) for lab in obj["labels"]
    )
    return RankingRecord(
        prompt=obj["prompt"],
        completions=tuple(obj["completions"]),
        criterion=obj["criterion"],
        labels=labels,
        id=obj.get("id"),
        meta=dict(obj.get("meta", {})),
    )


def record_to_dict(record: RankingRecord) -> dict[str, Any]:
    """The JSON object of one record (optional keys only when set)."""
    labels = []
    for label in record.labels:
        entry: dict[str, Any] = {"labeler": label.labeler, "ranks": list(label.ranks)}
        if label.flagged:
            entry["flagged"] = list(label.flagged)
        labels.append(entry)
    obj: dict[str, Any] = {
        "prompt": record.prompt,
        "completions": list(record.completions),
        "criterion": record.criterion,
        "labels": labels,
    }
    if record.id is not None:
        obj["id"] = record.id
    if record.meta:
        obj["meta"] = dict(record.meta)
    return obj


def _plain_mapping(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON")  # unreachable after validate_record


def _encode_line(record: RankingRecord | Mapping[str, Any]) -> bytes:
    obj = record_to_dict(record) if isinstance(record, RankingRecord) else record
    validate_record(obj)
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, default=_plain_mapping)
    return (text + "\n").encode("utf-8")


def read_rankings(path: str | os.PathLike[str]) -> tuple[list[RankingRecord], list[SkippedLine]]:
    """Parse every line; return the valid records and the invalid lines with their problem."""
    records: list[RankingRecord] = []
    skipped: list[SkippedLine] = []
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        truncated = number == len(lines) and not data.endswith(b"\n")
        try:
            obj = loads_line(raw.decode("utf-8"))
            records.append(record_from_dict(obj))
        except UnicodeDecodeError as err:
            where = f"{err.reason} at byte {err.start}: {raw[err.start : err.end]!r}"
            skipped.append(SkippedLine(number, f"not valid UTF-8 ({where})"))
        except json.JSONDecodeError as err:
            hint = " (last line has no newline: probably an interrupted write)" if truncated else ""
            skipped.append(SkippedLine(number, f"invalid JSON: {err.msg} at column {err.colno}{hint}"))
        except ValueError as err:
            skipped.append(SkippedLine(number, str(err)))
    return records, skipped


def format_skipped(path: str | os.PathLike[str], skipped: Sequence[SkippedLine]) -> str:
    """A readable summary of skipped lines, one per line."""
    head = f"{path}: skipped {len(skipped)} invalid line(s):"
    return "\n".join([head] + [f"  line {s.line}: {s.problem}" for s in skipped])


def load_rankings(
    path: str | os.PathLike[str], skip_invalid: bool = False, report: TextIO | None = None
) -> list[RankingRecord]:
    """Load and validate a rankings file.

    Args:
        path: the JSONL file (format in this module's docstring).
        skip_invalid: if False, the first invalid line raises
            :class:`RankingFormatError` naming the file, the line and the problem.
            If True, invalid lines are skipped and a summary of every skipped line
            and its problem is written to ``report`` (stderr by default).
        report: where the skip summary goes.
    """
    records, skipped = read_rankings(path)
    if skipped and not skip_invalid:
        first = skipped[0]
        more = len(skipped) - 1
        suffix = f" (and {more} more invalid line(s); skip_invalid=True skips them)" if more else ""
        raise RankingFormatError(path, first.line, first.problem + suffix)
    if skipped:
        print(format_skipped(path, skipped), file=report or sys.stderr)
    return records


def _lock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)


def _repair_tail(fd: int, path: Path) -> None:
    """If the file does not end with a newline, finish or cut off its last line."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = size
    while start > 0:
        chunk_start = max(0, start - 65536)
        chunk = os.pread(fd, start - chunk_start, chunk_start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            start = chunk_start + cut + 1
            break
        start = chunk_start
    fragment = os.pread(fd, size - start, start)
    try:
        validate_record(loads_line(fragment.decode("utf-8")))
    except ValueError:
        partial = path.with_name(path.name + ".partial")
        with open(partial, "ab") as sidecar:
            sidecar.write(fragment + b"\n")
        os.ftruncate(fd, start)
        os.fsync(fd)
        warnings.warn(
            f"{path}: removed an incomplete last line ({len(fragment)} bytes, probably an interrupted "
            f"write); it was saved to {partial}",
            stacklevel=3,
        )
        return
    os.write(fd, b"\n")


def append_ranking(path: str | os.PathLike[str], record: RankingRecord | Mapping[str, Any]) -> None:
    """Append one record as a full line, flushed and fsynced before returning.

    A partial last line left by an earlier crash is repaired first (see the module
    docstring). Appends from several processes are serialised by a file lock.
    """
    append_line(path, _encode_line(record))


def append_line(path: str | os.PathLike[str], line: bytes) -> None:
    """Append one complete JSON line (ending in a newline) the way :func:`append_ranking` does."""
    if not line.endswith(b"\n"):
        raise ValueError(f"a line to append must end with a newline, got {line[-20:]!r}")
    target = Path(path)
    created = not target.exists()
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        _lock(fd)
        _repair_tail(fd, target)
        written = os.write(fd, line)
        while written < len(line):
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - directories cannot be opened on some systems
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_rankings(path: str | os.PathLike[str], records: Iterable[RankingRecord]) -> None:
    """Write a whole rankings file atomically (temporary file, then ``os.replace``)."""
    target = Path(path)
    payload = b"".join(_encode_line(r) for r in records)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def merge_labels(records: Iterable[RankingRecord]) -> list[RankingRecord]:
    """Join records that share prompt, completions and criterion into one record.

    Labels are concatenated in file order; a labeler who appears twice for the same
    item raises ``ValueError``. The first record's ``id`` and ``meta`` are kept.
    """
    merged: dict[tuple[str, tuple[str, ...], str], RankingRecord] = {}
    for record in records:
        key = (record.prompt, record.completions, record.criterion)
        if key not in merged:
            merged[key] = record
            continue
        first = merged[key]
        merged[key] = RankingRecord(
            first.prompt,
            first.completions,
            first.criterion,
            first.labels + record.labels,
            first.id,
            first.meta,
        )
    return list(merged.values())
