"""Human feedback: rankings files, labelers (terminal and simulated), consensus, pairs."""

from typing import Any

from rlenv.feedback.consensus import Consensus, consensus, pair_agreement
from rlenv.feedback.human import TerminalLabeler
from rlenv.feedback.items import Item, LabelingSummary, load_items
from rlenv.feedback.labelers import (
    SentimentLabeler,
    ToxicityLabeler,
    label_with_panel,
    sentiment,
    toxicity,
)
from rlenv.feedback.pairs import Pair, ranking_to_pairs, records_to_pairs, split_by_prompt
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


def __getattr__(name: str) -> Any:
    # collect.py is also run as ``python -m rlenv.feedback.collect``: import it only on use.
    if name == "collect":
        from rlenv.feedback.collect import collect

        return collect
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
    "consensus",
    "label_with_panel",
    "load_items",
    "load_rankings",
    "merge_labels",
    "pair_agreement",
    "ranking_to_pairs",
    "read_rankings",
    "records_to_pairs",
    "sentiment",
    "split_by_prompt",
    "toxicity",
    "write_rankings",
]
