"""Export a dataset, as Stitch's loader reads it, to one .npz of flat arrays for a peer library's environment.

    python benchmarks/peers/export.py stitch/hopper/medium-replay-v0            # -> the cache path, printed
    python benchmarks/peers/export.py stitch/hopper/medium-v0 --out /tmp/medium.npz

Runs in OUR environment (it uses common/data.py's `load_dataset`), so the peer's side never imports minari and
trains on exactly our transitions. The file holds (arrays are those of `load_dataset`, see common/data.py):
  observations, actions (as logged: the environment's units), rewards, next_observations [N, ...];
  terminals, timeouts [N] (1.0 where the environment terminated / the episode was truncated);
  episode_starts, episode_lengths [E] (the boundaries; every episode ends at its last transition whatever
  its flags say); action_low, action_high (the environment's Box bounds; empty for discrete actions);
  n_actions (the size of a Discrete action space; 0 for continuous actions, whose actions are [N, act_dim]
  floats; discrete actions are [N] int64 indices);
  dataset_id, env_id, env_spec (gymnasium's EnvSpec JSON), ref_min_score, ref_max_score, format_version,
  content_sha1 (a hash of the arrays above: the file is rewritten only when the data changed).
The default place is a cache next to the Minari data (`<dataset folder>/peer_flat_v1.npz`, beside our own
`stitch_flat_v1.npz`), or under the temporary folder when that is read-only. Writes are atomic (a temporary
file, then a rename), so cells exporting the same dataset at once never see half a file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.peers import PeerError  # noqa: E402
from common.data import Dataset, DatasetError, datasets_root, load_dataset  # noqa: E402

FORMAT_VERSION = 1
CACHE_FILE = "peer_flat_v1.npz"
ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_starts",
          "episode_lengths", "action_low", "action_high")


def export_arrays(data: Dataset) -> dict[str, np.ndarray]:
    """The file's contents for one loaded dataset (PeerError if a peer could not use it)."""
    if data.env_spec is None:
        raise PeerError(f"dataset {data.dataset_id!r} records no environment, so a peer cannot evaluate on it")
    if data.ref_min_score is None or data.ref_max_score is None:
        raise PeerError(f"dataset {data.dataset_id!r} has no reference scores, so a peer's returns cannot be "
                        "normalized")
    discrete = np.issubdtype(data.actions.dtype, np.integer)
    if not discrete and data.action_low is None:
        raise PeerError(f"dataset {data.dataset_id!r} has continuous actions but its environment records no bounds")
    try:
        spec = data.env_spec.to_json()
    except Exception as e:  # kwargs that JSON cannot hold (a callable, ...)
        raise PeerError(f"dataset {data.dataset_id!r}: its environment spec cannot be written as JSON ({e})") from e
    arrays = {name: np.ascontiguousarray(getattr(data, name)) for name in ARRAYS if getattr(data, name) is not None}
    if discrete:  # no Box bounds
        arrays["action_low"] = arrays["action_high"] = np.zeros(0, np.float32)
    digest = hashlib.sha1()
    for name in ARRAYS:
        digest.update(name.encode() + str(arrays[name].dtype).encode() + str(arrays[name].shape).encode())
        digest.update(arrays[name].tobytes())
    return {**arrays, "dataset_id": np.asarray(data.dataset_id), "env_id": np.asarray(data.env_spec.id),
            "env_spec": np.asarray(spec), "ref_min_score": np.asarray(float(data.ref_min_score)),
            "ref_max_score": np.asarray(float(data.ref_max_score)), "format_version": np.asarray(FORMAT_VERSION),
            "content_sha1": np.asarray(digest.hexdigest()),
            "n_actions": np.asarray(int(data.n_actions) if discrete else 0)}


def default_path(dataset_id: str) -> Path:
    """The cache file for an id: in the dataset's folder if writable, else under the temporary folder."""
    folder = datasets_root() / dataset_id
    if os.access(folder, os.W_OK):
        return folder / CACHE_FILE
    return Path(tempfile.gettempdir()) / "stitch-peer-data" / dataset_id / CACHE_FILE


def stored_hash(path: Path) -> str | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["content_sha1"]) if int(z["format_version"]) == FORMAT_VERSION else None
    except (OSError, KeyError, ValueError):
        return None


def export_dataset(dataset_id: str, out: str | Path | None = None, download: bool = False) -> Path:
    """Write (or keep, if current) the export of `dataset_id`; returns its path."""
    arrays = export_arrays(load_dataset(dataset_id, download=download))
    path = Path(out) if out is not None else default_path(dataset_id)
    if stored_hash(path) == str(arrays["content_sha1"]):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(3).hex()}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", help="dataset id, e.g. stitch/hopper/medium-replay-v0")
    parser.add_argument("--out", default=None, help="file to write (default: the cache next to the data)")
    parser.add_argument("--download", action="store_true", help="download a remote (non-stitch) id if missing")
    args = parser.parse_args()
    try:
        print(export_dataset(args.dataset, args.out, args.download))
    except (DatasetError, PeerError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
