"""Off-policy evaluation: the behaviour probabilities the suite records, the estimators of algorithms/ope.py against
values computed by hand, FQE (algorithms/fqe.py) against a known Q, and bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import ROOT

from algorithms import bc_discrete, fqe, ope
from benchmarks.suite import build as suite
from benchmarks.suite.behavior import GaussianActor
from common.checkpoints import CheckpointError
from common.data import Dataset, DatasetError, load_behavior, load_dataset

FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


# ----------------------------------------------------------------------------------------------
# The suite records the behaviour's probabilities, and nothing else changes
# ----------------------------------------------------------------------------------------------
def data_digest(dataset_id: str) -> str:
    """sha256 of every episode's transition fields (dtype, shape, bytes), in order; the infos left out."""
    import minari
    h = hashlib.sha256()
    for ep in minari.load_dataset(dataset_id).iterate_episodes():
        for name in FIELDS:
            a = np.ascontiguousarray(getattr(ep, name))
            h.update(f"{name}{a.dtype}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


# What the builder wrote before it recorded behaviour probabilities (commit e5c8ce8, shipped CartPole DQN policies,
# n_steps=3000, workers=1): the transitions must stay exactly these.
PREVIOUS_BUILD = {
    "stitch/cartpole/medium-replay-v0": "d04b71bbf247ac2debb91499898d43277ce09e0726773dd7eba584dcc673c892",
    "stitch/cartpole/medium-v0": "f4776ce4583b19dea1babcead1eef02ff75c4e6acf7cee3736f9831d1151b02b",
}


@pytest.mark.parametrize("dataset_id", sorted(PREVIOUS_BUILD))
def test_recording_probabilities_leaves_the_transitions_as_they_were(dataset_id, minari_root):
    suite.build(dataset_id, n_steps=3000, progress=False, workers=1)
    assert data_digest(dataset_id) == PREVIOUS_BUILD[dataset_id], "the transitions differ from the previous build"
    data = load_dataset(dataset_id)
    probs = load_behavior(data)
    assert probs.shape == (len(data), 2)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    # epsilon-greedy: every row is (eps / 2, 1 - eps / 2) in some order, eps the stream's epsilon
    eps = {round(float(e), 6) for e in 2 * probs.min(1)}
    assert eps <= {round(e, 6) for e in [1.0, *suite.info(dataset_id)["epsilons"].values()]}
    assert (probs[np.arange(len(data)), data.actions] > 0).all()
    assert suite.info(dataset_id)["behavior_infos"] == "behavior_probs"


def test_recorded_densities_are_the_tanh_gaussians_and_the_uniforms():
    torch.manual_seed(0)
    actor = GaussianActor(11, 3, 32).eval()
    envs = suite.make_envs("Hopper-v5", 4)
    episodes = suite.run_group(envs, actor, seed=0, stream="medium", group=0, n_steps=200)
    obs = torch.as_tensor(np.concatenate([ep.observations[:-1] for ep in episodes]))
    act = torch.as_tensor(np.concatenate([ep.actions for ep in episodes]), dtype=torch.float64)
    recorded = np.concatenate([ep.infos["behavior_log_prob"] for ep in episodes])
    with torch.no_grad():
        mu, log_std = (x.double() for x in actor.dist(obs))
    # an independent computation: torch's tanh-transformed Normal at the stored (float32) action
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mu, log_std.exp()), [torch.distributions.TanhTransform(cache_size=0)])
    inside = (act.abs() < 0.999).all(1)  # atanh of a float32 action near +-1 loses the digits
    assert inside.sum() > 100
    expected = dist.log_prob(act).sum(1).detach()
    np.testing.assert_allclose(recorded[inside.numpy()], expected[inside].numpy(), atol=2e-3, rtol=1e-4)
    uniform = suite.run_group(envs, None, seed=0, stream="random", group=0, n_steps=100)
    assert all(np.all(ep.infos["behavior_log_prob"] == -3 * np.log(2.0)) for ep in uniform)
    for env in envs:
        env.close()


