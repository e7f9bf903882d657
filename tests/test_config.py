"""Every config composes; every env x agent pair either instantiates and acts or fails, before
anything trains, with an error that names the pair and what the agent needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import agents  # noqa: F401  (registers the config resolvers)
import conf
from agents.run.compat import IncompatiblePairError
from agents.train import build

CONF_DIR = str(Path(conf.__file__).parent)
ENVS = sorted(p.stem for p in Path(CONF_DIR, "env").glob("*.yaml"))
AGENTS = sorted(p.stem for p in Path(CONF_DIR, "agent").glob("*.yaml"))
TINY_TEXT = [
    "env.model=tiny",
    "env.vector.prompts=[the movie is,a film was very]",
    "env.vector.reward_fn=token_count:good",
    "env.vector.window=16",
    "env.vector.max_new_tokens=4",
]
# (env overrides, agents declared compatible); every other agent must be refused.
ENV_CASES = {
    "tictactoe": (["env=tictactoe"], {"ppo", "qlearning", "qlearning_tabular"}),
    "text": (["env=text", *TINY_TEXT], {"ppo", "qlearning"}),
    "CartPole": (["env=gym", "env.id=CartPole-v1"], {"ppo", "qlearning"}),
    "Taxi": (["env=gym", "env.id=Taxi-v4"], {"ppo", "qlearning", "qlearning_tabular"}),
    "FrozenLake": (["env=gym", "env.id=FrozenLake-v1", "env.kwargs={is_slippery: false}"], set(AGENTS)),
    "Blackjack": (["env=gym", "env.id=Blackjack-v1"], {"ppo", "qlearning", "qlearning_tabular"}),
}
NEEDS = {"qlearning_tabular": "tabular Q needs"}


def compose_config(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_config_groups_exist():
    assert {"tictactoe", "text", "gym"} <= set(ENVS)
    assert {"ppo", "qlearning", "qlearning_tabular"} <= set(AGENTS)
    assert {p.stem for p in Path(CONF_DIR, "network").glob("*.yaml")} >= {"mlp", "lm"}


@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("agent", AGENTS)
def test_every_pair_composes(env, agent):
    cfg = compose_config([f"env={env}", f"agent={agent}"])
    assert cfg.env.name
    assert "_target_" in cfg.agent and "_target_" in cfg.env.vector


def test_the_network_follows_the_env_unless_chosen():
    assert compose_config(["env=text"]).network.actor_critic._target_ == "agents.networks.lm.LMActorCritic"
    assert compose_config(["env=gym"]).network.q._target_ == "agents.networks.QNetworkMLP"
    chosen = compose_config(["env=text", "network=mlp"])
    assert chosen.network.actor_critic._target_ == "agents.networks.ActorCriticMLP"


@pytest.mark.parametrize("case", sorted(ENV_CASES))
@pytest.mark.parametrize("agent", AGENTS)
def test_every_pair_instantiates_or_is_refused_before_training(case, agent):
    overrides, compatible = ENV_CASES[case]
    cfg = compose_config([*overrides, f"agent={agent}", "num_envs=2"])
    if agent not in compatible:
        with pytest.raises(IncompatiblePairError, match=r"env=.* and agent=.* do not fit together") as error:
            build(cfg, torch.device("cpu"))
        assert NEEDS.get(agent, "") in str(error.value)
        return
    env, built = build(cfg, torch.device("cpu"))
    try:
        obs, info = env.reset(seed=0)
        actions = built.act(obs, info.get("action_mask"), deterministic=True)
        assert actions.shape == (2,)
        assert bool(env.single_action_space.contains(int(actions[0])))
    finally:
        env.close()


@pytest.mark.parametrize("experiment", sorted(p.stem for p in Path(CONF_DIR, "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment):
    cfg = compose_config([f"+experiment={experiment}"])
    assert cfg.env.name and "_target_" in cfg.agent


def test_the_grpo_experiment_trains_the_tiny_model(tmp_path):
    from agents.train import run

    overrides = ["+experiment=text_grpo", *TINY_TEXT, "num_envs=8", "train.total_env_steps=64"]
    overrides += ["train.progress=false", "env.evaluation.episodes=2", "env.evaluation.num_envs=2"]
    metrics = run(compose_config(overrides), tmp_path)
    assert metrics["perf/env_steps"] >= 64 and "eval/heldout/return_mean" in metrics


def test_an_lm_network_on_a_vector_env_is_refused_with_what_it_needs():
    cfg = compose_config(["env=tictactoe", "agent=ppo", "network=lm", "num_envs=2"])
    with pytest.raises(IncompatiblePairError, match="LMActorCritic.*'input_ids' and 'attention_mask'"):
        build(cfg, torch.device("cpu"))


def test_evaluate_config_composes():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=["run=somewhere"])
    assert cfg.run == "somewhere"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.checkpoint_every=0"], r"train.checkpoint_every=0 must be >= 1"),
        (["agent.max_grad_norm=-1"], r"agent.max_grad_norm=-1.0 must be > 0 or null \(no clipping\)"),
        (["agent.gamma=1.5"], r"agent.gamma=1.5 must be in \[0, 1\]"),
        (["agent=qlearning", "agent.loss=l1"], r"agent.loss='l1' must be one of \['huber', 'mse'\]"),
        (["agent=qlearning_tabular", "agent.step_size=sometimes"], r"agent.step_size='sometimes'"),
        (["env.evaluation.episodes=0"], r"env.evaluation.episodes=0 must be >= 1"),
    ],
)
def test_a_value_out_of_range_names_its_key(tmp_path, overrides, message):
    from agents.run.schema import ConfigError
    from agents.train import run

    cfg = compose_config(["env=tictactoe", *overrides])
    with pytest.raises(ConfigError, match=message):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_a_value_of_the_wrong_type_names_its_key():
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["train.total_env_steps=abc"])
    assert "train.total_env_steps" in str(error.value.__cause__)
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["agent.num_epochs=four"])
    assert "agent.num_epochs" in str(error.value.__cause__)


def test_rlenv_never_imports_agents():
    root = Path(conf.__file__).parent.parent / "rlenv"
    offenders = [
        str(path.relative_to(root.parent))
        for path in root.rglob("*.py")
        if any(
            line.strip().startswith(("import agents", "from agents"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []
