"""Every config composes, and every env x agent pair instantiates from the env's spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import agents  # noqa: F401  (registers the config resolvers)
import conf

CONF_DIR = str(Path(conf.__file__).parent)
ENVS = sorted(p.stem for p in Path(CONF_DIR, "env").glob("*.yaml"))
AGENTS = sorted(p.stem for p in Path(CONF_DIR, "agent").glob("*.yaml"))
LIGHT_ENVS = [e for e in ENVS if e != "text"]


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_config_groups_exist():
    assert "tictactoe" in ENVS
    assert {"ppo", "qlearning", "qlearning_tabular"} <= set(AGENTS)


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("agent", AGENTS)
def test_every_pair_composes(env, agent):
    cfg = compose_config([f"env={env}", f"agent={agent}"])
    assert cfg.env.name == env
    assert "_target_" in cfg.agent and "_target_" in cfg.env.vector


@pytest.mark.parametrize("env", LIGHT_ENVS)
@pytest.mark.parametrize("agent", AGENTS)
def test_every_pair_instantiates(env, agent):
    cfg = compose_config([f"env={env}", f"agent={agent}", "num_envs=4"])
    vec = instantiate(cfg.env.vector)
    try:
        built = instantiate(
            cfg.agent,
            observation_space=vec.single_observation_space,
            action_space=vec.single_action_space,
            device="cpu",
        )
        obs, info = vec.reset(seed=0)
        actions = built.act(obs, info.get("action_mask"), deterministic=True)
        assert actions.shape == (4,)
    finally:
        vec.close()


def test_evaluate_config_composes():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["run=somewhere"])
    assert cfg.run == "somewhere"