# ----------------------------------------------------------------------------------------------
# Estimators against values computed by hand
# ----------------------------------------------------------------------------------------------
def test_estimators_match_hand_computed_values():
    # Episode 1: r = (1, 2), pi/mu = (2, 0.5) -> rho = (2, 1). Episode 2 (one step): r = 3, pi/mu = 0.5 -> rho = 0.5.
    rewards = np.array([[1.0, 2.0], [3.0, 0.0]])
    log_ratios = np.log(np.array([[2.0, 0.5], [0.5, 1.0]]))  # padding: ratio 1 (log 0) after the end
    q = np.array([[1.0, 1.0], [2.0, 0.0]])
    v = np.array([[2.0, 1.0], [1.0, 0.0]])
    est = ope.ope_estimates(rewards, log_ratios, 0.5, q, v)
    # G = (1 + 0.5 * 2, 3) = (2, 3)
    assert est["is"] == pytest.approx((1 * 2 + 0.5 * 3) / 2)                        # 1.75
    assert est["wis"] == pytest.approx((1 * 2 + 0.5 * 3) / (1 + 0.5))               # 7/3
    assert est["pdis"] == pytest.approx(((2 * 1 + 0.5 * 1 * 2) + 0.5 * 3) / 2)      # 2.25
    # t=0: w = (0.8, 0.2): 0.8 + 0.6; t=1: w = (2/3, 1/3): 0.5 * 4/3
    assert est["wpdis"] == pytest.approx(1.4 + 0.5 * 4 / 3)
    # per episode: sum_t gamma^t (rho_t (r_t - q_t) + rho_t-1 v_t): (0 + 2) + 0.5 (1 + 2) = 3.5; (0.5 + 1) + 0 = 1.5
    assert est["dr"] == pytest.approx((3.5 + 1.5) / 2)
    # t=0: 0.8 * 0 + 0.2 * 1 + 0.5 * 2 + 0.5 * 1 = 1.7; t=1: 2/3 * 1 + 0.8 * 1 = 22/15
    assert est["wdr"] == pytest.approx(1.7 + 0.5 * 22 / 15)


def test_an_overflowing_ratio_is_inf_not_nan():
    rewards = np.array([[1.0, 1.0], [1.0, 0.0]])
    log_ratios = np.array([[0.0, 0.0], [800.0, 0.0]])  # rho = e^800 overflows; the second episode has one step
    est = ope.ope_estimates(rewards, log_ratios, 0.9, lengths=np.array([2, 1]))
    assert est["is"] == est["pdis"] == est["dr"] == np.inf
    assert est["wis"] == pytest.approx(1.0) and est["wpdis"] == pytest.approx(1.0)  # all weight on episode 2


def test_on_policy_every_estimator_is_the_mean_return():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(6, 4))
    rewards[2, 3:] = 0.0
    log_ratios = np.zeros_like(rewards)
    gamma = 0.9
    mean_return = (rewards * gamma ** np.arange(4)).sum(1).mean()
    for name, value in ope.ope_estimates(rewards, log_ratios, gamma).items():
        assert value == pytest.approx(mean_return), name


def tiny_mdp_episodes(rng: np.random.Generator, n: int, p_behavior: float = 0.5) -> tuple[np.ndarray, ...]:
    """n episodes of a two-step MDP: a0 in {0, 1} earns a0 and leads to state a0; a1 earns 1 when a1 == that state.
    mu takes 1 with p_behavior at both steps; pi takes a0 = 1 w.p. 0.8 and a1 = the state w.p. 0.9. With gamma 0.9
    the value of pi is 0.8 + 0.9 * 0.9 = 1.61. Returns rewards, log(pi / mu), and a wrong model's Q(s_t, a_t) and
    V(s_t) = E_pi Q(s_t, .), all [n, 2]: Q(s0, a) = 0.3 + 0.5 a (V = 0.7), Q(s1, b) = 0.2 + 0.6 [b == s1] (V = 0.74)."""
    a0 = rng.random(n) < p_behavior
    a1 = rng.random(n) < p_behavior
    rewards = np.stack([a0.astype(float), (a1 == a0).astype(float)], 1)
    pi0 = np.where(a0, 0.8, 0.2)
    pi1 = np.where(a1 == a0, 0.9, 0.1)
    mu0 = np.where(a0, p_behavior, 1 - p_behavior)
    mu1 = np.where(a1, p_behavior, 1 - p_behavior)
    q = np.stack([0.3 + 0.5 * a0, 0.2 + 0.6 * (a1 == a0)], 1)
    v = np.broadcast_to([0.7, 0.74], (n, 2))
    return rewards, np.log(np.stack([pi0 / mu0, pi1 / mu1], 1)), q, v


TINY_MDP_VALUE = 0.8 + 0.9 * 0.9


