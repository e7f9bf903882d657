"""Property-based tests of rankings files and pair expansion (hypothesis).

Examples per run: 2,100 in all (bytes 300, text lines 300, JSON values 300, damaged records 300,
round trip 200, writer vs reader 200, index pairs 300, record pairs 200).

- Whatever a rankings file holds (any bytes, any text, any JSON, a valid record with one
  part replaced by anything), reading it gives records and skipped lines, and loading it
  gives records or a :class:`RankingFormatError` naming the file and line: no other exception.
- Valid records written and read back are equal, whether written whole or appended.
- A record the writer accepts reads back equal; one it refuses raises ``ValueError`` and writes nothing.
- Pairs put the better-ranked completion first, per the contract of :mod:`rlenv.feedback.pairs`.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlenv.feedback.consensus import consensus, effective_ranks
from rlenv.feedback.pairs import pair_support, ranked_index_pairs, records_to_pairs
from rlenv.feedback.rankings import (
    INT_MAX,
    INT_MIN,
    MAX_RANK,
    Label,
    RankingFormatError,
    RankingRecord,
    append_ranking,
    load_rankings,
    read_rankings,
    record_to_dict,
    write_rankings,
)


def fast(max_examples: int) -> Any:
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as name:
        yield Path(name)


# --- strategies -------------------------------------------------------------------------

# Text the format accepts: no surrogates, no control characters but \n, \t and \r.
GOOD_CHARS = st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n\t\r")
good_text = st.text(GOOD_CHARS, max_size=12)
# Any text at all, bad characters included (and more likely than by chance).
any_char = st.one_of(
    st.characters(),
    st.sampled_from(["\x00", "\x1b", "\x07", "\x7f", "\x85", "\x9b", "\ud800", "\udfff", "\u202e", "\n"]),
)
any_text = st.text(any_char, max_size=12)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN / Infinity
    any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=12,
)
good_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.floats(allow_nan=False, allow_infinity=False)
    | good_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(good_text, children, max_size=3),
    max_leaves=6,
)


@st.composite
def labels_for(draw: st.DrawFn, n: int) -> tuple[Label, ...]:
    names = draw(st.lists(good_text.filter(bool), min_size=1, max_size=3, unique=True))
    rank = st.one_of(st.integers(1, n + 1), st.integers(1, MAX_RANK))
    return tuple(
        Label(
            name,
            tuple(draw(st.lists(rank, min_size=n, max_size=n))),
            tuple(draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True))),
        )
        for name in names
    )


@st.composite
def records(draw: st.DrawFn) -> RankingRecord:
    completions = tuple(draw(st.lists(good_text, min_size=2, max_size=5)))
    return RankingRecord(
        prompt=draw(good_text),
        completions=completions,
        criterion=draw(good_text.filter(bool)),
        labels=draw(labels_for(len(completions))),
        id=draw(st.none() | good_text),
        meta=draw(st.dictionaries(good_text, good_json, max_size=2)),
    )


def nested(depth: int, inner: str = "1") -> str:
    return "[" * depth + inner + "]" * depth


@st.composite
def damaged_records(draw: st.DrawFn) -> str:
    """A valid record's JSON with one part (a field, a label entry, a rank...) replaced."""
    obj = record_to_dict(draw(records()))
    replacement = draw(
        st.one_of(
            json_values.map(lambda v: json.dumps(v)),
            st.integers(0, 3000).map(nested),
            st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "9" * 5000, "-" + "9" * 30, "1.5"]),
        )
    )
    paths: list[list[Any]] = [[key] for key in obj] + [["labels", 0], ["labels", 0, "ranks"]]
    paths += [["labels", 0, "ranks", 0], ["labels", 0, "flagged"], ["completions", 1], ["meta"]]
    path = draw(st.sampled_from(paths))
    target = obj
    for key in path[:-1]:
        target = target[key]
    marker = "\x00MARKER\x00"
    if draw(st.booleans()) and isinstance(target, dict):
        target[draw(any_text)] = marker  # an extra (unknown) key
    else:
        target[path[-1]] = marker
    return json.dumps(obj).replace(json.dumps(marker), replacement)


# --- (a) nothing but RankingFormatError -----------------------------------------------------


def check_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    kept, skipped = read_rankings(path)
    lines = data.split(b"\n")
    assert all(1 <= s.line <= len(lines) and s.problem for s in skipped)
    assert len(kept) + len(skipped) == sum(1 for line in lines if line.strip())
    try:
        assert load_rankings(path) == kept and not skipped
    except RankingFormatError as err:
        assert skipped and err.line == skipped[0].line and str(err).startswith(f"{path}:{err.line}: ")
    assert load_rankings(path, skip_invalid=True, report=io.StringIO()) == kept


@fast(300)
@given(st.lists(st.binary(max_size=80), max_size=4))
def test_arbitrary_bytes_never_raise_anything_else(workdir: Path, lines: list[bytes]) -> None:
    check_file(workdir / "bytes.jsonl", b"\n".join(lines))


@fast(300)
@given(st.lists(any_text, max_size=4), st.sampled_from(["\n", "\r\n"]))
def test_arbitrary_text_lines_never_raise_anything_else(workdir: Path, lines: list[str], end: str) -> None:
    data = end.join(lines).encode("utf-8", errors="surrogatepass")  # lone surrogates: invalid UTF-8
    check_file(workdir / "text.jsonl", data)


