"""Datasets: resolve a Minari dataset id to flat transition arrays.

    data = load_dataset("stitch/hopper/medium-replay-v0")
    data.observations[i], data.actions[i], data.rewards[i], data.next_observations[i], data.terminals[i]

Conventions (the same as D4RL's `qlearning_dataset`, without its dropped last transition):
* each Minari episode with N steps has N+1 observations; transition i pairs `obs[i]` with `obs[i+1]`;
* `terminals` are true environment terminations (stop bootstrapping); `timeouts` mark episodes cut by a
  time limit (or by the end of logging) and do NOT stop bootstrapping;
* `episode_starts` / `episode_lengths` give the episode boundaries in the flat arrays;
* `actions` are as logged; `action_low` / `action_high` are the environment's bounds. Algorithms see
  continuous actions in [-1, 1]: `Buffer.from_dataset` rescales them and `evaluate` maps the
  policy's [-1, 1] outputs back (both are the identity for MuJoCo locomotion, whose bounds are +-1).

Ids under `stitch/` are the project's own suite. One that is missing locally is built on first use by
the suite's command line, `python benchmarks/suite/build.py ID`, run in a subprocess from the Stitch
checkout this `common/` sits in (its progress shown as it goes, one build at a time per id under a file
lock, a failure raised as one DatasetError line); `common/` imports nothing from `benchmarks/`. A copy of
`common/` without Stitch's `benchmarks/` loads stitch ids that are already built (point
MINARI_DATASETS_PATH at the root they were built in) and says how to build the others. Other ids
(`mujoco/hopper/medium-v0`, `D4RL/...`) are loaded when present in the local Minari root
(`$MINARI_DATASETS_PATH`, default `~/.minari/datasets`), and downloaded only when asked (`download=True`).
Every dataset is checked on load: finite values, consistent lengths, shapes that match its environment.
Problems raise `DatasetError` with a message naming the dataset and field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

from common.evaluation import make_env
from common.files import remove_orphans

# D4RL's reference returns (d4rl/gym_mujoco/__init__.py), used for remote ids that carry none
# (Minari's mujoco/*-v0 datasets store no ref_min_score / ref_max_score).
FALLBACK_REF_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}

STITCH_ROOT = Path(__file__).resolve().parents[1]  # the Stitch checkout around common/ (or a project it is copied to)
SUITE_COMMAND = ("benchmarks", "suite", "build.py")  # the suite's builder, relative to STITCH_ROOT


class DatasetError(ValueError):
    """A dataset id that cannot be resolved, or data that is inconsistent or invalid."""


@dataclasses.dataclass
class Dataset:
    dataset_id: str
    observations: np.ndarray  # [N, obs_dim] float32
    actions: np.ndarray  # [N, act_dim] float32 (or [N] int64 for discrete actions)
    rewards: np.ndarray  # [N] float32
    next_observations: np.ndarray  # [N, obs_dim] float32
    terminals: np.ndarray  # [N] float32, 1.0 where the environment terminated
    timeouts: np.ndarray  # [N] float32, 1.0 where the episode was truncated
    episode_starts: np.ndarray  # [E] int64 index of each episode's first transition
    episode_lengths: np.ndarray  # [E] int64
    env_spec: gym.envs.registration.EnvSpec | None
    ref_min_score: float | None
    ref_max_score: float | None
    action_low: np.ndarray | None = None  # bounds of a continuous (Box) action space, from the environment
    action_high: np.ndarray | None = None
    n_actions: int | None = None  # size of a discrete action space: the environment's, or max action + 1 without one

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def act_dim(self) -> int:
        return 1 if self.actions.ndim == 1 else self.actions.shape[1]

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, in dataset order."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts) if len(self) else np.zeros(0)

    def episode_ids(self) -> np.ndarray:
        """Episode index of every transition."""
        return np.repeat(np.arange(len(self.episode_lengths)), self.episode_lengths)

    def normalized_score(self, returns: np.ndarray | list[float]) -> np.ndarray:
        """D4RL-style normalized score × 100: 100 · (R − R_random) / (R_expert − R_random)."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError(f"dataset {self.dataset_id!r} has no reference scores; cannot normalize returns")
        r = np.asarray(returns, dtype=np.float64)
        return 100.0 * (r - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)

    def select_episodes(self, keep: np.ndarray) -> "Dataset":
        """A new Dataset holding only the episodes whose index is in `keep` (order preserved)."""
        keep = np.sort(np.asarray(keep, dtype=np.int64))
        mask = np.isin(self.episode_ids(), keep)
        lengths = self.episode_lengths[keep]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        return dataclasses.replace(
            self, observations=self.observations[mask], actions=self.actions[mask], rewards=self.rewards[mask],
            next_observations=self.next_observations[mask], terminals=self.terminals[mask],
            timeouts=self.timeouts[mask], episode_starts=starts, episode_lengths=lengths)


