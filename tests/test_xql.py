"""algorithms/xql.py: the Gumbel loss by hand, its soft-max fixed point, smoke run, bad flags, CLI."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms import xql
from conftest import check_bad_flag, check_finished_run

E = math.e


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_gumbel_loss_with_clip():
    diff = torch.tensor([2.0, -2.0, 0.0, 20.0])
    # beta = 2: z = diff / 2 = [1, -1, 0, 10]; max_clip = 7 clips the last to 7; m = max(7, -1) = 7
    # loss = e^-m (e^z - z - 1) = e^-7 [e - 2, e^-1, 0, e^7 - 8]
    expected = math.exp(-7) * torch.tensor([E - 2, 1 / E, 0.0, math.exp(7) - 8])
    torch.testing.assert_close(xql.gumbel_loss(diff, 2.0, 7.0), expected)
    # without the clip (max_clip = 100): z = [1, -1, 0, 10], m = 10: e^-10 [e - 2, e^-1, 0, e^10 - 11]
    expected = math.exp(-10) * torch.tensor([E - 2, 1 / E, 0.0, math.exp(10) - 11])
    torch.testing.assert_close(xql.gumbel_loss(diff, 2.0, 100.0), expected)


def test_gumbel_loss_normalizer_is_at_least_minus_one():
    diff = torch.tensor([-4.0, -6.0])
    # beta = 2: z = [-2, -3], max z = -2 < -1, so m = -1: loss = e (e^z - z - 1) = e [e^-2 + 1, e^-3 + 2]
    expected = E * torch.tensor([math.exp(-2) + 1, math.exp(-3) + 2])
    torch.testing.assert_close(xql.gumbel_loss(diff, 2.0, 7.0), expected)


def test_value_loss_gradient_pushes_v_toward_q_and_ignores_clipped_samples():
    v = torch.zeros(3, requires_grad=True)
    q_min = torch.tensor([2.0, -2.0, 20.0])
    # beta = 2, max_clip = 7: z = (q - v) / 2 = [1, -1, 10 -> 7]; m = 7
    loss = xql.value_loss(v, q_min, 2.0, 7.0)
    # mean of e^-7 [e - 2, e^-1, e^7 - 8]
    torch.testing.assert_close(loss, torch.tensor(math.exp(-7) * (E - 2 + 1 / E + math.exp(7) - 8) / 3))
    loss.backward()
    # d/dv_i = e^-m (e^z_i - 1) dz_i/dv_i / B with dz/dv = -1/beta = -1/2, and 0 where z was clipped:
    # [-(e - 1), -(e^-1 - 1), 0] e^-7 / 6
    expected = torch.tensor([-(E - 1), -(1 / E - 1), 0.0]) * math.exp(-7) / 6
    torch.testing.assert_close(v.grad, expected)
    assert v.grad[0] < 0 < v.grad[1]  # gradient descent raises V where Q > V and lowers it where Q < V
    assert v.grad[0].abs() > v.grad[1].abs()  # asymmetric: exp(z) - 1 weighs Q above V more (a soft max)


def test_value_loss_normalizer_carries_no_gradient():
    v = torch.zeros(2, requires_grad=True)
    q_min = torch.tensor([2.0, -2.0])
    # beta = 2: z = [1, -1], m = 1 (the max is v-dependent, but detached)
    xql.value_loss(v, q_min, 2.0, 7.0).backward()
    # d/dv_i = e^-1 (e^z_i - 1) (-1/2) / 2 = [-(1 - e^-1), -(e^-2 - e^-1)] / 4
    torch.testing.assert_close(v.grad, torch.tensor([-(1 - 1 / E), -(math.exp(-2) - 1 / E)]) / 4)


def test_q_loss_is_huber_with_delta_20():
    q = torch.tensor([[1.0, 30.0], [0.0, -25.0]], requires_grad=True)  # [n=2 members, B=2]
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    next_v = torch.tensor([2.0, 5.0], requires_grad=True)
    # gamma = 0.5: target = r + gamma (1 - d) V(s') = [1 + 0.5 * 2, 0] = [2, 0]
    # huber_20(u) = u^2 / 2 if |u| <= 20 else 20 (|u| - 10)
    # member 1: u = [-1, 30] -> [0.5, 400], mean 200.25; member 2: u = [-2, -25] -> [2, 300], mean 151
    loss = xql.q_loss(q, rew, done, next_v, 0.5)
    torch.testing.assert_close(loss, torch.tensor(351.25))
    loss.backward()
    # d/dq = clip(u, -20, 20) / B: [[-0.5, 10], [-1, -10]]; the target is a constant: no gradient into V(s')
    torch.testing.assert_close(q.grad, torch.tensor([[-0.5, 10.0], [-1.0, -10.0]]))
    assert next_v.grad is None


def test_actor_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([0.0, 1.0, -math.log(2.0)], requires_grad=True)
    # beta = 2, max_weight = 5: weights = [exp(0), min(exp(2), 5), exp(-2 ln 2)] = [1, 5, 0.25]
    # loss = -mean(w log pi) = -(1 * -1 + 5 * -2 + 0.25 * -0.5) / 3 = 11.125 / 3
    loss = xql.actor_loss(log_prob, adv, beta=2.0, max_weight=5.0)
    torch.testing.assert_close(loss, torch.tensor(11.125 / 3))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -5.0, -0.25]) / 3)
    assert adv.grad is None


@pytest.mark.parametrize("beta", [1.0, 2.0, 100.0])
def test_gumbel_regression_moves_v_to_the_soft_max_of_q(beta):
    # Lemma: argmin_V E[exp((Q - V)/beta) - (Q - V)/beta - 1] = beta log E[exp(Q / beta)]
    q_samples = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])  # mean 3.2, max 10
    expected = beta * (torch.logsumexp(q_samples / beta, 0) - math.log(5)).item()
    # beta = 1: log((1 + e + e^2 + e^3 + e^10) / 5) = 8.39; beta = 100: about mean + var / (2 beta) = 3.26
    v = torch.full((1,), 3.2, requires_grad=True)  # start at the mean: no sample beyond max_clip
    opt = torch.optim.Adam([v], lr=0.05)
    for i in range(800):
        for g in opt.param_groups:
            g["lr"] = 0.05 * (1 - i / 800) + 1e-3
        loss = xql.value_loss(v.expand(5), q_samples, beta, 7.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert v.item() == pytest.approx(expected, abs=0.05)
    assert q_samples.mean() < v.item() < q_samples.max()  # between the mean (beta -> inf) and the max (beta -> 0)
    if beta == 1.0:
        assert v.item() > 8.0  # near the max, far above the mean


def test_value_network_has_layer_norm_before_each_relu():
    kinds = [type(m).__name__ for m in xql.mlp(4, 8, 1, layer_norm=True)]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
    assert [type(m).__name__ for m in xql.mlp(4, 8, 1)] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = xql.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, hidden_dim=64, runs_dir=str(tmp_path / "runs"), progress=False)
    _, _, ckpt = check_finished_run(xql, args, xql.train(args), loss_key="loss/q", networks=("q", "value", "policy"),
                                    finite=("loss/value", "loss/actor", "loss/q", "adv_mean", "v_mean"))
    assert any("weight" in k and t.dim() == 1 for k, t in ckpt["value"].items())  # V's LayerNorm is saved



# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("regularizer_weight", 0.0, "--regularizer-weight"),
    ("regularizer_weight", -1.0, "--regularizer-weight"),
    ("regularizer_weight", float("nan"), "--regularizer-weight"), ("max_clip", 0.0, "--max-clip"),
    ("inverse_temperature", -0.1, "--inverse-temperature"),
    ("max_weight", 0.0, "--max-weight"), ("hidden_dim", 0, "--hidden-dim"), ("total_steps", 0, "--total-steps"),
    ("gamma", 1.0, "--gamma"), ("tau", 0.0, "--tau"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(xql, field, value, flag, tmp_path)
