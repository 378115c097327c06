"""benchmarks/export.py and benchmarks/record.py on tiny runs of every script in algorithms/.

An exported file must act without this repository: it is loaded in a fresh, isolated interpreter (`python -I`,
run outside the repository) that imports torch only (ONNX: onnxruntime), and its actions must equal the
script's own `load_policy` on a batch of the data's observations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_dataset
from test_resume import SMALL_FLAGS, args_fields, only_run_dir, run_in_process
from benchmarks import export as export_tool
from benchmarks import training_scripts
from benchmarks import record as record_tool
from benchmarks.run_policy import RunError, load_run_policy
from common.data import load_dataset
from common.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
ALGOS = training_scripts()  # the off-policy evaluators save no policy
DATASET = "test/hopper/tiny-v0"
CARTPOLE = "test/cartpole/tiny-v0"  # for the scripts for discrete actions
DISCRETE = {p.stem for p in (ROOT / "algorithms").glob("*.py") if "discrete=True" in p.read_text()}


def dataset(algo: str) -> str:
    return CARTPOLE if algo in DISCRETE else DATASET


def action_shape(algo: str, n: int) -> tuple[int, ...]:
    return (n,) if algo in DISCRETE else (n, 3)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:DeprecationWarning")  # still the torch-only format
ONNX_MISSING = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]

# Loads an exported file and writes its actions, with nothing of this repository importable.
TORCHSCRIPT_CHILD = """
import sys, torch
root, path, obs, out = sys.argv[1:]
import importlib.util
assert not any(p.startswith(root) for p in sys.path), sys.path
assert importlib.util.find_spec("algorithms") is None and importlib.util.find_spec("benchmarks") is None
policy = torch.jit.load(path)
with torch.no_grad():
    torch.save([policy(batch) for batch in torch.load(obs)], out)
"""
ONNX_CHILD = """
import sys, numpy as np, onnxruntime
root, path, obs, out = sys.argv[1:]
assert not any(p.startswith(root) for p in sys.path), sys.path
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
batches = np.load(obs)
np.savez(out, *[session.run(None, {"obs": batches[k]})[0] for k in sorted(batches.files)])
"""


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A function algo -> the folder of a 3-update run of that script on a tiny Hopper dataset (trained once)."""
    root = tmp_path_factory.mktemp("export")
    runs: dict[str, Path] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
        make_dataset(DATASET, episodes=4, max_steps=60)
        make_dataset(CARTPOLE, env_id="CartPole-v1", episodes=4, max_steps=60, ref_scores=(9.0, 500.0))

        def run(algo: str) -> Path:
            if algo not in runs:
                flags = ["--dataset", dataset(algo), "--runs-dir", str(root / algo), "--total-steps", "3",
                         "--eval-episodes", "0", "--log-every", "1", "--checkpoint-every", "3", "--batch-size", "16",
                         "--no-progress"]
                run_in_process(algo, flags + (["--hidden-dim", "32"] if "hidden_dim" in args_fields(algo) else [])
                               + SMALL_FLAGS.get(algo, []))
                runs[algo] = only_run_dir(root / algo)
            return runs[algo]
        yield run


def observations(n: int = 64, algo: str = "iql") -> np.ndarray:
    return load_dataset(dataset(algo)).observations[:n].astype(np.float32)


