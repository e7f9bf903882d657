import io
import json
from pathlib import Path

import pytest

from rlenv.feedback.collect import (
    collect,
    collect_from_policy,
    items_path,
    make_labelers,
    resolve_labeler_kind,
    run,
)
from rlenv.feedback.human import TerminalLabeler
from rlenv.feedback.items import Item, append_item, load_items
from rlenv.feedback.labelers import SentimentLabeler, ToxicityLabeler
from rlenv.feedback.rankings import load_rankings

ITEMS = [
    ("How was the film?", ["It was awful and boring.", "I loved it, wonderful!"]),
    ("And the food?", ["Delicious and lovely.", "Terrible, I hated it.", "It was food."]),
]


def test_simulated_panel_collects_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    panel = [SentimentLabeler(noise=0.01, seed=s) for s in range(3)]
    assert collect(ITEMS[:1], panel, path).labeled == 1
    summary = collect(ITEMS, panel, path)
    assert (summary.already_done, summary.labeled) == (1, 1)
    records = load_rankings(path)
    assert [len(r.labels) for r in records] == [3, 3]
    assert records[0].criterion == "positivity"
    assert all(lab.ranks == (2, 1) for lab in records[0].labels)
    assert all(lab.ranks == (1, 3, 2) for lab in records[1].labels)


def test_mixed_criteria_need_explicit_criterion(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="different criteria"):
        collect(ITEMS, [SentimentLabeler(), ToxicityLabeler()], tmp_path / "r.jsonl")


def test_collect_with_a_person(tmp_path: Path) -> None:
    person = TerminalLabeler(
        "ana", "positivity", input_stream=io.StringIO("2 1\n1 2 3\n"), output_stream=io.StringIO()
    )
    assert collect([Item(p, tuple(c)) for p, c in ITEMS], person, tmp_path / "r.jsonl").labeled == 2


def compose_collect(*overrides: str):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="collect", overrides=list(overrides))


def test_command_line_ranks_an_items_file(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps({"prompt": p, "completions": c}) + "\n" for p, c in ITEMS))
    assert len(load_items(items)) == 2
    cfg = compose_collect(
        f"items_file={items}", f"out={tmp_path / 'out.jsonl'}", "labeler=sentiment", "panel=2"
    )
    summary = run(cfg)
    assert summary.labeled == 2
    assert len(load_rankings(tmp_path / "out.jsonl")[0].labels) == 2


def test_policy_completions_ranked_by_a_panel_and_resumed(tmp_path: Path, capsys) -> None:
    out = tmp_path / "rankings.jsonl"
    args = [
        f"out={out}",
        "model=tiny",
        f"prompts={tmp_path / 'prompts.txt'}",
        "labeler=sentiment",
    ]
    args += [
        "n_completions=3",
        "chunk_size=2",
        "generation.max_new_tokens=5",
        "num_threads=1",
        "progress=false",
    ]
    (tmp_path / "prompts.txt").write_text("the movie was\na film is\nthis story\nit was not\nthe plot\n")
    first = run(compose_collect(*args, "num_prompts=3"))
    assert (first.labeled, first.already_done) == (3, 0)
    assert "labeler agreement" in capsys.readouterr().out
    second = run(compose_collect(*args))
    assert (second.labeled, second.already_done, second.remaining) == (2, 3, 0)
    records = load_rankings(out)
    assert [r.prompt for r in records] == [
        "the movie was",
        "a film is",
        "this story",
        "it was not",
        "the plot",
    ]
    assert all(len(r.completions) == 3 and len(r.labels) == 3 for r in records)
    assert records[0].criterion == "positivity" and records[0].meta["model"] == "tiny"
    stored = load_items(items_path(out))
    assert [i.completions for i in stored] == [r.completions for r in records]


def test_resume_ranks_stored_completions_without_generating(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    panel = [SentimentLabeler(noise=0.0, seed=0)]
    calls: list[list[str]] = []

    def generate(prompts):
        calls.append(list(prompts))
        return [["good", "bad"] for _ in prompts]

    append_item(items_path(out), Item("p0", ("awful", "lovely")))
    summary = collect_from_policy(["p0", "p1"], generate, panel, out)
    assert calls == [["p1"]] and summary.labeled == 2
    by_prompt = {r.prompt: r.completions for r in load_rankings(out)}
    assert by_prompt == {"p0": ("awful", "lovely"), "p1": ("good", "bad")}
    assert collect_from_policy(["p0", "p1"], generate, panel, out).labeled == 0 and len(calls) == 1


def test_human_labels_generated_items(tmp_path: Path) -> None:
    person = TerminalLabeler(
        "ana", "positivity", input_stream=io.StringIO("2 1\n"), output_stream=io.StringIO()
    )
    summary = collect_from_policy(
        ["p"], lambda ps: [["meh", "great"] for _ in ps], person, tmp_path / "r.jsonl"
    )
    assert summary.labeled == 1
    assert load_rankings(tmp_path / "r.jsonl")[0].labels[0].ranks == (2, 1)


def test_unknown_labeler_is_named() -> None:
    with pytest.raises(
        ValueError, match=r"unknown labeler 'vibes' \(valid: \['sentiment', 'toxicity', 'human', 'ai'\]\)"
    ):
        make_labelers("vibes")


def test_load_items_names_bad_line(tmp_path: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text('{"prompt": "p", "completions": ["a", "b"]}\n{"prompt": "p", "completions": ["a"]}\n')
    with pytest.raises(ValueError, match=r"items.jsonl:2: an item needs at least 2 completions"):
        load_items(items)


def test_task_group_sets_prompts_and_labeler() -> None:
    cfg = compose_collect("task=detox")
    assert cfg.task.prompts == "detox" and cfg.labeler is None
    assert resolve_labeler_kind(cfg.labeler, cfg.task.prompts) == "toxicity"
    assert resolve_labeler_kind("human", "detox") == "human"
