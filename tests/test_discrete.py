"""The discrete datasets of the stitch suite (CartPole-v1, Acrobot-v1 from DQN policies) and benchmarks/suite/dqn.py.

Small builds: tiny untrained Q networks with a manifest shaped like select_policies.py's, and a few hundred
steps of the shipped policies where real episodes matter (time limits).
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch

from benchmarks.suite import build as suite
from benchmarks.suite import dqn, select_policies
from benchmarks.suite.behavior import GaussianActor, save_actor
from conftest import kill_at_call
from common.data import load_dataset
from common.evaluation import evaluate

REF_MIN, REF_MAX = 20.0, 480.0
REPLAY_EPSILONS = {1000: 0.9, 1500: 0.6, 2000: 0.3}


def make_tiny_dqn_policies(policy_dir: Path, env_id: str = "CartPole-v1") -> dict:
    """Untrained Q networks and a DQN manifest: a 500-step warm-up, a snapshot every 500 steps,
    medium = step 2000, expert = step 3000, medium-replay = warm-up + snapshots 1000, 1500, 2000."""
    env = gym.make(env_id)
    obs_dim, n_actions = env.observation_space.shape[0], int(env.action_space.n)
    (policy_dir / "replay").mkdir(parents=True)

    def qnet(step: int, path: str) -> dict:
        torch.manual_seed(step)
        dqn.save_qnet(policy_dir / path, dqn.QNetwork(obs_dim, n_actions, (16,)), env_id, step)
        return {"file": path, "step": step}

    manifest = {"env_id": env_id, "algorithm": "DQN", "snapshot_every": 500, "learning_starts": 500,
                "ref_min_score": REF_MIN, "ref_max_score": REF_MAX, "behaviour_epsilon": 0.05, "episodes": 100,
                "expert": qnet(3000, "expert.pt"), "medium": qnet(2000, "medium.pt"),
                "replay": [{**qnet(s, f"replay/actor_{s:08d}.pt"), "epsilon": e} for s, e in REPLAY_EPSILONS.items()]}
    (policy_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cartpole_policies")
    make_tiny_dqn_policies(path)
    return path


@pytest.fixture(scope="module")
def acrobot_policies(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("acrobot_policies")
    make_tiny_dqn_policies(path, "Acrobot-v1")
    return path


def episodes(dataset_id: str) -> list[dict]:
    ds = minari.load_dataset(dataset_id)
    return [{k: np.asarray(getattr(ep, k)) for k in ("observations", "actions", "rewards", "terminations",
                                                      "truncations")} for ep in ds.iterate_episodes()]


def check_episode_ends(eps: list[dict], limit: int = 500) -> None:
    """One flag, at the last step only; a full-length episode is a time-limit truncation, a shorter one a
    termination, except the stream's last episode, which may be cut (truncated) at the step budget."""
    for i, ep in enumerate(eps):
        n = len(ep["rewards"])
        assert not (ep["terminations"][:-1] | ep["truncations"][:-1]).any()
        assert ep["terminations"][-1] != ep["truncations"][-1], "exactly one of the flags at the end"
        if n == limit:
            assert ep["truncations"][-1], "the 500-step time limit is a truncation"
        elif i < len(eps) - 1:
            assert ep["terminations"][-1], f"episode {i} ({n} steps) ended early: a termination"


# ----------------------------------------------------------------------------------------------
# The DQN trainer
# ----------------------------------------------------------------------------------------------

class FixedQ(torch.nn.Module):
    def __init__(self, values: list[list[float]]):
        super().__init__()
        self.values = torch.tensor(values)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.values[: len(obs)]


