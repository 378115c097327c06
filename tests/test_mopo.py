"""algorithms/mopo.py: the dynamics ensemble's likelihood and variance bounds by hand, the ensemble fitting a known
linear system, rollouts stopping at terminal states, the uncertainty penalty by hand, termination functions, smoke
run with exact resume, the dynamics model trained once and reused, bad input."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
import torch

import algorithms.mopo as mopo
from common.checkpoints import CheckpointError, load_checkpoint
from common.data import DatasetError, load_dataset
from conftest import (check_bad_flag, check_finished_run, check_resume_from_crash, check_stop_in_dynamics_training,
                      make_dataset, train_and_crash_copy)

LN2 = math.log(2.0)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# ----------------------------------------------------------------------------------------------
# The dynamics ensemble's loss, by hand
# ----------------------------------------------------------------------------------------------
def test_gaussian_nll_by_hand():
    # member 1: errors (1, 0), log-variances (0, ln 2): mean over B = 2 of (1 * e^0 + 0) and (0 * 1/2 + ln 2)
    # member 2: errors (2, 2), log-variances (ln 2, ln 2): (4 / 2 + ln 2) for both
    mean = torch.tensor([[[0.0], [1.0]], [[3.0], [-1.0]]], requires_grad=True)
    logvar = torch.tensor([[[0.0], [LN2]], [[LN2], [LN2]]], requires_grad=True)
    target = torch.tensor([[1.0], [1.0]]).expand(2, 2, 1)
    nll = mopo.gaussian_nll(mean, logvar, target)
    torch.testing.assert_close(nll, torch.tensor([(1 + LN2) / 2, 2 + LN2]))
    nll.sum().backward()
    # d/d mu = 2 (mu - y) e^-logvar / B; d/d logvar = (1 - (mu - y)^2 e^-logvar) / B
    torch.testing.assert_close(mean.grad, torch.tensor([[[-1.0], [0.0]], [[1.0], [-1.0]]]))
    torch.testing.assert_close(logvar.grad, torch.tensor([[[0.0], [0.5]], [[-0.5], [-0.5]]]))


def test_gaussian_nll_is_twice_the_mean_log_likelihood_up_to_a_constant():
    torch.manual_seed(0)
    mean, logvar, y = torch.randn(3, 5, 4), torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    log_lik = torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(y).mean((1, 2))
    torch.testing.assert_close(mopo.gaussian_nll(mean, logvar, y), -2 * log_lik - math.log(2 * math.pi))


def test_soft_bound_logvar_by_hand_and_at_the_limits():
    max_lv, min_lv = torch.tensor([0.5]), torch.tensor([-10.0])
    # h = 0: 0.5 - softplus(0.5) = -0.47408; then -10 + softplus(-0.47408 + 10)
    inner = 0.5 - softplus(0.5)
    expected = -10 + softplus(inner + 10)
    assert expected == pytest.approx(-0.474004, abs=1e-5)
    torch.testing.assert_close(mopo.soft_bound_logvar(torch.tensor([0.0]), max_lv, min_lv), torch.tensor([expected]))
    # far above the ceiling: the ceiling (+ softplus(-10.5) = 2.8e-5 from the floor's pass); far below: the floor
    raw = torch.tensor([100.0, -100.0, 0.4, -9.9])
    out = mopo.soft_bound_logvar(raw, max_lv, min_lv)
    torch.testing.assert_close(out[:2], torch.tensor([0.5 + softplus(-10.5), -10.0]))
    assert torch.all(out <= 0.5 + 3e-5) and torch.all(out >= -10.0)
    # the bounds are learned: gradients reach them (the ceiling only where h is near or above it)
    mx, mn = max_lv.clone().requires_grad_(True), min_lv.clone().requires_grad_(True)
    mopo.soft_bound_logvar(torch.tensor([100.0]), mx, mn).sum().backward()
    assert mx.grad.item() == pytest.approx(1.0, abs=1e-4) and mn.grad.item() == pytest.approx(0.0, abs=1e-4)


def test_dynamics_loss_adds_decay_and_the_bounds_regularizer():
    torch.manual_seed(0)
    model = mopo.EnsembleDynamics(obs_dim=3, act_dim=2, hidden=8, n=2, num_elites=1)
    obs, act, y = torch.randn(2, 6, 3), torch.randn(2, 6, 2), torch.randn(2, 6, 4)
    mean, logvar = model(obs, act)
    nll = mopo.gaussian_nll(mean, logvar, y).sum()
    decay = sum(w * 0.5 * (layer.weight ** 2).sum() for w, layer in zip(mopo.DECAYS, model.layers()))
    bounds = 0.01 * (0.5 * 4 - (-10.0) * 4)  # 4 outputs (3 state deltas and the reward)
    torch.testing.assert_close(mopo.dynamics_loss(model, obs, act, y), nll + decay + bounds)
    assert len(model.layers()) == 5 and model.layers()[0].weight.shape == (2, 5, 8)  # one batched module


def test_members_are_independent_and_inputs_standardized():
    torch.manual_seed(0)
    model = mopo.EnsembleDynamics(obs_dim=3, act_dim=1, hidden=8, n=3, num_elites=2)
    model.in_mean.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    model.in_std.copy_(torch.tensor([2.0, 2.0, 2.0, 2.0]))
    obs, act = torch.randn(5, 3), torch.randn(5, 1)
    mean, _ = model(obs, act)
    x = (torch.cat([obs, act], -1) - model.in_mean) / model.in_std
    for i in range(3):  # member i as a plain MLP with swish
        h = x
        for k, layer in enumerate(model.layers()):
            h = h @ layer.weight[i] + layer.bias[i]
            h = torch.nn.functional.silu(h) if k < 4 else h
        torch.testing.assert_close(mean[i], h[:, :4])
    assert not torch.equal(mean[0], mean[1])


# ----------------------------------------------------------------------------------------------
# The uncertainty penalty, by hand
# ----------------------------------------------------------------------------------------------
def test_uncertainty_is_the_max_over_members_of_the_std_norm_and_penalizes_the_reward():
    # member 1: std (3, 4) -> norm 5 for state 1, std (1, 1) -> sqrt 2 for state 2; member 2: (1, 1) and (0, 2)
    std = torch.tensor([[[3.0, 4.0], [1.0, 1.0]], [[1.0, 1.0], [1e-3, 2.0]]])
    u = mopo.mopo_uncertainty(2 * std.log())
    torch.testing.assert_close(u, torch.tensor([5.0, 2.0]), atol=1e-4, rtol=0)  # max(5, sqrt 2) and max(sqrt 2, 2)
    # r~ = r - lambda u with lambda = 0.5
    torch.testing.assert_close(mopo.penalized_reward(torch.tensor([1.0, 1.0]), u, 0.5),
                               torch.tensor([1.0 - 2.5, 1.0 - 1.0]), atol=1e-4, rtol=0)


def test_model_step_samples_an_elite_and_penalizes_with_all_members():
    torch.manual_seed(0)
    model = mopo.EnsembleDynamics(obs_dim=2, act_dim=1, hidden=8, n=3, num_elites=1)
    last = model.layers()[-1]
    with torch.no_grad():  # outputs independent of the input: means (member + 1) * 0.1, log-variances below
        last.weight.zero_()
        last.bias.zero_()
        for i in range(3):
            last.bias[i, 0, :3] = (i + 1) * 0.1
        last.bias[:, 0, 3:] = torch.tensor([[-100.0] * 3, [-100.0] * 3, [2 * math.log(2.0)] * 3])
        model.min_logvar.fill_(-40.0)  # members 1 and 2: std about e^-20
        model.elites.fill_(1)  # the only elite: member 2
    obs, act = torch.ones(4, 2), torch.zeros(4, 1)
    next_obs, rew, u = model.step(obs, act)
    torch.testing.assert_close(next_obs, torch.full((4, 2), 1.2), atol=1e-4, rtol=0)
    torch.testing.assert_close(rew, torch.full((4,), 0.2), atol=1e-4, rtol=0)
    # u: member 3 is not an elite but counts: std 2 on 3 outputs, clamped below maxlogvar 0.5 by the soft bound
    logvar3 = mopo.soft_bound_logvar(torch.tensor(2 * LN2), model.max_logvar[:1], model.min_logvar[:1])
    std3 = math.exp(0.5 * logvar3.item())
    torch.testing.assert_close(u, torch.full((4,), math.sqrt(3) * std3))


# ----------------------------------------------------------------------------------------------
# Training the ensemble: a known linear system
# ----------------------------------------------------------------------------------------------
def test_dynamics_fits_a_known_linear_system_and_keeps_each_members_best():
    rng = np.random.default_rng(0)
    n, obs_dim, act_dim = 2000, 3, 2
    A = rng.normal(size=(obs_dim, obs_dim)) * 0.3
    B = rng.normal(size=(act_dim, obs_dim)) * 0.5
    w = rng.normal(size=obs_dim)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    next_obs = (obs + obs @ A + act @ B).astype(np.float32)
    rew = (obs @ w).astype(np.float32)

    class A_:
        holdout_ratio, dynamics_batch_size, dynamics_lr, max_epochs_since_update, max_dynamics_epochs = \
            0.2, 256, 3e-3, 5, 150

    torch.manual_seed(0)
    model = mopo.EnsembleDynamics(obs_dim, act_dim, hidden=32, n=3, num_elites=2)
    records = []
    info = mopo.train_dynamics(model, obs, act, next_obs, rew, A_, torch.Generator().manual_seed(0),
                               torch.device("cpu"), log=records.append)
    assert info["holdout_size"] == 400 and info["train_size"] == 1600
    target_var = float(np.var(np.concatenate([next_obs - obs, rew[:, None]], 1), 0).mean())
    elite_mse = [info["holdout_mse"][i] for i in info["elites"]]
    assert max(elite_mse) < 0.01 * target_var, (elite_mse, target_var)
    assert sorted(info["holdout_mse"])[:2] == sorted(elite_mse)  # the elites are the lowest holdout errors
    # each member ends with the weights of its last epoch that improved by more than 1%: within 1% of its best
    for i in range(3):
        logged = [r["holdout_mse"][i] for r in records]
        assert info["holdout_mse"][i] <= min(logged) / 0.99 + 1e-9
        assert min(abs(info["holdout_mse"][i] - v) for v in logged) < 1e-6 * max(1.0, info["holdout_mse"][i])
    # the learned variance is small where the system is deterministic
    with torch.no_grad():
        _, logvar = model(torch.as_tensor(obs[:100]), torch.as_tensor(act[:100]))
    assert logvar.exp().mean() < 0.05 * target_var


def test_dynamics_training_stops_early():
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(300, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(300, 1)).astype(np.float32)

    class A_:
        holdout_ratio, dynamics_batch_size, dynamics_lr, max_epochs_since_update, max_dynamics_epochs = \
            0.2, 64, 1e-3, 2, 10_000

    model = mopo.EnsembleDynamics(2, 1, hidden=8, n=2, num_elites=1)
    records = []
    # pure noise targets: nothing to learn beyond the mean, so the holdout stops improving soon
    info = mopo.train_dynamics(model, obs, act, rng.normal(size=(300, 2)).astype(np.float32),
                               rng.normal(size=300).astype(np.float32), A_, torch.Generator().manual_seed(0),
                               torch.device("cpu"), log=records.append)
    assert info["epochs"] == len(records) < 10_000
    best, last_improved = [1e10, 1e10], 0  # replay the rule: an improvement is a drop of more than 1% of the best
    for epoch, r in enumerate(records, start=1):
        for i, m in enumerate(r["holdout_mse"]):
            if (best[i] - m) / best[i] > 0.01:
                best[i], last_improved = m, epoch
    assert len(records) == last_improved + A_.max_epochs_since_update + 1  # more than 2 epochs without one


class StopAfter:
    """A stand-in for StopSignal: true from its `n`-th check on (train_dynamics checks it after every step)."""

    def __init__(self, n: int):
        self.n, self.checks = n, 0

    def __bool__(self) -> bool:
        self.checks += 1
        return self.checks >= self.n


def stored(state: dict) -> dict:
    """`state` as a checkpoint file gives it back (a copy that later training cannot change)."""
    f = io.BytesIO()
    torch.save(state, f)
    f.seek(0)
    return torch.load(f, weights_only=True)


# 4 members of 8 wide on 500 transitions: 400 train (7 minibatches of 64 per epoch, the last of 16), 100 held out
def linear_system(seed: int = 2):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(500, 3)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(500, 2)).astype(np.float32)
    next_obs = (obs + 0.3 * obs[:, ::-1] + act @ rng.normal(size=(2, 3))).astype(np.float32)
    return obs, act, next_obs, (obs @ rng.normal(size=3)).astype(np.float32)


class SmallArgs:
    holdout_ratio, dynamics_batch_size, dynamics_lr, max_epochs_since_update, max_dynamics_epochs = \
        0.2, 64, 3e-3, 3, 9


def small_training(**kwargs):
    torch.manual_seed(0)
    model = mopo.EnsembleDynamics(3, 2, hidden=8, n=4, num_elites=2)
    records = []
    info = mopo.train_dynamics(model, *linear_system(), SmallArgs, torch.Generator().manual_seed(0),
                               torch.device("cpu"), log=records.append, **kwargs)
    return model, info, records


@pytest.mark.parametrize("stop_at", [17, 21], ids=["mid-epoch", "end-of-epoch"])
def test_dynamics_training_stopped_and_resumed_ends_as_one_never_stopped(stop_at):
    model, info, records = small_training()
    assert info["epochs"] == 9  # no early stop: the stop lands before the end
    # stopped after its 17th step (the 3rd of epoch 3) or its 21st (the last of epoch 3): the state then is saved
    saved = []
    _, stopped, first = small_training(stop=StopAfter(stop_at), checkpoint=lambda s: saved.append(stored(s)))
    assert stopped is None and len(saved) == 1
    assert saved[0]["epoch"] == 2 and saved[0]["position"] == min(64 * (stop_at - 14), 400) and len(first) == 2
    assert len(saved[0]["losses"]) == stop_at - 14 and saved[0]["boot"].shape == (4, 400)
    # a new model and generator from the same seed, resumed from the saved state: the same model, bit for bit
    again, resumed, rest = small_training(resume=saved[0])
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in info.items() if k != "seconds"}
    assert first + rest == records  # each epoch's loss and holdout MSEs as uninterrupted


def test_dynamics_training_checkpoints_every_k_epochs_and_a_kill_resumes_from_the_last():
    model, info, records = small_training()
    saved = []
    small_training(checkpoint=lambda s: saved.append(stored(s)), checkpoint_every=4)
    assert [s["epoch"] for s in saved] == [4, 8] and all(s["position"] == 0 for s in saved)
    # killed in epoch 7: what it had saved is epoch 4's state, from which it trains epochs 5-9 again
    again, resumed, rest = small_training(resume=saved[0])
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())
    assert resumed["holdout_mse"] == info["holdout_mse"] and rest == records[4:]
    # a state from other data is refused
    small = SmallArgs()
    small.holdout_ratio = 0.1
    with pytest.raises(CheckpointError, match="ran on 400 \\+ 100 transitions, this data has 450 \\+ 50"):
        mopo.train_dynamics(mopo.EnsembleDynamics(3, 2, hidden=8, n=4, num_elites=2), *linear_system(), small,
                            torch.Generator().manual_seed(0), torch.device("cpu"), resume=saved[0])


# ----------------------------------------------------------------------------------------------
# Rollouts, termination, the model buffer
# ----------------------------------------------------------------------------------------------
def test_rollouts_stop_at_terminal_states():
    # s' = s + 1, r = 1, u = 0.5; terminal once the first coordinate reaches 3. Starts 0, 1, 2 end after 3, 2, 1.
    start = torch.tensor([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0]])
    acts = []

    def act_fn(obs):
        acts.append(len(obs))
        return torch.zeros(len(obs), 1)

    batch, stats = mopo.rollout(lambda s, a: (s + 1, torch.ones(len(s)), torch.full((len(s),), 0.5)),
                                act_fn, lambda s: s[:, 0] >= 3, start, horizon=5, penalty_weight=2.0)
    assert acts == [3, 2, 1]  # each step rolls out only the rollouts still going; none left after 3 steps
    torch.testing.assert_close(batch["obs"][:, 0], torch.tensor([0.0, 1.0, 2.0, 1.0, 2.0, 2.0]))
    torch.testing.assert_close(batch["obs"][:, 1], torch.tensor([5.0, 6.0, 7.0, 6.0, 7.0, 7.0]))
    torch.testing.assert_close(batch["done"], torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0]))
    torch.testing.assert_close(batch["rew"], torch.full((6,), 1.0 - 2.0 * 0.5))
    torch.testing.assert_close(batch["next_obs"], batch["obs"] + 1)
    assert stats == {"rollout_length": 2.0, "model_reward": 1.0, "model_uncertainty": 0.5}
    # without terminal states every rollout runs its h steps
    batch, stats = mopo.rollout(lambda s, a: (s + 1, torch.ones(len(s)), torch.zeros(len(s))), act_fn,
                                mopo.never_done, start, horizon=4)
    assert len(batch["rew"]) == 12 and stats["rollout_length"] == 4 and batch["done"].sum() == 0


def test_termination_functions_are_the_authors():
    # hopper: [height, angle, ...]; healthy iff height > 0.7, |angle| < 0.2, |x| < 100 for the rest, finite
    hop = torch.tensor([[1.0, 0.1, 5.0], [0.7, 0.0, 0.0], [1.0, -0.25, 0.0], [1.0, 0.0, -150.0],
                        [1.0, 0.0, float("nan")]])
    assert mopo.hopper_done(hop).tolist() == [False, True, True, True, True]
    walk = torch.tensor([[1.0, 0.5], [0.8, 0.0], [2.0, 0.0], [1.5, -1.0], [1.9, 0.99]])
    assert mopo.walker2d_done(walk).tolist() == [False, True, True, True, False]
    assert mopo.never_done(walk).tolist() == [False] * 5
    pend = torch.tensor([[0.0, 0.2, 0.0, 0.0], [0.0, -0.21, 0.0, 0.0], [float("inf"), 0.0, 0.0, 0.0]])
    assert mopo.inverted_pendulum_done(pend).tolist() == [False, True, True]


def test_model_buffer_is_first_in_first_out_and_samples_what_it_holds():
    buf = mopo.ModelBuffer(capacity=5, obs_dim=1, act_dim=1, device=torch.device("cpu"), seed=0)

    def batch(values):
        v = torch.tensor(values, dtype=torch.float32)
        return {"obs": v[:, None], "act": v[:, None], "rew": v, "next_obs": v[:, None], "done": v * 0}

    buf.add(batch([1, 2, 3]))
    assert buf.size == 3 and set(buf.sample(100)[2].tolist()) == {1, 2, 3}
    buf.add(batch([4, 5, 6, 7]))  # 1 and 2 are dropped
    assert buf.size == 5 and sorted(buf.data["rew"].tolist()) == [3, 4, 5, 6, 7]
    assert set(buf.sample(200)[2].tolist()) == {3, 4, 5, 6, 7}
    other = mopo.ModelBuffer(capacity=5, obs_dim=1, act_dim=1, device=torch.device("cpu"), seed=3)
    other.load_state_dict(buf.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(other.sample(10), buf.sample(10)))


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process, an exact resume, the dynamics model saved and reused
# ----------------------------------------------------------------------------------------------
TINY = dict(hidden_dim=32, batch_size=32, total_steps=200, eval_every=100, eval_episodes=1, log_every=50,
            checkpoint_every=100, progress=False, rollout_batch=200, rollout_freq=100, dynamics_hidden_dim=32,
            max_dynamics_epochs=20, real_ratio=0.25)


@pytest.mark.parametrize("dataset, setting", [
    ("stitch/hopper/medium-v0", (5, 5.0)), ("stitch/hopper/medium-replay-v0", (5, 1.0)),
    ("stitch/walker2d/medium-replay-v0", (1, 1.0)), ("mujoco/halfcheetah/medium-v0", (1, 1.0)),
    ("stitch/walker2d/medium-expert-v0", (1, 2.0)), ("stitch/hopper/expert-v0", None), ("test/none-v0", None),
    ("logs", None)])
def test_the_authors_setting_is_looked_up_by_environment_and_level(dataset, setting):
    assert mopo.paper_setting(dataset) == setting


def test_unset_rollout_length_and_penalty_come_from_the_dataset_and_given_ones_stay(capsys):
    args = mopo.Args(dataset="stitch/hopper/medium-v0")
    filled = mopo.with_dataset_settings(args)
    assert (filled.rollout_length, filled.penalty_weight) == (5, 5.0)
    assert "rollout length 5, penalty weight 5.0 (unset flags: the authors'" in capsys.readouterr().out
    given = mopo.with_dataset_settings(dataclasses.replace(args, penalty_weight=2.0))
    assert (given.rollout_length, given.penalty_weight) == (5, 2.0)
    other = mopo.with_dataset_settings(mopo.Args(dataset="my/logs-v0", rollout_length=3))
    assert (other.rollout_length, other.penalty_weight) == (3, mopo.OTHER_SETTING[1])
    assert capsys.readouterr().out.count("mopo:") == 2  # one line for each of the two above
    both = dataclasses.replace(args, rollout_length=2, penalty_weight=0.0)
    assert mopo.with_dataset_settings(both) is both and capsys.readouterr().out == ""  # nothing to fill in or say


def test_train_smoke_and_exact_resume(tiny_hopper, tmp_path, monkeypatch):
    args = mopo.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "runs"), **TINY)
    result, crashed = train_and_crash_copy(mopo, args, tmp_path, monkeypatch)
    run_dir, records, ckpt = check_finished_run(
        mopo, args, result, loss_key="loss/q", networks=("q", "q_target", "policy"),
        finite=("loss/q", "loss/actor", "loss/alpha", "alpha", "entropy", "q_data", "rollout_length", "model_reward",
                "model_uncertainty"))
    # the ensemble's held-out MSE per member is recorded, per epoch and for the kept weights
    dyn = json.loads((run_dir / "dynamics.json").read_text())
    assert 1 <= dyn["epochs"] <= 20 and len(dyn["epochs_log"]) == dyn["epochs"]
    assert len(dyn["holdout_mse"]) == 7 and len(dyn["elites"]) == 5
    assert all(len(r["holdout_mse"]) == 7 for r in dyn["epochs_log"])
    assert result["dynamics"]["holdout_mse"] == dyn["holdout_mse"]
    assert ckpt["model_buffer"]["size"] > 200  # two rollouts (before updates 1 and 101) of 200 starts
    assert all(1 <= r["rollout_length"] <= 5 for r in records if "rollout_length" in r)

    # continuing from the step-100 checkpoint reproduces steps 101..200 exactly, without retraining the model
    check_resume_from_crash(mopo, crashed, result, records, ckpt,
                            ("q", "q_target", "policy", "log_alpha", "model_buffer"), monkeypatch)


def test_ctrl_c_while_the_dynamics_model_trains_loses_nothing(tiny_hopper, tmp_path, monkeypatch, capsys):
    check_stop_in_dynamics_training(mopo, tiny_hopper, tmp_path, monkeypatch, capsys, TINY)


def test_dynamics_path_reuses_a_model_and_the_run_is_the_same(tiny_hopper, tmp_path, monkeypatch):
    small = TINY | dict(total_steps=100, eval_every=100, checkpoint_every=100)
    first = mopo.train(mopo.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "a"), **small))
    (first_dir,) = (tmp_path / "a").iterdir()
    monkeypatch.setattr(mopo, "train_dynamics", lambda *a, **k: pytest.fail("--dynamics-path retrained the model"))
    second = mopo.train(mopo.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "b"), dynamics_path=str(first_dir),
                                  **small))
    (second_dir,) = (tmp_path / "b").iterdir()
    a, b = load_checkpoint(first_dir / "dynamics.pt"), load_checkpoint(second_dir / "dynamics.pt")
    assert all(torch.equal(a["dynamics"][k], b["dynamics"][k]) for k in a["dynamics"])
    # the agent draws from its own random stream: a loaded model gives the run a trained one gives
    assert second["evals"] == first["evals"]
    ca, cb = load_checkpoint(first_dir / "checkpoint.pt"), load_checkpoint(second_dir / "checkpoint.pt")
    assert all(torch.equal(ca["policy"][k], cb["policy"][k]) for k in ca["policy"])

    # a model of another architecture is refused with one line
    with pytest.raises(CheckpointError, match="does not fit this run: ensemble_size 7 \\(this run: 5\\)"):
        mopo.train(mopo.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "c"), dynamics_path=str(first_dir),
                             **(small | dict(ensemble_size=5))))


def test_dynamics_speed_benchmark_writes_its_figures(tiny_hopper, tmp_path):
    from benchmarks import dynamics_speed

    out = tmp_path / "speed.json"
    record = dynamics_speed.main(dynamics_speed.Args(dataset=tiny_hopper, out=str(out), max_dynamics_epochs=3))
    assert json.loads(out.read_text()) == record
    assert record["epochs"] == 3 and not record["early_stopped"] and record["transitions"] == len(
        load_dataset(tiny_hopper))
    assert record["seconds"] > 0 and len(record["holdout_mse"]) == 7 and len(record["elites"]) == 5


def test_dynamics_speed_benchmark_times_the_step_on_synthetic_data(tmp_path):
    from benchmarks import dynamics_speed

    out = tmp_path / "speed.json"
    record = dynamics_speed.main(dynamics_speed.Args(synthetic=3000, steps=3, warmup=1, out=str(out)))
    assert json.loads(out.read_text()) == record
    assert record["mode"] == "synthetic" and record["transitions"] == 3000 and record["steps_timed"] == 3
    assert record["steps_per_epoch"] == 10 and record["steps_per_s"] > 0  # 2400 training transitions / 256
    assert record["projected_seconds_per_epoch"] >= 10 * record["ms_per_step"] / 1000 - 0.05  # (rounded to 0.1)


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_an_environment_without_a_termination_function_is_one_line(minari_root, tmp_path):
    make_dataset("test/pendulum/tiny-v0", env_id="Pendulum-v1", episodes=2, max_steps=20, ref_scores=None)
    with pytest.raises(DatasetError, match=r"mopo.py has no termination function for its environment Pendulum-v1 "
                                           r"\(it has hopper, walker2d, halfcheetah, invertedpendulum; "
                                           r"--termination never"):
        mopo.train(mopo.Args(dataset="test/pendulum/tiny-v0", runs_dir=str(tmp_path / "runs"), **TINY))
    assert not (tmp_path / "runs").exists()  # refused before the run folder is made
    # and with --termination never it trains
    result = mopo.train(mopo.Args(dataset="test/pendulum/tiny-v0", runs_dir=str(tmp_path / "runs"),
                                  termination="never", **(TINY | dict(total_steps=50, eval_every=50))))
    assert result["steps"] == 50 and math.isfinite(result["final_return"])


@pytest.mark.parametrize("field, value, flag", [
    ("num_elites", 8, "--num-elites"), ("real_ratio", 1.0, "--real-ratio"), ("rollout_length", 0, "--rollout-length"),
    ("penalty_weight", -1.0, "--penalty-weight"), ("holdout_ratio", 0.0, "--holdout-ratio"),
    ("max_dynamics_epochs", 0, "--max-dynamics-epochs"), ("termination", "ant", "--termination"),
    ("dynamics_path", "/no/such/dynamics.pt", "--dynamics-path"), ("rollout_batch", 0, "--rollout-batch"),
    ("dynamics_checkpoint_every", -1, "--dynamics-checkpoint-every"),
])
def test_bad_flags(field, value, flag, tmp_path):
    check_bad_flag(mopo, field, value, flag, tmp_path)
