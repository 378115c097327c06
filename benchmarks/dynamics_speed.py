"""Time the dynamics ensemble of the model-based scripts (mopo.py, combo.py) training to early stopping.

    python benchmarks/dynamics_speed.py                                   # stitch/hopper/medium-v0, mopo.py, CPU
    python benchmarks/dynamics_speed.py --dataset stitch/hopper/medium-replay-v0 --device cuda
    python benchmarks/dynamics_speed.py --max-dynamics-epochs 3           # a few epochs only: the time per epoch
    OMP_NUM_THREADS=1 python benchmarks/dynamics_speed.py --synthetic 1000000 --steps 100   # steps/s, no dataset

With `--synthetic N` it builds no dataset and runs no script: it calls the script's own `train_dynamics` on N
random transitions of Hopper's shape (11 + 3 inputs, 12 outputs) and times its first `--steps` gradient steps
(after `--warmup` more): the steps/s of exactly the step a run takes, and the seconds per epoch it implies on N
transitions (the steps of an epoch at that rate plus the epoch's reshuffle and holdout evaluation, both timed),
written to benchmarks/results/dynamics_speed_<device>_synthetic.json (or `--out`).

Without `--synthetic`, the script runs as a user runs it (`python algorithms/<algo>.py ...`) for a single agent
update with no evaluation and a one-state rollout, so nearly all of its time is the dynamics model's training; the
figures come from the `dynamics.json` it writes in its run folder (epochs, seconds, holdout MSE per member,
elites) and are written, with the machine, its load average (other work on the cores slows the matmuls that bound
the training, and several threads far more than one), the dataset's size and the wall time of the whole command, to
benchmarks/results/dynamics_speed_<device>.json (or `--out`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.speed import cpu_name  # noqa: E402


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
    compile: bool = False
    """Pass --compile (the dynamics loss through torch.compile)."""
    synthetic: int | None = None
    """Time the training step on this many random transitions instead of training on --dataset (see above)."""
    steps: int = 100
    """With --synthetic: the gradient steps timed."""
    warmup: int = 5
    """With --synthetic: untimed steps before them (with --compile, compilation happens here)."""
    out: str | None = None
    """Results file (default benchmarks/results/dynamics_speed_<device>[_synthetic].json)."""


class _Clock:
    """The `stop` that train_dynamics checks after every gradient step: notes the time of each check, and says
    stop after `n` of them."""

    def __init__(self, n: int):
        self.n, self.times = n, []

    def __bool__(self) -> bool:
        self.times.append(time.perf_counter())
        return len(self.times) >= self.n


def synthetic(args: Args) -> dict:
    """Time `--steps` steps of the script's train_dynamics on `--synthetic` random transitions (see the docstring)."""
    import importlib

    import numpy as np
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    script = importlib.import_module(f"algorithms.{args.algo}")
    defaults = script.Args()
    device = torch.device(args.device)
    rng = np.random.default_rng(args.seed)
    n, obs_dim, act_dim = args.synthetic, 11, 3
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    next_obs = (obs + 0.1 * rng.normal(size=(n, obs_dim))).astype(np.float32)
    rew = rng.normal(size=n).astype(np.float32)
    torch.manual_seed(args.seed)
    model = script.EnsembleDynamics(obs_dim, act_dim, defaults.dynamics_hidden_dim, defaults.ensemble_size,
                                    defaults.num_elites).to(device)
    clock = _Clock(args.warmup + args.steps + 1)
    start = time.perf_counter()
    script.train_dynamics(model, obs, act, next_obs, rew, defaults, torch.Generator().manual_seed(args.seed), device,
                          checkpoint=lambda state: None, stop=clock, compile=args.compile)
    timed = clock.times[args.warmup:]
    per_step = (timed[-1] - timed[0]) / (len(timed) - 1)
    # what else an epoch does: its reshuffle (an argsort of E x n_train) and the holdout evaluation
    n_hold = max(1, min(int(n * defaults.holdout_ratio), 5000))
    n_train, E, B = n - n_hold, defaults.ensemble_size, defaults.dynamics_batch_size
    t = time.perf_counter()
    boot = torch.randint(0, n_train, (E, n_train), device=device)
    boot.gather(1, torch.rand(E, n_train).argsort(1).to(device))
    x = torch.as_tensor(obs[:n_hold], device=device)
    a = torch.as_tensor(act[:n_hold], device=device)
    script.holdout_mse(model, x, a, torch.zeros(n_hold, obs_dim + 1, device=device))
    other = time.perf_counter() - t
    steps_per_epoch = -(-n_train // B)
    return {
        "mode": "synthetic", "algo": args.algo, "device": args.device, "compile": args.compile,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name(),
        "threads": torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2), "torch": torch.__version__,
        "transitions": n, "obs_dim": obs_dim,
        "act_dim": act_dim, "ensemble_size": E, "hidden": defaults.dynamics_hidden_dim, "batch_size": B,
        "steps_timed": len(timed) - 1, "warmup_steps": args.warmup, "ms_per_step": round(per_step * 1e3, 2),
        "steps_per_s": round(1 / per_step, 2), "steps_per_epoch": steps_per_epoch,
        "epoch_other_seconds": round(other, 2), "setup_seconds": round(max(0.0, clock.times[0] - start - per_step), 2),
        "projected_seconds_per_epoch": round(steps_per_epoch * per_step + other, 1),
    }


def main(args: Args) -> dict:
    if args.algo not in ("mopo", "combo"):
        raise SystemExit(f"error: --algo must be mopo or combo, got {args.algo!r}")
    if args.synthetic is not None:
        record = synthetic(args)
        default = ROOT / "benchmarks" / "results" / f"dynamics_speed_{args.device.split(':')[0]}_synthetic.json"
        out = Path(args.out) if args.out else default
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{args.algo} dynamics step ({record['device_name']}, {record['threads']} threads"
              f"{', compiled' if args.compile else ''}): {record['ms_per_step']:.1f} ms/step "
              f"({record['steps_per_s']:.1f} steps/s); an epoch on {record['transitions']} transitions "
              f"~{record['projected_seconds_per_epoch']:.0f} s -> {out}")
        return record
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
        if args.compile:
            cmd += ["--compile"]
        start = time.time()
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
        wall = time.time() - start
        if proc.returncode != 0:
            raise SystemExit(f"error: {args.algo}.py failed:\n{proc.stderr[-3000:]}")
        (run_dir,) = Path(tmp).iterdir()
        dyn = json.loads((run_dir / "dynamics.json").read_text())
    import torch

    record = {
        "dataset": args.dataset, "algo": args.algo, "device": args.device, "compile": args.compile, "seed": args.seed,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name(),
        "threads": args.threads or torch.get_num_threads(), "load_average": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
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