def test_is_pdis_and_dr_are_unbiased_on_many_small_datasets():
    rng = np.random.default_rng(1)
    runs = {name: [] for name in ("is", "pdis", "dr", "wis")}
    for _ in range(4000):
        rewards, log_ratios, q, v = tiny_mdp_episodes(rng, 5, p_behavior=0.4)
        est = ope.ope_estimates(rewards, log_ratios, 0.9, q, v)  # DR is unbiased whatever the (consistent) model
        for name in runs:
            runs[name].append(est[name])
    for name in ("is", "pdis", "dr"):
        x = np.asarray(runs[name])
        assert abs(x.mean() - TINY_MDP_VALUE) < 4 * x.std() / np.sqrt(len(x)), (name, x.mean())
    assert np.std(runs["dr"]) < np.std(runs["pdis"]) < np.std(runs["is"]), "a model and per-decision weights help"
    # one large dataset: the weighted form converges too
    rewards, log_ratios, _, _ = tiny_mdp_episodes(rng, 200_000, p_behavior=0.4)
    assert ope.ope_estimates(rewards, log_ratios, 0.9)["wis"] == pytest.approx(TINY_MDP_VALUE, abs=0.01)


# ----------------------------------------------------------------------------------------------
# FQE recovers the Q of a fixed policy
# ----------------------------------------------------------------------------------------------
class Constant(nn.Module):
    def __init__(self, action, discrete: bool):
        super().__init__()
        self.action, self.discrete = action, discrete

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return torch.full((len(obs),), self.action, dtype=torch.int64)
        return torch.full((len(obs), 1), self.action)


def flat_dataset(obs, act, rew, next_obs, term, n_actions=None) -> Dataset:
    n = len(rew)
    return Dataset("test/chain", obs.astype(np.float32), act, rew.astype(np.float32), next_obs.astype(np.float32),
                   term.astype(np.float32), np.zeros(n, np.float32), np.arange(n), np.ones(n, np.int64), None, None,
                   None, action_low=None if n_actions else -np.ones(1, np.float32),
                   action_high=None if n_actions else np.ones(1, np.float32), n_actions=n_actions)


FIT = types.SimpleNamespace(seed=0, batch_size=128, hidden_dim=64, critic_lr=1e-3, gamma=0.9, tau=0.05, log_every=10**9)


def test_fqe_recovers_the_q_of_a_fixed_policy_on_a_chain():
    # States 0..4 (one-hot); action 1 moves right, 0 stays; reaching state 4 earns 1 and terminates.
    # pi always moves right: Q(s, 1) = gamma^(3 - s), Q(s, 0) = gamma Q(s, 1) = gamma^(4 - s) for s = 0..3.
    eye = np.eye(5)
    rows = [(s, a, min(s + a, 4)) for s in range(4) for a in (0, 1)]
    s, a, s2 = (np.array(x) for x in zip(*rows))
    data = flat_dataset(eye[s], a.astype(np.int64), (s2 == 4).astype(float), eye[s2], s2 == 4, n_actions=2)
    target = fqe.TargetPolicy(Constant(1, True), 2, 0.0)
    q = fqe.fit_q(data, target, FIT, 3000, torch.device("cpu"))
    with torch.no_grad():
        got = q(torch.as_tensor(eye[:4], dtype=torch.float32)).numpy()
    expected = np.array([[0.9 ** (4 - s), 0.9 ** (3 - s)] for s in range(4)])
    np.testing.assert_allclose(got, expected, atol=0.03)


