"""Create (or update) d3rlpy's own virtual environment, .venv-d3rlpy/ in the repository root.

    python benchmarks/peers/make_d3rlpy_venv.py              # create, or bring up to date; nothing to do if current
    python benchmarks/peers/make_d3rlpy_venv.py --check      # exit 0 if ready, 1 (with the reason) if not
    python benchmarks/peers/make_d3rlpy_venv.py --torch-index-url https://download.pytorch.org/whl/cpu
    python benchmarks/peers/make_d3rlpy_venv.py --force      # delete it and start again

d3rlpy 2.8.1 pins gymnasium==1.0.0 (Stitch uses 1.2.2), so it cannot share our environment. Every package is
pinned in benchmarks/peers/requirements-d3rlpy.txt (d3rlpy 2.8.1, the same torch, numpy and MuJoCo as ours).
Steps, each safe to repeat: make the venv with this Python; ask pip for a dry run of the whole install and stop
if it would bring in CUDA packages (an unpinned or CUDA-built torch is gigabytes; `--allow-cuda` on a GPU
machine); install torch==2.13.0 first, then the rest; `pip check`; import d3rlpy and make Hopper-v5; write
.venv-d3rlpy/stitch-peer.json, which marks the venv complete for these requirements (the grid checks it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.peers import (  # noqa: E402
    D3RLPY_REQUIREMENTS,
    STAMP_FILE,
    PeerError,
    check_d3rlpy_venv,
    d3rlpy_venv,
    requirements_hash,
    venv_python,
)

TORCH = "torch==2.13.0"  # also in requirements-d3rlpy.txt; installed on its own first
VERIFY = """
import json, d3rlpy, gymnasium, mujoco, numpy, torch
env = gymnasium.make("Hopper-v5"); env.reset(seed=0); env.close()
print(json.dumps({"d3rlpy": d3rlpy.__version__, "torch": torch.__version__, "gymnasium": gymnasium.__version__,
                  "mujoco": mujoco.__version__, "numpy": numpy.__version__, "cuda": torch.version.cuda}))
"""


def run(cmd: list[str], what: str) -> str:
    """Run a command, echoing it; on failure exit with the tail of its output."""
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise SystemExit(f"error: {what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def cuda_packages(python: Path, torch_index_url: str | None) -> list[str]:
    """Packages a full install would bring in that are CUDA builds (pip's dry-run report)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [str(python), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
               str(report), TORCH, "-r", str(D3RLPY_REQUIREMENTS)]
        if torch_index_url:
            cmd += ["--extra-index-url", torch_index_url]
        run(cmd, "pip's dry run of the install")
        items = json.loads(report.read_text())["install"]
    found = []
    for item in items:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if name.lower().startswith(("nvidia-", "triton")) or (name.lower() == "torch" and "+cu" in version):
            found.append(f"{name}=={version}")
    print(f"dry run: {len(items)} packages, {len(found)} CUDA packages", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only say whether the venv is ready (exit 0) or not (1)")
    parser.add_argument("--force", action="store_true", help="delete the venv first and make it again")
    parser.add_argument("--python", default=sys.executable, help="the Python the venv is made from (>= 3.9)")
    parser.add_argument("--torch-index-url", default=None,
                        help="index to take torch from, e.g. https://download.pytorch.org/whl/cpu for the CPU build")
    parser.add_argument("--allow-cuda", action="store_true", help="install even if CUDA packages come in (GPU machine)")
    args = parser.parse_args()
    venv = d3rlpy_venv()

    if args.check or not args.force:
        try:
            python = check_d3rlpy_venv(venv)
            print(f"{venv} is ready ({python})")
            return
        except PeerError as e:
            if args.check:
                print(f"not ready: {e}", file=sys.stderr)
                raise SystemExit(1) from None
    if args.force and venv.exists():
        print(f"removing {venv}", flush=True)
        shutil.rmtree(venv)

    python = venv_python(venv)
    if not python.exists():
        version = run([args.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], "checking --python")
        if tuple(map(int, version.strip().split("."))) < (3, 9):
            raise SystemExit(f"error: d3rlpy 2.8.1 needs Python >= 3.9; {args.python} is {version.strip()}")
        run([args.python, "-m", "venv", str(venv)], f"creating the venv {venv} (is the venv module installed?)")
    (venv / STAMP_FILE).unlink(missing_ok=True)  # incomplete until the end

    found = cuda_packages(python, args.torch_index_url)
    if found and not args.allow_cuda:
        raise SystemExit(f"error: the install would bring in CUDA packages ({', '.join(found[:5])}"
                         f"{', ...' if len(found) > 5 else ''}); on a machine without a GPU take torch's CPU build: "
                         "--torch-index-url https://download.pytorch.org/whl/cpu (or --allow-cuda on a GPU machine)")
    torch_cmd = [str(python), "-m", "pip", "install", TORCH]
    if args.torch_index_url:
        torch_cmd += ["--index-url", args.torch_index_url]
    run(torch_cmd, f"installing {TORCH}")
    run([str(python), "-m", "pip", "install", "-r", str(D3RLPY_REQUIREMENTS)], f"installing {D3RLPY_REQUIREMENTS.name}")
    run([str(python), "-m", "pip", "check"], "pip check (conflicting versions in the venv)")
    versions = json.loads(run([str(python), "-c", VERIFY], "importing d3rlpy and making Hopper-v5").splitlines()[-1])

    stamp = {"requirements_sha256": requirements_hash(), "versions": versions, "python": str(python)}
    tmp = venv / (STAMP_FILE + ".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n")
    os.replace(tmp, venv / STAMP_FILE)
    print(f"{venv} is ready: " + ", ".join(f"{k} {v}" for k, v in versions.items()))


if __name__ == "__main__":
    main()
