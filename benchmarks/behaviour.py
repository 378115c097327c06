"""The behaviour's own score on each dataset: the normalized mean return of the dataset's episodes, the column a
results table compares every algorithm with (did offline RL beat the data it learned from?).

    python benchmarks/behaviour.py stitch/cartpole/medium-v0 stitch/acrobot/expert-v0
    python benchmarks/behaviour.py stitch/{cartpole,acrobot}/{random,medium,medium-replay,expert}-v0 \\
        --out benchmarks/results/behaviour.json
    python benchmarks/report.py benchmarks/results/discrete_12k.jsonl --behaviour benchmarks/results/behaviour.json

The score is what D4RL-style papers call the behaviour's: the undiscounted return of every episode in the data (the
last, cut episode of a stream included, as the suite's dataset cards count it), averaged and normalized with the
dataset's reference scores, 100 * (return - ref_min) / (ref_max - ref_min). For a single-policy level (random,
medium, expert) it is that policy's score as it acted while logging (epsilon-greedy or sampled); for medium-replay it
is the mixture of snapshots the level holds. Computed from the data, so it needs the datasets built (or downloaded)
but no environment. The file maps each dataset id to its numbers and is updated in place: datasets not named keep
their entries.

For a `stitch/` level logged by one policy (medium, expert) the entry also gives that policy acting without its
exploration (greedy DQN, the SAC actor's mean), `greedy_score`, from the evaluation that selected it
(benchmarks/suite/policies/<env>/manifest.json, `deterministic`, 100 episodes): the scripts evaluate their own
policies greedily, so this is the score a perfect copy of the behaviour would get here. The two can differ a lot:
Acrobot's medium DQN swings up only thanks to its epsilon-greedy noise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import numpy as np
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.suite import build as suite  # noqa: E402
from common.data import DatasetError, load_dataset  # noqa: E402


@dataclasses.dataclass
class Args:
    datasets: tyro.conf.Positional[list[str]]
    """Dataset ids (stitch/... ids are built locally when missing)."""
    out: str = "benchmarks/results/behaviour.json"
    """JSON file the entries are written to (merged with what it holds)."""


def episode_returns(rewards: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Undiscounted return of each episode, from its start index and length into the flat reward array."""
    return np.array([rewards[s:s + n].sum(dtype=np.float64) for s, n in zip(starts, lengths)])


def greedy_score(dataset_id: str, ref_min: float | None, ref_max: float | None) -> float | None:
    """The normalized score of a single-policy stitch level's behaviour acting greedily (its manifest's record);
    None for other datasets, mixtures (medium-replay, medium-expert) and uniform random data."""
    try:
        env_name, level = suite.parse_id(dataset_id)
    except ValueError:
        return None
    if level not in ("medium", "expert") or ref_min is None or ref_max is None:
        return None
    manifest = suite.load_manifest(suite.ENVS[env_name].policy_dir)
    record = manifest[level].get("deterministic")
    return None if record is None else 100 * (record["mean"] - ref_min) / (ref_max - ref_min)


def behaviour_entry(dataset_id: str) -> dict:
    data = load_dataset(dataset_id)
    returns = episode_returns(data.rewards, data.episode_starts, data.episode_lengths)
    entry = {"episodes": int(len(returns)), "steps": int(len(data.rewards)),
             "return_mean": float(returns.mean()), "return_std": float(returns.std()),
             "ref_min_score": data.ref_min_score, "ref_max_score": data.ref_max_score,
             "score_mean": None, "score_std": None}
    if data.ref_min_score is not None and data.ref_max_score is not None:
        scores = 100 * (returns - data.ref_min_score) / (data.ref_max_score - data.ref_min_score)
        entry.update(score_mean=float(scores.mean()), score_std=float(scores.std()))
    entry["greedy_score"] = greedy_score(dataset_id, data.ref_min_score, data.ref_max_score)
    return entry


def main(args: Args) -> None:
    if not args.datasets:
        raise SystemExit("error: no dataset given (usage: python benchmarks/behaviour.py DATASET_ID ...)")
    out = Path(args.out)
    table = {}
    if out.exists():
        try:
            table = json.loads(out.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: {out} is not a behaviour file ({e}); move it away or name another --out")
    for d in args.datasets:
        try:
            table[d] = behaviour_entry(d)
        except DatasetError as e:
            raise SystemExit(f"error: {e}") from None
        e = table[d]
        score = "no reference scores" if e["score_mean"] is None else f"{e['score_mean']:.1f} ± {e['score_std']:.1f}"
        greedy = "" if e["greedy_score"] is None else f"; acting greedily {e['greedy_score']:.1f}"
        print(f"{d}: {e['episodes']} episodes, return {e['return_mean']:.1f} ± {e['return_std']:.1f}, "
              f"normalized {score}{greedy}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
