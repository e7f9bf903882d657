"""Train a reward model on ranked completions.

Rankings are split into train and validation sets *by prompt* (no prompt on
both sides), expanded into preferred-first pairs, and the model minimises
``-log σ(r_chosen - r_rejected)``. After every epoch the held-out pairwise
accuracy (fraction of validation pairs with ``r_chosen > r_rejected``) is
measured and the best model kept.

Command line (Hydra; every field of :class:`RewardTrainConfig` can be set)::

    python -m rlenv.reward.train data=rankings.jsonl epochs=3 lr=2e-5 encoder=minilm

The run directory receives the best model (``reward_model/``), TensorBoard
events and ``metrics.json``.
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
from omegaconf import MISSING
from torch import Tensor

from rlenv.feedback.pairs import FlaggedPolicy, Pair, records_to_pairs, split_by_prompt
from rlenv.feedback.rankings import RankingRecord, load_rankings
from rlenv.reward.loss import bradley_terry_loss, pairwise_accuracy
from rlenv.reward.model import RewardModel

LogFn = Callable[[str, float, int], None]


def split_pairs(
    data: Sequence[RankingRecord] | Sequence[Pair],
    val_fraction: float,
    seed: int,
    flagged_policy: FlaggedPolicy = "last",
    min_agreement: float | None = None,
) -> tuple[list[Pair], list[Pair]]:
    """Train and validation pairs, split by prompt, from records or ready-made pairs."""
    train, val = split_by_prompt(list(data), val_fraction, seed)
    if all(isinstance(item, Pair) for item in data):
        return train, val  # type: ignore[return-value]
    return (
        records_to_pairs(train, flagged_policy, min_agreement),  # type: ignore[arg-type]
        records_to_pairs(val, flagged_policy, min_agreement),  # type: ignore[arg-type]
    )


def pair_rewards(model: RewardModel, pairs: Sequence[Pair]) -> tuple[Tensor, Tensor]:
    """Differentiable rewards of chosen and rejected completions, one forward pass.

    Shapes: returns ``r_chosen`` (B,), ``r_rejected`` (B,).
    """
    prompts = [p.prompt for p in pairs]
    rewards = model.reward(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    return rewards[: len(pairs)], rewards[len(pairs) :]


def evaluate_pairs(model: RewardModel, pairs: Sequence[Pair], batch_size: int = 32) -> dict[str, float]:
    """Bradley-Terry loss and pairwise accuracy of the model on ``pairs`` (nan if empty)."""
    if not pairs:
        return {"loss": math.nan, "accuracy": math.nan}
    prompts = [p.prompt for p in pairs]
    r_chosen = model.score(prompts, [p.chosen for p in pairs], batch_size)
    r_rejected = model.score(prompts, [p.rejected for p in pairs], batch_size)
    return {
        "loss": bradley_terry_loss(r_chosen, r_rejected).item(),
        "accuracy": pairwise_accuracy(r_chosen, r_rejected).item(),
    }


def _train_epoch(
    model: RewardModel,
    optimizer: torch.optim.Optimizer,
    pairs: Sequence[Pair],
    batch_size: int,
    generator: torch.Generator,
    step: int,
    log: LogFn,
    bar: Any,
    max_grad_norm: float | None,
) -> tuple[dict[str, float], int]:
    model.train()
    order = torch.randperm(len(pairs), generator=generator).tolist()
    total_loss = total_correct = 0.0
    for start in range(0, len(order), batch_size):
        batch = [pairs[i] for i in order[start : start + batch_size]]
        r_chosen, r_rejected = pair_rewards(model, batch)
        loss = bradley_terry_loss(r_chosen, r_rejected)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        step += 1
        total_loss += loss.item() * len(batch)
        total_correct += pairwise_accuracy(r_chosen.detach(), r_rejected.detach()).item() * len(batch)
        log("loss/reward_bt", loss.item(), step)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return {"loss": total_loss / len(pairs), "accuracy": total_correct / len(pairs)}, step


def _is_better(val: dict[str, float], best: dict[str, float] | None) -> bool:
    if best is None or math.isnan(val["accuracy"]):
        return True
    return (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"])


def train_reward_model(
    data: Sequence[RankingRecord] | Sequence[Pair],
    model: RewardModel,
    *,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    val_fraction: float = 0.1,
    seed: int = 0,
    flagged_policy: FlaggedPolicy = "last",
    min_agreement: float | None = None,
    log: LogFn | None = None,
    save_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train ``model`` with AdamW on preference pairs; the model ends with the best weights.

    Logs ``loss/reward_bt`` per step and, per epoch (step 0 = before training),
    ``eval/reward_val_loss``, ``eval/reward_val_accuracy``, ``charts/reward_train_loss``,
    ``charts/reward_train_accuracy`` through ``log(name, value, step)``. The best epoch
    (highest validation accuracy, then lowest validation loss; the last epoch without
    validation data) is written to ``save_dir`` when given.

    Returns:
        The best epoch's metrics plus ``best_epoch``, ``num_train_pairs``,
        ``num_val_pairs``, ``perf/pairs_per_s``.
    """
    from tqdm.auto import tqdm

    log = log or (lambda name, value, step: None)
    train_pairs, val_pairs = split_pairs(data, val_fraction, seed, flagged_policy, min_agreement)
    if not train_pairs:
        raise ValueError(
            f"no training pairs from {len(data)} item(s): all tied, flagged away or in validation"
        )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    val = evaluate_pairs(model, val_pairs, batch_size)
    log("eval/reward_val_loss", val["loss"], 0)
    log("eval/reward_val_accuracy", val["accuracy"], 0)
    best: dict[str, float] | None = None
    best_state: dict[str, Tensor] = {}
    step, started = 0, time.perf_counter()
    batches = epochs * math.ceil(len(train_pairs) / batch_size)
    with tqdm(total=batches, desc="reward model", disable=not progress) as bar:
        for epoch in range(1, epochs + 1):
            train, step = _train_epoch(
                model, optimizer, train_pairs, batch_size, generator, step, log, bar, max_grad_norm
            )
            val = evaluate_pairs(model, val_pairs, batch_size)
            for name, value in (
                ("charts/reward_train_loss", train["loss"]),
                ("charts/reward_train_accuracy", train["accuracy"]),
                ("eval/reward_val_loss", val["loss"]),
                ("eval/reward_val_accuracy", val["accuracy"]),
            ):
                log(name, value, step)
            if _is_better(val, best):
                best = {**val, "epoch": epoch, "train_loss": train["loss"]}
                best_state = copy.deepcopy(model.state_dict())
                if save_dir is not None:
                    model.save(save_dir)
    model.load_state_dict(best_state)
    assert best is not None
    elapsed = time.perf_counter() - started
    return {
        "eval/reward_val_loss": best["loss"],
        "eval/reward_val_accuracy": best["accuracy"],
        "charts/reward_train_loss": best["train_loss"],
        "best_epoch": best["epoch"],
        "num_train_pairs": len(train_pairs),
        "num_val_pairs": len(val_pairs),
        "perf/pairs_per_s": epochs * len(train_pairs) / max(elapsed, 1e-9),
    }


