from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.testing import assert_close

from agents.networks.lm import LMActorCritic, LMQNetwork
from agents.networks.lm_core import unique_parameter_bytes
from rlenv.text.models import tiny_causal_lm
from rlenv.text.tokens import push_tokens

VOCAB, WINDOW, PAD = 48, 16, 0


def obs_space(window: int = WINDOW) -> spaces.Dict:
    box = spaces.Box(0, VOCAB - 1, shape=(window,), dtype=np.int64)
    return spaces.Dict(
        {"input_ids": box, "attention_mask": spaces.Box(0, 1, shape=(window,), dtype=np.int64)}
    )


def make_net(cls=LMActorCritic, **kwargs) -> torch.nn.Module:
    kwargs.setdefault("model", tiny_causal_lm(VOCAB))
    return cls(obs_space(), spaces.Discrete(VOCAB), **kwargs)


def left_padded(prompts: list[list[int]], window: int = WINDOW) -> dict[str, torch.Tensor]:
    ids = torch.full((len(prompts), window), PAD)
    mask = torch.zeros((len(prompts), window), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, window - len(prompt) :] = torch.tensor(prompt)
        mask[row, window - len(prompt) :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def random_prompts(lengths: list[int], seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=generator).tolist() for n in lengths]


def shift(
    window: dict[str, torch.Tensor], tokens: torch.Tensor, active: torch.Tensor
) -> dict[str, torch.Tensor]:
    token = torch.where(active, tokens, torch.full_like(tokens, PAD)).view(-1, 1)
    return {
        "input_ids": torch.cat([window["input_ids"][:, 1:], token], 1),
        "attention_mask": torch.cat([window["attention_mask"][:, 1:], active.long().view(-1, 1)], 1),
    }


