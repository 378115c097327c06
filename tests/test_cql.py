"""algorithms/cql.py: losses against hand-computed values, the tanh-Gaussian policy, smoke run with exact
resume, bad flags, CLI."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import tyro

import algorithms.cql as cql
from common.checkpoints import load_checkpoint
from conftest import check_bad_flag, check_finished_run

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_cql_gap_one_sample_of_each_kind():
    # one critic, N = 1, one state, |A| = 1: uniform density 0.5, so -log mu = +ln 2
    q_rand, q_pi_next, q_pi = torch.tensor([[[1.0]]]), torch.tensor([[[2.0]]]), torch.tensor([[[0.5]]])
    logp_next, logp = torch.tensor([[0.3]]), torch.tensor([[-0.2]])
    q_data = torch.tensor([[1.5]], requires_grad=True)
    # terms: [1 + ln 2, 2 - 0.3, 0.5 + 0.2] = [1.693, 1.7, 0.7]
    # gap = ln(2e + e^1.7 + e^0.7) - 1.5 = ln(5.4366 + 5.4739 + 2.0138) - 1.5 = 2.5591 - 1.5 = 1.0591
    gap = cql.cql_gap(q_rand, q_pi_next, q_pi, logp_next, logp, q_data, act_dim=1, temp=1.0)
    expected = math.log(2 * math.e + math.exp(1.7) + math.exp(0.7)) - 1.5
    assert expected == pytest.approx(1.0591, abs=1e-4)
    torch.testing.assert_close(gap, torch.tensor([expected]))
    gap.sum().backward()
    torch.testing.assert_close(q_data.grad, torch.tensor([[-1.0]]))  # E_D[Q] enters with weight -1

    # temp = 2: 2 ln(e^(1.693 / 2) + e^(1.7 / 2) + e^(0.7 / 2)) - 1.5
    gap2 = cql.cql_gap(q_rand, q_pi_next, q_pi, logp_next, logp, q_data, act_dim=1, temp=2.0)
    expected2 = 2 * math.log(math.exp((1 + LN2) / 2) + math.exp(0.85) + math.exp(0.35)) - 1.5
    torch.testing.assert_close(gap2, torch.tensor([expected2]))


def test_cql_gap_per_critic_and_mean_over_states():
    # 2 critics, N = 2, B = 3 states, |A| = 2; critic 1 is 1.0 everywhere, critic 2 is 3.0; log pi = 0.
    # Per state: 2 uniform terms c + 2 ln 2 = c + ln 4 and 4 policy terms c: logsumexp = c + ln(2 * 4 + 4) = c + ln 12.
    n, N, B = 2, 2, 3
    c = torch.tensor([1.0, 3.0]).view(n, 1, 1)
    q = c.expand(n, N, B)
    logp = torch.zeros(N, B, requires_grad=True)
    q_data = torch.tensor([[1.0, 1.0, 1.0], [0.0, 3.0, 6.0]])  # means 1 and 3
    gap = cql.cql_gap(q, q, q, logp, logp, q_data, act_dim=2, temp=1.0)
    torch.testing.assert_close(gap, torch.tensor([math.log(12.0), math.log(12.0)]))
    # importance weights are constants: no gradient into log pi
    q_rand = q.clone().requires_grad_(True)
    cql.cql_gap(q_rand, q, q, logp, logp, q_data, act_dim=2, temp=1.0).sum().backward()
    assert logp.grad is None
    # d gap / d Q_rand = softmax weight of that term / B = (4 / 12) / 3 states
    torch.testing.assert_close(q_rand.grad, torch.full((n, N, B), 4.0 / 12.0 / 3))


def test_td_loss():
    q_data = torch.tensor([[1.0, 2.0], [0.0, 1.0]], requires_grad=True)  # [2 critics, B = 2]
    target = torch.tensor([2.0, 0.0], requires_grad=True)
    # critic 1: mean((1 - 2)^2, (2 - 0)^2) = 2.5; critic 2: mean((0 - 2)^2, (1 - 0)^2) = 2.5
    loss = cql.td_loss(q_data, target)
    torch.testing.assert_close(loss, torch.tensor([2.5, 2.5]))
    loss.sum().backward()
    torch.testing.assert_close(q_data.grad, torch.tensor([[-1.0, 2.0], [-2.0, 1.0]]))
    assert target.grad is None  # the Bellman target is a constant


def test_lagrange_loss_raises_alpha_prime_only_above_the_threshold():
    log_alpha_prime = torch.zeros(1, requires_grad=True)  # alpha' = 1
    gap = torch.tensor([3.0, 1.0], requires_grad=True)
    # alpha_cql = 2, threshold = 1: -1/2 (1 * (6 - 1) + 1 * (2 - 1)) = -3
    loss = cql.lagrange_loss(log_alpha_prime.exp(), gap, alpha_cql=2.0, threshold=1.0)
    torch.testing.assert_close(loss, torch.tensor(-3.0))
    loss.backward()
    # d/d log alpha' = alpha' * (-3) = -3 < 0: gradient descent raises alpha'
    torch.testing.assert_close(log_alpha_prime.grad, torch.tensor([-3.0]))
    assert gap.grad is None  # alpha' does not train the critics

    log_alpha_prime.grad = None
    small = torch.tensor([0.2, 0.1])  # 2 * gap below the threshold: -1/2 ((0.4 - 1) + (0.2 - 1)) = 0.7
    loss = cql.lagrange_loss(log_alpha_prime.exp(), small, alpha_cql=2.0, threshold=1.0)
    torch.testing.assert_close(loss, torch.tensor(0.7))
    loss.backward()
    assert log_alpha_prime.grad.item() > 0  # alpha' shrinks


def test_sac_and_bc_actor_losses():
    log_pi = torch.tensor([-1.0, 0.5], requires_grad=True)
    q_min = torch.tensor([2.0, 3.0], requires_grad=True)
    log_alpha = torch.tensor([math.log(0.5)], requires_grad=True)
    # SAC: mean(0.5 * -1 - 2, 0.5 * 0.5 - 3) = mean(-2.5, -2.75) = -2.625
    loss = cql.sac_actor_loss(log_pi, q_min, log_alpha.exp())
    torch.testing.assert_close(loss, torch.tensor(-2.625))
    loss.backward()
    torch.testing.assert_close(log_pi.grad, torch.tensor([0.25, 0.25]))  # alpha / B
    torch.testing.assert_close(q_min.grad, torch.tensor([-0.5, -0.5]))  # -1 / B
    assert log_alpha.grad is None  # alpha is tuned by its own loss only

    # BC: mean(0.5 * -1 - (-2), 0.5 * 0.5 - (-0.5)) = mean(1.5, 0.75) = 1.125
    log_prob_data = torch.tensor([-2.0, -0.5], requires_grad=True)
    loss = cql.bc_actor_loss(log_pi, log_prob_data, log_alpha.exp())
    torch.testing.assert_close(loss, torch.tensor(1.125))
    loss.backward()
    torch.testing.assert_close(log_prob_data.grad, torch.tensor([-0.5, -0.5]))  # maximizes log pi(a_data|s)


def test_alpha_loss_moves_alpha_toward_the_target_entropy():
    log_alpha = torch.tensor([LN2], requires_grad=True)
    log_pi = torch.tensor([-1.0, -3.0], requires_grad=True)  # entropy estimate -mean(log pi) = 2
    # target entropy -1: loss = -ln 2 * mean(-1 + (-1), -3 + (-1)) = -ln 2 * (-3) = 3 ln 2
    loss = cql.alpha_loss(log_alpha, log_pi, target_entropy=-1.0)
    torch.testing.assert_close(loss, torch.tensor(3 * LN2))
    loss.backward()
    torch.testing.assert_close(log_alpha.grad, torch.tensor([3.0]))  # > 0: entropy 2 above the target, alpha falls
    assert log_pi.grad is None
    # entropy below the target (log pi = 2, entropy -2 < -1): the gradient -(2 - 1) = -1 flips sign, alpha rises
    log_alpha.grad = None
    cql.alpha_loss(log_alpha, torch.tensor([2.0]), target_entropy=-1.0).backward()
    torch.testing.assert_close(log_alpha.grad, torch.tensor([-1.0]))


# ----------------------------------------------------------------------------------------------
# Policy and networks
# ----------------------------------------------------------------------------------------------
def test_sample_actions_log_prob_matches_torch_distributions():
    torch.manual_seed(0)
    mean = (torch.rand(4, 2) - 0.5).requires_grad_(True)
    log_std = torch.full((4, 2), -1.0, requires_grad=True)
    torch.manual_seed(1)
    act, logp = cql.sample_actions(mean, log_std, 3)
    assert act.shape == (3, 4, 2) and logp.shape == (3, 4)
    torch.manual_seed(1)
    z = mean + log_std.exp() * torch.randn(3, 4, 2)  # the same noise
    expected = (torch.distributions.Normal(mean, log_std.exp()).log_prob(z)
                - torch.log(1 - torch.tanh(z) ** 2 + 1e-6)).sum(-1)
    torch.testing.assert_close(act, torch.tanh(z))
    torch.testing.assert_close(logp, expected)
    (act.sum() + logp.sum()).backward()  # reparameterized: gradients reach the mean and log-std
    assert mean.grad.abs().sum() > 0 and log_std.grad.abs().sum() > 0

    # the log-probability of given actions agrees with the sampler's on unsaturated samples
    torch.testing.assert_close(cql.log_prob_of(mean, log_std, act.detach()), logp.detach(), atol=1e-4, rtol=1e-4)


def test_log_prob_of_dataset_actions_at_the_bounds_is_finite():
    mean, log_std = torch.zeros(3, 1), torch.zeros(3, 1)
    act = torch.tensor([[1.0], [-1.0], [1 - 1e-6]])
    lp = cql.log_prob_of(mean, log_std, act)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp[0], lp[2])  # +-1 is clipped to +-(1 - 1e-6) before atanh
    # pre-tanh means beyond [-9, 9] are clipped in the dataset log-probability (rlkit's log_prob)
    big = cql.log_prob_of(torch.full((1, 1), 50.0), log_std[:1], torch.zeros(1, 1))
    torch.testing.assert_close(big, cql.log_prob_of(torch.full((1, 1), 9.0), log_std[:1], torch.zeros(1, 1)))


def test_backup_action_is_a_sample_or_the_tanh_mean():
    mean, log_std = torch.tensor([[0.5, -2.0], [0.0, 1.0]]), torch.full((2, 2), -1.0)
    torch.manual_seed(0)
    sampled, logp = cql.sample_actions(mean, log_std)
    torch.manual_seed(0)
    act, logp_sample = cql.backup_action(mean, log_std, "sample")
    assert torch.equal(act, sampled) and torch.equal(logp_sample, logp)
    torch.manual_seed(0)
    act, logp_mean = cql.backup_action(mean, log_std, "mean")
    assert torch.equal(act, torch.tanh(mean)) and torch.equal(logp_mean, logp)  # same draws either way


def test_policy_clamps_log_std_and_acts_with_tanh_mean():
    torch.manual_seed(0)
    policy = cql.TanhGaussianPolicy(obs_dim=4, act_dim=2, hidden=8)
    with torch.no_grad():
        policy.log_std.bias.copy_(torch.tensor([50.0, -50.0]))
    obs = torch.randn(5, 4)
    mean, log_std = policy(obs)
    torch.testing.assert_close(log_std, torch.tensor([2.0, -5.0]).expand(5, 2))
    torch.testing.assert_close(policy.act(obs), torch.tanh(mean))
    policy.log_std_min = -20.0  # d3rlpy's floor (--log-std-min -20)
    torch.testing.assert_close(policy(obs)[1], torch.tensor([2.0, -20.0]).expand(5, 2))


def test_rlkit_init():
    torch.manual_seed(0)
    policy = cql.TanhGaussianPolicy(obs_dim=5, act_dim=2, hidden=16)
    for layer in (m for m in policy.trunk if isinstance(m, torch.nn.Linear)):
        assert layer.weight.abs().max() <= 1 / math.sqrt(16)  # rlkit's fanin_init reads out_features
        assert torch.all(layer.bias == 0.1)
    for layer in (policy.mean, policy.log_std):
        assert layer.weight.abs().max() <= 1e-3 and layer.bias.abs().max() <= 1e-3
    q = cql.EnsembleQ(obs_dim=5, act_dim=2, hidden=16)
    layers = [m for m in q.net if isinstance(m, cql.EnsembleLinear)]
    assert len(layers) == 4  # three hidden layers
    for layer in layers[:-1]:
        assert layer.weight.abs().max() <= 1 / math.sqrt(16) and torch.all(layer.bias == 0.1)
    assert layers[-1].weight.abs().max() <= 3e-3 and layers[-1].bias.abs().max() <= 3e-3
    assert not torch.equal(layers[0].weight[0], layers[0].weight[1])  # members are initialized independently


def test_torch_init_is_nn_linear_default():
    torch.manual_seed(0)
    policy = cql.TanhGaussianPolicy(obs_dim=5, act_dim=2, hidden=16, rlkit=False)
    q = cql.EnsembleQ(obs_dim=5, act_dim=2, hidden=16, rlkit=False)
    modules = [*policy.trunk, policy.mean, policy.log_std]
    layers = [(m.weight, m.bias) for m in modules if isinstance(m, torch.nn.Linear)]
    layers += [(m.weight[i].T, m.bias[i, 0]) for m in q.net if isinstance(m, cql.EnsembleLinear) for i in range(2)]
    assert len(layers) == 5 + 8
    for weight, bias in layers:
        bound = 1 / math.sqrt(weight.shape[1])  # nn.Linear: U(+-1/sqrt(fan_in)) for weight and bias
        assert weight.abs().max() <= bound and bias.abs().max() <= bound
        assert weight.abs().max() > 0.8 * bound  # not rlkit's +-1e-3 / +-3e-3 output layers
        assert not torch.all(bias == 0.1)  # not rlkit's constant hidden bias


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process, and an exact resume
# ----------------------------------------------------------------------------------------------
TINY = dict(hidden_dim=32, batch_size=32, num_action_samples=3, bc_steps=100, total_steps=200, eval_every=100,
            eval_episodes=1, log_every=50, checkpoint_every=100, progress=False)


def test_train_smoke_and_exact_resume(tiny_hopper, tmp_path, monkeypatch):
    # keep a copy of the checkpoint written at step 100, as if the run had been killed right after it
    crashed = tmp_path / "crashed" / "cql__crashed"
    real_save = cql.save_checkpoint

    def save_and_copy(path, state):
        real_save(path, state)
        if state["step"] == 100:
            crashed.mkdir(parents=True)
            shutil.copy(path, crashed / "checkpoint.pt")

    monkeypatch.setattr(cql, "save_checkpoint", save_and_copy)
    args = cql.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "runs"), **TINY)
    result = cql.train(args)
    _, records, ckpt = check_finished_run(
        cql, args, result, loss_key="loss/q", networks=("q", "q_target", "policy"),
        finite=("loss/q", "loss/cql", "loss/actor", "loss/alpha", "alpha", "cql_gap", "q_data", "entropy"))

    # continuing from the step-100 checkpoint reproduces steps 101..200 exactly
    resumed = cql.train(cql.Args(resume=str(crashed), progress=False))
    assert resumed["evals"] == result["evals"]
    assert resumed["final_score"] == result["final_score"]
    after = [json.loads(line) for line in (crashed / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("time", "updates_per_s")}  # noqa: E731
    assert [strip(r) for r in after] == [strip(r) for r in records if r["step"] > 100]
    final = load_checkpoint(crashed / "checkpoint.pt")
    for name in ("q", "q_target", "policy", "log_alpha"):
        a, b = final[name], ckpt[name]
        assert all(torch.equal(a[k], b[k]) for k in a) if isinstance(a, dict) else torch.equal(a, b), name


def test_lagrange_and_entropy_backup_smoke(tiny_hopper, tmp_path):
    args = cql.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "runs"), lagrange_threshold=1.0, backup_entropy=True,
                    **(TINY | dict(total_steps=100, bc_steps=50)))
    result = cql.train(args)
    assert math.isfinite(result["final_score"])
    (run_dir,) = (tmp_path / "runs").iterdir()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if "loss/q" in r]
    assert len(losses) == 2
    for r in losses:
        assert math.isfinite(r["loss/alpha_prime"]) and r["alpha_prime"] > 0
    # the gap starts far above threshold / alpha_cql = 0.2, so alpha' has grown from 1
    assert losses[-1]["alpha_prime"] > 1.0


def test_target_action_mean_changes_only_the_critics_backup(tiny_hopper, tmp_path):
    # during behaviour cloning the policy never reads Q, so with the same seed both runs' policies stay
    # identical, while the critics, backed up through a' = tanh(mean) instead of a sample, differ
    tiny = TINY | dict(total_steps=50, bc_steps=50, eval_every=50, log_every=50, checkpoint_every=50)
    runs = {}
    for target_action in ("sample", "mean"):
        args = cql.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / target_action), target_action=target_action,
                        **tiny)
        cql.train(args)
        (run_dir,) = (tmp_path / target_action).iterdir()
        runs[target_action] = load_checkpoint(run_dir / "checkpoint.pt")
    sample, mean = runs["sample"], runs["mean"]
    assert all(torch.equal(sample["policy"][k], mean["policy"][k]) for k in sample["policy"])
    assert not all(torch.equal(sample["q"][k], mean["q"][k]) for k in sample["q"])


def test_critic_first_update_order_steps_the_actor_on_the_updated_critics(tiny_hopper, tmp_path):
    # one update from the same seed: the critics' step reads nothing the actor's step changes, so the critics
    # come out the same in either order; the actor's loss reads the critics before their step (authors) or
    # after it (critic-first, d3rlpy's), so the policies differ
    one = TINY | dict(total_steps=1, bc_steps=0, eval_every=1, log_every=1, checkpoint_every=1)
    runs = {}
    for order in ("authors", "critic-first"):
        cql.train(cql.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / order), update_order=order, **one))
        (run_dir,) = (tmp_path / order).iterdir()
        runs[order] = load_checkpoint(run_dir / "checkpoint.pt")
    authors, first = runs["authors"], runs["critic-first"]
    assert all(torch.equal(authors["q"][k], first["q"][k]) for k in authors["q"])
    assert not all(torch.equal(authors["policy"][k], first["policy"][k]) for k in authors["policy"])


def test_init_and_log_std_flags_reach_the_networks(tiny_hopper, tmp_path, monkeypatch):
    # the unit tests above build the networks by hand; here train() must build them from --init and --log-std-min
    built = {}

    def recording(cls):
        class Recorded(cls):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                hidden_biases = [m.bias.detach().clone() for m in self.modules()
                                 if isinstance(m, (torch.nn.Linear, cql.EnsembleLinear))][:3]  # as initialized
                built.setdefault(cls.__name__, []).append((self, hidden_biases))
        return Recorded

    monkeypatch.setattr(cql, "TanhGaussianPolicy", recording(cql.TanhGaussianPolicy))
    monkeypatch.setattr(cql, "EnsembleQ", recording(cql.EnsembleQ))
    one = TINY | dict(total_steps=1, bc_steps=0, eval_every=1, log_every=1, checkpoint_every=1)
    cql.train(cql.Args(dataset=tiny_hopper, runs_dir=str(tmp_path), init="torch", log_std_min=-20.0, **one))
    ((policy, _),) = built["TanhGaussianPolicy"]
    assert policy.log_std_min == -20.0 and len(built["EnsembleQ"]) == 2  # the critics and their targets
    for _, hidden_biases in (*built["TanhGaussianPolicy"], *built["EnsembleQ"]):
        assert len(hidden_biases) == 3 and not any(torch.all(b == 0.1) for b in hidden_biases)  # rlkit's are 0.1



# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("regularizer_weight", -1.0, "--regularizer-weight"), ("num_action_samples", 0, "--num-action-samples"),
    ("logsumexp_temperature", 0.0, "--logsumexp-temperature"),
    ("logsumexp_temperature", -1.0, "--logsumexp-temperature"), ("bc_steps", -1, "--bc-steps"),
    ("lagrange_threshold", math.nan, "--lagrange-threshold"),
    ("target_entropy", math.inf, "--target-entropy"), ("hidden_dim", 0, "--hidden-dim"),
    ("actor_lr", 0.0, "--actor-lr"), ("tau", 0.0, "--tau"), ("batch_size", -1, "--batch-size"),
    ("init", "xavier", "--init"), ("target_action", "max", "--target-action"),
    ("update_order", "actor-first", "--update-order"), ("log_std_min", 2.0, "--log-std-min"),
    ("log_std_min", math.nan, "--log-std-min"),
])
def test_bad_flags_name_the_flag(field, value, flag, tmp_path):
    check_bad_flag(cql, field, value, flag, tmp_path)


def test_mean_target_action_refuses_the_entropy_backup(tmp_path):
    args = cql.Args(dataset="test/none-v0", runs_dir=str(tmp_path), progress=False, target_action="mean",
                    backup_entropy=True)
    with pytest.raises(cql.ArgumentError, match="^--target-action must be 'sample' with --backup-entropy"):
        cql.train(args)
    assert list(tmp_path.iterdir()) == []


def test_flags_parse():
    args = tyro.cli(cql.Args, args=["--regularizer-weight", "10", "--lagrange-threshold", "5", "--backup-entropy",
                                    "--num-action-samples", "4", "--target-entropy", "-2"])
    assert (args.regularizer_weight, args.lagrange_threshold, args.backup_entropy,
            args.num_action_samples) == (10.0, 5.0, True, 4)
    assert args.target_entropy == -2.0 and cql.Args().target_entropy is None and cql.Args().lagrange_threshold < 0
    args = tyro.cli(cql.Args, args=["--init", "torch", "--target-action", "mean", "--update-order", "critic-first",
                                    "--log-std-min", "-20"])
    assert (args.init, args.target_action, args.update_order, args.log_std_min) == ("torch", "mean", "critic-first",
                                                                                   -20.0)
    assert (cql.Args().init, cql.Args().target_action, cql.Args().update_order) == ("rlkit", "sample", "authors")
    assert cql.Args().log_std_min == cql.LOG_STD_MIN == -5.0
