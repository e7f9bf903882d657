"""Human feedback: rankings files, labelers (terminal and simulated), consensus, pairs."""

from typing import Any

from rlenv.feedback.consensus import Consensus, consensus, pair_agreement
from rlenv.feedback.human import TerminalLabeler
from rlenv.feedback.items import Item, LabelingSummary, load_items
from rlenv.feedback.labelers import SentimentLabeler, ToxicityLabeler, label_with_panel
from rlenv.feedback.pairs import Pair, pair_support, ranking_to_pairs, records_to_pairs, split_by_prompt
from rlenv.feedback.rankings import (
    Label,
    RankingFormatError,
    RankingRecord,
    append_ranking,
    load_rankings,
    merge_labels,
    read_rankings,
    write_rankings,
)

_LAZY = {
    "collect": "rlenv.feedback.collect",
    "collect_from_policy": "rlenv.feedback.collect",
    "generate_items": "rlenv.feedback.generate",
    "sample_completions": "rlenv.feedback.generate",
}


def __getattr__(name: str) -> Any:
    # collect.py is also run as ``python -m rlenv.feedback.collect``, and generate.py needs torch:
    # import them only on use.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Consensus",
    "Item",
    "Label",
    "LabelingSummary",
    "Pair",
    "RankingFormatError",
    "RankingRecord",
    "SentimentLabeler",
    "TerminalLabeler",
    "ToxicityLabeler",
    "append_ranking",
    "collect",
    "collect_from_policy",
    "consensus",
    "generate_items",
    "label_with_panel",
    "load_items",
    "load_rankings",
    "merge_labels",
    "pair_agreement",
    "pair_support",
    "ranking_to_pairs",
    "read_rankings",
    "records_to_pairs",
    "sample_completions",
    "split_by_prompt",
    "write_rankings",
]
