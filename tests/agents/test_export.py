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
