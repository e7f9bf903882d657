"""Text generation as a Gymnasium environment: state = context window, action = next token."""

from rlenv.text.env import TextGenerationEnv
from rlenv.text.prompts import PromptSet, load_prompt_file, load_task_prompts
from rlenv.text.rewards import make_reward_fn, validate_scores
from rlenv.text.tokenizers import load_tokenizer, tiny_tokenizer
from rlenv.text.vector_env import TextGenerationVectorEnv

__all__ = [
    "PromptSet",
    "TextGenerationEnv",
    "TextGenerationVectorEnv",
    "load_prompt_file",
    "load_task_prompts",
    "load_tokenizer",
    "make_reward_fn",
    "tiny_tokenizer",
    "validate_scores",
]