# ----------------------------------------------------------------------------------------------
# Resolving ids
# ----------------------------------------------------------------------------------------------
def datasets_root() -> Path:
    """The local Minari root (where `minari.load_dataset` looks)."""
    return Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))


def local_dataset_ids() -> list[str]:
    root = datasets_root()
    if not root.is_dir():
        return []
    return sorted(str(p.parent.relative_to(root)) for p in root.glob("**/data") if (p / "metadata.json").is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


# ----------------------------------------------------------------------------------------------
# The stitch/ suite, through its command line (common/ imports nothing from benchmarks/)
# ----------------------------------------------------------------------------------------------
def _suite_script() -> Path | None:
    """Stitch's suite builder next to this common/, or None (common/ copied into another project)."""
    script = STITCH_ROOT.joinpath(*SUITE_COMMAND)
    return script if script.is_file() else None


def _suite_env() -> dict[str, str]:
    """Our environment, with the Minari root we read as an absolute path (the suite runs from STITCH_ROOT)."""
    return {**os.environ, "MINARI_DATASETS_PATH": os.path.abspath(datasets_root())}


def suite_ids() -> list[str]:
    """The suite's ids, from `build.py --list-ids` (once per process); [] where the suite is not here."""
    script = _suite_script()
    return [] if script is None else list(_list_suite_ids(script))


@functools.cache
def _list_suite_ids(script: Path) -> tuple[str, ...]:
    proc = subprocess.run([sys.executable, str(script), "--list-ids"], cwd=STITCH_ROOT, env=_suite_env(),
                          capture_output=True, text=True)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise DatasetError(f"could not list the stitch suite's ids (`python {script} --list-ids`: {lines[-1]})")
    return tuple(proc.stdout.split())


def _no_suite_message(dataset_id: str) -> str:
    return (f"dataset {dataset_id!r} is not in the local Minari root {datasets_root()}, and stitch/ ids are built by "
            f"Stitch's benchmarks/suite, which is not next to this copy of common/ ({STITCH_ROOT}). Build it in a "
            f"Stitch checkout with `python {'/'.join(SUITE_COMMAND)} {dataset_id}` and point MINARI_DATASETS_PATH at "
            f"the Minari root it was built in (default ~/.minari/datasets)")


def _build_with_suite(dataset_id: str, script: Path) -> None:
    """Build a suite id with `python benchmarks/suite/build.py ID` in a subprocess. Its output is passed on as
    it comes (the progress bar included), except its `error: ...` line and any traceback: the DatasetError
    raised when it fails says why in one line."""
    command = f"python {'/'.join(SUITE_COMMAND)} {dataset_id}"
    env = _suite_env()
    env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))  # the progress bar's width, through a pipe
    proc = subprocess.Popen([sys.executable, str(script), dataset_id], cwd=STITCH_ROOT, env=env,
                            stderr=subprocess.PIPE)
    error, last, crashed = None, "", False

    def relay(piece: bytes) -> None:
        nonlocal error, last, crashed
        text = piece.decode(errors="replace")
        if text.startswith("error: "):  # the builder's own one-line message
            error = text.strip().removeprefix("error: ")
        elif not crashed:
            shown, traceback, _ = text.partition("Traceback (most recent call last):")  # a crash: held back
            crashed = bool(traceback)
            sys.stderr.write(shown + ("\n" if crashed and shown else ""))
            sys.stderr.flush()
        last = text.strip() or last

    try:
        rest = b""
        for chunk in iter(proc.stderr.read1, b""):
            *pieces, rest = re.split(rb"(?<=[\r\n])", rest + chunk)  # lines, and progress-bar updates ending in \r
            for piece in pieces:
                relay(piece)
        relay(rest)
        proc.wait()
    finally:
        if proc.poll() is None:  # interrupted here: stop the build (an unfinished build leaves no dataset)
            proc.terminate()
            proc.wait()
        proc.stderr.close()
    if proc.returncode != 0:
        reason = error or last or f"exit status {proc.returncode}"
        if crashed and not error:
            reason += f" (the builder crashed; `{command}` in {STITCH_ROOT} shows its traceback)"
        raise DatasetError(f"could not build {dataset_id!r}: {reason}")
    if not _is_local(dataset_id):
        raise DatasetError(f"`{command}` finished but left no dataset {dataset_id!r} in {datasets_root()}")


