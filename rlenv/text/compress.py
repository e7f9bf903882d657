"""Post-training compression of a causal LM: int8 weights and magnitude pruning.

Both act on the model's linear layers except its output head (the head is often tied to the
token embeddings, which stay in float):

- :func:`prune_linear` zeroes the given fraction of each linear weight matrix, the entries
  of smallest magnitude (unstructured magnitude pruning). The model stays a plain Hugging Face
  model.
- :func:`save_int8` stores each linear weight as int8 with one float32 scale per output row
  (symmetric: ``w ~ q * scale``, ``|q| <= 127``) in ``model.int8.safetensors`` beside the
  model's config, and :func:`load_int8` rebuilds the model from it with the weights
  dequantized (on SmolLM2 the KL to the float model is below 0.01 nats per completion). With
  ``kernels=True`` (where torch has a quantized CPU engine) each linear layer is replaced by
  torch's dynamically quantized linear instead, which multiplies in int8 and quantizes the
  activations on the fly, one scale per tensor: faster, but activations with outliers lose
  much (benchmarks/RESULTS.md measures both). The directory holds no ``model.safetensors``,
  so ``AutoModelForCausalLM.from_pretrained`` refuses it rather than loading int8 values as
  floats; :func:`rlenv.text.models.load_causal_lm` recognises it by :data:`INT8_MANIFEST`
  (and loads it dequantized).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

INT8_MANIFEST = "rlenv_int8.json"
INT8_WEIGHTS = "model.int8.safetensors"
INT8_FORMAT = "rlenv-int8"
SCALE_SUFFIX = ".weight_scale"


def compressible_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The model's ``nn.Linear`` layers by module name, without the output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and module is not head
    }


@torch.no_grad()
def prune_linear(model: nn.Module, fraction: float) -> float:
    """Zero the ``fraction`` of smallest-magnitude entries of each linear weight, in place.

    Returns the share of zero entries over all those weights afterwards.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"prune fraction must be in [0, 1), got {fraction!r}")
    zeros = total = 0
    for layer in compressible_linears(model).values():
        weight = layer.weight
        count = int(fraction * weight.numel())
        if count > 0:
            threshold = weight.abs().flatten().kthvalue(count).values
            weight.masked_fill_(weight.abs() <= threshold, 0.0)
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / max(total, 1)


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 quantization: (q int8 (O, I), scale float32 (O,)), ``w ~ q * scale``."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(weight / scale[:, None]), -127, 127).to(torch.int8)
    return q, scale


