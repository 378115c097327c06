"""algorithms/eql.py: losses and actor weights by hand, the soft-max V and its clip, smoke run, bad flags, CLI."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms import eql
from conftest import check_bad_flag, check_finished_run


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_value_loss():
    v = torch.tensor([0.0, 1.0], requires_grad=True)
    q_min = torch.tensor([2.0, -1.0])
    # alpha = 2: z = (q - v) / alpha = [1, -1] (under the clip at 5); m = max(max z, -1) = 1
    # L = mean(exp(z - m) + exp(-m) v / alpha) = mean(exp(0) + 0, exp(-2) + exp(-1) * 0.5)
    #   = (1 + e^-2 + 0.5 e^-1) / 2 = exp(-1) * mean(exp(z) + v / alpha): the paper's loss scaled by e^-m
    loss = eql.value_loss(v, q_min, alpha=2.0)
    torch.testing.assert_close(loss, torch.tensor((1 + math.exp(-2) + 0.5 * math.exp(-1)) / 2))
    torch.testing.assert_close(loss, math.exp(-1) * (torch.exp((q_min - v) / 2) + v / 2).mean())
    loss.backward()
    # m is a constant (stop-gradient): d/dv_i = e^-m (1 - exp(z_i)) / (alpha B) = e^-1 / 4 * [1 - e, 1 - e^-1];
    # the gradient of the paper's loss scaled by e^-m, zero where E[exp(z)] = 1
    torch.testing.assert_close(v.grad, math.exp(-1) / 4 * torch.tensor([1 - math.e, 1 - math.exp(-1)]))


def test_value_loss_clips_the_exponent_and_floors_the_shift():
    # clip: alpha = 2, u / alpha = [10, 0] -> z = [5, 0]; m = 5
    # L = mean(exp(5 - 5) + e^-5 * 0 / 2, exp(0 - 5) + 0) = (1 + e^-5) / 2
    v = torch.tensor([0.0, 0.0], requires_grad=True)
    loss = eql.value_loss(v, torch.tensor([20.0, 0.0]), alpha=2.0)
    torch.testing.assert_close(loss, torch.tensor((1 + math.exp(-5)) / 2))
    loss.backward()
    # the clipped sample's exp term has no gradient, only its V / alpha term: e^-5 / (alpha B) = e^-5 / 4;
    # the other: e^-5 (1 - exp(0)) / 4 = 0
    torch.testing.assert_close(v.grad, torch.tensor([math.exp(-5) / 4, 0.0]))
    # floor: alpha = 1, z = [1 - 5, -1 - 5] = [-4, -6]; max z = -4 < -1, so m = -1
    # L = mean(exp(-4 + 1) + e^1 * 5, exp(-6 + 1) + e^1 * 5) = (e^-3 + e^-5) / 2 + 5 e
    v = torch.tensor([5.0, 5.0])
    torch.testing.assert_close(eql.value_loss(v, torch.tensor([1.0, -1.0]), alpha=1.0),
                               torch.tensor((math.exp(-3) + math.exp(-5)) / 2 + 5 * math.e))


def test_q_loss():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # [n=2 members, B=2]
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    next_v = torch.tensor([2.0, 5.0], requires_grad=True)
    # gamma = 0.5: target = r + gamma (1 - d) V(s') = [1 + 0.5 * 1 * 2, 0 + 0.5 * 0 * 5] = [2, 0]
    # member 1: mean((1 - 2)^2, (2 - 0)^2) = 2.5; member 2: mean((0 - 2)^2, (1 - 0)^2) = 2.5; sum = 5
    loss = eql.q_loss(q, rew, done, next_v, 0.5)
    torch.testing.assert_close(loss, torch.tensor(5.0))
    loss.backward()
    # d/dq = 2 (q - target) / B = [[-1, 2], [-2, 1]]; the target is a constant: no gradient into V(s')
    torch.testing.assert_close(q.grad, torch.tensor([[-1.0, 2.0], [-2.0, 1.0]]))
    assert next_v.grad is None


def test_actor_weight():
    adv = torch.tensor([0.0, 0.2, -0.4, 2.0, 1000.0], requires_grad=True)
    # alpha = 2, k = 10 (authors' code): exp(5 A) = [1, e, e^-2, min(e^10, 100), min(inf, 100)]
    w = eql.actor_weight(adv, alpha=2.0, adv_scale=10.0, max_weight=100.0)
    torch.testing.assert_close(w, torch.tensor([1.0, math.e, math.exp(-2), 100.0, 100.0]))
    assert not w.requires_grad  # a weight, not a path for gradients into Q or V
    # alpha = 2, k = 1 (the paper's policy exp(A / alpha)): [1, e^0.1, e^-0.2, e, 100]
    torch.testing.assert_close(eql.actor_weight(adv, 2.0, 1.0, 100.0),
                               torch.tensor([1.0, math.exp(0.1), math.exp(-0.2), math.e, 100.0]))
    # k = 0 is behaviour cloning: every weight is 1
    torch.testing.assert_close(eql.actor_weight(adv, 2.0, 0.0, 100.0), torch.ones(5))


def test_actor_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    weight = torch.tensor([1.0, 5.0, 0.25], requires_grad=True)
    # -mean(w log pi) = -(1 * -1 + 5 * -2 + 0.25 * -0.5) / 3 = 11.125 / 3
    loss = eql.actor_loss(log_prob, weight)
    torch.testing.assert_close(loss, torch.tensor(11.125 / 3))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -5.0, -0.25]) / 3)
    assert weight.grad is None


def fit_v(q_samples: torch.Tensor, alpha: float, start: float, steps: int = 1000) -> float:
    v = torch.full((1,), start, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.05)
    for _ in range(steps):
        loss = eql.value_loss(v.expand(len(q_samples)), q_samples, alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return v.item()


@pytest.mark.parametrize("alpha, expected", [
    # Q samples {0, 1, 2, 3, 10} (mean 3.2). At the minimum dL/dV = 0 gives E[exp((q - V)/alpha)] = 1, i.e.
    # V = alpha log mean(exp(q / alpha)), a soft maximum. Starting from V = max q, no sample reaches the clip
    # (q - V)/alpha > 5 on the way:
    # alpha = 1: log((1 + e + e^2 + e^3 + e^10) / 5) = 8.3920
    (1.0, 8.391977),
    # alpha = 2: 2 log((1 + e^0.5 + e + e^1.5 + e^5) / 5) = 6.9096
    (2.0, 6.909626),
])
def test_value_is_a_soft_max_of_q(alpha, expected):
    q_samples = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    v = fit_v(q_samples, alpha, start=10.0)
    assert v == pytest.approx(expected, abs=0.05)
    assert torch.exp((q_samples - v) / alpha).mean().item() == pytest.approx(1.0, abs=0.02)


def test_clip_bounds_the_pull_of_an_outlier():
    # Q samples {0, 0, 0, 0, 100}, alpha = 1: without the clip V would be log((4 + e^100) / 5) = 98.4. With it, the
    # outlier's exp term is flat (z = 5) while its V / alpha term still counts, so from V = 0 the gradient is zero
    # where 4 (1 - e^-V) + 1 = 0: V = -log(1.25) = -0.2231, at the bulk of the data
    v = fit_v(torch.tensor([0.0, 0.0, 0.0, 0.0, 100.0]), alpha=1.0, start=0.0)
    assert v == pytest.approx(-math.log(1.25), abs=0.02)
    # the same from below on {0, 1, 2, 3, 10}: the sample 10 stays clipped while V < 5, and V stops where
    # 4 - (1 + e + e^2 + e^3) e^-V + 1 = 0: V = log((1 + e + e^2 + e^3) / 5) = 1.8308, not the soft max 8.39
    v = fit_v(torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0]), alpha=1.0, start=0.0)
    assert v == pytest.approx(math.log((1 + math.e + math.e**2 + math.e**3) / 5), abs=0.02)


def test_value_network_has_layer_norm_and_policy_does_not():
    kinds = [type(m).__name__ for m in eql.mlp(4, 8, 1, layer_norm=True)]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
    assert [type(m).__name__ for m in eql.mlp(4, 8, 1)] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in eql.GaussianPolicy(4, 2, 8).modules())


def test_gaussian_policy_log_prob_and_action():
    torch.manual_seed(0)
    policy = eql.GaussianPolicy(obs_dim=4, act_dim=2, hidden=8)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 3.0]))  # 3.0 is clipped to log_std_max = 2
    obs, act = torch.randn(5, 4), torch.rand(5, 2) * 2 - 1
    mean = torch.tanh(policy.mu(obs))
    expected = torch.distributions.Normal(mean, torch.tensor([-0.5, 2.0]).exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)
    torch.testing.assert_close(policy.act(obs), mean)  # evaluation uses the mean action


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("adv_scale", [10.0, 1.0])
def test_train_smoke(adv_scale, tiny_hopper, tmp_path):
    args = eql.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, hidden_dim=32, adv_scale=adv_scale, runs_dir=str(tmp_path / "runs"),
                    progress=False)
    _, records, ckpt = check_finished_run(
        eql, args, eql.train(args), loss_key="loss/q", networks=("q", "value", "policy"),
        finite=("loss/value", "loss/actor", "loss/q", "adv_mean", "weight_mean", "weight_clip_frac"))
    assert all(0.0 <= r["weight_clip_frac"] <= 1.0 for r in records if "loss/q" in r)
    assert "1.weight" in ckpt["value"] and ckpt["value"]["1.weight"].shape == (32,)  # V's LayerNorm



# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("regularizer_weight", 0.0, "--regularizer-weight"),
    ("regularizer_weight", -1.0, "--regularizer-weight"),
    ("adv_scale", -1.0, "--adv-scale"), ("max_weight", 0.0, "--max-weight"),
    ("hidden_dim", 0, "--hidden-dim"), ("total_steps", 0, "--total-steps"), ("gamma", 1.0, "--gamma"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(eql, field, value, flag, tmp_path)
