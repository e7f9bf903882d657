"""Knowledge distillation of a fine-tuned policy into a smaller student.

    python -m agents.distill teacher=<run or model dir> [student.num_layers=15 temperature=2 alpha=0.5]

The teacher is a run directory of a text run, of ``agents.rlhf`` or ``agents.dpo`` (its LoRA
adapter merged), or a model directory (``agents.export``). The student is, by default, the
teacher with fewer decoder layers (``student.num_layers``, evenly spaced, the first and the
last kept), initialised from the teacher's weights; ``student.model`` names another causal LM
sharing the teacher's tokenizer instead. The data are the teacher's own sampled completions of
the task's training prompts. On each completion token the student minimises

    alpha * T^2 * KL(softmax(z_teacher / T) || softmax(z_student / T)) + (1 - alpha) * CE(z_student, y)

the distillation loss on the teacher's distribution softened at temperature ``T`` (the
``T^2`` keeps its gradient on the scale of the hard loss) plus the cross-entropy of the
student on the hard labels ``y``, the tokens the teacher sampled (Hinton et al., 2015). All of
the student's weights train.

Before and after training, held-out teacher completions give the distillation loss, and the
task's held-out prompts are sampled from the student (same seed) and scored as in the RLHF
pipeline: the task's noise-free labeler, KL to the teacher (nats per completion, on the
student's samples), length. The student is written as a Hugging Face model directory
(``<run dir>/student``, or ``out=``) that ``agents.export`` can quantize and prune further.
Settings: ``conf/distill.yaml``.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from rlenv.feedback.generate import Generation

log = logging.getLogger(__name__)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    tokens: Tensor,
    mask: Tensor,
    temperature: float,
    alpha: float,
) -> tuple[Tensor, dict[str, float]]:
    """The mean distillation objective over the masked tokens (see the module docstring).

    Shapes: logits (B, T, V), tokens (B, T) int64 (the hard labels), mask (B, T) bool -> loss ().
    Metrics: ``soft`` (the tempered KL, times ``T^2``), ``hard`` (the cross-entropy).
    """
    if not temperature > 0:
        raise ValueError(f"distillation temperature must be > 0, got {temperature!r}")
    if not 0 <= alpha <= 1:
        raise ValueError(f"distillation alpha must be in [0, 1], got {alpha!r}")
    weights = mask.float()
    count = weights.sum().clamp(min=1.0)
    student_t = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    soft_tokens = (teacher_t.exp() * (teacher_t - student_t)).sum(dim=-1)
    soft = (soft_tokens * weights).sum() / count * temperature**2
    hard_tokens = F.cross_entropy(student_logits.float().transpose(1, 2), tokens, reduction="none")
    hard = (hard_tokens * weights).sum() / count
    loss = alpha * soft + (1 - alpha) * hard
    return loss, {"soft": float(soft.detach()), "hard": float(hard.detach())}


def decoder_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent module, attribute name, the decoder's layer list) of a causal LM."""
    count = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        for attribute, child in module.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == count:
                return module, attribute, child
    raise ValueError(f"cannot find the decoder layers of {type(model).__name__} (num_hidden_layers={count})")


