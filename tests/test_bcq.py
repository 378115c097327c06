"""algorithms/bcq.py: losses and the target against hand-computed values, the perturbation's range, action
selection, smoke run, bad flags."""

from __future__ import annotations

import math

import pytest
import torch

from algorithms import bcq
from conftest import check_bad_flag, check_finished_run, check_probe


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_vae_loss():
    recon, act = torch.tensor([[0.5, -0.5]], requires_grad=True), torch.tensor([[0.0, 0.0]])
    mean, log_std = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2.0)]])
    # reconstruction: mean((0.5 - 0)^2, (-0.5 - 0)^2) = 0.25
    # KL per latent dim: -0.5 (1 + log sigma^2 - mu^2 - sigma^2):
    #   dim 1 (mu 1, sigma 1): -0.5 (1 + 0 - 1 - 1) = 0.5; dim 2 (mu 0, sigma 2): -0.5 (1 + 2 ln 2 - 0 - 4) = 1.5 - ln 2
    #   mean over dims = (2 - ln 2) / 2 = 1 - ln(2) / 2
    # loss = 0.25 + 0.5 * (1 - ln(2) / 2) = 0.75 - ln(2) / 4
    loss = bcq.vae_loss(recon, act, mean, log_std, kl_weight=0.5)
    torch.testing.assert_close(loss, torch.tensor(0.75 - math.log(2.0) / 4))
    loss.backward()
    torch.testing.assert_close(recon.grad, torch.tensor([[0.5, -0.5]]))  # 2 (recon - a) / 2 elements
    # kl_weight 0 is the reconstruction error alone; mu 0, sigma 1 has no KL
    torch.testing.assert_close(bcq.vae_loss(recon, act, mean, log_std, 0.0), torch.tensor(0.25))
    torch.testing.assert_close(bcq.vae_loss(recon, act, torch.zeros(1, 2), torch.zeros(1, 2), 1.0), torch.tensor(0.25))


def test_soft_clipped_target():
    # B = 2 next states, n = 3 candidates each (state-major): columns 0-2 belong to state 1, 3-5 to state 2
    next_q = torch.tensor([[1.0, 4.0, 2.0, 0.0, -1.0, 3.0],    # Q_1
                           [3.0, 2.0, 2.0, 1.0, 5.0, -2.0]])   # Q_2
    rew, done = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    # min = [1, 2, 2, 0, -1, -2], max = [3, 4, 2, 1, 5, 3]
    # lambda 0.75: 0.75 min + 0.25 max = [1.5, 2.5, 2, 0.25, 0.5, -0.75]; max per state: [2.5, 0.5]
    # gamma 0.5: y = r + 0.5 * [2.5, 0.5] = [2.25, 0.25]
    y = bcq.soft_clipped_target(next_q, rew, done, gamma=0.5, lam=0.75, n=3)
    torch.testing.assert_close(y, torch.tensor([2.25, 0.25]))
    # a terminal next state does not bootstrap
    torch.testing.assert_close(bcq.soft_clipped_target(next_q, rew, torch.tensor([0.0, 1.0]), 0.5, 0.75, 3),
                               torch.tensor([2.25, 0.0]))
    # lambda 1 is TD3's clipped double Q: max_i min_j = [2, 0] -> [2, 0]; lambda 0 the max: [4, 5] -> [3, 2.5]
    torch.testing.assert_close(bcq.soft_clipped_target(next_q, rew, done, 0.5, 1.0, 3), torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(bcq.soft_clipped_target(next_q, rew, done, 0.5, 0.0, 3), torch.tensor([3.0, 2.5]))


def test_q_loss():
    q = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # [2 critics, B=2]
    target = torch.tensor([2.0, 0.0], requires_grad=True)
    # critic 1: mean((1 - 2)^2, (2 - 0)^2) = 2.5; critic 2: mean((0 - 2)^2, (1 - 0)^2) = 2.5; sum = 5
    loss = bcq.q_loss(q, target)
    torch.testing.assert_close(loss, torch.tensor(5.0))
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([[-1.0, 2.0], [-2.0, 1.0]]))
    assert target.grad is None  # the target is a constant


def test_actor_loss():
    q1 = torch.tensor([1.0, -2.0, 4.0], requires_grad=True)
    loss = bcq.actor_loss(q1)
    torch.testing.assert_close(loss, torch.tensor(-1.0))  # -mean(1, -2, 4)
    loss.backward()
    torch.testing.assert_close(q1.grad, torch.full((3,), -1 / 3))


