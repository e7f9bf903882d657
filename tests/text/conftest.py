from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from rlenv.text.env import TextGenerationEnv  # noqa: E402
from rlenv.text.tokenizers import tiny_tokenizer  # noqa: E402
from rlenv.text.vector_env import TextGenerationVectorEnv  # noqa: E402

PROMPTS = ["the movie was good", "a film is bad and dull", "this story", "it was not fun but great"]


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return tiny_tokenizer(vocab_size=40)


@pytest.fixture
def prompts() -> list[str]:
    return list(PROMPTS)


@pytest.fixture
def make_env(tokenizer: Any) -> Callable[..., TextGenerationEnv]:
    def make(**kwargs: Any) -> TextGenerationEnv:
        settings = {"tokenizer": tokenizer, "prompts": PROMPTS, "reward_fn": "length", "window": 8}
        settings["max_new_tokens"] = 5
        return TextGenerationEnv(**{**settings, **kwargs})

    return make


@pytest.fixture
def make_vec(tokenizer: Any) -> Callable[..., TextGenerationVectorEnv]:
    def make(num_envs: int = 3, **kwargs: Any) -> TextGenerationVectorEnv:
        settings = {"tokenizer": tokenizer, "prompts": PROMPTS, "reward_fn": "length", "window": 8}
        settings["max_new_tokens"] = 5
        return TextGenerationVectorEnv(num_envs, **{**settings, **kwargs})

    return make
