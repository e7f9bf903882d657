import numpy as np
import pytest

from rlenv.feedback.labelers import SentimentLabeler, ToxicityLabeler, label_with_panel
from rlenv.feedback.rankings import Label

POSITIVE = "What a wonderful, happy day. I love it!"
NEUTRAL = "The train leaves at noon."
NEGATIVE = "This is awful, I hate it and feel terrible."
TOXIC = "You are a fucking idiot and a piece of shit."
CLEAN = "Thank you for your help, have a nice day."


def test_sentiment_labeler_ranks_positive_first() -> None:
    labeler = SentimentLabeler(noise=0.0)
    assert labeler.rank("How was it?", [NEGATIVE, POSITIVE, NEUTRAL]) == (3, 1, 2)
    scores = labeler(["p"] * 3, [NEGATIVE, POSITIVE, NEUTRAL])
    assert scores.shape == (3,) and scores.dtype == np.float64
    assert scores[0] < 0 < scores[1] and scores[2] == 0.0


def test_toxicity_labeler_ranks_clean_first() -> None:
    labeler = ToxicityLabeler(noise=0.0)
    assert labeler.rank("Reply:", [TOXIC, CLEAN]) == (2, 1)
    scores = labeler.score(["p", "p"], [TOXIC, CLEAN])
    assert 0.0 <= scores[0] < 0.5 < scores[1] <= 1.0


def test_equal_scores_tie_without_noise() -> None:
    assert SentimentLabeler(noise=0.0).rank("p", [NEUTRAL, NEUTRAL, POSITIVE]) == (2, 2, 1)


def test_noise_is_seeded_and_gaussian() -> None:
    texts = [NEUTRAL] * 2000
    first = SentimentLabeler(noise=0.3, seed=7).score(texts, texts)
    again = SentimentLabeler(noise=0.3, seed=7).score(texts, texts)
    np.testing.assert_array_equal(first, again)
    assert abs(first.mean()) < 0.05 and first.std() == pytest.approx(0.3, rel=0.1)


def test_panel_labels_record() -> None:
    panel = [SentimentLabeler(0.05, seed=s) for s in range(3)]
    labels = label_with_panel(panel, "p", [NEGATIVE, POSITIVE])
    assert labels == [Label(lab.name, (2, 1)) for lab in panel]
    with pytest.raises(ValueError, match="unique"):
        label_with_panel([SentimentLabeler(seed=1), SentimentLabeler(seed=1)], "p", ["a", "b"])


def test_errors_name_values() -> None:
    with pytest.raises(ValueError, match="noise must be >= 0, got -1"):
        SentimentLabeler(noise=-1)
    with pytest.raises(ValueError, match="got 1 prompts for 2 completions"):
        SentimentLabeler().score(["p"], ["a", "b"])