def test_double_dqn_target_and_td_loss_by_hand():
    q, q_target = FixedQ([[1.0, 3.0], [5.0, 2.0], [0.0, 1.0]]), FixedQ([[10.0, 20.0], [30.0, 40.0], [7.0, 9.0]])
    # the online net picks a* = (1, 0, 1), the target net values them (20, 30, 9, not its own max 40 for the
    # second); the third step terminated: no bootstrap
    y = dqn.double_dqn_target(q, q_target, torch.tensor([1.0, 2.0, 3.0]), torch.zeros(3, 4),
                              torch.tensor([0.0, 0.0, 1.0]), 0.5)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * 20.0, 2.0 + 0.5 * 30.0, 3.0]))
    # Q(s, a) = 3 (a = 1) and 5 (a = 0) against y = 3.5 and 2: squared errors 0.25 and 9, mean
    loss = dqn.td_loss(q, torch.zeros(2, 4), torch.tensor([1, 0]), torch.tensor([3.5, 2.0]))
    assert float(loss) == pytest.approx((0.25 + 9.0) / 2)


def test_epsilon_schedule_and_epsilon_greedy_actions():
    args = {"learning_starts": 100, "total_steps": 1000, "exploration_fraction": 0.5, "start_e": 1.0, "end_e": 0.1}
    assert dqn.epsilon_at(0, args) == dqn.epsilon_at(99, args) == 1.0  # warm-up: uniform
    assert dqn.epsilon_at(250, args) == pytest.approx(1.0 - 0.9 * 250 / 500)
    assert dqn.epsilon_at(500, args) == dqn.epsilon_at(999, args) == pytest.approx(0.1)

    policy = dqn.EpsilonGreedy(FixedQ([[0.0, 1.0, 0.5]] * 4), epsilon=0.3)
    u = torch.tensor([[0.29, 0.0], [0.29, 0.99], [0.31, 0.0], [0.9, 0.5]])
    assert policy.act(torch.zeros(4, 2), u).tolist() == [0, 2, 1, 1]  # coin below epsilon: u[:, 1] picks
    assert policy.act(torch.zeros(4, 2), u, deterministic=True).tolist() == [1, 1, 1, 1]
    assert dqn.uniform_action(torch.tensor([0.0, 0.3334, 0.6667, 0.99999994]), 3).tolist() == [0, 1, 2, 2]
    with pytest.raises(ValueError, match="epsilon"):
        dqn.EpsilonGreedy(FixedQ([[0.0]]), 1.5)


def test_trainer_writes_snapshots_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    args = dqn.Args(env="CartPole-v1", out=str(out), total_steps=800, learning_starts=200, buffer_size=300,
                    batch_size=16, train_frequency=2, target_network_frequency=50, snapshot_every=200,
                    snapshot_eval_episodes=1, checkpoint_every=400, hidden=(16,))
    # killed in the third snapshot's evaluation, at step 600, after the checkpoint at 400
    kill_at_call(monkeypatch, dqn, "evaluate", 3)
    with pytest.raises(KeyboardInterrupt):
        dqn.main(args)
    monkeypatch.undo()
    assert not (out / "snapshots" / "actor_00000600.pt").exists()
    dqn.main(args)  # the same command continues from step 400
    assert "resumed" in capsys.readouterr().out
    index = [json.loads(line) for line in (out / "snapshots" / "index.jsonl").read_text().splitlines()]
    assert [r["step"] for r in index] == [200, 400, 600, 800]
    assert [r["epsilon"] for r in index] == [dqn.epsilon_at(s, args) for s in (200, 400, 600, 800)]
    assert np.isnan(index[0]["loss"]) and np.isfinite(index[-1]["loss"]), "no update during the warm-up"
    q, meta = dqn.load_qnet(out / "snapshots" / "actor_00000800.pt")
    assert (meta["env_id"], meta["step"], meta["n_actions"], q.obs_dim) == ("CartPole-v1", 800, 2, 4)

    # select_policies.py turns the run into a DQN policy folder with the schedule's epsilons
    select_policies.main(select_policies.Args(run=str(out), env="cartpole", expert_step=800, medium_step=600,
                                              episodes=4, out=str(tmp_path / "policies")))
    manifest = json.loads((tmp_path / "policies" / "manifest.json").read_text())
    assert manifest["algorithm"] == "DQN" and manifest["behaviour_epsilon"] == args.end_e
    assert [e["step"] for e in manifest["replay"]] == [400, 600]
    # snapshot 400 stands for steps 200..399, 600 for 400..599: the schedule's mean epsilon over each
    eps = [np.mean([dqn.epsilon_at(t, args) for t in range(a, a + 200)]) for a in (200, 400)]
    assert [e["epsilon"] for e in manifest["replay"]] == pytest.approx(eps, abs=1e-6)
    assert 1.0 > eps[0] > eps[1]


