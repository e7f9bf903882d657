"""Sample completions from a trained policy or an exported model.

    python -m agents.sample run=<run dir or exported model dir> prompt="The film was" [num_samples=4]
        [temperature=1.0 top_p=1.0 max_new_tokens=32 seed=0]

``run`` is a run directory of a text run or of ``agents.dpo`` (the policy with its adapter),
or a model directory written by ``agents.export format=merged`` (loaded with
``AutoModelForCausalLM``, no remote code). Each completion is printed on its own line after
the prompt.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig


def load_model(run: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """(causal LM, tokenizer) of a run directory or an exported model directory."""
    from rlenv.text.tokenizers import load_tokenizer

    path = Path(run)
    if (path / "config.json").is_file() and not (path / "checkpoints").exists():
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(path), trust_remote_code=False).to(device)
        return model.eval(), load_tokenizer(str(path))
    from agents.export import load_policy

    core, name, _ = load_policy(path, device)
    return core.policy_lm.eval(), load_tokenizer(name)


def sample(
    run: str | Path,
    prompt: str,
    num_samples: int = 4,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
    seed: int = 0,
    device: str = "cpu",
) -> list[str]:
    """``num_samples`` sampled completions of ``prompt``."""
    from rlenv.feedback.generate import sample_completions

    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    model, tokenizer = load_model(run, device)
    batches = sample_completions(
        model,
        tokenizer,
        [prompt] * num_samples,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
    )
    return [text for batch in batches for text in batch.completions]


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="sample")
def _main(cfg: DictConfig) -> None:
    completions = sample(
        cfg.run,
        str(cfg.prompt),
        int(cfg.num_samples),
        temperature=float(cfg.temperature),
        top_p=float(cfg.top_p),
        max_new_tokens=int(cfg.max_new_tokens),
        seed=int(cfg.seed),
        device=str(cfg.device),
    )
    for text in completions:
        print(f"{cfg.prompt}{text}")
    sys.stdout.flush()


def main() -> None:
    """The command line entry point (``python -m agents.sample``, ``rlenv-sample``)."""
    _main()


if __name__ == "__main__":
    main()