def isolated(child: str, *argv, cwd: Path) -> None:
    """Run `child` in a fresh `python -I` (no PYTHONPATH, no user site, no script folder) outside the repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-I", "-c", child, str(ROOT), *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


def declined_as_a_sequence_model(run_dir: Path, fmt: str, tmp_path: Path) -> bool:
    """True for a policy that acts on the episode's history (one with `reset`, such as dt's): no observation ->
    action file can hold it, so the test checks that export declines it with one line and writes nothing."""
    if not hasattr(load_run_policy(run_dir).policy, "reset"):
        return False
    with pytest.raises(RunError, match="acts on the episode's history"):
        export_tool.export(run_dir, fmt, tmp_path / "policy")
    assert list(tmp_path.iterdir()) == []
    return True


@pytest.mark.parametrize("algo", ALGOS)
def test_torchscript_acts_like_load_policy_without_the_repo(algo, tiny_runs, tmp_path):
    run_dir = tiny_runs(algo)
    if declined_as_a_sequence_model(run_dir, "torchscript", tmp_path):
        return
    path, diff = export_tool.export(run_dir, "torchscript", tmp_path / "policy.pt")
    assert path.is_file() and diff is not None and diff <= export_tool.ATOL["torchscript"]
    policy = load_run_policy(run_dir).policy
    batches = [observations(1, algo), observations(64, algo)]  # traced with 16 observations: any batch size works
    torch.save([torch.as_tensor(obs) for obs in batches], tmp_path / "obs.pt")
    isolated(TORCHSCRIPT_CHILD, path, tmp_path / "obs.pt", tmp_path / "actions.pt", cwd=tmp_path)
    for obs, got in zip(batches, torch.load(tmp_path / "actions.pt"), strict=True):
        got, expected = got.numpy(), np.asarray(policy(obs))
        assert got.dtype == expected.dtype and got.shape == expected.shape == action_shape(algo, len(obs))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    meta = {"stitch.json": ""}
    torch.jit.load(str(path), _extra_files=meta)
    facts = json.loads(meta["stitch.json"])
    expected_facts = [algo, CARTPOLE, 3, 4, 1] if algo in DISCRETE else [algo, DATASET, 3, 11, 3]
    assert [facts[k] for k in ("algo", "dataset", "step", "obs_dim", "act_dim")] == expected_facts


@pytest.mark.skipif(bool(ONNX_MISSING), reason=f"ONNX export needs {', '.join(ONNX_MISSING)} "
                                               f"({export_tool.ONNX_PACKAGES})")
@pytest.mark.parametrize("algo", ALGOS)
def test_onnx_acts_like_load_policy_without_the_repo(algo, tiny_runs, tmp_path):
    run_dir = tiny_runs(algo)
    if declined_as_a_sequence_model(run_dir, "onnx", tmp_path):
        return
    path, diff = export_tool.export(run_dir, "onnx", tmp_path / "policy.onnx")
    assert diff is not None and diff <= 1e-5
    assert [p.name for p in tmp_path.iterdir()] == ["policy.onnx"]  # one self-contained file (no .data)
    policy = load_run_policy(run_dir).policy
    batches = [observations(1, algo), observations(64, algo)]
    np.savez(tmp_path / "obs.npz", *batches)  # arr_0, arr_1
    isolated(ONNX_CHILD, path, tmp_path / "obs.npz", tmp_path / "actions.npz", cwd=tmp_path)
    actions = np.load(tmp_path / "actions.npz")
    for obs, key in zip(batches, sorted(actions.files), strict=True):
        got, expected = actions[key], np.asarray(policy(obs))
        assert got.shape == expected.shape == action_shape(algo, len(obs))
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_export_default_path_is_in_the_run_folder(tiny_runs):
    run_dir = tiny_runs("iql")
    path, _ = export_tool.export(run_dir)
    assert path == run_dir / "policy.pt" and path.is_file()
    assert not [p for p in run_dir.iterdir() if ".tmp" in p.name]


def test_onnx_without_its_packages_is_one_line(tiny_runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(RunError, match=r"--format onnx needs the package .*pip install onnx onnxscript"):
        export_tool.export(tiny_runs("iql"), "onnx", tmp_path / "policy.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_checks_the_file_against_load_policy(tiny_runs, tmp_path, monkeypatch):
    # a file that does not act like load_policy (here: its check run is made to disagree) is not kept
    real = export_tool.run_file
    monkeypatch.setattr(export_tool, "run_file", lambda *a: real(*a) + 0.1)
    with pytest.raises(RunError, match="differ from load_policy's"):
        export_tool.export(tiny_runs("iql"), "torchscript", tmp_path / "policy.pt")
    assert list(tmp_path.iterdir()) == []


def cli(script: str, *argv, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_bad_run_folders_are_one_line(tmp_path):
    not_a_run = tmp_path / "notes"
    not_a_run.mkdir()
    (not_a_run / "readme.txt").write_text("hello")
    no_checkpoint = tmp_path / "iql__x__s0__y"
    no_checkpoint.mkdir()
    (no_checkpoint / "args.json").write_text("{}")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    for folder, message in [(tmp_path / "missing", "no such folder"), (not_a_run, "is not a run folder"),
                            (no_checkpoint, "run folder without a checkpoint"), (corrupt, "corrupt or unreadable")]:
        with pytest.raises(RunError, match=message):
            load_run_policy(folder)
    for script in ("export.py", "record.py"):  # the command line: one line, no traceback
        proc = cli(script, not_a_run)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines() == [f"error: {not_a_run} is not a run folder (no checkpoint.pt): "
                                                    f"pass a folder a script in algorithms/ wrote, such as "
                                                    f"runs/iql__stitch-hopper-medium-v0__s0__..."]


def renders() -> str | None:
    """Why MuJoCo cannot render offscreen here (None: it can)."""
    try:
        record_tool.check_renderer()
        import gymnasium as gym
        env = gym.make("Hopper-v5", render_mode="rgb_array")
        env.reset(seed=0)
        env.render()
        env.close()
    except Exception as e:  # noqa: BLE001 -- any failure means: no rendering on this machine
        return f"{type(e).__name__}: {e}"
    return None


def test_record_writes_the_episodes_frames(tiny_runs, tmp_path):
    why = renders()
    if why is not None:
        pytest.skip(f"MuJoCo cannot render offscreen on this machine ({why})")
    run_dir = tiny_runs("bc")
    out, strip = tmp_path / "episodes.gif", tmp_path / "strip.png"
    record_tool.main(record_tool.Args(run=str(run_dir), episodes=2, out=str(out), strip=str(strip), every=1,
                                      size=64, strip_frames=3, max_steps=5))
    # the run's evaluation episodes 0 and 1: every=1 keeps the reset frame and one frame per step (5 at most)
    info: dict = {}
    evaluate(load_run_policy(run_dir).policy, load_dataset(DATASET).env_spec, 2, seed=0, episode_info=info)
    from PIL import Image
    with Image.open(out) as gif:
        assert gif.n_frames == sum(min(n, 5) + 1 for n in info["length"]) and max(gif.size) == 64
    with Image.open(strip) as png:
        assert png.size == (3 * 64, 64)


def test_record_when_rendering_is_unavailable_is_one_line(tiny_runs, tmp_path, monkeypatch):
    # MuJoCo refuses to start without a usable OpenGL backend
    proc = cli("record.py", tiny_runs("bc"), "--out", tmp_path / "x.gif", env={"MUJOCO_GL": "invalid"})
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: MuJoCo cannot start its renderer") and "apt-get install libegl1" in line
    assert not (tmp_path / "x.gif").exists()

    # an environment that cannot render (no OpenGL context, no pygame): one line naming it and what to install
    def no_render(self):
        raise RuntimeError("an OpenGL platform library has not been loaded into this process")
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    monkeypatch.setattr(MujocoEnv, "render", no_render)
    with pytest.raises(record_tool.RenderError, match=r"cannot render Hopper-v5 offscreen \(RuntimeError: an OpenGL "
                                                      r"platform library .*apt-get install libosmesa6"):
        record_tool.record(lambda obs: np.zeros((len(obs), 3), np.float32), "Hopper-v5", 1, seed=0)


def test_record_mp4_without_an_encoder_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    frames = [np.zeros((8, 8, 3), np.uint8)] * 2
    with pytest.raises(record_tool.RenderError, match="pip install imageio imageio-ffmpeg"):
        record_tool.write_video(frames, tmp_path / "x.mp4", 30, 0)
