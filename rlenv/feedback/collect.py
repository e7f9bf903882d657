"""Collect rankings of policy completions from a person at a terminal or a simulated panel.

Command line (Hydra; settings in ``conf/collect.yaml``, any of them can be set as ``key=value``)::

    # the policy (SmolLM2) writes 4 completions per prompt, 3 noisy VADER labelers rank them
    python -m rlenv.feedback.collect task=sentiment n_completions=4 labeler=sentiment out=rankings.jsonl
    # the same prompts ranked by you, at the terminal
    python -m rlenv.feedback.collect task=sentiment labeler=human labeler_name=ana
    # rank an existing items file (prompt + completions per line) instead of generating
    python -m rlenv.feedback.collect items_file=items.jsonl labeler=toxicity panel=5 noise=0.2

``task`` is the config group of ``conf/task/`` (its ``prompts``: ``sentiment`` or ``detox``);
the prompts are the first ``num_prompts`` of the task's training split
(:func:`rlenv.text.prompts.load_task_prompts`) or of a prompt file (``prompts=<file>``).
Generated completions are appended to ``<out stem>.items.jsonl`` (see
:mod:`rlenv.feedback.items`) and every ranking to ``out`` (see
:mod:`rlenv.feedback.rankings`), one fsynced line at a time. Rerunning the same command
resumes: prompts already ranked by the same labeler(s) are skipped, prompts with
completions but no ranking are ranked without being generated again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlenv.feedback.consensus import consensus
from rlenv.feedback.human import TerminalLabeler
from rlenv.feedback.items import (
    Item,
    LabelingSummary,
    append_item,
    check_all_storable,
    item_key,
    labeled_keys,
    load_items,
)
from rlenv.feedback.labelers import Labeler, SentimentLabeler, ToxicityLabeler, label_with_panel
from rlenv.feedback.rankings import RankingRecord, append_ranking, load_rankings

SIMULATED = {"sentiment": SentimentLabeler, "toxicity": ToxicityLabeler}
TASK_LABELERS = {"sentiment": "sentiment", "detox": "toxicity", "redteam": "toxicity"}
LABELER_KINDS = (*SIMULATED, "human", "ai")

Generator = Callable[[Sequence[str]], list[list[str]]]


def as_items(entries: Sequence[Item | tuple[str, Sequence[str]]]) -> list[Item]:
    """Accept :class:`Item` objects or ``(prompt, completions)`` tuples."""
    return [e if isinstance(e, Item) else Item(e[0], tuple(e[1])) for e in entries]


def _panel_criterion(labelers: Sequence[Labeler], criterion: str | None) -> str:
    criteria = sorted({lab.criterion for lab in labelers})
    if criterion is None:
        if len(criteria) != 1:
            raise ValueError(f"panel labelers rank by different criteria {criteria}: pass criterion=")
        return criteria[0]
    return criterion


def label_panel(
    items: Sequence[Item], labelers: Sequence[Labeler], out_path: str | os.PathLike[str], criterion: str
) -> LabelingSummary:
    """Rank each item with every labeler of the panel and append one record per item."""
    if not labelers:
        raise ValueError("the panel needs at least one labeler, got none")
    done = labeled_keys(out_path)
    names = [lab.name for lab in labelers]
    todo = [
        i for i in items if not all(item_key(i.prompt, i.completions, criterion, n) in done for n in names)
    ]
    check_all_storable(todo)
    summary = LabelingSummary(already_done=len(items) - len(todo), remaining=len(todo))
    for item in todo:
        labels = tuple(label_with_panel(labelers, item.prompt, item.completions))
        append_ranking(
            out_path, RankingRecord(item.prompt, item.completions, criterion, labels, item.id, item.meta)
        )
        summary.labeled += 1
        summary.remaining -= 1
    return summary


def collect(
    items: Sequence[Item | tuple[str, Sequence[str]]],
    labelers: TerminalLabeler | Sequence[Labeler],
    out_path: str | os.PathLike[str],
    *,
    criterion: str | None = None,
) -> LabelingSummary:
    """Rank ``items`` with a person (:class:`TerminalLabeler`) or a simulated panel.

    Args:
        items: prompts with their completions (see :func:`collect_from_policy` to generate them).
        labelers: a :class:`TerminalLabeler`, or simulated labelers
            (:mod:`rlenv.feedback.labelers`) that all rank every item.
        out_path: rankings file, appended to one record at a time.
        criterion: recorded in each record; defaults to the labelers' criterion.
    """
    entries = as_items(items)
    if isinstance(labelers, TerminalLabeler):
        if criterion is not None and criterion != labelers.criterion:
            raise ValueError(f"criterion {criterion!r} differs from the labeler's {labelers.criterion!r}")
        return labelers.run(entries, out_path)
    return label_panel(entries, list(labelers), out_path, _panel_criterion(labelers, criterion))


def items_path(out_path: str | os.PathLike[str]) -> Path:
    """Where generated completions are kept next to a rankings file: ``<stem>.items.jsonl``."""
    out = Path(out_path)
    return out.with_name(f"{out.stem}.items.jsonl")


def _done_prompts(out_path: Path, criterion: str, names: Sequence[str]) -> set[str]:
    done = labeled_keys(out_path)
    by_prompt: dict[str, set[str]] = {}
    for prompt, _, crit, labeler in done:
        if crit == criterion:
            by_prompt.setdefault(prompt, set()).add(labeler)
    return {prompt for prompt, labelers in by_prompt.items() if set(names) <= labelers}


def collect_from_policy(
    prompts: Sequence[str],
    generate: Generator,
    labelers: TerminalLabeler | Sequence[Labeler],
    out_path: str | os.PathLike[str],
    *,
    chunk_size: int = 16,
    meta: dict[str, Any] | None = None,
    progress: bool = False,
) -> LabelingSummary:
    """Generate completions for ``prompts`` with the policy and have them ranked, resumably.

    Args:
        prompts: the prompts to cover (duplicates are dropped).
        generate: ``generate(prompts) -> completions per prompt`` (e.g. a partial of
            :func:`rlenv.feedback.generate.generate_items` over a model and a tokenizer).
        labelers: a :class:`TerminalLabeler` (everything is generated first, then ranked)
            or a simulated panel (generated and ranked ``chunk_size`` prompts at a time).
        out_path: the rankings file; completions go to :func:`items_path` of it.
        chunk_size: prompts generated per call of ``generate``.
        meta: stored with each item (model, sampling settings, ...).
    """
    from tqdm.auto import tqdm

    out, store = Path(out_path), items_path(out_path)
    human = isinstance(labelers, TerminalLabeler)
    panel = [labelers] if human else list(labelers)
    criterion = labelers.criterion if human else _panel_criterion(panel, None)
    wanted = list(dict.fromkeys(prompts))
    done = _done_prompts(out, criterion, [lab.name for lab in panel])
    stored = {item.prompt: item for item in (load_items(store) if store.exists() else [])}
    todo = [p for p in wanted if p not in done]
    missing = [p for p in todo if p not in stored]
    summary = LabelingSummary(already_done=len(wanted) - len(todo))
    bar = tqdm(total=len(todo), desc="collect", unit="prompt", disable=not progress)
    for start in range(0, len(missing), chunk_size):
        chunk = missing[start : start + chunk_size]
        for prompt, completions in zip(chunk, generate(chunk), strict=True):
            item = Item(prompt, tuple(completions), meta=dict(meta or {}))
            append_item(store, item)
            stored[prompt] = item
        if not human:
            step = label_panel([stored[p] for p in chunk], panel, out, criterion)
            summary.labeled += step.labeled
            bar.update(len(chunk))
    bar.close()
    rest = [stored[p] for p in todo]
    if human:
        step = labelers.run(rest, out)  # type: ignore[union-attr]
        summary.labeled, summary.skipped, summary.quit = step.labeled, step.skipped, step.quit
        summary.interrupted = step.interrupted
    else:
        summary.labeled += label_panel(rest, panel, out, criterion).labeled
    summary.remaining = len(todo) - summary.labeled
    return summary


def mean_agreement(source: str | os.PathLike[str] | Sequence[RankingRecord]) -> float:
    """Average agreement (:func:`rlenv.feedback.consensus.consensus`) of multi-labeler records.

    ``source``: loaded records, or a rankings file (nan when it does not exist).
    """
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).exists():
            return math.nan
        source = load_rankings(source, skip_invalid=True)
    values = [consensus(r.labels).agreement for r in source]
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def make_labelers(
    kind: str,
    *,
    panel: int = 3,
    noise: float = 0.1,
    seed: int = 0,
    name: str | None = None,
    criterion: str | None = None,
    task: str | None = None,
) -> TerminalLabeler | list[Labeler]:
    """A simulated panel (``"sentiment"``, ``"toxicity"``) or a person at the terminal (``"human"``).

    ``"ai"`` (a language model, :mod:`rlenv.feedback.ai_labeler`) needs a model: see
    :func:`labelers_for`."""
    if kind == "ai":
        raise ValueError("labeler=ai needs a model: build it with labelers_for(kind, cfg, ...)")
    if kind == "human":
        if not name or not criterion:
            raise ValueError("labeler=human needs labeler_name=<your name> and a criterion")
        return TerminalLabeler(name, criterion, **({"task": task} if task else {}))
    if kind not in SIMULATED:
        raise ValueError(f"unknown labeler {kind!r} (valid: {list(LABELER_KINDS)})")
    if panel < 1:
        raise ValueError(f"panel must be >= 1 simulated labeler, got {panel}")
    return [SIMULATED[kind](noise=noise, seed=seed + k) for k in range(panel)]


def labelers_for(
    kind: str,
    settings: Any,
    *,
    model: str,
    task: str | None,
    seed: int = 0,
    device: str = "cpu",
    criterion: str | None = None,
) -> TerminalLabeler | list[Labeler]:
    """The labelers of a ``conf/feedback/simulated.yaml``-shaped ``settings``: ``kind="ai"``
    builds the AI labeler of ``settings.ai_labeler`` (its model defaults to ``model``, the
    policy's base); any other kind goes to :func:`make_labelers`."""
    if kind == "ai":
        from rlenv.feedback.ai_labeler import make_ai_labeler

        return [make_ai_labeler(settings.get("ai_labeler") or {}, model, task, device)]
    return make_labelers(
        kind,
        panel=int(settings.panel),
        noise=float(settings.noise),
        seed=seed,
        name=settings.get("labeler_name"),
        criterion=criterion,
        task=settings.get("instructions"),
    )


def resolve_labeler_kind(labeler: str | None, task: str | None) -> str:
    """The labeler of a config: as given, else the task's (sentiment -> sentiment, detox -> toxicity)."""
    if labeler:
        return labeler
    if task not in TASK_LABELERS:
        raise ValueError(
            f"no default labeler for prompts {task!r} (task defaults: {TASK_LABELERS}); "
            f"set the labeler to one of {list(LABELER_KINDS)}"
        )
    return TASK_LABELERS[task]


def select_prompts(source: Any, split: str, num_prompts: int | None) -> list[str]:
    """The first ``num_prompts`` prompts of ``split`` of a task name, a prompt file or a list."""
    from rlenv.text.prompts import resolve_prompts

    chosen = resolve_prompts(source if isinstance(source, str) else list(source), split)
    return chosen[:num_prompts] if num_prompts else chosen


def policy_generator(cfg: Any) -> tuple[Generator, dict[str, Any]]:
    """``generate(prompts)`` sampling ``cfg.n_completions`` completions each with ``cfg.model``."""
    from rlenv.feedback.generate import generate_items
    from rlenv.text.models import load_causal_lm
    from rlenv.text.tokenizers import load_tokenizer

    model = load_causal_lm(cfg.model, device=cfg.device)
    tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
    sampling = dict(cfg.generation)
    calls = iter(range(1 << 30))

    def generate(chunk: Sequence[str]) -> list[list[str]]:
        seed = int(cfg.seed) * 1_000_003 + next(calls)
        return generate_items(model, tokenizer, chunk, int(cfg.n_completions), seed=seed, **sampling)

    return generate, {"model": str(cfg.model), **sampling}


def run(cfg: Any) -> LabelingSummary:
    """Collect rankings as a ``conf/collect.yaml``-shaped config says (see the module docstring)."""
    import torch

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    source = cfg.prompts or cfg.task.prompts
    task = cfg.task.prompts if isinstance(cfg.task.prompts, str) else None
    kind = resolve_labeler_kind(cfg.labeler, task)
    criterion = cfg.criterion or (SIMULATED[kind].criterion if kind in SIMULATED else None)
    labelers = labelers_for(
        kind,
        cfg,
        model=str(cfg.model),
        task=task,
        seed=int(cfg.seed),
        device=str(cfg.device),
        criterion=criterion,
    )
    criterion = criterion or (labelers[0].criterion if isinstance(labelers, list) else None)
    if cfg.items_file:
        summary = collect(load_items(cfg.items_file), labelers, cfg.out, criterion=criterion)
    else:
        prompts = select_prompts(source, cfg.split, cfg.num_prompts)
        generate, meta = policy_generator(cfg)
        summary = collect_from_policy(
            prompts,
            generate,
            labelers,
            cfg.out,
            chunk_size=int(cfg.chunk_size),
            meta=meta,
            progress=bool(cfg.progress),
        )
    print(
        f"labeled {summary.labeled} prompt(s), {summary.already_done} already done, "
        f"{summary.remaining} left -> {cfg.out} (labeler agreement {mean_agreement(cfg.out):.3f})"
    )
    return summary


def main() -> None:
    """Console entry point (``rlenv-collect``): the Hydra app over ``conf/collect.yaml``."""
    import hydra
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path="pkg://conf", config_name="collect")
    def app(cfg: DictConfig) -> None:
        run(cfg)

    app()


if __name__ == "__main__":
    main()