@dataclass
class RewardTrainConfig:
    """Settings of ``python -m rlenv.reward.train``."""

    data: str = MISSING
    encoder: str = "minilm"
    max_length: int = 256
    out_dir: str = "reward_model"
    epochs: int = 3
    batch_size: int = 16
    lr: float = 2e-5
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    val_fraction: float = 0.1
    seed: int = 0
    flagged_policy: str = "last"
    min_agreement: float | None = None
    skip_invalid: bool = False
    device: str = "cpu"
    num_threads: int = 1
    progress: bool = True


def build_model(encoder: str, max_length: int, seed: int) -> RewardModel:
    """``"tiny"`` (random, for smoke runs), an encoder alias such as ``"minilm"``, or a directory."""
    if encoder == "tiny":
        from rlenv.reward.tiny import tiny_reward_model

        return tiny_reward_model(max_length=min(max_length, 512), seed=seed)
    torch.manual_seed(seed)
    return RewardModel.from_pretrained_encoder(encoder, max_length)


def _tensorboard_log(run_dir: Path) -> tuple[LogFn, Callable[[], None]]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return (lambda name, value, step: None), (lambda: None)
    writer = SummaryWriter(str(run_dir))
    return (lambda name, value, step: writer.add_scalar(name, value, step)), writer.close


def run(cfg: RewardTrainConfig, run_dir: str | Path, log: LogFn | None = None) -> dict[str, float]:
    """Load rankings, train, and write ``<run_dir>/<out_dir>`` and ``<run_dir>/metrics.json``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.num_threads)
    records = load_rankings(cfg.data, skip_invalid=cfg.skip_invalid)
    model = build_model(cfg.encoder, cfg.max_length, cfg.seed).to(cfg.device)
    close: Callable[[], None] = lambda: None  # noqa: E731
    if log is None:
        log, close = _tensorboard_log(run_dir)
    try:
        metrics = train_reward_model(
            records,
            model,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            val_fraction=cfg.val_fraction,
            seed=cfg.seed,
            flagged_policy=cfg.flagged_policy,  # type: ignore[arg-type]
            min_agreement=cfg.min_agreement,
            log=log,
            save_dir=run_dir / cfg.out_dir,
            progress=cfg.progress,
        )
    finally:
        close()
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return metrics


def _hydra_main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import to_absolute_path
    from omegaconf import DictConfig, OmegaConf

    ConfigStore.instance().store(name="reward_train", node=RewardTrainConfig)

    @hydra.main(version_base="1.3", config_path=None, config_name="reward_train")
    def main(cfg: DictConfig) -> float:
        settings = RewardTrainConfig(**OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        settings.data = to_absolute_path(settings.data)
        metrics = run(settings, HydraConfig.get().runtime.output_dir)
        print(json.dumps(metrics, indent=2))
        return metrics["eval/reward_val_accuracy"]

    main()


if __name__ == "__main__":
    _hydra_main()
