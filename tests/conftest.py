"""Shared fixtures: every test runs against a private, temporary Minari root."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import write_rollout_dataset as make_dataset  # noqa: E402,F401 -- used by the tests
from common.checkpoints import load_checkpoint  # noqa: E402
from common.config import ArgumentError  # noqa: E402


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def tiny_hopper(minari_root):
    """A few short random-action Hopper episodes under a test id."""
    make_dataset("test/hopper/tiny-v0", episodes=6, max_steps=100)
    return "test/hopper/tiny-v0"


@pytest.fixture
def tiny_cartpole(minari_root):
    """A few short random-action CartPole episodes (discrete actions) under a test id."""
    make_dataset("test/cartpole/tiny-v0", env_id="CartPole-v1", episodes=8, max_steps=60, ref_scores=(9.0, 500.0))
    return "test/cartpole/tiny-v0"


def check_probe(script: ModuleType, args, probe: str, tmp_path: Path) -> dict:
    """Train `args` (one evaluation episode at the end), run `benchmarks/<probe>` on the run folder for one episode
    and return its JSON, checked: 'as the script acts' replays the run's own final evaluation, every return is
    finite and scored."""
    import subprocess
    result = script.train(args)
    (run,) = Path(args.runs_dir).iterdir()
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, f"benchmarks/{probe}", str(run), "--episodes", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["returns"]["as_the_script_acts"] == result["final_return"]
    assert set(r["returns"]) == set(r["scores"]) and all(math.isfinite(v) for v in r["returns"].values())
    return r


def check_bad_flag(script: ModuleType, field: str, value, flag: str, tmp_path: Path) -> None:
    """`script.train` refuses `field = value` at once with an ArgumentError naming `flag`: before the (missing)
    dataset is even looked up, and without leaving a run folder for a run that never started."""
    args = dataclasses.replace(script.Args(dataset="test/none-v0", runs_dir=str(tmp_path), progress=False),
                               **{field: value})
    with pytest.raises(ArgumentError) as e:
        script.train(args)
    assert str(e.value).startswith(flag + " ")
    assert list(tmp_path.iterdir()) == []


def check_finished_run(script: ModuleType, args, result: dict, *, loss_key: str, finite: tuple[str, ...],
                       networks: tuple[str, ...], steps: int = 200, evals: tuple[int, ...] = (100, 200),
                       logged: tuple[int, ...] = (50, 100, 150, 200)) -> tuple[Path, list[dict], dict]:
    """What every script's finished run of `tiny_hopper` leaves in `args.runs_dir`: one run folder named
    after the script and dataset, result.json as returned, metrics logged every `log_every` steps with finite
    `finite` values (the records holding `loss_key`) and evaluations at `evals`, a checkpoint at `steps` with
    finite `networks`, and args.json; and resuming the finished run trains no further and reports the same
    result; and `load_policy(run_dir)` replays the final evaluation's returns. Returns the run folder, all
    metric records and the checkpoint, for the script's own checks."""
    name = script.__name__.rsplit(".", 1)[-1]
    (run_dir,) = Path(args.runs_dir).iterdir()
    assert run_dir.name.startswith(f"{name}__test-hopper-tiny-v0__s0__")

    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["final_score"] == result["final_score"] and math.isfinite(saved["final_score"])
    assert saved["steps"] == steps and [e["step"] for e in saved["evals"]] == list(evals)

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in records if loss_key in r]
    assert [r["step"] for r in losses] == list(logged)
    for r in losses:
        for key in finite:
            assert math.isfinite(r[key]), (key, r)
    assert [r["step"] for r in records if "eval/score" in r] == list(evals)

    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["step"] == steps and ckpt["algo"] == name
    assert all(torch.isfinite(t).all() for net in networks for t in ckpt[net].values())
    # args.json: the settings the run used (mopo and combo fill in their per-dataset ones where left unset)
    used = script.with_dataset_settings(args) if hasattr(script, "with_dataset_settings") else args
    assert json.loads((run_dir / "args.json").read_text()) == dataclasses.asdict(used)

    # The public policy of the run folder acts as the script evaluated it: the final evaluation's episodes again.
    from common.data import load_dataset
    from common.evaluation import evaluate

    policy = script.load_policy(run_dir)
    returns = evaluate(policy, load_dataset(args.dataset).env_spec, args.eval_episodes, seed=args.seed)
    assert float(returns.mean()) == result["final_return"]

    again = script.train(script.Args(resume=str(run_dir), progress=False))
    assert again["steps"] == steps and again["final_score"] == result["final_score"]
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == steps
    return run_dir, records, ckpt


