"""RLHF framed as Gymnasium environments: Tic-Tac-Toe, text generation, tool use (math, a shop).

``import rlenv`` registers every env id with Gymnasium; entry points are strings, so
nothing heavy is imported until an env is made.
"""

from __future__ import annotations

import gymnasium

__version__ = "0.1.0"

ENV_IDS = (
    "rlenv/TicTacToe-v0",
    "rlenv/TextGeneration-v0",
    "rlenv/PAL-v0",
    "rlenv/MathCoT-v0",
    "rlenv/ShopBot-v0",
    "rlenv/ReviewQA-v0",
)


def _register(env_id: str, entry_point: str, vector_entry_point: str) -> None:
    if env_id not in gymnasium.registry:
        gymnasium.register(env_id, entry_point=entry_point, vector_entry_point=vector_entry_point)


def register_envs() -> None:
    """Register every rlenv env id with Gymnasium (safe to call more than once)."""
    _register(
        "rlenv/TicTacToe-v0",
        "rlenv.tictactoe.env:TicTacToeEnv",
        "rlenv.tictactoe.vector_env:TicTacToeVectorEnv",
    )
    _register(
        "rlenv/TextGeneration-v0",
        "rlenv.text.env:TextGenerationEnv",
        "rlenv.text.vector_env:TextGenerationVectorEnv",
    )
    _register("rlenv/PAL-v0", "rlenv.tools.pal:make_pal_env", "rlenv.tools.pal:make_pal_vector_env")
    _register("rlenv/MathCoT-v0", "rlenv.tools.pal:make_cot_env", "rlenv.tools.pal:make_cot_vector_env")
    _register(
        "rlenv/ShopBot-v0",
        "rlenv.tools.shopbot:make_shopbot_env",
        "rlenv.tools.shopbot:make_shopbot_vector_env",
    )
    _register(
        "rlenv/ReviewQA-v0",
        "rlenv.tools.review_qa:make_review_qa_env",
        "rlenv.tools.review_qa:make_review_qa_vector_env",
    )


register_envs()