@fast(300)
@given(st.lists(st.one_of(json_values.map(json.dumps), st.integers(0, 5000).map(nested)), max_size=4))
def test_arbitrary_json_values_never_raise_anything_else(workdir: Path, lines: list[str]) -> None:
    data = "\n".join(lines).encode("utf-8", errors="surrogatepass")
    check_file(workdir / "json.jsonl", data)


@fast(300)
@given(damaged_records())
def test_records_with_a_damaged_part_never_raise_anything_else(workdir: Path, line: str) -> None:
    check_file(workdir / "damaged.jsonl", line.encode("utf-8", errors="surrogatepass") + b"\n")


# --- (b) round trip -------------------------------------------------------------------------


@fast(200)
@given(st.lists(records(), min_size=1, max_size=3))
def test_valid_records_round_trip(workdir: Path, written: list[RankingRecord]) -> None:
    whole, appended = workdir / "whole.jsonl", workdir / "appended.jsonl"
    appended.unlink(missing_ok=True)
    with mock.patch.object(os, "fsync", lambda fd: None):  # durability is not under test here
        write_rankings(whole, written)
        for record in written:
            append_ranking(appended, record)
    assert load_rankings(whole) == written
    assert load_rankings(appended) == written
    assert whole.read_bytes() == appended.read_bytes()


@fast(200)
@given(
    prompt=any_text,
    completions=st.lists(any_text, min_size=2, max_size=3),
    meta=st.dictionaries(any_text, json_values, max_size=2),
)
def test_writer_accepts_only_what_reads_back_equal(
    workdir: Path, prompt: str, completions: list[str], meta: dict[str, Any]
) -> None:
    label = Label("ana", tuple(range(1, len(completions) + 1)))
    try:
        record = RankingRecord(prompt, tuple(completions), "c", (label,), None, meta)
    except ValueError:
        obj = {"prompt": prompt, "completions": completions, "criterion": "c", "labels": [{"labeler": "ana"}]}
        obj["labels"][0]["ranks"] = list(label.ranks)
        obj["meta"] = meta
        path = workdir / "refused.jsonl"
        path.unlink(missing_ok=True)
        with pytest.raises(ValueError):
            append_ranking(path, obj)
        assert not path.exists()
        return
    path = workdir / "accepted.jsonl"
    write_rankings(path, [record])
    assert load_rankings(path) == [record]


# --- (c) pairs ------------------------------------------------------------------------------


@fast(300)
@given(
    st.integers(2, 6).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(1, 4), min_size=n, max_size=n),
            st.lists(st.integers(0, n - 1), max_size=n, unique=True),
        )
    ),
    st.sampled_from(["last", "exclude"]),
)
def test_index_pairs_put_the_better_rank_first(case: tuple[list[int], list[int]], policy: str) -> None:
    ranks, flagged = case
    pairs = ranked_index_pairs(ranks, flagged, policy)  # type: ignore[arg-type]
    kept = [i for i in range(len(ranks)) if policy == "last" or i not in flagged]
    effective = effective_ranks(ranks, flagged) if policy == "last" else tuple(ranks)
    assert len(set(pairs)) == len(pairs)
    assert all(i in kept and j in kept and effective[i] < effective[j] for i, j in pairs)
    strict = {(i, j) for i, j in itertools.permutations(kept, 2) if effective[i] < effective[j]}
    assert set(pairs) == strict  # every strictly ordered pair, once; ties give none
    if policy == "last":
        unflagged = [i for i in range(len(ranks)) if i not in flagged]
        assert all((i, j) in strict for i in unflagged for j in flagged)


@fast(200)
@given(
    st.lists(records(), min_size=1, max_size=3),
    st.sampled_from(["last", "exclude"]),
    st.none() | st.floats(0, 1),
    st.none() | st.floats(0, 1),
)
def test_record_pairs_follow_the_consensus(
    rows: list[RankingRecord], policy: str, min_agreement: float | None, min_pair_agreement: float | None
) -> None:
    pairs = records_to_pairs(rows, policy, min_agreement, min_pair_agreement)  # type: ignore[arg-type]
    expected = []
    for record in rows:
        label, agreement = consensus(record.labels)
        assert len(label.ranks) == len(record.completions)
        assert math.isnan(agreement) if len(record.labels) == 1 else 0.0 <= agreement <= 1.0
        if min_agreement is not None and not math.isnan(agreement) and agreement < min_agreement:
            continue
        effective = effective_ranks(label.ranks, label.flagged)
        for i, j in ranked_index_pairs(label.ranks, label.flagged, policy):  # type: ignore[arg-type]
            assert effective[i] < effective[j]
            if policy == "exclude":
                assert i not in label.flagged and j not in label.flagged
            support = pair_support(record.labels, i, j)
            assert 0.0 <= support <= 1.0
            if min_pair_agreement is None or support >= min_pair_agreement:
                expected.append((record.completions[i], record.completions[j], record.prompt))
    assert [(p.chosen, p.rejected, p.prompt) for p in pairs] == expected
