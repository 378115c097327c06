"""The discrete-action scripts: bc_discrete, bcq_discrete, cql_discrete, spibb.

- each loss and target against values worked out by hand on tiny tensors (in the comments);
- a chain MDP whose optimal policy is known, logged by a behaviour policy that is mostly wrong: BCQ, CQL (both
  critics) and SPIBB must find the optimal action in every state, BC must not (the task is not trivial);
- a smoke run of each script on a tiny CartPole dataset: finite metrics, a checkpoint, `load_policy` replaying the
  final evaluation, resuming a finished run training no further;
- bad input: a continuous dataset given to a discrete script is one clear line; discrete evaluation's checks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algorithms import bc_discrete, bcq_discrete, cql_discrete, spibb
from common.checkpoints import load_checkpoint
from common.data import DatasetError, load_dataset
from common.evaluation import discrete_actions, evaluate

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"bc_discrete": bc_discrete, "bcq_discrete": bcq_discrete, "cql_discrete": cql_discrete, "spibb": spibb}


# ----------------------------------------------------------------------------------------------
# Losses and targets, by hand
# ----------------------------------------------------------------------------------------------
def test_bc_discrete_cross_entropy():
    logits, act = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1])
    # -log(e^2 / (e^2 + 1)) = log(1 + e^-2); -log(e / (e + 1)) = log(1 + e^-1)
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert float(bc_discrete.bc_loss(logits, act)) == pytest.approx(expected, rel=1e-6)


def test_bcq_mask_and_target():
    # G = (0.5, 0.4, 0.1): ratios to the max 1, 0.8, 0.2 -> with tau 0.3 the third is excluded;
    # G = (0.1, 0.2, 0.7): ratios 0.14, 0.29, 1 -> only the third is allowed
    log_g = torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.1, 0.2, 0.7]]).log()
    assert bcq_discrete.allowed_actions(log_g, 0.3).tolist() == [[True, True, False], [False, False, True]] * 1 + [
        [False, False, True]]
    assert bcq_discrete.allowed_actions(log_g, 0.0).all()  # tau = 0: every action (DQN)
    q_next = torch.tensor([[1.0, 3.0, 10.0], [10.0, 10.0, 0.0], [10.0, 10.0, 0.0]])  # online Q(s', .)
    q_next_target = torch.tensor([[5.0, 7.0, 9.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    rew, done = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 0.0, 1.0])
    y = bcq_discrete.bcq_target(q_next, log_g, q_next_target, rew, done, 0.5, 0.3)
    # row 1: a' = 1 (Q 3; Q 10 is excluded), Qbar = 7 -> 1 + 0.5 * 7; row 2: a' = 2 (the only one), Qbar 4 -> 2 + 2;
    # row 3: terminal -> 3
    torch.testing.assert_close(y, torch.tensor([4.5, 4.0, 3.0]))
    # G's loss: -log G(a|s) + 0.01 mean(logits^2); logits (0, ln 3): G = (1/4, 3/4)
    logits = torch.tensor([[0.0, math.log(3.0)]])
    expected = -math.log(0.75) + 0.01 * (math.log(3.0) ** 2) / 2
    loss = bcq_discrete.generator_loss(F.log_softmax(logits, -1), logits, torch.tensor([1]), 0.01)
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_cql_logsumexp_term():
    q, act = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([1, 0])
    # row 1: log(e + e^2) - 2; row 2: log 2 - 0
    expected = (math.log(math.e + math.e ** 2) - 2.0 + math.log(2.0)) / 2
    assert float(cql_discrete.conservative_gap(q, act)) == pytest.approx(expected, rel=1e-6)


def test_quantile_huber_loss_and_qrdqn_target():
    # N = 2: tau = (0.25, 0.75); theta = (0, 1), T theta = (0.5, 3); u_ij = T theta_j - theta_i:
    # i=1: u = (0.5, 3), Huber 0.125, 2.5, weight |0.25 - 0| -> mean_j (0.03125 + 0.625) / 2 = 0.328125
    # i=2: u = (-0.5, 2), Huber 0.125, 1.5, weights |0.75 - 1| = 0.25, 0.75 -> (0.03125 + 1.125) / 2 = 0.578125
    loss = cql_discrete.quantile_huber_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 3.0]]), 1.0)
    assert float(loss) == pytest.approx(0.328125 + 0.578125)
    # kappa = 2: Huber_2(3) = 2 (3 - 1) = 4, Huber_2(2) = 2 (quadratic: 0.5 * 4), Huber_2(0.5) = 0.125, /kappa
    loss = cql_discrete.quantile_huber_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 3.0]]), 2.0)
    expected = ((0.25 * 0.125 + 0.25 * 4.0) / 2 + (0.25 * 0.125 + 0.75 * 2.0) / 2) / 2
    assert float(loss) == pytest.approx(expected)
    # the target: a* by the mean of thetabar(s', .): a0 (1, 3) mean 2, a1 (0, 5) mean 2.5 -> a1
    theta_next = torch.tensor([[[1.0, 3.0], [0.0, 5.0]], [[1.0, 3.0], [0.0, 5.0]]])
    y = cql_discrete.qrdqn_target(theta_next, torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), 0.5)
    torch.testing.assert_close(y, torch.tensor([[1.0, 3.5], [1.0, 1.0]]))
    # the DQN critic's Double-DQN target: online argmax (a1), target's value of it (7, not its max 9)
    y = cql_discrete.double_dqn_target(torch.tensor([[1.0, 2.0]]), torch.tensor([[9.0, 7.0]]), torch.tensor([1.0]),
                                       torch.tensor([0.0]), 0.5)
    torch.testing.assert_close(y, torch.tensor([4.5]))


def test_spibb_target_policy_and_pseudo_counts():
    n_wedge = 10.0
    counts = torch.tensor([[20.0, 3.0], [20.0, 20.0], [0.0, 0.0]])  # a1 bootstrapped; none; both
    pi_b = torch.tensor([[0.4, 0.6], [0.5, 0.5], [0.25, 0.75]])
    q_next = torch.tensor([[1.0, 100.0], [1.0, 2.0], [1.0, 2.0]])  # online
    q_next_target = torch.tensor([[2.0, 10.0], [5.0, 7.0], [4.0, 8.0]])
    y = spibb.spibb_target(q_next, q_next_target, pi_b, counts, torch.tensor([1.0, 1.0, 1.0]), torch.zeros(3), 0.5,
                           n_wedge)
    # row 1: a* = a0 (the only free action, though Q(a1) = 100): 2 * 0.4 + pi_b(a1) Qbar(a1) = 0.6 * 10 -> 6.8
    # row 2: all free: a* = a1 by the online Q, all the mass on it: Qbar = 7
    # row 3: all bootstrapped: the behaviour policy's value 0.25 * 4 + 0.75 * 8 = 7
    torch.testing.assert_close(y, torch.tensor([1 + 0.5 * 6.8, 1 + 0.5 * 7.0, 1 + 0.5 * 7.0]))
    pi = spibb.spibb_policy(q_next, pi_b, counts, n_wedge)
    # row 1: a1 keeps pi_b's 0.6, a0 gets the rest; row 2: greedy in Q; row 3: pi_b
    torch.testing.assert_close(pi, torch.tensor([[0.4, 0.6], [0.0, 1.0], [0.25, 0.75]]))

    # n(s, a) = sum_{i: a_i = a} max(0, 1 - ||s - s_i|| / 0.2)
    obs, act = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 0.0], [0.0, 0.15]]), torch.tensor([0, 1, 0, 1])
    counts = spibb.pseudo_counts(torch.tensor([[0.0, 0.0], [0.05, 0.0]]), obs, act, 2, 0.2)
    # (0, 0): a0 1 (itself) + 0 (distance 1); a1 0.5 (0.1) + 0.25 (0.15)
    # (0.05, 0): a0 0.75 (0.05); a1 0.75 (0.05) + 1 - sqrt(0.05^2 + 0.15^2) / 0.2
    expected = [[1.0, 0.75], [0.75, 0.75 + 1 - math.sqrt(0.05 ** 2 + 0.15 ** 2) / 0.2]]
    torch.testing.assert_close(counts, torch.tensor(expected))
    # the windowed computation equals comparing every pair
    g = torch.Generator().manual_seed(0)
    obs, act, query = torch.randn(3000, 3, generator=g), torch.randint(0, 3, (3000,), generator=g), torch.randn(
        700, 3, generator=g)
    brute = (1 - torch.cdist(query, obs, compute_mode="donot_use_mm_for_euclid_dist") / 0.5).clamp_min(0) @ \
        F.one_hot(act, 3).float()
    torch.testing.assert_close(spibb.pseudo_counts(query, obs, act, 3, 0.5, chunk=64), brute, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# A chain MDP: the data contain the optimal policy, the behaviour is mostly wrong
# ----------------------------------------------------------------------------------------------
CHAIN = 5


def write_chain_dataset(dataset_id: str, episodes: int = 2500, p_right: float = 0.3, seed: int = 0) -> None:
    """States 0..4 (one-hot observations), episodes start in a uniformly drawn state. Action 1 ("right") moves
    one state to the right, and in the last state ends the episode with reward 10; action 0 ends it at once with
    reward 1. Optimal: always right (Q*(s, 1) = 10 gamma^(4 - s) > 1 = Q*(s, 0)); the behaviour goes right with
    probability 0.3, so the data's most frequent action is the wrong one in every state. No environment: the
    scripts train on it without evaluation."""
    import minari
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(seed)
    eye = np.eye(CHAIN, dtype=np.float32)
    buffers = []
    for _ in range(episodes):
        s = int(rng.integers(CHAIN))
        obs, acts, rews = [eye[s]], [], []
        while True:
            a = int(rng.random() < p_right)
            acts.append(a)
            if a == 0 or s == CHAIN - 1:
                rews.append(1.0 if a == 0 else 10.0)
                obs.append(eye[s])  # the episode ended: this observation is never bootstrapped from
                break
            s += 1
            rews.append(0.0)
            obs.append(eye[s])
        n = len(acts)
        buffers.append(EpisodeBuffer(observations=np.stack(obs), actions=np.asarray(acts, np.int64),
                                     rewards=np.asarray(rews, np.float64), terminations=np.eye(n, dtype=bool)[-1],
                                     truncations=np.zeros(n, bool)))
    minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers, action_space=gym.spaces.Discrete(2),
                                       observation_space=gym.spaces.Box(0.0, 1.0, (CHAIN,), np.float32),
                                       algorithm_name="chain", author="stitch", code_permalink="none",
                                       author_email="none", description="a 5-state chain MDP")


@pytest.fixture
def chain(minari_root):
    write_chain_dataset("test/chain/mostly-wrong-v0")
    data = load_dataset("test/chain/mostly-wrong-v0", discrete=True)
    assert data.env_spec is None and data.n_actions == 2
    for s in range(CHAIN):  # the behaviour is mostly wrong, and the optimal action is in the data, in every state
        taken = data.actions[data.observations[:, s] == 1]
        assert 0.6 < (taken == 0).mean() < 0.8 and (taken == 1).sum() > 50
    return "test/chain/mostly-wrong-v0"


# Small networks, and for the Atari-tuned scripts a faster optimizer and target. CQL's alpha is 0.1: with a Huber
# (or quantile Huber) TD loss the TD gradient on Q(s, a) is bounded by pi_b(a|s) (QR: by tau_1 pi_b(a|s) per
# quantile, tau_1 = 1/2N, against alpha (softmax_a Q - pi_b(a|s)) / N from the penalty), so where the data take the
# optimal action with probability 0.3 an alpha above about 0.43 (DQN) or 0.21 (QR) pushes its Q below the wrong
# action's whatever the rewards: alpha 1 fails here with both critics (tried), alpha 0.1 is within both bounds.
CHAIN_RUNS = {
    "bc_discrete": dict(),
    "bcq_discrete": dict(),
    "cql_discrete": dict(critic_lr=1e-3, target_update_every=100, num_quantiles=16, regularizer_weight=0.1),
    "cql_discrete_dqn": dict(critic="dqn", critic_lr=1e-3, target_update_every=100, regularizer_weight=0.1),
    "spibb": dict(critic_lr=1e-3, target_update_every=100),
}


@pytest.mark.parametrize("run", list(CHAIN_RUNS))
def test_chain_mdp_finds_the_optimal_policy(run, chain, tmp_path):
    script = SCRIPTS[run.removesuffix("_dqn")]
    args = script.Args(dataset=chain, total_steps=3000, batch_size=64, hidden_dim=64, eval_episodes=0,
                       log_every=500, checkpoint_every=3000, runs_dir=str(tmp_path / "runs"), progress=False,
                       **CHAIN_RUNS[run])
    script.train(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    actions = script.load_policy(run_dir)(np.eye(CHAIN, dtype=np.float32))
    if run == "bc_discrete":  # imitation takes the data's most frequent action: wrong everywhere
        assert actions.tolist() == [0] * CHAIN
    else:
        assert actions.tolist() == [1] * CHAIN, f"{run} acts {actions.tolist()} in states 0..{CHAIN - 1}"


# ----------------------------------------------------------------------------------------------
# Smoke: every script end to end on a tiny CartPole dataset
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_smoke_run_load_policy_and_finished_resume(name, tiny_cartpole, tmp_path):
    script = SCRIPTS[name]
    args = script.Args(dataset=tiny_cartpole, total_steps=40, eval_every=20, eval_episodes=2, log_every=10,
                       batch_size=16, hidden_dim=16, runs_dir=str(tmp_path / "runs"), progress=False)
    result = script.train(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.startswith(f"{name}__test-cartpole-tiny-v0__s0__")
    assert [e["step"] for e in result["evals"]] == [20, 40] and math.isfinite(result["final_score"])
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if any(k.startswith("loss/") for k in r)]
    assert [r["step"] for r in losses] == [10, 20, 30, 40]
    assert all(math.isfinite(v) for r in losses for v in r.values())
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["step"] == 40 and ckpt["n_actions"] == 2 and ckpt["act_dim"] == 1 and ckpt["obs_dim"] == 4
    assert json.loads((run_dir / "args.json").read_text()) == dataclasses.asdict(args)

    policy = script.load_policy(run_dir)
    actions = policy(np.zeros((3, 4), np.float32))
    assert actions.shape == (3,) and actions.dtype == np.int64
    returns = evaluate(policy, load_dataset(tiny_cartpole).env_spec, args.eval_episodes, seed=args.seed)
    assert float(returns.mean()) == result["final_return"]
    again = script.train(script.Args(resume=str(run_dir), progress=False))
    assert again["steps"] == 40 and again["final_score"] == result["final_score"]


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SCRIPTS))
def test_continuous_dataset_is_refused(name, tiny_hopper, tmp_path):
    script = SCRIPTS[name]
    with pytest.raises(DatasetError, match="has continuous actions; this script is for discrete actions"):
        script.train(script.Args(dataset=tiny_hopper, total_steps=2, runs_dir=str(tmp_path / "runs"), progress=False))
    assert not (tmp_path / "runs").exists()  # no run folder for a run that never started


def test_continuous_dataset_is_one_line_on_the_command_line(tiny_hopper, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "algorithms" / "bcq_discrete.py"), "--dataset", tiny_hopper,
                           "--runs-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: dataset {tiny_hopper!r} has continuous actions; this script is for discrete actions "
        "(stitch/cartpole/..., stitch/acrobot/...)"]


@pytest.mark.parametrize("name, field, value", [("bcq_discrete", "threshold", 1.0), ("cql_discrete", "critic", "iqn"),
                                                ("cql_discrete", "regularizer_weight", -1.0),
                                                ("spibb", "count_radius", 0.0), ("spibb", "count_threshold", -1.0)])
def test_bad_flags(name, field, value, tmp_path):
    from conftest import check_bad_flag

    check_bad_flag(SCRIPTS[name], field, value, "--" + field.replace("_", "-"), tmp_path)


def test_discrete_evaluation_checks_and_converts_actions(tiny_cartpole):
    assert discrete_actions(np.array([[1], [0]]), 2, 2) == [1, 0]  # [n, 1] and floats that are whole numbers
    assert discrete_actions(np.array([1.0, 0.0], np.float32), 2, 2) == [1, 0]
    with pytest.raises(ValueError, match=r"in \[0, 2\)"):
        discrete_actions(np.array([2, 0]), 2, 2)
    with pytest.raises(ValueError, match="integer indices"):
        discrete_actions(np.array([0.5, 0.0]), 2, 2)
    with pytest.raises(ValueError, match="one action per observation"):
        discrete_actions(np.zeros((2, 2)), 2, 2)
    data = load_dataset(tiny_cartpole, discrete=True)
    assert data.n_actions == 2 and data.actions.dtype == np.int64
    # a policy's int actions reach the environment; the score is normalized with the dataset's reference returns
    returns = evaluate(lambda obs: (obs[:, 2] + obs[:, 3] > 0).astype(np.int64)[:, None], data.env_spec, 2)
    assert returns.tolist() == [60.0, 60.0]  # the balancing rule, given as [n, 1], lasts to the 60-step limit
    np.testing.assert_allclose(data.normalized_score(returns), 100 * (returns - 9.0) / (500.0 - 9.0))
    with pytest.raises(ValueError, match="discrete actions"):
        evaluate(lambda obs: np.full(len(obs), 7), data.env_spec, 1)
