"""Direct Preference Optimization of the policy's LoRA adapters.

    python -m agents.dpo data=<rankings.jsonl> [dpo.beta=0.1 dpo.epochs=1 dpo.batch_size=8]

DPO (Rafailov et al., 2023) fits the policy to preference pairs directly, without a reward
model or rollouts. For a prompt ``x`` with a preferred completion ``y_w`` and a rejected one
``y_l`` it minimises

    -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))])

where ``log pi(y|x)`` sums the completion's token log-probabilities and the reference is the
same LM with its adapters switched off (one copy of the weights). The pairs are the N-choose-2
pairs of the rankings' consensus, the same the reward model learns from
(:func:`rlenv.feedback.pairs.records_to_pairs`). ``beta * (log pi - log pi_ref)`` is the
implicit reward of a completion: the held-out share of pairs whose preferred completion has
the higher implicit reward is reported beside the loss.

Before and after training, the same held-out prompts are completed with the same sampling
seed and scored as in the PPO pipeline (``agents.rlhf``): the task's noise-free labeler, KL
to the reference (nats per completion), length and samples; with ``reward_model.path`` also
a reward model's score. Settings: ``conf/dpo.yaml``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from rlenv.feedback.generate import Generation, left_pad_prompts, response_log_probs, special_ids
from rlenv.feedback.pairs import Pair
from rlenv.text.tokens import append_tokens, right_pad

log = logging.getLogger(__name__)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    reference_chosen: Tensor,
    reference_rejected: Tensor,
    beta: float,
) -> tuple[Tensor, dict[str, float]]:
    """The mean DPO loss over a batch of pairs and its diagnostics.

    Shapes: the four sequence log-probabilities (B,) -> loss (). Metrics: ``accuracy`` (share of
    pairs whose chosen completion has the higher implicit reward, a tie counting half),
    ``margin`` (mean implicit reward difference), ``chosen_reward`` and ``rejected_reward``
    (means).
    """
    if not beta > 0:
        raise ValueError(f"DPO beta must be positive, got {beta}")
    chosen = beta * (policy_chosen - reference_chosen)
    rejected = beta * (policy_rejected - reference_rejected)
    margin = chosen - rejected
    loss = -F.logsigmoid(margin).mean()
    seen = margin.detach()
    metrics = {
        "accuracy": float(((seen > 0).float() + 0.5 * (seen == 0).float()).mean()),  # a tie counts half
        "margin": float(seen.mean()),
        "chosen_reward": float(chosen.detach().mean()),
        "rejected_reward": float(rejected.detach().mean()),
    }
    return loss, metrics


def encode_completions(
    tokenizer: Any, pad_token_id: int, prompts: Sequence[str], completions: Sequence[str], max_tokens: int
) -> Generation:
    """Prompts (left-padded) followed by given completions (right-padded, at most ``max_tokens``).

    The layout of sampled completions (:class:`rlenv.feedback.generate.Generation`), so the
    same :func:`~rlenv.feedback.generate.response_log_probs` scores them.
    """
    input_ids, attention_mask = left_pad_prompts(tokenizer, prompts, pad_token_id)
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens] for text in completions]
    empty = [text for text, ids in zip(completions, encoded, strict=True) if not ids]
    if empty:
        raise ValueError(f"completion {empty[0]!r} encodes to no token")
    tokens, mask = right_pad(encoded, pad_token_id)
    sequences, attended = append_tokens(input_ids, attention_mask, tokens, mask)
    return Generation(list(prompts), list(completions), sequences, attended, input_ids.shape[1], mask)


def sequence_log_probs(model: Any, batch: Generation) -> Tensor:
    """``log pi(y|x)`` of each row's completion: its tokens' log-probabilities summed. Shapes: (B,)."""
    return response_log_probs(model, batch).sum(dim=1)


class DPOTrainer:
    """DPO on the LoRA adapters of a :class:`agents.networks.lm_core.CausalLMCore`.

    Args:
        core: the policy (adapters on) and its reference (adapters off).
        tokenizer: the policy's tokenizer.
        beta: the DPO temperature (> 0): larger keeps the policy nearer the reference.
        lr: Adam step size of the adapters.
        batch_size: pairs per optimizer step.
        max_tokens: completion tokens kept per pair side.
        max_grad_norm: gradient-norm clip (``None``: none).
    """

    def __init__(
        self,
        core: Any,
        tokenizer: Any,
        *,
        beta: float = 0.1,
        lr: float = 5e-4,
        batch_size: int = 8,
        max_tokens: int = 64,
        max_grad_norm: float | None = 1.0,
    ) -> None:
        for name, value in (
            ("beta", beta),
            ("lr", lr),
            ("batch_size", batch_size),
            ("max_tokens", max_tokens),
        ):
            if not value > 0:
                raise ValueError(f"dpo.{name} must be positive, got {value!r}")
        self.core, self.tokenizer = core, tokenizer
        self.beta, self.batch_size, self.max_tokens = float(beta), int(batch_size), int(max_tokens)
        self.max_grad_norm = max_grad_norm
        self.parameters = [p for p in core.parameters() if p.requires_grad]
        if not self.parameters:
            raise ValueError("the policy has no trainable parameters (LoRA adapters expected)")
        self.optimizer = torch.optim.Adam(self.parameters, lr=lr)
        self.pad_token_id = special_ids(tokenizer, core.policy_lm)[1]
        self.steps = 0

    def _encode(self, pairs: Sequence[Pair]) -> tuple[Generation, Generation]:
        prompts = [pair.prompt for pair in pairs]
        chosen = encode_completions(
            self.tokenizer, self.pad_token_id, prompts, [p.chosen for p in pairs], self.max_tokens
        )
        rejected = encode_completions(
            self.tokenizer, self.pad_token_id, prompts, [p.rejected for p in pairs], self.max_tokens
        )
        return chosen, rejected

    @torch.no_grad()
    def reference_log_probs(self, pairs: Sequence[Pair]) -> tuple[Tensor, Tensor]:
        """``log pi_ref`` of the chosen and the rejected completions (B,) each."""
        chosen, rejected = self._encode(pairs)
        with self.core.using(reference=True) as reference:
            model = self.core.policy_lm if reference is None else reference
            return sequence_log_probs(model, chosen), sequence_log_probs(model, rejected)

    def loss(
        self, pairs: Sequence[Pair], reference: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """The DPO loss of ``pairs`` under the current adapters (reference log-probs computed
        unless given)."""
        chosen, rejected = self._encode(pairs)
        reference = self.reference_log_probs(pairs) if reference is None else reference
        model = self.core.policy_lm
        return dpo_loss(
            sequence_log_probs(model, chosen), sequence_log_probs(model, rejected), *reference, self.beta
        )

    def step(self, pairs: Sequence[Pair], reference: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """One optimizer step on ``pairs``; a non-finite loss or gradient is refused (no step)."""
        from agents.core.steps import guarded_step

        self.core.train()
        loss, metrics = self.loss(pairs, reference)
        outcome = guarded_step(loss, self.parameters, self.optimizer, self.max_grad_norm)
        self.steps += int(not outcome["skipped"])
        return {"loss": float(loss.detach()), **metrics, **outcome}

    @torch.no_grad()
    def evaluate(self, pairs: Sequence[Pair]) -> dict[str, float]:
        """Loss and implicit-reward accuracy over ``pairs`` (in batches), weighted by batch size."""
        self.core.eval()
        totals: dict[str, float] = {}
        for start in range(0, len(pairs), self.batch_size):
            part = pairs[start : start + self.batch_size]
            loss, metrics = self.loss(part)
            for name, value in {"loss": float(loss), **metrics}.items():
                totals[name] = totals.get(name, 0.0) + value * len(part)
        return {name: value / max(len(pairs), 1) for name, value in totals.items()}

    def train(
        self,
        pairs: Sequence[Pair],
        epochs: int,
        seed: int,
        logger: Any = None,
        progress: bool = False,
        max_seconds: float | None = None,
    ) -> dict[str, float]:
        """``epochs`` passes over ``pairs`` in shuffled batches, or fewer steps if training
        (the reference pass included) reaches ``max_seconds``; the reference log-probs are
        computed once (the reference does not change). Returns the last step's metrics."""
        from agents.core.steps import run_epochs

        if not pairs:
            raise ValueError("no preference pairs to train on (every ranking was a tie or filtered out)")
        if epochs < 1:
            raise ValueError(f"dpo.epochs must be >= 1, got {epochs}")
        started = time.perf_counter()
        chunks = [pairs[i : i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]
        computed = [self.reference_log_probs(chunk) for chunk in chunks]
        chosen_ref = torch.cat([c for c, _ in computed])
        rejected_ref = torch.cat([r for _, r in computed])

        def step(rows: Tensor) -> dict[str, float]:
            return self.step([pairs[int(i)] for i in rows], (chosen_ref[rows], rejected_ref[rows]))

        metrics, _ = run_epochs(
            len(pairs),
            self.batch_size,
            epochs,
            seed,
            step,
            name="dpo",
            logger=logger,
            progress=progress,
            max_seconds=max_seconds,
            started=started,
        )
        return metrics


def split_pairs(pairs: list[Pair], heldout_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) pairs, split by prompt so no held-out prompt was trained on."""
    if not 0 <= heldout_fraction < 1:
        raise ValueError(f"dpo.heldout_fraction must be in [0, 1), got {heldout_fraction}")
    prompts = sorted({pair.prompt for pair in pairs})
    random.Random(seed).shuffle(prompts)
    heldout = set(prompts[: int(round(heldout_fraction * len(prompts)))])
    return [p for p in pairs if p.prompt not in heldout], [p for p in pairs if p.prompt in heldout]


def policy_core(model_name: str, lora: Any, device: torch.device) -> Any:
    """The policy LM with LoRA adapters (its reference: adapters off) and its tokenizer."""
    from agents.networks.lm_core import CausalLMCore
    from rlenv.text.models import load_causal_lm
    from rlenv.text.tokenizers import load_tokenizer

    model = load_causal_lm(model_name)
    lora = OmegaConf.to_container(lora) if isinstance(lora, DictConfig) else lora
    core = CausalLMCore(model, model.get_output_embeddings().weight.shape[0], lora=lora, device=device)
    return core, load_tokenizer(model_name)


def train_and_evaluate(
    core: Any,
    tokenizer: Any,
    records: Sequence[Any],
    settings: DictConfig,
    scoring: tuple[list[str], Any, Any, DictConfig],
    logger: Any,
    seed: int,
    progress: bool,
    seconds: dict[str, float],
) -> dict[str, Any]:
    """Evaluate the policy, train it with DPO on the records' consensus pairs, evaluate again.

    ``scoring``: (held-out prompts, reward function, labeler, evaluation settings) for
    :func:`agents.rlhf.evaluate_policy`. Returns ``before``, ``after`` (reports), the trainer,
    the pair counts and the held-out pairs' metrics before and after (``dpo/...``)."""
    from agents.rlhf import evaluate_policy, stage
    from rlenv.feedback.pairs import records_to_pairs

    pairs = records_to_pairs(list(records), min_pair_agreement=settings.min_pair_agreement)
    train_pairs, heldout_pairs = split_pairs(pairs, float(settings.heldout_fraction), seed)
    log.info("%d pairs, %d to train, %d held out", len(pairs), len(train_pairs), len(heldout_pairs))
    if not train_pairs:
        raise ValueError(
            f"too few preference pairs for DPO: {len(pairs)} from {len(records)} rankings, "
            f"{len(train_pairs)} left to train on after holding out {len(heldout_pairs)} "
            f"(min_pair_agreement={settings.min_pair_agreement}, "
            f"heldout_fraction={settings.heldout_fraction}); "
            "rank more completions or lower those settings"
        )
    trainer = DPOTrainer(
        core,
        tokenizer,
        beta=float(settings.beta),
        lr=float(settings.lr),
        batch_size=int(settings.batch_size),
        max_tokens=int(settings.max_tokens),
    )
    with stage("eval_before", seconds):
        before = evaluate_policy(core, tokenizer, *scoring)
        heldout_before = trainer.evaluate(heldout_pairs) if heldout_pairs else {}
    logger.log(before.metrics("eval/before/"), 0)
    with stage("dpo", seconds):
        budget = settings.get("max_seconds")
        trainer.train(train_pairs, int(settings.epochs), seed, logger, progress, budget)
    with stage("eval_after", seconds):
        after = evaluate_policy(core, tokenizer, *scoring)
        heldout_after = trainer.evaluate(heldout_pairs) if heldout_pairs else {}
    logger.log(after.metrics("eval/after/"), trainer.steps)
    metrics = {
        **{f"dpo/heldout_before/{k}": v for k, v in heldout_before.items()},
        **{f"dpo/heldout_after/{k}": v for k, v in heldout_after.items()},
        "dpo/train_pairs": len(train_pairs),
        "dpo/heldout_pairs": len(heldout_pairs),
        "dpo/steps": trainer.steps,
    }
    return {"before": before, "after": after, "trainer": trainer, "metrics": metrics}


def heldout_line(metrics: dict[str, Any]) -> str | None:
    """The held-out pairs' accuracy and loss before and after, for a report (None without them)."""
    if not metrics["dpo/heldout_pairs"]:
        return None
    before, after = "dpo/heldout_before/", "dpo/heldout_after/"
    return (
        f"held-out pairs ({metrics['dpo/heldout_pairs']}): implicit-reward accuracy "
        f"{metrics[before + 'accuracy']:.3f} -> {metrics[after + 'accuracy']:.3f}, "
        f"loss {metrics[before + 'loss']:.3f} -> {metrics[after + 'loss']:.3f}"
    )


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Load the rankings, evaluate the base policy, train with DPO, evaluate again; saves the
    adapters (``adapter/``), ``metrics.json`` and ``report.txt`` in ``run_dir``."""
    from agents.rlhf import format_comparison, format_seconds, labeler_score_fn
    from agents.train import resolve_device, seed_everything, write_metrics, write_text
    from rlenv.feedback.collect import resolve_labeler_kind, select_prompts
    from rlenv.feedback.rankings import load_rankings

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    seed_everything(int(cfg.seed))
    torch.set_num_threads(int(cfg.torch_threads))
    device = resolve_device(cfg.device)
    records = load_rankings(cfg.data)
    core, tokenizer = policy_core(cfg.model, cfg.lora, device)
    logger = instantiate(cfg.logger, log_dir=str(run_dir))
    task = cfg.task.prompts
    kind = resolve_labeler_kind(cfg.labeler, task if isinstance(task, str) else None)
    labeler = labeler_score_fn(kind)
    reward = _reward_fn(cfg, device) or labeler  # without a reward model, its row repeats the labeler's
    source = task if isinstance(task, str) else OmegaConf.to_container(task)
    heldout = select_prompts(source, "heldout", int(cfg.evaluation.num_prompts))
    seconds: dict[str, float] = {}
    try:
        result = train_and_evaluate(
            core,
            tokenizer,
            records,
            cfg.dpo,
            (heldout, reward, labeler, cfg.evaluation),
            logger,
            int(cfg.seed),
            bool(cfg.progress),
            seconds,
        )
        core.lm.save_pretrained(str(run_dir / "adapter"))
        before, after = result["before"], result["after"]
        metrics: dict[str, Any] = {
            **before.metrics("eval/before/"),
            **after.metrics("eval/after/"),
            **result["metrics"],
            **{f"perf/seconds/{k}": v for k, v in seconds.items()},
        }
        write_metrics(run_dir / "metrics.json", metrics)
        settings = cfg.dpo
        title = (
            f"DPO, {metrics['dpo/train_pairs']} pairs x {int(settings.epochs)} epochs, "
            f"beta {float(settings.beta):g}"
        )
        lines = format_comparison(title, before, after, int(cfg.evaluation.num_samples), kind == "toxicity")
        lines += [line for line in (heldout_line(metrics), format_seconds(seconds)) if line]
        report = "\n".join(lines)
        write_text(run_dir / "report.txt", report + "\n")
        print(report)
    finally:
        logger.close()
    return metrics


def _reward_fn(cfg: DictConfig, device: torch.device) -> Any:
    """A saved reward model's score (``reward_model.path``), else ``None``."""
    path = cfg.get("reward_model", {}).get("path")
    if not path:
        return None
    from rlenv.reward.model import RewardModel
    from rlenv.reward.scoring import RewardModelReward

    return RewardModelReward(RewardModel.load(path, device=device))


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="dpo")
def _main(cfg: DictConfig) -> float:
    metrics = run(cfg, HydraConfig.get().runtime.output_dir)
    return float(metrics["eval/after/labeler_score"])


def main() -> None:
    """The command line entry point (``python -m agents.dpo``, ``rlenv-dpo``)."""
    from agents.run.jobs import prepare_command_line

    prepare_command_line()
    _main()


if __name__ == "__main__":
    main()
