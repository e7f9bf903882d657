"""ShopBot: seeded databases and requests, tools that check their arguments, read-only SQL, and
scripted episodes through the env that succeed or fail as the database says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlenv.tools.react import ToolUseVectorEnv
from rlenv.tools.shop import database_digest
from rlenv.tools.shopbot import ShopTask, handbook, stated_numbers
from tests.tools.test_retrieval import BagOfWords

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def task():
    task = ShopTask(encoder=BagOfWords())
    yield task
    task.close()


def episodes(task, seed, kind, split="train", count=1):
    rng, found = np.random.default_rng(seed), []
    while len(found) < count:
        episode = task.episode(rng, split)
        if episode.kind == kind:
            found.append(episode)
    return found


def test_same_seed_same_episodes_and_databases(task):
    first = [task.episode(np.random.default_rng(4), "train") for _ in range(1)]
    again = [task.episode(np.random.default_rng(4), "train") for _ in range(1)]
    other = task.episode(np.random.default_rng(5), "train")
    assert [e.prompt for e in first] == [e.prompt for e in again]
    assert database_digest(first[0].database) == database_digest(again[0].database)
    assert database_digest(other.database) != database_digest(first[0].database)
    held = task.episode(np.random.default_rng(4), "heldout")
    assert (
        int(held.database.stem.split("-")[1]) % 2 == 1 and int(first[0].database.stem.split("-")[1]) % 2 == 0
    )


def test_return_needs_the_right_label_and_the_confirmation_email(task):
    (episode,) = episodes(task, 0, "return")
    order_id, item = episode.truth
    assert episode.outcome(None).score == 0.0
    assert episode.call("label", "99999, kettle").startswith("error: there is no order 99999")
    assert "not 'no such thing'" in episode.call("label", f"{order_id}, no such thing")
    assert episode.call("label", "seventeen").startswith("error: write label[order_id, item]")
    assert episode.call("label", f"{order_id}, {item}").startswith(f"return label RL-{order_id:04d}")
    assert not episode.outcome("done").success
    assert episode.call("email", "nobody@example.com").startswith("error: no customer has the address")
    assert episode.call("email", episode.customer.email) == f"email sent to {episode.customer.email}"
    outcome = episode.outcome(None)
    assert outcome.success and outcome.score == 1.0
    assert outcome.detail.startswith(f"return: order {order_id} ({item}), label yes, email")


def test_label_refuses_orders_that_are_not_delivered(task):
    (episode,) = episodes(task, 1, "status")
    rows = episode.call(
        "sql",
        "SELECT o.id, i.name FROM orders o JOIN order_lines l ON l.order_id = o.id "
        "JOIN items i ON i.id = l.item_id WHERE o.status = 'processing' LIMIT 1",
    )
    order_id, item = rows.splitlines()[1].split(" | ")
    assert "is processing, not delivered" in episode.call("label", f"{order_id}, {item}")


def test_status_total_and_policy_answers_are_checked_against_the_truth(task):
    (status,) = episodes(task, 2, "status")
    assert status.outcome(f"It is {status.truth}.").success
    other = next(s for s in ("processing", "shipped", "delivered", "returned") if s != status.truth)
    assert not status.outcome(f"It is {status.truth} or {other}").success
    assert not status.outcome(None).success
    (total,) = episodes(task, 3, "total")
    assert total.outcome(f"The total is ${total.truth:,.2f}.").success
    assert not total.outcome(f"The total is {total.truth + 1}").success
    (policy,) = episodes(task, 4, "policy")
    assert policy.outcome(f"You have {policy.truth} of them").success
    assert policy.call("search", "refund days").startswith("[policy-")
    assert stated_numbers("a 1,250.5 b -3") == [1250.5, -3.0]


def test_heldout_policy_questions_are_kept_out_of_training(task):
    train = {e.prompt for e in episodes(task, 5, "policy", count=20)}
    held = {e.prompt for e in episodes(task, 5, "policy", "heldout", count=10)}
    questions = [q["question"] for q in handbook()["questions"]]
    assert all(any(p.endswith(f"Customer: {q}\nThought:") for q in questions[-2:]) for p in held)
    assert not any(p.endswith(f"Customer: {q}\nThought:") for p in train for q in questions[-2:])


def test_the_customer_answers_from_the_profile(task):
    (episode,) = episodes(task, 6, "return")
    reply = episode.call("ask", "What is your email address?")
    assert reply == f"Customer: My email is {episode.customer.email}."
    assert "I ordered on" in episode.call("ask", "What is the order number?")
    assert "don't understand" in episode.call("ask", "Nice weather?")


def test_sql_through_the_env_only_reads(task):
    (episode,) = episodes(task, 7, "total")
    before = database_digest(episode.database)
    for query in (
        "DELETE FROM orders",
        "UPDATE items SET price_cents = 0",
        "DROP TABLE customers",
        "SELECT 1; DELETE FROM orders",
        "ATTACH DATABASE 'x.db' AS x",
    ):
        assert episode.call("sql", query).startswith("error:")
    assert database_digest(episode.database) == before


def play(env, row, text):
    """Step the env with ``text``'s tokens in ``row`` (other rows idle on a space)."""
    space = env.tokenizer(" ", add_special_tokens=False)["input_ids"][0]
    result = None
    for token in env.tokenizer(text, add_special_tokens=False)["input_ids"]:
        actions = [space] * env.num_envs
        actions[row] = token
        result = env.step(actions)
    return result


def test_a_scripted_return_through_the_env_succeeds_and_pays_for_its_turns():
    task = ShopTask(kinds={"return": 1.0}, encoder=BagOfWords())
    env = ToolUseVectorEnv(task, num_envs=1, autoreset_mode="disabled", turn_cost=0.05, max_turn_tokens=64)
    try:
        env.reset(seed=3)
        episode = env._episodes[0]
        (order_id, item), name = episode.truth, episode.customer.name
        play(env, 0, f" Find it.\nAction: sql[SELECT c.email FROM customers c WHERE c.name = '{name}']")
        assert episode.customer.email in env.transcript(0).split("Observation:")[1]
        play(env, 0, f" Label.\nAction: label[{order_id}, {item}]")
        play(env, 0, f" Email.\nAction: email[{episode.customer.email}]")
        _, reward, terminated, _, info = play(env, 0, " Done.\nAction: finish[Your label is on its way.]")
        assert terminated.tolist() == [True] and info["episode_metrics"]["success"].tolist() == [1.0]
        assert info["episode_metrics"]["turns"].tolist() == [3.0]
        assert reward.item() == pytest.approx(1.0)  # the turn costs came at each answered turn
        assert "Observation: email sent to" in info["completion"][0]
    finally:
        env.close()
