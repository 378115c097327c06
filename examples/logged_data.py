"""Train on your own logged data: no simulator, no reference scores, just arrays of transitions.

    python examples/logged_data.py                         # build the example dataset, train IQL on it, use the policy
    python examples/logged_data.py --algo td3_bc --updates 5000

What a user with a robot's logs does, end to end:
 1. Put each logged episode in a `minari.data_collector.EpisodeBuffer` (observations: one more row than actions,
    the last being where the episode ended; `terminations` true only where the task really ended, `truncations`
    where logging stopped) and write them with `minari.create_dataset_from_buffers`, giving the observation and
    action spaces instead of an environment. Continuous actions need finite bounds (a Box): the scripts train in
    [-1, 1] and map back to the bounds.
 2. Train any script on the dataset id. With no environment there is nothing to evaluate: the run says so at
    start, trains, checkpoints and resumes as usual, and its result.json records the final training losses
    (`train_metrics`) and no score.
 3. Load the trained policy with the script's `load_policy(run_folder)`: observations in, actions out, in
    [-1, 1] (map them to your bounds as evaluation does: low + (a + 1) / 2 * (high - low); here the bounds are
    [-1, 1] already).

The logs here come from a made-up system: a point on a plane steered towards the origin by a noisy controller,
rewarded by minus its distance. (Minari's `DataCollector` records episodes from a Gymnasium environment as you
step it; it needs `pip install "minari[create]"`, which brings jax. `create_dataset_from_buffers` does not.)
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def logged_episodes(episodes: int, steps: int, seed: int) -> list:
    """`episodes` logs of a noisy controller on the plane: state (x, y, vx, vy), action a force in [-1, 1]^2."""
    from minari.data_collector import EpisodeBuffer

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        s = np.concatenate([rng.uniform(-1, 1, 2), np.zeros(2)]).astype(np.float32)
        obs, acts, rews = [s], [], []
        for _ in range(steps):
            a = np.clip(-0.8 * s[:2] - 0.3 * s[2:] + rng.normal(0, 0.6, 2), -1, 1).astype(np.float32)
            vel = 0.9 * s[2:] + 0.1 * a
            s = np.concatenate([s[:2] + 0.1 * vel, vel]).astype(np.float32)
            obs.append(s), acts.append(a), rews.append(-float(np.linalg.norm(s[:2])))
        out.append(EpisodeBuffer(observations=np.stack(obs), actions=np.stack(acts), rewards=np.asarray(rews),
                                 terminations=np.zeros(steps, bool),
                                 truncations=np.eye(1, steps, steps - 1, dtype=bool)[0]))  # logging stopped
    return out


def write_dataset(dataset_id: str, episodes: int = 50, steps: int = 100, seed: int = 0) -> None:
    """The logs as a Minari dataset under `dataset_id` in $MINARI_DATASETS_PATH (default ~/.minari/datasets)."""
    import minari

    minari.create_dataset_from_buffers(
        dataset_id=dataset_id, buffer=logged_episodes(episodes, steps, seed),
        observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
        algorithm_name="noisy proportional controller", author="you", author_email="you@example.com",
        code_permalink="examples/logged_data.py", description="a point on a plane steered to the origin")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="acme/pointmass/logs-v0", help="id to write the example logs under")
    p.add_argument("--algo", default="iql", help="script in algorithms/ to train")
    p.add_argument("--updates", type=int, default=2000, help="gradient updates")
    p.add_argument("--runs-dir", default="runs", help="folder for the run folder")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for the script")
    args = p.parse_args()

    from common.data import DatasetError, load_dataset

    try:
        load_dataset(args.dataset)
        print(f"{args.dataset} exists already; training on it")
    except DatasetError:
        write_dataset(args.dataset)
        print(f"wrote {args.dataset}")

    cmd = [sys.executable, str(ROOT / "algorithms" / f"{args.algo}.py"), "--dataset", args.dataset,
           "--total-steps", str(args.updates), "--runs-dir", args.runs_dir, *args.extra]
    print("$", " ".join(cmd[1:]), flush=True)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="")
    if done.returncode != 0:
        raise SystemExit(done.returncode)
    run_dir = Path(done.stdout.strip().splitlines()[-1].rsplit(" -> ", 1)[1])  # the script's last line names it
    print("training metrics at the end:", json.loads((run_dir / "result.json").read_text())["train_metrics"])

    policy = importlib.import_module(f"algorithms.{args.algo}").load_policy(run_dir)
    states = np.array([[0.5, 0.5, 0, 0], [-0.5, 0.2, 0, 0]], np.float32)
    print("actions for", states.tolist(), "->", np.round(policy(states).astype(float), 3).tolist())


if __name__ == "__main__":
    main()
