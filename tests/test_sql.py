"""algorithms/sql.py: losses and actor weights against hand-computed values, the sparse V, smoke run, bad flags, CLI."""

from __future__ import annotations


import pytest
import torch

from algorithms import sql
from conftest import check_bad_flag, check_finished_run


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_value_loss():
    v = torch.tensor([1.0, 2.0, 0.0], requires_grad=True)
    q_min = torch.tensor([3.0, 1.0, -5.0])
    # alpha = 1: x = 1 + (q - v) / 2 = [1 + 1, 1 - 0.5, 1 - 2.5] = [2, 0.5, -1.5]
    # 1(x > 0) x^2 = [4, 0.25, 0] (the third sample is in the zero region); + v / alpha = [5, 2.25, 0]
    # mean = 7.25 / 3
    loss = sql.value_loss(v, q_min, alpha=1.0)
    torch.testing.assert_close(loss, torch.tensor(7.25 / 3))
    loss.backward()
    # d/dv [1(x > 0) x^2 + v / alpha] / B = (-1(x > 0) x / alpha + 1 / alpha) / B = [-2 + 1, -0.5 + 1, 0 + 1] / 3:
    # inside the zero region only the V / alpha term acts, pushing V down
    torch.testing.assert_close(v.grad, torch.tensor([-1.0, 0.5, 1.0]) / 3)
    # alpha = 2: x = 1 + (q - v) / 4 = [1.5, 0.75, -0.25] -> [2.25, 0.5625, 0] + v / 2 = [2.75, 1.5625, 0]
    torch.testing.assert_close(sql.value_loss(v, q_min, alpha=2.0), torch.tensor(4.3125 / 3))


def test_q_loss():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # [n=2 members, B=2]
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    next_v = torch.tensor([2.0, 5.0], requires_grad=True)
    # gamma = 0.5: target = r + gamma (1 - d) V(s') = [1 + 0.5 * 1 * 2, 0 + 0.5 * 0 * 5] = [2, 0]
    # member 1: mean((1 - 2)^2, (2 - 0)^2) = 2.5; member 2: mean((0 - 2)^2, (1 - 0)^2) = 2.5; sum = 5
    loss = sql.q_loss(q, rew, done, next_v, 0.5)
    torch.testing.assert_close(loss, torch.tensor(5.0))
    loss.backward()
    # d/dq = 2 (q - target) / B = [[-1, 2], [-2, 1]]; the target is a constant: no gradient into V(s')
    torch.testing.assert_close(q.grad, torch.tensor([[-1.0, 2.0], [-2.0, 1.0]]))
    assert next_v.grad is None


def test_actor_weight():
    adv = torch.tensor([2.0, 0.0, -1.0, -3.0, 150.0], requires_grad=True)
    # code: min(max(A, 0), 100) = [2, 0, 0, 0, 100]: only better-than-V actions are imitated
    w = sql.actor_weight(adv, alpha=1.0, form="code", max_weight=100.0)
    torch.testing.assert_close(w, torch.tensor([2.0, 0.0, 0.0, 0.0, 100.0]))
    assert not w.requires_grad  # a weight, not a path for gradients into Q or V
    # paper, alpha = 1: 1 + A / 2 = [2, 1, 0.5, -0.5, 76] -> max(., 0), clipped at 50 = [2, 1, 0.5, 0, 50]
    torch.testing.assert_close(sql.actor_weight(adv, 1.0, "paper", 50.0), torch.tensor([2.0, 1.0, 0.5, 0.0, 50.0]))
    # paper, alpha = 0.5: 1 + A = [3, 1, 0, -2, 151] -> [3, 1, 0, 0, 100]: zero from A <= -2 alpha = -1 on
    torch.testing.assert_close(sql.actor_weight(adv, 0.5, "paper", 100.0), torch.tensor([3.0, 1.0, 0.0, 0.0, 100.0]))
    # the code's weight does not depend on alpha
    torch.testing.assert_close(sql.actor_weight(adv, 7.0, "code", 100.0), w)


