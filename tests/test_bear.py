"""algorithms/bear.py: the VAE's loss, the MMD estimators and the target against hand-computed values, the Lagrange
multiplier's direction, acting by the best of sampled actions, smoke run, bad input."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from algorithms import bear
from conftest import ROOT, check_bad_flag, check_finished_run, check_probe, make_dataset
from common.fast import adam


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_vae_loss():
    recon, act = torch.tensor([[0.2, -0.4]], requires_grad=True), torch.tensor([[0.0, 0.0]])
    mean, log_std = torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, math.log(0.5)]])
    # reconstruction: mean(0.2^2, 0.4^2) = (0.04 + 0.16) / 2 = 0.1
    # KL per latent dim, -0.5 (1 + log sigma^2 - mu^2 - sigma^2):
    #   dim 1 (mu 0.5, sigma 1): -0.5 (1 + 0 - 0.25 - 1) = 0.125
    #   dim 2 (mu 0, sigma 0.5): -0.5 (1 - 2 ln 2 - 0 - 0.25) = ln 2 - 0.375
    #   mean = (ln 2 - 0.25) / 2
    # loss = 0.1 + 0.5 (ln 2 - 0.25) / 2 = 0.0375 + ln(2) / 4
    loss = bear.vae_loss(recon, act, mean, log_std, kl_weight=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.0375 + math.log(2.0) / 4))
    loss.backward()
    torch.testing.assert_close(recon.grad, torch.tensor([[0.2, -0.4]]))  # 2 (recon - a) / 2 elements


def test_mmd_one_dimension_by_hand():
    # one state, n = 2 samples of one action dimension: X = {0, 1}, Y = {0, 3}; sigma 0.5, so 2 sigma = 1
    x, y = torch.tensor([[[0.0], [1.0]]]), torch.tensor([[[0.0], [3.0]]])
    # gaussian k = exp(-d^2): mean k(x, x') = (2 + 2 e^-1) / 4, mean k(y, y') = (2 + 2 e^-9) / 4,
    # mean k(x, y) = (e^0 + e^-9 + e^-1 + e^-4) / 4  ->  MMD^2 = (1 - e^-4) / 2
    gaussian = math.sqrt((1 - math.exp(-4)) / 2 + 1e-6)
    torch.testing.assert_close(bear.mmd(x, y, "gaussian", 0.5), torch.tensor([gaussian]))
    # laplacian k = exp(-|d|): (1 + e^-1) / 2 + (1 + e^-3) / 2 - 2 (1 + e^-3 + e^-1 + e^-2) / 4 = (1 - e^-2) / 2
    laplacian = math.sqrt((1 - math.exp(-2)) / 2 + 1e-6)
    torch.testing.assert_close(bear.mmd(x, y, "laplacian", 0.5), torch.tensor([laplacian]))


def test_mmd_norms_over_action_dimensions_and_states():
    # two states, n = 2 identical samples each, two action dimensions; sigma 1 (2 sigma = 2)
    x = torch.zeros(2, 2, 2)
    y = torch.tensor([[1.0, 2.0], [1.0, 2.0]]).expand(2, 2, 2).clone()
    y[1] = 0.0  # the second state's samples coincide with X: MMD = sqrt(1e-6)
    # state 1: k(x, x') = k(y, y') = 1; gaussian ||x - y||^2 = 5 -> k = e^-2.5; laplacian ||x - y||_1 = 3 -> e^-1.5
    torch.testing.assert_close(bear.mmd(x, y, "gaussian", 1.0),
                               torch.tensor([math.sqrt(2 - 2 * math.exp(-2.5) + 1e-6), 1e-3]))
    torch.testing.assert_close(bear.mmd(x, y, "laplacian", 1.0),
                               torch.tensor([math.sqrt(2 - 2 * math.exp(-1.5) + 1e-6), 1e-3]))


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_mmd_of_identical_samples_is_zero_and_of_far_apart_samples_large(kernel):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 5, 3, generator=g)
    same = bear.mmd(x, x.clone(), kernel, 10.0)
    torch.testing.assert_close(same, torch.full((8,), 1e-3))  # only the 1e-6 under the square root
    far = bear.mmd(x, x + 100.0, kernel, 1.0)
    # k(x, y) ~ 0 across the two sets; within a set at least the diagonal counts (1 of n per row): MMD^2 >= 2 / n
    assert (far >= math.sqrt(2 / 5)).all()
    near = bear.mmd(x, x + 0.1, kernel, 1.0)
    assert (near < far).all() and (near > same).all()


def test_soft_clipped_target_over_an_ensemble_of_three():
    # B = 2 next states, m = 2 policy samples each (state-major), 3 critics
    next_q = torch.tensor([[1.0, 4.0, 0.0, 2.0],
                           [3.0, 2.0, 1.0, -2.0],
                           [2.0, 0.0, 5.0, 1.0]])
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # min over critics = [1, 0, 0, -2], max = [3, 4, 5, 2]; 0.75 min + 0.25 max = [1.5, 1, 1.25, -1]
    # max per state: [1.5, 1.25]; gamma 0.9: y = [1 + 1.35, 0 (terminal)]
    y = bear.soft_clipped_target(next_q, rew, done, gamma=0.9, lam=0.75, n=2)
    torch.testing.assert_close(y, torch.tensor([2.35, 0.0]))


def test_q_loss():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0], [2.0, 0.0]], requires_grad=True)
    target = torch.tensor([2.0, 0.0])
    # per critic: mean((1-2)^2, (2-0)^2) = 2.5; mean(4, 1) = 2.5; mean(0, 0) = 0; sum 5
    torch.testing.assert_close(bear.q_loss(q, target), torch.tensor(5.0))


def test_actor_loss_and_warm_start():
    alpha = torch.tensor([2.0], requires_grad=True)
    div = torch.tensor([0.3, 0.1], requires_grad=True)
    q_min = torch.tensor([1.0, 3.0], requires_grad=True)
    # alpha (MMD - 0.05) = [0.5, 0.1]; minus Q: [-0.5, -2.9]; mean -1.7
    loss = bear.actor_loss(q_min, div, alpha, threshold=0.05)
    torch.testing.assert_close(loss, torch.tensor(-1.7))
    loss.backward()
    torch.testing.assert_close(div.grad, torch.tensor([1.0, 1.0]))  # alpha / B
    torch.testing.assert_close(q_min.grad, torch.tensor([-0.5, -0.5]))
    assert alpha.grad is None  # the multiplier is a constant in the policy's loss
    # warm start: the constraint term only, mean(0.5, 0.1) = 0.3
    torch.testing.assert_close(bear.actor_loss(None, div, alpha, 0.05), torch.tensor(0.3))


def test_lagrange_loss_by_hand():
    log_alpha = torch.tensor([math.log(2.0)], requires_grad=True)
    div = torch.tensor([0.3, 0.1], requires_grad=True)
    # -(2 (0.25 + 0.05) / 2) = -0.3; d/d log alpha = -alpha mean(MMD - eps) = -0.3
    loss = bear.lagrange_loss(log_alpha, div, threshold=0.05)
    torch.testing.assert_close(loss, torch.tensor(-0.3))
    loss.backward()
    torch.testing.assert_close(log_alpha.grad, torch.tensor([-0.3]))
    assert div.grad is None  # the MMD is a constant in the multiplier's loss


@pytest.mark.parametrize("divergence, rises", [(0.5, True), (0.01, False)])
def test_multiplier_rises_when_violated_and_falls_when_slack(divergence, rises):
    log_alpha = torch.zeros(1, requires_grad=True)
    opt = adam([log_alpha], 1e-2, torch.device("cpu"))
    div = torch.full((16,), divergence)
    for _ in range(20):
        opt.zero_grad()
        bear.lagrange_loss(log_alpha, div, threshold=0.05).backward()
        opt.step()
    moved = log_alpha.item()
    assert (moved > 0.1) if rises else (moved < -0.1), moved


# ----------------------------------------------------------------------------------------------
# Networks: policy samples, VAE samples, acting
# ----------------------------------------------------------------------------------------------
def test_policy_and_vae_samples_are_shaped_and_tanh_of_their_raw_values():
    torch.manual_seed(0)
    pi, vae = bear.TanhGaussianPolicy(4, 3, 16), bear.VAE(4, 3, 16, max_latent=0.5)
    obs = torch.randn(5, 4)
    act, raw = pi.sample(obs, 7)
    assert act.shape == raw.shape == (5, 7, 3)
    torch.testing.assert_close(act, torch.tanh(raw))
    b_act, b_raw = vae.sample(obs, 4)
    assert b_act.shape == b_raw.shape == (5, 4, 3)
    torch.testing.assert_close(b_act, torch.tanh(b_raw))


def test_policy_acts_with_the_best_sample_by_q1_and_is_deterministic():
    torch.manual_seed(0)
    pi, q = bear.TanhGaussianPolicy(4, 2, 16), bear.EnsembleQ(4, 2, 16, n=2)
    policy = bear.BEARPolicy(pi, q, num_samples=6, act_dim=2, seed=3)
    obs = torch.randn(5, 4)
    with torch.no_grad():
        mean, log_std = pi(obs)
        for b in range(5):  # by hand, one state at a time: its 6 samples, the best by Q_1 (not Q_2)
            cand = torch.tanh(mean[b] + log_std[b].exp() * policy.eps)
            s = obs[b:b + 1].expand(6, -1)
            torch.testing.assert_close(policy(obs)[b], cand[q(s, cand)[0].argmax()])
    torch.testing.assert_close(policy(obs), policy(obs))
    torch.testing.assert_close(policy(obs[2:]), policy(obs)[2:])
    assert torch.equal(bear.BEARPolicy(pi, q, 6, 2, seed=3).eps, policy.eps)


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process (warm start, then the full loss)
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = bear.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                     checkpoint_every=100, batch_size=32, hidden_dim=32, vae_hidden_dim=32, bc_steps=100,
                     num_eval_action_samples=10, runs_dir=str(tmp_path / "runs"), progress=False)
    _, records, ckpt = check_finished_run(
        bear, args, bear.train(args), loss_key="loss/q", networks=("vae", "policy", "q"),
        finite=("loss/vae", "loss/actor", "loss/q", "loss/lagrange", "q_data", "divergence", "lagrange_multiplier"))
    for r in records:
        if "lagrange_multiplier" in r:
            assert math.exp(bear.LOG_ALPHA_MIN) - 1e-6 <= r["lagrange_multiplier"] <= math.exp(bear.LOG_ALPHA_MAX)
    assert bear.LOG_ALPHA_MIN <= float(ckpt["log_alpha"]) <= bear.LOG_ALPHA_MAX


def test_probe_takes_the_acting_rule_apart(tiny_hopper, tmp_path):
    """benchmarks/bear_probe.py replays the run's final evaluation, evaluates the other acting rules, and gives the
    critic's first-state value beside the discounted return earned."""
    args = bear.Args(dataset=tiny_hopper, total_steps=20, eval_every=20, eval_episodes=1, log_every=10,
                     checkpoint_every=20, batch_size=16, hidden_dim=16, vae_hidden_dim=16, bc_steps=10,
                     runs_dir=str(tmp_path / "runs"), progress=False)
    r = check_probe(bear, args, "bear_probe.py", tmp_path)
    assert set(r["returns"]) == {"as_the_script_acts", "best_of_10_by_q1", "one_policy_sample", "policy_mean_tanh_mu"}
    assert len(r["q1_at_first_state"]) == len(r["discounted_return_from_first_state"]) == 1
    assert all(math.isfinite(v) for v in [*r["q1_at_first_state"], *r["discounted_return_from_first_state"]])
    # the constraint: the checkpoint's multiplier, the run's settings, and the lowest MMD of its log
    (run,) = (tmp_path / "runs").iterdir()
    c, state = r["constraint"], torch.load(run / "checkpoint.pt", weights_only=False)
    assert c["multiplier"] == pytest.approx(float(state["log_alpha"].exp()))
    assert (c["samples"], c["threshold"], c["kernel"]) == (4, args.lagrange_threshold, args.kernel)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert c["log"]["lowest_mmd_logged"] == min(m["divergence"] for m in logged if "divergence" in m)
    # two draws, not one twice (that gives sqrt(1e-6)), and pi's samples, not the VAE's, on the other side
    assert c["mmd_vae_vs_itself"] > 1.001e-3 and c["mmd_policy_vs_vae"] != c["mmd_vae_vs_itself"]
    assert c["policy_std"] > 0


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("kernel", "cosine", "--kernel"), ("mmd_sigma", 0.0, "--mmd-sigma"), ("mmd_sigma", float("nan"), "--mmd-sigma"),
    ("num_critics", 1, "--num-critics"), ("lagrange_threshold", -0.1, "--lagrange-threshold"),
    ("num_divergence_samples", 1, "--num-divergence-samples"), ("bc_steps", -1, "--bc-steps"),
    ("behaviour_lr", 0.0, "--behaviour-lr"), ("lagrange_lr", -1.0, "--lagrange-lr"),
    ("target_min_weight", 1.5, "--target-min-weight"), ("num_action_samples", 0, "--num-action-samples"),
    ("num_eval_action_samples", 0, "--num-eval-action-samples"), ("hidden_dim", 0, "--hidden-dim"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(bear, field, value, flag, tmp_path)


def test_cli_bad_kernel_and_discrete_dataset_are_one_line(minari_root, tmp_path):
    make_dataset("test/cartpole/tiny-v0", env_id="CartPole-v1", episodes=2, max_steps=20)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(minari_root)}
    script = str(ROOT / "algorithms" / "bear.py")
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, script, "--dataset", "test/cartpole/tiny-v0", "--runs-dir", str(runs)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode != 0 and "Traceback" not in proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: dataset 'test/cartpole/tiny-v0' has discrete actions; this script is for continuous (Box) actions"]
    assert not runs.exists()  # no run folder for a run that never started
    proc = subprocess.run([sys.executable, script, "--dataset", "test/none-v0", "--mmd-sigma", "-1"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.stderr.strip() == "error: --mmd-sigma must be positive, got -1.0"
