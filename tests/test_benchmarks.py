"""The benchmark scripts run end to end at tiny sizes, so they cannot rot (no timing is checked)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_module(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_gym_learning_prints_a_table_and_the_verdict():
    out = run_module(
        "benchmarks.gym_learning",
        "--agents",
        "ppo",
        "--seeds",
        "0",
        "--steps",
        "512",
        "--target",
        "0",
        "--",
        "env.evaluation.episodes=2",
        "env.evaluation.num_envs=2",
    )
    assert "ppo" in out and "target 0.0: met" in out


def test_text_rollout_runs_with_the_tiny_model():
    out = run_module(
        "benchmarks.text_rollout", "--model", "tiny", "--batch", "2", "--new-tokens", "4", "--repeats", "1"
    )
    assert "LoRA policy + reference" in out


def test_text_update_profile_prints_the_phases():
    out = run_module(
        "benchmarks.text_update_profile",
        "--updates",
        "1",
        "--",
        "env.model=tiny",
        "env.vector.window=48",
        "num_envs=4",
    )
    for phase in ("acting", "reference pass", "optimisation"):
        assert phase in out


def test_rlhf_kl_budget_runs_with_the_tiny_model():
    out = run_module(
        "benchmarks.rlhf_kl_budget",
        "--model",
        "tiny",
        "--minutes",
        "0.02",
        "--new-tokens",
        "8",
        "--targets",
        "1",
        "--",
        "env.vector.window=32",
        "num_envs=4",
    )
    assert "VADER gain" in out and "gae" in out and "train KL" in out


def test_sweep_parallel_prints_the_ratio_and_the_summary(tmp_path):
    out = run_module(
        "benchmarks.sweep_parallel",
        "--agents",
        "qlearning_tabular",
        "--seeds",
        "0",
        "1",
        "--steps",
        "4096",
        "--episodes",
        "10",
        "--out",
        str(tmp_path),
    )
    assert "ratio sequential / parallel" in out and "eval/random_as_x/win_rate" in out
    assert (tmp_path / "parallel_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tensorboard_screenshots_of_a_tiny_run(tmp_path):
    from benchmarks.tensorboard_screenshots import find_browser, screenshots

    if find_browser() is None:
        pytest.skip("no headless Chromium on this machine (apt install chromium)")
    from agents import train
    from tests.test_train import tiny_config

    train.run(tiny_config("ppo"), tmp_path / "run")
    shots = screenshots(tmp_path, tmp_path / "shots", tabs=("scalars", "hparams"), wait_ms=5000)
    assert [p.name for p in shots] == ["scalars.png", "hparams.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots)


def test_torchrun_speed_prints_the_ratio(tmp_path):
    out = run_module(
        "benchmarks.torchrun_speed",
        "--num-envs",
        "16",
        "--steps",
        "1024",
        "--out",
        str(tmp_path),
        "--",
        "agent.rollout_steps=16",
        "env.evaluation.episodes=20",
        "env.evaluation.num_envs=10",
    )
    assert "ratio 2 processes / 1" in out and "2 process(es)" in out


def test_gae_speed_prints_the_ratios():
    out = run_module("benchmarks.gae_speed", "--sizes", "16x4", "--repeats", "1")
    assert "loop / this" in out and "agents.gae.gae" in out and "floor" in out


def test_exact_win_as_x_matches_playing_the_games():
    import torch

    from benchmarks.tictactoe_learning import exact_win_as_x
    from rlenv.tictactoe import TicTacToeVectorEnv

    class FirstLegalCell:  # a deterministic policy with a known, imperfect play
        device = torch.device("cpu")

        def act(self, obs, action_mask, deterministic=False):
            return action_mask.int().argmax(dim=1)

    agent = FirstLegalCell()
    opening, exact = exact_win_as_x(agent)
    env = TicTacToeVectorEnv(4000, agent_plays="x", opponent="random")
    obs, info = env.reset(seed=0)
    wins = games = 0
    while games < 20000:
        obs, _, terminated, _, info = env.step(agent.act(obs, info["action_mask"]))
        wins += int((info["outcome"][terminated] == 1).sum())
        games += int(terminated.sum())
    assert opening == 0
    assert abs(wins / games - exact) < 0.015, (wins / games, exact)


def test_tictactoe_env_prints_plies_per_second_and_the_opponent_ratio():
    out = run_module("benchmarks.tictactoe_env", "--seconds", "0.05", "--batches", "16")
    assert "vector B=16, perfect" in out and "single env, random" in out
    assert "random / perfect opponent" in out


def test_tictactoe_vs_sb3_times_both_learners_to_the_threshold():
    pytest.importorskip("sb3_contrib")
    # a near-random policy wins about 58 % as X against random: both reach 30 % at the first check
    out = run_module(
        "benchmarks.tictactoe_vs_sb3", "--threshold", "0.3", "--games", "100", "--check-every", "0.5"
    )
    assert "rlenv PPO (preset)" in out and "SB3 MaskablePPO" in out
    assert "SB3 time / our time:" in out


def test_plies_per_step_counts_the_marks_placed():
    from benchmarks.tictactoe_env import plies_per_step

    # an agent move plus a reply on most steps, a little less where the agent's move ends the game,
    # a little more where the next episode opens with the opponent's move
    assert 1.5 < plies_per_step("random", 64, "cpu", steps=50) < 2.2


def test_deploy_compares_the_compressed_exports_of_a_tiny_run(tmp_path):
    from agents import train
    from tests.agents.test_text_ppo import TINY_TEXT
    from tests.test_config import compose_config

    train.run(compose_config(["agent=ppo", *TINY_TEXT, "train.total_env_steps=32"]), tmp_path / "run")
    out = run_module(
        "benchmarks.deploy",
        "--run",
        str(tmp_path / "run"),
        "--prune",
        "0.5",
        "--prompts",
        "4",
        "--new-tokens",
        "4",
        "--speed-batch",
        "2",
        "--speed-tokens",
        "4",
        "--repeats",
        "1",
        "--threads",
        "1",
    )
    for row in ("merged float32", "int8", "pruned 0.5 + int8"):
        assert row in out


def test_ai_labeler_agreement_runs_with_tiny_models(tmp_path):
    from rlenv.text.models import tiny_causal_lm
    from tests.feedback.test_ai_labeler import letter_tokenizer

    tiny_causal_lm().save_pretrained(tmp_path)
    letter_tokenizer().save_pretrained(tmp_path)
    out = run_module(
        "benchmarks.ai_labeler_agreement",
        "--policy",
        "tiny",
        "--judge",
        str(tmp_path),
        "--prompts",
        "3",
        "--completions",
        "3",
        "--new-tokens",
        "3",
        "--threads",
        "1",
    )
    assert "AI labeler" in out and "strictly ordered pairs" in out


def test_math_tools_scores_pal_and_chain_of_thought_with_the_tiny_model():
    out = run_module(
        "benchmarks.math_tools", "--model", "tiny", "--problems", "3", "--new-tokens", "4", "--threads", "1"
    )
    assert "pal: tiny, 3 held-out problems" in out and "math_cot: tiny" in out and "success" in out


def test_tool_agents_plays_held_out_shopbot_episodes_with_the_tiny_model():
    out = run_module(
        "benchmarks.tool_agents", "--model", "tiny", "--episodes", "2", "--num-envs", "2", "--threads", "1",
        "env.vector.window=400", "env.vector.max_turns=2", "env.vector.max_turn_tokens=4",
    )  # fmt: skip
    assert "# shopbot: 2 held-out episodes, greedy" in out and "## base tiny: success 0.000 (0/2)" in out
    assert "--- success=0" in out and "Customer: Hi" in out and "Thought:" in out


def test_shared_prefix_prints_the_speed_up_and_an_exact_match_with_the_tiny_model():
    out = run_module(
        "benchmarks.shared_prefix", "--model", "tiny", "--batch", "3", "--rest", "20", "--repeats", "1"
    )
    assert "| shared prefix once |" in out and "| each row whole |" in out
    difference = float(out.rsplit("largest log-prob difference: ", 1)[1].split()[0])
    assert difference < 1e-4


def test_tilted_gains_reach_each_target_kl_and_grow_with_it():
    import torch

    from benchmarks.rlhf_kl_budget import tilted_gains

    torch.manual_seed(0)
    scores = torch.rand(8, 16)
    gains = tilted_gains(scores, [0.1, 0.5, 1.0, 10.0])
    for target in (0.1, 0.5, 1.0):
        assert gains[target][1] == pytest.approx(target, abs=1e-3)
    assert 0 < gains[0.1][0] < gains[0.5][0] < gains[1.0][0]
    best = float(scores.max(dim=1).values.mean() - scores.mean())
    assert gains[10.0][0] == pytest.approx(best, abs=1e-3)  # past log 16 nats: the best sample
    flat = tilted_gains(torch.ones(4, 16), [1.0])[1.0]
    assert flat[0] == pytest.approx(0.0) and flat[1] == pytest.approx(0.0, abs=1e-6)


def test_rlhf_kl_budget_bound_runs_with_the_tiny_model():
    out = run_module(
        "benchmarks.rlhf_kl_budget",
        "--model",
        "tiny",
        "--bound",
        "2",
        "--new-tokens",
        "4",
        "--targets",
        "0.1",
    )
    assert "tilted optimum at KL 0.1" in out and "best-of-2" in out
