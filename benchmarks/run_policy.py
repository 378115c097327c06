"""The trained policy of a run folder, for tools (export.py, record.py): through its script's public `load_policy`.

    run = load_run_policy("runs/iql__stitch-hopper-medium-v0__s0__...")
    actions = run.policy(observations)      # float32 [n, obs_dim] -> actions [n, act_dim], as evaluation acts
    run.policy.module                       # the same policy as one nn.Module on tensors (what export.py traces)

Whatever is wrong with the folder (missing, not a run, no checkpoint yet, a script that no longer exists, a
corrupt checkpoint) raises `RunError` with one line that says so; the tools print it without a traceback.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.checkpoints import CheckpointError, load_checkpoint  # noqa: E402


class RunError(ValueError):
    """A folder whose policy cannot be loaded: the message is one line for the user."""


@dataclasses.dataclass
class RunPolicy:
    run_dir: Path
    algo: str
    """The script that trained it: algorithms/<algo>.py."""
    policy: Callable[[np.ndarray], np.ndarray]
    """The script's `load_policy(run_dir)`: what its evaluation runs (`.module`: the same as one nn.Module)."""
    args: dict
    """The run's flags, as its checkpoint records them (dataset, seed, ...)."""
    step: int
    """The update the checkpoint was written at."""
    obs_dim: int
    act_dim: int


def load_run_policy(run_dir: str | Path, device: str = "cpu") -> RunPolicy:
    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.pt"
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: no such folder")
    if not ckpt.is_file():
        if (run_dir / "args.json").is_file() or (run_dir / "metrics.jsonl").is_file():
            raise RunError(f"{run_dir} is a run folder without a checkpoint yet (no checkpoint.pt): "
                           f"let the run reach its first checkpoint, or resume it")
        raise RunError(f"{run_dir} is not a run folder (no checkpoint.pt): pass a folder a script in "
                       f"algorithms/ wrote, such as runs/iql__stitch-hopper-medium-v0__s0__...")
    try:
        state = load_checkpoint(ckpt)
        algo = state.get("algo")
        if not isinstance(algo, str) or "args" not in state:
            raise RunError(f"{ckpt} is not a Stitch checkpoint (it records no algorithm)")
        if not (ROOT / "algorithms" / f"{algo}.py").is_file():
            raise RunError(f"{run_dir} holds a run of {algo}, and there is no algorithms/{algo}.py")
        policy = importlib.import_module(f"algorithms.{algo}").load_policy(run_dir, device)
    except CheckpointError as e:
        raise RunError(str(e)) from None
    return RunPolicy(run_dir, algo, policy, json.loads(state["args"]), int(state["step"]),
                     int(state["obs_dim"]), int(state["act_dim"]))
