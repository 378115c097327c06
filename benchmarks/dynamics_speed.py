"""Time the dynamics ensemble of the model-based scripts (mopo.py, combo.py) training to early stopping.

    python benchmarks/dynamics_speed.py                                   # stitch/hopper/medium-v0, mopo.py, CPU
    python benchmarks/dynamics_speed.py --dataset stitch/hopper/medium-replay-v0 --device cuda
    python benchmarks/dynamics_speed.py --max-dynamics-epochs 3           # a few epochs only: the time per epoch

The script runs as a user runs it (`python algorithms/<algo>.py ...`) for a single agent update with no
evaluation and a one-state rollout, so nearly all of its time is the dynamics model's training; the figures come
from the `dynamics.json` it writes in its run folder (epochs, seconds, holdout MSE per member, elites) and are
written, with the machine, the dataset's size and the wall time of the whole command, to
benchmarks/results/dynamics_speed_<device>.json (or `--out`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-v0"
    """Dataset whose dynamics model is trained (stitch/... ids are built when missing; medium has 1M transitions)."""
    algo: str = "mopo"
    """The model-based script that trains the model (mopo or combo: the same model code)."""
    device: str = "cpu"
    """Device passed to the script."""
    threads: int | None = None
    """torch threads (default: what torch picks, i.e. all cores)."""
    seed: int = 0
    """Seed of the model's initialization, holdout split and minibatches."""
    max_dynamics_epochs: int | None = None
    """Stop after this many epochs (None: train to early stopping, as a run does)."""
    out: str | None = None
    """Results file (default benchmarks/results/dynamics_speed_<device>.json)."""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(args: Args) -> dict:
    if args.algo not in ("mopo", "combo"):
        raise SystemExit(f"error: --algo must be mopo or combo, got {args.algo!r}")
    env = dict(os.environ)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(ROOT / "algorithms" / f"{args.algo}.py"), "--dataset", args.dataset,
               "--seed", str(args.seed), "--device", args.device, "--runs-dir", tmp, "--total-steps", "1",
               "--eval-episodes", "0", "--log-every", "1", "--checkpoint-every", "1", "--rollout-batch", "1",
               "--batch-size", "2", "--hidden-dim", "8", "--no-progress"]
        if args.max_dynamics_epochs is not None:
            cmd += ["--max-dynamics-epochs", str(args.max_dynamics_epochs)]
        start = time.time()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"error: {args.algo}.py failed:\n{proc.stderr[-3000:]}")
        (run_dir,) = Path(tmp).iterdir()
        dyn = json.loads((run_dir / "dynamics.json").read_text())
    import torch

    record = {
        "dataset": args.dataset, "algo": args.algo, "device": args.device, "seed": args.seed,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name(),
        "threads": args.threads or torch.get_num_threads(), "torch": torch.__version__,
        "transitions": dyn["train_size"] + dyn["holdout_size"], "train_size": dyn["train_size"],
        "holdout_size": dyn["holdout_size"], "epochs": dyn["epochs"],
        "early_stopped": args.max_dynamics_epochs is None or dyn["epochs"] < args.max_dynamics_epochs,
        "seconds": round(dyn["seconds"], 2), "seconds_per_epoch": round(dyn["seconds"] / dyn["epochs"], 3),
        "command_seconds": round(wall, 2), "holdout_mse": dyn["holdout_mse"], "elites": dyn["elites"],
    }
    default = ROOT / "benchmarks" / "results" / f"dynamics_speed_{args.device.split(':')[0]}.json"
    out = Path(args.out) if args.out else default
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.algo} dynamics on {args.dataset} ({record['transitions']} transitions, {record['device_name']}, "
          f"{record['threads']} threads): {record['epochs']} epochs in {record['seconds']:.1f} s "
          f"({record['seconds_per_epoch']:.2f} s/epoch) -> {out}")
    return record


if __name__ == "__main__":
    main(tyro.cli(Args))
