"""algorithms/awr.py: returns across episode boundaries, each weighting and loss by hand, smoke runs, bad flags, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from algorithms import awr
from common.checkpoints import load_checkpoint
from common.data import load_dataset
from conftest import check_bad_flag, check_finished_run, make_dataset


# ----------------------------------------------------------------------------------------------
# Returns across episode boundaries, by hand
# ----------------------------------------------------------------------------------------------
# Three episodes, flat: A = 3 steps ending in a termination, B = 2 steps cut by a time limit, C = 1 terminal step.
REWARDS = torch.tensor([1.0, 2.0, 3.0, 1.0, 1.0, 2.0])
DONES = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0, 1.0])  # terminations only; B's end is a timeout (not a done)
NEXT_V = torch.tensor([10.0, 20.0, 30.0, 4.0, 8.0, 100.0])  # V(s_t+1)
LENGTHS = torch.tensor([3, 2, 1])


@pytest.mark.parametrize("lam, expected", [
    # gamma = 0.5. R_t = r_t + gamma (1 - d_t) [(1 - lam) V(s_t+1) + lam R_t+1]; lam -> 0 at each episode's end.
    # lam = 0.5:
    #   A: R_2 = 3 (terminal: no bootstrap, V(s_3) = 30 ignored)
    #      R_1 = 2 + 0.5 (0.5 * 20 + 0.5 * 3)    = 2 + 0.5 * 11.5  = 7.75
    #      R_0 = 1 + 0.5 (0.5 * 10 + 0.5 * 7.75) = 1 + 0.5 * 8.875 = 5.4375
    #   B: R_1 = 1 + 0.5 * 8 = 5 (cut by the time limit: bootstrap with V(s_2) = 8)
    #      R_0 = 1 + 0.5 (0.5 * 4 + 0.5 * 5) = 1 + 0.5 * 4.5 = 3.25
    #   C: R_0 = 2 (terminal)
    (0.5, [5.4375, 7.75, 3.0, 3.25, 5.0, 2.0]),
    # lam = 1 (Monte Carlo, bootstrapping only where B is cut):
    #   A: 3, 2 + 0.5 * 3 = 3.5, 1 + 0.5 * 3.5 = 2.75;  B: 1 + 0.5 * 8 = 5, 1 + 0.5 * 5 = 3.5;  C: 2
    (1.0, [2.75, 3.5, 3.0, 3.5, 5.0, 2.0]),
    # lam = 0 (one-step TD): r + gamma (1 - d) V(s'): A: 1 + 5 = 6, 2 + 10 = 12, 3;  B: 1 + 2 = 3, 1 + 4 = 5;  C: 2
    (0.0, [6.0, 12.0, 3.0, 3.0, 5.0, 2.0]),
])
def test_lambda_returns_respect_episode_boundaries_and_timeouts(lam, expected):
    returns = awr.lambda_returns(REWARDS, DONES, NEXT_V, LENGTHS, gamma=0.5, lam=lam)
    torch.testing.assert_close(returns, torch.tensor(expected))


def reference_returns(rewards, dones, next_v, lengths, gamma, lam):
    """The same recursion, one episode and one step at a time."""
    out, start = np.zeros(len(rewards)), 0
    for n in lengths:
        following = 0.0
        for t in reversed(range(start, start + n)):
            lam_t = 0.0 if t == start + n - 1 else lam
            following = rewards[t] + gamma * (1 - dones[t]) * ((1 - lam_t) * next_v[t] + lam_t * following)
            out[t] = following
        start += n
    return out


def test_lambda_returns_match_a_per_episode_loop():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, size=12)
    n = int(lengths.sum())
    dones = np.zeros(n)
    ends = np.cumsum(lengths) - 1
    dones[ends[rng.random(len(ends)) < 0.5]] = 1.0  # about half the episodes terminate, the others are cut
    rewards, next_v = rng.normal(size=n), rng.normal(size=n) * 10
    got = awr.lambda_returns(*(torch.tensor(x, dtype=torch.float32) for x in (rewards, dones, next_v)),
                             torch.tensor(lengths), gamma=0.9, lam=0.7)
    np.testing.assert_allclose(got.numpy(), reference_returns(rewards, dones, next_v, lengths, 0.9, 0.7),
                               rtol=1e-5, atol=1e-5)
    # an episode's returns do not depend on its neighbours: the last episode alone gives the same numbers
    last = slice(n - lengths[-1], n)
    alone = awr.lambda_returns(*(torch.tensor(x[last], dtype=torch.float32) for x in (rewards, dones, next_v)),
                               torch.tensor(lengths[-1:]), gamma=0.9, lam=0.7)
    torch.testing.assert_close(alone, got[last])


# ----------------------------------------------------------------------------------------------
# Weightings and losses, by hand
# ----------------------------------------------------------------------------------------------
def test_awr_weights_standardize_exponentiate_and_clip():
    # A = [-1, 1]: mean 0, std 1, so A^ = A / (1 + 1e-5); beta = 1: [exp(-1), exp(1)] = [0.3679, 2.7183]
    s = 1.0 / (1.0 + 1e-5)
    torch.testing.assert_close(awr.awr_weights(torch.tensor([-1.0, 1.0]), 1.0, 20.0),
                               torch.tensor([math.exp(-s), math.exp(s)]))
    # clip at 2: [0.3679, 2]
    torch.testing.assert_close(awr.awr_weights(torch.tensor([-1.0, 1.0]), 1.0, 2.0), torch.tensor([math.exp(-s), 2.0]))
    # standardization makes the weights invariant to shifting and scaling A: [1, 3] and [-10, 10] give the same
    torch.testing.assert_close(awr.awr_weights(torch.tensor([1.0, 3.0]), 1.0, 20.0),
                               torch.tensor([math.exp(-s), math.exp(s)]))
    # beta = 0.5 doubles the exponent: A = [0, 0, 3, 3] -> mean 1.5, std 1.5, A^ = [-1, -1, 1, 1] / (1 + 6.7e-6)
    s = 1.5 / (1.5 + 1e-5)
    torch.testing.assert_close(awr.awr_weights(torch.tensor([0.0, 0.0, 3.0, 3.0]), 0.5, 20.0),
                               torch.tensor([math.exp(-2 * s)] * 2 + [math.exp(2 * s)] * 2))


def test_rwr_weights_use_the_returns():
    # RWR is the AWR weighting applied to the return R instead of A = R - V: R = [10, 30] standardizes to
    # [-1, 1] (mean 20, std 10), so the weights are [exp(-1), exp(1)] whatever V is.
    s = 10.0 / (10.0 + 1e-5)
    torch.testing.assert_close(awr.awr_weights(torch.tensor([10.0, 30.0]), 1.0, 20.0),
                               torch.tensor([math.exp(-s), math.exp(s)]))


def test_marwil_weights_and_running_norm():
    adv = torch.tensor([3.0, -3.0, 0.0])
    # mean A^2 = (9 + 9 + 0) / 3 = 6; c^2 = 2 + 0.5 (6 - 2) = 4, c = 2
    # beta = 1: w = exp(A / 2) = [exp(1.5), exp(-1.5), 1] = [4.4817, 0.2231, 1]; clipped at 4 -> [4, 0.2231, 1]
    w, c2 = awr.marwil_weights(adv, torch.tensor(2.0), beta=1.0, rate=0.5, max_weight=4.0)
    torch.testing.assert_close(c2, torch.tensor(4.0))
    torch.testing.assert_close(w, torch.tensor([4.0, math.exp(-1.5), 1.0]))
    # the norm moves toward mean A^2 = 6 at every call: 4 + 0.5 (6 - 4) = 5, then w = exp(2 A / sqrt(5))
    w, c2 = awr.marwil_weights(adv, c2, beta=2.0, rate=0.5, max_weight=1e9)
    torch.testing.assert_close(c2, torch.tensor(5.0))
    torch.testing.assert_close(w, torch.exp(2.0 * adv / math.sqrt(5.0)))
    # beta = 0 is behaviour cloning: every weight is 1
    w, _ = awr.marwil_weights(adv, c2, beta=0.0, rate=0.5, max_weight=20.0)
    torch.testing.assert_close(w, torch.ones(3))


def test_value_loss():
    v = torch.tensor([1.0, 2.0], requires_grad=True)
    target = torch.tensor([3.0, 1.0], requires_grad=True)
    # 1/2 mean((3 - 1)^2, (1 - 2)^2) = 1/2 * 2.5 = 1.25
    loss = awr.value_loss(v, target)
    torch.testing.assert_close(loss, torch.tensor(1.25))
    loss.backward()
    # d/dv = -(target - v) / B = [-1, 0.5]; the target is a constant
    torch.testing.assert_close(v.grad, torch.tensor([-1.0, 0.5]))
    assert target.grad is None


def test_actor_loss_and_bound_loss():
    log_prob = torch.tensor([-1.0, -2.0], requires_grad=True)
    weight = torch.tensor([2.0, 0.5], requires_grad=True)
    # -mean(2 * -1, 0.5 * -2) = -(-2 - 1) / 2 = 1.5
    loss = awr.actor_loss(log_prob, weight)
    torch.testing.assert_close(loss, torch.tensor(1.5))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -0.25]))
    assert weight.grad is None
    # means [[0.5, 1.5], [-3, 0]]: violations beyond +-1 are 0.5 and 2 -> 1/2 mean(0.25, 4) = 1.0625
    torch.testing.assert_close(awr.action_bound_loss(torch.tensor([[0.5, 1.5], [-3.0, 0.0]])), torch.tensor(1.0625))
    assert awr.action_bound_loss(torch.tensor([[1.0, -1.0, 0.3]])).item() == 0.0


def test_gaussian_policy_has_a_fixed_std():
    torch.manual_seed(0)
    policy = awr.GaussianPolicy(obs_dim=4, act_dim=2, hidden=8, action_std=0.4)
    obs, act = torch.randn(5, 4), torch.rand(5, 2) * 2 - 1
    mean = policy.mu(obs)
    expected = torch.distributions.Normal(mean, 0.4).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)
    torch.testing.assert_close(policy.act(obs), mean)
    assert [p.shape for p in policy.parameters()] == [(8, 4), (8,), (4, 8), (4,), (2, 4), (2,)]  # no std parameter
    assert policy.mu[-1].weight.abs().max() <= 0.01  # output init U(+-0.01)


# ----------------------------------------------------------------------------------------------
# Smoke: end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = awr.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, recompute_every=50, hidden_dim=32, runs_dir=str(tmp_path / "runs"),
                    progress=False)
    _, _, ckpt = check_finished_run(awr, args, awr.train(args), loss_key="loss/value", networks=("value", "policy"),
                                    finite=("loss/value", "loss/actor", "adv_mean", "weight_mean"))
    assert 0 < ckpt["weights"].min() and ckpt["weights"].max() <= 20.0



@pytest.fixture
def mixed_ends(minari_root):
    """Random Hopper episodes capped at 30 steps: some fall (terminal), some are cut by the time limit."""
    make_dataset("test/hopper/mixed-ends-v0", episodes=6, max_steps=30)
    return "test/hopper/mixed-ends-v0"


@pytest.mark.parametrize("weighting, value_target", [("awr", "td-lambda"), ("rwr", "mc")])
def test_targets_and_weights_of_the_dataset(mixed_ends, tmp_path, weighting, value_target):
    """The script's targets equal a per-episode loop over the dataset with its own V, bootstrapping exactly
    where episodes are cut, and its weights are the AWR (or RWR) weights of those targets."""

    data = load_dataset(mixed_ends)
    ends = data.episode_starts + data.episode_lengths - 1
    assert 0 < data.terminals[ends].sum() < len(ends) and data.timeouts[ends].sum() > 0  # both kinds of ends
    # a V learning rate of 1e-30 leaves V (in float32) exactly as it was when the targets were computed
    args = awr.Args(dataset=mixed_ends, total_steps=20, recompute_every=20, critic_lr=1e-30, eval_every=20,
                    eval_episodes=1, hidden_dim=16, weighting=weighting, value_target=value_target,
                    runs_dir=str(tmp_path / "runs"), progress=False)
    awr.train(args)
    ckpt = load_checkpoint(next((tmp_path / "runs").iterdir()) / "checkpoint.pt")
    value = awr.mlp(data.obs_dim, 16, 1)
    value.load_state_dict(ckpt["value"])
    with torch.no_grad():
        def v(x):
            return value((torch.as_tensor(x) - ckpt["obs_mean"]) / ckpt["obs_std"]).squeeze(-1).double().numpy() * 100
        v_s, v_next = v(data.observations), v(data.next_observations)  # V = 1/(1 - gamma) V~ = 100 V~
    lam = 0.95 if value_target == "td-lambda" else 1.0
    expected = reference_returns(data.rewards, data.terminals, v_next, data.episode_lengths, 0.99, lam)
    np.testing.assert_allclose(ckpt["targets"].numpy(), expected, rtol=1e-4, atol=1e-3)
    if weighting == "awr":
        adv = expected - v_s
    else:
        adv = expected
    adv = (adv - adv.mean()) / (adv.std() + 1e-5)
    np.testing.assert_allclose(ckpt["weights"].numpy(), np.minimum(np.exp(adv), 20.0), rtol=1e-3, atol=1e-4)


def test_marwil_smoke_moves_the_running_norm(tiny_hopper, tmp_path):
    args = awr.Args(dataset=tiny_hopper, total_steps=20, eval_every=20, eval_episodes=1, hidden_dim=16,
                    weighting="marwil", marwil_norm_rate=0.1, runs_dir=str(tmp_path / "runs"), progress=False)
    result = awr.train(args)
    assert math.isfinite(result["final_score"])
    ckpt = load_checkpoint(next((tmp_path / "runs").iterdir()) / "checkpoint.pt")
    assert ckpt["sqd_norm"].item() != 100.0 and math.isfinite(ckpt["sqd_norm"].item())


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("td_lambda", 1.5, "--td-lambda"), ("td_lambda", -0.1, "--td-lambda"),
    ("value_target", "gae", "--value-target"), ("weighting", "awac", "--weighting"),
    ("temperature", 0.0, "--temperature"), ("max_weight", 0.0, "--max-weight"),
    ("inverse_temperature", -1.0, "--inverse-temperature"),
    ("marwil_norm_rate", 2.0, "--marwil-norm-rate"), ("marwil_norm_init", 0.0, "--marwil-norm-init"),
    ("action_std", 0.0, "--action-std"), ("momentum", 1.0, "--momentum"), ("recompute_every", 0, "--recompute-every"),
    ("hidden_dim", 1, "--hidden-dim"), ("critic_lr", 0.0, "--critic-lr"), ("gamma", 1.0, "--gamma"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(awr, field, value, flag, tmp_path)
