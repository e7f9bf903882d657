"""Distillation: the loss, the shallow student, and a run that lowers the held-out loss."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_module

from agents import distill
from rlenv.text.models import load_causal_lm, tiny_causal_lm
from rlenv.text.tokenizers import load_tokenizer

torch.set_num_threads(1)


def test_loss_is_zero_on_the_soft_term_for_equal_logits_and_scales_with_alpha():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    tokens = torch.randint(0, 5, (2, 3))
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss, metrics = distill.distillation_loss(logits, logits, tokens, mask, 2.0, 1.0)
    assert abs(float(loss)) < 1e-6 and abs(metrics["soft"]) < 1e-6
    expected_hard = torch.nn.functional.cross_entropy(logits[mask], tokens[mask])
    _, metrics = distill.distillation_loss(logits, logits, tokens, mask, 2.0, 0.5)
    assert math.isclose(metrics["hard"], float(expected_hard), rel_tol=1e-5)
    student = logits.clone().requires_grad_(True)
    teacher = torch.randn(2, 3, 5)
    soft, _ = distill.distillation_loss(student, teacher, tokens, mask, 3.0, 1.0)
    t3 = torch.log_softmax(teacher / 3, -1)
    s3 = torch.log_softmax(logits / 3, -1)
    by_hand = ((t3.exp() * (t3 - s3)).sum(-1)[mask]).mean() * 9
    assert torch.isclose(soft, by_hand, rtol=1e-5)
    soft.backward()
    assert float(student.grad[~mask].abs().max()) == 0.0  # masked tokens do not count
    for bad in ({"temperature": 0.0, "alpha": 0.5}, {"temperature": 1.0, "alpha": 1.5}):
        with pytest.raises(ValueError, match="temperature|alpha"):
            distill.distillation_loss(logits, logits, tokens, mask, **bad)


def test_shallow_student_keeps_evenly_spaced_teacher_layers_and_round_trips(tmp_path):
    from transformers import AutoModelForCausalLM

    assert distill.kept_layers(30, 15)[0] == 0 and distill.kept_layers(30, 15)[-1] == 29
    assert len(distill.kept_layers(30, 15)) == 15 and distill.kept_layers(4, 1) == [3]
    with pytest.raises(ValueError, match=r"student.num_layers must be in \[1, 4\]"):
        distill.kept_layers(4, 5)
    teacher = tiny_causal_lm(num_layers=4)
    student = distill.shallow_student(teacher, 2)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    layers = distill.decoder_layers(student)[2]
    source = distill.decoder_layers(teacher)[2]
    assert torch.equal(layers[1].mlp.up_proj.weight, source[3].mlp.up_proj.weight)
    assert layers[1].mlp.up_proj.weight is not source[3].mlp.up_proj.weight  # a copy
    student.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    ids = torch.tensor([[2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-5)
        generated = student.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert generated.shape == (1, 7)  # the KV cache follows the renumbered layers


def test_distillation_run_lowers_the_heldout_loss_and_saves_a_loadable_student(tmp_path, capsys):
    teacher_dir = tmp_path / "teacher"
    tiny_causal_lm(num_layers=4, seed=3).save_pretrained(teacher_dir)
    load_tokenizer("tiny").save_pretrained(teacher_dir)
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            config_name="distill",
            overrides=[
                f"teacher={teacher_dir}",
                "student.num_layers=2",
                "logger=none",
                "progress=false",
                "torch_threads=1",
                "data.num_prompts=48",
                "data.max_new_tokens=8",
                "train.batch_size=8",
                "train.epochs=6",
                "train.lr=3e-3",
                "train.heldout_fraction=0.17",
                "evaluation.num_prompts=4",
                "evaluation.max_new_tokens=4",
                "evaluation.num_samples=1",
            ],
        )
    metrics = distill.run(cfg, tmp_path / "run")
    before, after = "distill/heldout_before/", "distill/heldout_after/"
    assert metrics[after + "loss"] < metrics[before + "loss"]
    assert (
        metrics[after + "soft"] < 0.7 * metrics[before + "soft"]
    )  # the hard term has the teacher's entropy as floor
    assert metrics["distill/student_parameters"] < metrics["distill/teacher_parameters"]
    assert metrics["distill/steps"] == 6 * 5
    student = load_causal_lm(str(tmp_path / "run" / "student"))
    assert student.config.num_hidden_layers == 2
    assert "distilled" in (tmp_path / "run" / "student" / "README.md").read_text()
    assert "held-out distillation loss" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not empty"):
        distill.run(cfg, tmp_path / "run")  # the student directory is not overwritten
