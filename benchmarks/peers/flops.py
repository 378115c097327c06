"""Why ours is or is not 2.5x d3rlpy's updates/s: matrix-multiply work per update, and this machine's ceiling.

    python benchmarks/peers/flops.py --speed benchmarks/results/speed_cpu_peers.json \
        --out benchmarks/results/flops_cpu_peers.json

An update's time is the time of its matrix multiplies (the networks' forward and backward passes) plus everything
else (elementwise ops, optimizer steps, sampling, Python). A faster implementation can only remove the second
part, unless it multiplies fewer or cheaper matrices. This script measures both sides of that argument:

* FLOPs per update, ours and d3rlpy's, for bc, td3_bc, iql and cql at default sizes: counted by torch's
  `FlopCounterMode` (matrix multiplies only, forward and backward; 2 FLOPs per multiply-add) over `--updates`
  updates on the data speed.py measures on (random Hopper-v5 episodes), from step 0 as speed.py runs them.
  Ours run in-process (each script's `train`, its evaluation replaced by a stub that plays no episode); d3rlpy's
  in its own venv (this file again, `--side d3rlpy`, on the same data exported with our loader).
* The ceiling: the GFLOP/s that torch's matrix multiplies reach on this machine at the shapes these networks
  use (batch 256 through 256-wide layers, ensembles of 2 as one batched multiply, CQL's 31 actions per state),
  with `--threads` threads; the best of them is the ceiling.

With the updates/s of a speed.py results file (`--speed`; the same machine, idle), each algorithm gets its
achieved GFLOP/s, the share of its time spent at the ceiling's rate in matrix multiplies, and the most updates/s
any implementation doing the same multiplies could reach here (FLOPs per update / ceiling): divided by d3rlpy's
updates/s, the largest speed-up over d3rlpy this CPU allows.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALGOS = ("bc", "td3_bc", "iql", "cql")
HERE = Path(__file__).resolve()
ROOT = HERE.parents[2]
# (name, batch dims, m, k, n): the matrix multiplies of a 256x256 network at batch 256 (Hopper: 11 + 3 inputs)
SHAPES = (
    ("mm 256x256x256 (hidden layer, batch 256)", (), 256, 256, 256),
    ("mm 256x14x256 (input layer, batch 256)", (), 256, 14, 256),
    ("bmm 2x256x256x256 (twin critics, batch 256)", (2,), 256, 256, 256),
    ("bmm 2x7936x256x256 (CQL: twin critics on 31 actions per state)", (2,), 7936, 256, 256),
)


def count_flops(fn) -> int:
    """Matrix-multiply FLOPs of `fn()` (forward and backward), as torch's FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------------------------
# Our side: each script's train(), in-process
# ----------------------------------------------------------------------------------------------
def ours_flops_per_update(algo: str, dataset_id: str, updates: int, runs_dir: Path, **overrides) -> float:
    """FLOPs per update of algorithms/<algo>.py at its defaults (or `overrides`), over `updates` updates from step 0.
    It runs with `eval_episodes=0` (no evaluation), so every counted multiply belongs to an update."""
    script = importlib.import_module(f"algorithms.{algo}")
    args = script.Args(dataset=dataset_id, total_steps=updates, eval_every=updates, eval_episodes=0,
                       log_every=updates, checkpoint_every=updates, runs_dir=str(runs_dir), progress=False,
                       device="cpu", **overrides)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # its own report
        return count_flops(lambda: script.train(args)) / updates


# ----------------------------------------------------------------------------------------------
# d3rlpy's side: runs in its venv (imports only d3rlpy_train.py's helpers, d3rlpy, torch and numpy)
# ----------------------------------------------------------------------------------------------
def d3rlpy_flops_per_update(algo: str, data_path: str, updates: int) -> float:
    import d3rlpy
    from d3rlpy.algos.utility import build_scalers_with_transition_picker

    sys.path.insert(0, str(HERE.parent))
    import d3rlpy_train

    data = d3rlpy_train.load_export(data_path)
    d3rlpy.seed(0)
    dataset = d3rlpy_train.make_dataset(data)
    model = d3rlpy_train.make_algo(algo, data["dataset_id"], updates, None, False)
    build_scalers_with_transition_picker(model, dataset)
    model.create_impl((data["observations"].shape[1],), data["actions"].shape[1])
    batch = model.config.batch_size

    def run() -> None:
        for _ in range(updates):
            model.update(dataset.sample_transition_batch(batch))

    return count_flops(run) / updates


