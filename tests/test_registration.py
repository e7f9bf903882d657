"""Every env id registered by ``import rlenv`` is makeable and passes Gymnasium's checker."""

from __future__ import annotations

import gymnasium as gym
import pytest
from gymnasium.envs.registration import load_env_creator
from gymnasium.utils.env_checker import check_env

import rlenv

RLENV_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("rlenv/"))


def _entry_point_or_skip(env_id: str, attribute: str = "entry_point") -> None:
    entry_point = getattr(gym.spec(env_id), attribute)
    try:
        load_env_creator(entry_point)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{env_id}: {attribute} {entry_point!r} does not import ({error})")


def test_version_and_expected_ids() -> None:
    assert rlenv.__version__ == "0.1.0"
    assert set(rlenv.ENV_IDS) <= set(RLENV_IDS)
    expected = {"rlenv/TicTacToe-v0", "rlenv/TextGeneration-v0", "rlenv/PAL-v0", "rlenv/MathCoT-v0"}
    assert expected | {"rlenv/ShopBot-v0", "rlenv/ReviewQA-v0"} <= set(RLENV_IDS)
    rlenv.register_envs()


@pytest.mark.parametrize("env_id", RLENV_IDS)
def test_check_env(env_id: str) -> None:
    _entry_point_or_skip(env_id)
    env = gym.make(env_id)
    try:
        check_env(env.unwrapped)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", RLENV_IDS)
def test_make_vec_uses_vector_entry_point(env_id: str) -> None:
    _entry_point_or_skip(env_id, "vector_entry_point")
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode="vector_entry_point")
    try:
        assert envs.num_envs == 2
        obs, info = envs.reset(seed=0)
        leaves = obs.values() if isinstance(obs, dict) else [obs]
        assert all(leaf.shape[0] == 2 for leaf in leaves) and isinstance(info, dict)
    finally:
        envs.close()
