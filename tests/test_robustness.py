"""Logged data without a simulator or reference scores, and bad input met with one line and nothing lost.

Every script trains on a dataset that records no environment (a user's own logs, written with Minari's
`create_dataset_from_buffers` under a remote-style id) and on one without reference scores; the final checkpoint
comes before the final evaluation; `--resume` warns about flags it ignores and may extend a run; the classes of bad
input (corrupt cache, unusable --runs-dir, a full disk, --seed out of range, leftovers of killed processes) each
end in one line.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_dataset
from test_resume import (ALGOS, DISCRETE_ALGOS, ROOT, SMALL_FLAGS, args_fields, assert_same_state, command,
                         only_run_dir, run_in_process)

from common.checkpoints import CheckpointError, load_checkpoint
from common.config import ArgumentError, check_runs_dir
from common.data import CACHE_FILE, datasets_root, load_dataset

LOGS = "acme/hopper/logs-v0"  # a remote-style id, as a user's own dataset would have
SMALL = ["--seed", "0", "--batch-size", "32", "--log-every", "20", "--checkpoint-every", "40", "--no-progress"]


def small(algo: str, *flags: str) -> list[str]:
    return [*SMALL, *(["--hidden-dim", "16"] if "hidden_dim" in args_fields(algo) else []), *SMALL_FLAGS.get(algo, []),
            *flags]


def dead_pid() -> int:
    """A process id that no process has now: a child that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single line a script prints for bad input (exit status 1, no traceback)."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def in_process_error(algo: str, *flags: str) -> str:
    """The message of the error `python algorithms/<algo>.py FLAGS` stops with (its `__main__` prints it as the one
    line `error: MESSAGE`, as test_runs_dir_that_is_a_file_or_under_one shows end to end)."""
    with pytest.raises((ArgumentError, CheckpointError)) as e:
        run_in_process(algo, list(flags))
    return str(e.value)


def run_script(algo: str, *flags: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command(algo, *flags), capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
                          **kwargs)


# ----------------------------------------------------------------------------------------------
# 1 + 6. Logged data with no environment, written as a user would, trains every script
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def logged_data(minari_root):
    make_dataset(LOGS, episodes=4, max_steps=60, ref_scores=None, record_env=False)
    return LOGS


@pytest.mark.parametrize("algo", ALGOS)
def test_every_script_trains_on_logs_without_an_environment(algo, logged_data, tmp_path, capfd):
    runs = tmp_path / "runs"
    run_in_process(algo, ["--dataset", logged_data, "--runs-dir", str(runs), *small(algo, "--total-steps", "60",
                                                                                      "--eval-every", "30")])
    err = capfd.readouterr().err
    assert err.count("records no environment: training without evaluation") == 1, err
    run_dir = only_run_dir(runs)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["final_score"] is None and result["final_return"] is None and result["evals"] == []
    metrics = result["train_metrics"]
    assert metrics["step"] == 60 and len(metrics) >= 2
    assert all(math.isfinite(v) for v in metrics.values())
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 60

    module = __import__(f"algorithms.{algo}", fromlist=["load_policy"])  # the saved policy acts
    actions = module.load_policy(run_dir)(load_dataset(logged_data).observations[:5])
    assert actions.shape == (5, 3) and np.isfinite(actions).all() and np.abs(actions).max() <= 1

    run_in_process(algo, ["--resume", str(run_dir), "--no-progress"])  # a finished run resumes to the same result
    again = json.loads((run_dir / "result.json").read_text())
    assert again["train_metrics"] == metrics and again["evals"] == []


@pytest.mark.parametrize("algo", DISCRETE_ALGOS)
def test_discrete_scripts_train_on_logs_without_an_environment(algo, minari_root, tmp_path, capfd):
    make_dataset("acme/cartpole/logs-v0", env_id="CartPole-v1", episodes=6, max_steps=40, ref_scores=None,
                 record_env=False)
    runs = tmp_path / "runs"
    run_in_process(algo, ["--dataset", "acme/cartpole/logs-v0", "--runs-dir", str(runs),
                          *small(algo, "--total-steps", "40", "--eval-every", "20")])
    assert "records no environment: training without evaluation" in capfd.readouterr().err
    run_dir = only_run_dir(runs)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["final_score"] is None and result["evals"] == [] and result["train_metrics"]["step"] == 40
    module = __import__(f"algorithms.{algo}", fromlist=["load_policy"])
    actions = module.load_policy(run_dir)(load_dataset("acme/cartpole/logs-v0").observations[:5])
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1}  # CartPole's two actions, from the data


