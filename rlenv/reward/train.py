"""Train a reward model on ranked completions.

Rankings are split into train and validation sets *by prompt* (no prompt on
both sides), expanded into preferred-first pairs from each record's consensus,
and the model minimises ``-log σ(r_chosen - r_rejected)``. After every epoch
the held-out pairwise accuracy (fraction of validation pairs with ``r_chosen >
r_rejected``) is measured and the best model kept; it is then calibrated
(:meth:`rlenv.reward.model.RewardModel.calibrate`) on the training completions.

Noisy labelers make near-ties coin flips: two completions whose true scores
differ by less than the labelers' noise are ordered at random, and no model can
predict that order. ``min_pair_agreement=1.0`` trains and selects on the pairs
every labeler ordered the same way; ``reward_model/val_accuracy_all`` still
reports the accuracy on every held-out consensus pair, next to the labelers'
own agreement (``reward_model/labeler_agreement``: how often two labelers order
a held-out pair the same way).

Command line (Hydra; settings in ``conf/reward_train.yaml``)::

    python -m rlenv.reward.train data=rankings.jsonl epochs=4 lr=2e-4 encoder=minilm

The run directory receives the best model (``reward_model/``, safetensors),
TensorBoard events (through ``rlenv.logger.TensorBoardLogger``) and ``metrics.json``.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rlenv.feedback.pairs import FlaggedPolicy, Pair
from rlenv.feedback.rankings import RankingRecord, load_rankings
from rlenv.reward.loss import bradley_terry_loss, pairwise_accuracy
from rlenv.reward.model import RewardModel
from rlenv.reward.pair_data import (
    PairData,
    ScoreFn,
    evaluate_pairs,
    labeler_agreement,
    pair_rewards,
    prompt_batches,
    split_pairs,
)

LogFn = Callable[[str, float, int], None]
NS = "reward_model/"


@dataclass
class _Step:
    reward: ScoreFn
    score: ScoreFn
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LRScheduler
    max_grad_norm: float | None
    log: LogFn
    bar: Any
    count: int = 0


def _train_epoch(
    model: RewardModel, pairs: Sequence[Pair], batch_size: int, generator: torch.Generator, step: _Step
) -> dict[str, float]:
    model.train()
    total_loss = total_correct = 0.0
    trainable = [p for p in model.parameters() if p.requires_grad]
    for indices in prompt_batches(pairs, batch_size, generator):
        batch = [pairs[i] for i in indices]
        r_chosen, r_rejected = pair_rewards(step.reward, batch)
        loss = bradley_terry_loss(r_chosen, r_rejected)
        step.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if step.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(trainable, step.max_grad_norm)
        step.optimizer.step()
        step.schedule.step()
        step.count += 1
        total_loss += loss.item() * len(batch)
        total_correct += pairwise_accuracy(r_chosen.detach(), r_rejected.detach()).item() * len(batch)
        step.log(NS + "loss", loss.item(), step.count)
        step.bar.update(1)
        step.bar.set_postfix(loss=f"{loss.item():.3f}")
    return {"loss": total_loss / len(pairs), "accuracy": total_correct / len(pairs)}


def _is_better(val: dict[str, float], best: dict[str, float] | None) -> bool:
    if best is None or math.isnan(val["accuracy"]):
        return True
    return (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"])


def _reward_functions(
    model: RewardModel, cached_layers: int | None, batch_size: int
) -> tuple[ScoreFn, ScoreFn]:
    """Training rewards (with gradients) and raw scores (without), through a feature cache if asked."""
    if cached_layers is None:
        return model.reward, lambda p, c: model.score(p, c, batch_size, calibrated=False)
    from rlenv.reward.features import FrozenFeatureCache

    cache = FrozenFeatureCache(model, cached_layers, batch_size=2 * batch_size)
    return cache.rewards, cache.score


def linear_schedule(optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float) -> Any:
    """Learning rate rising linearly over the first ``warmup_fraction`` of steps, then decaying to 0."""
    warmup = max(1, round(warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _epochs(model: RewardModel, data: PairData, settings: dict[str, Any], step: _Step) -> dict[str, Any]:
    """Train for ``epochs``, keeping the best weights; returns the best epoch's metrics."""
    batch_size, log = settings["batch_size"], step.log
    generator = torch.Generator().manual_seed(settings["seed"])
    best: dict[str, Any] | None = None
    best_state: dict[str, Tensor] = {}
    for epoch in range(1, settings["epochs"] + 1):
        train = _train_epoch(model, data.train, batch_size, generator, step)
        val = evaluate_pairs(model, data.val, batch_size, step.score)
        val_all = evaluate_pairs(model, data.val_all, batch_size, step.score)
        for name, value in (
            ("train_loss", train["loss"]),
            ("train_accuracy", train["accuracy"]),
            ("val_loss", val["loss"]),
            ("val_accuracy", val["accuracy"]),
            ("val_accuracy_all", val_all["accuracy"]),
        ):
            log(NS + name, value, step.count)
        if _is_better(val, best):
            best = {**val, "accuracy_all": val_all["accuracy"], "epoch": epoch, "train_loss": train["loss"]}
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    assert best is not None
    return best