def test_fqe_recovers_the_q_of_a_fixed_policy_with_continuous_actions():
    # s in [0, 1] stays put, r = s + a, never terminates; pi(s) = 0.5, gamma 0.5:
    # V(s) = (s + 0.5) / (1 - 0.5), Q(s, a) = s + a + 0.5 V(s) = 2 s + a + 0.5.
    rng = np.random.default_rng(0)
    s, a = rng.random((4096, 1)), rng.uniform(-1, 1, (4096, 1))
    data = flat_dataset(s, a.astype(np.float32), (s + a)[:, 0], s, np.zeros(4096))
    target = fqe.TargetPolicy(Constant(0.5, False), None, 0.0, torch.tensor([-1.0]), torch.tensor([1.0]))
    q = fqe.fit_q(data, target, types.SimpleNamespace(**{**vars(FIT), "gamma": 0.5}), 3000, torch.device("cpu"))
    grid_s, grid_a = np.meshgrid(np.linspace(0.1, 0.9, 5), np.linspace(-0.9, 0.9, 5))
    with torch.no_grad():
        got = q(torch.as_tensor(grid_s.reshape(-1, 1), dtype=torch.float32),
                torch.as_tensor(grid_a.reshape(-1, 1), dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, (2 * grid_s + grid_a + 0.5).reshape(-1), atol=0.1)


def test_fqe_next_state_values_computed_once_are_what_the_policy_gives_each_minibatch():
    # FQE asks the policy once for all next states; the values must be those asking it per minibatch gives:
    # discrete expectations, continuous noisy actions (the same noise draws) and a subclass's own sampling.
    torch.manual_seed(0)
    next_obs = torch.randn(50, 3)
    i = torch.tensor([3, 7, 7, 41])
    q_disc = lambda o: torch.stack([o.sum(-1), -o[:, 0], o[:, 1] * 2], -1)  # noqa: E731 -- Q(s, .) of 3 actions
    greedy = nn.Sequential(nn.Linear(3, 3)).requires_grad_(False)
    disc = fqe.TargetPolicy(lambda o: greedy(o).argmax(-1), 3, 0.2)
    got = fqe.next_state_values(disc, next_obs, None)(q_disc, i)
    expected = (disc.probs(next_obs[i]) * q_disc(next_obs[i])).sum(-1)
    torch.testing.assert_close(got, expected)

    class QCont:  # Q(s, a) of a 2-dimensional action
        discrete = False

        def __call__(self, o, a):
            return o.sum(-1) * a[:, 0] + a[:, 1]
    q_cont = QCont()
    actor = nn.Sequential(nn.Linear(3, 2), nn.Tanh()).requires_grad_(False)
    cont = fqe.TargetPolicy(actor, None, 0.3, torch.tensor([-1.0, -2.0]), torch.tensor([1.0, 2.0]))
    got = fqe.next_state_values(cont, next_obs, torch.Generator().manual_seed(5))(q_cont, i)
    expected = fqe.policy_value(q_cont, cont, next_obs[i], torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, q_cont(next_obs[i], cont.mean_action(next_obs[i])))  # the noise is there

    class Shifted(fqe.TargetPolicy):  # its own sampling, asked for at every minibatch
        def sample(self, obs, generator=None):
            return self.mean_action(obs) + 1.0
    shifted = Shifted(actor, None, 0.0, torch.tensor([-9.0, -9.0]), torch.tensor([9.0, 9.0]))
    got = fqe.next_state_values(shifted, next_obs, None)(q_cont, i)
    torch.testing.assert_close(got, q_cont(next_obs[i], shifted.mean_action(next_obs[i]) + 1.0))


# ----------------------------------------------------------------------------------------------
# End to end, and bad input
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def cartpole_run(minari_root, tiny_cartpole, tmp_path):
    """A BC policy for CartPole's two discrete actions, trained for a few updates."""
    bc_discrete.train(bc_discrete.Args(dataset=tiny_cartpole, total_steps=20, eval_episodes=0, log_every=10,
                                       runs_dir=str(tmp_path / "runs"), progress=False))
    (run,) = (tmp_path / "runs").iterdir()
    return run


def cli(script: str, *flags: str, minari_root) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(minari_root)}
    return subprocess.run([sys.executable, str(ROOT / "algorithms" / script), *flags], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)


def test_ope_and_fqe_run_on_a_built_discrete_set(cartpole_run, minari_root, tmp_path):
    suite.build("stitch/cartpole/medium-v0", n_steps=2000, progress=False, workers=1)
    for behavior in ("recorded", "estimated"):
        result = ope.run(ope.Args(policy=str(cartpole_run), dataset="stitch/cartpole/medium-v0", behavior=behavior,
                                  target_epsilon=0.1, fqe_steps=200, bc_steps=200, device="cpu",
                                  out=str(tmp_path / f"{behavior}.json")))
        assert set(result["estimates"]) == {*ope.ESTIMATORS, "fqe"}
        assert all(np.isfinite(e["value"]) and e["normalized"] is not None for e in result["estimates"].values())
        assert (tmp_path / f"{behavior}.json").is_file()
    result = fqe.train(fqe.Args(policy=str(cartpole_run), dataset="stitch/cartpole/medium-v0", total_steps=200,
                                device="cpu"))
    assert np.isfinite(result["value"]) and result["normalized"] is not None


def test_recorded_behavior_on_a_dataset_without_it_is_one_line(cartpole_run, minari_root, tiny_cartpole):
    with pytest.raises(DatasetError, match="records no behaviour probabilities.*--behavior estimated"):
        ope.run(ope.Args(policy=str(cartpole_run), dataset=tiny_cartpole, fqe_steps=0, device="cpu"))
    proc = cli("ope.py", "--policy", str(cartpole_run), "--dataset", tiny_cartpole, "--fqe-steps", "0",
               minari_root=minari_root)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "records no behaviour probabilities" in proc.stderr


