"""Collect rankings from a person at a terminal or from a panel of simulated labelers.

Command line (person)::

    python -m rlenv.feedback.collect items.jsonl rankings.jsonl --labeler ana --criterion positivity

Command line (simulated panel of three noisy sentiment labelers)::

    python -m rlenv.feedback.collect items.jsonl rankings.jsonl --simulated sentiment --panel 3 --noise 0.2

``items.jsonl`` is described in :mod:`rlenv.feedback.items`; the output is a
rankings file (:mod:`rlenv.feedback.rankings`). Rerunning resumes: items
already ranked by the same labeler(s) under the same criterion are skipped.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from rlenv.feedback.human import TerminalLabeler
from rlenv.feedback.items import Item, LabelingSummary, item_key, labeled_keys, load_items
from rlenv.feedback.labelers import Labeler, SentimentLabeler, ToxicityLabeler, label_with_panel
from rlenv.feedback.rankings import RankingRecord, append_ranking

SIMULATED = {"sentiment": SentimentLabeler, "toxicity": ToxicityLabeler}


def as_items(entries: Sequence[Item | tuple[str, Sequence[str]]]) -> list[Item]:
    """Accept :class:`Item` objects or ``(prompt, completions)`` tuples."""
    return [e if isinstance(e, Item) else Item(e[0], tuple(e[1])) for e in entries]


def _panel_criterion(labelers: Sequence[Labeler], criterion: str | None) -> str:
    criteria = sorted({lab.criterion for lab in labelers})
    if criterion is None:
        if len(criteria) != 1:
            raise ValueError(f"panel labelers rank by different criteria {criteria}: pass criterion=")
        return criteria[0]
    return criterion


def label_panel(
    items: Sequence[Item], labelers: Sequence[Labeler], out_path: str | os.PathLike[str], criterion: str
) -> LabelingSummary:
    """Rank each item with every labeler of the panel and append one record per item."""
    if not labelers:
        raise ValueError("the panel needs at least one labeler, got none")
    done = labeled_keys(out_path)
    names = [lab.name for lab in labelers]
    todo = [
        i for i in items if not all(item_key(i.prompt, i.completions, criterion, n) in done for n in names)
    ]
    summary = LabelingSummary(already_done=len(items) - len(todo), remaining=len(todo))
    for item in todo:
        labels = tuple(label_with_panel(labelers, item.prompt, item.completions))
        append_ranking(
            out_path, RankingRecord(item.prompt, item.completions, criterion, labels, item.id, item.meta)
        )
        summary.labeled += 1
        summary.remaining -= 1
    return summary


def collect(
    items: Sequence[Item | tuple[str, Sequence[str]]],
    labelers: TerminalLabeler | Sequence[Labeler],
    out_path: str | os.PathLike[str],
    *,
    criterion: str | None = None,
) -> LabelingSummary:
    """Rank ``items`` with a person (:class:`TerminalLabeler`) or a simulated panel.

    Args:
        items: prompts with their completions (generated elsewhere by the policy).
        labelers: a :class:`TerminalLabeler`, or simulated labelers
            (:mod:`rlenv.feedback.labelers`) that all rank every item.
        out_path: rankings file, appended to one record at a time.
        criterion: recorded in each record; defaults to the labelers' criterion.
    """
    entries = as_items(items)
    if isinstance(labelers, TerminalLabeler):
        if criterion is not None and criterion != labelers.criterion:
            raise ValueError(f"criterion {criterion!r} differs from the labeler's {labelers.criterion!r}")
        return labelers.run(entries, out_path)
    return label_panel(entries, list(labelers), out_path, _panel_criterion(labelers, criterion))


def main(argv: Sequence[str] | None = None) -> LabelingSummary:
    parser = argparse.ArgumentParser(description="Rank completions into a rankings JSONL file.")
    parser.add_argument("items", help="items JSONL: prompt, completions, optional id and meta")
    parser.add_argument("out", help="rankings JSONL to append to")
    parser.add_argument("--labeler", help="your name, for ranking by hand")
    parser.add_argument("--criterion", help="what to rank by (required by hand; simulated default: own)")
    parser.add_argument("--task", default="rank the completions of each prompt from best to worst")
    parser.add_argument("--simulated", choices=sorted(SIMULATED), help="use simulated labelers instead")
    parser.add_argument("--panel", type=int, default=1, help="number of simulated labelers")
    parser.add_argument("--noise", type=float, default=0.1, help="score noise of simulated labelers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    items = load_items(args.items)
    if args.simulated:
        kind = SIMULATED[args.simulated]
        panel = [kind(noise=args.noise, seed=args.seed + k) for k in range(args.panel)]
        summary = collect(items, panel, args.out, criterion=args.criterion)
        print(f"labeled {summary.labeled} item(s), {summary.already_done} already done -> {args.out}")
        return summary
    if not args.labeler or not args.criterion:
        parser.error("ranking by hand needs --labeler and --criterion (or use --simulated)")
    return collect(items, TerminalLabeler(args.labeler, args.criterion, task=args.task), args.out)


if __name__ == "__main__":
    main()
