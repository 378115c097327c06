"""Measure how long the suite takes to build a dataset on this machine, and write a results file.

    python benchmarks/suite/build_speed.py                                    # stitch/hopper/medium-v0, 1M steps
    python benchmarks/suite/build_speed.py --ids stitch/hopper/random-v0 stitch/hopper/expert-v0 --workers 2

Each id is built from scratch into a temporary Minari root (your own datasets are not touched) exactly as
`python benchmarks/suite/build.py ID` builds it, and the wall time, the CPU time of this process and its
workers, and the machine's load average before and after are written to
benchmarks/results/build_speed_<cpus>cpu.json. Run it on an idle machine: other jobs sharing the cores
show up as a load average above the worker count, and the wall time then says little about the build.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


@dataclasses.dataclass
class Args:
    ids: list[str] = dataclasses.field(default_factory=lambda: ["stitch/hopper/medium-v0"])
    """Suite ids to build (python benchmarks/suite/build.py --list shows them)."""
    n_steps: int | None = None
    """Steps per level instead of the suite's (1M for the locomotion levels); for quick checks."""
    workers: int | None = None
    """Build processes (default: the suite's, min(cpu count, 2))."""
    out: str | None = None
    """Results file (default benchmarks/results/build_speed_<cpus>cpu.json)."""


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(args: Args) -> None:
    from benchmarks.suite import build as suite
    from benchmarks.speed import cpu_name, write_results

    for dataset_id in args.ids:
        suite.parse_id(dataset_id)  # a typo fails before any build
    workers = suite.default_workers() if args.workers is None else args.workers
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        for dataset_id in args.ids:
            load_before = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), cpu_seconds()  # workers are joined at the end of build, so counted
            suite.build(dataset_id, n_steps=args.n_steps, workers=workers)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            steps = suite.info(dataset_id)["steps"]
            row = {"id": dataset_id, "steps": steps, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                   "wall_min_per_1M_steps": round(wall / 60 * 1e6 / steps, 2),
                   "load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0]}
            rows.append(row)
            print(f"{dataset_id}: {steps} steps in {wall:.0f} s wall ({row['wall_min_per_1M_steps']:.2f} min per 1M "
                  f"steps), {cpu:.0f} s CPU; load average {load_before:.1f} before, "
                  f"{row['load_avg_1min_after']:.1f} after", flush=True)
    record = {"builds": rows, "workers": workers, "cpu_count": os.cpu_count(), "cpu": cpu_name(),
              "command": "python benchmarks/suite/build_speed.py " + " ".join(sys.argv[1:])}
    write_results(Path(args.out or ROOT / "benchmarks" / "results" / f"build_speed_{os.cpu_count()}cpu.json"), record)


if __name__ == "__main__":
    main(tyro.cli(Args))
