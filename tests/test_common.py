"""common/: buffer, checkpoints, evaluation, config and logging."""

from __future__ import annotations

import errno
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import make_dataset

from common.buffer import Buffer
from common.checkpoints import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from common.config import ArgumentError, check_common, require, resolve_device
from common.data import load_dataset
from common import evaluation
from common.evaluation import EVAL_SEED_OFFSET, evaluate
from common.logging import Run, logged, run_name

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------
# Buffer
# ----------------------------------------------------------------------------------------------
def small_buffer(n: int = 20, seed: int = 0, capacity: int | None = None) -> Buffer:
    obs = np.arange(n * 3, dtype=np.float32).reshape(n, 3)  # row i holds 3i, 3i+1, 3i+2: rows are recognizable
    return Buffer(obs, np.arange(n * 2, dtype=np.float32).reshape(n, 2), np.arange(n, dtype=np.float32), obs + 1000,
                  (np.arange(n) % 2).astype(np.float32), device="cpu", seed=seed, capacity=capacity)


def batches_equal(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_buffer_sampling_is_reproducible_from_the_seed():
    a, b, c = small_buffer(seed=3), small_buffer(seed=3), small_buffer(seed=4)
    for _ in range(3):
        ba, bb, bc = a.sample(16), b.sample(16), c.sample(16)
        assert batches_equal(ba, bb)
    assert not batches_equal(ba, bc)
    # every sampled row is a consistent transition of the data
    idx = (ba.obs[:, 0] / 3).long()
    assert torch.equal(ba.rewards, idx.float()) and torch.equal(ba.next_obs, ba.obs + 1000)
    assert torch.equal(ba.actions[:, 0], 2 * idx.float()) and torch.equal(ba.dones, (idx % 2).float())
    assert ba.obs.shape == (16, 3) and ba.actions.shape == (16, 2) and ba.rewards.shape == (16,)
    assert all(t.device == a.device for t in ba)


def test_buffer_state_dict_reproduces_the_next_batches(tmp_path):
    a = small_buffer(seed=0)
    for _ in range(5):
        a.sample(8)
    state = a.state_dict()
    expected = [a.sample(8) for _ in range(4)]
    b = small_buffer(seed=123)  # a different seed: only the loaded state decides what comes next
    b.load_state_dict(state)
    assert all(batches_equal(x, b.sample(8)) for x in expected)
    # the state survives a checkpoint round trip (weights_only loading)
    save_checkpoint(tmp_path / "c.pt", {"buffer": state})
    c = small_buffer(seed=7)
    c.load_state_dict(load_checkpoint(tmp_path / "c.pt")["buffer"])
    assert all(batches_equal(x, c.sample(8)) for x in expected)


def test_buffer_add_is_a_ring_buffer():
    buf = small_buffer(n=3, capacity=5)
    assert len(buf) == 3 and buf.capacity == 5
    for _ in range(50):  # only filled rows are sampled
        assert (buf.sample(4).obs[:, 0] <= 6).all()
    buf.add(np.full(3, -1.0), np.full(2, -1.0), -1.0, np.full(3, -2.0), True)  # row 3
    buf.add(np.full(3, -3.0), np.full(2, -3.0), -3.0, np.full(3, -4.0), False)  # row 4
    assert len(buf) == 5 and buf.insert == 0
    buf.add(np.full(3, -5.0), np.full(2, -5.0), -5.0, np.full(3, -6.0), True)  # full: overwrites row 0
    assert len(buf) == 5 and buf.insert == 1
    assert buf.rewards.tolist() == [-5.0, 1.0, 2.0, -1.0, -3.0]
    assert buf.dones.tolist() == [1.0, 1.0, 0.0, 1.0, 0.0]
    assert buf.obs[0].tolist() == [-5.0] * 3 and buf.next_obs[3].tolist() == [-2.0] * 3
    assert buf.obs[1].tolist() == [3.0, 4.0, 5.0]  # untouched
    # the fill level is part of the state
    fresh = small_buffer(n=3, capacity=5)
    fresh.load_state_dict(buf.state_dict())
    assert (len(fresh), fresh.insert) == (5, 1)


def test_buffer_from_dataset(tiny_hopper):
    data = load_dataset(tiny_hopper)
    mean, std = data.observations.mean(0), data.observations.std(0) + 1e-3
    buf = Buffer.from_dataset(data, seed=0, rewards=data.rewards * 2, obs_mean=mean, obs_std=std)
    assert len(buf) == len(data)
    np.testing.assert_allclose(buf.obs.numpy(), (data.observations - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(buf.next_obs.numpy(), (data.next_observations - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(buf.rewards.numpy(), data.rewards * 2)
    np.testing.assert_array_equal(buf.dones.numpy(), data.terminals)  # timeouts do not stop bootstrapping


def test_buffer_maps_continuous_actions_to_unit_box(minari_root):
    make_dataset("test/pendulum/tiny-v0", env_id="Pendulum-v1", episodes=2, max_steps=20)  # actions in [-2, 2]
    data = load_dataset("test/pendulum/tiny-v0")
    np.testing.assert_array_equal(data.action_low, [-2.0])
    np.testing.assert_array_equal(data.action_high, [2.0])
    assert np.abs(data.actions).max() > 1.0  # the data is as logged
    buf = Buffer.from_dataset(data)
    np.testing.assert_allclose(buf.actions.numpy(), data.actions / 2.0, atol=1e-6)


def test_buffer_discrete_actions_are_long():
    buf = Buffer(np.zeros((4, 2), np.float32), np.array([0, 1, 1, 0]), np.zeros(4, np.float32),
                 np.zeros((4, 2), np.float32), np.zeros(4, np.float32))
    assert buf.actions.dtype == torch.long and buf.sample(3).actions.shape == (3,)


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    state = {"net": torch.nn.Linear(3, 2).state_dict(), "step": 7, "name": "x", "nested": {"a": [1.5, 2]}}
    save_checkpoint(tmp_path / "sub" / "checkpoint.pt", state)
    loaded = load_checkpoint(tmp_path / "sub" / "checkpoint.pt")
    assert loaded["step"] == 7 and loaded["name"] == "x" and loaded["nested"] == {"a": [1.5, 2]}
    assert all(torch.equal(loaded["net"][k], v) for k, v in state["net"].items())
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["checkpoint.pt"]  # no temporary file left


def test_failed_save_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1, "w": torch.ones(3)})
    before = path.read_bytes()
    real_save = torch.save

    def crash_mid_write(obj, f, *args, **kwargs):
        real_save({"step": 2, "w": torch.zeros(1000)}, f)  # half a file's worth of bytes, then the crash
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(CheckpointError) as e:  # one line for the user, naming the file and the cause
        save_checkpoint(path, {"step": 2, "w": torch.zeros(3)})
    assert str(e.value) == (f"could not write checkpoint {path}: No space left on device; the previous checkpoint "
                            f"is unchanged")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # the temporary file is cleaned up


def test_load_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at") as e:
        load_checkpoint(tmp_path / "nope" / "checkpoint.pt")
    assert str(tmp_path / "nope" / "checkpoint.pt") in str(e.value)


def _truncated(path):
    save_checkpoint(path, {"w": torch.randn(100, 100), "step": 3})
    path.write_bytes(path.read_bytes()[:5000])


class NotAllowed:  # weights_only loading must refuse arbitrary pickled objects
    pass


@pytest.mark.parametrize("write", [
    _truncated,
    lambda path: path.write_text("this is not a checkpoint\n"),
    lambda path: path.write_bytes(b""),
    lambda path: torch.save({"obj": NotAllowed()}, path),
    lambda path: torch.save([torch.ones(2)], path),  # a torch file, but not a state dictionary
], ids=["truncated", "text", "empty", "pickled-object", "not-a-dict"])
def test_load_bad_checkpoint_names_the_path(tmp_path, write):
    path = tmp_path / "checkpoint.pt"
    write(path)
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)
    assert path.read_bytes() == before


def test_rng_state_round_trip():
    state = rng_state()
    a = torch.rand(5)
    torch.rand(3)
    set_rng_state(state)
    assert torch.equal(torch.rand(5), a)


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def test_evaluate_returns_one_return_per_episode_deterministically():
    spec = gym.spec("Pendulum-v1")
    calls = []

    def policy(obs):
        calls.append(obs.shape)
        assert obs.dtype == np.float32 and obs.shape[1] == 3
        return -np.clip(obs[:, 2:3], -2, 2)  # damp the angular velocity

    r1 = evaluate(policy, spec, episodes=5, seed=0)
    assert r1.shape == (5,) and np.isfinite(r1).all() and (r1 < 0).all()
    assert calls[0] == (5, 3) and len(calls) == 200  # batched: one call per step for all running episodes
    np.testing.assert_array_equal(evaluate(policy, spec, episodes=5, seed=0), r1)
    np.testing.assert_array_equal(evaluate(policy, spec, episodes=5, seed=0, max_envs=2), r1)  # same per-episode seeds
    r2 = evaluate(policy, spec, episodes=5, seed=1)
    assert not np.array_equal(r1, r2)
    assert len(set(r1.tolist())) == 5  # every episode starts from its own state


def test_evaluate_tells_a_stateful_policy_when_episodes_start_and_what_each_step_earned():
    """A policy with reset/observe (a sequence model's) hears of every new set of episodes and gets each row's reward
    and end after every step; rows that ended leave the next call, in order."""

    class Stateful:
        def __init__(self):
            self.resets, self.earned, self.rows = [], [], None

        def reset(self, n):
            self.resets.append(n)
            self.rows = list(range(len(self.earned), len(self.earned) + n))  # which episode each row is
            self.earned += [0.0] * n

        def __call__(self, obs):
            assert len(obs) == len(self.rows)
            return np.where(obs[:, 2:3] > 0, 1, 0)  # push toward the pole's lean (CartPole)

        def observe(self, rewards, ended):
            assert rewards.dtype == np.float32 and ended.dtype == bool and len(rewards) == len(self.rows)
            for row, r in zip(self.rows, rewards):
                self.earned[row] += float(r)
            self.rows = [row for row, e in zip(self.rows, ended) if not e]

    policy = Stateful()
    returns = evaluate(policy, gym.spec("CartPole-v1"), episodes=5, seed=0, max_envs=2)
    assert policy.resets == [2, 2, 1] and policy.rows == []  # every episode ended and left
    np.testing.assert_allclose(policy.earned, returns)  # each reward reached the row of its own episode
    assert len(set(returns.tolist())) > 1


def test_evaluate_maps_unit_actions_to_the_env_bounds():
    # Pendulum's torque is in [-2, 2]: a policy output of 0.5 must reach the environment as 1.0
    spec = gym.spec("Pendulum-v1")
    ours = evaluate(lambda obs: np.full((len(obs), 1), 0.5, np.float32), spec, episodes=1, seed=0)
    env = gym.make(spec)
    env.reset(seed=EVAL_SEED_OFFSET)  # episode 0 of seed 0
    total, done = 0.0, False
    while not done:
        _, r, term, trunc, _ = env.step(np.array([1.0], np.float32))
        total, done = total + r, term or trunc
    assert ours[0] == pytest.approx(total)


def test_mujoco_warnings_are_shown_once_not_once_per_environment(capfd):
    # MuJoCo 4 warns about HalfCheetah's deprecated `settotalmass` on every model compile: an evaluation of
    # 10 episodes used to print it 10 times into the progress bar
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(None)
    evaluation._MUJOCO_WARNED.clear()
    try:
        evaluate(lambda obs: np.zeros((len(obs), 6), np.float32), "HalfCheetah-v5", episodes=3)
        evaluation.make_env("HalfCheetah-v5").close()
        out, err = capfd.readouterr()
        assert (out + err).count("settotalmass") == 1 and "shown once" in err
    finally:
        mujoco.set_mju_user_warning(previous)


def test_evaluate_discrete_actions_cartpole():
    spec = gym.spec("CartPole-v1")
    always_left = evaluate(lambda obs: np.zeros(len(obs), np.int64), spec, episodes=3, seed=0)
    # push the cart toward the side the pole falls to
    balance = evaluate(lambda obs: (obs[:, 2] + obs[:, 3] > 0).astype(np.int64), spec, episodes=3, seed=0)
    assert always_left.shape == balance.shape == (3,)
    assert always_left.max() < 20 and balance.min() > 100  # the actions reach the environment
    as_floats = evaluate(lambda obs: (obs[:, 2] + obs[:, 3] > 0).astype(np.float32), spec, episodes=3, seed=0)
    np.testing.assert_array_equal(as_floats, balance)

    # each episode's length and how it ended: CartPole pays 1 per step, so its return is its length
    info = {}
    mixed = evaluate(lambda obs: np.zeros(len(obs), np.int64), spec, episodes=3, seed=0,
                     max_envs=2, episode_info=info)
    assert info["length"] == mixed.astype(int).tolist() and info["terminated"] == [True] * 3
    short = gym.envs.registration.EnvSpec("ShortCartPole-v0", entry_point=spec.entry_point, max_episode_steps=5)
    info = {}
    evaluate(lambda obs: (obs[:, 2] + obs[:, 3] > 0).astype(np.int64), short, episodes=2, episode_info=info)
    assert info == {"length": [5, 5], "terminated": [False, False]}  # the time limit is not a termination


def test_evaluate_needs_an_environment():
    with pytest.raises(ValueError, match="no environment"):
        evaluate(lambda obs: obs, None, episodes=1)


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CommonArgs:
    dataset: str = "test/hopper/tiny-v0"
    seed: int = 0
    total_steps: int = 10
    batch_size: int = 4
    eval_every: int = 5
    eval_episodes: int = 1
    log_every: int = 5
    checkpoint_every: int = 5
    device: str = "cpu"
    lr: float = 1e-3
    gamma: float = 0.99
    tau: float = 0.005


def test_require_names_the_flag():
    require(True, "batch_size", "must be positive", -1)
    with pytest.raises(ArgumentError, match=r"^--batch-size must be positive, got -1$"):
        require(False, "batch_size", "must be positive", -1)
    with pytest.raises(ArgumentError, match=r"^--max-weight must be positive$"):
        require(False, "max_weight", "must be positive")


@pytest.mark.parametrize("field, value, flag", [
    ("dataset", "", "--dataset"), ("dataset", "  ", "--dataset"),
    ("total_steps", 0, "--total-steps"), ("batch_size", -1, "--batch-size"), ("eval_every", 0, "--eval-every"),
    ("eval_episodes", -1, "--eval-episodes"), ("log_every", -5, "--log-every"),
    ("checkpoint_every", 0, "--checkpoint-every"), ("batch_size", 2.5, "--batch-size"),
    ("seed", -1, "--seed"), ("lr", 0.0, "--lr"), ("gamma", 1.0, "--gamma"), ("gamma", -0.1, "--gamma"),
    ("tau", 0.0, "--tau"), ("tau", 1.5, "--tau"), ("device", "gpu7", "--device"),
])
def test_check_common_names_the_flag(field, value, flag):
    check_common(CommonArgs())  # the defaults pass
    with pytest.raises(ArgumentError) as e:
        check_common(dataclasses.replace(CommonArgs(), **{field: value}))
    assert str(e.value).startswith(flag + " ") and repr(value) in str(e.value)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ArgumentError, match="--device 'banana' is not a device"):
        resolve_device("banana")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine():
    with pytest.raises(ArgumentError, match="--device 'cuda'.*CUDA is not available"):
        resolve_device("cuda")


# ----------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------
def test_metrics_jsonl_lines(tmp_path):
    run = Run(tmp_path / "run", CommonArgs(), "test", total_steps=10, start_step=0, track=False, progress=False)
    run.log(5, {"loss/q": torch.tensor(0.25), "adv": 1})
    run.log(10, {"eval/score": 42.5})
    run.write_json("result.json", {"final_score": 42.5})
    run.close()
    run = Run(tmp_path / "run", CommonArgs(), "test", total_steps=20, start_step=10, track=False, progress=False)
    run.log(15, {"loss/q": 0.125})  # a resumed run appends
    run.close()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [5, 10, 15]
    assert lines[0]["loss/q"] == 0.25 and lines[0]["adv"] == 1.0 and lines[1]["eval/score"] == 42.5
    assert all("time" in r for r in lines)
    assert json.loads((tmp_path / "run" / "result.json").read_text()) == {"final_score": 42.5}
    assert not (tmp_path / "run" / "result.json.tmp").exists()


def test_logged_reads_one_metric_by_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 5, "loss/q": 0.5}\n{"step": 5, "eval/score": 3.0}\n{"step": 10, "loss/q": 0.25}\n'
                    '{"step": 10, "loss/q": 0.125}\n{"step": 15, "loss/q": 0.0')  # last line cut by a crash
    assert logged(path, "loss/q") == {5: 0.5, 10: 0.125}  # the last record of a step wins
    assert logged(path, "eval/score") == {5: 3.0} and logged(path, "nope") == {}


