"""Atomic, resumable checkpoints.

`save_checkpoint` writes to a temporary file in the same folder, flushes it to disk and renames it
over the target, so a crash at any moment leaves either the old or the new checkpoint, never half
of one. `load_checkpoint` uses `torch.load(..., weights_only=True)`: only tensors, numbers,
strings and containers of them are accepted, never arbitrary pickled objects.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from common.config import ArgumentError, flag
from common.vocabulary import upgrade_args


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not one of ours."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically. A failed write (disk full, say) raises CheckpointError and leaves the
    previous checkpoint as it was and no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # the old checkpoint stays as it was; leave no half-written file behind
        tmp.unlink(missing_ok=True)
        if not isinstance(e, (OSError, RuntimeError)):  # Ctrl-C, a bug: as it is
            raise
        # OSError: disk full, quota, permissions; RuntimeError: torch.save's writer failing (it reports a short
        # write as "unexpected pos ...", which is what a full disk looks like from inside it)
        if isinstance(e, OSError):
            reason = e.strerror or str(e)
        else:
            reason = "the write stopped part-way (out of disk space, or over a file-size limit?)"
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else None
        hint = " (the disk is full)" if free is not None and free < (1 << 20) else ""
        kept = "the previous checkpoint is unchanged" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"could not write checkpoint {path}: {reason}{hint}; {kept}") from e


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


# Settings a resumed run takes from the command line: how it is shown, where and how fast it runs, how often
# it checkpoints. Every other flag is the run's own, saved in its checkpoint; --total-steps may change within
# limits (see `resumed_args`).
RESUME_FROM_COMMAND_LINE = ("resume", "progress")
RESUME_MAY_CHANGE = ("device", "compile", "track", "download", "checkpoint_every", "checkpoint_minutes")


def resumed_args(args_cls: type, given: Any, algo: str, state: dict[str, Any],
                 fixed_length: str | None = None) -> Any:
    """The settings `--resume` continues with: the run's own (its checkpoint's `args`, read through
    `upgrade_args`), with `progress` from the command line and those of RESUME_MAY_CHANGE that the command line
    sets. Another flag set on the command line to a value other than the run's own is named in one warning and
    ignored. `--total-steps` may extend (or shorten) the run, down to the update it reached, unless
    `fixed_length` says why it cannot (a learning-rate schedule over the run's length, say): then it is an error.
    A flag counts as set when it differs from the script's default (a flag set to its default is not seen)."""
    try:
        saved = args_cls(**upgrade_args(algo, json.loads(state["args"])))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{given.resume}: saved settings do not match this script ({e})") from e
    defaults = args_cls()
    changes = {name: getattr(given, name) for name in RESUME_FROM_COMMAND_LINE}
    ignored = []
    for f in dataclasses.fields(args_cls):
        name = f.name
        new, old = getattr(given, name), getattr(saved, name)
        if name in RESUME_FROM_COMMAND_LINE or name == "runs_dir" or new == getattr(defaults, name) or new == old:
            continue
        if name in RESUME_MAY_CHANGE:
            changes[name] = new
        elif name == "total_steps":
            reached = int(state["step"])
            if fixed_length is not None:
                raise ArgumentError(f"--total-steps cannot change when resuming a {algo} run: {fixed_length} "
                                    f"(the run has --total-steps {old})")
            if new < reached:
                raise ArgumentError(f"--total-steps {new} is below the update this run already reached ({reached})")
            changes[name] = new
            print(f"{algo}: {'extending' if new > old else 'shortening'} the run from {old} to {new} updates",
                  file=sys.stderr, flush=True)
        else:
            ignored.append(f"{flag(name)} {new!r} (the run has {old!r})")
    if ignored:
        print(f"warning: a resumed run keeps its own settings; ignoring {', '.join(ignored)}", file=sys.stderr,
              flush=True)
    return dataclasses.replace(saved, **changes)
