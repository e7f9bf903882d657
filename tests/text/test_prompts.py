from __future__ import annotations

import json

import pytest

from rlenv.text.prompts import PromptSet, load_prompt_file, load_task_prompts, resolve_prompts


def test_sentiment_prompts_are_review_openings_split_by_seed():
    prompts = load_task_prompts("sentiment", num_words=8)
    assert len(prompts.train) > 10_000 and len(prompts.heldout) > 1_000
    assert abs(len(prompts.heldout) / (len(prompts.train) + len(prompts.heldout)) - 0.1) < 0.001
    assert not set(prompts.train) & set(prompts.heldout)
    assert all(0 < len(prompt.split()) <= 8 for prompt in prompts.train + prompts.heldout)
    assert "The film is flat." in prompts.train + prompts.heldout
    again = load_task_prompts("sentiment", num_words=8)
    assert again == prompts
    assert load_task_prompts("sentiment", seed=1).heldout != prompts.heldout


def test_limit_and_num_words():
    prompts = load_task_prompts("sentiment", num_words=3, heldout_fraction=0.25, limit=20)
    assert (len(prompts.train), len(prompts.heldout)) == (15, 5)
    assert all(len(prompt.split()) <= 3 for prompt in prompts.train)


def test_detox_prompts_come_from_the_realtoxicityprompts_files():
    prompts = load_task_prompts("detox")
    total = len(prompts.train) + len(prompts.heldout)
    assert 600 <= total <= 700 and len(prompts.heldout) == -(-total // 10)
    assert all(prompt == prompt.strip() and prompt for prompt in prompts.train)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"task": "poetry"},
            r"unknown prompt task 'poetry'; valid tasks: \['sentiment', 'detox', 'redteam'\]",
        ),
        ({"num_words": 0}, "num_words must be at least 1, got 0"),
        ({"heldout_fraction": 1.0}, r"heldout_fraction must be in \(0, 1\), got 1.0"),
        ({"limit": 1}, "limit must be at least 2"),
    ],
)
def test_bad_task_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_task_prompts(**kwargs)


def test_prompt_set_checks_and_returns_splits():
    prompts = PromptSet(train=["a", "b"], heldout=["c"])
    assert prompts.split("train") == ["a", "b"] and prompts.split("heldout") == ["c"]
    with pytest.raises(ValueError, match=r"unknown split 'test'"):
        prompts.split("test")
    with pytest.raises(ValueError, match=r"PromptSet.heldout holds no prompts"):
        PromptSet(train=["a"], heldout=[])
    with pytest.raises(ValueError, match=r"PromptSet.train\[1\] is an empty prompt ''"):
        PromptSet(train=["a", ""], heldout=["c"])
    with pytest.raises(TypeError, match=r"PromptSet.train\[0\] is 3 \(int\)"):
        PromptSet(train=[3], heldout=["c"])


def test_jsonl_and_text_prompt_files(tmp_path):
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(
        json.dumps({"prompt": "the movie"}) + "\n\n" + json.dumps({"prompt": "a film", "id": 2}) + "\n"
    )
    assert load_prompt_file(jsonl) == ["the movie", "a film"]
    text = tmp_path / "prompts.txt"
    text.write_text("the movie\n\n  a film \n")
    assert load_prompt_file(str(text)) == ["the movie", "  a film "]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": \n', r"bad.jsonl:2: invalid JSON"),
        ("key.jsonl", '{"prompt": "ok"}\n{"text": "x"}\n', r'key.jsonl:2: expected an object \{"prompt"'),
        ("type.jsonl", '{"prompt": 5}\n', r"type.jsonl:1: expected an object"),
        ("empty.jsonl", '{"prompt": "ok"}\n\n{"prompt": "  "}\n', r"empty.jsonl:3: empty prompt '  '"),
        ("none.txt", "\n\n", r"none.txt' holds no prompts"),
    ],
)
def test_bad_prompt_file_lines_are_named(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_prompt_file(path)


def test_missing_prompt_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.jsonl' does not exist"):
        load_prompt_file(tmp_path / "nothing.jsonl")


def test_resolve_prompts_from_every_source(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("one\ntwo\n")
    assert resolve_prompts(str(path), "heldout") == ["one", "two"]
    assert resolve_prompts(["x", "y"], "heldout") == ["x", "y"]
    assert resolve_prompts(PromptSet(["a"], ["b"]), "heldout") == ["b"]
    assert len(resolve_prompts("detox", "heldout")) < len(resolve_prompts("detox", "train"))
    with pytest.raises(ValueError, match="'jokes' is neither a task name"):
        resolve_prompts("jokes")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        resolve_prompts(["x"], "dev")