def test_resumed_run_drops_records_logged_after_its_checkpoint(tmp_path):
    run = Run(tmp_path / "run", CommonArgs(), "test", total_steps=40, start_step=0, track=False, progress=False)
    for step in (10, 20, 30):
        run.log(step, {"loss/q": step})
    run.close()
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "loss/q"')  # a crash mid-write
    # the checkpoint was at step 20: steps 30 and the cut line are dropped, then the run logs 30 and 40 again
    run = Run(tmp_path / "run", CommonArgs(), "test", total_steps=40, start_step=20, track=False, progress=False)
    run.log(30, {"loss/q": -30})
    run.log(40, {"loss/q": -40})
    run.close()
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss/q"]) for r in lines] == [(10, 10), (20, 20), (30, -30), (40, -40)]


WANDB_PROBE = """
import sys
sys.modules["wandb"] = None  # any `import wandb` now raises ImportError
from common.logging import Run
run = Run(RUN_DIR / "run", None, "test", total_steps=10, start_step=0, track=False, progress=False)
run.log(1, {"x": 1.0})
run.close()
assert run.wandb is None
try:  # the trap works: tracking does import wandb
    Run(RUN_DIR / "run2", None, "test", total_steps=10, start_step=0, track=True, progress=False)
except ImportError:
    print("ok")
"""