def test_a_policy_for_another_action_space_is_one_line(cartpole_run, minari_root, tiny_hopper):
    with pytest.raises(CheckpointError, match="acts with 2 discrete actions, but test/hopper/tiny-v0 has "
                                              "3-dimensional continuous actions"):
        ope.run(ope.Args(policy=str(cartpole_run), dataset=tiny_hopper, behavior="estimated", device="cpu"))
    for script in ("ope.py", "fqe.py"):
        proc = cli(script, "--policy", str(cartpole_run), "--dataset", tiny_hopper, minari_root=minari_root)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0 and "acts with 2 discrete actions" in proc.stderr, proc.stderr


def test_a_folder_that_is_not_a_run_is_one_line(minari_root, tiny_cartpole, tmp_path):
    with pytest.raises(CheckpointError, match="no such run folder"):
        fqe.train(fqe.Args(policy=str(tmp_path / "nowhere"), dataset=tiny_cartpole, device="cpu"))


# ----------------------------------------------------------------------------------------------
# The DOPE-style benchmark
# ----------------------------------------------------------------------------------------------
def test_benchmark_metrics():
    from benchmarks import ope_benchmark
    truth = np.array([1.0, 2.0, 3.0, 5.0])
    s = ope_benchmark.summarize(truth, {"a": np.array([1.5, 2.0, 3.0, 4.0]), "b": np.array([4.0, 3.0, 2.0, 1.0])})
    assert s["a"] == {"abs_error": pytest.approx(0.375), "median_abs_error": pytest.approx(0.25),
                      "rank_correlation": pytest.approx(1.0), "regret@1": 0.0}
    assert s["b"]["rank_correlation"] == pytest.approx(-1.0)
    assert s["b"]["regret@1"] == pytest.approx((5.0 - 1.0) / 4.0)


def test_benchmark_runs_end_to_end_on_a_discrete_set(minari_root, tmp_path):
    from benchmarks import ope_benchmark
    suite.build("stitch/cartpole/medium-v0", n_steps=2000, progress=False, workers=1)
    result = ope_benchmark.main(["--dataset", "stitch/cartpole/medium-v0", "--snapshots", "1", "--true-episodes", "2",
                                 "--fqe-steps", "50", "--out", str(tmp_path / "ope")])
    assert [r["policy"] for r in result["policies"]][:2] == ["expert", "medium"]
    assert set(result["summary"]) == set(ope_benchmark.ESTIMATORS)
    for suffix in ("json", "md", "png"):
        assert (tmp_path / "ope" / f"stitch_cartpole_medium-v0.{suffix}").stat().st_size > 0
    # --render rewrites the table and plot from the JSON alone, to the same table
    md = tmp_path / "ope" / "stitch_cartpole_medium-v0.md"
    table = md.read_text()
    md.unlink()
    ope_benchmark.main(["--render", str(tmp_path / "ope" / "stitch_cartpole_medium-v0.json")])
    assert md.read_text() == table
    with pytest.raises(SystemExit, match="error: --render .*nothing.json"):
        ope_benchmark.main(["--render", str(tmp_path / "nothing.json")])
    with pytest.raises(SystemExit, match="error: --dataset is required"):
        ope_benchmark.main([])


def test_benchmark_labels_runs_without_their_time_stamp():
    from benchmarks import ope_benchmark
    assert ope_benchmark.run_label("/x/runs/iql__stitch-hopper-medium-v0__s1__20261207-145528-515e") == \
        "iql__stitch-hopper-medium-v0__s1"
    assert ope_benchmark.run_label("expert") == "expert"


@pytest.mark.parametrize("dataset_id, policy", [("stitch/cartpole/expert-v0", "expert"),
                                                ("stitch/hopper/medium-v0", "medium")])
