"""algorithms/brac.py: the divergence estimates (KL from samples, MMD, W's dual form and its gradient penalty), the
value penalty in the critics' target and the regularizer in the policy's loss against hand-computed values, the
dual alpha's direction, smoke runs of every divergence and mode, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from algorithms import brac
from conftest import ROOT, check_bad_flag, check_finished_run, make_dataset
from common.fast import adam


# ----------------------------------------------------------------------------------------------
# The policies' densities
# ----------------------------------------------------------------------------------------------
def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = torch.tensor([[0.3, -1.0]]), torch.tensor([[math.log(0.5), 0.0]])
    raw = torch.tensor([[0.1, 2.5]])
    normal = torch.distributions.Normal(mean, log_std.exp()).log_prob(raw)
    expected = (normal - torch.log(1 - torch.tanh(raw) ** 2)).sum(-1)
    torch.testing.assert_close(brac.log_prob_tanh_gaussian(mean, log_std, raw), expected)


def constant_policy(mean: float, std: float) -> brac.TanhGaussianPolicy:
    """A one-dimensional policy whose mean and std are `mean` and `std` at every state."""
    pi = brac.TanhGaussianPolicy(obs_dim=3, act_dim=1, hidden=8)
    last = pi.net[-1]
    raw_log_std = math.atanh((math.log(std) - brac.LOG_STD_MIN) / (0.5 * (brac.LOG_STD_MAX - brac.LOG_STD_MIN)) - 1)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.tensor([mean, raw_log_std]))
    return pi


def test_log_std_is_squashed_into_minus_five_zero():
    pi = brac.TanhGaussianPolicy(obs_dim=3, act_dim=2, hidden=8)
    with torch.no_grad():
        for p in pi.parameters():
            p.mul_(100.0)
    _, log_std = pi(torch.randn(64, 3))
    assert log_std.min() >= brac.LOG_STD_MIN and log_std.max() <= brac.LOG_STD_MAX
    mean, log_std = constant_policy(0.3, 0.5)(torch.zeros(2, 3))
    torch.testing.assert_close(log_std, torch.full((2, 1), math.log(0.5)))
    torch.testing.assert_close(mean, torch.full((2, 1), 0.3))


# ----------------------------------------------------------------------------------------------
# Divergence estimates, by hand
# ----------------------------------------------------------------------------------------------
def test_kl_estimate_by_hand():
    log_pi = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # [n = 2 samples, B = 2 states]
    log_b = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    # differences [[1, 1], [2, -1]], averaged over the samples: [1.5, 0]
    torch.testing.assert_close(brac.kl_estimate(log_pi, log_b), torch.tensor([1.5, 0.0]))


def test_kl_from_samples_approaches_the_gaussians_kl():
    """KL is invariant under the (bijective) tanh, so the sample estimate converges to the Gaussians' KL."""
    torch.manual_seed(0)
    pi, b = constant_policy(0.3, 0.5), constant_policy(-0.2, 0.8)
    obs = torch.zeros(2, 3)
    with torch.no_grad():
        samples, log_pi = pi.sample(obs, 20_000)
        estimate = brac.kl_estimate(log_pi, b.log_prob(obs, samples))
    # KL(N(0.3, 0.5^2) || N(-0.2, 0.8^2)) = ln(0.8 / 0.5) + (0.25 + 0.25) / (2 * 0.64) - 0.5
    exact = math.log(0.8 / 0.5) + (0.5**2 + 0.5**2) / (2 * 0.8**2) - 0.5
    torch.testing.assert_close(estimate, torch.full((2,), exact), atol=0.02, rtol=0)
    with torch.no_grad():  # the same policy: log pi - log pi = 0 for every sample
        same = brac.kl_estimate(log_pi, pi.log_prob(obs, samples))
    assert same.abs().max() < 1e-3


