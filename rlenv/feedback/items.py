"""Items waiting to be labeled, and what a labeling session reports.

An items file is JSON Lines, one object per prompt: ``{"prompt": str,
"completions": [str, ...] (at least 2), "id": str (optional), "meta": {...}
(optional)}`` — a rankings record without criterion and labels, under the same rules for
text and numbers (see :mod:`rlenv.feedback.rankings`), so that every item can be saved
once it is ranked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlenv.feedback.rankings import (
    RankingRecord,
    append_line,
    check_json_value,
    check_text,
    load_rankings,
    loads_line,
)


@dataclass(frozen=True)
class Item:
    """A prompt and the completions to rank for it."""

    prompt: str
    completions: tuple[str, ...]
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.completions, (tuple, list)) or not all(
            isinstance(c, str) for c in self.completions
        ):
            raise ValueError(f"completions must be a tuple of strings, got {self.completions!r:.80}")
        if len(self.completions) < 2:
            raise ValueError(f"an item needs at least 2 completions to rank, got {len(self.completions)}")


def check_storable(item: Item) -> None:
    """``ValueError`` naming the field if a ranking of ``item`` could not be saved.

    Text with control characters or lone surrogates, or ``meta`` that is not plain JSON,
    is refused by :mod:`rlenv.feedback.rankings`; checking before labeling means nobody
    ranks an item whose answer would then be lost.
    """
    if not isinstance(item.prompt, str):
        raise ValueError(f"prompt must be a string, got {type(item.prompt).__name__}")
    check_text(item.prompt, "prompt")
    for i, completion in enumerate(item.completions):
        check_text(completion, f"completions[{i}]")
    if item.id is not None:
        if not isinstance(item.id, str):
            raise ValueError(f"id must be a string, got {item.id!r:.80}")
        check_text(item.id, "id")
    if not isinstance(item.meta, Mapping):
        raise ValueError(f"meta must be a mapping, got {type(item.meta).__name__}")
    check_json_value(item.meta, "meta", 2)


def check_all_storable(items: Iterable[Item]) -> None:
    """:func:`check_storable` on each item; the error names the item's position and id."""
    for position, item in enumerate(items):
        try:
            check_storable(item)
        except ValueError as err:
            name = f"item {position}" + (f" (id {item.id!r:.40})" if item.id is not None else "")
            raise ValueError(f"{name} cannot be labeled, its ranking could not be saved: {err}") from err


@dataclass
class LabelingSummary:
    """Counts from one labeling session over a list of items."""

    labeled: int = 0
    skipped: int = 0
    already_done: int = 0
    remaining: int = 0
    interrupted: bool = False
    quit: bool = False


ItemKey = tuple[str, tuple[str, ...], str, str]


def item_key(prompt: str, completions: Iterable[str], criterion: str, labeler: str) -> ItemKey:
    """What identifies one labeler's work on one item under one criterion."""
    return (prompt, tuple(completions), criterion, labeler)


def labeled_keys(path: str | os.PathLike[str]) -> set[ItemKey]:
    """Keys of every (item, criterion, labeler) already present in a rankings file.

    A missing file has none; invalid lines are reported on stderr and ignored.
    """
    if not Path(path).exists():
        return set()
    records: list[RankingRecord] = load_rankings(path, skip_invalid=True)
    return {
        item_key(r.prompt, r.completions, r.criterion, label.labeler) for r in records for label in r.labels
    }


def item_to_dict(item: Item) -> dict[str, Any]:
    """The JSON object of one item (``id`` and ``meta`` only when set)."""
    obj: dict[str, Any] = {"prompt": item.prompt, "completions": list(item.completions)}
    if item.id is not None:
        obj["id"] = item.id
    if item.meta:
        obj["meta"] = dict(item.meta)
    return obj


def append_item(path: str | os.PathLike[str], item: Item) -> None:
    """Append one item as a full, fsynced line (crash-safe like rankings appends).

    An item whose ranking could not be saved (:func:`check_storable`) raises ``ValueError``
    and nothing is written.
    """
    check_storable(item)
    text = json.dumps(item_to_dict(item), ensure_ascii=False, allow_nan=False, default=dict)
    append_line(path, (text + "\n").encode("utf-8"))


def load_items(path: str | os.PathLike[str]) -> list[Item]:
    """Read an items file; a bad line raises ``ValueError`` naming the file and line."""
    items = []
    for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = loads_line(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError(f"item must be a JSON object, got {type(obj).__name__}")
            unknown = sorted(set(obj) - {"prompt", "completions", "id", "meta"})
            if unknown:
                raise ValueError(f"unknown field(s) {unknown} (allowed: prompt, completions, id, meta)")
            prompt, completions = obj.get("prompt"), obj.get("completions")
            if not isinstance(prompt, str):
                raise ValueError(f"prompt must be a string, got {prompt!r:.80}")
            if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
                raise ValueError(f"completions must be a list of strings, got {completions!r:.80}")
            if not isinstance(obj.get("id", ""), str):
                raise ValueError(f"id must be a string, got {obj['id']!r:.80}")
            meta = obj.get("meta") or {}
            if not isinstance(meta, dict):
                raise ValueError(f"meta must be an object, got {type(meta).__name__}")
            item = Item(prompt, tuple(completions), obj.get("id"), dict(meta))
            check_storable(item)
            items.append(item)
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}:{number}: not valid UTF-8 ({err.reason} at byte {err.start})") from err
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from err
    return items
