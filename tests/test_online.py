"""Offline-to-online fine-tuning (--online-steps): common/online.py's environment, and the scripts' online phase.

The online phase appends what the environment returned and trains on it; an offline run (--online-steps 0) is what
it was (no environment, no online generator, the same updates); a run killed inside the online phase, or just
before it, and resumed ends bit-identical to one never interrupted (the running episode restored by replaying its
actions from its seeded reset); data without an environment is refused in one line.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import common.online
from common.checkpoints import load_checkpoint
from common.data import DatasetError, load_dataset
from common.online import OnlineEnv, online_seed
from conftest import kill_at_call, make_dataset
from test_resume import ROOT, assert_same_state

SCRIPTS = ["cal_ql", "cql", "iql", "awac"]  # the scripts with an online phase


def script(name: str):
    return importlib.import_module(f"algorithms.{name}")


def args_for(name: str, dataset: str, runs: Path, **kw):
    settings = dict(dataset=dataset, total_steps=100, online_steps=120, eval_every=50, eval_episodes=2, log_every=25,
                    batch_size=32, hidden_dim=32, checkpoint_every=30, runs_dir=str(runs), progress=False)
    fields = {f.name for f in dataclasses.fields(script(name).Args)}
    if "bc_steps" in fields:
        settings["bc_steps"] = 20
    return script(name).Args(**(settings | kw))


def only(runs: Path) -> Path:
    (run,) = [p for p in runs.iterdir() if p.is_dir()]
    return run


# ----------------------------------------------------------------------------------------------
# common/online.py
# ----------------------------------------------------------------------------------------------
def test_online_env_episodes_regret_and_exact_replay(tiny_hopper):
    data = load_dataset(tiny_hopper)
    env = OnlineEnv(data, seed=3, score=lambda r: float(r[0]))  # "score" = return, to check the regret by hand
    first = env.obs.copy()
    rng = np.random.default_rng(0)
    ended = []
    for _ in range(150):  # episodes of random actions end by falling (terminated) or at 100 steps (truncated)
        obs, r, next_obs, term, end = env.step(rng.uniform(-1, 1, 3))
        if end:
            ended.append(end)
    assert ended and env.episode == len(ended) and env.env_steps == 150
    assert sum(e["length"] for e in ended) + len(env.actions) == 150
    success = [min(max(e["return"] / 100, 0), 1) for e in ended]
    assert env.regret() == pytest.approx(np.mean([1 - s for s in success]))
    # episode 0 was reset with online_seed(3, 0): a fresh environment reset with it starts where the run started
    env2 = OnlineEnv(data, seed=3, score=lambda r: None)
    np.testing.assert_array_equal(env2.obs, first)
    assert online_seed(3, 0) != online_seed(3, 1) != online_seed(4, 0)

    # restore mid-episode by replay, then both go on identically
    assert env.actions, "the test needs a running episode"
    state = env.state_dict()
    restored = OnlineEnv(data, seed=3, score=lambda r: float(r[0]))
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.obs, env.obs)
    assert restored.episode_return == env.episode_return and restored.env_steps == env.env_steps
    for _ in range(60):
        a = rng.uniform(-1, 1, 3)
        x, y = env.step(a), restored.step(a)
        np.testing.assert_array_equal(x[2], y[2])
        assert x[1] == y[1] and x[3] == y[3] and x[4] == y[4]

    # a replay that does not reach the saved observation is refused
    state["obs"] = state["obs"] + 1
    with pytest.raises(DatasetError, match="did not reach the saved observation"):
        OnlineEnv(data, seed=3, score=lambda r: None).load_state_dict(state)


class LineGoal(gym.Env):
    """x on a line from 0; the goal is x >= 1 (info["success"], as PointMaze reports it); 5 steps per episode."""
    observation_space = gym.spaces.Box(-10.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x, self.t = self.x + float(action[0]) * 0.5, self.t + 1
        return np.array([self.x], np.float32), float(self.x >= 1), False, self.t >= 5, {"success": self.x >= 1}


def test_regret_on_a_goal_task_is_corls_mean_of_failures():
    gym.register("StitchLineGoal-v0", entry_point=LineGoal)
    data = SimpleNamespace(env_spec=gym.spec("StitchLineGoal-v0"), dataset_id="test/line-v0")
    env = OnlineEnv(data, seed=0, score=lambda r: 50.0)  # a score that would say 0.5 if it were used
    for action in [1, 1, 0, 0, 0] + [-1] * 5 + [1] * 5:  # reaches the goal, fails, reaches it
        env.step(np.array([action], np.float32))
    assert [e["success"] for e in env.finished] == [1.0, 0.0, 1.0]
    assert env.regret() == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------------------------
# The scripts' online phase
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SCRIPTS)
def test_online_phase_appends_transitions_and_reports_along_env_steps(name, tiny_hopper, tmp_path):
    args = args_for(name, tiny_hopper, tmp_path / "runs")
    result = script(name).train(args)
    run = only(tmp_path / "runs")
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["step"] == 100 + 120 and result["steps"] == 220
    online = result["online"]
    assert online["env_steps"] == 120 and online["episodes"]
    # the appended rows are the environment's transitions: per finished episode, their rewards sum to its return
    rows = ckpt["online_buffer"] if "online_buffer" in ckpt else ckpt["buffer"]  # its own buffer, or the data's
    assert rows["rewards"].shape[0] == 120 and rows["size"] == rows["rows_from"] + 120
    start, scale = 0, ckpt.get("reward_scale", 1.0)  # rewards stored as the script trains on them
    for e in online["episodes"]:
        assert float(rows["rewards"][start:start + e["length"]].double().sum()) == pytest.approx(e["return"] * scale)
        start += e["length"]
    assert float(rows["dones"].sum()) == sum(1 for e in online["episodes"] if e["length"] < 100)  # terminations only
    if "online_mc" in ckpt:  # Cal-QL: finished episodes carry their MC returns, the running one no bound
        assert torch.isfinite(ckpt["online_mc"][:start]).all() and torch.isinf(ckpt["online_mc"][start:]).all()
    # evaluations along environment steps; the offline score is the one at the switch
    assert [(e["step"], e["env_step"]) for e in result["evals"]] == [(50, 0), (100, 0), (150, 50), (200, 100),
                                                                     (220, 120)]
    assert online["offline_score"] == result["evals"][1]["score"]
    regrets = [json.loads(line).get("online/regret") for line in (run / "metrics.jsonl").read_text().splitlines()]
    regrets = [r for r in regrets if r is not None]
    assert len(regrets) == len(online["episodes"]) and regrets[-1] == pytest.approx(online["regret"])
    assert 0.0 <= online["regret"] <= 1.0


@pytest.mark.parametrize("name", SCRIPTS)
def test_online_data_changes_what_is_sampled(name, tiny_hopper, tmp_path, monkeypatch):
    """The same run with the online rows never sampled ends with other weights: the online phase trains on what it
    collected. Never sampled: Cal-QL with mixing ratio 1 (every row from the data); the one-buffer scripts with
    `Buffer.add` doing nothing (the same environment steps, nothing appended)."""
    import common.buffer

    script(name).train(args_for(name, tiny_hopper, tmp_path / "a", eval_episodes=0))
    if "mixing_ratio" in {f.name for f in dataclasses.fields(script(name).Args)}:
        script(name).train(args_for(name, tiny_hopper, tmp_path / "b", eval_episodes=0, mixing_ratio=1.0))
    else:
        monkeypatch.setattr(common.buffer.Buffer, "add", lambda self, *transition: None)
        script(name).train(args_for(name, tiny_hopper, tmp_path / "b", eval_episodes=0))
    qa, qb = (load_checkpoint(only(tmp_path / d) / "checkpoint.pt") for d in ("a", "b"))
    assert qa["online_env"]["env_steps"] == qb["online_env"]["env_steps"] == 120
    assert any(not torch.equal(qa["policy"][k], qb["policy"][k]) for k in qa["policy"])


@pytest.mark.parametrize("name", SCRIPTS)
def test_offline_only_makes_no_environment_and_matches_the_online_runs_offline_part(name, tiny_hopper, tmp_path,
                                                                                     monkeypatch):
    online = script(name).train(args_for(name, tiny_hopper, tmp_path / "online"))

    def refuse(*a, **k):
        raise AssertionError("an offline run made an online environment")

    monkeypatch.setattr(script(name), "OnlineEnv", refuse)
    offline = script(name).train(args_for(name, tiny_hopper, tmp_path / "offline", online_steps=0))
    ckpt = load_checkpoint(only(tmp_path / "offline") / "checkpoint.pt")
    assert not {"online_env", "online_buffer", "explore_rng"} & set(ckpt) and "online" not in offline
    if name == "iql":  # its actor's cosine decay spans the whole run (offline + online): other offline updates
        return
    # the first 100 updates are the same updates: the same evaluations at 50 and 100
    assert offline["evals"] == [{k: v for k, v in e.items() if k != "env_step"} for e in online["evals"][:2]]


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("kill_at_env_step", [5, 75], ids=["across-the-switch", "inside-online"])
def test_killed_and_resumed_matches_an_uninterrupted_run(name, kill_at_env_step, tiny_hopper, tmp_path,
                                                         monkeypatch):
    """Killed at the n-th environment step (checkpoints every 30 updates: the last at update 90, offline, or 150,
    mid-episode online), resumed: the same final checkpoint, evaluations and metrics as a run never interrupted."""
    clean = script(name).train(args_for(name, tiny_hopper, tmp_path / "clean"))
    real_step = common.online.OnlineEnv.step
    kill_at_call(monkeypatch, common.online.OnlineEnv, "step", kill_at_env_step)
    with pytest.raises(KeyboardInterrupt):
        script(name).train(args_for(name, tiny_hopper, tmp_path / "killed"))
    monkeypatch.setattr(common.online.OnlineEnv, "step", real_step)  # (undo() would also drop the Minari root)
    run = only(tmp_path / "killed")
    at_kill = load_checkpoint(run / "checkpoint.pt")
    assert at_kill["step"] == (90 if kill_at_env_step == 5 else 150)
    if kill_at_env_step == 75:
        assert len(at_kill["online_env"]["actions"]) > 0, "the test needs a checkpoint inside an episode"
    resumed = script(name).train(script(name).Args(resume=str(run), progress=False))

    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(only(tmp_path / "clean") / "checkpoint.pt")
    assert_same_state({k: v for k, v in a.items() if k != "args"}, {k: v for k, v in b.items() if k != "args"})
    assert resumed["evals"] == clean["evals"] and resumed["online"] == clean["online"]

    def logged(d: Path) -> list:
        return [{k: v for k, v in json.loads(line).items() if k not in ("time", "updates_per_s")}
                for line in (d / "metrics.jsonl").read_text().splitlines()]

    assert logged(run) == logged(only(tmp_path / "clean"))


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SCRIPTS)
def test_online_steps_without_an_environment_is_one_line(name, minari_root, tmp_path, capfd):
    make_dataset("test/hopper/logs-v0", episodes=3, max_steps=30, record_env=False)
    with pytest.raises(DatasetError, match=r"^--online-steps: dataset 'test/hopper/logs-v0' records no environment"):
        script(name).train(args_for(name, "test/hopper/logs-v0", tmp_path / "runs"))
    assert "training without evaluation" not in capfd.readouterr().err  # the error is all that is said
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", SCRIPTS)
def test_negative_online_steps_is_refused(name, tmp_path):
    from common.config import ArgumentError

    with pytest.raises(ArgumentError, match="^--online-steps must be an integer >= 0"):
        script(name).train(args_for(name, "test/none-v0", tmp_path, online_steps=-5))


BEFORE = "e5c8ce8"  # the last commit before the online phase: offline runs must not have changed since
OFFLINE_FLAGS = ["--total-steps", "120", "--eval-every", "60", "--eval-episodes", "2", "--log-every", "30",
                 "--batch-size", "32", "--hidden-dim", "32", "--checkpoint-every", "1000", "--no-progress"]


@pytest.mark.parametrize("name", [s for s in SCRIPTS if s != "cal_ql"])  # cal_ql: test_cal_ql compares it with cql
def test_offline_run_is_bit_identical_to_the_script_before_the_online_phase(name, tiny_hopper, minari_root,
                                                                            tmp_path):
    """The script (and common/) as they were at BEFORE, run with the same flags: the same checkpoint, bit for bit,
    and the same evaluations. Skipped where the history is not there (a shallow clone)."""
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "common", f"algorithms/{name}.py"],
                             capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"commit {BEFORE} is not in this checkout's history")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(minari_root),
           "PYTHONDONTWRITEBYTECODE": "1"}
    for where, runs in ((old, tmp_path / "runs_old"), (ROOT, tmp_path / "runs_new")):
        subprocess.run([sys.executable, str(where / "algorithms" / f"{name}.py"), "--dataset", tiny_hopper,
                        "--runs-dir", str(runs), *OFFLINE_FLAGS], env=env, check=True, capture_output=True)
    a, b = (load_checkpoint(only(tmp_path / d) / "checkpoint.pt") for d in ("runs_old", "runs_new"))
    assert_same_state({k: v for k, v in a.items() if k != "args"}, {k: v for k, v in b.items() if k != "args"})
    ra, rb = (json.loads((only(tmp_path / d) / "result.json").read_text()) for d in ("runs_old", "runs_new"))
    assert ra["evals"] == rb["evals"] and ra["final_score"] == rb["final_score"]


def test_resumed_between_the_updates_of_one_env_step_matches_an_uninterrupted_run(tiny_hopper, tmp_path, monkeypatch):
    """--utd-ratio 2, checkpoint at update 125: after the environment step of update 124 and one of its two updates."""
    flags = dict(online_steps=60, utd_ratio=2, checkpoint_every=25)
    clean = script("cal_ql").train(args_for("cal_ql", tiny_hopper, tmp_path / "clean", **flags))
    real_step = common.online.OnlineEnv.step
    kill_at_call(monkeypatch, common.online.OnlineEnv, "step", 20)  # the env step of update 138
    with pytest.raises(KeyboardInterrupt):
        script("cal_ql").train(args_for("cal_ql", tiny_hopper, tmp_path / "killed", **flags))
    monkeypatch.setattr(common.online.OnlineEnv, "step", real_step)
    run = only(tmp_path / "killed")
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 125
    resumed = script("cal_ql").train(script("cal_ql").Args(resume=str(run), progress=False))
    a, b = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(only(tmp_path / "clean") / "checkpoint.pt")
    assert a["step"] == 100 + 120
    assert_same_state({k: v for k, v in a.items() if k != "args"}, {k: v for k, v in b.items() if k != "args"})
    assert resumed["evals"] == clean["evals"] and resumed["online"] == clean["online"]
