"""A run killed with SIGKILL, or stopped with Ctrl-C, and resumed reaches the same state as one never interrupted.

Every algorithm script is started as a user starts it (`python algorithms/<algo>.py ...`), killed with
SIGKILL once it has written a checkpoint (the run goes on from that checkpoint), or sent SIGINT as Ctrl-C does
(the script finishes its update, writes a checkpoint at that update, prints the command that resumes it and
exits with 130), resumed with `--resume <run>` (for SIGINT: the printed command), and compared with an
uninterrupted run of the same flags (same seed, CPU). The resumed and the uninterrupted runs go through the script's own
`train(tyro.cli(Args))` in this process, one thread like the subprocess, which saves two interpreter
start-ups (most of the test's time). Only the flags all scripts share are used (plus `--hidden-dim` where it
exists, for speed); scripts that do not exist yet are skipped.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import tyro

from common.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ALGOS = ["iql", "bc", "td3_bc", "cql", "cal_ql", "awr", "awac", "crr", "sql", "eql", "xql", "onestep", "bcq", "bear",
         "brac", "mopo", "combo", "dt", "tt", "diffuser"]
DISCRETE_ALGOS = ["bc_discrete", "bcq_discrete", "cql_discrete", "spibb"]  # on a discrete dataset (tiny_cartpole)

TOTAL_STEPS, CHECKPOINT_EVERY, KILL_AT = 300, 50, 100  # killed between its checkpoints at 100 and 300
COMMON = ["--seed", "1", "--total-steps", str(TOTAL_STEPS), "--eval-every", "150", "--eval-episodes", "2",
          "--log-every", "50", "--checkpoint-every", str(CHECKPOINT_EVERY), "--no-progress", "--batch-size", "32"]


def args_fields(algo: str) -> set[str]:
    """The field names of a script's `Args` dataclass, read from its source."""
    tree = ast.parse((ROOT / "algorithms" / f"{algo}.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Args"]
    return {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}


def command(algo: str, *flags: str) -> list[str]:
    return [sys.executable, str(ROOT / "algorithms" / f"{algo}.py"), *flags]


# Flags that only keep a script's test runs small, where its defaults cost minutes on a CPU (a planner at the paper's
# sizes runs at every environment step). tt: its training windows are 10 transitions of tokens and its planner runs a
# forward pass per token of a 15-step plan for 128 beams; diffuser: a U-Net of 4 levels over 32 steps, 20 denoising
# steps, 64 plans per state. Shorter windows and small planners exercise the same code.
SMALL_FLAGS = {"tt": ["--sequence-length", "3", "--max-context-transitions", "1", "--n-bins", "20",
                      "--beam-width", "4", "--horizon", "2"],
               "diffuser": ["--hidden-dim", "16", "--dim-mults", "1", "8", "--horizon", "8", "--diffusion-steps", "4",
                            "--plan-samples", "2"]}


def first_run_flags(algo: str) -> list[str]:
    """The shared flags, plus small networks where the script has `hidden_dim` and SMALL_FLAGS (only to keep the
    test fast)."""
    return COMMON + (["--hidden-dim", "32"] if "hidden_dim" in args_fields(algo) else []) + SMALL_FLAGS.get(algo, [])


def environment(minari_root: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(minari_root)}


def only_run_dir(runs_dir: Path) -> Path:
    dirs = [p for p in runs_dir.iterdir() if p.is_dir()] if runs_dir.is_dir() else []
    assert len(dirs) == 1, f"expected one run folder under {runs_dir}, found {dirs}"
    return dirs[0]


def assert_same_state(a, b, path: str = "checkpoint") -> None:
    """Exact equality of every tensor, number and string, recursively."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same_state(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def kill_and_resume(algo: str, dataset: str, flags: list[str], env: dict, tmp_path: Path,
                    sig: signal.Signals = signal.SIGKILL) -> Path:
    # 1. start a run, send it `sig` once a checkpoint at step >= KILL_AT exists
    killed_runs = tmp_path / "killed"
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command(algo, "--dataset", dataset, "--runs-dir", str(killed_runs), *flags),
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline, step = time.time() + 300, -1
    try:
        while step < KILL_AT:
            assert proc.poll() is None, f"{algo} exited before step {KILL_AT}:\n{log.read_text()}"
            assert time.time() < deadline, f"{algo}: no checkpoint at step >= {KILL_AT} after 300 s"
            ckpts = list(killed_runs.glob("*/checkpoint.pt"))
            if ckpts:  # saves are atomic: a reader never sees half a checkpoint
                step = int(load_checkpoint(ckpts[0])["step"])
            time.sleep(0.02)
        proc.send_signal(sig)
        proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    run_dir = only_run_dir(killed_runs)
    at_kill = int(load_checkpoint(run_dir / "checkpoint.pt")["step"])
    assert KILL_AT <= at_kill < TOTAL_STEPS, f"the run was not interrupted mid-way (checkpoint at {at_kill})"
    assert not (run_dir / "result.json").exists()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        resume = ["--resume", str(run_dir)]
    else:  # the script stopped itself: checkpoint at the update it was in (not a multiple of 50, mostly), exit 130
        assert proc.returncode == 128 + sig, log.read_text()
        out = log.read_text()
        assert f"stopped at update {at_kill} by {sig.name}; checkpoint written. Resume with:" in out, out
        printed = out.split("Resume with:\n", 1)[1].split("\n", 1)[0].split()
        assert printed[:2] == ["python", f"algorithms/{algo}.py"] and printed[2] == "--resume", printed
        assert (ROOT / printed[3]).resolve() == run_dir.resolve()
        resume = printed[2:]

    # 2. resume it to the end (in-process, which saves a start-up: the same `train(tyro.cli(Args))` as the CLI)
    run_in_process(algo, [*resume, "--no-progress"])
    return run_dir


def run_in_process(algo: str, flags: list[str]) -> None:
    """`python algorithms/<algo>.py FLAGS` in this process (one thread, like the subprocesses): saves a start-up."""
    name = f"stitch_test_{algo}"
    spec = importlib.util.spec_from_file_location(name, ROOT / "algorithms" / f"{algo}.py")
    module = importlib.util.module_from_spec(spec)
    threads = torch.get_num_threads()
    sys.modules[name] = module  # dataclasses and tyro look the module up by name
    try:
        spec.loader.exec_module(module)
        torch.set_num_threads(1)
        module.train(tyro.cli(module.Args, args=flags))
    finally:
        torch.set_num_threads(threads)
        del sys.modules[name]


# Every script's SIGINT variant (which also resumes from a checkpoint, the one its handler writes) runs in the fast
# tier; the SIGKILL variant, resuming from the periodic checkpoint that the same save() writes on a schedule common/
# keeps, runs in the fast tier for a few cheap scripts and in the slow tier (CI runs it) for the rest: those pairs
# of runs cost 5-25 s each and were ~40% of the fast tier's time.
FAST_SIGKILL = {"bc", "iql", "td3_bc", "bc_discrete", "spibb"}


def sigkill_marks(algo: str, sig: signal.Signals) -> list:
    return [pytest.mark.slow] if sig == signal.SIGKILL and algo not in FAST_SIGKILL else []


@pytest.mark.parametrize("algo, sig", [
    pytest.param(algo, sig, id=f"{algo}-{sig.name}", marks=sigkill_marks(algo, sig))
    for algo in ALGOS for sig in (signal.SIGKILL, signal.SIGINT)])
def test_interrupt_and_resume_matches_an_uninterrupted_run(algo, sig, minari_root, tiny_hopper, tmp_path):
    check_interrupt_and_resume(algo, sig, minari_root, tiny_hopper, tmp_path)


@pytest.mark.parametrize("algo, sig", [
    pytest.param(algo, sig, id=f"{algo}-{sig.name}", marks=sigkill_marks(algo, sig))
    for algo in DISCRETE_ALGOS for sig in (signal.SIGKILL, signal.SIGINT)])
def test_discrete_interrupt_and_resume_matches_an_uninterrupted_run(algo, sig, minari_root, tiny_cartpole, tmp_path):
    check_interrupt_and_resume(algo, sig, minari_root, tiny_cartpole, tmp_path)


def check_interrupt_and_resume(algo: str, sig: signal.Signals, minari_root: Path, dataset: str, tmp_path: Path) -> None:
    if not (ROOT / "algorithms" / f"{algo}.py").is_file():
        pytest.skip(f"algorithms/{algo}.py does not exist yet")
    flags = first_run_flags(algo)

    # 1-2. a run killed (SIGKILL) or stopped (SIGINT) mid-way, then resumed to the end
    run_dir = kill_and_resume(algo, dataset, flags, environment(minari_root), tmp_path, sig)
    # 3. the same run, never interrupted
    clean_runs = tmp_path / "clean"
    run_in_process(algo, ["--dataset", dataset, "--runs-dir", str(clean_runs), *flags])
    clean_dir = only_run_dir(clean_runs)

    resumed, clean = load_checkpoint(run_dir / "checkpoint.pt"), load_checkpoint(clean_dir / "checkpoint.pt")
    assert resumed["step"] == clean["step"] == TOTAL_STEPS
    tensors = [k for k, v in clean.items() if isinstance(v, dict) and any(isinstance(t, torch.Tensor)
                                                                          for t in v.values())]
    assert len(tensors) >= 2, f"{algo}: expected networks and optimizer states in the checkpoint, got {list(clean)}"
    # everything but the saved command-line arguments (runs_dir and resume differ by construction)
    assert_same_state({k: v for k, v in resumed.items() if k != "args"},
                      {k: v for k, v in clean.items() if k != "args"})

    r_resumed = json.loads((run_dir / "result.json").read_text())
    r_clean = json.loads((clean_dir / "result.json").read_text())
    assert r_resumed["final_score"] == r_clean["final_score"]
    assert r_resumed["evals"] == r_clean["evals"] and len(r_clean["evals"]) == 2

    # metrics.jsonl: the steps logged between the last checkpoint and the kill are not repeated
    def logged(run: Path) -> list[tuple[int, tuple[str, ...]]]:
        records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        return [(r["step"], tuple(sorted(r))) for r in records]

    assert logged(run_dir) == logged(clean_dir)


@pytest.mark.parametrize("algo", ["mopo", "combo"])
def test_ctrl_c_while_the_dynamics_model_trains_resumes_to_an_uninterrupted_run(algo, minari_root, tiny_hopper,
                                                                                 tmp_path):
    """The model-based scripts train their dynamics model before the first update: Ctrl-C there stops the process
    (exit 130, no traceback) with the training's state saved, and the printed command finishes the run as one
    never interrupted."""
    flags = first_run_flags(algo) + ["--dynamics-hidden-dim", "16", "--max-dynamics-epochs", "300",
                                     "--max-epochs-since-update", "300", "--dynamics-checkpoint-every", "1"]
    runs, log = tmp_path / "stopped", tmp_path / "stopped.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command(algo, "--dataset", tiny_hopper, "--runs-dir", str(runs), *flags),
                                stdout=out, stderr=subprocess.STDOUT, env=environment(minari_root), cwd=ROOT)
    try:
        deadline = time.time() + 120
        while not list(runs.glob("*/dynamics_training.pt")):  # a few epochs in
            assert proc.poll() is None, f"{algo} exited before its dynamics training checkpointed:\n{log.read_text()}"
            assert time.time() < deadline, f"{algo}: no dynamics_training.pt after 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    out = log.read_text()
    assert proc.returncode == 130 and "Traceback" not in out, out
    run_dir = only_run_dir(runs)
    assert not (run_dir / "dynamics.pt").exists(), "the dynamics training finished before the signal"
    assert 1 <= load_checkpoint(run_dir / "dynamics_training.pt")["epoch"] < 300
    assert "stopped at update 0 by SIGINT; checkpoint written. Resume with:" in out, out
    printed = out.split("Resume with:\n", 1)[1].split("\n", 1)[0].split()
    assert printed[:3] == ["python", f"algorithms/{algo}.py", "--resume"], printed
    run_in_process(algo, [*printed[2:], "--no-progress"])

    clean_runs = tmp_path / "clean"
    run_in_process(algo, ["--dataset", tiny_hopper, "--runs-dir", str(clean_runs), *flags])
    clean_dir = only_run_dir(clean_runs)
    for name in ("dynamics.pt", "checkpoint.pt"):  # all but the settings and the dynamics' training time
        a, b = load_checkpoint(run_dir / name), load_checkpoint(clean_dir / name)
        assert_same_state({k: v for k, v in a.items() if k not in ("args", "info")},
                          {k: v for k, v in b.items() if k not in ("args", "info")}, name)
    dyn_a, dyn_b = (json.loads((d / "dynamics.json").read_text()) for d in (run_dir, clean_dir))
    assert dyn_a.pop("seconds") > 0 and dyn_b.pop("seconds") > 0
    assert dyn_a == dyn_b and dyn_a["epochs"] == 300  # the per-epoch losses and holdout MSEs too
    assert not (run_dir / "dynamics_training.pt").exists()
