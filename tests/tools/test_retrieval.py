"""Retrieval as a tool: exact cosine search over MiniLM embeddings, cited passages."""

from __future__ import annotations

import pytest
import torch

from rlenv.tools.retrieval import VectorStore, review_passages


class BagOfWords:
    """A toy encoder: unit-length word counts over a fixed vocabulary."""

    vocabulary = ["refund", "return", "shipping", "label", "days", "damaged", "email", "price"]

    def __call__(self, texts):
        rows = [[text.lower().count(word) for word in self.vocabulary] for text in texts]
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32) + 1e-6, dim=-1)


HANDBOOK = {
    "policy-1": "Items can be returned within 30 days for a refund.",
    "policy-2": "A return shipping label is sent by email.",
    "policy-3": "Damaged items are replaced at no price to the customer.",
}


def test_search_ranks_by_cosine_and_cites_ids():
    store = VectorStore(HANDBOOK, encoder=BagOfWords())
    hits = store.search("how do I get a shipping label", k=2)
    assert [hit.id for hit in hits][0] == "policy-2" and hits[0].score >= hits[1].score
    text = store.observation("refund within days", k=1)
    assert text.startswith("[policy-1] Items can be returned")
    assert store.observation("   ").startswith("error: query must be non-empty")
    with pytest.raises(ValueError, match="has no text"):
        VectorStore({"a": " "}, encoder=BagOfWords())


def test_minilm_finds_the_review_about_the_query():
    passages = review_passages(limit=50)
    store = VectorStore(passages)
    target = next(key for key, text in passages.items() if len(text.split()) > 12)
    hits = store.search(passages[target], k=3)
    assert hits[0].id == target and hits[0].score > 0.99
    assert store.embeddings.shape == (50, 384)
    assert torch.allclose(store.embeddings.norm(dim=1), torch.ones(50), atol=1e-4)
    meanings = VectorStore(
        {
            "acting": "The performances are superb and deeply moving.",
            "music": "The soundtrack is loud, shrill and grating.",
            "plot": "The story makes no sense and the twists are absurd.",
        }
    )
    assert meanings.search("the songs hurt my ears", k=1)[0].id == "music"
    assert meanings.search("a confusing, illogical storyline", k=1)[0].id == "plot"
