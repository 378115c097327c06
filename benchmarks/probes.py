"""What the acting probes (bcq_probe.py, bear_probe.py) share: their command line, a run's saved settings and
dataset, the mean return of an acting rule over the run's evaluation seeds, the critic's value at each episode's
first state beside the discounted return earned from there, and writing the result with each return's normalized
score."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.data import Dataset, load_dataset  # noqa: E402
from common.evaluation import env_actions, eval_seed, evaluate, flatten_obs, make_env  # noqa: E402


def parse(doc: str, script: str) -> argparse.Namespace:
    """`RUN [--episodes N] --out FILE`, the probe's docstring's first line as its description."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("run", help=f"a {script} run folder")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.episodes < 1:
        p.error("--episodes must be at least 1")
    return args


def load_run(run: str) -> tuple[dict, Dataset]:
    """The run's saved settings (args.json) and its dataset."""
    saved = json.loads((Path(run) / "args.json").read_text())
    return saved, load_dataset(saved["dataset"])


def mean_return(act: Callable[[np.ndarray], np.ndarray], data: Dataset, episodes: int, seed: int) -> float:
    """Mean return of `act` over the first `episodes` evaluation episodes of a run with seed `seed`."""
    return float(evaluate(act, data.env_spec, episodes, seed=seed).mean())


def first_state_values(act: Callable[[np.ndarray], np.ndarray], q1: Callable[[np.ndarray, np.ndarray], float],
                       data: Dataset, episodes: int, seed: int, gamma: float) -> dict:
    """Q_1 of `act`'s action at each of the first `episodes` evaluation episodes' first state (q1(obs [1, obs_dim],
    action [1, act_dim])), and the discounted return `act` earned from there: a critic far above it ranks actions by
    values the policy does not reach."""
    q_start, discounted = [], []
    for i in range(episodes):
        env = make_env(data.env_spec)
        obs = flatten_obs(env.reset(seed=eval_seed(seed, i))[0])
        total, discount, done = 0.0, 1.0, False
        while not done:
            action = act(obs[None].astype(np.float32))
            if discount == 1.0:
                q_start.append(float(q1(obs[None].astype(np.float32), action)))
            obs, reward, term, trunc, _ = env.step(env_actions(action, env.action_space)[0])
            obs = flatten_obs(obs)
            total += discount * float(reward)
            discount *= gamma
            done = term or trunc
        discounted.append(total)
        env.close()
    return {"q1_at_first_state": q_start, "discounted_return_from_first_state": discounted}


def write(out: dict, data: Dataset, path: str) -> None:
    """out["returns"] with their normalized scores as out["scores"], written atomically to `path`, and printed."""
    out["scores"] = {k: float(data.normalized_score([v])[0]) for k, v in out["returns"].items()}
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)
    print(json.dumps(out, indent=1))
