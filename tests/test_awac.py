"""algorithms/awac.py: losses and weights against hand-computed values, policy, smoke run, bad flags, CLI."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms import awac
from conftest import check_bad_flag, check_finished_run


# ----------------------------------------------------------------------------------------------
# Losses and weights, by hand
# ----------------------------------------------------------------------------------------------
def test_awac_weights_are_a_softmax_over_the_batch_times_its_size():
    adv = torch.tensor([0.0, math.log(2.0), math.log(5.0)])
    # lambda = 1: exp(A) = [1, 2, 5], sum 8 -> softmax [1/8, 2/8, 5/8]; times B = 3 -> [3/8, 6/8, 15/8]
    torch.testing.assert_close(awac.awac_weights(adv, 1.0), torch.tensor([0.375, 0.75, 1.875]))
    # lambda = 0.5 squares exp(A): [1, 4, 25], sum 30 -> 3 * [1, 4, 25] / 30 = [0.1, 0.4, 2.5]
    torch.testing.assert_close(awac.awac_weights(adv, 0.5), torch.tensor([0.1, 0.4, 2.5]))
    # the weights average to 1 and do not change when every advantage shifts by a constant (Z absorbs it)
    torch.testing.assert_close(awac.awac_weights(adv + 7.0, 0.5).mean(), torch.tensor(1.0))
    torch.testing.assert_close(awac.awac_weights(adv + 7.0, 0.5), torch.tensor([0.1, 0.4, 2.5]))
    # large advantages do not overflow (softmax, not exp then normalize)
    assert torch.isfinite(awac.awac_weights(torch.tensor([1000.0, 0.0]), 1.0)).all()


def test_actor_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([0.0, math.log(2.0), math.log(5.0)], requires_grad=True)
    # lambda = 1: weights [3/8, 6/8, 15/8] (above); loss = -mean(w log pi)
    #   = -(3/8 * -1 + 6/8 * -2 + 15/8 * -0.5) / 3 = (0.375 + 1.5 + 0.9375) / 3 = 2.8125 / 3 = 0.9375
    loss = awac.actor_loss(log_prob, adv, 1.0)
    torch.testing.assert_close(loss, torch.tensor(0.9375))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, -torch.tensor([0.375, 0.75, 1.875]) / 3)
    assert adv.grad is None  # weights carry no gradient into Q


def test_q_loss():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # [n=2 critics, B=2]
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    next_q = torch.tensor([2.0, 5.0], requires_grad=True)  # min_j Qbar_j(s', a'), a' ~ pi(.|s')
    # gamma = 0.5: y = r + gamma (1 - d) next_q = [1 + 0.5 * 2, 0 + 0] = [2, 0] (no entropy term: alpha = 0)
    # critic 1: mean((1 - 2)^2, (2 - 0)^2) = 2.5; critic 2: mean((0 - 2)^2, (1 - 0)^2) = 2.5; sum 5
    loss = awac.q_loss(q, rew, done, next_q, 0.5)
    torch.testing.assert_close(loss, torch.tensor(5.0))
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([[-1.0, 2.0], [-2.0, 1.0]]))
    assert next_q.grad is None


def test_gaussian_policy_std_and_log_prob():
    torch.manual_seed(0)
    policy = awac.GaussianPolicy(obs_dim=4, act_dim=2, hidden=8)
    obs, act = torch.randn(5, 4), torch.rand(5, 2) * 2 - 1
    mean, log_std = policy(obs)
    # log-std = -6 + 6 sigmoid(0) = -3 at init, state-independent
    torch.testing.assert_close(log_std, torch.full((5, 2), -3.0))
    torch.testing.assert_close(mean, torch.tanh(policy.mu(obs)))
    with torch.no_grad():
        policy.log_std_logits.copy_(torch.tensor([20.0, -20.0]))  # saturates at the bounds [-6, 0]
    mean, log_std = policy(obs)
    torch.testing.assert_close(log_std[0], torch.tensor([0.0, -6.0]), atol=1e-5, rtol=0)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)
    torch.testing.assert_close(policy.act(obs), mean)  # evaluation uses the mean
    assert len([m for m in policy.mu if isinstance(m, torch.nn.Linear)]) == 5  # 4 hidden layers + output


def test_advantage_takes_the_min_of_the_twin_critics_at_both_actions():
    q_data = torch.tensor([[1.0, 5.0], [2.0, 3.0]], requires_grad=True)  # [n=2 critics, B=2] at the data's actions
    q_pi = torch.tensor([[0.0, 4.0], [2.0, 1.0]])  # at a~ ~ pi(.|s)
    # min over critics: data [1, 3], sampled [0, 1] -> A = [1 - 0, 3 - 1] = [1, 2]
    adv = awac.advantage(q_data, q_pi)
    torch.testing.assert_close(adv, torch.tensor([1.0, 2.0]))
    assert not adv.requires_grad


def test_init_uses_the_true_fan_in():
    torch.manual_seed(0)
    q, policy = awac.EnsembleQ(obs_dim=3, act_dim=2, hidden=64), awac.GaussianPolicy(obs_dim=3, act_dim=2, hidden=64)
    # first layers: U(+-1/sqrt(in)) = U(+-1/sqrt(5)) = U(+-0.447) for Q, U(+-0.577) for the policy, not rlkit's
    # U(+-1/sqrt(out)) = U(+-0.125)
    w_q, w_pi = q.net[0].weight, policy.mu[0].weight
    assert 0.4 < w_q.abs().max() <= 1 / math.sqrt(5) and 0.5 < w_pi.abs().max() <= 1 / math.sqrt(3)
    assert 0.1 < q.net[2].weight.abs().max() <= 0.125  # square hidden layers: 1/sqrt(64) either way
    assert q.net[4].weight.abs().max() <= 3e-3 and policy.mu[-1].weight.abs().max() <= 1e-3
    assert q.net[0].bias.abs().max() == 0 and policy.mu[0].bias.abs().max() == 0


def test_policy_sample_is_mean_plus_std_noise():
    torch.manual_seed(0)
    policy = awac.GaussianPolicy(3, 2, 8)
    obs = torch.randn(6, 3)
    torch.manual_seed(1)
    sample = policy.sample(obs)
    mean, log_std = policy(obs)
    torch.manual_seed(1)
    torch.testing.assert_close(sample, mean + log_std.exp() * torch.randn_like(mean))  # a~ = mu + sigma eps, unclipped


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = awac.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                     checkpoint_every=100, batch_size=64, hidden_dim=32, runs_dir=str(tmp_path / "runs"),
                     progress=False)
    _, _, ckpt = check_finished_run(awac, args, awac.train(args), loss_key="loss/q",
                                    networks=("q", "q_target", "policy"),
                                    finite=("loss/q", "loss/actor", "adv_mean", "weight_max"))
    assert ckpt["pi_opt"]["param_groups"][0]["weight_decay"] == 1e-4



# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("temperature", 0.0, "--temperature"), ("temperature", -1.0, "--temperature"),
    ("actor_weight_decay", -1e-4, "--actor-weight-decay"), ("hidden_dim", 0, "--hidden-dim"),
    ("tau", 0.0, "--tau"), ("gamma", 1.0, "--gamma"), ("actor_lr", 0.0, "--actor-lr"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(awac, field, value, flag, tmp_path)