def d3rlpy_side(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    args = parser.parse_args(argv)
    print(json.dumps({a: d3rlpy_flops_per_update(a, args.data, args.updates) for a in args.algos}))


# ----------------------------------------------------------------------------------------------
# The machine's ceiling
# ----------------------------------------------------------------------------------------------
def matmul_gflops(batch: tuple[int, ...], m: int, k: int, n: int, seconds: float) -> float:
    """GFLOP/s of torch.matmul of [*batch, m, k] x [*batch, k, n] in float32, repeated for about `seconds`."""
    import torch

    a, b = torch.randn(*batch, m, k), torch.randn(*batch, k, n)
    flops = 2 * m * k * n * (batch[0] if batch else 1)
    for _ in range(3):
        torch.matmul(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.matmul(a, b)
        reps += 1
    return flops * reps / (time.perf_counter() - start) / 1e9


# ----------------------------------------------------------------------------------------------
def analyse(flops: dict[str, dict[str, float]], speed: dict[str, float], ceiling: float) -> dict[str, dict]:
    """Per algorithm: achieved GFLOP/s, the matmul-bound updates/s and the speed-ups, ours vs d3rlpy."""
    out = {}
    for algo, f in flops.items():
        ours, peer = speed.get(algo), speed.get(f"d3rlpy_{algo}")
        row = {"flops_per_update": {k: round(v) for k, v in f.items()}}
        bound = ceiling * 1e9 / f["ours"]
        row["matmul_bound_updates_per_s"] = round(bound, 1)
        if ours is not None and peer is not None:
            row["updates_per_s"] = {"ours": ours, "d3rlpy": peer}
            row["achieved_gflops"] = {"ours": round(f["ours"] * ours / 1e9, 1),
                                      "d3rlpy": round(f["d3rlpy"] * peer / 1e9, 1)}
            # share of an update's time its multiplies would take at the ceiling's rate
            row["matmul_share_at_ceiling"] = {"ours": round(f["ours"] * ours / (ceiling * 1e9), 3),
                                              "d3rlpy": round(f["d3rlpy"] * peer / (ceiling * 1e9), 3)}
            row["speedup"] = round(ours / peer, 2)
            row["max_speedup_on_this_cpu"] = round(bound / peer, 2)
        out[algo] = row
    return out


MARKERS = ("<!-- peers-speed:start -->", "<!-- peers-speed:end -->")


def markdown(record: dict, path: str) -> str:
    """The README table of a results file of this script."""
    lines = ["| algorithm | ours, updates/s | d3rlpy, updates/s | speed-up | MFLOP per update, ours / d3rlpy | "
             "GFLOP/s achieved, ours / d3rlpy | largest speed-up this CPU allows |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for algo, row in record["algorithms"].items():
        f, ups, g = row["flops_per_update"], row["updates_per_s"], row["achieved_gflops"]
        lines.append(f"| {algo} | {ups['ours']:.1f} | {ups['d3rlpy']:.1f} | {row['speedup']:.2f}x | "
                     f"{f['ours'] / 1e6:,.0f} / {f['d3rlpy'] / 1e6:,.0f} | {g['ours']:.0f} / {g['d3rlpy']:.0f} | "
                     f"{row['max_speedup_on_this_cpu']:.2f}x |")
    return "\n".join(lines + [
        "", f"Updates/s from `{record['speed_file']}` ({record['device_name']}, {record['threads']} threads); "
        f"FLOPs are the matrix multiplies of one update (forward and backward) counted by torch's FlopCounterMode; "
        f"the ceiling is the fastest matrix multiply of these networks' shapes on this machine, "
        f"{record['ceiling_gflops']:.0f} GFLOP/s; the last column is (ceiling / our FLOPs per update) / d3rlpy's "
        f"updates/s, what an implementation doing nothing but our multiplies at that rate would reach. "
        f"From `{path}`, made by `{record['command']}`."])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--speed", help="a speed.py results file with ours and d3rlpy_<algo> rates")
    parser.add_argument("--out", default=None, help="results file (default: print only)")
    parser.add_argument("--readme", default=None, help="README whose peers-speed markers get the table")
    parser.add_argument("--render", default=None, help="a results file of this script: only write its table "
                        "into --readme (measures nothing)")
    parser.add_argument("--updates", type=int, default=20, help="updates counted per algorithm")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for the ceiling (default: "
                        "the speed file's)")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per shape of the ceiling benchmark")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.render:
        if not args.readme:
            raise SystemExit("error: --render writes a results file's table into --readme: give --readme")
        try:
            record = json.loads(Path(args.render).read_text())
            table = markdown(record, args.render)
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise SystemExit(f"error: --render {args.render}: not a results file of this script ({e!r})") from None
        write_readme(Path(args.readme), table)
        return
    if not args.speed:
        raise SystemExit("error: give --speed (a speed.py results file), or --render with --readme")
    import torch

    from benchmarks.peers import PeerError, check_d3rlpy_venv, peer_versions
    from benchmarks.peers.export import export_dataset
    from benchmarks.speed import cpu_name, write_results
    from benchmarks.synthetic import write_rollout_dataset

    try:
        speed_record = json.loads(Path(args.speed).read_text())
        speed = speed_record["updates_per_s"]
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise SystemExit(f"error: --speed {args.speed}: not a speed.py results file ({e})") from None
    try:
        python = check_d3rlpy_venv()
    except PeerError as e:
        raise SystemExit(f"error: {e}") from None
    threads = args.threads or speed_record.get("threads") or torch.get_num_threads()

    flops: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(tmp) / "minari")
        write_rollout_dataset("speed/hopper/random-v0", episodes=200, max_steps=1000, seed=0)  # as speed.py
        for algo in args.algos:
            flops[algo] = {"ours": ours_flops_per_update(algo, "speed/hopper/random-v0", args.updates,
                                                         Path(tmp) / "runs")}
        data = export_dataset("speed/hopper/random-v0", out=Path(tmp) / "export.npz")
        proc = subprocess.run([str(python), str(HERE), "--side", "d3rlpy", "--data", str(data), "--updates",
                               str(args.updates), "--algos", *args.algos], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            raise SystemExit(f"error: counting d3rlpy's FLOPs failed:\n{proc.stderr[-2000:]}")
        for algo, f in json.loads(proc.stdout.strip().splitlines()[-1]).items():
            flops[algo]["d3rlpy"] = f

    torch.set_num_threads(threads)
    shapes = {name: round(matmul_gflops(batch, m, k, n, args.seconds), 1) for name, batch, m, k, n in SHAPES}
    ceiling = max(shapes.values())
    for name, g in shapes.items():
        print(f"{g:7.1f} GFLOP/s  {name}")
    record = {"algorithms": analyse(flops, speed, ceiling), "ceiling_gflops": ceiling, "matmul_gflops": shapes,
              "threads": threads, "updates_counted": args.updates, "speed_file": args.speed,
              "device_name": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
              "peers": peer_versions(), "command": "python benchmarks/peers/flops.py " + " ".join(
                  sys.argv[1:] if argv is None else argv)}
    for algo, row in record["algorithms"].items():
        f = row["flops_per_update"]
        print(f"{algo:7s} MFLOP/update ours {f['ours'] / 1e6:8.1f}  d3rlpy {f['d3rlpy'] / 1e6:8.1f}  "
              f"speed-up {row.get('speedup')}  at most {row.get('max_speedup_on_this_cpu')} on this CPU")
    if args.out:
        write_results(Path(args.out), record)
    if args.readme:
        write_readme(Path(args.readme), markdown(record, args.out or "(not saved)"))


def write_readme(readme: Path, table: str) -> None:
    from benchmarks.report import replace_between, write_atomic

    if not readme.is_file():
        raise SystemExit(f"error: no README {readme}")
    write_atomic(readme, replace_between(readme.read_text(), *MARKERS, table, str(readme)))
    print(f"updated {readme}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--side"]:
        if sys.argv[2] != "d3rlpy":
            raise SystemExit(f"error: unknown side {sys.argv[2]!r}")
        d3rlpy_side(sys.argv[3:])
    else:
        main()