def test_medium_pool_works_with_negative_returns():
    """Acrobot's returns run from -500 (random) up to about -80: the expert level is measured from the random
    policy's return, not as a fraction of the expert's own (0.9 x -80 = -72 is never reached)."""
    evals = {10: -500, 20: -400, 30: -250, 40: -120, 50: -300, 60: -80}
    index = {s: {"eval_mean": v} for s, v in evals.items()}
    # -500 + 0.9 * (-80 + 500) = -122: first reached at step 40
    assert select_policies.medium_pool(index, expert_step=60, expert_level=0.9, n=2, floor=-500.0) == [20, 30]
    with pytest.raises(ValueError):
        select_policies.medium_pool(index, expert_step=60, expert_level=0.9, n=2)  # no floor: nothing reaches -72


def test_trainer_rejects_bad_input(tmp_path):
    with pytest.raises(SystemExit, match="Discrete"):
        dqn.main(dqn.Args(env="Pendulum-v1", out=str(tmp_path / "p"), total_steps=10, learning_starts=0))
    with pytest.raises(SystemExit, match="--learning-starts"):
        dqn.main(dqn.Args(out=str(tmp_path / "q"), total_steps=10, learning_starts=10))
    with pytest.raises(SystemExit, match="--end-e"):
        dqn.main(dqn.Args(out=str(tmp_path / "q"), end_e=0.5, start_e=0.1))


# ----------------------------------------------------------------------------------------------
# Builds
# ----------------------------------------------------------------------------------------------

def test_build_is_deterministic_and_well_formed(minari_root, policies):
    dataset_id = "stitch/cartpole/medium-v0"
    data_file = suite.dataset_dir(dataset_id) / "data" / "main_data.hdf5"
    suite.build(dataset_id, n_steps=1200, policy_dir=policies, progress=False, workers=1)
    first, first_bytes = episodes(dataset_id), data_file.read_bytes()
    suite.build(dataset_id, n_steps=1200, policy_dir=policies, progress=False, workers=1, force=True)
    assert data_file.read_bytes() == first_bytes, "the same build, the same file"
    suite.build(dataset_id, n_steps=1200, policy_dir=policies, progress=False, workers=1, force=True, seed=1)
    assert data_file.read_bytes() != first_bytes, "another seed, other episodes"

    assert sum(len(ep["rewards"]) for ep in first) == 1200 and len(first) > 10
    for ep in first:
        n = len(ep["rewards"])
        assert ep["observations"].shape == (n + 1, 4) and ep["observations"].dtype == np.float32
        assert ep["actions"].shape == (n,) and ep["actions"].dtype == np.int64
        assert ep["actions"].min() >= 0 and ep["actions"].max() <= 1
    check_episode_ends(first)
    actions = np.concatenate([ep["actions"] for ep in first])
    assert 0.0 < actions.mean() < 0.2 or 0.8 < actions.mean() < 1.0, "mostly the greedy action, ε = 0.05"

    meta = minari.load_dataset(dataset_id).storage.metadata
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (REF_MIN, REF_MAX)
    stats = meta["stitch"]
    assert stats["epsilons"] == {"medium": 0.05} and stats["algorithm"] == "DQN"
    assert stats["policy"] == "DQN step 2,000 (medium.pt), ε-greedy (ε = 0.05)"
    assert sum(stats["episode_ends"].values()) == stats["episodes"] == len(first)

    data = load_dataset(dataset_id)  # what the algorithms see
    assert data.actions.dtype == np.int64 and data.actions.ndim == 1 and data.act_dim == 1
    assert data.terminals.sum() == stats["episode_ends"]["terminated"]
    assert data.normalized_score([REF_MAX]) == pytest.approx([100.0])