def train_reward_model(
    data: Sequence[RankingRecord] | Sequence[Pair],
    model: RewardModel,
    *,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    weight_decay: float = 0.0,
    warmup_fraction: float = 0.1,
    max_grad_norm: float | None = 1.0,
    trainable_layers: int | None = None,
    cache_features: bool = True,
    val_fraction: float = 0.1,
    seed: int = 0,
    flagged_policy: FlaggedPolicy = "last",
    min_agreement: float | None = None,
    min_pair_agreement: float | None = None,
    val_data: Sequence[RankingRecord] | Sequence[Pair] | None = None,
    require_validation: bool = True,
    log: LogFn | None = None,
    save_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``model`` with AdamW on preference pairs; the model ends with the best, calibrated weights.

    Logs through ``log(name, value, step)``: ``reward_model/loss`` per step and, per epoch
    (step = optimizer steps; step 0 = before training), ``reward_model/{train,val}_{loss,accuracy}``
    and ``reward_model/val_accuracy_all``. The best epoch (highest validation accuracy,
    then lowest validation loss; the last one without validation data) is kept, calibrated
    on the training completions and written to ``save_dir`` when given.

    ``val_data``: held-out records given explicitly (then every record of ``data`` trains and
    ``val_fraction`` is unused); no prompt may be in both.

    ``require_validation``: with no validation pair (too few prompts for ``val_fraction``,
    or every held-out pair tied or filtered away) training raises ``ValueError`` saying
    why and what to change. ``False`` trains anyway: the last epoch is kept and the
    validation metrics are left out of the logs and of the result (never ``nan``).

    ``trainable_layers``: train only the head and the top N encoder layers; with
    ``cache_features`` the frozen layers' output is computed once per completion
    (:class:`rlenv.reward.features.FrozenFeatureCache`) and each epoch runs the top only.

    Returns:
        ``reward_model/``: ``val_accuracy``, ``val_loss``, ``val_accuracy_all``,
        ``train_loss``, ``best_epoch``, ``num_train_pairs``, ``num_val_pairs``,
        ``num_val_pairs_all``, ``score_mean``, ``score_std``, ``labeler_agreement`` and
        ``labeler_vs_consensus`` (when held-out records have several labelers); and
        ``perf/reward_pairs_per_s``. No value is ``nan``.
    """
    from tqdm.auto import tqdm

    log = _skip_nan(log or (lambda name, value, step: None))
    pairs = split_pairs(data, val_fraction, seed, flagged_policy, min_agreement, min_pair_agreement, val_data)
    if not pairs.train:
        raise ValueError(
            f"no training pairs from {len(data)} item(s): all tied, filtered, flagged away or in validation"
        )
    if not pairs.val and require_validation:
        raise ValueError(no_validation_message(data, pairs, val_fraction, val_data, training=True))
    model.set_trainable_layers(trainable_layers)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)
    total = epochs * len(prompt_batches(pairs.train, batch_size, torch.Generator()))
    reward, score = _reward_functions(model, trainable_layers if cache_features else None, batch_size)
    started = time.perf_counter()
    val = evaluate_pairs(model, pairs.val, batch_size, score)
    log(NS + "val_loss", val["loss"], 0)
    log(NS + "val_accuracy", val["accuracy"], 0)
    with tqdm(total=total, desc="reward model", disable=not progress) as bar:
        schedule = linear_schedule(optimizer, total, warmup_fraction)
        step = _Step(reward, score, optimizer, schedule, max_grad_norm, log, bar)
        settings = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
        best = _epochs(model, pairs, settings, step)
    unique = list(dict.fromkeys((p.prompt, c) for p in pairs.train for c in (p.chosen, p.rejected)))
    prompts, completions = [p for p, _ in unique], [c for _, c in unique]
    model.calibrate(prompts, completions, batch_size, raw_scores=score(prompts, completions))
    elapsed = time.perf_counter() - started
    model.requires_grad_(True)
    if save_dir is not None:
        model.save(save_dir)
    return _final_metrics(
        model,
        pairs,
        best,
        labeler_agreement(pairs.val_records, flagged_policy),
        epochs * len(pairs.train) / max(elapsed, 1e-9),
    )


def _skip_nan(log: LogFn) -> LogFn:
    """``log`` that drops ``nan`` values (validation metrics without validation pairs)."""

    def logged(name: str, value: float, step: int) -> None:
        if not math.isnan(value):
            log(name, value, step)

    return logged


def no_validation_message(
    data: Sequence[RankingRecord] | Sequence[Pair],
    pairs: PairData,
    val_fraction: float,
    val_data: Sequence[RankingRecord] | Sequence[Pair] | None,
    training: bool,
) -> str:
    """Why a split has no validation pair, and what to change (for the ``ValueError``)."""
    kind = "pair(s)" if data and isinstance(data[0], Pair) else "record(s)"
    prompts = len({item.prompt for item in data})
    purpose = "measure val_accuracy and keep the best epoch" if training else "measure val_accuracy"
    text = (
        f"no validation pairs: {len(data)} {kind} with {prompts} distinct prompt(s) give "
        f"{len(pairs.train)} training pair(s) and 0 validation pairs; at least 1 validation pair "
        f"is needed to {purpose}. "
    )
    held_out = len(val_data) if val_data is not None else len(pairs.val_records)
    source = (
        f"The {held_out} item(s) of val_data"
        if val_data is not None
        else f"The {held_out} held-out record(s)"
    )
    advice = ["add more ranked prompts", "give explicit validation data (val_data=<rankings file>)"]
    if pairs.val_all:
        text += (
            f"{source} give {len(pairs.val_all)} pair(s), all dropped by min_agreement / min_pair_agreement."
        )
        advice.insert(0, "loosen min_pair_agreement / min_agreement")
    elif held_out:
        text += f"{source} give no pair: their (consensus) ranks tie every completion or flag it away."
    elif val_fraction <= 0:
        text += "val_fraction=0 holds out no prompt."
        advice.insert(0, "set val_fraction > 0 (e.g. 0.2)")
    else:
        text += f"val_fraction={val_fraction} holds out no prompt of {prompts}: a split needs 2 or more."
        advice.insert(1, "a larger val_fraction once there are more prompts")
    if training:
        advice.append("pass require_validation=False to train without validation (the last epoch is kept)")
    return text + " To fix: " + "; or ".join(advice) + "."


def _final_metrics(
    model: RewardModel, pairs: PairData, best: dict[str, Any], agreement: dict[str, float], pairs_per_s: float
) -> dict[str, float]:
    metrics = {
        NS + "val_accuracy": best["accuracy"],
        NS + "val_loss": best["loss"],
        NS + "val_accuracy_all": best["accuracy_all"],
        NS + "train_loss": best["train_loss"],
        NS + "best_epoch": best["epoch"],
        NS + "num_train_pairs": len(pairs.train),
        NS + "num_val_pairs": len(pairs.val),
        NS + "num_val_pairs_all": len(pairs.val_all),
        **{NS + name: value for name, value in agreement.items() if not math.isnan(value)},
        NS + "score_mean": model.score_mean,
        NS + "score_std": model.score_std,
        "perf/reward_pairs_per_s": pairs_per_s,
    }
    return {name: value for name, value in metrics.items() if not math.isnan(value)}


def evaluate_reward_model(
    model: RewardModel,
    data: Sequence[RankingRecord],
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    flagged_policy: FlaggedPolicy = "last",
    min_agreement: float | None = None,
    min_pair_agreement: float | None = None,
    val_data: Sequence[RankingRecord] | None = None,
    batch_size: int = 32,
) -> dict[str, float]:
    """Accuracy of a trained model on the validation split of ``data`` (same split as training).

    The split depends only on the prompts, ``val_fraction`` and ``seed``, so for a model trained
    by :func:`train_reward_model` on the same rankings with the same settings these pairs are
    held out. Keys as :func:`train_reward_model` returns them (without the training ones).
    A split without validation pairs raises ``ValueError`` (nothing to measure).
    """
    pairs = split_pairs(data, val_fraction, seed, flagged_policy, min_agreement, min_pair_agreement, val_data)
    if not pairs.val:
        raise ValueError(no_validation_message(data, pairs, val_fraction, val_data, training=False))
    val = evaluate_pairs(model, pairs.val, batch_size)
    val_all = evaluate_pairs(model, pairs.val_all, batch_size)
    agreement = labeler_agreement(pairs.val_records, flagged_policy)
    return {
        NS + "val_accuracy": val["accuracy"],
        NS + "val_loss": val["loss"],
        NS + "val_accuracy_all": val_all["accuracy"],
        NS + "num_val_pairs": len(pairs.val),
        NS + "num_val_pairs_all": len(pairs.val_all),
        **{NS + name: value for name, value in agreement.items() if not math.isnan(value)},
        NS + "score_mean": model.score_mean,
        NS + "score_std": model.score_std,
    }


@dataclass
class RewardTrainConfig:
    """Settings of ``python -m rlenv.reward.train`` (the defaults are ``conf/reward_train.yaml``'s)."""

    data: str = "???"
    val_data: str | None = None
    encoder: str = "minilm"
    max_length: int = 64
    pooling: str = "completion"
    out_dir: str = "reward_model"
    epochs: int = 4
    batch_size: int = 16
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    trainable_layers: int | None = 4
    cache_features: bool = True
    val_fraction: float = 0.15
    seed: int = 0
    flagged_policy: str = "last"
    min_agreement: float | None = None
    min_pair_agreement: float | None = 1.0
    skip_invalid: bool = False
    device: str = "cpu"
    num_threads: int = 2
    progress: bool = True

    def split_options(self) -> dict[str, Any]:
        """The settings that decide the train/validation pairs (for :func:`evaluate_reward_model`)."""
        return {
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "flagged_policy": self.flagged_policy,
            "min_agreement": self.min_agreement,
            "min_pair_agreement": self.min_pair_agreement,
        }


def build_model(encoder: str, max_length: int, seed: int, pooling: str = "mean") -> RewardModel:
    """``"tiny"`` (random, for smoke runs), an encoder alias such as ``"minilm"``, or a directory."""
    if encoder == "tiny":
        from rlenv.reward.tiny import tiny_reward_model

        return tiny_reward_model(max_length=min(max_length, 512), pooling=pooling, seed=seed)
    torch.manual_seed(seed)
    return RewardModel.from_pretrained_encoder(encoder, max_length, pooling)


def fit(
    cfg: RewardTrainConfig,
    data: Sequence[RankingRecord],
    save_dir: Path,
    log: LogFn,
    val_data: Sequence[RankingRecord] | None = None,
) -> tuple[RewardModel, dict[str, float]]:
    """Build the model ``cfg`` names and train it on ``data``; returns it (saved to ``save_dir``)
    and its metrics. The training part of :func:`run` and of the RLHF pipeline."""
    model = build_model(cfg.encoder, cfg.max_length, cfg.seed, cfg.pooling).to(cfg.device)
    metrics = train_reward_model(
        data,
        model,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        warmup_fraction=cfg.warmup_fraction,
        max_grad_norm=cfg.max_grad_norm,
        trainable_layers=cfg.trainable_layers,
        cache_features=cfg.cache_features,
        **cfg.split_options(),
        val_data=val_data,
        log=log,
        save_dir=save_dir,
        progress=cfg.progress,
    )
    return model, metrics


def run(cfg: RewardTrainConfig, run_dir: str | Path, logger: Any = None) -> dict[str, float]:
    """Load rankings, train, and write ``<run_dir>/<out_dir>``, TensorBoard events and ``metrics.json``.

    ``logger``: anything with ``log(metrics, step)`` (default: an ``rlenv.logger.TensorBoardLogger``
    on ``run_dir``, closed at the end).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    records = load_rankings(cfg.data, skip_invalid=cfg.skip_invalid)
    val_records = None if cfg.val_data is None else load_rankings(cfg.val_data, skip_invalid=cfg.skip_invalid)
    owned = logger is None
    if owned:
        from rlenv.logger import TensorBoardLogger

        logger = TensorBoardLogger(run_dir)
    try:
        _, metrics = fit(
            cfg,
            records,
            run_dir / cfg.out_dir,
            lambda name, value, step: logger.log({name: value}, step),
            val_records,
        )
        logger.log(metrics, 0)
    finally:
        if owned:
            logger.close()
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def main() -> None:
    """Console entry point (``rlenv-reward``): the Hydra app over ``conf/reward_train.yaml``."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path="pkg://conf", config_name="reward_train")
    def app(cfg: DictConfig) -> float:
        settings = RewardTrainConfig(**OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        settings.data = to_absolute_path(settings.data)
        if settings.val_data is not None:
            settings.val_data = to_absolute_path(settings.val_data)
        metrics = run(settings, HydraConfig.get().runtime.output_dir)
        print(json.dumps(metrics, indent=2))
        return metrics[NS + "val_accuracy"]

    app()


if __name__ == "__main__":
    main()