def test_track_false_never_imports_wandb(tmp_path):
    # a fresh interpreter, so that an `import wandb` at the top of common/logging.py is caught too
    code = f"import sys; from pathlib import Path; sys.path.insert(0, {str(ROOT)!r}); RUN_DIR = Path({str(tmp_path)!r})"
    proc = subprocess.run([sys.executable, "-c", code + WANDB_PROBE], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1


def test_run_name():
    name = run_name("iql", "stitch/hopper/medium-v0", 3)
    assert name.startswith("iql__stitch-hopper-medium-v0__s3__") and "/" not in name
    assert len({run_name("iql", "stitch/hopper/medium-v0", 3) for _ in range(20)}) > 1  # same second, apart


# ----------------------------------------------------------------------------------------------
# common/interrupt.py and Run.checkpoint_due: nothing lost on Ctrl-C, at most --checkpoint-minutes at risk
# ----------------------------------------------------------------------------------------------
def test_stop_signal_sets_a_flag_then_a_second_ctrl_c_stops_at_once(capsys):
    import os
    import signal

    from common.interrupt import StopSignal

    before = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop: the loop finishes its update, then checkpoints
        assert stop and stop.signum == signal.SIGTERM
        exit_ = stop.exit("python algorithms/iql.py --resume runs/x", 1234)
        assert exit_.code == 143
        assert "stopped at update 1234 by SIGTERM" in capsys.readouterr().err
    with StopSignal() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C twice: the user does not want to wait
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored on leaving


def test_resume_command_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    from common.interrupt import resume_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "algorithms").mkdir()
    assert resume_command(tmp_path / "algorithms" / "iql.py", tmp_path / "runs" / "a b") == \
        "python algorithms/iql.py --resume 'runs/a b'"
    assert resume_command("/elsewhere/iql.py", "/data/runs/x") == "python /elsewhere/iql.py --resume /data/runs/x"