def _is_local(dataset_id: str) -> bool:
    return (datasets_root() / dataset_id / "data" / "metadata.json").is_file()


def _missing_message(dataset_id: str) -> str:
    local = ", ".join(local_dataset_ids()) or "(none)"
    try:
        ids = suite_ids()
        suite = (f"the stitch suite builds locally without network: {', '.join(ids)}" if ids else
                 "stitch/ ids are built by Stitch's benchmarks/suite, which is not next to this copy of common/")
    except DatasetError as e:
        suite = str(e)
    return (f"dataset {dataset_id!r} is not in the local Minari root {datasets_root()}.\n"
            f"  - remote ids: download once with `--download` (needs network), or "
            f"`minari download {dataset_id}`, or copy it under $MINARI_DATASETS_PATH\n"
            f"  - {suite}\n"
            f"  - local ids: {local}")


@contextlib.contextmanager
def _build_lock(dataset_id: str):
    """An exclusive lock (fcntl, released when the process dies) on building one dataset id."""
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".build-{dataset_id.replace('/', '-')}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load_minari(dataset_id: str, download: bool = False):
    """Open a Minari dataset by id: build a missing `stitch/` id, download others only if asked."""
    import minari

    if not isinstance(dataset_id, str) or not dataset_id.strip():
        raise DatasetError(f"dataset id must be a non-empty string, got {dataset_id!r}")
    if not _is_local(dataset_id):
        if (datasets_root() / dataset_id / "data").exists():  # data/ without metadata.json
            raise DatasetError(f"dataset folder {datasets_root() / dataset_id} is incomplete (no data/metadata.json; "
                               f"an interrupted build or download?); delete it and build or download it again")
        if dataset_id.startswith("stitch/"):
            script = _suite_script()
            if script is None:
                raise DatasetError(_no_suite_message(dataset_id))
            ids = suite_ids()
            if dataset_id not in ids:
                raise DatasetError(f"unknown stitch dataset {dataset_id!r}; the suite has: {', '.join(ids)}")
            with _build_lock(dataset_id):  # runs started together build a missing id once
                if not _is_local(dataset_id):
                    print(f"[stitch] {dataset_id} is not built yet: building it now (one time) with "
                          f"`python {'/'.join(SUITE_COMMAND)} {dataset_id}`", flush=True)
                    _build_with_suite(dataset_id, script)
        elif download:
            try:
                return minari.load_dataset(dataset_id, download=True)
            except Exception as e:  # no network, unknown remote id, ...
                raise DatasetError(f"could not download {dataset_id!r} ({type(e).__name__}: {e}).\n"
                                   + _missing_message(dataset_id)) from e
        else:
            raise DatasetError(_missing_message(dataset_id))
    try:
        return minari.load_dataset(dataset_id)
    except Exception as e:
        raise DatasetError(f"dataset {dataset_id!r} exists at {datasets_root() / dataset_id} but cannot be "
                           f"opened ({type(e).__name__}: {e}); delete it and build or download it again") from e


