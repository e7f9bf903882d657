"""Export a trained language-model policy out of its run directory.

    python -m agents.export run=<dir> format=merged out=<dir>    # a Hugging Face model directory
    python -m agents.export run=<dir> format=peft out=<dir>      # the LoRA adapter alone

``run`` is a run directory of ``agents.train`` or ``agents.rlhf`` (its checkpoint) or of
``agents.dpo`` (its ``adapter/``). ``format=peft`` writes the adapter as a PEFT directory
(``adapter_config.json``, ``adapter_model.safetensors``) that
``PeftModel.from_pretrained(base, out)`` loads onto the base model. ``format=merged`` merges
the adapter into the base weights and writes a Hugging Face model directory (safetensors
weights, config, tokenizer and a ``README.md`` model card with the run's config and
evaluation numbers) that ``AutoModelForCausalLM.from_pretrained(out)`` loads without remote
code. The export is written to a temporary directory beside ``out`` and renamed into place,
so an interrupted export leaves nothing half-written; a non-empty ``out`` is refused unless
``overwrite=true``.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)
FORMATS = ("peft", "merged")


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


def model_card(name: str, config: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A README.md for the exported model: its base, how it was trained, its evaluation."""
    evaluation = {k: v for k, v in metrics.items() if k.startswith(("eval/", "dpo/heldout"))}
    lines = [
        "# A policy fine-tuned with rlenv",
        "",
        f"Base model: `{name}`. The LoRA adapter of the run is merged into the base weights.",
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


def export(
    run: str | Path, out: str | Path, fmt: str = "merged", overwrite: bool = False, device: str = "cpu"
) -> Path:
    """Write the run's policy to ``out`` as ``fmt`` (see the module docstring); returns ``out``."""
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt!r} is not one of {list(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"out={str(out)!r} exists and is not empty; choose another or set overwrite=true")
    core, name, config = load_policy(run, device)
    if fmt == "peft" and not hasattr(core.lm, "peft_config"):
        raise ExportError(f"run={str(run)!r} trained every weight (no LoRA adapter); use format=merged")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if fmt == "peft":
            core.lm.save_pretrained(str(staging))
        else:
            _write_merged(core, name, config, Path(run), staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s as %s to %s", run, fmt, out)
    return out


def _write_merged(core: Any, name: str, config: dict[str, Any], run: Path, staging: Path) -> None:
    from rlenv.text.tokenizers import load_tokenizer

    lm = copy.deepcopy(core.lm)
    merged = lm.merge_and_unload() if hasattr(lm, "peft_config") else lm
    merged.save_pretrained(str(staging), safe_serialization=True)
    load_tokenizer(name).save_pretrained(str(staging))
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    (staging / "README.md").write_text(model_card(name, config, metrics))


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="export")
def _main(cfg: DictConfig) -> None:
    try:
        path = export(cfg.run, cfg.out, str(cfg.format), bool(cfg.overwrite), str(cfg.device))
    except ExportError as error:
        print(f"export refused: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"exported to {path}")


def main() -> None:
    """The command line entry point (``python -m agents.export``, ``rlenv-export``)."""
    _main()


if __name__ == "__main__":
    main()