def test_logs_keep_their_action_bounds_without_an_environment(minari_root):
    make_dataset("acme/pendulum/logs-v0", env_id="Pendulum-v1", episodes=2, max_steps=10, ref_scores=None,
                 record_env=False)
    data = load_dataset("acme/pendulum/logs-v0")
    assert data.env_spec is None
    np.testing.assert_array_equal(data.action_low, [-2.0])  # from the recorded action space: training maps to +-1
    np.testing.assert_array_equal(data.action_high, [2.0])


def test_the_logged_data_example_runs_end_to_end(minari_root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "logged_data.py"), "--updates", "40",
                          "--runs-dir", str(tmp_path / "runs"), "--extra", "--no-progress", "--hidden-dim", "16",
                          "--log-every", "20", "--batch-size", "32"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "records no environment" in out.stderr
    result = json.loads((only_run_dir(tmp_path / "runs") / "result.json").read_text())
    assert result["final_score"] is None and result["train_metrics"]["step"] == 40
    actions = json.loads(out.stdout.rsplit("->", 1)[1])
    assert np.asarray(actions).shape == (2, 2)


@pytest.mark.skipif(__import__("importlib").util.find_spec("jax") is None,
                    reason="Minari's DataCollector needs jax (pip install 'minari[create]'), not installed")
def test_a_dataset_recorded_with_minaris_data_collector_trains(minari_root, tmp_path):
    import gymnasium as gym
    import minari

    env = minari.DataCollector(gym.make("Pendulum-v1", max_episode_steps=30))
    for ep in range(3):
        env.reset(seed=ep)
        done = False
        while not done:
            *_, term, trunc, _ = env.step(env.action_space.sample())
            done = term or trunc
    env.create_dataset(dataset_id="acme/pendulum/collected-v0", algorithm_name="random", author="t",
                       author_email="t@t", code_permalink="none")
    run_in_process("bc", ["--dataset", "acme/pendulum/collected-v0", "--runs-dir", str(tmp_path / "runs"),
                          *small("bc", "--total-steps", "40", "--eval-every", "40", "--eval-episodes", "1")])
    assert json.loads((only_run_dir(tmp_path / "runs") / "result.json").read_text())["evals"][0]["step"] == 40