def test_a_level_is_its_group_tasks_episodes(minari_root, policies, monkeypatch):
    """What a worker process runs (`_run_task`) for each lockstep group, in order, cut at the budget: the
    epsilon reaches the workers with the task, so any number of workers gives these arrays."""
    monkeypatch.setattr(suite, "GROUP_STEPS", 400)  # 1200 steps: 3 groups
    monkeypatch.setattr(suite, "GROUP_ENVS", 4)
    dataset_id = "stitch/cartpole/expert-v0"
    suite.build(dataset_id, n_steps=1200, policy_dir=policies, progress=False, workers=1)
    built = episodes(dataset_id)
    manifest = json.loads((policies / "manifest.json").read_text())
    plan = suite._plan("expert", manifest, policies, 1200)
    tasks = suite._group_tasks("CartPole-v1", plan, 0, suite._stream_epsilons(plan, manifest))
    assert [(t.group, t.n_steps, t.n_envs, t.epsilon) for t in tasks] == [(g, 400, 4, 0.05) for g in range(3)]
    expected = [ep for task in tasks for ep in suite._run_task(task)]
    suite._close_envs()
    assert len(built) > 10 and sum(len(ep["rewards"]) for ep in built) == 1200
    for a, b in zip(built, expected):
        np.testing.assert_array_equal(a["observations"], b.observations[:len(a["observations"])])
        np.testing.assert_array_equal(a["actions"], b.actions[:len(a["actions"])])


def test_random_level_is_uniform_and_medium_replay_follows_the_dqn_run(minari_root, policies, acrobot_policies):
    suite.build("stitch/acrobot/random-v0", n_steps=3000, policy_dir=acrobot_policies, progress=False, workers=1)
    eps = episodes("stitch/acrobot/random-v0")
    actions = np.concatenate([ep["actions"] for ep in eps])
    assert actions.dtype == np.int64 and set(np.unique(actions)) == {0, 1, 2}
    assert np.abs(np.bincount(actions) / len(actions) - 1 / 3).max() < 0.03
    check_episode_ends(eps)
    assert any(len(ep["rewards"]) == 500 for ep in eps), "random Acrobot episodes run into the time limit"

    suite.build("stitch/cartpole/medium-replay-v0", policy_dir=policies, progress=False, workers=1)
    manifest = json.loads((policies / "manifest.json").read_text())
    plan = suite._plan("medium-replay", manifest, policies, None)
    assert [(stream, steps) for stream, _, steps in plan] == [
        ("medium-replay/warmup", 500), ("medium-replay/1000", 500), ("medium-replay/1500", 500),
        ("medium-replay/2000", 500)]
    assert suite._stream_epsilons(plan, manifest) == {f"medium-replay/{s}": e for s, e in REPLAY_EPSILONS.items()}
    stats = minari.load_dataset("stitch/cartpole/medium-replay-v0").storage.metadata["stitch"]
    assert stats["steps"] == 2000 and stats["epsilons"] == {f"medium-replay/{s}": e for s, e in REPLAY_EPSILONS.items()}
    # each snapshot's stream is its epsilon-greedy rollouts: epsilon 0.9 acts nearly uniformly, 0.05 not
    tasks = suite._group_tasks("CartPole-v1", plan, 0, suite._stream_epsilons(plan, manifest))
    assert [t.epsilon for t in tasks] == [None, 0.9, 0.6, 0.3]
    envs = suite.make_envs("CartPole-v1")
    q = dqn.load_qnet(policies / "replay" / "actor_00001000.pt")[0]
    fractions = []
    for eps_ in (0.9, 0.05):
        group = suite.run_group(envs, dqn.EpsilonGreedy(q, eps_), seed=0, stream="s", group=0, n_steps=2000)
        acts = np.concatenate([ep.actions for ep in group])
        greedy = np.concatenate([q(torch.from_numpy(ep.observations[:-1])).argmax(-1).numpy() for ep in group])
        fractions.append((acts != greedy).mean())
    assert fractions[0] == pytest.approx(0.45, abs=0.05) and fractions[1] == pytest.approx(0.025, abs=0.02)


