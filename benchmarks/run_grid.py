"""Run a benchmark grid: algorithms x datasets x seeds, one subprocess per cell.

    python benchmarks/run_grid.py --algos bc td3_bc iql cql \
        --datasets stitch/hopper/medium-replay-v0 stitch/hopper/medium-v0 \
        --seeds 0 1 --total-steps 50000 --results benchmarks/results/hopper_50k.jsonl --jobs 2

Each cell runs `python algorithms/<algo>.py --dataset D --seed S --total-steps T ...` in its own run
folder under `--runs-dir`. When a cell finishes, one JSON line (the cell's key, the full config, the
git commit, the command, wall time, updates/s and every evaluation) is appended to the results file.
Cells already in the results file are skipped, and a cell whose run folder holds a checkpoint is
resumed, so an interrupted grid continues where it stopped. Adding an algorithm to a grid is adding
its script name to `--algos`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from common.data import load_dataset  # noqa: E402


@dataclasses.dataclass
class Args:
    algos: list[str]
    """Algorithm script names (algorithms/<name>.py)."""
    datasets: list[str]
    """Dataset ids."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    """Seeds per (algorithm, dataset)."""
    total_steps: int = 50_000
    """Updates per run."""
    results: str = "benchmarks/results/grid.jsonl"
    """JSONL file the finished cells are appended to."""
    runs_dir: str = "runs/grid"
    """Where the cells' run folders live."""
    jobs: int = 1
    """Cells run at the same time (each with --threads torch threads)."""
    threads: int = 1
    """torch threads per cell (OMP_NUM_THREADS)."""
    extra: list[str] = dataclasses.field(default_factory=list)
    """Flag overrides as 'algo:--flag=value' (or '*:--flag=value' for every algorithm)."""
    dry_run: bool = False
    """Print the cells that would run and exit."""


def cell_key(algo: str, dataset: str, seed: int, total_steps: int, flags: list[str]) -> str:
    return json.dumps([algo, dataset, seed, total_steps, sorted(flags)])


def done_keys(results: Path) -> set[str]:
    if not results.exists():
        return set()
    keys = set()
    for line in results.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            keys.add(cell_key(rec["algo"], rec["dataset"], rec["seed"], rec["total_steps"], rec["flags"]))
    return keys


def run_cell(algo: str, dataset: str, seed: int, args: Args, flags: list[str]) -> dict:
    cell_dir = Path(args.runs_dir) / f"{algo}__{dataset.replace('/', '-')}__s{seed}__{args.total_steps}"
    cell_dir.mkdir(parents=True, exist_ok=True)
    existing = [p.parent for p in cell_dir.glob("*/checkpoint.pt")]
    cmd = [sys.executable, str(ROOT / "algorithms" / f"{algo}.py"), "--no-progress"]
    if existing:  # continue an interrupted cell
        cmd += ["--resume", str(existing[0])]
    else:
        cmd += ["--dataset", dataset, "--seed", str(seed), "--total-steps", str(args.total_steps),
                "--runs-dir", str(cell_dir), *flags]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    t0 = time.time()
    log = cell_dir / "log.txt"
    with open(log, "a") as f:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"cell {algo} {dataset} seed {seed} failed (exit {proc.returncode}); see {log}")
    result_file = next(cell_dir.glob("*/result.json"))
    result = json.loads(result_file.read_text())
    # Scores from the raw returns with the dataset's references as they are now, recorded with them (a
    # rebuild during a long cell may have changed them; benchmarks/rescore.py updates older records).
    data = load_dataset(dataset)
    for ev in result["evals"]:
        ev["score"] = float(data.normalized_score([ev["return"]])[0])
    result["final_score"] = float(data.normalized_score([result["final_return"]])[0])
    return {"algo": algo, "dataset": dataset, "seed": seed, "total_steps": args.total_steps, "flags": flags,
            "command": shlex.join(["python", f"algorithms/{algo}.py", "--dataset", dataset, "--seed", str(seed),
                                   "--total-steps", str(args.total_steps), *flags]),
            "wall_time_s": time.time() - t0, "threads": args.threads,
            "ref_min_score": data.ref_min_score, "ref_max_score": data.ref_max_score, **{k: v for k, v in result.items()
                                                                         if k not in ("algo", "dataset", "seed")}}


def main(args: Args) -> None:
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    for algo in args.algos:
        if not (ROOT / "algorithms" / f"{algo}.py").exists():
            raise SystemExit(f"error: no algorithms/{algo}.py (available: "
                             f"{', '.join(sorted(p.stem for p in (ROOT / 'algorithms').glob('*.py')))})")
    done = done_keys(results)
    cells = []
    for dataset in args.datasets:
        for algo in args.algos:
            flags = [e.split(":", 1)[1] for e in args.extra if e.split(":", 1)[0] in (algo, "*")]
            for seed in args.seeds:
                if cell_key(algo, dataset, seed, args.total_steps, flags) not in done:
                    cells.append((algo, dataset, seed, flags))
    print(f"{len(cells)} cells to run ({len(done)} already in {results})", flush=True)
    if args.dry_run:
        for c in cells:
            print("  ", *c)
        return

    def work(cell):
        algo, dataset, seed, flags = cell
        rec = run_cell(algo, dataset, seed, args, flags)
        with open(results, "a") as f:  # one line per finished cell
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(f"done {algo} {dataset} seed {seed}: score {rec['final_score']:.1f} "
              f"({rec['updates_per_s']:.0f} upd/s, {rec['wall_time_s'] / 60:.1f} min)", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for fut in [pool.submit(work, c) for c in cells]:
            fut.result()


if __name__ == "__main__":
    main(tyro.cli(Args))
