"""An AI labeler (RLAIF): a language model ranks completions against a constitution.

The labeler asks the model the constitution's ``comparison`` question as a multiple-choice
question: the prompt, then the N completions as options ``(A)``, ``(B)``, ...; the answer
starts ``The best option is (`` and the model's next-token log-probabilities of the option
letters, normalised over the letters, give each option's probability. Nothing is parsed from
free text. To cancel the model's preference for a position, the question is asked N times
with the options rotated (each completion appears once under each letter) and a completion's
score is its mean log-probability over the rotations; equal scores tie. The ranks (1 = best)
go into the same rankings records as human and simulated labelers' (``labeler=ai`` in
:mod:`rlenv.feedback.collect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlenv.feedback.consensus import dense_ranks
from rlenv.feedback.constitution import Constitution, dialogue

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ANSWER_PREFIX = "The best option is ("


class AILabeler:
    """Ranks completions by a causal LM's multiple-choice answer (see the module docstring).

    Args:
        model: a causal LM (``transformers`` interface: ``model(input_ids, attention_mask).logits``).
        tokenizer: its tokenizer; each option letter must encode to a single token.
        constitution: supplies the question (``comparison``) and the criterion.
        name: the labeler's name in the records (default ``ai(<constitution>)``).
        max_chars: longest prompt or completion text shown in the question (longer is cut).
        batch_size: questions per forward pass.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        constitution: Constitution,
        *,
        name: str | None = None,
        max_chars: int = 400,
        batch_size: int = 8,
    ) -> None:
        if max_chars < 1 or batch_size < 1:
            raise ValueError(f"max_chars and batch_size must be >= 1, got {max_chars}, {batch_size}")
        self.model, self.tokenizer, self.constitution = model, tokenizer, constitution
        self.criterion = constitution.criterion
        self.name = name or f"ai({constitution.name})"
        self.max_chars, self.batch_size = max_chars, batch_size
        self._letter_ids: list[int] = []

    def letter_ids(self, count: int) -> list[int]:
        """Token ids of the first ``count`` option letters."""
        if not 2 <= count <= len(LETTERS):
            raise ValueError(f"the AI labeler ranks 2 to {len(LETTERS)} completions at once, got {count}")
        while len(self._letter_ids) < count:
            letter = LETTERS[len(self._letter_ids)]
            ids = self.tokenizer(letter, add_special_tokens=False)["input_ids"]
            if len(ids) != 1 or int(ids[0]) in self._letter_ids:
                raise ValueError(
                    f"option letter {letter!r} encodes to {ids} with this tokenizer; the AI labeler needs "
                    "one distinct token per letter"
                )
            self._letter_ids.append(int(ids[0]))
        return self._letter_ids[:count]

    def question(self, prompt: str, options: Sequence[str]) -> str:
        """The multiple-choice question about ``options`` (in this order), ending where the letter goes."""
        cut = self.max_chars
        lines = [self.constitution.comparison, "", f"Text: {prompt[:cut]}", ""]
        lines += [f"({LETTERS[k]}) {option[:cut].strip() or '(empty)'}" for k, option in enumerate(options)]
        lines += ["", "Answer with the letter of the best option."]
        return dialogue(self.tokenizer, [("user", "\n".join(lines))]) + ANSWER_PREFIX

    @torch.no_grad()
    def scores(self, prompt: str, completions: Sequence[str]) -> np.ndarray:
        """Each completion's mean log-probability of being chosen over the N rotations. Shape (N,)."""
        from rlenv.feedback.generate import left_pad_prompts, special_ids
        from rlenv.text.tokens import position_ids

        count = len(completions)
        letters = torch.tensor(self.letter_ids(count))
        # rotation r shows completion (k + r) % N under letter k
        orders = [[(k + r) % count for k in range(count)] for r in range(count)]
        texts = [self.question(prompt, [completions[i] for i in order]) for order in orders]
        pad = special_ids(self.tokenizer, self.model)[1]
        device = next(self.model.parameters()).device
        totals = np.zeros(count)
        for start in range(0, count, self.batch_size):
            ids, mask = left_pad_prompts(self.tokenizer, texts[start : start + self.batch_size], pad)
            ids, mask = ids.to(device), mask.to(device)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask)).logits
            chosen = torch.log_softmax(logits[:, -1, letters.to(device)].float(), dim=-1).cpu()
            for row, order in zip(chosen, orders[start : start + self.batch_size], strict=True):
                for k, index in enumerate(order):
                    totals[index] += float(row[k])
        return totals / count

    def rank(self, prompt: str, completions: Sequence[str]) -> tuple[int, ...]:
        """Dense ranks (1 = best, equal scores tie) of ``completions`` for ``prompt``."""
        if len(completions) == 1:
            return (1,)
        return dense_ranks([round(float(s), 6) for s in self.scores(prompt, completions)])


def make_ai_labeler(settings: Any, model_name: str, task: str | None, device: str = "cpu") -> AILabeler:
    """The AI labeler a config describes: ``settings.model`` (``None``: ``model_name``, the
    policy's base), ``settings.constitution`` (``None``: the task's, see
    :data:`rlenv.feedback.constitution.TASK_CONSTITUTIONS`), ``max_chars``, ``batch_size``."""
    from rlenv.feedback.constitution import DEFAULT, TASK_CONSTITUTIONS, load_constitution
    from rlenv.text.models import load_causal_lm
    from rlenv.text.tokenizers import load_tokenizer

    name = settings.get("model") or model_name
    constitution = load_constitution(
        settings.get("constitution") or TASK_CONSTITUTIONS.get(str(task), DEFAULT)
    )
    return AILabeler(
        load_causal_lm(str(name), device=device),
        load_tokenizer(str(name)),
        constitution,
        max_chars=int(settings.get("max_chars", 400)),
        batch_size=int(settings.get("batch_size", 8)),
    )
