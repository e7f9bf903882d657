"""Program-aided math (PAL) and chain-of-thought math as text-env tasks.

The prompt is a few-shot prefix followed by a word problem (:mod:`rlenv.tools.problems`),
both laid out by the task config (``conf/task/pal.yaml``, ``conf/task/math_cot.yaml``: the
prefix and the question format are YAML, not code). The policy writes tokens as in any text
env; at the end of the completion (EOS or the token budget; the text is cut at the first stop
sequence, by default the start of a next ``Q:``) the reward is:

- ``mode: pal``: the completion is a Python program, run in the sandbox
  (:func:`rlenv.tools.sandbox.run_program`); its answer (``solution()``'s return value, else
  ``answer``, else the last printed line) equal to the truth scores 1, a program that ran but
  answered wrong ``partial_credit`` (default 0), anything else 0;
- ``mode: cot``: the number after the last ``The answer is`` (else the last number written)
  equal to the truth scores 1, else 0.

After each call :attr:`MathReward.last_details` says, per completion, what happened
(``correct``, ``wrong: 17 (expected 18)``, ``sandbox forbidden: import of 'os' is not
allowed``...). ``rlenv/PAL-v0`` and ``rlenv/MathCoT-v0`` are the text env with these tasks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rlenv.text.prompts import PromptSet
from rlenv.tools.problems import word_problems
from rlenv.tools.sandbox import run_program

MODES = ("pal", "cot")
PROBLEM_FIELDS = ("mode", "count", "seed", "heldout_fraction", "prefix", "question_format", "stop")
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
ANSWER_IS = re.compile(r"answer is\s*:?\s*\$?\s*(-?\d[\d,]*(?:\.\d+)?)", re.IGNORECASE)


def _settings(problems: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(problems) - set(PROBLEM_FIELDS))
    if unknown:
        raise ValueError(f"unknown math task field(s) {unknown}; valid: {list(PROBLEM_FIELDS)}")
    settings = {
        "mode": "pal",
        "count": 2000,
        "seed": 0,
        "heldout_fraction": 0.1,
        "prefix": "",
        "question_format": "Q: {question}\n\n",
        "stop": ["\nQ:"],
        **dict(problems),
    }
    if settings["mode"] not in MODES:
        raise ValueError(f"math task mode={settings['mode']!r} is not one of {list(MODES)}")
    if "{question}" not in settings["question_format"]:
        raise ValueError(f"question_format must contain '{{question}}', got {settings['question_format']!r}")
    if not 0 < float(settings["heldout_fraction"]) < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {settings['heldout_fraction']!r}")
    settings["stop"] = [str(s) for s in settings["stop"]]
    return settings


def _prompts_and_answers(settings: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    layout = str(settings["prefix"]) + str(settings["question_format"])
    problems = word_problems(int(settings["count"]), int(settings["seed"]))
    prompts = [layout.replace("{question}", p.question) for p in problems]
    return prompts, dict(zip(prompts, (p.answer for p in problems), strict=True))


def math_prompts(problems: Mapping[str, Any]) -> PromptSet:
    """The task's prompts, split into train and held-out (by ``seed``, ``heldout_fraction``)."""
    settings = _settings(problems)
    prompts, _ = _prompts_and_answers(settings)
    order = np.random.default_rng(int(settings["seed"]) + 1).permutation(len(prompts))
    held = max(1, math.ceil(float(settings["heldout_fraction"]) * len(prompts)))
    shuffled = [prompts[i] for i in order]
    return PromptSet(train=shuffled[held:], heldout=shuffled[:held])


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first of the stop sequences."""
    ends = [text.find(stop) for stop in stops if stop and stop in text]
    return text[: min(ends)] if ends else text


def parse_number(text: str | None) -> float | None:
    """The number ``text`` states (commas and a leading ``$`` allowed), else ``None``."""
    if text is None:
        return None
    cleaned = text.strip().lstrip("$").replace(",", "")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def cot_answer(text: str) -> float | None:
    """The number after the last ``The answer is``, else the last number in ``text``."""
    stated = ANSWER_IS.findall(text)
    numbers = stated or NUMBER.findall(text)
    return parse_number(numbers[-1]) if numbers else None


class MathReward:
    """The reward of the math tasks (see the module docstring); ``problems`` as in the task config.

    Args:
        problems: the task's ``problems`` block (mode, count, seed, prefix, question_format, stop...).
        partial_credit: score of a PAL program that ran but answered wrong.
        sandbox: keyword arguments of :func:`rlenv.tools.sandbox.run_program` (limits).
        workers: programs run at once (each in its own process).
    """

    def __init__(
        self,
        problems: Mapping[str, Any],
        partial_credit: float = 0.0,
        sandbox: Mapping[str, Any] | None = None,
        workers: int = 4,
    ) -> None:
        self.settings = _settings(problems)
        if not 0 <= partial_credit <= 1:
            raise ValueError(f"partial_credit must be in [0, 1], got {partial_credit!r}")
        self.partial_credit = float(partial_credit)
        self.sandbox = dict(sandbox or {})
        self.workers = max(1, int(workers))
        _, self.answers = _prompts_and_answers(self.settings)
        self.last_details: list[str] = []
        self.__name__ = f"math_{self.settings['mode']}"

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        missing = [p for p in prompts if p not in self.answers]
        if missing:
            raise ValueError(f"prompt {missing[0][-80:]!r} is not one of this math task's problems")
        texts = [cut_at_stop(text, self.settings["stop"]) for text in completions]
        truths = [self.answers[p] for p in prompts]
        if self.settings["mode"] == "cot":
            outcomes = [
                self._judge_number(cot_answer(t), truth, "no number")
                for t, truth in zip(texts, truths, strict=True)
            ]
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                results = list(pool.map(lambda program: run_program(program, **self.sandbox), texts))
            outcomes = [
                self._judge_program(result, truth) for result, truth in zip(results, truths, strict=True)
            ]
        self.last_details = [detail for _, detail in outcomes]
        return [score for score, _ in outcomes]

    def _judge_number(self, value: float | None, truth: int, missing: str) -> tuple[float, str]:
        if value is None:
            return 0.0, missing
        if abs(value - truth) < 1e-6:
            return 1.0, "correct"
        return 0.0, f"wrong: {value:g} (expected {truth})"

    def _judge_program(self, result: Any, truth: int) -> tuple[float, str]:
        if not result.ok:
            return 0.0, f"sandbox {result.reason}: {result.detail}"
        value = parse_number(result.answer)
        if value is None:
            return self.partial_credit, f"ran, but the answer {result.answer!r} is not a number"
        score, detail = self._judge_number(value, truth, "")
        return (score if score else self.partial_credit), detail


def task_problems(name: str) -> dict[str, Any]:
    """The ``problems`` block of the packaged task config ``conf/task/<name>.yaml``."""
    from importlib.resources import files

    from omegaconf import OmegaConf

    config = OmegaConf.load(str(files("conf") / "task" / f"{name}.yaml"))
    return dict(OmegaConf.to_container(config.problems, resolve=True))


def _env_kwargs(task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    problems = {**task_problems(task), **kwargs.pop("problems", {})}
    reward = MathReward(problems, **kwargs.pop("reward", {}))
    defaults = {"window": 384, "max_new_tokens": 96, "tokenizer": "smollm2"}
    return {**defaults, "prompts": math_prompts(problems), "reward_fn": reward, **kwargs}


def make_pal_env(**kwargs: Any) -> Any:
    """``rlenv/PAL-v0``: the text env on the PAL task (``problems=``, ``reward=`` override it)."""
    from rlenv.text.env import TextGenerationEnv

    return TextGenerationEnv(**_env_kwargs("pal", kwargs))


def make_pal_vector_env(num_envs: int = 8, **kwargs: Any) -> Any:
    """The batched ``rlenv/PAL-v0``."""
    from rlenv.text.vector_env import TextGenerationVectorEnv

    kwargs.pop("vectorization_mode", None)
    return TextGenerationVectorEnv(num_envs=num_envs, **_env_kwargs("pal", kwargs))


def make_cot_env(**kwargs: Any) -> Any:
    """``rlenv/MathCoT-v0``: the same problems answered in words (chain of thought), no interpreter."""
    from rlenv.text.env import TextGenerationEnv

    return TextGenerationEnv(**_env_kwargs("math_cot", kwargs))


def make_cot_vector_env(num_envs: int = 8, **kwargs: Any) -> Any:
    """The batched ``rlenv/MathCoT-v0``."""
    from rlenv.text.vector_env import TextGenerationVectorEnv

    kwargs.pop("vectorization_mode", None)
    return TextGenerationVectorEnv(num_envs=num_envs, **_env_kwargs("math_cot", kwargs))
