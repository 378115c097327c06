"""Argument checks and device choice shared by the scripts.

Every script validates its `Args` at start with `require`, so a bad flag fails at once with a
message that names it (`--batch-size must be a positive integer, got -1`), never deep inside torch.
"""

from __future__ import annotations

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
    require(args.seed >= 0, "seed", "must be >= 0", args.seed)
    for f in ("lr", "actor_lr", "critic_lr"):
        if hasattr(args, f):
            v = getattr(args, f)
            require(v > 0, f, "must be positive", v)
    if hasattr(args, "gamma"):
        require(0.0 <= args.gamma < 1.0, "gamma", "must be in [0, 1)", args.gamma)
    if hasattr(args, "tau"):
        require(0.0 < args.tau <= 1.0, "tau", "must be in (0, 1]", args.tau)
    resolve_device(args.device)


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
