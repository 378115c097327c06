"""Measure training updates per second of every algorithm at its default sizes.

    python benchmarks/speed.py                       # CPU, all cores, writes benchmarks/results/speed_cpu.json
    python benchmarks/speed.py --device cuda         # on a GPU machine -> speed_cuda.json
    python benchmarks/speed.py --compile             # each script eager and with --compile, side by side

Each script runs as it would for a user (`python algorithms/<algo>.py`), on a temporary Hopper-v5
dataset of random-action episodes (speed does not depend on the data), with no evaluation, for
`--steps` updates or `--max-seconds`, whichever comes first. The rate is taken between the first and
the last training log (every `--log-every` updates), so start-up and warm-up are not counted: with `--compile`
that includes compilation and, on CUDA, the graph's capture (all within the first log interval).

Peers' algorithms (benchmarks/peers/) are measured the same way, in the same file, so ours and theirs compare
in one table: `python benchmarks/speed.py --algos iql d3rlpy_iql` (d3rlpy's run in their own venv, made by
`python benchmarks/peers/make_d3rlpy_venv.py`, on the same data exported with our loader).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import training_scripts  # noqa: E402
ALL_ALGOS = training_scripts()  # the off-policy evaluators run no update loop of a policy to time


@dataclasses.dataclass
class Args:
    algos: list[str] = dataclasses.field(default_factory=lambda: ALL_ALGOS)
    """Algorithm script names (default: every script in algorithms/), or peers' (d3rlpy_iql, ...)."""
    steps: int = 3000
    """Updates per measurement at most (the first log interval is warm-up and not counted)."""
    max_seconds: float = 60.0
    """Wall-clock limit per algorithm; the script is stopped then and its logs so far are used."""
    log_every: int = 100
    """Interval between the logs the rate is computed from."""
    device: str = "cpu"
    """Device passed to the scripts."""
    threads: int | None = None
    """torch threads (default: what torch picks, i.e. all cores)."""
    compile: bool = False
    """Measure every script twice, eager and with its --compile, into `updates_per_s` and `updates_per_s_compiled`."""
    repeats: int = 1
    """Measurements per script (eager and compiled taking turns); the file keeps their median and every sample.
    On a shared or throttled CPU one measurement can be off by 10-20%."""
    out: str | None = None
    """Results file (default benchmarks/results/speed_<device>.json, speed_<device>_compile.json with --compile)."""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(out: Path, record: dict) -> None:
    """Write a measurement as indented JSON (its folder made, the file replaced in one rename) and say where."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}", file=sys.stderr)


def main(args: Args) -> None:
    from benchmarks.peers import PeerError, check_d3rlpy_venv, is_peer, peer_versions
    from benchmarks.synthetic import write_rollout_dataset

    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be at least 1, got {args.repeats}")
    for algo in args.algos:
        if not is_peer(algo) and not (ROOT / "algorithms" / f"{algo}.py").exists():
            raise SystemExit(f"error: no algorithms/{algo}.py and no peer algorithm {algo!r}")
        if is_peer(algo):
            try:
                check_d3rlpy_venv()
            except PeerError as e:
                raise SystemExit(f"error: {algo}: {e}") from None
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    results: dict[str, float] = {}
    compiled: dict[str, float] = {}
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env["MINARI_DATASETS_PATH"] = os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        write_rollout_dataset("speed/hopper/random-v0", episodes=200, max_steps=1000, seed=0)
        for algo in args.algos:
            variants = [("eager", [])] + ([("compiled", ["--compile"])] if args.compile and not is_peer(algo) else [])
            for r in range(args.repeats):
                for name, flags in variants:
                    rate = measure(algo, args, env, Path(tmp) / "runs" / f"{algo}_{name}_{r}", flags)
                    samples.setdefault(algo, {}).setdefault(name, []).append(rate)
            results[algo] = float(np.median(samples[algo]["eager"]))
            if "compiled" in samples[algo]:
                compiled[algo] = float(np.median(samples[algo]["compiled"]))
                print(f"{algo}: {compiled[algo] / results[algo]:.2f}x with --compile (medians)", flush=True)
    import torch

    record = {"updates_per_s": results, **({"updates_per_s_compiled": compiled} if args.compile else {}),
              **({"samples": samples, "repeats": args.repeats} if args.repeats > 1 else {}),
              "device": args.device,
              "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else cpu_name(),
              "cpu_count": os.cpu_count(), "threads": args.threads or torch.get_num_threads(),
              "torch": torch.__version__, "steps": args.steps, "max_seconds": args.max_seconds,
              "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:])}
    if any(is_peer(a) for a in args.algos):
        record["peers"] = peer_versions()
    default = f"speed_{args.device.split(':')[0]}{'_compile' if args.compile else ''}.json"
    write_results(Path(args.out or ROOT / "benchmarks" / "results" / default), record)


def measure(algo: str, args: Args, env: dict, runs: Path, flags: list[str]) -> float:
    """Updates/s of one script between its first and last training log, stopped after `--max-seconds`."""
    from benchmarks.peers import script_command

    cmd = [*script_command(algo), "--dataset", "speed/hopper/random-v0",
           "--total-steps", str(args.steps), "--eval-every", str(10 * args.steps), "--eval-episodes", "1",
           "--log-every", str(args.log_every), "--checkpoint-every", str(10 * args.steps),
           "--device", args.device, "--runs-dir", str(runs), "--no-progress", *flags]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    try:
        proc.wait(timeout=args.max_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    metrics = list(runs.glob("*/metrics.jsonl"))
    logs = [json.loads(x) for x in metrics[0].read_text().splitlines()] if metrics else []
    logs = [r for r in logs if "updates_per_s" in r]
    if len(logs) < 2:
        raise SystemExit(f"error: {algo} {' '.join(flags)} logged fewer than 2 times in {args.max_seconds}s; "
                         f"raise --max-seconds or lower --log-every")
    rate = (logs[-1]["step"] - logs[0]["step"]) / (logs[-1]["time"] - logs[0]["time"])
    print(f"{algo}{' ' + ' '.join(flags) if flags else ''}: {rate:.1f} updates/s", flush=True)
    return round(rate, 1)


if __name__ == "__main__":
    main(tyro.cli(Args))
