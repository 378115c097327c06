"""algorithms/crr.py: losses, filters and advantage against hand-computed values, policy, smoke runs, bad flags."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms import crr
from common.checkpoints import load_checkpoint
from conftest import check_bad_flag, check_finished_run


# ----------------------------------------------------------------------------------------------
# Losses, advantage and filters, by hand
# ----------------------------------------------------------------------------------------------
def test_q_loss():
    q = torch.tensor([1.0, 2.0], requires_grad=True)
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    next_q = torch.tensor([2.0, 5.0], requires_grad=True)  # Qbar(s', a'), a' ~ pibar(.|s')
    # gamma = 0.5: y = [1 + 0.5 * 2, 0 + 0] = [2, 0]; 1/2 mean((1 - 2)^2, (2 - 0)^2) = 1/2 * 2.5 = 1.25
    loss = crr.q_loss(q, rew, done, next_q, 0.5)
    torch.testing.assert_close(loss, torch.tensor(1.25))
    loss.backward()
    # d/dq = (q - y) / B = [-0.5, 1]: the 1/2 makes the gradient the TD error; no gradient into the target
    torch.testing.assert_close(q.grad, torch.tensor([-0.5, 1.0]))
    assert next_q.grad is None


# Q(s, a) of the data's actions and of m = 4 policy samples per state, B = 2 states
Q_DATA = torch.tensor([1.5, 4.0])
Q_SAMPLES = torch.tensor([[0.0, 3.0], [2.0, 1.0], [1.0, 2.0], [1.0, 6.0]])  # [m, B]


def test_advantage_mean_and_max():
    # mean over samples: [(0 + 2 + 1 + 1) / 4, (3 + 1 + 2 + 6) / 4] = [1, 3] -> A = [1.5 - 1, 4 - 3] = [0.5, 1]
    torch.testing.assert_close(crr.advantage(Q_DATA, Q_SAMPLES, "mean"), torch.tensor([0.5, 1.0]))
    # max over samples: [2, 6] -> A = [1.5 - 2, 4 - 6] = [-0.5, -2]
    torch.testing.assert_close(crr.advantage(Q_DATA, Q_SAMPLES, "max"), torch.tensor([-0.5, -2.0]))
    q_data = Q_DATA.clone().requires_grad_()
    assert not crr.advantage(q_data, Q_SAMPLES, "mean").requires_grad  # no gradient into Q


def test_exp_and_binary_filters():
    adv = torch.tensor([0.0, math.log(2.0), math.log(30.0), -math.log(4.0)])
    # exp, beta = 1: min(exp(A), 20) = [1, 2, min(30, 20), 1/4] = [1, 2, 20, 0.25]
    torch.testing.assert_close(crr.crr_filter(adv, "exp", 1.0, 20.0), torch.tensor([1.0, 2.0, 20.0, 0.25]))
    # exp, beta = 0.5: exp(2 A) = [1, 4, 900 -> 20, 1/16]
    torch.testing.assert_close(crr.crr_filter(adv, "exp", 0.5, 20.0), torch.tensor([1.0, 4.0, 20.0, 0.0625]))
    # binary: 1[A > 0] = [0 (A = 0 is not > 0), 1, 1, 0]; beta and the clip play no part
    torch.testing.assert_close(crr.crr_filter(adv, "binary", 0.5, 1.0), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    # on the advantages above: CRR(mean) keeps both actions, CRR(max) neither
    torch.testing.assert_close(crr.crr_filter(crr.advantage(Q_DATA, Q_SAMPLES, "mean"), "binary", 1.0, 20.0),
                               torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(crr.crr_filter(crr.advantage(Q_DATA, Q_SAMPLES, "max"), "binary", 1.0, 20.0),
                               torch.tensor([0.0, 0.0]))


def test_actor_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    weight = torch.tensor([1.0, 0.0, 20.0], requires_grad=True)
    # -mean(1 * -1, 0 * -2, 20 * -0.5) = (1 + 0 + 10) / 3 = 11 / 3
    loss = crr.actor_loss(log_prob, weight)
    torch.testing.assert_close(loss, torch.tensor(11.0 / 3))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, 0.0, -20.0]) / 3)
    assert weight.grad is None


# ----------------------------------------------------------------------------------------------
# Policy
# ----------------------------------------------------------------------------------------------
def standard_policy() -> crr.TanhGaussianPolicy:
    """A policy whose pre-tanh distribution is N(0, 1) in every state."""
    policy = crr.TanhGaussianPolicy(obs_dim=3, act_dim=2, hidden=8)
    with torch.no_grad():
        policy.loc.weight.zero_(), policy.loc.bias.zero_(), policy.scale.weight.zero_()
        policy.scale.bias.fill_(math.log(math.expm1(1.0 - crr.MIN_SCALE)))  # softplus(x) + 1e-3 = 1
    return policy


def test_log_prob_inside_the_clip_is_the_tanh_gaussian_density():
    torch.manual_seed(0)
    policy = crr.TanhGaussianPolicy(obs_dim=3, act_dim=2, hidden=8)
    obs, act = torch.randn(5, 3), torch.rand(5, 2) * 1.8 - 0.9
    loc, scale = policy(obs)
    assert (scale > crr.MIN_SCALE).all()
    dist = torch.distributions.TransformedDistribution(torch.distributions.Normal(loc, scale),
                                                       torch.distributions.TanhTransform())
    torch.testing.assert_close(policy.log_prob(obs, act), dist.log_prob(act).sum(-1))
    torch.testing.assert_close(policy.act(obs), torch.tanh(loc))  # evaluation: the mode tanh(loc)


def test_log_prob_at_the_bounds_uses_the_tail_mass():
    policy = standard_policy()
    obs = torch.zeros(1, 3)
    # z ~ N(0, 1); a = 1 lies at the clip 0.999, u = atanh(0.999) = 3.8002:
    #   log P(z > u) - log(1 - 0.999) = log(0.5 erfc(u / sqrt 2)) + log(1000) = -9.535 + 6.908 = -2.627
    u = math.atanh(0.999)
    tail = math.log(0.5 * math.erfc(u / math.sqrt(2))) - math.log(1e-3)
    assert tail == pytest.approx(-2.627, abs=1e-3)
    # the two dimensions: a = (1, -1) -> both tails (symmetric); a = (1, 0) -> tail + log N(0; 0, 1) (log 1 = 0)
    got = policy.log_prob(obs.expand(2, 3), torch.tensor([[1.0, -1.0], [1.0, 0.0]]))
    torch.testing.assert_close(got, torch.tensor([2 * tail, tail - 0.5 * math.log(2 * math.pi)]))
    # actions beyond the clip (0.9995) get the same tail value, and the loss still has finite gradients
    policy.zero_grad()
    lp = policy.log_prob(obs, torch.tensor([[0.9995, -1.0]]))
    torch.testing.assert_close(lp, torch.tensor([2 * tail]))
    lp.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)
    assert policy.loc.bias.grad.abs().sum() > 0


def test_samples_are_squashed_and_shaped():
    torch.manual_seed(0)
    policy = crr.TanhGaussianPolicy(obs_dim=3, act_dim=2, hidden=8)
    obs = torch.randn(5, 3)
    a = policy.sample(obs, 4)
    assert a.shape == (4, 5, 2) and (a.abs() < 1).all()
    assert policy.sample(obs).shape == (5, 2)
    assert not torch.equal(a[0], a[1])  # independent samples per state


# ----------------------------------------------------------------------------------------------
# Smoke: end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = crr.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, hidden_dim=32, batch_size=64, runs_dir=str(tmp_path / "runs"),
                    progress=False)
    _, records, ckpt = check_finished_run(crr, args, crr.train(args), loss_key="loss/q", networks=("q", "policy"),
                                          finite=("loss/q", "loss/actor", "adv_mean", "weight_mean"))
    assert all(0 < r["weight_mean"] <= 20.0 for r in records if "loss/q" in r)
    # step 200 is a multiple of the target period (100): the targets are exact copies
    for name in ("q", "policy"):
        for k, v in ckpt[name].items():
            assert torch.equal(ckpt[name + "_target"][k], v), (name, k)



@pytest.mark.parametrize("backup", ["sarsa", "policy"])
def test_backup_takes_the_dataset_or_the_target_policy_action(backup, tiny_hopper, tmp_path, monkeypatch):
    calls = []
    sample = crr.TanhGaussianPolicy.sample
    monkeypatch.setattr(crr.TanhGaussianPolicy, "sample", lambda self, obs, n=None: calls.append(n) or
                        sample(self, obs, n))
    args = crr.Args(dataset=tiny_hopper, total_steps=10, backup=backup, eval_every=10, eval_episodes=1,
                    hidden_dim=16, batch_size=32, runs_dir=str(tmp_path / "runs"), progress=False)
    assert math.isfinite(crr.train(args)["final_score"])
    # every update samples m actions per state for the advantage; only the policy backup samples one a' more
    assert calls.count(4) == 10 and calls.count(None) == (10 if backup == "policy" else 0)


def test_binary_max_variant_and_stale_targets_between_copies(tiny_hopper, tmp_path):
    args = crr.Args(dataset=tiny_hopper, total_steps=30, target_update_every=20, filter="binary", advantage="max",
                    eval_every=30, eval_episodes=1, hidden_dim=16, batch_size=32, runs_dir=str(tmp_path / "runs"),
                    progress=False)
    assert math.isfinite(crr.train(args)["final_score"])
    ckpt = load_checkpoint(next((tmp_path / "runs").iterdir()) / "checkpoint.pt")
    # the last copy was at step 20; ten more updates have moved the online networks away from their targets
    for name in ("q", "policy"):
        assert any(not torch.equal(ckpt[name + "_target"][k], v) for k, v in ckpt[name].items()), name


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("filter", "softmax", "--filter"), ("advantage", "min", "--advantage"),
    ("num_action_samples", 0, "--num-action-samples"), ("temperature", 0.0, "--temperature"),
    ("max_weight", 0.0, "--max-weight"),
    ("backup", "td", "--backup"), ("target_update_every", 0, "--target-update-every"),
    ("hidden_dim", 0, "--hidden-dim"), ("gamma", 1.0, "--gamma"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(crr, field, value, flag, tmp_path)