def save_int8(model: nn.Module, directory: str | Path) -> dict[str, Any]:
    """Write ``model`` (a plain Hugging Face causal LM) with int8 linear weights into ``directory``.

    Writes the config, the generation config, :data:`INT8_WEIGHTS` and :data:`INT8_MANIFEST`;
    returns the manifest.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    linears = compressible_linears(model)
    tensors: dict[str, torch.Tensor] = {}
    tied = _tied_keys(model)  # a tied weight is stored once; tie_weights restores it
    for key, value in model.state_dict().items():
        if key in tied:
            continue
        module = key.rsplit(".", 1)[0]
        if key.endswith(".weight") and module in linears:
            q, scale = quantize_rows(value)
            tensors[key], tensors[module + SCALE_SUFFIX] = q, scale
        else:
            tensors[key] = value.detach().contiguous()
    save_file(tensors, str(directory / INT8_WEIGHTS), metadata={"format": INT8_FORMAT})
    model.config.save_pretrained(str(directory))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(directory))
    manifest = {
        "format": INT8_FORMAT,
        "version": 1,
        "scheme": "int8 linear weights, symmetric, one float32 scale per output row",
        "modules": sorted(linears),
    }
    (directory / INT8_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def is_int8_dir(path: str | Path) -> bool:
    """Whether ``path`` is a model directory written by :func:`save_int8`."""
    return (Path(path) / INT8_MANIFEST).is_file()


def load_int8(directory: str | Path, *, kernels: bool = False, dtype: torch.dtype = torch.float32) -> Any:
    """The model :func:`save_int8` wrote (eval mode); see the module docstring for ``kernels``.

    Raises:
        ValueError: the manifest or the weights do not describe this model's layers.
    """
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    directory = Path(directory)
    manifest = _read_manifest(directory)
    weights = directory / INT8_WEIGHTS
    if not weights.is_file():
        raise ValueError(f"{str(directory)!r} has {INT8_MANIFEST} but no {INT8_WEIGHTS}")
    config = AutoConfig.from_pretrained(str(directory), trust_remote_code=False)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=False)
    linears = compressible_linears(model)
    if set(manifest["modules"]) != set(linears):
        unknown = sorted(set(manifest["modules"]) ^ set(linears))[:3]
        raise ValueError(
            f"{str(directory / INT8_MANIFEST)!r} does not match the config's linear layers: {unknown}"
        )
    tensors = load_file(str(weights))
    quantized: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    state: dict[str, torch.Tensor] = {}
    for name in linears:
        q, scale = tensors.pop(name + ".weight", None), tensors.pop(name + SCALE_SUFFIX, None)
        if q is None or scale is None or q.dtype != torch.int8 or scale.shape != q.shape[:1]:
            raise ValueError(f"{str(weights)!r}: layer {name!r} lacks an int8 weight with one scale per row")
        quantized[name] = (q, scale.float())
        state[name + ".weight"] = (q.float() * scale.float()[:, None]).to(dtype)
    state.update({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()})
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"{str(weights)!r} holds tensors the model lacks: {result.unexpected_keys[:3]}")
    model.tie_weights()
    missing = sorted(set(result.missing_keys) - _tied_keys(model))
    if missing:
        raise ValueError(f"{str(weights)!r} lacks tensors of the model: {missing[:3]}")
    if kernels and _quantized_engine():
        try:
            _install_int8_kernels(model, linears, quantized)
        except (RuntimeError, NotImplementedError) as error:  # no int8 kernels here: stay dequantized
            warnings.warn(f"int8 kernels unavailable ({error}); {directory} runs dequantized", stacklevel=2)
    return model.eval()


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / INT8_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {str(path)!r}: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != INT8_FORMAT:
        raise ValueError(f"{str(path)!r} is not an {INT8_FORMAT} manifest (format: {INT8_FORMAT!r} expected)")
    modules = manifest.get("modules")
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ValueError(f"{str(path)!r}: 'modules' must be a list of layer names")
    return manifest


def _tied_keys(model: nn.Module) -> set[str]:
    """State keys whose tensor is another key's (tied weights, stored once)."""
    seen: set[int] = set()
    tied = set()
    for key, value in model.state_dict().items():
        if value.data_ptr() in seen:
            tied.add(key)
        seen.add(value.data_ptr())
    return tied


def _quantized_engine() -> bool:
    engine = torch.backends.quantized.engine
    return engine not in (None, "none") and engine in torch.backends.quantized.supported_engines


def _install_int8_kernels(
    model: nn.Module, linears: dict[str, nn.Linear], quantized: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> None:
    """Replace each linear layer by torch's dynamically quantized linear with the stored int8 rows."""
    with warnings.catch_warnings():  # torch marks its quantized tensors as deprecated, still supported
        warnings.simplefilter("ignore")
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

        for name, layer in linears.items():
            q, scale = quantized[name]
            weight = torch._make_per_channel_quantized_tensor(
                q, scale.double(), torch.zeros(q.shape[0], dtype=torch.long), 0
            )
            replacement = DynamicInt8Linear(layer.in_features, layer.out_features, dtype=torch.qint8)
            bias = None if layer.bias is None else layer.bias.detach().float()
            replacement.set_weight_bias(weight, bias)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, replacement)