def kill_at_call(monkeypatch, owner, name: str, n: int) -> None:
    """Make `owner.name` raise KeyboardInterrupt on its n-th call, as if the process were killed there; the
    calls before go through. `monkeypatch.undo()` restores it."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def train_and_crash_copy(script: ModuleType, args, tmp_path: Path, monkeypatch, step: int = 100) -> tuple[dict, Path]:
    """Train a model-based run (mopo.py, combo.py) to the end, keeping a copy of its folder as a crash right after
    the checkpoint of `step` would leave it (checkpoint.pt and dynamics.pt). Returns the result and that folder."""
    crashed = tmp_path / "crashed" / f"{script.__name__.rsplit('.', 1)[-1]}__crashed"
    real_save = script.save_checkpoint

    def save_and_copy(path, state):
        real_save(path, state)
        if "step" in state and state["step"] == step:
            crashed.mkdir(parents=True)
            shutil.copy(path, crashed / "checkpoint.pt")
            shutil.copy(path.parent / "dynamics.pt", crashed / "dynamics.pt")

    monkeypatch.setattr(script, "save_checkpoint", save_and_copy)
    result = script.train(args)
    monkeypatch.setattr(script, "save_checkpoint", real_save)
    return result, crashed


def check_resume_from_crash(script: ModuleType, crashed: Path, result: dict, records: list[dict], final_ckpt: dict,
                            names: tuple[str, ...], monkeypatch, step: int = 100) -> None:
    """Continuing a model-based run from the folder train_and_crash_copy kept reproduces the steps after `step`
    exactly (evaluations, metric lines, the final state of `names`) without retraining the dynamics model."""
    monkeypatch.setattr(script, "train_dynamics", lambda *a, **k: pytest.fail("resume retrained the dynamics"))
    resumed = script.train(script.Args(resume=str(crashed), progress=False))
    assert resumed["evals"] == result["evals"] and resumed["final_score"] == result["final_score"]
    after = [json.loads(line) for line in (crashed / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k not in ("time", "updates_per_s")}  # noqa: E731
    assert [strip(r) for r in after] == [strip(r) for r in records if r["step"] > step]
    final = load_checkpoint(crashed / "checkpoint.pt")
    for name in names:
        a, b = final[name], final_ckpt[name]
        assert all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a) \
            if isinstance(a, dict) else torch.equal(a, b), name


def check_stop_in_dynamics_training(script: ModuleType, dataset: str, tmp_path: Path, monkeypatch, capsys,
                                    flags: dict) -> None:
    """A model-based script (mopo.py, combo.py) sent SIGINT while its dynamics model trains (at the end of epoch 2)
    finishes the step in progress, saves the training's state, says how to resume and exits with 130; killed
    later in its training (in epoch 8, after the checkpoint of epoch 5), it loses the epochs since; resumed, it
    ends with the dynamics model, the agent and the results of a run never interrupted."""
    name = script.__name__.rsplit(".", 1)[-1]
    flags = flags | dict(total_steps=100, eval_every=100, checkpoint_every=100, max_dynamics_epochs=12,
                         max_epochs_since_update=20, dynamics_checkpoint_every=5)
    clean = script.train(script.Args(dataset=dataset, runs_dir=str(tmp_path / "clean"), **flags))
    (clean_dir,) = (tmp_path / "clean").iterdir()
    clean_log = json.loads((clean_dir / "dynamics.json").read_text())
    assert clean_log["epochs"] == 12 and not (clean_dir / "dynamics_training.pt").exists()

    real = script.holdout_mse
    calls = []

    def signal_at_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C; the script's handler only sets a flag
        return real(*args, **kwargs)

    monkeypatch.setattr(script, "holdout_mse", signal_at_epoch_2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        script.train(script.Args(dataset=dataset, runs_dir=str(tmp_path / "stopped"), **flags))
    assert e.value.code == 130
    err = capsys.readouterr().err
    (run_dir,) = (tmp_path / "stopped").iterdir()
    assert re.search(r"dynamics: training stopped in epoch 3 \(after \d+ examples per member\)", err), err
    assert "stopped at update 0 by SIGINT; checkpoint written. Resume with:" in err, err
    assert f"algorithms/{name}.py --resume " in err and run_dir.name in err
    assert not (run_dir / "dynamics.pt").exists() and load_checkpoint(run_dir / "checkpoint.pt")["step"] == 0
    assert load_checkpoint(run_dir / "dynamics_training.pt")["epoch"] == 2

    # resumed, then killed (as SIGKILL would) in epoch 8: the state on disk is epoch 5's
    monkeypatch.setattr(script, "holdout_mse", real)
    kill_at_call(monkeypatch, script, "holdout_mse", 6)  # the 6th epoch after the stop: epoch 8
    with pytest.raises(KeyboardInterrupt):
        script.train(script.Args(resume=str(run_dir), progress=False))
    assert load_checkpoint(run_dir / "dynamics_training.pt")["epoch"] == 5
    monkeypatch.setattr(script, "holdout_mse", real)
    resumed = script.train(script.Args(resume=str(run_dir), progress=False))
    assert not (run_dir / "dynamics_training.pt").exists()
    log = json.loads((run_dir / "dynamics.json").read_text())
    assert log["epochs_log"] == clean_log["epochs_log"]
    assert log["holdout_mse"] == clean_log["holdout_mse"] and log["elites"] == clean_log["elites"]
    a, b = load_checkpoint(run_dir / "dynamics.pt"), load_checkpoint(clean_dir / "dynamics.pt")
    assert a["dynamics"].keys() == b["dynamics"].keys()
    assert all(torch.equal(a["dynamics"][k], b["dynamics"][k]) for k in a["dynamics"])
    assert resumed["evals"] == clean["evals"] and resumed["final_score"] == clean["final_score"]
    final, ref = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(clean_dir / "checkpoint.pt")
    for net in ("q", "q_target", "policy", "q_opt"):
        assert all(torch.equal(final[net][k], ref[net][k]) for k in ref[net] if isinstance(ref[net][k], torch.Tensor))


def docstring_loop_return(script: ModuleType, run_dir: Path, env_spec, seed: int) -> float:
    """Run the acting loop that `script.load_policy`'s docstring shows a user, verbatim (its `run_dir`, and its
    reset seed replaced by `seed`), for one episode; its return."""
    import textwrap

    import numpy as np

    from common.evaluation import make_env

    doc = script.load_policy.__doc__
    lines = doc[doc.index("policy = "):doc.index("if term or trunc: break") + len("if term or trunc: break")]
    code = textwrap.dedent("        " + lines).replace("env.reset(seed=0)", f"env.reset(seed={seed})")
    env, total = make_env(env_spec), [0.0]
    step = env.step

    def counted(action):
        out = step(action)
        total[0] += float(out[1])
        return out

    env.step = counted
    exec(code, {script.__name__.split(".")[-1]: script, "run_dir": run_dir, "env": env, "np": np})
    env.close()
    return total[0]