def test_shipped_policies_end_episodes_with_the_right_flags(minari_root):
    """The shipped experts: CartPole balances to the 500-step time limit (truncations), Acrobot swings up
    in well under 500 steps (terminations); their datasets evaluate with discrete actions."""
    for env_name in ("cartpole", "acrobot"):
        manifest = suite.load_manifest(suite.ENVS[env_name].policy_dir)
        assert manifest["algorithm"] == "DQN" and manifest["episodes"] == 100
        assert manifest["ref_min_score"] < manifest["medium"]["stochastic"]["mean"] < manifest["ref_max_score"]
    suite.build("stitch/cartpole/expert-v0", n_steps=1500, progress=False, workers=1)
    suite.build("stitch/acrobot/expert-v0", n_steps=600, progress=False, workers=1)
    cartpole, acrobot = episodes("stitch/cartpole/expert-v0"), episodes("stitch/acrobot/expert-v0")
    check_episode_ends(cartpole)
    check_episode_ends(acrobot)
    assert sum(ep["truncations"][-1] and len(ep["rewards"]) == 500 for ep in cartpole) >= 2
    assert sum(ep["terminations"][-1] for ep in acrobot) >= 4
    data = load_dataset("stitch/acrobot/expert-v0")
    assert data.ref_min_score < -400 and data.ref_max_score > -100
    assert data.actions.min() >= 0 and data.actions.max() <= 2

    q = dqn.load_qnet(suite.ENVS["acrobot"].policy_dir / "expert.pt")[0]
    returns = evaluate(lambda obs: q(torch.from_numpy(obs)).argmax(-1).numpy(), data.env_spec, episodes=3)
    assert data.normalized_score(returns).mean() > 80


def test_bad_input_is_a_clear_error(minari_root, policies, tmp_path):
    with pytest.raises(ValueError, match="stitch/cartpole/medium-expert-v0") as err:
        suite.build("stitch/cartpole/medium-expert-v0", n_steps=100, policy_dir=policies, progress=False, workers=1)
    assert "stitch/cartpole/medium-replay-v0" in str(err.value)
    with pytest.raises(ValueError, match="CartPole-v1, not Acrobot-v1"):
        suite.build("stitch/acrobot/medium-v0", n_steps=100, policy_dir=policies, progress=False, workers=1)
    bad = tmp_path / "bad"
    make_tiny_dqn_policies(bad)
    save_actor(bad / "medium.pt", GaussianActor(4, 1, 8), "CartPole-v1", 2000)  # a SAC actor where a DQN belongs
    with pytest.raises(ValueError, match="not a DQN policy"):
        suite.build("stitch/cartpole/medium-v0", n_steps=100, policy_dir=bad, progress=False, workers=1)
    assert not suite.is_built("stitch/cartpole/medium-v0")


def test_list_and_cards(minari_root, policies, tmp_path, capsys):
    suite.build("stitch/cartpole/medium-replay-v0", policy_dir=policies, progress=False, workers=1)
    suite.main(["--list"])
    listing = capsys.readouterr().out
    for level in ("random", "medium", "medium-replay", "expert"):
        assert f"stitch/cartpole/{level}-v0" in listing and f"stitch/acrobot/{level}-v0" in listing
    cards = suite.write_cards(tmp_path / "DATASETS.md").read_text()
    row = next(line for line in cards.splitlines() if line.startswith("| `stitch/cartpole/medium-replay-v0` | 500"))
    assert "3 DQN snapshots" in row and "ε-greedy" in row and f"{REF_MAX:.1f}" in row
    assert "## Discrete tasks" in cards
    ends = suite.info("stitch/cartpole/medium-replay-v0")["episode_ends"]
    assert ends["time_limit"] == 0 and 3 <= ends["cut"] <= 4, "streams of 500 steps, cut at their budgets"
    row = next(line for line in cards.splitlines() if line.startswith("| `stitch/cartpole/medium-replay-v0` | 0.30"))
    assert row == (f"| `stitch/cartpole/medium-replay-v0` | 0.30-0.90 (+ uniform warm-up) | {ends['terminated']:,} | "
                   f"0 | {ends['cut']} |")
