"""Run a benchmark grid: algorithms x datasets x seeds, one subprocess per cell, locally or on a Ray cluster.

    python benchmarks/run_grid.py --algos bc td3_bc iql cql \
        --datasets stitch/hopper/medium-replay-v0 stitch/hopper/medium-v0 \
        --seeds 0 1 --total-steps 50000 --results benchmarks/results/hopper_50k.jsonl --jobs 2

    # the same grid on a Ray cluster (`ray start --head` on one machine, `ray start --address HEAD:6379` on
    # the others): one Ray task per cell, each needing --threads CPUs, as many at once as the cluster holds
    python benchmarks/run_grid.py --algos bc td3_bc iql cql --datasets stitch/hopper/medium-v0 \
        --seeds 0 1 2 3 --results benchmarks/results/hopper_50k.jsonl --ray-address auto

Each cell runs `python algorithms/<algo>.py --dataset D --seed S --total-steps T ...` in its own run folder
under `--runs-dir`. When a cell finishes, one JSON line (the cell's key, the full config, the git commit the
cell started from, the command, the host, wall time, updates/s, the host's mean load average while the cell ran,
the dataset's reference scores and every evaluation) is added to the results file, by this process, as each cell
finishes. Cells already in the results file are skipped, and a cell whose run folder holds a checkpoint is
resumed (cells checkpoint every `--checkpoint-every` updates), so an interrupted grid continues where it
stopped. A cell whose run finished in the runs folder (another grid's, say) is recorded from its result.json as
it is, without running the script again, so its record keeps the commit it was trained at (`reused_from` names
the file). Several grids may share a results file and a runs folder on one machine (a second one started later
to use a freed core, say): each cell's folder is locked while it runs and the results file is read again before
a cell starts, so no cell is trained twice. A failed cell is reported with the tail of its log; the other cells
go on, and the exit status is 1 if any failed. Adding an algorithm to a grid is adding its script name to
`--algos`; `--extra 'algo:--flag=value'` overrides a flag for one algorithm ('*:' for all). `--reuse
OTHER.jsonl` copies cells another grid already recorded (same algorithm, dataset, seed, updates and flags)
instead of training them again, for a grid that shares cells with an earlier one after that one's run folders
are gone.

Peer libraries' algorithms are cells too (benchmarks/peers/): `--algos d3rlpy_bc d3rlpy_td3_bc d3rlpy_iql
d3rlpy_cql d3rlpy_bcq d3rlpy_bear` trains d3rlpy's on the same datasets, seeds, update budget and evaluation, in
d3rlpy's own virtual environment (`python benchmarks/peers/make_d3rlpy_venv.py` makes it), into the same results
file.

On Ray (`--ray-address auto`, `HOST:6379`, or `ray://HOST:10001` with the `ray[client]` extra, which
requirements.txt does not install) every cell is one task (reserving --threads CPUs) that runs the
same subprocess on whichever node it lands on and returns its record; the local path and the Ray path
build records with the same function, so the results files are the same either way. Where the code is:
* by default the repository must be at the same path on every node (a shared file system, or the same
  checkout at the same path). Run folders then persist on the nodes, so an interrupted cell resumes from
  its checkpoint when it lands on a node that can see its folder (every node, with a shared `--runs-dir`).
* `--ray-ship-code` ships this working tree to the nodes instead (a Ray runtime_env working_dir; files
  that .gitignore lists, such as runs/, stay behind). Nothing needs to be installed on the nodes but the
  Python packages, but a relative `--runs-dir` then lives in Ray's temporary copy, so an interrupted cell
  starts again from step 0, and the git commit recorded is this checkout's (.git is not shipped).
Either way the datasets must exist on the nodes (`stitch/...` ids are built there when missing, which
takes minutes per dataset; other ids must be copied there). `MINARI_DATASETS_PATH`, when set here, is
passed on to the cells.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import NamedTuple

import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LOG_TAIL_LINES = 15
LOAD_SAMPLE_S = 60.0  # how often a running cell samples the host's load average (see run_and_sample_load)


@dataclasses.dataclass
class Args:
    algos: list[str]
    """Algorithm script names (algorithms/<name>.py), or peers' (d3rlpy_iql, ...: benchmarks/peers/)."""
    datasets: list[str]
    """Dataset ids."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    """Seeds per (algorithm, dataset)."""
    total_steps: int = 50_000
    """Updates per run."""
    results: str = "benchmarks/results/grid.jsonl"
    """JSONL file the finished cells are added to."""
    runs_dir: str = "runs/grid"
    """Where the cells' run folders live (relative: to the current directory, or with --ray-ship-code to the
    shipped copy on each node)."""
    jobs: int = 1
    """Cells run at the same time on this machine (each with --threads torch threads); local grids only."""
    threads: int = 1
    """torch threads per cell (OMP_NUM_THREADS); on Ray also the CPUs each cell's task reserves."""
    checkpoint_every: int = 5_000
    """Updates between each cell's checkpoints, so that an interrupted cell loses at most this many (the
    scripts' own default, 50k, would make a killed 50k-update cell start again from 0)."""
    extra: list[str] = dataclasses.field(default_factory=list)
    """Flag overrides as 'algo:--flag=value' (or '*:--flag=value' for every algorithm)."""
    dry_run: bool = False
    """Print the cells that would run and exit."""
    ray_address: str | None = None
    """Run the cells on this Ray cluster ('auto', 'HOST:6379' or 'ray://HOST:10001'), one task per cell."""
    ray_ship_code: bool = False
    """With --ray-address: ship this working tree to the nodes instead of expecting the repository at the
    same path on each."""
    gpus_per_cell: float = 0.0
    """With --ray-address: GPUs each cell's task reserves (e.g. 0.5 puts two cells on one GPU)."""
    reuse: list[str] = dataclasses.field(default_factory=list)
    """Other results files (an earlier grid's): a cell found in one of them, with the same algorithm, dataset,
    seed, updates and flags, is copied from there into --results as it is (trained at the commit it records;
    `copied_from` names the file and line) instead of being trained again. Its run folder is not needed."""


