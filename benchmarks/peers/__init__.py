"""Peer libraries run through Stitch's benchmark tools, for side-by-side comparisons.

    python benchmarks/peers/make_d3rlpy_venv.py          # once: d3rlpy's own virtual environment, .venv-d3rlpy/
    python benchmarks/run_grid.py --algos iql d3rlpy_iql --datasets stitch/hopper/medium-replay-v0 \
        --seeds 0 1 --total-steps 50000 --results benchmarks/results/peers_hopper_50k.jsonl
    python benchmarks/speed.py --algos iql d3rlpy_iql --max-seconds 60

A peer algorithm is named `<library>_<algorithm>` (`d3rlpy_bc`, `d3rlpy_td3_bc`, `d3rlpy_iql`, `d3rlpy_cql`,
`d3rlpy_bcq`, `d3rlpy_bear`) and goes wherever one of our script names goes: the grid runs it as a cell like any
other, and its run folder holds the same files (args.json, metrics.jsonl, checkpoint.pt, result.json with the same
keys), so its results land in the same JSONL records and speed files. d3rlpy pins another gymnasium than ours, so it
runs in its own virtual environment: `run_d3rlpy.py` (in our environment) exports the dataset with our loader to
flat arrays (`export.py`), then starts `d3rlpy_train.py` in the venv, which never imports minari or our code.

This module is what the grid and the speed script need: which names are peers, the command that runs one,
and a quick check that the venv exists and is current (stdlib only).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS_DIR = Path(__file__).resolve().parent
# peer algorithm name -> the algorithm's name in d3rlpy_train.py --algo
D3RLPY_ALGOS = {"d3rlpy_bc": "bc", "d3rlpy_td3_bc": "td3_bc", "d3rlpy_iql": "iql", "d3rlpy_cql": "cql",
                "d3rlpy_bcq": "bcq", "d3rlpy_bear": "bear", "d3rlpy_bc_discrete": "bc_discrete",
                "d3rlpy_bcq_discrete": "bcq_discrete", "d3rlpy_cql_discrete": "cql_discrete"}
D3RLPY_REQUIREMENTS = PEERS_DIR / "requirements-d3rlpy.txt"
D3RLPY_VENV_VAR = "STITCH_D3RLPY_VENV"  # another venv folder than <repo>/.venv-d3rlpy (e.g. on Ray nodes)
MAKE_VENV_COMMAND = "python benchmarks/peers/make_d3rlpy_venv.py"
STAMP_FILE = "stitch-peer.json"  # written into the venv by make_d3rlpy_venv.py once it is complete


class PeerError(RuntimeError):
    """A peer that cannot run here (its virtual environment is missing or out of date, bad data, ...)."""


def is_peer(algo: str) -> bool:
    return algo in D3RLPY_ALGOS


def d3rlpy_venv(root: Path = ROOT) -> Path:
    """The d3rlpy venv folder: $STITCH_D3RLPY_VENV, or <repo>/.venv-d3rlpy."""
    return Path(os.environ.get(D3RLPY_VENV_VAR) or root / ".venv-d3rlpy")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def requirements_hash() -> str:
    """What the venv was made from: requirements-d3rlpy.txt's content (a changed pin means a stale venv)."""
    return hashlib.sha256(D3RLPY_REQUIREMENTS.read_bytes()).hexdigest()


def check_d3rlpy_venv(venv: Path | None = None) -> Path:
    """The venv's python if the venv is complete and made from the current requirements, else PeerError."""
    venv = d3rlpy_venv() if venv is None else venv
    python = venv_python(venv)
    if not python.exists():
        raise PeerError(f"d3rlpy's virtual environment {venv} is missing; create it with `{MAKE_VENV_COMMAND}`")
    try:
        stamp = json.loads((venv / STAMP_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        raise PeerError(f"d3rlpy's virtual environment {venv} is incomplete (no {STAMP_FILE}: an interrupted "
                        f"install?); finish it with `{MAKE_VENV_COMMAND}`") from None
    if stamp.get("requirements_sha256") != requirements_hash():
        raise PeerError(f"d3rlpy's virtual environment {venv} is out of date ({D3RLPY_REQUIREMENTS.name} changed "
                        f"since it was made); update it with `{MAKE_VENV_COMMAND}`")
    return python


def peer_versions() -> dict:
    """Versions in the d3rlpy venv (d3rlpy, torch, gymnasium, ...), as its stamp file records them."""
    try:
        return {"d3rlpy": json.loads((d3rlpy_venv() / STAMP_FILE).read_text())["versions"]}
    except (OSError, json.JSONDecodeError, KeyError):
        return {}


def script_command(algo: str, root: Path = ROOT, python: str = sys.executable) -> list[str]:
    """The command that trains `algo` (ours or a peer), before its flags."""
    if is_peer(algo):
        return [python, str(root / "benchmarks" / "peers" / "run_d3rlpy.py"), "--algo", D3RLPY_ALGOS[algo]]
    return [python, str(root / "algorithms" / f"{algo}.py")]


def display_command(algo: str) -> list[str]:
    """script_command as a user types it in the repository root (the command recorded in results files)."""
    return script_command(algo, Path("."), "python")
