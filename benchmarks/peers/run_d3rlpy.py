"""Train one of d3rlpy's algorithms on a Stitch dataset: export it with our loader, then train in d3rlpy's venv.

    python benchmarks/peers/run_d3rlpy.py --algo iql --dataset stitch/hopper/medium-replay-v0 --seed 0 \
        --total-steps 50000
    python benchmarks/peers/run_d3rlpy.py --algo iql --resume runs/d3rlpy_iql__stitch-hopper-medium-replay-v0__s0__...

This is what the grid runs for a `d3rlpy_<algo>` cell (and what its results record as the command). It runs in
OUR environment: it writes the dataset's flat arrays with benchmarks/peers/export.py (a cache, rewritten only
when the data changed), then replaces itself with `.venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_train.py
--data <export> ...`, passing every other flag on unchanged (see that script's --help: --seed, --total-steps,
--eval-every, --eval-episodes, --log-every, --checkpoint-every, --batch-size, --device, --runs-dir,
--no-progress). The venv must exist: `python benchmarks/peers/make_d3rlpy_venv.py` makes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.peers import PEERS_DIR, PeerError, check_d3rlpy_venv  # noqa: E402

TRAIN_SCRIPT = PEERS_DIR / "d3rlpy_train.py"


def build_command(python: Path, data: Path, algo: str, resume: str | None, rest: list[str]) -> list[str]:
    """The venv-side command line."""
    cmd = [str(python), str(TRAIN_SCRIPT), "--data", str(data)]
    if resume is not None:
        return cmd + ["--resume", resume, *rest]
    return cmd + ["--algo", algo, *rest]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """This script's own flags, and the rest (for d3rlpy_train.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Other flags go to d3rlpy_train.py unchanged.")
    parser.add_argument("--algo", choices=("bc", "td3_bc", "iql", "cql", "bc_discrete", "bcq_discrete", "cql_discrete"),
                        default="iql", help="d3rlpy algorithm")
    parser.add_argument("--dataset", default="stitch/hopper/medium-replay-v0", help="Minari dataset id")
    parser.add_argument("--resume", default=None, help="a run folder to continue (its dataset is used)")
    parser.add_argument("--download", action="store_true", help="download a remote (non-stitch) id if missing")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> None:
    args, rest = parse_args(argv)
    try:
        python = check_d3rlpy_venv()
    except PeerError as e:
        raise SystemExit(f"error: {e}") from None
    dataset = args.dataset
    if args.resume is not None:
        try:
            dataset = json.loads((Path(args.resume) / "args.json").read_text())["dataset"]
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise SystemExit(f"error: {args.resume} is not a d3rlpy run folder (args.json: {e!r})") from None

    from benchmarks.peers.export import export_dataset
    from common.data import DatasetError

    try:
        data = export_dataset(dataset, download=args.download)
    except (DatasetError, PeerError) as e:
        raise SystemExit(f"error: {e}") from None
    cmd = build_command(python, data, args.algo, args.resume, rest)
    sys.stdout.flush()
    os.execv(cmd[0], cmd)


if __name__ == "__main__":
    main()