def set_adapter_weights(net: torch.nn.Module, seed: int = 3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if "lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


@torch.no_grad()
def acting(net: torch.nn.Module, window: dict[str, torch.Tensor]):
    """What the network gives an agent acting without gradients: through its KV cache."""
    return net(window)


@pytest.mark.parametrize("finished_rows", ["unattended_pad", "unchanged"])
def test_cached_acting_matches_full_forward_with_padding_and_early_finish(finished_rows):
    net = make_net()
    window = left_padded(random_prompts([2, 5, 9, 3]))
    logits, values = acting(net, window)
    for step in range(8):
        full_logits, full_values = net(window)
        assert_close(logits, full_logits, atol=1e-5, rtol=1e-5)
        assert_close(values, full_values)
        actions = torch.distributions.Categorical(logits=logits).sample()
        active = torch.tensor([True, step < 2, step < 5, True])
        if finished_rows == "unattended_pad":
            window = shift(window, actions, active)
        else:  # the text env's batches of whole episodes: a finished row's window stays as it was
            ids, mask = push_tokens(window["input_ids"], window["attention_mask"], actions, active)
            window = {"input_ids": ids, "attention_mask": mask}
        logits, values = acting(net, window)
    assert_close(torch.log_softmax(logits, -1), torch.log_softmax(net(window)[0], -1), atol=1e-5, rtol=1e-5)


def test_cached_acting_follows_env_windows_through_resets_and_overflow():
    net = make_net(cls=LMQNetwork)
    window = left_padded(random_prompts([3, 13, 6], seed=2))
    for step in range(10):
        q = acting(net, window)
        assert_close(q, net(window), atol=1e-5, rtol=1e-5)
        actions = q.argmax(-1)
        window = shift(window, actions, torch.ones(3, dtype=torch.bool))
        if step == 4:
            fresh = left_padded(random_prompts([4], seed=5))
            for key in window:
                window[key][1] = fresh[key][0]
    assert net.core.context.length <= WINDOW


def test_forward_ignores_left_padding():
    net = make_net()
    prompt = random_prompts([5])
    padded_logits, padded_values = net(left_padded(prompt, window=12))
    bare_logits, bare_values = net(left_padded(prompt, window=5))
    assert_close(padded_logits, bare_logits, atol=1e-5, rtol=1e-5)
    assert_close(padded_values, bare_values)


@torch.no_grad()
def plain_log_probs(model: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-token log-probs of a plain causal LM over left-padded sequences (B, L, V)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return torch.log_softmax(
        model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits, -1
    )


def test_reference_is_base_model_before_and_after_adapter_changes():
    base = tiny_causal_lm(VOCAB)
    net = make_net()
    obs = left_padded(random_prompts([4, 7]))
    base_last = plain_log_probs(base, obs["input_ids"], obs["attention_mask"])[:, -1]
    assert_close(torch.log_softmax(net(obs)[0], -1), base_last, atol=1e-5, rtol=1e-5)
    set_adapter_weights(net)
    assert (torch.log_softmax(net(obs)[0], -1) - base_last).abs().max() > 1e-2
    assert_close(torch.log_softmax(net.reference_logits(obs), -1), base_last, atol=1e-5, rtol=1e-5)
    sequences = torch.cat([obs["input_ids"], torch.tensor([[5, 6, 7], [8, 9, 10]])], 1)
    mask = torch.cat([obs["attention_mask"], torch.ones(2, 3, dtype=torch.long)], 1)
    base_all = plain_log_probs(base, sequences, mask)
    expected = base_all[:, WINDOW - 1 : -1].gather(-1, sequences[:, WINDOW:, None]).squeeze(-1).T
    assert_close(net.reference_log_probs(sequences, mask, WINDOW), expected, atol=1e-5, rtol=1e-5)
    assert net(obs)[0].requires_grad and not net.reference_logits(obs).requires_grad


def test_lora_keeps_one_copy_of_base_weights():
    base = tiny_causal_lm(VOCAB)
    base_pointers = {p.data_ptr() for p in base.parameters()}
    base_bytes = unique_parameter_bytes(base)
    net = make_net(model=base)
    pointers = [p.data_ptr() for p in net.parameters()]
    assert len(pointers) == len(set(pointers))
    assert base_pointers <= set(pointers)
    extra = sum(p.numel() * p.element_size() for p in net.parameters() if p.requires_grad)
    assert unique_parameter_bytes(net) == base_bytes + extra
    assert unique_parameter_bytes(make_net(lora=None)) >= 2 * base_bytes


def test_evaluate_sequences_matches_step_by_step_acting():
    net = make_net(lora={"r": 4, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    set_adapter_weights(net)
    start = left_padded(random_prompts([3, 6, 2]))
    window = start
    logits, values = acting(net, window)
    steps: list[tuple[torch.Tensor, ...]] = []
    for step in range(6):
        actions = torch.distributions.Categorical(logits=logits).sample()
        active = torch.tensor([True, step < 3, True])
        log_probs = torch.log_softmax(logits, -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        steps.append((log_probs.gather(-1, actions[:, None]).squeeze(-1), entropy, values, actions, active))
        window = shift(window, actions, active)
        logits, values = acting(net, window)
    log_probs, entropies, values, actions, active = (
        torch.stack(column) for column in zip(*steps, strict=True)
    )
    sequences = torch.cat([start["input_ids"], torch.where(active, actions, PAD).T], 1)
    mask = torch.cat([start["attention_mask"], active.long().T], 1)
    evaluation = net.evaluate_sequences(sequences, mask, WINDOW)
    assert evaluation.log_probs.shape == (6, 3)
    for got, expected in ((evaluation.log_probs, log_probs), (evaluation.entropies, entropies)):
        assert_close(got[active], expected[active], atol=1e-5, rtol=1e-5)
    assert_close(evaluation.values, values, atol=1e-5, rtol=1e-5)
    episodes = net.evaluate_episodes(start, actions, active)
    assert_close(episodes.log_probs[active], log_probs[active], atol=1e-5, rtol=1e-5)
    reference = net.reference_episodes(start, actions, active)
    assert_close(reference[active], net.reference_log_probs(sequences, mask, WINDOW)[active])


def test_gradients_reach_only_lora_and_value_head():
    net = make_net(value_head_hidden=8)
    set_adapter_weights(net)
    with torch.no_grad():
        net.value_head[-1].weight.fill_(0.1)
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name or name.startswith("value_head") for name in trainable)
    sequences = torch.randint(2, VOCAB, (2, 10))
    evaluation = net.evaluate_sequences(sequences, torch.ones_like(sequences), 4)
    (evaluation.log_probs.sum() + evaluation.values.sum() + evaluation.entropies.sum()).backward()
    for name, parameter in net.named_parameters():
        if name in trainable:
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        else:
            assert parameter.grad is None, name


def test_q_network_starts_from_log_probs_and_deepcopy_shares_frozen_base():
    net = make_net(cls=LMQNetwork, logit_scale=0.5)
    obs = left_padded(random_prompts([4, 2]))
    assert_close(net(obs), 0.5 * torch.log_softmax(make_net()(obs)[0], -1))
    assert bool((net(obs) <= 0).all())  # the best token's value starts near 0, never above
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert {"scale", "bias"} <= trainable and all(n in ("scale", "bias") or "lora_" in n for n in trainable)
    acting(net, obs)
    target = copy.deepcopy(net)
    assert target.core.context.cache is None and net.core.context.cache is not None
    frozen = {p.data_ptr() for p in net.parameters() if not p.requires_grad}
    assert frozen <= {p.data_ptr() for p in target.parameters()}
    with torch.no_grad():
        net.bias.add_(1.0)
        set_adapter_weights(net)
    assert (net(obs) - target(obs)).abs().max() > 0.5
    target.load_state_dict(net.state_dict())
    assert_close(target(obs), net(obs))


@pytest.mark.parametrize("lora", [{"r": 2}, None])
def test_state_dict_holds_trainable_weights_and_round_trips(lora):
    net = make_net(lora=lora, value_head_hidden=4)
    set_adapter_weights(net)
    with torch.no_grad():
        for parameter in net.value_head.parameters():
            parameter.add_(0.1)
    state = net.state_dict()
    trainable = {name for name, p in net.named_parameters() if p.requires_grad}
    assert set(state) == trainable
    restored = make_net(lora=lora, value_head_hidden=4)
    restored.load_state_dict(state)
    obs = left_padded(random_prompts([5, 3]))
    for got, expected in zip(restored(obs), net(obs), strict=True):
        assert_close(got, expected)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="1000 tokens"):
        LMActorCritic(obs_space(), spaces.Discrete(1000), model=tiny_causal_lm(VOCAB))
    with pytest.raises(ValueError, match="rank"):
        make_net(lora={"rank": 4})
    net = make_net()
    with pytest.raises(ValueError, match="response_start 12"):
        net.evaluate_sequences(torch.ones(1, 12, dtype=torch.long), torch.ones(1, 12, dtype=torch.long), 12)
    with pytest.raises(KeyError, match="attention_mask"):
        net({"input_ids": torch.ones(1, 4, dtype=torch.long)})


def test_a_prefix_shared_by_every_row_is_encoded_once_with_the_same_states_and_gradients(monkeypatch):
    from agents.networks import lm_core

    net = make_net()
    set_adapter_weights(net)
    shared = random_prompts([40], seed=5)[0]
    rows = [shared + rest for rest in random_prompts([6, 11, 3, 9], seed=6)]
    batch = left_padded(rows, window=64)
    batch["attention_mask"][1, -2:] = 0  # a row that finished early
    starts = (batch["attention_mask"].cumsum(-1) == 0).sum(-1)
    assert lm_core.shared_prefix_length(batch["input_ids"], batch["attention_mask"], starts, 100) == 40
    assert lm_core.shared_prefix_length(batch["input_ids"], batch["attention_mask"], starts, 25) == 25
    columns = torch.tensor([[61, 62, 63]] * 4)
    calls = []

    def run(minimum: int):
        monkeypatch.setattr(lm_core, "SHARED_PREFIX_MIN", minimum)
        net.zero_grad()
        hidden = net.core.hidden
        monkeypatch.setattr(
            net.core, "hidden", lambda lm, ids, *a: calls.append(ids.shape) or hidden(lm, ids, *a)
        )
        _, at = net.core.encode_at(batch["input_ids"], batch["attention_mask"], columns)
        _, tail = net.core.encode(batch["input_ids"], batch["attention_mask"], 61)
        reference = net.core.encode_at(batch["input_ids"], batch["attention_mask"], columns, reference=True)[
            1
        ]
        (at.logsumexp(-1).sum() + tail[:, :, 0].sum()).backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        return at, tail, reference, grads

    once = run(32)
    assert calls[0] == (1, 40)  # the prefix alone, once for the batch
    calls.clear()
    each = run(10**9)
    assert all(shape[0] == 4 for shape in calls)
    for a, b in zip(once[:3], each[:3], strict=True):
        assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert once[3].keys() == each[3].keys() and len(once[3]) > 0
    for name in once[3]:
        assert_close(once[3][name], each[3][name], atol=1e-4, rtol=1e-3)  # float32 sums in another order