# ----------------------------------------------------------------------------------------------
# Networks: the perturbation's range, the VAE's latents, action selection
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("phi", [0.05, 0.3])
def test_perturbation_stays_within_phi(phi):
    torch.manual_seed(0)
    xi = bcq.Perturbation(obs_dim=4, act_dim=3, hidden=16, max_perturbation=phi)
    with torch.no_grad():
        for p in xi.parameters():
            p.mul_(50.0)  # saturate tanh: the change reaches +-Phi
    obs, act = torch.randn(256, 4), torch.rand(256, 3) * 2 - 1
    delta = xi.perturbation(obs, act)
    assert delta.abs().max() <= phi + 1e-6  # |xi(s, a) - a| <= Phi before clipping
    assert delta.abs().max() > 0.99 * phi
    out = xi(obs, act)
    torch.testing.assert_close(out, (act + delta).clamp(-1, 1))
    assert out.abs().max() <= 1.0 and (out - act).abs().max() <= phi + 1e-6
    edge = torch.ones(256, 3)  # at the bound, the clip keeps actions in [-1, 1]
    assert xi(obs, edge).max() <= 1.0


def test_vae_latents_are_clipped_and_shaped():
    vae = bcq.VAE(obs_dim=4, act_dim=3, hidden=16, max_latent=0.5)
    z = vae.sample_latent(1000, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert z.shape == (1000, 6) and z.abs().max() == 0.5  # latent dim 2 |A|, clipped (and many at the clip)
    recon, mean, log_std = vae(torch.randn(5, 4), torch.rand(5, 3) * 2 - 1)
    assert recon.shape == (5, 3) and mean.shape == log_std.shape == (5, 6) and recon.abs().max() <= 1.0


def test_select_action_picks_the_argmax_candidate():
    q1 = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    actions = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    torch.testing.assert_close(bcq.select_action(q1, actions), torch.stack([actions[0, 1], actions[1, 0]]))


def test_policy_acts_with_the_best_candidate_by_q1_and_is_deterministic():
    torch.manual_seed(0)
    vae, xi = bcq.VAE(4, 2, 16), bcq.Perturbation(4, 2, 16, 0.05)
    q = bcq.EnsembleQ(4, 2, 16)
    policy = bcq.BCQPolicy(vae, xi, q, num_samples=7, seed=3)
    obs = torch.randn(5, 4)
    with torch.no_grad():
        for b in range(5):  # by hand, one state at a time: its 7 candidates, the best by Q_1 (not Q_2)
            s = obs[b:b + 1].expand(7, -1)
            cand = xi(s, vae.decode(s, policy.z))
            torch.testing.assert_close(policy(obs)[b], cand[q(s, cand)[0].argmax()])
    torch.testing.assert_close(policy(obs), policy(obs))  # the same latents at every call
    torch.testing.assert_close(policy(obs[2:]), policy(obs)[2:])  # and for every state, whatever the batch
    other = bcq.BCQPolicy(vae, xi, q, num_samples=7, seed=3)
    assert torch.equal(other.z, policy.z)


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = bcq.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                    checkpoint_every=100, batch_size=32, hidden_dim=32, vae_hidden_dim=32,
                    runs_dir=str(tmp_path / "runs"), progress=False)
    check_finished_run(bcq, args, bcq.train(args), loss_key="loss/q", networks=("vae", "perturb", "q"),
                       finite=("loss/vae", "loss/actor", "loss/q", "q_data"))


@pytest.mark.parametrize("phi", [0.05, 0.0])
def test_probe_takes_the_acting_rule_apart(tiny_hopper, tmp_path, phi):
    """benchmarks/bcq_probe.py replays the run's final evaluation and evaluates the rule's parts; with no
    perturbation (Phi = 0) the parts without it act as the rule and the decoder do."""
    args = bcq.Args(dataset=tiny_hopper, total_steps=20, eval_every=20, eval_episodes=1, log_every=10,
                    checkpoint_every=20, batch_size=16, hidden_dim=16, vae_hidden_dim=16, num_eval_action_samples=10,
                    max_perturbation=phi, runs_dir=str(tmp_path / "runs"), progress=False)
    r = check_probe(bcq, args, "bcq_probe.py", tmp_path)
    returns = r["returns"]
    assert {"fresh_latents_per_step", "vae_decoder_at_z0", "unperturbed_candidates_best_by_q1",
            "perturbed_decoder_at_z0"} <= set(returns)
    assert len(r["q1_at_first_state"]) == len(r["discounted_return_from_first_state"]) == 1
    if phi == 0.0:
        assert returns["unperturbed_candidates_best_by_q1"] == returns["as_the_script_acts"]
        assert returns["perturbed_decoder_at_z0"] == returns["vae_decoder_at_z0"]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("hidden_dim", 1, "--hidden-dim"), ("vae_hidden_dim", 0, "--vae-hidden-dim"),
    ("max_perturbation", -0.1, "--max-perturbation"), ("target_min_weight", 1.5, "--target-min-weight"),
    ("target_min_weight", -0.1, "--target-min-weight"), ("num_action_samples", 0, "--num-action-samples"),
    ("num_eval_action_samples", 0, "--num-eval-action-samples"), ("kl_weight", -1.0, "--kl-weight"),
    ("max_latent", 0.0, "--max-latent"), ("actor_lr", 0.0, "--actor-lr"), ("gamma", 1.0, "--gamma"),
    ("tau", 0.0, "--tau"), ("total_steps", 0, "--total-steps"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(bcq, field, value, flag, tmp_path)