def test_the_behaviour_evaluated_on_its_own_data_has_ratio_one(dataset_id, policy, minari_root):
    """The benchmark's snapshot of the data's own behaviour: pi = mu at every logged action (up to float rounding),
    so every estimator is the data's mean discounted return."""
    from benchmarks import ope_benchmark
    suite.build(dataset_id, n_steps=1500, progress=False, workers=1)
    data = load_dataset(dataset_id)
    target = ope_benchmark.snapshot_policies(dataset_id.split("/")[1], data, 0.05, 0)[policy]
    log_ratio = ope.target_log_prob(target, data, torch.device("cpu")) - ope.recorded_behavior(data)
    inside = np.ones(len(data), bool) if data.n_actions else (np.abs(data.actions) < 0.999).all(1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(log_ratio[inside], 0.0, atol=2e-3 if data.n_actions is None else 1e-6)
    if data.n_actions:  # exact up to float32 rounding: all estimators are the data's mean discounted return
        rewards = ope.per_episode(data.rewards.astype(np.float64), data)
        mean_return = (rewards * 0.99 ** np.arange(rewards.shape[1])).sum(1).mean()
        for name, value in ope.ope_estimates(rewards, ope.per_episode(log_ratio, data), 0.99).items():
            assert value == pytest.approx(mean_return, rel=1e-4), name


def test_ope_and_fqe_run_on_a_built_continuous_set(minari_root, tmp_path):
    from algorithms import bc
    suite.build("stitch/hopper/medium-v0", n_steps=1500, progress=False, workers=1)
    bc.train(bc.Args(dataset="stitch/hopper/medium-v0", total_steps=20, eval_episodes=0, log_every=10,
                     runs_dir=str(tmp_path / "runs"), progress=False))
    (run,) = (tmp_path / "runs").iterdir()
    for behavior in ("recorded", "estimated"):
        result = ope.run(ope.Args(policy=str(run), dataset="stitch/hopper/medium-v0", behavior=behavior,
                                  fqe_steps=50, bc_steps=50, device="cpu"))
        assert set(result["estimates"]) == {*ope.ESTIMATORS, "fqe"}
        assert all(np.isfinite(result["estimates"][k]["value"]) for k in ("wis", "wpdis", "wdr", "fqe"))
    result = fqe.train(fqe.Args(policy=str(run), dataset="stitch/hopper/medium-v0", total_steps=50, target_std=0.1,
                                device="cpu"))
    assert np.isfinite(result["value"]) and result["normalized"] is not None


def test_target_policy_acts_on_large_batches_in_chunks():
    """A whole dataset goes through the policy 1024 rows at a time (SPIBB's policy holds a [B, N] matrix)."""
    from algorithms.fqe import TargetPolicy

    sizes = []

    class Greedy(torch.nn.Module):
        def forward(self, obs):
            sizes.append(len(obs))
            return (obs[:, 0] > 0).long()

    obs = torch.randn(2500, 3)
    target = TargetPolicy(module=Greedy(), n_actions=2, noise=0.0)
    probs = target.probs(obs)
    assert sizes == [1024, 1024, 452]
    assert torch.equal(probs.argmax(-1), (obs[:, 0] > 0).long())


def test_benchmark_summary_over_datasets(tmp_path):
    from benchmarks import ope_benchmark
    def result(dataset, truth, est):  # every estimator gives `est`
        summary = ope_benchmark.summarize(np.array(truth), {k: np.array(est) for k in ope_benchmark.ESTIMATORS})
        return {"dataset": dataset, "summary": summary,
                "policies": [{"true": {"value": j}, "estimates": dict.fromkeys(ope_benchmark.ESTIMATORS, e)}
                             for j, e in zip(truth, est)]}
    for name, r in (("a", result("stitch/x/a-v0", [0.0, 10.0, 20.0], [1.0, 12.0, 23.0])),
                    ("b", result("stitch/x/b-v0", [0.0, 1.0, 2.0], [2.0, 1.0, 0.0]))):
        (tmp_path / f"{name}.json").write_text(json.dumps(r))
    out = tmp_path / "summary.md"
    ope_benchmark.main(["--summary", str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--out", str(out)])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| stitch/x/")]
    assert rows[0].startswith("| stitch/x/a-v0 | 3 | 1.00 |") and rows[1].startswith("| stitch/x/b-v0 | 3 | -1.00 |")
    assert rows[2].startswith("| stitch/x/a-v0 | 3 | 0.00 |") and rows[3].startswith("| stitch/x/b-v0 | 3 | 1.00 |")
    assert rows[4].startswith("| stitch/x/a-v0 | 3 | 0.1 |") and rows[5].startswith("| stitch/x/b-v0 | 3 | 1 |")
    assert "is 0.00" in text.splitlines()[-1]  # mean rank correlation of 1 and -1
    with pytest.raises(SystemExit, match="ending .md"):
        ope_benchmark.main(["--summary", str(tmp_path / "a.json"), "--out", str(tmp_path / "x")])
