"""algorithms/iql.py: losses against hand-computed values, expectile behaviour, smoke run, bad flags, CLI."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms import iql
from conftest import check_bad_flag, check_finished_run


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_expectile_loss():
    diff = torch.tensor([2.0, -1.0, 0.5, 0.0])
    # tau = 0.7: u > 0 weighs tau, u <= 0 weighs 1 - tau
    # [0.7 * 2^2, 0.3 * (-1)^2, 0.7 * 0.5^2, 0.3 * 0^2] = [2.8, 0.3, 0.175, 0.0]
    torch.testing.assert_close(iql.expectile_loss(diff, 0.7), torch.tensor([2.8, 0.3, 0.175, 0.0]))
    # tau = 0.5 is half the squared error: [2.0, 0.5, 0.125, 0.0]
    torch.testing.assert_close(iql.expectile_loss(diff, 0.5), torch.tensor([2.0, 0.5, 0.125, 0.0]))


def test_value_loss():
    v = torch.tensor([1.0, 2.0], requires_grad=True)
    q_min = torch.tensor([3.0, 1.0])
    # u = q_min - v = [2, -1]; tau = 0.9: [0.9 * 4, 0.1 * 1] = [3.6, 0.1]; mean = 1.85
    loss = iql.value_loss(v, q_min, 0.9)
    torch.testing.assert_close(loss, torch.tensor(1.85))
    loss.backward()
    # d/dv of mean(w u^2) with u = q - v: -2 w u / B = [-2 * 0.9 * 2 / 2, -2 * 0.1 * (-1) / 2] = [-1.8, 0.1]
    torch.testing.assert_close(v.grad, torch.tensor([-1.8, 0.1]))


def test_q_loss():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # [n=2 members, B=2]
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    next_v = torch.tensor([2.0, 5.0], requires_grad=True)
    # gamma = 0.5: target = r + gamma (1 - d) V(s') = [1 + 0.5 * 1 * 2, 0 + 0.5 * 0 * 5] = [2, 0]
    # member 1: mean((1 - 2)^2, (2 - 0)^2) = mean(1, 4) = 2.5; member 2: mean((0 - 2)^2, (1 - 0)^2) = 2.5
    # sum over members = 5.0
    loss = iql.q_loss(q, rew, done, next_v, 0.5)
    torch.testing.assert_close(loss, torch.tensor(5.0))
    loss.backward()
    # d/dq = 2 (q - target) / B = [[-1, 2], [-2, 1]]; the target is a constant: no gradient into V(s')
    torch.testing.assert_close(q.grad, torch.tensor([[-1.0, 2.0], [-2.0, 1.0]]))
    assert next_v.grad is None


def test_actor_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([0.0, 1.0, -math.log(2.0)], requires_grad=True)
    # beta = 2, max_weight = 5: weights = [exp(0), min(exp(2), 5), exp(-2 ln 2)] = [1, 5, 0.25]
    # loss = -mean(w log pi) = -(1 * -1 + 5 * -2 + 0.25 * -0.5) / 3 = 11.125 / 3
    loss = iql.actor_loss(log_prob, adv, beta=2.0, max_weight=5.0)
    torch.testing.assert_close(loss, torch.tensor(11.125 / 3))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -5.0, -0.25]) / 3)
    assert adv.grad is None  # advantages are weights, not a path for gradients into Q or V
    # beta = 0 is behaviour cloning: every weight is 1, loss = -mean(log pi) = 3.5 / 3
    torch.testing.assert_close(iql.actor_loss(log_prob, adv, 0.0, 100.0), torch.tensor(3.5 / 3))


def test_gaussian_policy_log_prob_and_action():
    torch.manual_seed(0)
    policy = iql.GaussianPolicy(obs_dim=4, act_dim=2, hidden=8)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.5, 3.0]))  # 3.0 is clipped to log_std_max = 2
    obs, act = torch.randn(5, 4), torch.rand(5, 2) * 2 - 1
    mean = torch.tanh(policy.mu(obs))
    expected = torch.distributions.Normal(mean, torch.tensor([-0.5, 2.0]).exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)
    torch.testing.assert_close(policy.act(obs), mean)  # evaluation uses the mean action


@pytest.mark.parametrize("tau, expected", [
    # Q samples {0, 1, 2, 3, 10} (mean 3.2). The tau-expectile m solves
    #   tau * sum_{q > m} (q - m) = (1 - tau) * sum_{q < m} (m - q)
    # tau = 0.9, m in (3, 10): 0.9 (10 - m) = 0.1 (4m - 6)             -> m = 9.6 / 1.3 = 7.3846
    (0.9, 9.6 / 1.3),
    # tau = 0.5 is the mean                                            -> m = 3.2
    (0.5, 3.2),
    # tau = 0.1, m in (1, 2): 0.1 ((2 - m) + (3 - m) + (10 - m)) = 0.9 ((m - 0) + (m - 1)) -> m = 2.4 / 2.1 = 1.1429
    (0.1, 2.4 / 2.1),
])
def test_expectile_moves_v_toward_the_max_or_min_of_q(tau, expected):
    q_samples = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    v = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.05)
    for _ in range(600):
        loss = iql.value_loss(v.expand(5), q_samples, tau)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert v.item() == pytest.approx(expected, abs=0.05)
    if tau > 0.5:
        assert v.item() > q_samples.mean() + 3  # toward the max
    elif tau < 0.5:
        assert v.item() < q_samples.mean() - 2  # toward the min


# ----------------------------------------------------------------------------------------------
# Initialization: the authors' orthogonal init by default, PyTorch's with --init torch
# ----------------------------------------------------------------------------------------------
def linear_layers(orthogonal: bool):
    """(weight [out, in], bias) of every layer of Q (each ensemble member), V and the policy's mean."""
    torch.manual_seed(0)
    q = iql.EnsembleQ(obs_dim=11, act_dim=3, hidden=64, orthogonal=orthogonal)
    layers = [(m.weight[i].T, m.bias[i, 0]) for m in q.net if isinstance(m, iql.EnsembleLinear) for i in range(2)]
    for net in (iql.mlp(11, 64, 1, orthogonal), iql.GaussianPolicy(11, 3, 64, orthogonal=orthogonal).mu):
        layers += [(m.weight, m.bias) for m in net if isinstance(m, torch.nn.Linear)]
    return layers


