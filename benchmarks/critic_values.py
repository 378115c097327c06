"""Have a run's critics over-estimated? Their logged Q values next to what the dataset's returns allow.

    python benchmarks/critic_values.py --dataset stitch/hopper/medium-v0 --metric q_data \
        --runs runs/grid/awac__stitch-hopper-medium-v0__s[01]__50000/awac__* \
        --out benchmarks/results/critic_values_awac_hopper_medium.json

An actor-critic that backs Q up through its own policy's actions can drift upward on actions the data never
show: the error feeds the target that produced it. The symptom is a critic whose value of the dataset's own
actions climbs past anything the data could justify. This script puts side by side, for each run folder, the
Q metric its training logged (`--metric`, e.g. awac's `q_data`: the mean of min_i Q_i(s, a) over a minibatch
of dataset pairs) at every `--every` updates, and two reference values from the dataset:

- the mean discounted Monte-Carlo return of the dataset's transitions, sum_k gamma^k r_(t+k) to the end of the
  episode (the value of the behaviour policy, and a low estimate where an episode was cut by a time limit);
- max_t r_t / (1 - gamma): the value of collecting the dataset's largest reward at every step forever.

The first is no bound on Q^pi of a better policy; the second is not a proof either (a policy might earn
rewards larger than any in the data), but a critic above it values the data's own actions more than the
best reward in the data could ever pay.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.speed import write_results  # noqa: E402
from common.data import load_dataset  # noqa: E402
from common.logging import logged  # noqa: E402
from common.vocabulary import RENAMED_METRICS  # noqa: E402


@dataclasses.dataclass
class Args:
    dataset: str
    """Dataset id the runs were trained on."""
    runs: list[str] = dataclasses.field(default_factory=list)
    """Run folders (with metrics.jsonl and args.json)."""
    metric: str = "q_data"
    """The Q metric the runs log (awac, bcq, cql, crr, onestep: q_data, the mean Q of the data's actions)."""
    every: int = 5000
    """Report the metric at multiples of this many updates (and at the last logged step)."""
    out: str | None = None
    """JSON file to write (default: print only)."""


def discounted_returns(rewards: np.ndarray, episode_starts: np.ndarray, episode_lengths: np.ndarray,
                       gamma: float) -> np.ndarray:
    """sum_k gamma^k r_(t+k) to the end of each transition's episode, for every transition."""
    out = np.empty(len(rewards), np.float64)
    for start, n in zip(episode_starts, episode_lengths):
        g = 0.0
        for t in range(start + n - 1, start - 1, -1):
            g = rewards[t] + gamma * g
            out[t] = g
    return out


def metric_trajectory(metrics_file: Path, metric: str, every: int) -> dict[str, float]:
    """{step: value} of `metric` at the multiples of `every` (and the last step) it was logged at."""
    points: dict = {}
    for name in [old for old, new in RENAMED_METRICS.items() if new == metric] + [metric]:
        points |= logged(metrics_file, name)  # a run logged before the rename (onestep's q_mean) has the old name
    if not points:
        raise SystemExit(f"error: {metrics_file} logs no {metric!r}")
    last = max(points)
    return {str(s): round(v, 2) for s, v in sorted(points.items()) if s % every == 0 or s == last}


def main(args: Args) -> None:
    if args.every < 1:
        raise SystemExit(f"error: --every must be at least 1, got {args.every}")
    runs = [Path(r) for r in args.runs]
    for run in runs:
        if not (run / "metrics.jsonl").is_file() or not (run / "args.json").is_file():
            raise SystemExit(f"error: {run} has no metrics.jsonl and args.json (give run folders, not grid cell "
                             "folders)")
    data = load_dataset(args.dataset)
    record = {"dataset": args.dataset, "metric": args.metric, "runs": [],
              "command": "python benchmarks/critic_values.py " + " ".join(sys.argv[1:])}
    gammas = set()
    for run in runs:
        run_args = json.loads((run / "args.json").read_text())
        if run_args["dataset"] != args.dataset:
            raise SystemExit(f"error: {run} was trained on {run_args['dataset']}, not {args.dataset}")
        gammas.add(run_args["gamma"])
        record["runs"].append({"run": str(run), "seed": run_args["seed"], "gamma": run_args["gamma"],
                               args.metric: metric_trajectory(run / "metrics.jsonl", args.metric, args.every)})
    record["data"] = {}
    for gamma in sorted(gammas):
        g = discounted_returns(data.rewards, data.episode_starts, data.episode_lengths, gamma)
        record["data"][str(gamma)] = {"mean_discounted_return": round(float(g.mean()), 2),
                                      "max_discounted_return": round(float(g.max()), 2),
                                      "max_reward_over_1_minus_gamma": round(float(data.rewards.max() / (1 - gamma)),
                                                                             2)}
    print(json.dumps(record, indent=2))
    if args.out:
        write_results(Path(args.out), record)


if __name__ == "__main__":
    main(tyro.cli(Args))