def _flatten_obs(obs, dataset_id: str) -> np.ndarray:
    if isinstance(obs, dict):  # goal-conditioned tasks: concatenate the parts in key order
        return np.concatenate([_flatten_obs(obs[k], dataset_id) for k in sorted(obs)], 1)  # each part is [N, -1]
    obs = np.asarray(obs)
    return obs.reshape(len(obs), -1).astype(np.float32)


def _ref_scores(ds, spec) -> tuple[float | None, float | None]:
    """The dataset's own reference returns, else D4RL's for its environment (by the environment's name, e.g.
    Hopper-v5 -> hopper), else none."""
    meta = ds.storage.metadata
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    if lo is not None and hi is not None:
        return float(lo), float(hi)
    if spec is not None:  # mujoco/hopper/..., D4RL/hopper/...: Minari stores no reference scores for them
        name = re.sub(r"-v\d+$", "", spec.id.rsplit("/", 1)[-1]).lower()
        if name in FALLBACK_REF_SCORES:
            return FALLBACK_REF_SCORES[name]
    return None, None


CACHE_FILE = "stitch_flat_v1.npz"  # flat arrays next to the Minari data, rebuilt whenever the data changes
_ARRAYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_lengths")


def _fingerprint(dataset_id: str) -> str:
    data_dir = datasets_root() / dataset_id / "data"
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sorted(data_dir.iterdir()))


