"""`--compile` computes what the eager update computes, and a compiled run resumes exactly (CPU).

For every script, in this process (one thread, small networks, 30 updates, no evaluation):
1. an eager run and a `--compile` run of the same flags end with the same networks, optimizer states and logged
   losses, to float32 round-off (inductor fuses and reorders floating-point work, so bits may differ:
   `RTOL`/`ATOL` below); random draws inside the update are torch's own in both (common/fast.py), so the runs
   see the same minibatches and the same sampled actions;
2. a `--compile` run stopped by SIGINT part-way (the same path as Ctrl-C: finish the update, checkpoint, exit
   130) and resumed with `--resume` ends bit-identical to the uninterrupted `--compile` run.
Compilation takes seconds per script, so these tests form their own tier: `pytest -m compile` (CI runs it).
`STITCH_TEST_DEVICE=cuda` runs the same on a GPU, where `--compile` also captures the update as one CUDA graph
(benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from test_resume import (ALGOS, DISCRETE_ALGOS, ROOT, SMALL_FLAGS, args_fields, assert_same_state, only_run_dir,
                         run_in_process)

from torch._dynamo.utils import counters

from common.checkpoints import load_checkpoint

pytestmark = pytest.mark.compile

STEPS, STOP_AFTER = 30, 10
DEVICE = os.environ.get("STITCH_TEST_DEVICE", "cpu")
RTOL, ATOL = 1e-4, 1e-5
# Adam's first steps move a weight by about its learning rate whatever the size of its gradient, so a weight whose
# gradient is ~1e-9 (the tail of a U-Net's ~10^6 weights: diffuser's) moves by a fraction of lr = 2e-4 on float32
# round-off alone, eager against compiled (measured: 3.6e-5 after one update, where the gradient was 5e-10 vs 2e-10)
# mopo, combo: --compile also compiles the dynamics ensemble's training loss, whose float32 rounding differs from
# eager by ~1e-7 per step; over its epochs the model's predictions drift by ~1e-4, and the rollouts, the model
# buffer and the agent trained on them carry it (measured: 7.9e-5 in the model buffer's states).
WEIGHT_ATOL = {"diffuser": 1e-4, "mopo": 1e-3, "combo": 1e-3}


def flags(algo: str, runs: Path, *extra: str) -> list[str]:
    small = (["--hidden-dim", "16"] if "hidden_dim" in args_fields(algo) else []) + SMALL_FLAGS.get(algo, [])
    dataset = "test/cartpole/tiny-v0" if algo in DISCRETE_ALGOS else "test/hopper/tiny-v0"
    return ["--dataset", dataset, "--seed", "1", "--total-steps", str(STEPS), "--eval-every",
            str(STEPS), "--eval-episodes", "0", "--log-every", "5", "--checkpoint-every", str(STEPS),
            "--batch-size", "32", "--no-progress", "--runs-dir", str(runs), "--device", DEVICE, *small, *extra]


def assert_close(a, b, path: str = "checkpoint", atol: float = ATOL) -> None:
    """Tensors equal to RTOL/`atol` (integer tensors and everything else exactly), recursively."""
    if isinstance(a, torch.Tensor) and a.is_floating_point():
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, path
        assert torch.allclose(a, b, rtol=RTOL, atol=atol), f"{path}: max difference {(a - b).abs().max():.3g}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_close(a[k], b[k], f"{path}[{k!r}]", atol)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{path}[{i}]", atol)
    elif isinstance(a, float) and isinstance(b, float):
        assert abs(a - b) <= atol + RTOL * abs(b), f"{path}: {a} != {b}"
    elif isinstance(a, str) and a.startswith("{") and isinstance(b, str):  # metrics a checkpoint keeps as JSON
        assert_close(json.loads(a), json.loads(b), path, atol)
    else:
        assert_same_state(a, b, path)


def losses(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("time", "updates_per_s")}
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def interrupt_when_logged(monkeypatch, step: int) -> None:
    """Ctrl-C (SIGINT to this process) as the run logs `step`: from inside Run.log, so the signal's handler has set
    its flag before the next update, however fast the updates are (a watcher thread polling the metrics file let a
    fast script such as bc finish all its updates first on an idle machine)."""
    from common.logging import Run

    real, sent = Run.log, []

    def log(self, at: int, metrics: dict) -> None:
        real(self, at, metrics)
        if at >= step and not sent:
            sent.append(at)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Run, "log", log)


@pytest.mark.parametrize("algo", ALGOS)
def test_compiled_update_equals_eager_and_resumes_exactly(algo, minari_root, tiny_hopper, tmp_path, monkeypatch):
    check_compiled_equals_eager(algo, tmp_path, monkeypatch)


@pytest.mark.parametrize("algo", DISCRETE_ALGOS)
def test_discrete_compiled_update_equals_eager_and_resumes_exactly(algo, minari_root, tiny_cartpole, tmp_path,
                                                                   monkeypatch):
    check_compiled_equals_eager(algo, tmp_path, monkeypatch)


def check_compiled_equals_eager(algo: str, tmp_path: Path, monkeypatch) -> None:
    if not (ROOT / "algorithms" / f"{algo}.py").is_file():
        pytest.skip(f"algorithms/{algo}.py does not exist yet")
    monkeypatch.setenv("STITCH_COMPILE_CPU", "1")  # compiled on CPU too where a script runs eager there by default
    run_in_process(algo, flags(algo, tmp_path / "eager"))
    captured = counters["stats"]["calls_captured"]
    run_in_process(algo, flags(algo, tmp_path / "compiled", "--compile"))
    assert counters["stats"]["calls_captured"] > captured, "--compile compiled nothing"
    eager, compiled = only_run_dir(tmp_path / "eager"), only_run_dir(tmp_path / "compiled")
    e, c = load_checkpoint(eager / "checkpoint.pt"), load_checkpoint(compiled / "checkpoint.pt")
    assert e["step"] == c["step"] == STEPS
    assert json.loads(c["args"])["compile"] and not json.loads(e["args"])["compile"]
    assert_close({k: v for k, v in e.items() if k != "args"}, {k: v for k, v in c.items() if k != "args"},
                 atol=WEIGHT_ATOL.get(algo, ATOL))
    le, lc = losses(eager), losses(compiled)
    assert [r["step"] for r in le] == [r["step"] for r in lc] == list(range(5, STEPS + 1, 5))
    for re_, rc in zip(le, lc):
        assert re_.keys() == rc.keys()
        for k in re_:
            assert abs(re_[k] - rc[k]) <= ATOL + RTOL * 10 * abs(re_[k]), (k, re_, rc)

    # Stopped by SIGINT part-way, then resumed: bit-identical to the uninterrupted compiled run.
    stopped_root = tmp_path / "stopped"
    with monkeypatch.context() as patch:
        interrupt_when_logged(patch, STOP_AFTER)
        with pytest.raises(SystemExit) as stop:
            run_in_process(algo, flags(algo, stopped_root, "--compile"))
    assert stop.value.code == 128 + signal.SIGINT
    stopped = only_run_dir(stopped_root)
    at_stop = load_checkpoint(stopped / "checkpoint.pt")["step"]
    assert STOP_AFTER <= at_stop < STEPS and not (stopped / "result.json").exists()
    run_in_process(algo, ["--resume", str(stopped), "--no-progress"])
    r = load_checkpoint(stopped / "checkpoint.pt")
    assert_same_state({k: v for k, v in r.items() if k != "args"}, {k: v for k, v in c.items() if k != "args"})
    assert losses(stopped) == losses(compiled)


def test_an_update_measured_slower_compiled_on_cpu_runs_eager_there(monkeypatch, capsys):
    from common.fast import fast_update

    def update() -> dict:
        return {}

    monkeypatch.delenv("STITCH_COMPILE_CPU", raising=False)
    assert fast_update(update, torch.device("cpu"), compile=True, cpu=False) is update
    assert "runs eager on CPU" in capsys.readouterr().err
    assert fast_update(update, torch.device("cpu"), compile=False) is update
    assert fast_update(update, torch.device("cpu"), compile=True) is not update  # compiled
    monkeypatch.setenv("STITCH_COMPILE_CPU", "1")
    assert fast_update(update, torch.device("cpu"), compile=True, cpu=False) is not update