def test_actor_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    weight = torch.tensor([1.0, 5.0, 0.0], requires_grad=True)
    # -mean(w log pi) = -(1 * -1 + 5 * -2 + 0 * -0.5) / 3 = 11 / 3
    loss = sql.actor_loss(log_prob, weight)
    torch.testing.assert_close(loss, torch.tensor(11.0 / 3))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -5.0, 0.0]) / 3)  # zero weight: no pull at all
    assert weight.grad is None


@pytest.mark.parametrize("alpha, expected, zeros", [
    # Q samples {0, 1, 2, 3, 10} (mean 3.2). At the minimum of L_V, dL/dV = 0 gives E[max(1 + (q - V)/(2 alpha), 0)] = 1
    # (the sparse policy's weights sum to one). alpha = 1, samples {2, 3, 10} active: 3 + (15 - 3V)/2 = 5 -> V = 11/3;
    # check: 1 + (2 - 11/3)/2 = 1/6 > 0 active, 1 + (1 - 11/3)/2 = -1/3 < 0 inactive: two samples get zero weight
    (1.0, 11 / 3, 2),
    # alpha = 0.25, only {10} active: 1 + 2 (10 - V) = 5 -> V = 8 (1 + 2 (3 - 8) < 0): four zero weights
    (0.25, 8.0, 4),
    # alpha = 10, all active: 5 + (16 - 5V)/20 = 5 -> V = 3.2, the mean (1 + (0 - 3.2)/20 > 0): no zero weight
    (10.0, 3.2, 0),
])
def test_value_between_mean_and_max_of_q_with_sparse_weights(alpha, expected, zeros):
    q_samples = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    v = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.05)
    for _ in range(1000):
        loss = sql.value_loss(v.expand(5), q_samples, alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert v.item() == pytest.approx(expected, abs=0.05)
    w = sql.actor_weight(q_samples - v.detach(), alpha, "paper", 100.0)
    assert w.mean().item() == pytest.approx(1.0, abs=0.05)  # a normalized policy over the data's actions
    assert int((w == 0).sum()) == zeros


def test_value_network_has_layer_norm_and_policy_does_not():
    kinds = [type(m).__name__ for m in sql.mlp(4, 8, 1, layer_norm=True)]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Linear", "LayerNorm", "ReLU", "Linear"]
    assert [type(m).__name__ for m in sql.mlp(4, 8, 1)] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in sql.GaussianPolicy(4, 2, 8).modules())


def test_gaussian_policy_log_prob_and_action():
    torch.manual_seed(0)
    policy = sql.GaussianPolicy(obs_dim=4, act_dim=2, hidden=8)
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
@pytest.mark.parametrize("form", ["code", "paper"])
def test_train_smoke(form, tiny_hopper, tmp_path):
    args = sql.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, hidden_dim=32, actor_weight=form, runs_dir=str(tmp_path / "runs"),
                    progress=False)
    _, records, ckpt = check_finished_run(
        sql, args, sql.train(args), loss_key="loss/q", networks=("q", "value", "policy"),
        finite=("loss/value", "loss/actor", "loss/q", "adv_mean", "weight_mean", "weight_zero_frac"))
    assert all(0.0 <= r["weight_zero_frac"] <= 1.0 for r in records if "loss/q" in r)
    assert "1.weight" in ckpt["value"] and ckpt["value"]["1.weight"].shape == (32,)  # V's LayerNorm



# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("regularizer_weight", 0.0, "--regularizer-weight"),
    ("regularizer_weight", -1.0, "--regularizer-weight"),
    ("actor_weight", "best", "--actor-weight"), ("max_weight", 0.0, "--max-weight"),
    ("hidden_dim", 0, "--hidden-dim"), ("total_steps", 0, "--total-steps"), ("gamma", 1.0, "--gamma"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(sql, field, value, flag, tmp_path)