def _read_cache(dataset_id: str) -> dict[str, np.ndarray] | None:
    """The cached flat arrays, or None when there is no cache, it is stale, or it is unreadable (a file cut short
    by a crash or a full disk, say: it is deleted, to be rebuilt)."""
    path = datasets_root() / dataset_id / CACHE_FILE
    remove_orphans(path.parent, r"\." + re.escape(CACHE_FILE) + r"\.(?P<pid>\d+)\.tmp\.npz")
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != _fingerprint(dataset_id):
                return None
            return {k: z[k] for k in _ARRAYS}
    except Exception as e:  # BadZipFile, EOFError, OSError, KeyError, ValueError, ...
        print(f"[stitch] {dataset_id}: the flat cache {path} is unreadable ({type(e).__name__}); rebuilding it",
              file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            path.unlink()
        return None


def _write_cache(dataset_id: str, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache atomically: a temporary file, flushed to disk, renamed into place."""
    path = datasets_root() / dataset_id / CACHE_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, fingerprint=np.asarray(_fingerprint(dataset_id)), **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:  # a read-only dataset folder or a full disk: no cache, load from Minari each time
        with contextlib.suppress(OSError):
            tmp.unlink()


def _flatten_episodes(ds, dataset_id: str) -> dict[str, np.ndarray]:
    try:
        episodes = list(ds.iterate_episodes())
    except Exception as e:  # e.g. a truncated hdf5 file
        raise DatasetError(f"dataset {dataset_id!r} at {datasets_root() / dataset_id}: its episodes cannot be read "
                           f"({type(e).__name__}: {e}); delete it and build or download it again") from e
    obs_l, next_l, act_l, rew_l, term_l, trunc_l, lengths = [], [], [], [], [], [], []
    for ep in episodes:
        obs = _flatten_obs(ep.observations, dataset_id)
        n = len(ep.rewards)
        for name, arr in (("actions", ep.actions), ("terminations", ep.terminations), ("truncations", ep.truncations)):
            if len(arr) != n:
                raise DatasetError(f"dataset {dataset_id!r}, episode {ep.id}: {name} has {len(arr)} rows but "
                                   f"rewards has {n}")
        if len(obs) != n + 1:
            raise DatasetError(f"dataset {dataset_id!r}, episode {ep.id}: observations has {len(obs)} rows, "
                               f"expected {n + 1} (one more than actions)")
        if n == 0:
            continue
        obs_l.append(obs[:-1])
        next_l.append(obs[1:])
        act_l.append(np.asarray(ep.actions))
        rew_l.append(np.asarray(ep.rewards, dtype=np.float32).reshape(n))
        term_l.append(np.asarray(ep.terminations, dtype=np.float32).reshape(n))
        trunc_l.append(np.asarray(ep.truncations, dtype=np.float32).reshape(n))
        lengths.append(n)
    if not lengths:
        raise DatasetError(f"dataset {dataset_id!r} holds no transitions")
    actions = np.concatenate(act_l)
    actions = actions.astype(np.int64) if np.issubdtype(actions.dtype, np.integer) else actions.astype(np.float32)
    if actions.ndim > 2:
        actions = actions.reshape(len(actions), -1)
    return {"observations": np.concatenate(obs_l), "actions": actions, "rewards": np.concatenate(rew_l),
            "next_observations": np.concatenate(next_l), "terminals": np.concatenate(term_l),
            "timeouts": np.concatenate(trunc_l), "episode_lengths": np.asarray(lengths, dtype=np.int64)}


def load_dataset(dataset_id: str, download: bool = False, continuous: bool = False, discrete: bool = False) -> Dataset:
    """Flat transition arrays of a Minari dataset, checked for consistency (see module docstring).

    The first load reads every episode through Minari and caches the flat arrays next to the data
    (`stitch_flat_v1.npz`); later loads read the cache, which is rebuilt whenever the data files change.
    `continuous=True` (scripts for Box actions) rejects a dataset with discrete actions at once;
    `discrete=True` (scripts for Discrete actions) rejects one with continuous actions.
    """
    ds = load_minari(dataset_id, download=download)
    arrays = _read_cache(dataset_id)
    if arrays is None:
        arrays = _flatten_episodes(ds, dataset_id)
        _write_cache(dataset_id, arrays)
    lengths = arrays.pop("episode_lengths")
    spec = getattr(ds, "_eval_env_spec", None) or ds.env_spec
    lo, hi = _ref_scores(ds, spec)
    data = Dataset(dataset_id=dataset_id, **arrays, episode_lengths=lengths,
                   episode_starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
                   env_spec=spec, ref_min_score=lo, ref_max_score=hi)
    check_dataset(data, spaces=None if spec is not None else (ds.observation_space, ds.action_space))
    if continuous and np.issubdtype(data.actions.dtype, np.integer):
        raise DatasetError(f"dataset {dataset_id!r} has discrete actions; this script is for continuous (Box) "
                           f"actions")
    if discrete and not np.issubdtype(data.actions.dtype, np.integer):
        raise DatasetError(f"dataset {dataset_id!r} has continuous actions; this script is for discrete actions "
                           f"(stitch/cartpole/..., stitch/acrobot/...)")
    return data


BEHAVIOR_KEYS = ("behavior_log_prob", "behavior_probs")  # per-action infos the stitch suite records


def load_behavior(data: Dataset) -> np.ndarray | None:
    """The behaviour policy's recorded probability of every logged action of `data` (as `load_dataset` returned
    it), aligned with its flat arrays: log-densities [N] float64 (`behavior_log_prob`, Box actions) or the
    probabilities of all actions [N, n_actions] float64 (`behavior_probs`, Discrete actions), read from the
    episodes' infos; None when the dataset records neither (remote ids, PointMaze, datasets built before)."""
    ds = load_minari(data.dataset_id)
    rows, key = [], None
    for ep in ds.iterate_episodes():
        n = len(ep.rewards)
        infos = ep.infos or {}
        found = [k for k in BEHAVIOR_KEYS if k in infos]
        if key is None:
            if not found:
                return None  # checked on the first episode: a dataset records them for every episode or none
            key = found[0]
        elif key not in infos:
            raise DatasetError(f"dataset {data.dataset_id!r}, episode {ep.id}: no infos[{key!r}], which the episodes "
                               f"before it record")
        if n == 0:
            continue
        value = np.asarray(infos.get(key), dtype=np.float64)
        if len(value) != n:
            raise DatasetError(f"dataset {data.dataset_id!r}, episode {ep.id}: infos[{key!r}] has {len(value)} rows "
                               f"but rewards has {n}")
        rows.append(value)
    if key is None or not rows:
        return None
    out = np.concatenate(rows)
    if len(out) != len(data) or not np.isfinite(out).all():
        raise DatasetError(f"dataset {data.dataset_id!r}: infos[{key!r}] has {len(out)} rows (expected {len(data)}) "
                           f"or non-finite values")
    return out


def check_dataset(data: Dataset, spaces: tuple[gym.Space, gym.Space] | None = None) -> None:
    """Raise DatasetError for non-finite values or shapes that do not match the environment (or, for a dataset
    that records none, the observation and action `spaces` it records).

    Also records the continuous action bounds in `data.action_low` / `action_high`."""
    for name in ("observations", "actions", "rewards", "next_observations"):
        arr = getattr(data, name)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            row = int(np.nonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(1))[0][0])
            ep = int(np.searchsorted(data.episode_starts, row, side="right") - 1)
            raise DatasetError(f"dataset {data.dataset_id!r}: {name} contains NaN or inf "
                               f"(first at transition {row}, episode {ep})")
    if np.issubdtype(data.actions.dtype, np.integer) and len(data.actions):
        data.n_actions = int(data.actions.max()) + 1  # without an environment: the actions the data holds
    if data.env_spec is None:
        if spaces is None:
            return
        obs_space, act_space = spaces
        source = "its recorded spaces"
        if isinstance(act_space, gym.spaces.Box) and not np.isfinite(act_space.low).all():
            act_space = None  # unbounded actions: no bounds to rescale by; shapes checked below
    else:
        try:
            env = make_env(data.env_spec)
        except Exception as e:
            raise DatasetError(f"dataset {data.dataset_id!r}: its environment {data.env_spec.id!r} cannot be made "
                               f"({type(e).__name__}: {e})") from e
        obs_space, act_space = env.observation_space, env.action_space
        env.close()
        source = f"environment {data.env_spec.id}"
    if isinstance(act_space, gym.spaces.Box):
        data.action_low = act_space.low.astype(np.float32).reshape(-1)
        data.action_high = act_space.high.astype(np.float32).reshape(-1)
    obs_dim = int(np.prod(gym.spaces.flatten_space(obs_space).shape))
    if data.obs_dim != obs_dim:
        raise DatasetError(f"dataset {data.dataset_id!r}: observations have {data.obs_dim} features but "
                           f"{source} observes {obs_dim}")
    if isinstance(act_space, gym.spaces.Box):
        if data.actions.ndim != 2 or data.actions.shape[1] != int(np.prod(act_space.shape)):
            raise DatasetError(f"dataset {data.dataset_id!r}: actions have shape {data.actions.shape[1:]} but "
                               f"{source} expects {act_space.shape}")
    elif isinstance(act_space, gym.spaces.Discrete):
        if data.actions.ndim != 1 or data.actions.min() < 0 or data.actions.max() >= act_space.n:
            raise DatasetError(f"dataset {data.dataset_id!r}: discrete actions must be integers in "
                               f"[0, {act_space.n}) with one per transition")
        data.n_actions = int(act_space.n)


# ----------------------------------------------------------------------------------------------
# Normalization helpers (which one an algorithm uses is the script's choice)
# ----------------------------------------------------------------------------------------------
def observation_stats(observations: np.ndarray, eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std + eps (TD3+BC uses eps = 1e-3) for `(obs - mean) / std`."""
    return observations.mean(0).astype(np.float32), (observations.std(0) + eps).astype(np.float32)


def return_range_scale(data: Dataset, target: float = 1000.0) -> float:
    """IQL's locomotion reward scale: target / (max episode return - min episode return)."""
    returns = data.episode_returns()
    spread = float(returns.max() - returns.min())
    if spread <= 0:
        raise DatasetError(f"dataset {data.dataset_id!r}: all episodes have the same return; cannot scale rewards")
    return target / spread


def top_fraction_episodes(data: Dataset, fraction: float) -> np.ndarray:
    """Indices of the top `fraction` of episodes by undiscounted return (at least one)."""
    if not 0.0 < fraction <= 1.0:
        raise DatasetError(f"fraction must be in (0, 1], got {fraction}")
    returns = data.episode_returns()
    k = max(1, int(round(fraction * len(returns))))
    return np.argsort(-returns, kind="stable")[:k]
