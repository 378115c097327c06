"""What the acting probes (bcq_probe.py, bear_probe.py) share: their command line, a run's saved settings and
dataset, the mean return of an acting rule over the run's evaluation seeds, and writing the result with each
return's normalized score."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.data import Dataset, load_dataset  # noqa: E402
from common.evaluation import evaluate  # noqa: E402


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


def write(out: dict, data: Dataset, path: str) -> None:
    """out["returns"] with their normalized scores as out["scores"], written atomically to `path`, and printed."""
    out["scores"] = {k: float(data.normalized_score([v])[0]) for k, v in out["returns"].items()}
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)
    print(json.dumps(out, indent=1))