def test_checkpoint_due_every_n_updates_at_the_end_and_after_the_time_limit(tmp_path, monkeypatch):
    import types

    from common import logging as stitch_logging

    clock = [1000.0]
    monkeypatch.setattr(stitch_logging.time, "monotonic", lambda: clock[0])
    args = types.SimpleNamespace(checkpoint_every=100, checkpoint_minutes=10.0)
    run = stitch_logging.Run(tmp_path / "run", args, "test", 1000, 0, False, progress=False)
    assert [s for s in range(1, 1001) if run.checkpoint_due(s)] == list(range(100, 1001, 100))
    clock[0] += 599.0
    assert not run.checkpoint_due(2)  # 599 s since the last (step 1000): not yet
    clock[0] += 1.0
    assert run.checkpoint_due(3) and not run.checkpoint_due(4)  # 10 minutes: due, and the clock starts again
    run.checkpoint_seconds = 0.0  # --checkpoint-minutes 0: by update count only
    clock[0] += 10_000.0
    assert not run.checkpoint_due(5)
    run.close()


def test_run_prints_its_folder_and_each_evaluation_when_stderr_is_no_terminal(tmp_path, capsys):
    import types

    from common.logging import Run

    run = Run(tmp_path / "run", types.SimpleNamespace(), "iql", 1000, 0, False, progress=True)
    run.score(500, 41.25, 1234.5)
    run.score(1000, None, 17.0)  # a dataset without reference scores: the raw return only
    run.close()
    err = capsys.readouterr().err  # captured: not a terminal, so no progress bar and one line per evaluation
    assert f"iql: run folder {tmp_path / 'run'} (new run, 1000 updates)" in err
    assert "iql update 500/1000: score 41.2 (return 1234.5)" in err
    assert "iql update 1000/1000: no reference scores (return 17.0)" in err
