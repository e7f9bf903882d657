"""Export of a trained LM policy: the merged model and the PEFT adapter reproduce its logits."""

from __future__ import annotations

import pytest
import torch

from agents import export, load_agent, train
from tests.agents.test_text_ppo import TINY_TEXT
from tests.test_config import compose_config

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("text_run")
    cfg = compose_config(["agent=ppo", *TINY_TEXT, "train.total_env_steps=96", "agent.optimizer.lr=1e-2"])
    train.run(cfg, run_dir)
    return run_dir


def policy_logits(run_dir, input_ids):
    core = load_agent(run_dir).network.core
    with torch.no_grad():
        return core.policy_lm(input_ids=input_ids).logits


def test_merged_export_loads_with_transformers_and_gives_the_policy_logits(text_run, tmp_path):
    from transformers import AutoModelForCausalLM

    out = export.export(text_run, tmp_path / "merged", "merged")
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    input_ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        exported = model(input_ids=input_ids).logits
    trained = policy_logits(text_run, input_ids)
    assert torch.allclose(exported, trained, atol=1e-4), (exported - trained).abs().max()
    base = load_agent(text_run).network.core
    with base.using(reference=True) as reference, torch.no_grad():
        untrained = (reference or base.policy_lm)(input_ids=input_ids).logits
    assert not torch.allclose(exported, untrained, atol=1e-4)  # the adapter did change the model
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    card = (out / "README.md").read_text()
    assert "Base model: `tiny`" in card and "eval/" in card
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_peft_export_reloads_onto_the_base_model(text_run, tmp_path):
    from peft import PeftModel

    from rlenv.text.models import load_causal_lm

    out = export.export(text_run, tmp_path / "adapter", "peft")
    model = PeftModel.from_pretrained(load_causal_lm("tiny"), out)
    input_ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        reloaded = model(input_ids=input_ids).logits
    assert torch.allclose(reloaded, policy_logits(text_run, input_ids), atol=1e-4)


def test_export_refuses_without_writing(text_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="not empty.*overwrite=true"):
        export.export(text_run, taken, "merged")
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    with pytest.raises(export.ExportError, match="format='onnx'"):
        export.export(text_run, tmp_path / "x", "onnx")
    tictactoe = tmp_path / "tictactoe"
    train.run(compose_config(["agent=ppo", "train.total_env_steps=256", "train.progress=false"]), tictactoe)
    with pytest.raises(export.ExportError, match="not a language-model policy"):
        export.export(tictactoe, tmp_path / "y", "merged")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    export.export(text_run, taken, "peft", overwrite=True)
    assert (taken / "adapter_config.json").is_file() and not (taken / "keep.txt").exists()


def test_int8_export_is_smaller_and_close_to_the_merged_model(text_run, tmp_path):
    from rlenv.text.compress import INT8_WEIGHTS, is_int8_dir
    from rlenv.text.models import load_causal_lm

    merged = export.export(text_run, tmp_path / "merged", "merged")
    int8 = export.export(text_run, tmp_path / "int8", "merged", quantize="int8")
    assert is_int8_dir(int8) and not (int8 / "model.safetensors").exists()
    assert (int8 / INT8_WEIGHTS).stat().st_size < (merged / "model.safetensors").stat().st_size
    input_ids = torch.tensor([[3, 4, 5, 6, 7, 8]])
    reference = load_causal_lm(str(merged))
    with torch.no_grad():
        expected = reference(input_ids=input_ids).logits
        # weights alone rounded to int8; then activations quantized on the fly too (int8 kernels)
        for kernels, bound in ((False, 0.05), (True, 0.15)):
            from rlenv.text.compress import load_int8

            got = load_int8(int8, kernels=kernels)(input_ids=input_ids).logits
            error = (got - expected).abs().max() / expected.abs().max()
            assert 0 < error < bound, (kernels, float(error))
    loaded = load_causal_lm(str(int8))  # the generic loader recognises the format
    assert "int8" in (int8 / "README.md").read_text() and loaded.config.num_hidden_layers == 2
    with torch.no_grad():
        assert loaded(input_ids=input_ids).logits.shape == expected.shape


def test_int8_directory_with_a_tampered_manifest_is_refused(text_run, tmp_path):
    import json

    from rlenv.text.compress import INT8_MANIFEST, load_int8

    int8 = export.export(text_run, tmp_path / "int8", "merged", quantize="int8")
    manifest = json.loads((int8 / INT8_MANIFEST).read_text())
    manifest["modules"] = manifest["modules"][1:]
    (int8 / INT8_MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="does not match the config's linear layers"):
        load_int8(int8)
    (int8 / INT8_MANIFEST).write_text("[1, 2")
    with pytest.raises(ValueError, match="cannot read"):
        load_int8(int8)


def test_pruned_export_zeroes_the_asked_fraction_and_loads_with_transformers(text_run, tmp_path):
    from transformers import AutoModelForCausalLM

    from rlenv.text.compress import compressible_linears

    out = export.export(text_run, tmp_path / "pruned", "merged", prune=0.5)
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=False)
    for name, layer in compressible_linears(model).items():
        share = float((layer.weight == 0).float().mean())
        assert 0.49 <= share <= 0.55, (name, share)
    head = model.get_output_embeddings().weight
    assert float((head == 0).float().mean()) < 0.01  # the head is not pruned
    assert "magnitude pruning" in (out / "README.md").read_text()
    again = export.export(out, tmp_path / "pruned_int8", "merged", quantize="int8")  # a model dir as run
    assert (again / "rlenv_int8.json").is_file()


def test_compression_options_are_checked_before_anything_is_written(text_run, tmp_path):
    for kwargs, message in (
        ({"quantize": "int4"}, "quantize='int4' is not one of"),
        ({"prune": 1.0}, r"prune=1.0 must be a fraction in \[0, 1\)"),
        ({"prune": -0.1}, "must be a fraction"),
    ):
        with pytest.raises(export.ExportError, match=message):
            export.export(text_run, tmp_path / "x", "merged", **kwargs)
    with pytest.raises(export.ExportError, match="use format=merged"):
        export.export(text_run, tmp_path / "x", "peft", quantize="int8")
    assert not (tmp_path / "x").exists()
