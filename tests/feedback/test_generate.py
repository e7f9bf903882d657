import pytest
import torch

from rlenv.feedback.generate import (
    generate_items,
    response_log_probs,
    response_mask_until_eos,
    sample_completions,
)
from rlenv.text.models import tiny_causal_lm
from rlenv.text.tokenizers import tiny_tokenizer

PROMPTS = ["the movie was good", "a film", "this story is not very fun but", "it"]


@pytest.fixture(scope="module")
def lm() -> tuple:
    torch.set_num_threads(1)
    return tiny_causal_lm(64), tiny_tokenizer(64)


def test_mask_keeps_tokens_up_to_first_eos() -> None:
    tokens = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8], [1, 3, 3, 3]])
    expected = [[True, True, False, False], [True] * 4, [True, False, False, False]]
    assert response_mask_until_eos(tokens, 1).tolist() == expected


def test_samples_are_seeded_batched_and_leave_global_rng(lm: tuple) -> None:
    model, tokenizer = lm
    state = torch.get_rng_state()
    first = sample_completions(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    again = sample_completions(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3, seed=7)
    assert [len(g.prompts) for g in first] == [3, 1]
    assert [g.completions for g in first] == [g.completions for g in again]
    for generation in first:
        lengths = generation.lengths
        assert ((lengths >= 1) & (lengths <= 6)).all()
        tokens = generation.input_ids[:, generation.response_start :]
        for row, n in zip(tokens, lengths.tolist(), strict=True):
            assert 1 not in row[: n - 1].tolist()
            assert n == 6 or row[n - 1] == 1
        decoded = [
            tokenizer.decode(r[:n].tolist(), skip_special_tokens=True)
            for r, n in zip(tokens, lengths, strict=True)
        ]
        assert decoded == generation.completions


def test_generate_items_gives_n_per_prompt(lm: tuple) -> None:
    model, tokenizer = lm
    items = generate_items(model, tokenizer, PROMPTS[:2], 3, max_new_tokens=4, batch_size=4, seed=0)
    assert [len(c) for c in items] == [3, 3]
    assert all(isinstance(c, str) for cs in items for c in cs)


def test_log_probs_do_not_depend_on_left_padding(lm: tuple) -> None:
    model, tokenizer = lm
    (batch,) = sample_completions(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=4, seed=1)
    together = response_log_probs(model, batch)
    assert (together <= 0).all() and (together[~batch.response_mask] == 0).all()
    for row, prompt in enumerate(PROMPTS):
        width = int(batch.attention_mask[row].sum()) - int(batch.lengths[row])
        start = batch.response_start
        alone_ids = batch.input_ids[row : row + 1, start - width :]
        alone_mask = batch.attention_mask[row : row + 1, start - width :]
        single = type(batch)([prompt], [""], alone_ids, alone_mask, width, batch.response_mask[row : row + 1])
        torch.testing.assert_close(response_log_probs(model, single)[0], together[row], atol=1e-5, rtol=1e-4)