# ----------------------------------------------------------------------------------------------
# 2. An environment but no reference scores: raw returns, or the user's own reference returns
# ----------------------------------------------------------------------------------------------
def test_no_reference_scores_reports_raw_returns_or_the_users_scores(minari_root, tmp_path, capfd):
    make_dataset("acme/pendulum/norefs-v0", env_id="Pendulum-v1", episodes=3, max_steps=20, ref_scores=None)
    flags = ["--dataset", "acme/pendulum/norefs-v0", *small("bc", "--total-steps", "40", "--eval-every", "20",
                                                           "--eval-episodes", "2")]
    run_in_process("bc", [*flags, "--runs-dir", str(tmp_path / "raw")])
    err = capfd.readouterr().err
    assert err.count("has no reference scores: evaluations report raw returns") == 1, err
    raw = json.loads((only_run_dir(tmp_path / "raw") / "result.json").read_text())
    assert [e["step"] for e in raw["evals"]] == [20, 40] and all(e["score"] is None for e in raw["evals"])
    assert raw["final_score"] is None and raw["final_return"] < 0  # Pendulum's rewards are negative
    logged = [json.loads(line) for line in (only_run_dir(tmp_path / "raw") / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "eval/return" in r] == [20, 40] and not any("eval/score" in r for r in logged)

    run_in_process("bc", [*flags, "--runs-dir", str(tmp_path / "scored"), "--ref-min-score", "-1500",
                          "--ref-max-score", "0"])
    assert "no reference scores" not in capfd.readouterr().err
    scored = json.loads((only_run_dir(tmp_path / "scored") / "result.json").read_text())
    assert scored["final_return"] == raw["final_return"]  # same run, now scored
    assert scored["final_score"] == pytest.approx(100 * (raw["final_return"] + 1500) / 1500)


def test_reference_scores_fall_back_by_environment_not_by_id(minari_root):
    make_dataset("acme/hopper/pendulum-logs-v0", env_id="Pendulum-v1", episodes=1, max_steps=5, ref_scores=None)
    make_dataset("acme/robot/logs-v0", env_id="Hopper-v5", episodes=1, max_steps=5, ref_scores=None)
    assert load_dataset("acme/hopper/pendulum-logs-v0").ref_min_score is None  # "hopper" in the id is not Hopper
    data = load_dataset("acme/robot/logs-v0")  # D4RL's Hopper references, found by its environment
    assert (data.ref_min_score, data.ref_max_score) == (-20.272305, 3234.3)


@pytest.mark.parametrize("flags, message", [
    (["--ref-min-score", "0"], "--ref-max-score must be given together with --ref-min-score"),
    (["--ref-min-score", "5", "--ref-max-score", "1"], "--ref-max-score must exceed --ref-min-score 5.0, got 1.0"),
])
def test_reference_score_flags_are_checked(flags, message, tmp_path):
    assert one_line_error(run_script("bc", "--runs-dir", str(tmp_path / "runs"), *flags)) == f"error: {message}"


# ----------------------------------------------------------------------------------------------
# 3. The final checkpoint is written before the final evaluation
# ----------------------------------------------------------------------------------------------
def test_a_failing_final_evaluation_loses_nothing(tiny_hopper, tmp_path, monkeypatch):
    import common.evaluation

    flags = ["--dataset", tiny_hopper, *small("td3_bc", "--total-steps", "80", "--eval-every", "40",
                                             "--eval-episodes", "1")]
    real = common.evaluation.evaluate

    def fails_at_the_end(*args, **kwargs):
        if fails_at_the_end.calls == 1:  # the second evaluation is the final one
            raise RuntimeError("the simulator crashed")
        fails_at_the_end.calls += 1
        return real(*args, **kwargs)

    fails_at_the_end.calls = 0
    monkeypatch.setattr(common.evaluation, "evaluate", fails_at_the_end)
    with pytest.raises(RuntimeError, match="the simulator crashed"):
        run_in_process("td3_bc", [*flags, "--runs-dir", str(tmp_path / "crashed")])
    monkeypatch.setattr(common.evaluation, "evaluate", real)  # (not undo(): it would drop MINARI_DATASETS_PATH too)
    run_dir = only_run_dir(tmp_path / "crashed")
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 80  # the training survived the evaluation
    assert not (run_dir / "result.json").exists()

    run_in_process("td3_bc", ["--resume", str(run_dir), "--no-progress"])  # evaluates, finishes
    run_in_process("td3_bc", [*flags, "--runs-dir", str(tmp_path / "clean")])
    clean_dir = only_run_dir(tmp_path / "clean")
    resumed, clean = (json.loads((d / "result.json").read_text()) for d in (run_dir, clean_dir))
    assert resumed["evals"] == clean["evals"] and [e["step"] for e in clean["evals"]] == [40, 80]
    a, b = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(clean_dir / "checkpoint.pt")
    assert_same_state({k: v for k, v in a.items() if k != "args"}, {k: v for k, v in b.items() if k != "args"})


# ----------------------------------------------------------------------------------------------
# 4. Bad input: one line, no traceback, nothing half-written
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut short by a crash"])
def test_a_truncated_flat_cache_is_rebuilt(content, tiny_hopper, capfd):
    first = load_dataset(tiny_hopper)
    cache = datasets_root() / tiny_hopper / CACHE_FILE
    assert cache.is_file()
    cache.write_bytes(content)
    orphan = cache.with_name(f".{CACHE_FILE}.{dead_pid()}.tmp.npz")  # a cache write killed before its rename
    orphan.write_bytes(b"half")
    again = load_dataset(tiny_hopper)
    assert "is unreadable" in capfd.readouterr().err
    np.testing.assert_array_equal(again.observations, first.observations)
    assert cache.stat().st_size > 1000 and not orphan.exists()
    load_dataset(tiny_hopper)  # and read from the rebuilt cache without complaint
    assert "unreadable" not in capfd.readouterr().err


def test_runs_dir_that_is_a_file_or_under_one(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    line = one_line_error(run_script("bc", "--runs-dir", str(afile)))
    assert line == f"error: --runs-dir {afile} is a file, not a folder"
    line = in_process_error("bc", "--runs-dir", str(afile / "runs"))
    assert line == f"--runs-dir {afile / 'runs'} cannot be created: {afile} is a file, not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_runs_dir_without_write_permission_or_on_a_read_only_mount(tmp_path, monkeypatch):
    # root writes anywhere, so the test stands in for the OS's answers rather than chmod-ing a folder
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ArgumentError, match=r"^--runs-dir .*/new: cannot write there \(in .*\): no write permission$"):
        check_runs_dir(str(tmp_path / "new"))
    monkeypatch.setattr(os, "statvfs", lambda path: type("S", (), {"f_flag": os.ST_RDONLY})())
    with pytest.raises(ArgumentError, match=r"cannot write there: a read-only file system$"):
        check_runs_dir(str(tmp_path))


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny_hopper, tmp_path):
    flags = ["--dataset", tiny_hopper, "--runs-dir", str(tmp_path / "runs"), *SMALL, "--eval-every", "50",
             "--eval-episodes", "1"]  # full-size networks: a checkpoint of ~0.9 MB
    run_in_process("bc", [*flags, "--total-steps", "40"])
    run_dir = only_run_dir(tmp_path / "runs")
    before = (run_dir / "checkpoint.pt").read_bytes()

    def small_disk():  # files may not grow past 64 kB (Python ignores SIGXFSZ, so a write fails with EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64_000, 64_000))

    proc = run_script("bc", "--resume", str(run_dir), "--total-steps", "80", "--no-progress",
                      preexec_fn=small_disk)
    line = one_line_error(proc)
    assert line.startswith(f"error: could not write checkpoint {run_dir / 'checkpoint.pt'}: "), line
    assert line.endswith("; the previous checkpoint is unchanged"), line
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == 40
    assert not list(run_dir.glob("*.tmp*"))


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999"])
def test_seed_out_of_range(seed, tmp_path):
    line = in_process_error("bc", "--seed", seed, "--runs-dir", str(tmp_path))
    assert line == f"--seed must be an integer in [0, 2**32), got {int(seed)}"


