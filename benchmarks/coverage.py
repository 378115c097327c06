"""Where a dataset's episodes end, and where a trained policy's evaluation episodes end: a coverage check.

    python benchmarks/coverage.py --dataset stitch/hopper/medium-replay-v0 \
        --runs runs/grid/iql__stitch-hopper-medium-replay-v0__s0__200000__c1ba3689/iql__* \
        --out benchmarks/results/coverage_hopper_mr.json

A policy learned offline only knows the states the data visits. For a locomotion dataset the time step is
a rough proxy for how far into an episode's state distribution the data reaches: this script reports the
dataset's episode lengths and how many of its transitions come from each 100-step band of an episode, and,
for each run folder given, the length, return and ending (fell = terminated, or reached the time limit) of
`--episodes` evaluation episodes of its final policy, with the seeds `common.evaluation` uses for that run.
If the policies fall where the data thin out, more updates will not help; more (or longer) data would.

Run folders of every script in algorithms/ are supported through the scripts' public `load_policy(run_dir)`,
so each policy acts exactly as its script evaluates it. So are d3rlpy's runs (benchmarks/peers/): their policies
run in d3rlpy's venv (`d3rlpy_train.py --evaluate-run`), on the same episodes.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed import write_results  # noqa: E402
from benchmarks.run_policy import RunError, load_run_policy  # noqa: E402
from common.checkpoints import load_checkpoint  # noqa: E402
from common.data import load_dataset  # noqa: E402
from common.evaluation import evaluate  # noqa: E402

BAND = 100


@dataclasses.dataclass
class Args:
    dataset: str
    """Dataset id whose episodes are measured (and the runs were trained on)."""
    runs: list[str] = dataclasses.field(default_factory=list)
    """Run folders (with checkpoint.pt) whose final policies are evaluated."""
    episodes: int = 10
    """Evaluation episodes per run."""
    out: str | None = None
    """JSON file to write (default: print only)."""


def dataset_coverage(lengths: np.ndarray, horizon: int) -> dict:
    """Episode-length percentiles and the transitions in each BAND-step band of the episodes, [0, BAND), ..."""
    t = np.concatenate([np.arange(n) for n in lengths]) if len(lengths) else np.zeros(0, int)
    bands = np.bincount(t // BAND, minlength=-(-horizon // BAND))
    return {"episodes": int(len(lengths)), "steps": int(lengths.sum()),
            "length_percentiles": {str(q): float(np.percentile(lengths, q)) for q in (50, 75, 90, 99)},
            "transitions_per_band": {f"{i * BAND}-{(i + 1) * BAND - 1}": int(c) for i, c in enumerate(bands)}}


def transitions_from(lengths: np.ndarray, step: int) -> int:
    """How many transitions happen at time step >= `step` of their episode."""
    return int(np.maximum(lengths - step, 0).sum())


def load_policy(run: Path):
    """A run's final policy through its script's public `load_policy` (benchmarks/run_policy.py), with the run's
    saved settings."""
    try:
        loaded = load_run_policy(run)
    except RunError as e:
        raise SystemExit(f"error: {e}") from None
    return loaded.policy, loaded.args


def our_episodes(run: Path, data, dataset: str, episodes: int) -> dict:
    """The episodes of one of our runs' final policy, with the seeds its own evaluations used."""
    policy, run_args = load_policy(run)
    if run_args["dataset"] != dataset:
        raise SystemExit(f"error: {run} was trained on {run_args['dataset']}, not {dataset}")
    info: dict = {}
    with torch.no_grad():
        returns = evaluate(policy, data.env_spec, episodes, seed=run_args["seed"], episode_info=info)
    step = int(load_checkpoint(run / "checkpoint.pt")["step"])
    return {"seed": run_args["seed"], "step": step, "returns": returns.tolist(), **info}


def is_peer_run(run: Path) -> bool:
    """A run folder of benchmarks/peers/d3rlpy_train.py (its args.json records the exported data's hash)."""
    try:
        return "content_sha1" in json.loads((run / "args.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False


def peer_episodes(run: Path, dataset: str, episodes: int) -> dict:
    """The episodes of a d3rlpy run's final policy, run by d3rlpy_train.py --evaluate-run in d3rlpy's venv."""
    from benchmarks.peers import PEERS_DIR, PeerError, check_d3rlpy_venv
    from benchmarks.peers.export import export_dataset

    try:
        python, npz = check_d3rlpy_venv(), export_dataset(dataset)
    except PeerError as e:
        raise SystemExit(f"error: {run} is a d3rlpy run: {e}") from None
    proc = subprocess.run([str(python), str(PEERS_DIR / "d3rlpy_train.py"), "--data", str(npz), "--evaluate-run",
                           str(run), "--eval-episodes", str(episodes)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: evaluating the d3rlpy run {run} failed:\n{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(args: Args) -> None:
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes must be at least 1, got {args.episodes}")
    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not (run / "checkpoint.pt").is_file():
            raise SystemExit(f"error: {run} has no checkpoint.pt (give run folders, not grid cell folders)")
    data = load_dataset(args.dataset)
    horizon = int(data.episode_lengths.max())
    record = {"dataset": args.dataset, "data": dataset_coverage(data.episode_lengths, horizon), "runs": [],
              "command": "python benchmarks/coverage.py " + " ".join(sys.argv[1:])}
    for run in runs:
        ep = (peer_episodes(run, args.dataset, args.episodes) if is_peer_run(run)
              else our_episodes(run, data, args.dataset, args.episodes))
        fell_at = [n for n, term in zip(ep["length"], ep["terminated"]) if term]
        record["runs"].append({
            "run": str(run), "seed": ep["seed"], "step": ep["step"],
            "scores": data.normalized_score(np.asarray(ep["returns"])).round(2).tolist(), "lengths": ep["length"],
            "terminated": ep["terminated"],
            "data_transitions_from_median_fall": (transitions_from(data.episode_lengths, int(np.median(fell_at)))
                                                  if fell_at else None)})
    print(json.dumps(record, indent=2))
    if args.out:
        write_results(Path(args.out), record)


if __name__ == "__main__":
    main(tyro.cli(Args))
