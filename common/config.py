"""Argument checks and device choice shared by the scripts.

Every script validates its `Args` at start with `require`, so a bad flag fails at once with a
message that names it (`--batch-size must be a positive integer, got -1`), never deep inside torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class ArgumentError(ValueError):
    """A command-line value that is out of range or inconsistent."""


def flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def require(condition: bool, field: str, message: str, value=None) -> None:
    if not condition:
        raise ArgumentError(f"{flag(field)} {message}" + ("" if value is None else f", got {value!r}"))


def check_common(args) -> None:
    """Checks for the fields every script shares."""
    dataset_ok = isinstance(args.dataset, str) and args.dataset.strip() != ""
    require(dataset_ok, "dataset", "must be a dataset id", args.dataset)
    for f in ("total_steps", "batch_size", "eval_every", "log_every", "checkpoint_every"):
        v = getattr(args, f)
        require(isinstance(v, int) and v > 0, f, "must be a positive integer", v)
    v = args.eval_episodes
    require(isinstance(v, int) and v >= 0, "eval_episodes", "must be a non-negative integer (0: no evaluation)", v)
    if hasattr(args, "checkpoint_minutes"):
        v = args.checkpoint_minutes
        require(v >= 0, "checkpoint_minutes", "must be >= 0 (0: only every --checkpoint-every updates)", v)
    require(isinstance(args.seed, int) and 0 <= args.seed < 2**32, "seed", "must be an integer in [0, 2**32)",
            args.seed)
    lo, hi = getattr(args, "ref_min_score", None), getattr(args, "ref_max_score", None)
    missing, given = ("ref_max_score", "ref_min_score") if hi is None else ("ref_min_score", "ref_max_score")
    require((lo is None) == (hi is None), missing, "must be given together with " + flag(given))
    require(lo is None or hi > lo, "ref_max_score", f"must exceed --ref-min-score {lo}", hi)
    for f in ("lr", "actor_lr", "critic_lr"):
        if hasattr(args, f):
            v = getattr(args, f)
            require(v > 0, f, "must be positive", v)
    if hasattr(args, "gamma"):
        require(0.0 <= args.gamma < 1.0, "gamma", "must be in [0, 1)", args.gamma)
    if hasattr(args, "tau"):
        require(0.0 < args.tau <= 1.0, "tau", "must be in (0, 1]", args.tau)
    resolve_device(args.device)
    if getattr(args, "resume", None) is None and hasattr(args, "runs_dir"):
        check_runs_dir(args.runs_dir)


def check_runs_dir(runs_dir: str) -> None:
    """--runs-dir must be (or be creatable as) a writable folder; checked before anything is loaded or written."""
    path = Path(runs_dir).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            raise ArgumentError(f"--runs-dir {runs_dir} is a file, not a folder")
        raise ArgumentError(f"--runs-dir {runs_dir} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == path else f" (in {existing})"
        reason = "a read-only file system" if _read_only(existing) else "no write permission"
        raise ArgumentError(f"--runs-dir {runs_dir}: cannot write there{where}: {reason}")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ArgumentError(f"--device {device!r} is not a device (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"--device {device!r}: CUDA is not available on this machine")
    return dev
