"""algorithms/diffuser.py: the noise schedule and q_sample by hand, inpainting through sampling, value guidance,
the written-out value gradient against autograd, the training windows by hand, smoke run, bad flags."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from algorithms import diffuser
from common.data import Dataset, DatasetError
from conftest import check_bad_flag, check_finished_run

# small sizes for CPU tests: 2 levels of 16 and 128 channels, H = 8, T = 4
TINY = dict(hidden_dim=16, dim_mults=[1, 8], horizon=8, diffusion_steps=4, plan_samples=3)
A, S = 2, 3  # action and state dimensions of the hand-made trajectories


def networks(seed: int = 0, dtype=torch.float32):
    torch.manual_seed(seed)
    model = diffuser.TemporalUnet(A + S, TINY["hidden_dim"], TINY["dim_mults"]).to(dtype)
    value = diffuser.ValueFunction(A + S, TINY["horizon"], TINY["hidden_dim"], TINY["dim_mults"]).to(dtype)
    with torch.no_grad():  # away from the initial GroupNorm affine (1, 0), so every term of the gradient counts
        for p in list(model.parameters()) + list(value.parameters()):
            p.add_(0.1 * torch.randn_like(p))
    return model, value


# ----------------------------------------------------------------------------------------------
# The noise schedule, by hand
# ----------------------------------------------------------------------------------------------
def test_cosine_schedule_by_hand():
    # T = 2, s = 0.008: f(u) = cos^2(pi/2 (u + s) / (1 + s)); abar_0 = f(1/2) / f(0); f(1) = cos^2(pi/2) = 0, so
    # beta_1 = 1 - f(1) / f(1/2) = 1 is clipped to 0.999 and abar_1 = abar_0 * 0.001
    f = [math.cos(math.pi / 2 * (u + 0.008) / 1.008) ** 2 for u in (0.0, 0.5, 1.0)]
    abar0 = f[1] / f[0]
    schedule = diffuser.Schedule(2)
    torch.testing.assert_close(schedule.betas, torch.tensor([1 - abar0, 0.999]))
    torch.testing.assert_close(schedule.alphas_cumprod, torch.tensor([abar0, abar0 * 0.001]))
    # q_sample: sqrt(abar_i) x0 + sqrt(1 - abar_i) eps, per trajectory, on hand values
    x0 = torch.tensor([[[1.0, -2.0]], [[0.5, 3.0]]])  # [B=2, H=1, D=2]
    eps = torch.tensor([[[0.1, 0.2]], [[-1.0, 1.0]]])
    t = torch.tensor([0, 1])
    expected = torch.stack([math.sqrt(abar0) * x0[0] + math.sqrt(1 - abar0) * eps[0],
                            math.sqrt(abar0 * 1e-3) * x0[1] + math.sqrt(1 - abar0 * 1e-3) * eps[1]])
    torch.testing.assert_close(schedule.q_sample(x0, t, eps), expected)


@pytest.mark.parametrize("steps", [5, 20, 100])
def test_schedule_is_monotone_and_its_posterior_is_consistent(steps):
    sch = diffuser.Schedule(steps)
    abar = sch.alphas_cumprod.double()
    assert (abar[1:] < abar[:-1]).all() and 0 < abar[-1] and abar[0] < 1  # strictly from ~1 down towards 0
    assert ((sch.betas > 0) & (sch.betas <= 0.999)).all()
    # noise-free tau^i = sqrt(abar_i) tau^0 has the posterior mean sqrt(abar_{i-1}) tau^0 (abar_{-1} = 1)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    torch.testing.assert_close(sch.coef_x0.double() + sch.coef_xt.double() * abar.sqrt(), prev.sqrt(),
                               atol=1e-5, rtol=1e-5)
    assert sch.posterior_variance[0] == 0 and (sch.posterior_variance[1:] > 0).all()


# ----------------------------------------------------------------------------------------------
# Losses, by hand
# ----------------------------------------------------------------------------------------------
def test_diffusion_loss_weighs_the_first_action():
    w = diffuser.loss_weights(horizon=2, act_dim=1, obs_dim=1, action_weight=10.0)
    assert w.tolist() == [[10.0, 1.0], [1.0, 1.0]]
    x0 = torch.zeros(1, 2, 2)
    pred = torch.tensor([[[1.0, 2.0], [0.0, -1.0]]], requires_grad=True)
    # mean(w (pred - x0)^2) = (10 * 1 + 1 * 4 + 0 + 1 * 1) / 4 = 15 / 4
    loss = diffuser.diffusion_loss(pred, x0, w)
    torch.testing.assert_close(loss, torch.tensor(3.75))
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([[[5.0, 1.0], [0.0, -0.5]]]))  # 2 w (pred - x0) / 4


def test_value_loss():
    pred = torch.tensor([1.0, -2.0], requires_grad=True)
    # ((1 - 3)^2 + (-2 - -2)^2) / 2 = 2
    loss = diffuser.value_loss(pred, torch.tensor([3.0, -2.0]))
    torch.testing.assert_close(loss, torch.tensor(2.0))
    loss.backward()
    torch.testing.assert_close(pred.grad, torch.tensor([-2.0, 0.0]))


# ----------------------------------------------------------------------------------------------
# Inpainting and guidance
# ----------------------------------------------------------------------------------------------
def test_condition_replaces_the_first_state_only():
    x, s = torch.randn(4, 6, A + S), torch.randn(4, S)
    out = diffuser.condition(x, s, A)
    assert torch.equal(out[:, 0, A:], s) and torch.equal(out[:, 0, :A], x[:, 0, :A]) and torch.equal(out[:, 1:],
                                                                                                       x[:, 1:])
    assert not torch.equal(x[:, 0, A:], s)  # the input is left as it was


def test_inpainting_keeps_the_state_fixed_through_guided_sampling():
    model, value = networks()
    sch = diffuser.Schedule(TINY["diffusion_steps"])
    torch.manual_seed(1)
    state = torch.randn(6, S)
    x = diffuser.condition(torch.randn(6, TINY["horizon"], A + S), state, A)
    with torch.no_grad():
        for i in reversed(range(sch.steps)):
            before = x
            x = diffuser.guide(x, state, i, value, sch, scale=10.0, steps=2, unguided_steps=1, act_dim=A)
            assert torch.equal(x[:, 0, A:], state), f"guidance at step {i} moved s_0"
            assert (i < 1) == torch.equal(x, before)  # guided at i >= t_stopgrad only
            x = diffuser.denoise(x, state, i, model, sch, torch.randn_like(x), A)
            assert torch.equal(x[:, 0, A:], state), f"denoising step {i} moved s_0"
    assert not torch.equal(x[:, 1:], before[:, 1:])  # the rest of the plan did change


def test_denoising_is_the_posterior_mean_plus_noise_and_noise_free_at_the_last_step():
    class Echo(torch.nn.Module):  # predicts tau^0 = 2 tau
        def forward(self, x, t):
            return 2 * x
    sch = diffuser.Schedule(5)
    x, state, z = torch.randn(3, 4, A + S), torch.randn(3, S), torch.randn(3, 4, A + S)
    for i in (3, 0):
        out = diffuser.denoise(x, state, i, Echo(), sch, z, A)
        expected = sch.coef_x0[i] * 2 * x + sch.coef_xt[i] * x + (sch.posterior_std[i] * z if i > 0 else 0)
        torch.testing.assert_close(out, diffuser.condition(expected, state, A))


class LinearValue:
    """A toy J(tau) = sum(c * tau), whose gradient is c everywhere."""

    def __init__(self, c: torch.Tensor):
        self.c = c

    def input_grad(self, x, t):
        return self.c.expand_as(x)


def test_guidance_moves_the_plan_along_the_value_gradient():
    sch = diffuser.Schedule(5)
    c = torch.randn(8, A + S)
    x, state = torch.randn(3, 8, A + S), torch.randn(3, S)
    x = diffuser.condition(x, state, A)
    i, scale = 3, 0.5
    out = diffuser.guide(x, state, i, LinearValue(c), sch, scale=scale, steps=2, unguided_steps=2, act_dim=A)
    step = 2 * scale * sch.posterior_variance[i] * c  # two steps of alpha Sigma_i grad J, nothing on s_0
    step[0, A:] = 0
    torch.testing.assert_close(out - x, step.expand_as(x))
    # below t_stopgrad, or with scale 0: no guidance
    assert torch.equal(diffuser.guide(x, state, 1, LinearValue(c), sch, 0.5, 2, 2, A), x)
    assert torch.equal(diffuser.guide(x, state, 3, LinearValue(c), sch, 0.0, 2, 2, A), x)


def test_guidance_raises_the_learned_value():
    _, value = networks(dtype=torch.float64)
    sch = diffuser.Schedule(5).double()
    torch.manual_seed(2)
    x, state = torch.randn(16, TINY["horizon"], A + S, dtype=torch.float64), torch.randn(16, S, dtype=torch.float64)
    x = diffuser.condition(x, state, A)
    t = torch.full((16,), 4)
    out = diffuser.guide(x, state, 4, value, sch, scale=1e-3 / float(sch.posterior_variance[4]), steps=1,
                         unguided_steps=0, act_dim=A)
    moved = out - x
    grad = value.input_grad(x, t)
    grad[:, 0, A:] = 0
    cos = (moved * grad).flatten(1).sum(1) / (moved.flatten(1).norm(dim=1) * grad.flatten(1).norm(dim=1))
    torch.testing.assert_close(cos, torch.ones(16, dtype=torch.float64))  # exactly along grad J
    assert (value(out, t) > value(x, t)).all()  # a small step up the gradient raises J


def test_value_gradient_matches_autograd():
    _, value = networks(dtype=torch.float64)
    x = torch.randn(5, TINY["horizon"], A + S, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3, 3])
    (expected,) = torch.autograd.grad(value(x, t).sum(), x)
    torch.testing.assert_close(value.input_grad(x.detach(), t), expected, rtol=1e-10, atol=1e-12)


def test_planner_is_a_deterministic_function_and_traces():
    model, value = networks()
    stats = {"act_mean": torch.zeros(A), "act_std": torch.ones(A), "obs_mean": torch.zeros(S),
             "obs_std": torch.ones(S)}
    args = diffuser.Args(**TINY)
    planner = diffuser.Planner(model, value, diffuser.Schedule(TINY["diffusion_steps"]), stats, A, args).eval()
    obs = torch.randn(5, S)
    with torch.no_grad():
        actions = planner(obs)
        assert actions.shape == (5, A) and actions.abs().max() <= 1
        assert torch.equal(planner(obs), actions)  # the same noise every call
        assert torch.equal(planner(obs[2:3]), actions[2:3])  # each state planned on its own
        traced = torch.jit.trace(planner, obs, check_inputs=[(obs[:2],)])
        torch.testing.assert_close(traced(obs[:4]), actions[:4], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Training windows and value targets, by hand
# ----------------------------------------------------------------------------------------------
def hand_dataset(lengths=(4, 2), terminal_last=(True, False)) -> Dataset:
    n = sum(lengths)
    obs = np.arange(n * S, dtype=np.float32).reshape(n, S)
    terminals = np.zeros(n, np.float32)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for a, length, term in zip(starts, lengths, terminal_last):
        terminals[a + length - 1] = float(term)
    return Dataset("test/hand-v0", obs, np.linspace(-1, 1, n * A, dtype=np.float32).reshape(n, A),
                   np.arange(1, n + 1, dtype=np.float32), obs + 1, terminals, np.zeros(n, np.float32),
                   starts.astype(np.int64), np.asarray(lengths, np.int64), None, None, None)


def test_windows_and_value_targets_by_hand():
    data = hand_dataset()
    rows, starts, targets, stats = diffuser.trajectory_windows(data, horizon=2, gamma=0.5, termination_penalty=-10)
    # episode 1: 4 steps + 1 padding row; episode 2: 2 steps + 1 padding row
    assert rows.shape == (4 + 1 + 2 + 1, A + S)
    # windows start at every step but an episode's last, up to longest (4) - H (2) = 2: episode 1 starts 0, 1;
    # episode 2 (rows 5, 6) start 0 only
    assert starts.tolist() == [0, 1, 5]
    # rewards 1..6; episode 1 terminated: its last reward 4 - 10 = -6. Reward to go with gamma 0.5:
    # step 1: 2 + 0.5 * 3 + 0.25 * -6 = 2; step 0: 1 + 0.5 * 2 = 2; episode 2, step 0: 5 + 0.5 * 6 = 8
    np.testing.assert_allclose(targets, [2.0, 2.0, 8.0])
    # rows are z-scored [action, observation]; padding rows are zeros before normalization
    np.testing.assert_allclose(rows[1], np.concatenate([(data.actions[1] - stats["act_mean"]) / stats["act_std"],
                                                        (data.observations[1] - stats["obs_mean"]) / stats["obs_std"]]),
                               rtol=1e-6)
    np.testing.assert_allclose(rows[4] * np.concatenate([stats["act_std"], stats["obs_std"]]),
                               -np.concatenate([stats["act_mean"], stats["obs_mean"]]), rtol=1e-5)


def test_episodes_shorter_than_the_horizon_are_one_clear_error():
    with pytest.raises(DatasetError, match="no trajectory window of --horizon 8 steps"):
        diffuser.trajectory_windows(hand_dataset(), horizon=8, gamma=0.99, termination_penalty=-100)


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process
# ----------------------------------------------------------------------------------------------
def test_train_smoke(tiny_hopper, tmp_path):
    args = diffuser.Args(dataset=tiny_hopper, total_steps=200, eval_every=100, eval_episodes=2, log_every=50,
                         checkpoint_every=100, batch_size=16, value_steps=150, ema_start=20,
                         runs_dir=str(tmp_path / "runs"), progress=False, **TINY)
    result = diffuser.train(args)
    run_dir, records, ckpt = check_finished_run(
        diffuser, args, result, loss_key="loss/diffusion", finite=("loss/diffusion",),
        networks=("model", "value", "ema_model", "ema_value"))
    # the value network trains in the first --value-steps updates only
    assert [r["step"] for r in records if "loss/value" in r] == [50, 100, 150]
    assert all(math.isfinite(r["loss/value"]) for r in records if "loss/value" in r)
    # the EMA weights are an average, not the online weights
    assert not all(torch.equal(ckpt["model"][k], ckpt["ema_model"][k]) for k in ckpt["model"])
    assert result["plan_s_one_state"] > 0 and result["plan_s_per_step"] > 0  # planning time
    plans = [r for r in records if "plan_s_per_step" in r]  # logged with each evaluation; the result their mean
    assert [r["step"] for r in plans] == [e["step"] for e in result["evals"]]
    assert result["plan_s_per_step"] == pytest.approx(np.mean([r["plan_s_per_step"] for r in plans]))
    again = json.loads((run_dir / "result.json").read_text())  # resumed when finished: no evaluation to time
    assert again["plan_s_one_state"] > 0 and again["plan_s_per_step"] is None


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, flag", [
    ("batch_size", -1, "--batch-size"), ("hidden_dim", 12, "--hidden-dim"), ("hidden_dim", 0, "--hidden-dim"),
    ("dim_mults", [], "--dim-mults"), ("dim_mults", [1, 0], "--dim-mults"),
    ("dim_mults", [1, 1, 1, 1], "--dim-mults"),
    ("horizon", 30, "--horizon"), ("horizon", 1, "--horizon"), ("diffusion_steps", 0, "--diffusion-steps"),
    ("gamma", 1.0, "--gamma"), ("ema_decay", 1.0, "--ema-decay"), ("guide_scale", -0.1, "--guide-scale"),
    ("plan_samples", 0, "--plan-samples"), ("value_steps", -1, "--value-steps"),
    ("value_steps", 0, "--value-steps"), ("actor_lr", 0.0, "--actor-lr"),
])
def test_bad_flags_fail_at_start(field, value, flag, tmp_path):
    check_bad_flag(diffuser, field, value, flag, tmp_path)
