"""algorithms/cal_ql.py: the calibrated bound and the MC returns against hand values, CQL recovered exactly without
the bound, smoke run with exact resume, bad flags. The online phase is tested in tests/test_online.py."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import algorithms.cal_ql as cal_ql
import algorithms.cql as cql
from common.checkpoints import load_checkpoint
from common.config import ArgumentError
from conftest import check_bad_flag, check_finished_run

G = 0.9  # a discount that keeps hand sums short


# ----------------------------------------------------------------------------------------------
# The bound, by hand
# ----------------------------------------------------------------------------------------------
def test_calibrated_lifts_q_below_the_mc_return_only():
    # 1 critic, N = 2 samples, B = 3 states with bounds G(s) = [0, 2, -inf]
    q_pi = torch.tensor([[[1.0, 1.0, -5.0], [-1.0, 3.0, 0.5]]], requires_grad=True)
    g = torch.tensor([0.0, 2.0, -math.inf])
    out = cal_ql.calibrated(q_pi, g)
    # state 0: max(1, 0) = 1, max(-1, 0) = 0; state 1: max(1, 2) = 2, max(3, 2) = 3; state 2: no bound
    torch.testing.assert_close(out, torch.tensor([[[1.0, 2.0, -5.0], [0.0, 3.0, 0.5]]]))
    out.sum().backward()  # the bound holds Q where it lifted it: no gradient there
    torch.testing.assert_close(q_pi.grad, torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]]))


def test_calibrated_gap_by_hand():
    # one critic, N = 1, one state, |A| = 1, as test_cql's first case: Q_rand 1, Q_pi' 2, Q_pi 0.5, log pi 0.3, -0.2,
    # Q_data 1.5. With G(s) = 1.2 the policy samples become max(2, 1.2) = 2 and max(0.5, 1.2) = 1.2; uniform stays 1.
    g = torch.tensor([1.2])
    q_pi_next, q_pi = cal_ql.calibrated(torch.tensor([[[2.0]]]), g), cal_ql.calibrated(torch.tensor([[[0.5]]]), g)
    gap = cal_ql.cql_gap(torch.tensor([[[1.0]]]), q_pi_next, q_pi, torch.tensor([[0.3]]), torch.tensor([[-0.2]]),
                         torch.tensor([[1.5]]), act_dim=1, temp=1.0)
    # terms: [1 + ln 2, 2 - 0.3, 1.2 + 0.2]
    expected = math.log(math.exp(1 + math.log(2)) + math.exp(1.7) + math.exp(1.4)) - 1.5
    torch.testing.assert_close(gap, torch.tensor([expected]))


# ----------------------------------------------------------------------------------------------
# MC returns, by hand
# ----------------------------------------------------------------------------------------------
def test_mc_returns_terminal_and_timeout_by_hand():
    # episode 1 (3 steps) terminates; episode 2 (2 steps) is cut by a time limit: G = 0 past both ends
    rewards = np.array([1.0, 2.0, 3.0, 10.0, 20.0], np.float32)
    terminals = np.array([0, 0, 1, 0, 0], np.float32)
    g = cal_ql.mc_returns(rewards, terminals, np.array([3, 2]), gamma=G)
    ep1 = [1 + G * (2 + G * 3), 2 + G * 3, 3.0]
    ep2 = [10 + G * 20, 20.0]  # truncated: nothing bootstrapped after the last step
    np.testing.assert_allclose(g, ep1 + ep2, rtol=1e-6)
    assert g.dtype == np.float32


def test_mc_returns_terminal_inside_an_episode_stops_the_sum():
    g = cal_ql.mc_returns(np.array([1.0, 5.0, 7.0], np.float32), np.array([0, 1, 0], np.float32), np.array([3]),
                          gamma=G)
    np.testing.assert_allclose(g, [1 + G * 5, 5.0, 7.0], rtol=1e-6)


def test_mc_returns_sparse_failed_episodes_get_the_infinite_horizon_value():
    # rewards -1 (not at the goal) and 0 (goal): episode 1 never succeeds, episode 2 does at its last step
    rewards = np.array([-1, -1, -1, -1, 0], np.float32)
    g = cal_ql.mc_returns(rewards, np.zeros(5, np.float32), np.array([2, 3]), gamma=G, fail_reward=-1.0)
    np.testing.assert_allclose(g, [-10.0, -10.0, -1 + G * (-1), -1.0, 0.0], rtol=1e-6)  # -1 / (1 - 0.9) = -10
    plain = cal_ql.mc_returns(rewards, np.zeros(5, np.float32), np.array([2, 3]), gamma=G)
    np.testing.assert_allclose(plain[:2], [-1 - G, -1.0], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------
def small_args(dataset: str, tmp_path, **kw) -> cal_ql.Args:
    settings = dict(dataset=dataset, total_steps=200, eval_every=100, eval_episodes=2, log_every=50, batch_size=32,
                    hidden_dim=32, bc_steps=50, runs_dir=str(tmp_path / "runs"), progress=False)
    return cal_ql.Args(**(settings | kw))


def test_without_the_bound_it_is_cql_exactly(tiny_hopper, tmp_path):
    """--no-calibrate (and no online phase) computes what cql.py computes: the same weights, bit for bit."""
    args = small_args(tiny_hopper, tmp_path / "calql", calibrate=False, eval_episodes=0)
    cal_ql.train(args)
    cql_args = cql.Args(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cql.Args)})
    cql_args = dataclasses.replace(cql_args, runs_dir=str(tmp_path / "cql"))
    cql.train(cql_args)
    (a,), (b,) = list((tmp_path / "calql" / "runs").iterdir()), list((tmp_path / "cql").iterdir())
    ca, cb = load_checkpoint(a / "checkpoint.pt"), load_checkpoint(b / "checkpoint.pt")
    for name in ("q", "q_target", "policy"):
        for k in ca[name]:
            assert torch.equal(ca[name][k], cb[name][k]), (name, k)


def test_the_bound_changes_training(tiny_hopper, tmp_path):
    cal_ql.train(small_args(tiny_hopper, tmp_path / "a", eval_episodes=0, total_steps=60, bc_steps=0))
    cal_ql.train(small_args(tiny_hopper, tmp_path / "b", eval_episodes=0, total_steps=60, bc_steps=0,
                            calibrate=False))
    (a,), (b,) = (list((tmp_path / d / "runs").iterdir()) for d in ("a", "b"))
    qa, qb = load_checkpoint(a / "checkpoint.pt")["q"], load_checkpoint(b / "checkpoint.pt")["q"]
    assert any(not torch.equal(qa[k], qb[k]) for k in qa)


def test_smoke_offline(tiny_hopper, tmp_path):
    args = small_args(tiny_hopper, tmp_path)
    result = cal_ql.train(args)
    _, records, _ = check_finished_run(cal_ql, args, result, loss_key="loss/q",
                                       finite=("loss/q", "loss/cql", "loss/actor", "calibrated_frac"),
                                       networks=("q", "q_target", "policy"))
    assert all(0.0 <= r["calibrated_frac"] <= 1.0 for r in records if "calibrated_frac" in r)
    assert "online" not in result


@pytest.mark.parametrize("field,value,flag", [
    ("online_steps", -1, "--online-steps"), ("utd_ratio", 0, "--utd-ratio"), ("mixing_ratio", 1.5, "--mixing-ratio"),
    ("mixing_ratio", float("nan"), "--mixing-ratio"), ("regularizer_weight", -1.0, "--regularizer-weight"),
])
def test_bad_flags(field, value, flag, tmp_path):
    check_bad_flag(cal_ql, field, value, flag, tmp_path)


def test_eval_every_must_divide_the_offline_updates_with_an_online_phase(tmp_path):
    args = cal_ql.Args(dataset="test/none-v0", runs_dir=str(tmp_path), progress=False, total_steps=100,
                       online_steps=10, eval_every=30)
    with pytest.raises(ArgumentError, match="^--eval-every "):
        cal_ql.train(args)
