"""Atomic, resumable checkpoints.

`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and renames it
over the target, so a crash at any moment leaves either the old or the new checkpoint, never half
of one. `load_checkpoint` uses `torch.load(..., weights_only=True)`: only tensors, numbers,
strings and containers of them are accepted, never arbitrary pickled objects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not one of ours."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # the old checkpoint stays as it was; leave no half-written file behind
        tmp.unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, or not a torch file
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dictionary")
    return state


def rng_state() -> dict[str, Any]:
    """torch's global RNG states (CPU and CUDA): all the randomness an update uses besides the buffer's."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_run_checkpoint(run_dir: str | Path, algo: str) -> dict[str, Any]:
    """The checkpoint of a run folder for `--resume`, checked to be a Stitch checkpoint of `algo`."""
    path = Path(run_dir) / "checkpoint.pt"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"--resume {run_dir}: no such run folder (no {path})")
    state = load_checkpoint(path)
    if state.get("algo", algo) != algo:
        raise CheckpointError(f"checkpoint {path} belongs to {state['algo']}, not {algo}")
    missing = [k for k in ("args", "step", "evals", "rng") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a Stitch {algo} checkpoint (no {', '.join(missing)})")
    return state


def load_policy_checkpoint(run_dir: str | Path, algo: str) -> dict[str, Any]:
    """A run folder's checkpoint for its script's `load_policy`: also checked to record the data's dimensions."""
    state = load_run_checkpoint(run_dir, algo)
    if "obs_dim" not in state or "act_dim" not in state:
        raise CheckpointError(f"{Path(run_dir) / 'checkpoint.pt'} was written before the scripts recorded the "
                              f"data's dimensions (no obs_dim/act_dim); retrain the run to load its policy")
    return state


def run_algo(run_dir: str | Path) -> str:
    """The name of the script that wrote a run folder's checkpoint (`algorithms/<name>.py`)."""
    state = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    if not isinstance(state.get("algo"), str):
        raise CheckpointError(f"{Path(run_dir) / 'checkpoint.pt'} records no algorithm; not a Stitch checkpoint")
    return state["algo"]
