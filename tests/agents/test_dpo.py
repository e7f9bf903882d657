"""DPO: the loss, the sequence log-probabilities it compares, training on pairs, the entry point."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hydra import compose, initialize_config_module

import agents  # noqa: F401  (registers the config resolvers)
from agents import dpo
from agents.networks.lm_core import CausalLMCore
from rlenv.feedback.pairs import Pair
from rlenv.feedback.rankings import Label, RankingRecord, write_rankings
from rlenv.text.models import load_causal_lm
from rlenv.text.tokenizers import load_tokenizer

PROMPTS = ["the movie was", "a film is very", "it was not", "this story is", "the plot was", "i love the"]


def test_loss_is_the_dpo_objective_and_pushes_the_chosen_completion_up():
    policy_chosen = torch.tensor([-3.0, -5.0], requires_grad=True)
    policy_rejected = torch.tensor([-4.0, -2.0], requires_grad=True)
    reference_chosen, reference_rejected = torch.tensor([-3.5, -4.0]), torch.tensor([-3.5, -3.0])
    loss, metrics = dpo.dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, 0.5)
    margins = 0.5 * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected))
    assert float(loss.detach()) == pytest.approx(
        float(-torch.nn.functional.logsigmoid(margins.detach()).mean())
    )
    assert metrics["accuracy"] == 0.5 and metrics["margin"] == pytest.approx(float(margins.mean()))
    loss.backward()
    assert bool((policy_chosen.grad < 0).all()) and bool((policy_rejected.grad > 0).all())
    same = torch.zeros(3)
    loss, metrics = dpo.dpo_loss(same, same, same, same, 0.1)
    assert float(loss) == pytest.approx(math.log(2)) and metrics["accuracy"] == 0.5  # ties count half
    with pytest.raises(ValueError, match="beta"):
        dpo.dpo_loss(same, same, same, same, 0.0)


def tiny_trainer(**kwargs) -> dpo.DPOTrainer:
    torch.manual_seed(0)
    model = load_causal_lm("tiny")
    core = CausalLMCore(model, model.get_output_embeddings().weight.shape[0])
    return dpo.DPOTrainer(core, load_tokenizer("tiny"), **kwargs)


def test_completions_are_scored_as_the_sum_of_their_tokens():
    trainer = tiny_trainer()
    batch = dpo.encode_completions(
        trainer.tokenizer, 0, ["the movie", "it was not good"], ["good", "bad bad"], 8
    )
    assert batch.response_mask.sum(dim=1).tolist() == [1, 2]
    assert (
        batch.attention_mask[0, : batch.response_start].tolist()[0] == 0
    )  # the shorter prompt is left-padded
    whole = dpo.sequence_log_probs(trainer.core.policy_lm, batch)
    alone = dpo.sequence_log_probs(
        trainer.core.policy_lm,
        dpo.encode_completions(trainer.tokenizer, 0, ["it was not good"], ["bad bad"], 8),
    )
    assert torch.allclose(whole[1], alone[0], atol=1e-5)  # padding changes nothing
    with pytest.raises(ValueError, match="no token"):
        dpo.encode_completions(trainer.tokenizer, 0, ["the movie"], [""], 8)


def test_training_raises_the_implicit_reward_margin_and_keeps_the_reference():
    trainer = tiny_trainer(beta=0.5, lr=5e-3, batch_size=4)
    pairs = [Pair("good great fun", "bad awful boring", prompt) for prompt in PROMPTS]
    reference_before = trainer.reference_log_probs(pairs)
    before = trainer.evaluate(pairs)
    trainer.train(pairs, epochs=15, seed=0)
    after = trainer.evaluate(pairs)
    assert before["margin"] == pytest.approx(0.0, abs=1e-5)
    assert after["accuracy"] == 1.0 and after["margin"] > 1.0 and after["loss"] < before["loss"]
    for old, new in zip(reference_before, trainer.reference_log_probs(pairs), strict=True):
        assert torch.allclose(old, new)  # adapters off: the base weights did not move
    assert trainer.steps == 15 * 2  # 6 pairs in batches of 4
    trainer.train(pairs, epochs=5, seed=0, max_seconds=0.0)  # the budget is spent by the reference pass
    assert trainer.steps == 30
    with pytest.raises(ValueError, match="no preference pairs"):
        trainer.train([], epochs=1, seed=0)
    with pytest.raises(ValueError, match="dpo.beta"):
        tiny_trainer(beta=-1.0)


def test_pairs_are_split_by_prompt():
    pairs = [Pair(f"a{i}", f"b{i}", PROMPTS[i % 6]) for i in range(30)]
    train, heldout = dpo.split_pairs(pairs, 0.34, seed=0)
    assert len(train) + len(heldout) == 30 and heldout
    assert not {p.prompt for p in train} & {p.prompt for p in heldout}
    with pytest.raises(ValueError, match="heldout_fraction"):
        dpo.split_pairs(pairs, 1.0, seed=0)


def test_entry_point_trains_and_reports_before_and_after(tmp_path, capsys):
    records = [
        RankingRecord(
            prompt=prompt,
            completions=("good great fun", "bad awful boring", "the movie"),
            criterion="sentiment",
            labels=(Label("sim", (1, 3, 2)),),
        )
        for prompt in PROMPTS
    ]
    write_rankings(tmp_path / "rankings.jsonl", records)
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            config_name="dpo",
            overrides=[
                f"data={tmp_path / 'rankings.jsonl'}",
                "model=tiny",
                "progress=false",
                "torch_threads=1",
                "dpo.epochs=3",
                "dpo.batch_size=4",
                "dpo.lr=5e-3",
                "dpo.heldout_fraction=0.34",
                "evaluation.num_prompts=4",
                "evaluation.max_new_tokens=4",
                "evaluation.num_samples=1",
            ],
        )
    metrics = dpo.run(cfg, tmp_path / "run")
    assert metrics["dpo/train_pairs"] == 12 and metrics["dpo/heldout_pairs"] == 6
    assert metrics["dpo/steps"] == 9
    assert metrics["dpo/heldout_after/margin"] > metrics["dpo/heldout_before/margin"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["eval/after/kl"] == metrics["eval/after/kl"] and math.isfinite(
        saved["eval/before/labeler_score"]
    )
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").exists()
    out = capsys.readouterr().out
    assert "labeler score" in out and "implicit-reward accuracy" in out


def test_a_dpo_run_exports_as_a_merged_model(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agents import export

    trainer = tiny_trainer(beta=0.5, lr=5e-3, batch_size=4)
    trainer.train([Pair("good great fun", "bad awful boring", p) for p in PROMPTS], epochs=3, seed=0)
    run = tmp_path / "run"
    trainer.core.lm.save_pretrained(str(run / "adapter"))
    (run / "config.yaml").write_text(
        "model: tiny\nlora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [q_proj, v_proj]}\n"
    )
    out = export.export(run, tmp_path / "merged", "merged")
    input_ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(out)(input_ids=input_ids).logits
        adapted = PeftModel.from_pretrained(load_causal_lm("tiny"), run / "adapter")(
            input_ids=input_ids
        ).logits
    assert torch.allclose(merged, adapted, atol=1e-4)


def test_too_few_pairs_are_refused_with_the_count(tmp_path):
    tied = RankingRecord(
        prompt="the movie was", completions=("good", "bad"), criterion="c", labels=(Label("a", (1, 1)),)
    )
    write_rankings(tmp_path / "ties.jsonl", [tied])
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="dpo", overrides=[f"data={tmp_path / 'ties.jsonl'}", "model=tiny"])
    with pytest.raises(ValueError, match="too few preference pairs for DPO: 0 from 1 rankings"):
        dpo.run(cfg, tmp_path / "run")
