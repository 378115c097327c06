"""algorithms/combo.py: the conservative term by hand (soft maximum at real and model states, push-up on real data
only), the critic update's use of it, smoke run with exact resume, a MOPO dynamics model reused, bad input. The
dynamics model, rollouts and termination functions are mopo.py's; tests/test_mopo.py checks them there, and
the copies here are checked to be the same code."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch

import algorithms.combo as combo
import algorithms.mopo as mopo
from common.checkpoints import load_checkpoint
from common.data import DatasetError
from conftest import (check_bad_flag, check_finished_run, check_resume_from_crash, check_stop_in_dynamics_training,
                      make_dataset, train_and_crash_copy)

LN2 = math.log(2.0)
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# The conservative term, by hand
# ----------------------------------------------------------------------------------------------
def test_conservative_gap_soft_maximum_over_all_states_push_up_on_real_ones():
    # one critic, N = 1, |A| = 1 (uniform density 0.5: -log mu = +ln 2), B = 2 states (a real and a model one),
    # one real (s, a) with Q = 1.5
    q_rand = torch.tensor([[[1.0, 0.0]]], requires_grad=True)
    q_pi_next, q_pi = torch.tensor([[[2.0, 0.0]]]), torch.tensor([[[0.5, 0.0]]])
    logp_next, logp = torch.tensor([[0.3, 0.0]]), torch.tensor([[-0.2, 0.0]])
    q_real = torch.tensor([[1.5]], requires_grad=True)
    # state 1: terms [1 + ln 2, 2 - 0.3, 0.5 + 0.2]: ln(2e + e^1.7 + e^0.7) = 2.5591
    # state 2: terms [ln 2, 0, 0]: ln(2 + 1 + 1) = ln 4 = 1.3863;  gap = (2.5591 + 1.3863) / 2 - 1.5 = 0.4727
    gap = combo.conservative_gap(q_rand, q_pi_next, q_pi, logp_next, logp, q_real, act_dim=1, temp=1.0)
    expected = (math.log(2 * math.e + math.exp(1.7) + math.exp(0.7)) + math.log(4.0)) / 2 - 1.5
    assert expected == pytest.approx(0.4727, abs=1e-4)
    torch.testing.assert_close(gap, torch.tensor([expected]))
    gap.sum().backward()
    torch.testing.assert_close(q_real.grad, torch.tensor([[-1.0]]))  # E_D[Q] over the real (s, a) only
    # d gap / d Q_rand at state 2 = its softmax weight (2 / 4) / 2 states
    assert q_rand.grad[0, 0, 1].item() == pytest.approx(0.25)

    # temp = 2 at state 2 only: 2 ln(e^(ln 2 / 2) + 2) = 2 ln(sqrt 2 + 2)
    gap2 = combo.conservative_gap(q_rand[..., 1:], q_pi_next[..., 1:], q_pi[..., 1:], logp_next[:, 1:], logp[:, 1:],
                                  q_real, act_dim=1, temp=2.0)
    torch.testing.assert_close(gap2, torch.tensor([2 * math.log(math.sqrt(2.0) + 2.0) - 1.5]))


def test_conservative_gap_is_per_critic_and_has_no_gradient_into_log_pi():
    # 2 critics at 1.0 and 3.0 everywhere, N = 2, B = 3 states, |A| = 2, log pi = 0: logsumexp = c + ln(2 * 4 + 4);
    # real Q: means 1 and 3 over 2 real (s, a), so the gap is ln 12 for both
    n, N, B = 2, 2, 3
    q = torch.tensor([1.0, 3.0]).view(n, 1, 1).expand(n, N, B).clone().requires_grad_(True)
    logp = torch.zeros(N, B, requires_grad=True)
    q_real = torch.tensor([[1.0, 1.0], [2.0, 4.0]])
    gap = combo.conservative_gap(q, q, q, logp, logp, q_real, act_dim=2, temp=1.0)
    torch.testing.assert_close(gap, torch.tensor([math.log(12.0), math.log(12.0)]))
    gap.sum().backward()
    assert logp.grad is None  # importance weights are constants
    # each q entry is passed as a uniform term (softmax weight 4/12) and as both policy terms (1/12 each):
    # d gap / d q = (4 + 1 + 1) / 12 / B = 0.5 / 3
    torch.testing.assert_close(q.grad, torch.full((n, N, B), 0.5 / 3))


def test_the_dynamics_and_rollouts_are_mopos():
    """combo.py carries its own copy of mopo.py's model code (a script stands alone); the copies must not drift."""
    def functions(path: Path) -> dict[str, str]:
        tree = ast.parse(path.read_text())
        return {n.name: ast.unparse(n) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}

    a, b = functions(ROOT / "algorithms" / "mopo.py"), functions(ROOT / "algorithms" / "combo.py")
    for name in ("hopper_done", "walker2d_done", "never_done", "termination_function", "EnsembleLinear",
                 "soft_bound_logvar", "gaussian_nll", "dynamics_loss", "holdout_mse", "train_dynamics",
                 "save_dynamics", "load_dynamics", "dynamics_model", "ModelBuffer", "check_model_args"):
        assert a[name] == b[name], name
    assert a["EnsembleDynamics"].replace("mopo_uncertainty", "model_uncertainty") == b["EnsembleDynamics"]


