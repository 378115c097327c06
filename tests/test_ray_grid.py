"""The grid runner on a real Ray cluster (a local head started here) and its failure handling.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_ray_grid.py

The head runs in its own process group with a private --temp-dir and is stopped by its process id (never
`ray stop`, which would stop every Ray instance on the machine). It is started WITHOUT MINARI_DATASETS_PATH,
so the tiny dataset is found only if run_grid.py passes the driver's on to the cells.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import ROOT

GRID_FLAGS = ["--total-steps", "100", "--extra", "*:--eval-every=50", "*:--eval-episodes=2", "*:--log-every=50",
              "*:--checkpoint-every=50"]


def run(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ if env is None else env, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "benchmarks/run_grid.py", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def processes_mentioning(text: str) -> list[int]:
    """Ids of the live processes whose command line contains `text`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def ray_head():
    """A one-node Ray cluster with 2 CPUs on a free port; yields its address."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="rg", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    log = Path(temp_dir) / "head.log"
    env = {k: v for k, v in os.environ.items() if k != "MINARI_DATASETS_PATH"}
    with open(log, "w") as out:
        head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                                 "--num-cpus", "2", "--port", str(port), "--include-dashboard=false",
                                 "--disable-usage-stats", "--temp-dir", temp_dir],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.time() + 90
        while "Ray runtime started" not in log.read_text():
            assert head.poll() is None and time.time() < deadline, f"Ray head did not start:\n{log.read_text()}"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM ...
        try:
            head.wait(15)
        except subprocess.TimeoutExpired:  # ... but its monitors can take a minute: the GCS is gone by now
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        deadline = time.time() + 10
        while processes_mentioning(temp_dir) and time.time() < deadline:
            time.sleep(0.5)
        for pid in processes_mentioning(temp_dir):  # only this head's processes name its temp dir
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_grid_gathers_records_skips_finished_cells_and_reports_failures(ray_head, tiny_hopper, tmp_path):
    results, runs = tmp_path / "results.jsonl", tmp_path / "runs"
    # Two good bc cells and two td3_bc cells that fail on a flag td3_bc does not have.
    grid = ["--algos", "bc", "td3_bc", "--datasets", tiny_hopper, "--seeds", "0", "1", "--results", str(results),
            "--runs-dir", str(runs), *GRID_FLAGS, "td3_bc:--no-such-flag=1"]
    first = run([*grid, "--ray-address", ray_head])
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Ray cluster: 1 nodes, 2 CPUs, 1 per cell" in first.stdout
    records = sorted((json.loads(line) for line in results.read_text().splitlines()), key=lambda r: r["seed"])
    assert [(r["algo"], r["seed"], r["total_steps"]) for r in records] == [("bc", 0, 100), ("bc", 1, 100)]
    assert all([e["step"] for e in r["evals"]] == [50, 100] and r["updates_per_s"] > 0 for r in records)
    assert all((r["ref_min_score"], r["ref_max_score"]) == (-20.0, 3000.0) for r in records)
    assert all(r["command"].startswith("python algorithms/bc.py --dataset test/hopper/tiny-v0") for r in records)
    assert all(r["git_commit"] and r["args"]["seed"] == r["seed"] for r in records)
    # Each failure names its cell and shows the tail of its log (tyro's complaint about the flag).
    for seed in (0, 1):
        assert f"FAILED td3_bc {tiny_hopper} seed {seed}: exit 2" in first.stderr
    assert "no-such-flag" in first.stderr.split("FAILED td3_bc", 1)[1]
    assert "error: 2 of 4 cells failed" in first.stderr
    assert not processes_mentioning(str(runs)), "a cell's subprocess outlived the grid"

    too_big = run([*grid, "--ray-address", ray_head, "--threads", "3"])  # would wait forever for a 3-CPU node
    assert too_big.returncode == 1 and "error: no node of the Ray cluster" in too_big.stderr, too_big.stderr

    again = run(["--algos", "bc", "--datasets", tiny_hopper, "--seeds", "0", "1", "--results", str(results),
                 "--runs-dir", str(runs), *GRID_FLAGS, "--ray-address", ray_head])
    assert again.returncode == 0, again.stderr
    assert "0 cells to run (2 already" in again.stdout
    assert len(results.read_text().splitlines()) == 2

    # The local path reports a failed cell the same way and keeps the good one, in the same record format.
    local_results = tmp_path / "local.jsonl"
    local = run(["--algos", "bc", "td3_bc", "--datasets", tiny_hopper, "--seeds", "0", "--results",
                 str(local_results), "--runs-dir", str(tmp_path / "local_runs"), "--jobs", "2", *GRID_FLAGS,
                 "td3_bc:--no-such-flag=1"])
    assert local.returncode == 1, local.stdout + local.stderr
    assert f"FAILED td3_bc {tiny_hopper} seed 0: exit 2" in local.stderr and "no-such-flag" in local.stderr
    (local_record,) = [json.loads(line) for line in local_results.read_text().splitlines()]
    assert local_record["algo"] == "bc" and local_record.keys() == records[0].keys()


def test_ray_grid_bad_input(tmp_path):
    out = run(["--algos", "bc", "--datasets", "x", "--results", str(tmp_path / "r.jsonl"), "--ray-address", "auto",
               "--jobs", "2"])
    assert out.returncode == 1 and "error: --jobs is for local grids" in out.stderr
    out = run(["--algos", "bc", "--datasets", "x", "--results", str(tmp_path / "r.jsonl"), "--ray-ship-code"])
    assert out.returncode == 1 and "need --ray-address" in out.stderr
    with socket.socket() as s:  # a port nothing listens on: a clear error at once, not minutes of retries
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = run(["--algos", "bc", "--datasets", "x", "--results", str(tmp_path / "r.jsonl"), "--ray-address",
               f"127.0.0.1:{port}"])
    assert out.returncode == 1 and "error: nothing answers at Ray address" in out.stderr, out.stderr
    assert not (tmp_path / "r.jsonl").exists()