def test_leftovers_of_killed_writes_are_removed_on_the_next_start(tiny_hopper, tmp_path):
    run_in_process("bc", ["--dataset", tiny_hopper, "--runs-dir", str(tmp_path / "runs"),
                          *small("bc", "--total-steps", "40", "--eval-episodes", "0")])
    run_dir = only_run_dir(tmp_path / "runs")
    orphan = run_dir / f"checkpoint.pt.tmp{dead_pid()}"  # a checkpoint write killed before its rename
    live = run_dir / f"checkpoint.pt.tmp{os.getpid()}"  # one being written now by a live process: kept
    half_json = run_dir / "result.json.tmp"
    for p in (orphan, live, half_json):
        p.write_bytes(b"half")
    run_in_process("bc", ["--resume", str(run_dir), "--no-progress"])
    assert not orphan.exists() and not half_json.exists() and live.exists()


def test_a_killed_suite_build_leaves_no_hidden_folder_behind(minari_root):
    from benchmarks.suite import build

    orphan = minari_root / f".stitch-build-{dead_pid()}-abc123"
    (orphan / "stitch" / "x").mkdir(parents=True)
    live = minari_root / f".stitch-build-{os.getpid()}-def456"  # a build running now
    live.mkdir()
    with pytest.raises(RuntimeError, match="stop here"):
        with build._new_dataset("test/none/x-v0", force=False, env=__import__("gymnasium").make("Pendulum-v1"),
                                algorithm_name="none", description="none"):
            raise RuntimeError("stop here")
    assert not orphan.exists() and live.exists()
    assert [p.name for p in minari_root.iterdir() if p.name.startswith(".stitch-build-")] == [live.name]


# ----------------------------------------------------------------------------------------------
# 5. --resume with other flags
# ----------------------------------------------------------------------------------------------
def test_resume_warns_about_the_flags_it_ignores(tiny_hopper, tmp_path, capfd):
    run_in_process("bc", ["--dataset", tiny_hopper, "--runs-dir", str(tmp_path / "runs"),
                          *small("bc", "--total-steps", "40", "--eval-episodes", "0")])
    run_dir = only_run_dir(tmp_path / "runs")
    capfd.readouterr()
    run_in_process("bc", ["--resume", str(run_dir), "--no-progress", "--actor-lr", "0.1", "--batch-size", "64",
                          "--checkpoint-minutes", "5"])
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: a resumed run keeps its own settings; ignoring --batch-size 64 (the run has 32), "
                        "--actor-lr 0.1 (the run has 0.0003)"], err
    assert json.loads((run_dir / "args.json").read_text())["batch_size"] == 32
    assert json.loads((run_dir / "args.json").read_text())["checkpoint_minutes"] == 5  # may change on resume


