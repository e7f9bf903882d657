"""Export a trained language-model policy out of its run directory.

    python -m agents.export run=<dir> format=merged out=<dir>    # a Hugging Face model directory
    python -m agents.export run=<dir> format=peft out=<dir>      # the LoRA adapter alone
    python -m agents.export run=<dir> quantize=int8 prune=0.3 out=<dir>   # compressed, see below

``run`` is a run directory of ``agents.train`` or ``agents.rlhf`` (its checkpoint) or of
``agents.dpo`` (its ``adapter/``). ``format=peft`` writes the adapter as a PEFT directory
(``adapter_config.json``, ``adapter_model.safetensors``) that
``PeftModel.from_pretrained(base, out)`` loads onto the base model. ``format=merged`` merges
the adapter into the base weights and writes a Hugging Face model directory (safetensors
weights, config, tokenizer and a ``README.md`` model card with the run's config and
evaluation numbers) that ``AutoModelForCausalLM.from_pretrained(out)`` loads without remote
code. ``run`` may also be a model directory (an earlier export, a student of
``agents.distill``), to compress it.

``prune=<fraction>`` zeroes that fraction of each linear weight matrix of the merged model,
the entries of smallest magnitude; ``quantize=int8`` stores its linear weights as int8 with a
scale per row (:mod:`rlenv.text.compress`): such a directory is loaded by
``rlenv.text.models.load_causal_lm(out)`` (so by ``agents.sample``, ``model=<out>`` and
``teacher=<out>``) with its weights dequantized, or by ``rlenv.text.compress.load_int8(out,
kernels=True)`` with int8 matrix products. The output head and the embeddings stay in float.

The export is written to a temporary directory beside ``out`` and renamed into place, so an
interrupted export leaves nothing half-written; a non-empty ``out`` is refused unless
``overwrite=true``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
FORMATS = ("peft", "merged")
QUANTIZATIONS = ("none", "int8")


class ExportError(ValueError):
    """A run that cannot be exported, or an output directory that would be overwritten."""


def load_policy(run: str | Path, device: str = "cpu") -> tuple[Any, str, dict[str, Any]]:
    """The run's policy core (:class:`agents.networks.lm_core.CausalLMCore`), its model name and
    the run's config (empty when it has none)."""
    run = Path(run)
    if not run.is_dir():
        raise ExportError(f"run={str(run)!r} is not a run directory")
    config = _run_config(run)
    adapter = run / "adapter"
    if (adapter / "adapter_config.json").is_file() and not (run / "checkpoints").exists():
        return _core_from_adapter(adapter, config, device), _model_name(config, run), config
    from agents import load_agent

    agent = load_agent(run, device=device)
    core = getattr(getattr(agent, "network", None), "core", None)
    if core is None or not hasattr(core, "policy_lm"):
        network = type(getattr(agent, "network", None)).__name__
        raise ExportError(
            f"run={str(run)!r} holds a {type(agent).__name__} with a {network} network, not a "
            "language-model policy; export takes runs of the text env (env=text) or of agents.dpo"
        )
    name = getattr(agent, "model_name", None) or _model_name(config, run)
    return core, name, config


def _run_config(run: Path) -> dict[str, Any]:
    for path in (run / "config.yaml", run / ".hydra" / "config.yaml"):
        if path.is_file():
            loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
            return loaded if isinstance(loaded, dict) else {}
    return {}


def _model_name(config: dict[str, Any], run: Path) -> str:
    env = config.get("env") if isinstance(config.get("env"), dict) else {}
    name = config.get("model") or env.get("model")
    if not isinstance(name, str):
        raise ExportError(f"run={str(run)!r} has no config.yaml naming its model (model or env.model)")
    return name


def _core_from_adapter(adapter: Path, config: dict[str, Any], device: str) -> Any:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from agents.dpo import policy_core
    from agents.train import resolve_device

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise ExportError(f"{str(adapter)!r} has no adapter_model.safetensors")
    name = _model_name(config, adapter.parent)
    core, _ = policy_core(name, config.get("lora"), resolve_device(device))
    result = set_peft_model_state_dict(core.lm, load_file(str(weights)))
    if getattr(result, "unexpected_keys", None):
        raise ExportError(f"{str(weights)!r} does not fit the run's model: {result.unexpected_keys[:3]}")
    return core


