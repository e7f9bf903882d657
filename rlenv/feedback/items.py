"""Items waiting to be labeled, and what a labeling session reports.

An items file is JSON Lines, one object per prompt: ``{"prompt": str,
"completions": [str, ...] (at least 2), "id": str (optional), "meta": {...}
(optional)}`` — a rankings record without criterion and labels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlenv.feedback.rankings import RankingRecord, append_line, load_rankings


@dataclass(frozen=True)
class Item:
    """A prompt and the completions to rank for it."""

    prompt: str
    completions: tuple[str, ...]
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.completions) < 2:
            raise ValueError(f"an item needs at least 2 completions to rank, got {len(self.completions)}")


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
    """Append one item as a full, fsynced line (crash-safe like rankings appends)."""
    append_line(path, (json.dumps(item_to_dict(item), ensure_ascii=False) + "\n").encode("utf-8"))


def load_items(path: str | os.PathLike[str]) -> list[Item]:
    """Read an items file; a bad line raises ``ValueError`` naming the file and line."""
    items = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
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
                raise ValueError(f"id must be a string, got {obj['id']!r}")
            items.append(Item(prompt, tuple(completions), obj.get("id"), dict(obj.get("meta") or {})))
        except ValueError as err:
            raise ValueError(f"{path}:{number}: {err}") from err
    return items