def kept_layers(total: int, keep: int) -> list[int]:
    """``keep`` evenly spaced layer indices of ``total``, the first and the last among them."""
    if not 1 <= keep <= total:
        raise ValueError(f"student.num_layers must be in [1, {total}] (the teacher has {total}), got {keep}")
    if keep == 1:
        return [total - 1]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def shallow_student(teacher: nn.Module, num_layers: int) -> nn.Module:
    """A copy of ``teacher`` keeping ``num_layers`` of its decoder layers (its weights copied)."""
    student = copy.deepcopy(teacher)
    parent, attribute, layers = decoder_layers(student)
    keep = kept_layers(len(layers), num_layers)
    setattr(parent, attribute, nn.ModuleList([layers[j] for j in keep]))
    for position, layer in enumerate(getattr(parent, attribute)):
        for module in layer.modules():  # the KV cache indexes layers by position
            if hasattr(module, "layer_idx"):
                module.layer_idx = position
    student.config.num_hidden_layers = len(keep)
    layer_types = getattr(student.config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        student.config.layer_types = [layer_types[j] for j in keep]
    return student


def load_teacher(path: str | Path, device: torch.device) -> tuple[nn.Module, str, dict[str, Any]]:
    """(plain teacher model, tokenizer source, run config) of a run or model directory."""
    from agents.export import _load_model_dir, _run_config, is_model_dir, load_policy, merged_lm

    path = Path(path)
    if is_model_dir(path):
        return _load_model_dir(path).to(device), str(path), _run_config(path)
    core, name, config = load_policy(path, str(device))
    return merged_lm(core).to(device), name, config


def rows(batch: Generation, index: slice) -> Generation:
    """The rows ``index`` of a generation."""
    return Generation(
        batch.prompts[index],
        batch.completions[index],
        batch.input_ids[index],
        batch.attention_mask[index],
        batch.response_start,
        batch.response_mask[index],
    )


class Distiller:
    """Trains ``student`` towards ``teacher`` on generations (see :func:`distillation_loss`)."""

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
        lr: float = 1e-4,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        if teacher.get_output_embeddings().weight.shape[0] != student.get_output_embeddings().weight.shape[0]:
            raise ValueError(
                "the student's vocabulary differs from the teacher's: they must share the tokenizer"
            )
        if not lr > 0:
            raise ValueError(f"distill lr must be > 0, got {lr!r}")
        if not temperature > 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature!r}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"distillation alpha must be in [0, 1], got {alpha!r}")
        self.teacher, self.student = teacher.eval(), student
        self.temperature, self.alpha, self.max_grad_norm = float(temperature), float(alpha), max_grad_norm
        for parameter in teacher.parameters():
            parameter.requires_grad_(False)
        self.parameters = [p for p in student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.parameters, lr=lr)
        self.steps = 0

    def loss(self, batch: Generation) -> tuple[Tensor, dict[str, float]]:
        from rlenv.text.tokens import position_ids

        device = next(self.student.parameters()).device
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        positions = position_ids(mask)
        start = batch.response_start
        with torch.no_grad():
            teacher = self.teacher(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        student = self.student(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        loss, metrics = distillation_loss(
            student[:, start - 1 : -1],
            teacher[:, start - 1 : -1],
            ids[:, start:],
            batch.response_mask.to(device),
            self.temperature,
            self.alpha,
        )
        return loss, {"loss": float(loss.detach()), **metrics}

    def step(self, batch: Generation) -> dict[str, float]:
        """One optimizer step; a non-finite loss or gradient is skipped."""
        from agents.core.steps import guarded_step

        self.student.train()
        loss, metrics = self.loss(batch)
        outcome = guarded_step(loss, self.parameters, self.optimizer, self.max_grad_norm)
        self.steps += int(not outcome["skipped"])
        return {**metrics, **outcome}

    @torch.no_grad()
    def evaluate(self, batches: Sequence[Generation]) -> dict[str, float]:
        """The losses over ``batches``, weighted by their completion tokens."""
        self.student.eval()
        totals: dict[str, float] = {}
        tokens = 0
        for batch in batches:
            _, metrics = self.loss(batch)
            count = int(batch.response_mask.sum())
            tokens += count
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + value * count
        return {name: value / max(tokens, 1) for name, value in totals.items()}

    def train(
        self,
        batches: Sequence[Generation],
        epochs: int,
        seed: int,
        logger: Any = None,
        progress: bool = False,
        max_seconds: float | None = None,
    ) -> dict[str, float]:
        """``epochs`` shuffled passes over ``batches`` (or until ``max_seconds``); the last metrics."""
        from agents.core.steps import run_epochs

        if not batches:
            raise ValueError("no teacher completions to distil from")
        metrics, _ = run_epochs(
            len(batches),
            1,
            epochs,
            seed,
            lambda rows: self.step(batches[int(rows[0])]),
            name="distill",
            logger=logger,
            progress=progress,
            max_seconds=max_seconds,
        )
        return metrics


def teacher_batches(
    teacher: nn.Module, tokenizer: Any, prompts: list[str], settings: DictConfig, batch_size: int, seed: int
) -> list[Generation]:
    """The teacher's sampled completions of ``prompts``, in training batches of ``batch_size``."""
    from rlenv.feedback.generate import sample_completions

    generations = sample_completions(
        teacher,
        tokenizer,
        prompts,
        max_new_tokens=int(settings.max_new_tokens),
        temperature=float(settings.temperature),
        batch_size=int(settings.batch_size),
        seed=seed,
    )
    return [
        rows(g, slice(k, k + batch_size)) for g in generations for k in range(0, len(g.prompts), batch_size)
    ]


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Distil the teacher into the student, evaluate before and after, save the student."""
    from agents.rlhf import (
        PolicyReport,
        format_comparison,
        format_seconds,
        labeler_score_fn,
        sample_and_measure,
        stage,
    )
    from agents.train import resolve_device, seed_everything, write_metrics, write_text
    from rlenv.feedback.collect import resolve_labeler_kind, select_prompts
    from rlenv.reward.scoring import as_array
    from rlenv.text.models import load_causal_lm
    from rlenv.text.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    out = Path(cfg.out) if cfg.get("out") else run_dir / "student"
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"out={str(out)!r} exists and is not empty; choose another directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    seed_everything(int(cfg.seed))
    torch.set_num_threads(int(cfg.torch_threads))
    device = resolve_device(cfg.device)
    teacher, tokenizer_source, teacher_config = load_teacher(cfg.teacher, device)
    tokenizer = load_tokenizer(tokenizer_source)
    if cfg.student.get("model"):
        student = load_causal_lm(str(cfg.student.model), device=device)
    else:
        total = len(decoder_layers(teacher)[2])
        student = shallow_student(teacher, int(cfg.student.num_layers or max(1, total // 2)))
    for parameter in student.parameters():
        parameter.requires_grad_(True)
    task = cfg.task.prompts
    source = task if isinstance(task, str) else OmegaConf.to_container(task)
    train_prompts = select_prompts(source, "train", int(cfg.data.num_prompts))
    heldout_count = max(1, round(float(cfg.train.heldout_fraction) * len(train_prompts)))
    settings = cfg.train
    seconds: dict[str, float] = {}
    with stage("teacher_samples", seconds):
        batches = teacher_batches(
            teacher, tokenizer, train_prompts, cfg.data, int(settings.batch_size), int(cfg.seed)
        )
    heldout_rows = math.ceil(heldout_count / int(settings.batch_size))
    heldout_batches, train_batches = batches[:heldout_rows], batches[heldout_rows:] or batches[:heldout_rows]
    distiller = Distiller(
        teacher, student, temperature=float(cfg.temperature), alpha=float(cfg.alpha), lr=float(settings.lr)
    )
    kind = resolve_labeler_kind(cfg.get("labeler"), task if isinstance(task, str) else None)
    labeler = labeler_score_fn(kind)
    heldout_prompts = select_prompts(source, "heldout", int(cfg.evaluation.num_prompts))

    def report(model: nn.Module) -> PolicyReport:
        completions, kls, lengths = sample_and_measure(
            model,
            lambda: contextlib.nullcontext(teacher),
            tokenizer,
            heldout_prompts,
            max_new_tokens=int(cfg.evaluation.max_new_tokens),
            batch_size=int(cfg.evaluation.batch_size),
            seed=int(cfg.evaluation.seed),
        )
        score = float(as_array(labeler(heldout_prompts, completions)).mean())
        return PolicyReport(
            score, score, sum(kls) / len(kls), sum(lengths) / len(lengths), heldout_prompts, completions
        )

    logger = instantiate(cfg.logger, log_dir=str(run_dir))
    try:
        with stage("eval_before", seconds):
            loss_before, before = distiller.evaluate(heldout_batches), report(student)
            teacher_report = report(teacher)
        with stage("distill", seconds):
            distiller.train(
                train_batches,
                int(settings.epochs),
                int(cfg.seed),
                logger,
                bool(cfg.progress),
                settings.get("max_seconds"),
            )
        with stage("eval_after", seconds):
            loss_after, after = distiller.evaluate(heldout_batches), report(student)
        metrics: dict[str, Any] = {
            **{f"distill/heldout_before/{k}": v for k, v in loss_before.items()},
            **{f"distill/heldout_after/{k}": v for k, v in loss_after.items()},
            **_scores(before, "eval/before/"),
            **_scores(after, "eval/after/"),
            **_scores(teacher_report, "eval/teacher/"),
            "distill/steps": distiller.steps,
            "distill/student_parameters": sum(p.numel() for p in student.parameters()),
            "distill/teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            **{f"perf/seconds/{k}": v for k, v in seconds.items()},
        }
        logger.log(_scores(after, "eval/after/"), distiller.steps)
        _save_student(
            student, tokenizer, out, {"teacher": str(cfg.teacher), **OmegaConf.to_container(cfg)}, metrics
        )
        write_metrics(run_dir / "metrics.json", metrics)
        lines = format_comparison(
            f"distillation: {metrics['distill/student_parameters']:,} parameters from "
            f"{metrics['distill/teacher_parameters']:,}, {distiller.steps} steps "
            "(KL row: to the teacher; teacher's own labeler score "
            f"{teacher_report.labeler_score:.3f})",
            before,
            after,
            int(cfg.evaluation.num_samples),
            kind == "toxicity",
        )
        lines = [line for line in lines if not line.startswith("reward model score")]
        lines.append(
            f"held-out distillation loss {loss_before['loss']:.3f} -> {loss_after['loss']:.3f} "
            f"(soft {loss_before['soft']:.3f} -> {loss_after['soft']:.3f}, "
            f"hard {loss_before['hard']:.3f} -> {loss_after['hard']:.3f})"
        )
        lines.append(format_seconds(seconds))
        text = "\n".join(lines)
        write_text(run_dir / "report.txt", text + "\n")
        print(text)
    finally:
        logger.close()
    return metrics


def _scores(report: Any, prefix: str) -> dict[str, float]:
    """A report's metrics without the reward-model score (a student is scored by the labeler only)."""
    return {k: v for k, v in report.metrics(prefix).items() if not k.endswith("rm_score")}


def _save_student(
    student: nn.Module, tokenizer: Any, out: Path, config: dict[str, Any], metrics: dict
) -> None:
    """The student as a Hugging Face model directory, written beside ``out`` and renamed into place."""
    from agents.export import model_card, staged_directory

    with staged_directory(out) as staging:
        student.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        card = model_card(config["teacher"], config, metrics).replace(
            "# A policy fine-tuned with rlenv", "# A student distilled with rlenv"
        )
        (staging / "README.md").write_text(card)


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="distill")
def _main(cfg: DictConfig) -> float:
    metrics = run(cfg, HydraConfig.get().runtime.output_dir)
    return float(metrics["distill/heldout_after/loss"])


def main() -> None:
    """The command line entry point (``python -m agents.distill``, ``rlenv-distill``)."""
    from agents.run.jobs import prepare_command_line

    prepare_command_line()
    _main()


if __name__ == "__main__":
    main()