def model_card(
    name: str, config: dict[str, Any], metrics: dict[str, Any], compression: dict[str, Any] | None = None
) -> str:
    """A README.md for the exported model: its base, how it was trained, its evaluation, and
    the compression applied at export."""
    evaluation = {k: v for k, v in metrics.items() if k.startswith(("eval/", "dpo/heldout"))}
    lines = [
        "# A policy fine-tuned with rlenv",
        "",
        f"Base model: `{name}`. Any LoRA adapter of the run is merged into the weights.",
        "",
        "## Evaluation (held-out prompts, from the run's metrics.json)",
        "",
    ]
    lines += [
        f"- `{k}`: {v:.4g}" if isinstance(v, float) else f"- `{k}`: {v}"
        for k, v in sorted(evaluation.items())
    ]
    if not evaluation:
        lines.append("- (the run recorded none)")
    lines += ["", "## Compression at export", ""] + _compression_lines(compression or {})
    lines += [
        "",
        "## The run's config",
        "",
        "```yaml",
        OmegaConf.to_yaml(OmegaConf.create(config)).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _compression_lines(compression: dict[str, Any]) -> list[str]:
    lines = []
    if compression.get("prune"):
        lines.append(
            f"- magnitude pruning of every linear layer but the head: {compression['prune']:g} of each "
            f"matrix zeroed ({compression['sparsity']:.3f} of those weights are zero)"
        )
    if compression.get("quantize") == "int8":
        lines.append(
            "- int8 linear weights (one scale per row) in `model.int8.safetensors`: load with "
            "`rlenv.text.models.load_causal_lm(<this directory>)` (dequantized), or "
            "`rlenv.text.compress.load_int8(<this directory>, kernels=True)` (int8 products)"
        )
    return lines or ["- none (float weights)"]


def export(
    run: str | Path,
    out: str | Path,
    fmt: str = "merged",
    overwrite: bool = False,
    device: str = "cpu",
    *,
    quantize: str | None = None,
    prune: float = 0.0,
) -> Path:
    """Write the run's policy to ``out`` as ``fmt``, optionally pruned and quantized (see the
    module docstring); returns ``out``."""
    quantize = "none" if quantize is None else str(quantize)
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r} is not one of {list(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize={quantize!r} is not one of {list(QUANTIZATIONS)}")
    if not isinstance(prune, (int, float)) or not 0 <= prune < 1:
        raise ExportError(f"prune={prune!r} must be a fraction in [0, 1)")
    if fmt == "peft" and (quantize != "none" or prune):
        raise ExportError("quantize and prune act on the merged weights; use format=merged")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"out={str(out)!r} exists and is not empty; choose another or set overwrite=true")
    run = Path(run)
    if is_model_dir(run):
        if fmt == "peft":
            raise ExportError(
                f"run={str(run)!r} is a model directory without a LoRA adapter; use format=merged"
            )
        model, name, config = _load_model_dir(run), str(run), _run_config(run)
    else:
        core, name, config = load_policy(run, device)
        if fmt == "peft" and not hasattr(core.lm, "peft_config"):
            raise ExportError(f"run={str(run)!r} trained every weight (no LoRA adapter); use format=merged")
        model = None if fmt == "peft" else merged_lm(core)
    with staged_directory(out) as staging:
        if model is None:
            core.lm.save_pretrained(str(staging))
        else:
            compression = compress(model, quantize, float(prune))
            _write_model(model, name, config, run, staging, compression)
    log.info("exported %s as %s to %s", run, fmt, out)
    return out


@contextlib.contextmanager
def staged_directory(out: Path) -> Iterator[Path]:
    """A temporary directory beside ``out`` to write into, renamed to ``out`` (replacing it) when
    the block ends without error and removed when it fails: ``out`` is never half-written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def is_model_dir(path: Path) -> bool:
    """A Hugging Face model directory (an export, a distilled student), not a run directory."""
    from rlenv.text.compress import is_int8_dir

    has_model = (path / "config.json").is_file() or is_int8_dir(path)
    return has_model and not (path / "checkpoints").exists() and not (path / "adapter").exists()


def _load_model_dir(path: Path) -> Any:
    from rlenv.text.compress import is_int8_dir, load_int8
    from rlenv.text.models import load_causal_lm

    return load_int8(path, kernels=False) if is_int8_dir(path) else load_causal_lm(str(path))


def merged_lm(core: Any) -> Any:
    """A plain Hugging Face model with the policy's LoRA adapters merged in (a copy)."""
    lm = copy.deepcopy(core.lm)
    return lm.merge_and_unload() if hasattr(lm, "peft_config") else lm


def compress(model: Any, quantize: str, prune: float) -> dict[str, Any]:
    """Prune ``model`` in place; returns what was done (``quantize`` applies when saving)."""
    from rlenv.text.compress import prune_linear

    done: dict[str, Any] = {"quantize": quantize}
    if prune:
        done["prune"] = prune
        done["sparsity"] = prune_linear(model, prune)
    return done


def _write_model(
    model: Any, name: str, config: dict[str, Any], run: Path, staging: Path, compression: dict[str, Any]
) -> None:
    from rlenv.text.compress import save_int8
    from rlenv.text.tokenizers import load_tokenizer

    if compression["quantize"] == "int8":
        save_int8(model, staging)
    else:
        model.save_pretrained(str(staging), safe_serialization=True)
    load_tokenizer(name).save_pretrained(str(staging))
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    (staging / "README.md").write_text(model_card(name, config, metrics, compression))


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="export")
def _main(cfg: DictConfig) -> None:
    try:
        path = export(
            cfg.run,
            cfg.out,
            str(cfg.format),
            bool(cfg.overwrite),
            str(cfg.device),
            quantize=cfg.get("quantize"),
            prune=cfg.get("prune") or 0.0,
        )
    except ExportError as error:
        print(f"export refused: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"exported to {path}")


def main() -> None:
    """The command line entry point (``python -m agents.export``, ``rlenv-export``)."""
    _main()


if __name__ == "__main__":
    main()