def test_mmd_laplacian_by_hand():
    # one state, n = 2 samples of one action dimension: X = {0, 1}, Y = {0, 3}; sigma 1, k = exp(-|d|)
    x, y = torch.tensor([[[0.0]], [[1.0]]]), torch.tensor([[[0.0]], [[3.0]]])  # [n, B, A]
    # (1 + e^-1) / 2 + (1 + e^-3) / 2 - 2 (1 + e^-3 + e^-1 + e^-2) / 4 = (1 - e^-2) / 2   (no square root)
    torch.testing.assert_close(brac.mmd_laplacian(x, y, 1.0), torch.tensor([(1 - math.exp(-2)) / 2]))
    # L1 over action dimensions, and sigma divides: x = 0, y = (1, 2) twice, sigma 2 -> k(x, y) = e^-1.5
    x2, y2 = torch.zeros(2, 1, 2), torch.tensor([1.0, 2.0]).expand(2, 1, 2)
    torch.testing.assert_close(brac.mmd_laplacian(x2, y2, 2.0), torch.tensor([2 - 2 * math.exp(-1.5)]))


def test_mmd_of_identical_samples_is_zero_and_of_far_apart_samples_large():
    x = torch.randn(5, 8, 3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(brac.mmd_laplacian(x, x.clone(), 20.0), torch.zeros(8))
    far = brac.mmd_laplacian(x, x + 100.0, 1.0)
    assert (far >= 2 / 5).all()  # the diagonal alone gives each set's mean kernel >= 1 / n
    assert (brac.mmd_laplacian(x, x + 0.1, 1.0) < far).all()


class Linear(nn.Module):
    """g(s, a) = a . w, whose gradient in a is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, obs, act):
        return act @ self.w


class Square(nn.Module):
    """g(s, a) = scale ||a||^2, whose gradient in a is 2 scale a."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, obs, act):
        return self.scale * (act**2).sum(-1)


def test_w_estimate_and_gradient_penalty_by_hand():
    obs = torch.zeros(2, 3)
    a_pi, a_b = torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.zeros(2, 2)
    # g(s, a) = 3 a_1 + 4 a_2: D^ = g(a_pi) - g(a_b) = [3, 6]
    g = Linear([3.0, 4.0])
    torch.testing.assert_close(brac.w_estimate(g, obs, a_pi, a_b), torch.tensor([3.0, 6.0]))
    # ||grad|| = 5 everywhere: 5 (5 - 1)^2 = 80; a 1-Lipschitz g ||grad|| = 0.5 has no penalty
    torch.testing.assert_close(brac.gradient_penalty(g, obs, a_pi, a_b, 5.0), torch.tensor(80.0))
    torch.testing.assert_close(brac.gradient_penalty(Linear([0.3, 0.4]), obs, a_pi, a_b, 5.0), torch.tensor(0.0))
    # g = ||a||^2 at a^ = a_pi + u (a_b - a_pi): u = 0 gives a^ = a_pi, ||grad|| = [2, 4]: 5 mean(1, 9) = 25;
    # u = 1/2 gives a^ = a_pi / 2, ||grad|| = [1, 2]: 5 mean(0, 1) = 2.5
    sq = Square()
    torch.testing.assert_close(brac.gradient_penalty(sq, obs, a_pi, a_b, 5.0, u=torch.zeros(2, 1)),
                               torch.tensor(25.0), atol=1e-5, rtol=0)
    gp = brac.gradient_penalty(sq, obs, a_pi, a_b, 5.0, u=torch.full((2, 1), 0.5))
    torch.testing.assert_close(gp, torch.tensor(2.5), atol=1e-5, rtol=0)
    # the penalty trains g (double backward): d/dscale of 5 mean(max(2 scale |a^| - 1, 0)^2) at scale 1, a^ = [1, 2]:
    # 5 mean(2 (2 - 1) 2, 2 (4 - 1) 4) = 5 mean(4, 24) = 70
    gp = brac.gradient_penalty(sq, obs, a_pi, a_b, 5.0, u=torch.zeros(2, 1))
    gp.backward()
    torch.testing.assert_close(sq.scale.grad, torch.tensor(70.0), atol=1e-4, rtol=0)


def test_discriminator_loss_is_minus_the_estimate_plus_the_penalty():
    obs, a_pi, a_b = torch.zeros(2, 3), torch.tensor([[1.0, 0.0], [2.0, 0.0]]), torch.zeros(2, 2)
    g = Linear([0.3, 0.4])  # no penalty: -mean(0.3, 0.6) = -0.45
    torch.testing.assert_close(brac.discriminator_loss(g, obs, a_pi, a_b, 5.0), torch.tensor(-0.45))


# ----------------------------------------------------------------------------------------------
# Where the regularizer enters: the target (value penalty only) and the policy's loss (both modes)
# ----------------------------------------------------------------------------------------------
def test_value_penalty_enters_the_target_and_policy_regularization_does_not():
    next_q = torch.tensor([[1.0, 3.0], [2.0, 0.0]])  # 2 critics, 2 next states: min = [1, 0]
    rew, done, alpha = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([0.1])
    div = torch.tensor([0.5, 2.0])
    # value penalty: V = [1 - 0.05, 0 - 0.2]; y = [1 + 0.9 * 0.95, 1 (terminal)] = [1.855, 1]
    y = brac.value_target(next_q, div, rew, done, 0.9, alpha, "value_penalty")
    torch.testing.assert_close(y, torch.tensor([1.855, 1.0]))
    # policy regularization: y = [1 + 0.9, 1], whatever the divergence
    for d in (div, div * 100):
        torch.testing.assert_close(brac.value_target(next_q, d, rew, done, 0.9, alpha, "policy_regularization"),
                                   torch.tensor([1.9, 1.0]))


def test_actor_loss_has_the_regularizer_and_the_warm_start_drops_q():
    alpha = torch.tensor([0.1], requires_grad=True)
    div = torch.tensor([0.5, 2.0], requires_grad=True)
    q_min = torch.tensor([1.0, 0.0], requires_grad=True)
    # alpha D - Q = [0.05 - 1, 0.2 - 0] -> mean -0.375
    loss = brac.actor_loss(q_min, div, alpha)
    torch.testing.assert_close(loss, torch.tensor(-0.375))
    loss.backward()
    torch.testing.assert_close(div.grad, torch.tensor([0.05, 0.05]))
    torch.testing.assert_close(q_min.grad, torch.tensor([-0.5, -0.5]))
    assert alpha.grad is None
    torch.testing.assert_close(brac.actor_loss(None, div, alpha), torch.tensor(0.125))  # warm start: mean(0.05, 0.2)


def test_q_and_bc_losses():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    torch.testing.assert_close(brac.q_loss(q, torch.tensor([2.0, 0.0])), torch.tensor(5.0))  # 2.5 + 2.5
    torch.testing.assert_close(brac.bc_loss(torch.tensor([-1.0, 3.0])), torch.tensor(-1.0))


@pytest.mark.parametrize("divergence, rises", [(0.5, True), (-0.5, False)])
def test_dual_alpha_rises_when_the_divergence_exceeds_its_target_and_falls_below(divergence, rises):
    alpha = torch.ones(1, requires_grad=True)
    torch.testing.assert_close(brac.lagrange_loss(alpha, torch.full((4,), divergence), 0.0),
                               torch.tensor(-divergence))  # -alpha (D - 0)
    opt = adam([alpha], 1e-2, torch.device("cpu"))
    for _ in range(20):
        opt.zero_grad()
        brac.lagrange_loss(alpha, torch.full((4,), divergence), threshold=0.0).backward()
        opt.step()
    assert (alpha.item() > 1.1) if rises else (alpha.item() < 0.9), alpha.item()


def test_default_phases_keep_the_authors_proportions():
    assert brac.phase_ends(brac.Args()) == (300_000, 320_000)
    assert brac.phase_ends(brac.Args(total_steps=400, behaviour_steps=10, bc_steps=5)) == (10, 15)


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = brac.Args(dataset=tiny_hopper, total_steps=200, behaviour_steps=60, bc_steps=20, eval_every=100,
                     eval_episodes=2, log_every=50, checkpoint_every=100, batch_size=32, hidden_dim=32,
                     actor_hidden_dim=32, runs_dir=str(tmp_path / "runs"), progress=False)
    run_dir, records, _ = check_finished_run(
        brac, args, brac.train(args), loss_key="loss/q", networks=("behaviour", "policy", "q"),
        finite=("loss/q", "loss/actor", "q_data", "divergence"), logged=(100, 150, 200))
    phase1 = [r for r in records if "loss/bc" in r]
    assert [r["step"] for r in phase1] == [50] and math.isfinite(phase1[0]["loss/bc"])


@pytest.mark.parametrize("flags", [
    dict(divergence="mmd", mode="policy_regularization", regularizer_mode="dual", lagrange_threshold=0.0),
    dict(divergence="w", mode="value_penalty", regularizer_mode="dual", discriminator_steps=2),
    dict(divergence="kl", mode="policy_regularization"),
], ids=["mmd-p-dual", "w-v-dual", "kl-p"])
def test_every_divergence_and_mode_trains(flags, tiny_hopper, tmp_path):
    args = brac.Args(dataset=tiny_hopper, total_steps=40, behaviour_steps=10, bc_steps=5, eval_every=40,
                     eval_episodes=0, log_every=10, checkpoint_every=40, batch_size=16, hidden_dim=16,
                     actor_hidden_dim=16, runs_dir=str(tmp_path / "runs"), progress=False, **flags)
    brac.train(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    phase2 = [r for r in records if "loss/q" in r]
    assert [r["step"] for r in phase2] == [20, 30, 40]
    keys = {"loss/actor", "divergence"}
    keys |= {"loss/lagrange", "lagrange_multiplier"} if "regularizer_mode" in flags else set()
    keys |= {"loss/discriminator"} if flags["divergence"] == "w" else set()
    for r in phase2:
        assert keys <= set(r) and all(math.isfinite(r[k]) for k in keys), r
        if "lagrange_multiplier" in r:
            assert 0.0 <= r["lagrange_multiplier"] <= brac.MAX_REGULARIZER_WEIGHT
    if flags["divergence"] == "mmd":  # identical distributions give 0; the estimate is never negative here by much
        assert all(r["divergence"] > -1e-3 for r in phase2)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("divergence", "js", "--divergence"), ("mode", "both", "--mode"),
    ("regularizer_mode", "auto", "--regularizer-mode"),
    ("regularizer_weight", -1.0, "--regularizer-weight"), ("regularizer_weight", 1e4, "--regularizer-weight"),
    ("behaviour_steps", 10**9, "--total-steps"), ("behaviour_steps", -1, "--behaviour-steps"),
    ("bc_steps", -1, "--bc-steps"), ("num_divergence_samples", 0, "--num-divergence-samples"),
    ("mmd_sigma", 0.0, "--mmd-sigma"), ("gradient_penalty_weight", -1.0, "--gradient-penalty-weight"),
    ("discriminator_steps", 0, "--discriminator-steps"), ("lagrange_threshold", float("nan"), "--lagrange-threshold"),
    ("num_critics", 0, "--num-critics"), ("behaviour_lr", 0.0, "--behaviour-lr"), ("actor_hidden_dim", 0,
                                                                                   "--actor-hidden-dim"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(brac, field, value, flag, tmp_path)


def test_cli_bad_divergence_and_discrete_dataset_are_one_line(minari_root, tmp_path):
    make_dataset("test/cartpole/tiny-v0", env_id="CartPole-v1", episodes=2, max_steps=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(minari_root)}
    script = str(ROOT / "algorithms" / "brac.py")
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, script, "--dataset", "test/cartpole/tiny-v0", "--runs-dir", str(runs)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: dataset 'test/cartpole/tiny-v0' has discrete actions; this script is for continuous (Box) actions"]
    assert not runs.exists()
    proc = subprocess.run([sys.executable, script, "--dataset", "test/none-v0", "--total-steps", "10",
                           "--behaviour-steps", "10"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.stderr.strip() == ("error: --total-steps must exceed --behaviour-steps = 10 (phase 2 needs updates), "
                                   "got 10")


@pytest.mark.compile
def test_w_divergence_compiles_and_matches_eager(tiny_hopper, tmp_path):
    """The gradient penalty's double backward runs eager inside a compiled update (torch.compile cannot do it)."""
    last = {}
    for compile_ in (False, True):
        args = brac.Args(dataset=tiny_hopper, total_steps=20, behaviour_steps=5, bc_steps=2, divergence="w",
                         regularizer_mode="dual", eval_episodes=0, log_every=5, checkpoint_every=20, batch_size=16,
                         hidden_dim=16, actor_hidden_dim=16, compile=compile_, runs_dir=str(tmp_path / str(compile_)),
                         progress=False)
        brac.train(args)
        (run_dir,) = (tmp_path / str(compile_)).iterdir()
        last[compile_] = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    for k in ("loss/q", "loss/actor", "divergence", "loss/discriminator", "lagrange_multiplier"):
        assert math.isclose(last[False][k], last[True][k], rel_tol=1e-4, abs_tol=1e-5), k