class Cell(NamedTuple):
    algo: str
    dataset: str
    seed: int
    flags: list[str]

    def __str__(self) -> str:
        return f"{self.algo} {self.dataset} seed {self.seed}"


def cell_key(algo: str, dataset: str, seed: int, total_steps: int, flags: list[str]) -> str:
    """The cell's identity; flags renamed since a record was written (`--cql-alpha`) count by their new names."""
    from common.vocabulary import upgrade_flags

    return json.dumps([algo, dataset, seed, total_steps, sorted(upgrade_flags(algo, flags))])


def keyed_records(results: Path) -> dict[str, tuple[dict, int]]:
    """The records of a results file by cell key, each with its line number (the last line wins a repeated key)."""
    if not results.exists():
        return {}
    records = {}
    for n, line in enumerate(results.read_text().splitlines(), 1):
        if line.strip():
            try:
                rec = json.loads(line)
                records[cell_key(rec["algo"], rec["dataset"], rec["seed"], rec["total_steps"], rec["flags"])] = (rec, n)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise SystemExit(f"error: {results} line {n} is not a grid record ({e!r})") from None
    return records


def done_keys(results: Path) -> set[str]:
    """Keys of the cells already in the results file."""
    return set(keyed_records(results))


def append_record(results: Path, rec: dict) -> None:
    """Add one line to the results file atomically: the file is rewritten to a temporary file, then renamed,
    under an exclusive lock, so grids sharing a results file never lose each other's lines."""
    with open(results.with_name(results.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = results.read_text() if results.exists() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        tmp = results.with_name(results.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(old + json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, results)


def build_record(cell: Cell, total_steps: int, threads: int, result: dict, wall_time_s: float,
                 ref_min_score: float | None, ref_max_score: float | None, resumed: bool = False,
                 load_avg: float | None = None) -> dict:
    """The results-file line of a finished cell (the same for local and Ray runs): the cell, the command
    that reproduces it, where and how long it ran, the references its scores used, and its result.json.
    `resumed`: the run continued from a checkpoint of an interrupted one, so wall_time_s (and the script's
    updates_per_s) covers only that last part. `load_avg`: the host's mean 1-minute load average while it ran
    (see run_and_sample_load); with `cpu_count` it tells whether the cell had the machine to itself, which its
    updates_per_s depends on."""
    from benchmarks.peers import display_command

    command = [*display_command(cell.algo), "--dataset", cell.dataset, "--seed", str(cell.seed),
               "--total-steps", str(total_steps), *cell.flags]
    return {"algo": cell.algo, "dataset": cell.dataset, "seed": cell.seed, "total_steps": total_steps,
            "flags": list(cell.flags), "command": shlex.join(command), "wall_time_s": wall_time_s, "resumed": resumed,
            "threads": threads, "host": socket.gethostname(), "cpu_count": os.cpu_count(), "load_avg": load_avg,
            "ref_min_score": ref_min_score,
            "ref_max_score": ref_max_score, **{k: v for k, v in result.items() if k not in ("algo", "dataset", "seed")}}


def finished_result(checkpoint: Path, total_steps: int) -> Path | None:
    """The result.json beside `checkpoint` if the run wrote it after its last checkpoint and reached
    `total_steps` (plus its online phase's updates, `--online-steps` x `--utd-ratio`, where it has one), i.e. the
    cell is finished and there is nothing to run; else None."""
    result = checkpoint.parent / "result.json"
    try:
        r = json.loads(result.read_text())
        args = r.get("args") if isinstance(r.get("args"), dict) else {}
        online = int(args.get("online_steps") or 0) * int(args.get("utd_ratio") or 1)
        done = result.stat().st_mtime >= checkpoint.stat().st_mtime and r.get("steps") == total_steps + online
    except (OSError, ValueError, TypeError):
        return None
    return result if done else None


def run_and_sample_load(cmd: list[str], cwd: Path, env: dict, out, every: float = LOAD_SAMPLE_S) -> tuple[int, float]:
    """Run `cmd` to its end and return (exit code, mean 1-minute load average of the host sampled every `every`
    seconds and once at the end). Other processes slow a cell down: a mean load well above its torch threads,
    or above the cores, means it shared the machine, and its updates/s is not what it does alone."""
    loads = []
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                code = proc.wait(timeout=every)
                break
            except subprocess.TimeoutExpired:
                loads.append(os.getloadavg()[0])
    except BaseException:  # stop the run with the grid (it resumes from its last checkpoint)
        proc.kill()
        proc.wait()
        raise
    loads.append(os.getloadavg()[0])
    return code, sum(loads) / len(loads)


def log_tail(log: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def cell_dir_name(cell: Cell, total_steps: int) -> str:
    """The cell's run-folder name; cells that differ only in their flags get different folders (a hash of them)."""
    name = f"{cell.algo}__{cell.dataset.replace('/', '-')}__s{cell.seed}__{total_steps}"
    if cell.flags:
        name += "__" + hashlib.sha1(json.dumps(sorted(cell.flags)).encode()).hexdigest()[:8]
    return name


def cell_command(cell: Cell, total_steps: int, cell_dir: Path, repo: Path, resume: Path | None = None,
                 checkpoint_every: int | None = None) -> list[str]:
    """The command line of a cell: our script or a peer's (benchmarks/peers/), continuing `resume` if given
    (with the run's own settings). `checkpoint_every` goes before the cell's flags, which may override it; it
    is not part of the cell (the results do not depend on it: resuming is exact)."""
    from benchmarks.peers import script_command

    cmd = [*script_command(cell.algo, repo), "--no-progress"]
    if resume is not None:  # continue an interrupted cell
        return cmd + ["--resume", str(resume)]
    every = [] if checkpoint_every is None else ["--checkpoint-every", str(checkpoint_every)]
    return cmd + ["--dataset", cell.dataset, "--seed", str(cell.seed), "--total-steps", str(total_steps),
                  "--runs-dir", str(cell_dir), *every, *cell.flags]


def run_cell(cell: Cell, total_steps: int, threads: int, runs_dir: str, root: str | None = None,
             commit: str | None = None, checkpoint_every: int | None = None) -> dict:
    """Run one cell as a subprocess and return {"record": ...}, or {"error": ..., "log_tail": ...} if it failed.

    The same function runs in a thread (local) or as a Ray task on any node, so it takes plain values and
    imports the project's modules itself. `root` is the repository (None: the current directory, which is the
    shipped copy in a Ray task with a working_dir); `commit` fills in the git commit when the copy has no .git.
    """
    repo = Path(root) if root is not None else Path.cwd()
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    host = socket.gethostname()
    from benchmarks.peers import script_command

    script = Path(script_command(cell.algo, repo)[1])
    if not script.exists():
        return {"error": f"no {script} on {host}: the repository must be at the same path on every node "
                         "(or use --ray-ship-code)", "log_tail": ""}
    cell_dir = Path(runs_dir) / cell_dir_name(cell, total_steps)
    if not cell_dir.is_absolute():
        cell_dir = Path.cwd() / cell_dir
    cell_dir.mkdir(parents=True, exist_ok=True)
    # Held for the whole run: a second grid on this machine (started later to use a freed core, say) skips the
    # cell instead of training it twice into the same folder. The kernel drops the lock if this process dies.
    lock = open(cell_dir / ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return {"skipped": f"another grid is running it ({cell_dir} is locked)"}
    try:
        return _run_cell_locked(cell, total_steps, threads, cell_dir, repo, host, commit, checkpoint_every)
    finally:
        lock.close()


def _run_cell_locked(cell: Cell, total_steps: int, threads: int, cell_dir: Path, repo: Path, host: str,
                     commit: str | None, checkpoint_every: int | None) -> dict:
    from common.logging import git_commit, logged

    # The commit of the code that starts running (the script reads it only when it finishes, and the
    # checkout may have moved on by then); a shipped copy without .git gets the driver's `commit`.
    started_at = git_commit() or commit
    checkpoints = sorted(cell_dir.glob("*/checkpoint.pt"), key=lambda p: p.stat().st_mtime)
    log = cell_dir / "log.txt"
    finished = finished_result(checkpoints[-1], total_steps) if checkpoints else None
    load_avg = None
    if finished is not None:
        # Reused as it is (another grid finished it): running the script again would train nothing and only
        # rewrite its result.json with today's commit, losing the commit the run was trained at.
        results, wall_time_s = [finished], 0.0
    else:
        cmd = cell_command(cell, total_steps, cell_dir, repo, checkpoints[-1].parent if checkpoints else None,
                           checkpoint_every)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        t0 = time.time()
        with open(log, "a") as f:
            f.write(f"$ {shlex.join(cmd)}  # on {host}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            f.flush()
            returncode, load_avg = run_and_sample_load(cmd, repo, env, f)
        wall_time_s = time.time() - t0
        if returncode != 0:
            return {"error": f"exit {returncode}, log {log} on {host}", "log_tail": log_tail(log)}
        results = sorted(cell_dir.glob("*/result.json"), key=lambda p: p.stat().st_mtime)
        if not results:
            return {"error": f"finished but wrote no result.json under {cell_dir} on {host}",
                    "log_tail": log_tail(log)}
    try:
        from common.data import load_dataset

        result = json.loads(results[-1].read_text())
        # Scores from the raw returns with the dataset's references as they are now, recorded with them (a
        # rebuild during a long cell may have changed them; benchmarks/rescore.py updates older records).
        data = load_dataset(cell.dataset)
        for ev in result["evals"]:
            ev["score"] = float(data.normalized_score([ev["return"]])[0])
        result["final_score"] = float(data.normalized_score([result["final_return"]])[0])
    except Exception as e:  # noqa: BLE001 -- reported as this cell's failure, the others go on
        return {"error": f"could not score {results[-1]} on {host}: {e!r}", "log_tail": log_tail(log)}
    if checkpoints and result.get("updates_per_s") == 0:
        # The cell had finished (reused by another grid, say): this part ran no updates, so its rate is the one
        # the run logged while it trained (its last part's, where it trained in several).
        metrics = results[-1].parent / "metrics.jsonl"
        rates = logged(metrics, "updates_per_s") if metrics.is_file() else {}
        result["updates_per_s"] = rates[max(rates)] if rates else None
        result.pop("updates_per_s_with_eval", None)
        result["updates_per_s_from"] = "metrics.jsonl (the cell had finished; this part ran no updates)"
    if finished is not None:
        result["reused_from"] = str(finished)
    if started_at is not None and (finished is None or not result.get("git_commit")):
        result["git_commit"] = started_at
    return {"record": build_record(cell, total_steps, threads, result, wall_time_s,
                                   data.ref_min_score, data.ref_max_score, resumed=bool(checkpoints),
                                   load_avg=load_avg)}


class Progress:
    """Writes each outcome as it arrives: a record to the results file, or a failure report to stderr."""

    def __init__(self, results: Path, total: int):
        self.results, self.total, self.count, self.failed, self.skipped = results, total, 0, [], []

    def __call__(self, cell: Cell, outcome: dict) -> None:
        self.count += 1
        if "skipped" in outcome:
            self.skipped.append(cell)
            print(f"[{self.count}/{self.total}] skipped {cell}: {outcome['skipped']}", flush=True)
        elif "record" in outcome:
            rec = outcome["record"]
            append_record(self.results, rec)
            print(f"[{self.count}/{self.total}] done {cell}: score {rec['final_score']:.1f} "
                  f"({rec['updates_per_s']:.0f} upd/s, {rec['wall_time_s'] / 60:.1f} min on {rec['host']})",
                  flush=True)
        else:
            self.failed.append(cell)
            tail = "\n".join("    " + line for line in outcome.get("log_tail", "").splitlines())
            print(f"[{self.count}/{self.total}] FAILED {cell}: {outcome['error']}" + (f"\n{tail}" if tail else ""),
                  file=sys.stderr, flush=True)


def run_local(cells: list[Cell], args: Args, progress: Progress) -> None:
    runs_dir = str(Path(args.runs_dir).resolve())
    results = Path(args.results)

    def run_unless_done(c: Cell) -> dict:  # another grid sharing the results file may have finished it meanwhile
        if cell_key(c.algo, c.dataset, c.seed, args.total_steps, c.flags) in done_keys(results):
            return {"skipped": f"already in {results} (finished by another grid)"}
        return run_cell(c, args.total_steps, args.threads, runs_dir, str(ROOT), checkpoint_every=args.checkpoint_every)

    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = {pool.submit(run_unless_done, c): c for c in cells}
        for fut in as_completed(futures):
            try:
                outcome = fut.result()
            except Exception as e:  # noqa: BLE001 -- a bug in run_cell fails its cell, not the grid
                outcome = {"error": repr(e), "log_tail": ""}
            progress(futures[fut], outcome)
    finally:  # on Ctrl-C: start no more cells (the running ones got the SIGINT too)
        pool.shutdown(wait=False, cancel_futures=True)


def check_reachable(address: str) -> None:
    """Fail fast on a HOST:PORT (or ray://HOST:PORT) that nothing answers at: ray.init would retry for minutes."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"error: --ray-address {address!r} is not 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as e:
        raise SystemExit(f"error: nothing answers at Ray address {address!r} ({e}); is the cluster's head running "
                         "(`ray start --head`)?") from None


def run_ray(cells: list[Cell], args: Args, progress: Progress) -> None:
    import ray
    from ray.exceptions import RayError

    env_vars = {k: os.environ[k] for k in ("MINARI_DATASETS_PATH", "STITCH_D3RLPY_VENV") if k in os.environ}
    runtime_env: dict = {"env_vars": env_vars}
    commit = None
    if args.ray_ship_code:
        from common.logging import git_commit

        runtime_env["working_dir"] = str(ROOT)
        runtime_env["excludes"] = [".git"]  # also Ray's default; .gitignore'd files stay behind too
        commit = git_commit()
        root, runs_dir = None, args.runs_dir
    else:
        root, runs_dir = str(ROOT), str(Path(args.runs_dir).resolve())
    check_reachable(args.ray_address)
    try:
        ray.init(address=args.ray_address, runtime_env=runtime_env, logging_level="WARNING")
    except Exception as e:  # noqa: BLE001 -- ConnectionError, ValueError, ... : one line for the user
        raise SystemExit(f"error: cannot connect to the Ray cluster at {args.ray_address!r}: {e}") from None
    try:
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= args.threads and r.get("GPU", 0) >= args.gpus_per_cell for r in nodes):
            raise SystemExit(f"error: no node of the Ray cluster at {args.ray_address!r} has {args.threads} CPUs "
                             f"and {args.gpus_per_cell} GPUs for a cell (nodes' CPUs, GPUs: "
                             f"{[(r.get('CPU', 0), r.get('GPU', 0)) for r in nodes]})")
        print(f"Ray cluster: {len(nodes)} nodes, {sum(r.get('CPU', 0) for r in nodes):.0f} CPUs, "
              f"{args.threads} per cell", flush=True)
        task = ray.remote(num_cpus=args.threads, num_gpus=args.gpus_per_cell)(run_cell)
        pending = {task.remote(c, args.total_steps, args.threads, runs_dir, root, commit, args.checkpoint_every): c
                   for c in cells}
        while pending:  # records are written as they arrive, so an interrupted driver keeps every finished cell
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cell = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayError as e:  # the task itself died (node lost, out of memory, ...)
                    outcome = {"error": f"Ray task failed: {e}", "log_tail": ""}
                progress(cell, outcome)
    finally:
        ray.shutdown()


def main(args: Args) -> None:
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    from benchmarks.peers import D3RLPY_ALGOS, PeerError, check_d3rlpy_venv, is_peer

    for algo in args.algos:
        if not (ROOT / "algorithms" / f"{algo}.py").exists() and not is_peer(algo):
            raise SystemExit(f"error: no algorithms/{algo}.py (available: "
                             f"{', '.join(sorted(p.stem for p in (ROOT / 'algorithms').glob('*.py')))}; "
                             f"peers: {', '.join(D3RLPY_ALGOS)})")
        if is_peer(algo) and args.ray_address is None:  # on Ray, each node needs the venv (the cell checks)
            try:
                check_d3rlpy_venv()
            except PeerError as e:
                raise SystemExit(f"error: {algo}: {e}") from None
    for e in args.extra:
        if ":" not in e:
            raise SystemExit(f"error: --extra {e!r} is not 'algo:--flag=value' (or '*:--flag=value')")
    if args.threads < 1 or args.jobs < 1:
        raise SystemExit(f"error: --threads and --jobs must be at least 1 (got {args.threads} and {args.jobs})")
    if args.checkpoint_every < 1:
        raise SystemExit(f"error: --checkpoint-every must be at least 1 (got {args.checkpoint_every})")
    if args.ray_address is None and (args.ray_ship_code or args.gpus_per_cell):
        raise SystemExit("error: --ray-ship-code and --gpus-per-cell need --ray-address")
    if args.ray_address is not None and args.jobs != 1:
        raise SystemExit("error: --jobs is for local grids; on Ray the cluster's CPUs decide how many cells run "
                         "at once (--threads CPUs each)")
    reusable = {}
    for other in map(Path, reversed(args.reuse)):  # the first file named wins a cell found in several
        if not other.is_file():
            raise SystemExit(f"error: --reuse {other}: no such results file")
        if other.resolve() == results.resolve():
            raise SystemExit(f"error: --reuse {other} is the --results file itself")
        reusable.update({k: (rec, f"{other} line {n}") for k, (rec, n) in keyed_records(other).items()})
    done = done_keys(results)
    cells, copies = [], []
    for dataset in args.datasets:
        for algo in args.algos:
            flags = [e.split(":", 1)[1] for e in args.extra if e.split(":", 1)[0] in (algo, "*")]
            for seed in args.seeds:
                key = cell_key(algo, dataset, seed, args.total_steps, flags)
                if key in done:
                    continue
                if key in reusable:
                    copies.append((Cell(algo, dataset, seed, flags), *reusable[key]))
                else:
                    cells.append(Cell(algo, dataset, seed, flags))
    copied = f", {len(copies)} to copy from --reuse" if copies else ""
    print(f"{len(cells)} cells to run ({len(done)} already in {results}{copied})", flush=True)
    if args.dry_run:
        for c, _, where in copies:
            print("   copy", c, *c.flags, "from", where)
        for c in cells:
            print("  ", c, *c.flags)
        return
    for c, rec, where in copies:
        if cell_key(c.algo, c.dataset, c.seed, args.total_steps, c.flags) in done_keys(results):
            continue  # another grid sharing the results file recorded it meanwhile
        append_record(results, {**rec, "copied_from": where})
        print(f"copied {c}: score {rec['final_score']:.1f} (from {where})", flush=True)
    if not cells:
        return
    progress = Progress(results, len(cells))
    try:
        (run_local if args.ray_address is None else run_ray)(cells, args, progress)
    except KeyboardInterrupt:
        raise SystemExit(f"interrupted: {progress.count - len(progress.failed) - len(progress.skipped)} of "
                         f"{len(cells)} cells finished and "
                         f"are in {results}; the same command continues the grid") from None
    if progress.failed:
        raise SystemExit(f"error: {len(progress.failed)} of {len(cells)} cells failed (reported above): "
                         + "; ".join(map(str, progress.failed)))
    skipped = f" ({len(progress.skipped)} skipped: another grid ran them)" if progress.skipped else ""
    print(f"all {len(cells)} cells done{skipped} -> {results}", flush=True)


if __name__ == "__main__":
    main(tyro.cli(Args))