# ----------------------------------------------------------------------------------------------
# Smoke: a few hundred updates end to end, in-process, and an exact resume
# ----------------------------------------------------------------------------------------------
TINY = dict(hidden_dim=32, batch_size=32, total_steps=200, eval_every=100, eval_episodes=1, log_every=50,
            checkpoint_every=100, progress=False, rollout_batch=200, rollout_freq=100, dynamics_hidden_dim=32,
            max_dynamics_epochs=20, num_action_samples=3)


@pytest.mark.parametrize("dataset, setting", [
    ("stitch/hopper/medium-v0", (5, 5.0)), ("stitch/hopper/medium-replay-v0", (5, 0.5)),
    ("stitch/walker2d/medium-replay-v0", (1, 0.5)), ("stitch/halfcheetah/medium-replay-v0", (5, 0.5)),
    ("mujoco/walker2d/medium-v0", (1, 5.0)), ("stitch/hopper/random-v0", None), ("logs", None)])
def test_the_suggested_setting_is_looked_up_by_environment_and_level(dataset, setting):
    assert combo.paper_setting(dataset) == setting


def test_unset_rollout_length_and_weight_come_from_the_dataset_and_given_ones_stay(capsys):
    filled = combo.with_dataset_settings(combo.Args(dataset="stitch/walker2d/medium-replay-v0"))
    assert (filled.rollout_length, filled.regularizer_weight) == (1, 0.5)
    assert "rollout length 1, regularizer weight 0.5 (unset flags: the suggested" in capsys.readouterr().out
    given = combo.with_dataset_settings(combo.Args(dataset="stitch/hopper/medium-v0", regularizer_weight=1.0))
    assert (given.rollout_length, given.regularizer_weight) == (5, 1.0)
    other = combo.with_dataset_settings(combo.Args(dataset="my/logs-v0"))
    assert (other.rollout_length, other.regularizer_weight) == combo.OTHER_SETTING


def test_train_smoke_and_exact_resume(tiny_hopper, tmp_path, monkeypatch):
    args = combo.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "runs"), **TINY)
    result, crashed = train_and_crash_copy(combo, args, tmp_path, monkeypatch)
    run_dir, records, ckpt = check_finished_run(
        combo, args, result, loss_key="loss/q", networks=("q", "q_target", "policy"),
        finite=("loss/q", "loss/cql", "cql_gap", "loss/actor", "loss/alpha", "alpha", "entropy", "q_data",
                "rollout_length", "model_reward", "model_uncertainty"))
    dyn = json.loads((run_dir / "dynamics.json").read_text())
    assert len(dyn["holdout_mse"]) == 7 and len(dyn["elites"]) == 5
    assert ckpt["model_buffer"]["size"] > 200
    for r in (r for r in records if "loss/cql" in r):
        assert r["loss/cql"] == pytest.approx(0.5 * 2 * r["cql_gap"], rel=1e-5)  # beta x gap, summed over 2 critics

    check_resume_from_crash(combo, crashed, result, records, ckpt, ("q", "q_target", "policy", "log_alpha"),
                            monkeypatch)


def test_ctrl_c_while_the_dynamics_model_trains_loses_nothing(tiny_hopper, tmp_path, monkeypatch, capsys):
    check_stop_in_dynamics_training(combo, tiny_hopper, tmp_path, monkeypatch, capsys, TINY)


def test_a_mopo_dynamics_model_is_reused(tiny_hopper, tmp_path, monkeypatch):
    small = dict(TINY, total_steps=50, eval_every=50)
    mopo_small = {k: v for k, v in small.items() if k != "num_action_samples"}
    mopo.train(mopo.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "mopo"), **mopo_small))
    (mopo_dir,) = (tmp_path / "mopo").iterdir()
    monkeypatch.setattr(combo, "train_dynamics", lambda *a, **k: pytest.fail("--dynamics-path retrained the model"))
    result = combo.train(combo.Args(dataset=tiny_hopper, runs_dir=str(tmp_path / "combo"),
                                    dynamics_path=str(mopo_dir / "dynamics.pt"), **small))
    assert result["steps"] == 50 and math.isfinite(result["final_score"])
    (combo_dir,) = (tmp_path / "combo").iterdir()
    a, b = load_checkpoint(mopo_dir / "dynamics.pt"), load_checkpoint(combo_dir / "dynamics.pt")
    assert all(torch.equal(a["dynamics"][k], b["dynamics"][k]) for k in a["dynamics"])


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_an_environment_without_a_termination_function_is_one_line(minari_root, tmp_path):
    make_dataset("test/pendulum/tiny-v0", env_id="Pendulum-v1", episodes=2, max_steps=20, ref_scores=None)
    with pytest.raises(DatasetError, match=r"combo.py has no termination function for its environment Pendulum-v1"):
        combo.train(combo.Args(dataset="test/pendulum/tiny-v0", runs_dir=str(tmp_path / "runs"), **TINY))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("field, value, flag", [
    ("regularizer_weight", -1.0, "--regularizer-weight"), ("num_action_samples", 0, "--num-action-samples"),
    ("logsumexp_temperature", 0.0, "--logsumexp-temperature"), ("real_ratio", 0.0, "--real-ratio"),
    ("num_elites", 8, "--num-elites"), ("termination", "ant", "--termination"),
    ("dynamics_path", "/no/such/dynamics.pt", "--dynamics-path"),
])
def test_bad_flags(field, value, flag, tmp_path):
    check_bad_flag(combo, field, value, flag, tmp_path)
