"""A tiny randomly initialised reward model built in-process (no files, no downloads).

For tests and smoke runs: a word-level tokenizer over a given vocabulary
(lower-cased, split on whitespace and punctuation, unknown words map to
``[UNK]``) and a BERT encoder of a few small layers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from rlenv.reward.model import RewardModel

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
DEFAULT_WORDS = (
    "a an the this that it is was be i you he she we they and or but not no very so too of to in on "
    "with for at by good great nice love happy fine bad awful hate sad terrible poor movie film day food "
    "story plot actor place time . , ! ?"
).split()


def tiny_tokenizer(words: Iterable[str] = DEFAULT_WORDS):  # noqa: ANN201 - transformers type
    """A word-level ``PreTrainedTokenizerFast`` with BERT-style pair encoding."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        vocab.setdefault(word.lower(), len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    cls_id, sep_id = vocab["[CLS]"], vocab["[SEP]"]
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def tiny_reward_model(
    words: Iterable[str] = DEFAULT_WORDS,
    *,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    max_length: int = 64,
    pooling: str = "mean",
    seed: int = 0,
) -> RewardModel:
    """A small random BERT reward model; ``seed`` fixes its initial weights."""
    from transformers import AutoModel, BertConfig

    tokenizer = tiny_tokenizer(words)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_length,
        type_vocab_size=2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = AutoModel.from_config(config, trust_remote_code=False)
        return RewardModel(encoder, tokenizer, max_length, pooling)
