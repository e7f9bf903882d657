"""Question answering with retrieval over the Rotten Tomatoes snippets (``rlenv/ReviewQA-v0``).

Each episode quotes a few consecutive words of one review of a corpus (the first
``corpus_size`` shipped snippets, :func:`rlenv.text.prompts.review_rows`) and asks whether that
review is ``fresh`` or ``rotten``. The only tool is ``search[query]``: the reviews most similar to
the query (MiniLM sentence embeddings, exact cosine search; :class:`rlenv.tools.retrieval.VectorStore`),
each cited by its id (``rt-<n>``). The episode ends with ``finish[<label>, <id>]``: half the score
for the right label, half for citing the right review; success is both.

The held-out split quotes a disjoint tenth of the corpus's reviews (chosen with ``seed``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlenv.tools.react import Outcome, make_tool_env, make_tool_vector_env

LABELS = ("fresh", "rotten")
DEFAULT_PREFIX = (
    "Answer questions about film reviews. Each turn: one line `Thought: ...` then one line "
    "`Action: name[argument]`, with name one of search[words to look for] and "
    "finish[fresh or rotten, review id].\n\n"
)


@dataclass
class ReviewEpisode:
    """One question: the quoted review's id and label."""

    prompt: str
    review_id: str
    label: str
    search: Any

    def call(self, action: str, argument: str) -> str:
        return self.search(argument)

    def outcome(self, answer: str | None) -> Outcome:
        if answer is None:
            return Outcome(0.0, False, f"no finish[...] answer (expected {self.label}, {self.review_id})")
        text = answer.lower()
        labels = {label for label in LABELS if re.search(rf"\b{label}\b", text)}
        right_label = labels == {self.label}
        cited = set(re.findall(r"rt-\d+", text))
        right_id = cited == {self.review_id}
        score = 0.5 * right_label + 0.5 * right_id
        detail = (
            f"label {'right' if right_label else 'wrong'}, citation {'right' if right_id else 'wrong'} "
            f"(expected {self.label}, {self.review_id})"
        )
        return Outcome(score, right_label and right_id, detail)


class ReviewQATask:
    """The review QA task (see the module docstring), a :class:`rlenv.tools.react.ToolTask`.

    Args:
        corpus_size: reviews in the searchable corpus (the first shipped snippets).
        quote_words: consecutive words quoted in a question.
        prefix: text before the question (instructions, few-shot examples).
        seed: picks the held-out reviews.
        heldout_fraction: share of the quotable reviews kept for the held-out split.
        encoder: the sentence encoder (default MiniLM).
        search_k: reviews a search returns.
        rows: the (text, label) reviews to use instead of the shipped snippets.
    """

    actions = ("search",)

    def __init__(
        self,
        corpus_size: int = 1000,
        quote_words: int = 5,
        prefix: str = DEFAULT_PREFIX,
        seed: int = 0,
        heldout_fraction: float = 0.1,
        encoder: Any = None,
        search_k: int = 3,
        rows: Any = None,
    ) -> None:
        if rows is None:
            from rlenv.text.prompts import review_rows

            rows = review_rows()
        if corpus_size < 2 or quote_words < 1 or search_k < 1:
            raise ValueError(
                f"corpus_size >= 2, quote_words >= 1 and search_k >= 1 are needed; got {corpus_size}, "
                f"{quote_words}, {search_k}"
            )
        if not 0 < heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction!r}")
        self.reviews = {f"rt-{k}": (text, label) for k, (text, label) in enumerate(list(rows)[:corpus_size])}
        self.quote_words, self.prefix, self.search_k = int(quote_words), str(prefix), int(search_k)
        quotable = [key for key, (text, _) in self.reviews.items() if len(text.split()) >= quote_words + 2]
        if len(quotable) < 2:
            raise ValueError(f"the corpus has {len(quotable)} reviews longer than {quote_words + 2} words")
        order = np.random.default_rng(seed).permutation(len(quotable))
        held = max(1, int(round(heldout_fraction * len(quotable))))
        self.splits = {
            "heldout": [quotable[i] for i in order[:held]],
            "train": [quotable[i] for i in order[held:]],
        }
        self.encoder = encoder
        self._store: Any = None

    def search(self, query: str) -> str:
        if self._store is None:
            from rlenv.tools.retrieval import VectorStore

            passages = {key: text for key, (text, _) in self.reviews.items()}
            self._store = VectorStore(passages, encoder=self.encoder)
        return self._store.observation(query, k=self.search_k, max_chars=160)

    def episode(self, rng: np.random.Generator, split: str) -> ReviewEpisode:
        keys = self.splits[split]
        key = keys[int(rng.integers(len(keys)))]
        text, label = self.reviews[key]
        words = text.split()
        start = int(rng.integers(0, len(words) - self.quote_words + 1))
        quote = " ".join(words[start : start + self.quote_words])
        question = f'Question: one review contains the words "{quote}". Is that review fresh or rotten?'
        return ReviewEpisode(f"{self.prefix}{question}\nThought:", key, label, self.search)


# ``rlenv/ReviewQA-v0`` (``task=``: the ReviewQATask arguments)
make_review_qa_env = functools.partial(make_tool_env, ReviewQATask)
make_review_qa_vector_env = functools.partial(make_tool_vector_env, ReviewQATask)