@pytest.mark.parametrize("algo", ["bc", "td3_bc"])
def test_raising_total_steps_on_resume_equals_a_longer_run(algo, tiny_hopper, tmp_path, capfd):
    flags = ["--dataset", tiny_hopper, *small(algo, "--eval-every", "40", "--eval-episodes", "1")]
    run_in_process(algo, [*flags, "--runs-dir", str(tmp_path / "short"), "--total-steps", "80"])
    run_dir = only_run_dir(tmp_path / "short")
    run_in_process(algo, ["--resume", str(run_dir), "--total-steps", "160", "--no-progress"])
    assert f"{algo}: extending the run from 80 to 160 updates" in capfd.readouterr().err
    run_in_process(algo, [*flags, "--runs-dir", str(tmp_path / "long"), "--total-steps", "160"])
    long_dir = only_run_dir(tmp_path / "long")

    a, b = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(long_dir / "checkpoint.pt")
    assert a["step"] == b["step"] == 160
    assert_same_state({k: v for k, v in a.items() if k != "args"}, {k: v for k, v in b.items() if k != "args"})
    extended, longer = (json.loads((d / "result.json").read_text()) for d in (run_dir, long_dir))
    assert extended["evals"] == longer["evals"] and [e["step"] for e in longer["evals"]] == [40, 80, 120, 160]
    assert extended["final_score"] == longer["final_score"]


def test_total_steps_that_cannot_change_on_resume(tiny_hopper, tmp_path):
    run_in_process("iql", ["--dataset", tiny_hopper, "--runs-dir", str(tmp_path / "runs"),
                           *small("iql", "--total-steps", "40", "--eval-episodes", "0")])
    run_dir = only_run_dir(tmp_path / "runs")
    line = in_process_error("iql", "--resume", str(run_dir), "--total-steps", "80")
    assert line == ("--total-steps cannot change when resuming a iql run: its actor's learning rate decays "
                    "to 0 over --total-steps (the run has --total-steps 40)")
    run_in_process("bc", ["--dataset", tiny_hopper, "--runs-dir", str(tmp_path / "bc"),
                          *small("bc", "--total-steps", "40", "--eval-episodes", "0")])
    line = in_process_error("bc", "--resume", str(only_run_dir(tmp_path / "bc")), "--total-steps", "20")
    assert line == "--total-steps 20 is below the update this run already reached (40)"
    assert torch.load(only_run_dir(tmp_path / "bc") / "checkpoint.pt", weights_only=True)["step"] == 40


def test_the_bad_input_page_quotes_messages_the_code_prints():
    """Every message on docs/bad_input.md is in the code: each literal piece between `{…}` placeholders appears in
    the sources (strings split over lines joined), so the page cannot drift from what users see."""
    import re

    sources = [*(ROOT / "common").glob("*.py"), ROOT / "algorithms" / "iql.py",
               ROOT / "benchmarks" / "suite" / "build.py", ROOT / "algorithms" / "ope.py",
               ROOT / "algorithms" / "fqe.py"]
    code = "".join(p.read_text() for p in sources)
    code = re.sub(r"\"\s*\n\s*(\+\s*)?f?\"", "", code)  # "abc "\n  f"def" -> "abc def"
    page = (ROOT / "docs" / "bad_input.md").read_text()
    messages = re.findall(r"^\|[^|]+\| `([^`]+)`", page, flags=re.M)
    assert len(messages) >= 25
    missing = []
    for message in messages:
        message = message.removeprefix("error: ").removeprefix("warning: ")
        for piece in re.split(r"\{[^}]*\}|…", message):
            piece = piece.strip(" .':;(),")
            # flag errors are composed by common.config.require: "--<flag> " + message + ", got <value>"
            piece = re.sub(r",? got$", "", re.sub(r"^--[a-z-]+:? ", "", piece))
            piece = re.sub(r" --[a-z-]*$", "", piece).strip(" .':;(),")
            if len(piece) >= 8 and piece not in code:
                missing.append((message, piece))
    assert missing == []