def test_default_init_is_orthogonal_with_gain_sqrt2_and_zero_bias():
    for weight, bias in linear_layers(orthogonal=True):
        singular = torch.linalg.svdvals(weight.detach())
        torch.testing.assert_close(singular, torch.full_like(singular, math.sqrt(2)))
        assert torch.all(bias == 0)


def test_torch_init_is_nn_linear_default():
    for weight, bias in linear_layers(orthogonal=False):
        bound = 1 / math.sqrt(weight.shape[1])  # nn.Linear: U(+-1/sqrt(fan_in)) for weight and bias
        assert weight.abs().max() <= bound and bias.abs().max() <= bound
        assert weight.abs().max() > 0.9 * bound and bias.abs().max() > 0  # filled, not zero
        if weight.shape[0] == weight.shape[1]:  # a square random matrix is far from orthogonal
            singular = torch.linalg.svdvals(weight.detach())
            assert singular.max() / singular.min() > 2


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = iql.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, runs_dir=str(tmp_path / "runs"), progress=False)
    check_finished_run(iql, args, iql.train(args), loss_key="loss/q", networks=("q", "value", "policy"),
                       finite=("loss/value", "loss/actor", "loss/q", "adv_mean"))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("expectile", 0.0, "--expectile"), ("expectile", 1.5, "--expectile"),
    ("expectile", 1.0, "--expectile"), ("inverse_temperature", -0.1, "--inverse-temperature"),
    ("max_weight", 0.0, "--max-weight"),
    ("hidden_dim", 0, "--hidden-dim"), ("total_steps", 0, "--total-steps"), ("gamma", 1.0, "--gamma"),
    ("init", "xavier", "--init"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(iql, field, value, flag, tmp_path)
