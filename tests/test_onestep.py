"""algorithms/onestep.py: SARSA data and losses by hand, the three phases, smoke run, bad flags, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from algorithms import onestep
from common.checkpoints import load_checkpoint
from common.config import ArgumentError
from common.data import load_dataset
from common.evaluation import evaluate
from conftest import check_bad_flag, check_finished_run


# ----------------------------------------------------------------------------------------------
# Data and losses, by hand
# ----------------------------------------------------------------------------------------------
def test_sarsa_loss():
    q = torch.tensor([1.0, 2.0, 0.0], requires_grad=True)
    rew, done = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 0.0])
    next_q = torch.tensor([2.0, 5.0, -4.0], requires_grad=True)  # Qbar(s', a') at the dataset's next actions
    # gamma = 0.5: y = r + gamma (1 - d) Qbar(s', a') = [1 + 1, 0 + 0, 2 - 2] = [2, 0, 0]
    # loss = mean((q - y)^2) = mean(1, 4, 0) = 5 / 3
    loss = onestep.sarsa_loss(q, rew, done, next_q, 0.5)
    torch.testing.assert_close(loss, torch.tensor(5.0 / 3))
    loss.backward()
    # d/dq = 2 (q - y) / B = [-2, 4, 0] / 3; no gradient into the target
    torch.testing.assert_close(q.grad, torch.tensor([-2.0, 4.0, 0.0]) / 3)
    assert next_q.grad is None


def test_advantage_against_sampled_behaviour_actions():
    q_data = torch.tensor([3.0, 1.0, -1.0])  # Q(s, a) at the dataset actions, B = 3
    q_samples = torch.tensor([[1.0, 2.0, 0.0],  # Q(s, a_j), a_j ~ beta, N = 2 samples per state
                              [3.0, 0.0, -4.0]])
    # baseline V(s) = mean_j Q(s, a_j) = [2, 1, -2]; A = Q(s, a) - V(s) = [1, 0, 1]
    torch.testing.assert_close(onestep.advantage(q_data, q_samples), torch.tensor([1.0, 0.0, 1.0]))


def test_exp_weight_loss():
    log_prob = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([0.0, 10.0, -2 * math.log(2.0)], requires_grad=True)
    # inverse temperature tau = 0.5, max_weight 100: w = [exp(0), min(exp(5), 100), exp(-ln 2)] = [1, 100, 0.5]
    # loss = -mean(w log pi) = -(1 * -1 + 100 * -2 + 0.5 * -0.5) / 3 = 201.25 / 3
    loss = onestep.exp_weight_loss(log_prob, adv, tau=0.5, max_weight=100.0)
    torch.testing.assert_close(loss, torch.tensor(201.25 / 3))
    loss.backward()
    torch.testing.assert_close(log_prob.grad, torch.tensor([-1.0, -100.0, -0.5]) / 3)
    assert adv.grad is None  # the weights are constants
    # a larger advantage gets a larger weight: the gradient pulls harder on the better action
    assert log_prob.grad[1] < log_prob.grad[0] < log_prob.grad[2]
    # tau = 0 is behaviour cloning: loss = -mean(log pi) = 3.5 / 3
    torch.testing.assert_close(onestep.exp_weight_loss(log_prob, adv, 0.0, 100.0), torch.tensor(3.5 / 3))


def test_reverse_kl_loss():
    q_pi = torch.tensor([1.0, 2.0], requires_grad=True)  # Q(s, a~), a~ ~ pi, B = 2
    log_pi = torch.tensor([[-1.0, -2.0], [-3.0, -2.0]])  # [N = 2, B]
    log_beta = torch.tensor([[-2.0, -2.0], [-2.0, -4.0]])
    # KL estimate = mean_j (log pi - log beta) = mean([1, 0], [-1, 2]) = [0, 1]
    # alpha = 0.5: loss = mean(-q + 0.5 KL) = mean(-1 + 0, -2 + 0.5) = -1.25
    loss = onestep.reverse_kl_loss(q_pi, log_pi, log_beta, alpha=0.5)
    torch.testing.assert_close(loss, torch.tensor(-1.25))
    loss.backward()
    torch.testing.assert_close(q_pi.grad, torch.tensor([-0.5, -0.5]))  # minimizing raises Q(s, a~)


def test_bc_loss():
    torch.testing.assert_close(onestep.bc_loss(torch.tensor([-1.0, -3.0])), torch.tensor(2.0))


def test_gaussian_policy_soft_clamps_mean_and_log_std():
    torch.manual_seed(0)
    policy = onestep.GaussianPolicy(obs_dim=4, act_dim=2, hidden=8)
    obs, act = torch.randn(5, 4), torch.rand(5, 2) * 2 - 1
    mu, raw = policy.net(obs).chunk(2, -1)
    mean, log_std = torch.tanh(mu), -5.0 + 2.5 * (torch.tanh(raw) + 1.0)  # log-std in [-5, 0]
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(act).sum(-1)
    torch.testing.assert_close(policy.log_prob(obs, act), expected)
    torch.testing.assert_close(policy.act(obs), mean)  # evaluation uses the mean action
    with torch.no_grad():
        policy.net[-1].bias.copy_(torch.tensor([50.0, -50.0, 50.0, -50.0]))  # saturate both heads
    dist = policy.dist(obs)
    torch.testing.assert_close(dist.mean, torch.tensor([[1.0, -1.0]]).expand(5, 2))
    torch.testing.assert_close(dist.stddev.log(), torch.tensor([[0.0, -5.0]]).expand(5, 2))


def test_phase_ends_default_to_the_papers_proportions():
    assert onestep.phase_ends(onestep.Args()) == (500_000, 2_500_000)  # 500k BC, 2M Q, 100k improvement
    assert onestep.phase_ends(onestep.Args(total_steps=300)) == (57, 287)
    assert onestep.phase_ends(onestep.Args(total_steps=300, bc_steps=10, q_steps=20)) == (10, 30)


# ----------------------------------------------------------------------------------------------
# The three phases, end to end
# ----------------------------------------------------------------------------------------------
def small_args(dataset: str, runs_dir: Path, **kw) -> onestep.Args:
    base = dict(dataset=dataset, bc_steps=100, q_steps=100, batch_size=32, hidden_dim=32, eval_every=10_000,
                eval_episodes=1, log_every=50, checkpoint_every=10_000, runs_dir=str(runs_dir), progress=False)
    return onestep.Args(**(base | kw))


def test_phases_freeze_beta_then_q_and_start_pi_from_beta(tiny_hopper, tmp_path):
    onestep.train(small_args(tiny_hopper, tmp_path / "a", total_steps=300))  # 100 BC, 100 Q, 100 improvement
    onestep.train(small_args(tiny_hopper, tmp_path / "b", total_steps=201))  # the same, 1 improvement update
    a, b = (load_checkpoint(next((tmp_path / d).iterdir()) / "checkpoint.pt") for d in ("a", "b"))
    for name in ("behaviour", "q", "q_target"):  # neither beta nor Q change in the improvement phase
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
    # after one Adam step (lr 1e-4) pi is still within about lr of beta, the network it was copied from
    gaps = [(b["policy"][k] - b["behaviour"][k]).abs().max().item() for k in b["policy"]]
    assert 0 < max(gaps) <= 1.5e-4
    gaps = [(a["policy"][k] - a["behaviour"][k]).abs().max().item() for k in a["policy"]]
    assert max(gaps) > 1e-3  # 100 improvement updates later, pi has moved away from beta


def test_resume_exactly_at_the_start_of_the_improvement_phase(tiny_hopper, tmp_path, monkeypatch):
    import common.evaluation

    def crash(*a, **kw):
        raise KeyboardInterrupt  # the run dies after its checkpoint at step 200 = bc_steps + q_steps

    monkeypatch.setattr(common.evaluation, "evaluate", crash)  # what the script's Evaluator runs
    with pytest.raises(KeyboardInterrupt):
        onestep.train(small_args(tiny_hopper, tmp_path / "killed", total_steps=300, checkpoint_every=200,
                                 eval_every=250))
    (run_dir,) = (tmp_path / "killed").iterdir()
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 200
    monkeypatch.setattr(common.evaluation, "evaluate", evaluate)
    onestep.train(onestep.Args(resume=str(run_dir), progress=False))
    onestep.train(small_args(tiny_hopper, tmp_path / "clean", total_steps=300, checkpoint_every=200, eval_every=250))
    resumed = load_checkpoint(run_dir / "checkpoint.pt")
    clean = load_checkpoint(next((tmp_path / "clean").iterdir()) / "checkpoint.pt")
    assert resumed["step"] == clean["step"] == 300
    for name in ("behaviour", "q", "policy", "pi_opt"):
        state_a, state_b = resumed[name], clean[name]
        if name == "pi_opt":
            state_a, state_b = state_a["state"], state_b["state"]
        assert state_a.keys() == state_b.keys()
        for k in state_a:
            va, vb = state_a[k], state_b[k]
            if isinstance(va, dict):
                assert all(torch.equal(va[j], vb[j]) for j in va), (name, k)
            else:
                assert torch.equal(va, vb), (name, k)


def test_train_smoke(tiny_hopper, tmp_path):
    args = onestep.Args(dataset=tiny_hopper, total_steps=260, eval_every=100, eval_episodes=2, log_every=50,
                        checkpoint_every=100, batch_size=64, hidden_dim=64, runs_dir=str(tmp_path / "runs"),
                        progress=False)
    result = onestep.train(args)  # phases: [0, 50) BC, [50, 250) Q, [250, 260) improvement
    _, records, _ = check_finished_run(onestep, args, result, loss_key="phase", finite=(),
                                       networks=("behaviour", "q", "policy"), steps=260, evals=(100, 200, 260),
                                       logged=(50, 100, 150, 200, 250))
    logs = [r for r in records if "phase" in r]
    assert [r["phase"] for r in logs] == [1, 2, 2, 2, 2]
    assert math.isfinite(logs[0]["loss/bc"])
    for r in logs[1:]:
        assert math.isfinite(r["loss/q"]) and math.isfinite(r["q_data"])


def test_load_policy_replays_the_final_evaluation(tiny_hopper, tmp_path):
    args = small_args(tiny_hopper, tmp_path / "runs", total_steps=22, bc_steps=10, q_steps=10, eval_every=22,
                      eval_episodes=2)
    result = onestep.train(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    policy = onestep.load_policy(run_dir)  # pi: the run ended in the improvement phase
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert all(torch.equal(v, ckpt["policy"][k]) for k, v in policy.module.policy.state_dict().items())
    returns = evaluate(policy, load_dataset(tiny_hopper).env_spec, args.eval_episodes, seed=args.seed)
    assert float(returns.mean()) == result["final_return"]


def test_reverse_kl_improvement_trains(tiny_hopper, tmp_path):
    result = onestep.train(small_args(tiny_hopper, tmp_path / "runs", total_steps=250, improvement="reverse_kl",
                                      log_every=250))
    (run_dir,) = (tmp_path / "runs").iterdir()
    (last,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
               if "loss/actor" in line]
    assert last["phase"] == 3 and math.isfinite(last["loss/actor"]) and math.isfinite(last["q_pi"])
    assert math.isfinite(result["final_score"])


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("bc_steps", -1, "--bc-steps"), ("q_steps", -5, "--q-steps"),
    ("total_steps", 0, "--total-steps"), ("inverse_temperature", -0.1, "--inverse-temperature"),
    ("max_weight", 0.0, "--max-weight"), ("regularizer_weight", -1.0, "--regularizer-weight"),
    ("num_action_samples", 0, "--num-action-samples"), ("target_update_every", 0, "--target-update-every"),
    ("hidden_dim", 0, "--hidden-dim"), ("gamma", 1.0, "--gamma"), ("actor_lr", 0.0, "--actor-lr"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(onestep, field, value, flag, tmp_path)


@pytest.mark.parametrize("total, bc, q", [(1000, 600, 400), (1000, 900, None), (1000, None, 900)])
def test_phases_must_leave_room_for_improvement(total, bc, q, tmp_path):
    args = onestep.Args(dataset="test/none-v0", total_steps=total, bc_steps=bc, q_steps=q, runs_dir=str(tmp_path))
    with pytest.raises(ArgumentError, match="--total-steps must exceed bc_steps \\+ q_steps"):
        onestep.train(args)
