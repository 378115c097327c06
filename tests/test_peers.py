"""Peer comparisons (benchmarks/peers/) without d3rlpy's venv: the export, the d3rlpy-side data layout and
evaluation protocol, the missing-venv errors, and the commands the grid and the driver build.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_peers.py

The real d3rlpy runs need .venv-d3rlpy (`python benchmarks/peers/make_d3rlpy_venv.py`) and are not run here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from conftest import ROOT, make_dataset

from benchmarks.peers import (
    D3RLPY_VENV_VAR,
    STAMP_FILE,
    PeerError,
    check_d3rlpy_venv,
    requirements_hash,
)
from benchmarks.peers import d3rlpy_train as side  # the venv-side script: must import without d3rlpy
from benchmarks.peers.export import export_dataset
from common.data import load_dataset

FLAT = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts", "episode_starts",
        "episode_lengths")


def d3rlpy_transitions(rows: dict) -> dict[str, np.ndarray]:
    """What d3rlpy 2.8.1 samples from MDPDataset rows: EpisodeGenerator cuts an episode after each terminal or
    timeout; BasicTransitionPicker gives an episode that terminated `size` transitions (next observation
    unused) and any other `size - 1` (next observation = the next row)."""
    flags = (rows["terminals"] > 0) | (rows["timeouts"] > 0)
    assert not np.any((rows["terminals"] > 0) & (rows["timeouts"] > 0)), "d3rlpy 2.8.1 asserts they never overlap"
    out = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals")}
    start = 0
    for end in np.nonzero(flags)[0] + 1:
        terminated = bool(rows["terminals"][end - 1])
        count = end - start if terminated else end - start - 1
        for i in range(start, start + count):
            last = terminated and i == end - 1
            out["observations"].append(rows["observations"][i])
            out["actions"].append(rows["actions"][i])
            out["rewards"].append(rows["rewards"][i, 0])
            out["next_observations"].append(rows["observations"][i] * 0 if last else rows["observations"][i + 1])
            out["terminals"].append(float(last))
        start = end
    assert start == len(flags), "rows after the last episode end"
    return {k: np.asarray(v) for k, v in out.items()}


@pytest.fixture
def mixed_hopper(minari_root):
    """Random Hopper episodes that terminate (falls) and ones cut by an 8-step time limit."""
    make_dataset("test/hopper/tiny-v0", episodes=6, max_steps=100)
    make_dataset("test/hopper/short-v0", episodes=3, max_steps=8, seed=1)
    return "test/hopper/tiny-v0", "test/hopper/short-v0"


def test_export_round_trip_and_d3rlpy_layout(mixed_hopper, tmp_path):
    for dataset_id in mixed_hopper:
        data = load_dataset(dataset_id)
        path = export_dataset(dataset_id, tmp_path / f"{dataset_id.replace('/', '-')}.npz")
        exported = side.load_export(path)
        for name in FLAT:
            assert np.array_equal(exported[name], getattr(data, name)), name
            assert exported[name].dtype == getattr(data, name).dtype, name
        assert exported["dataset_id"] == dataset_id and exported["env_id"] == "Hopper-v5"
        assert (exported["ref_min_score"], exported["ref_max_score"]) == (-20.0, 3000.0)
        spec = gym.envs.registration.EnvSpec.from_json(exported["env_spec"])
        assert spec.id == data.env_spec.id and spec.max_episode_steps == data.env_spec.max_episode_steps

        # d3rlpy's rows give back exactly our transitions, episode boundaries included
        rows = side.to_d3rlpy_arrays(exported)
        got = d3rlpy_transitions(rows)
        for name in ("observations", "actions", "rewards", "terminals"):
            assert np.array_equal(got[name], getattr(data, name)), name
        live = data.terminals == 0  # next observations after a termination are never used
        assert np.array_equal(got["next_observations"][live], data.next_observations[live])
        assert int(((rows["terminals"] > 0) | (rows["timeouts"] > 0)).sum()) == len(data.episode_lengths)

    # both kinds of episode end were exercised
    tiny, short = (load_dataset(d) for d in mixed_hopper)
    assert tiny.terminals.sum() > 0 and short.timeouts.sum() == len(short.episode_lengths)

    # an export that is current is not rewritten; one of other data is
    path = tmp_path / "tiny.npz"
    export_dataset(mixed_hopper[0], path)
    mtime = path.stat().st_mtime_ns
    assert export_dataset(mixed_hopper[0], path) == path and path.stat().st_mtime_ns == mtime
    export_dataset(mixed_hopper[1], path)
    assert side.load_export(path)["dataset_id"] == mixed_hopper[1]


def test_layout_terminal_and_timeout_on_one_step():
    """d3rlpy 2.8.1 asserts terminals and timeouts never overlap: a step flagged both is a termination."""
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    data = {"observations": obs, "next_observations": obs + 100, "actions": np.full((6, 1), 0.5, np.float32),
            "rewards": np.arange(6, dtype=np.float32), "terminals": np.array([0, 1, 0, 0, 0, 1], np.float32),
            "timeouts": np.array([0, 1, 0, 1, 0, 0], np.float32), "episode_lengths": np.array([2, 2, 2]),
            "action_low": np.array([-1.0], np.float32), "action_high": np.array([1.0], np.float32)}
    rows = side.to_d3rlpy_arrays(data)
    assert rows["terminals"].tolist() == [0, 1, 0, 0, 0, 0, 1]  # the timeout episode got its final row
    assert rows["timeouts"].tolist() == [0, 0, 0, 0, 1, 0, 0]
    assert rows["observations"][4].tolist() == (obs[3] + 100).tolist()
    got = d3rlpy_transitions(rows)
    assert np.array_equal(got["observations"], obs) and got["terminals"].tolist() == [0, 1, 0, 0, 0, 1]

    data["action_low"], data["action_high"] = np.array([0.0], np.float32), np.array([2.0], np.float32)
    assert np.allclose(side.to_d3rlpy_arrays(data)["actions"][:2], -0.5)  # 0.5 in [0, 2] is -0.5 in [-1, 1]
    data["episode_lengths"] = np.array([2, 3])
    with pytest.raises(side.DataError, match="add up to 5"):
        side.to_d3rlpy_arrays(data)


def test_d3rlpy_side_evaluates_like_common_evaluation(monkeypatch):
    """Same reset seeds, same returns: the d3rlpy side's replica of common/evaluation.py against the original."""
    import common.evaluation as ours

    assert "d3rlpy" not in sys.modules  # d3rlpy_train keeps its d3rlpy imports inside functions
    spec = gym.spec("Hopper-v5")
    spec = gym.envs.registration.EnvSpec.from_json(spec.to_json())
    spec.max_episode_steps = 15
    seen: dict[str, list[int]] = {"ours": [], "side": []}
    real_make = gym.make

    def recording_make(key):
        def make(*a, **k):
            env = real_make(*a, **k)
            reset = env.reset

            def record(seed=None, **kw):
                seen[key].append(seed)
                return reset(seed=seed, **kw)

            env.reset = record
            return env
        return make

    def policy(obs):  # deterministic, depends on the observation
        return np.tanh(obs[:, :3] * 3.0)

    monkeypatch.setattr(ours.gym, "make", recording_make("ours"))
    info_ours, info_side = {}, {}
    expected = ours.evaluate(policy, spec, episodes=5, seed=3, max_envs=2, episode_info=info_ours)
    monkeypatch.setattr(gym, "make", recording_make("side"))
    got = side.evaluate(policy, spec, episodes=5, seed=3, max_envs=2, episode_info=info_side)
    assert info_side == info_ours and len(info_ours["length"]) == 5 and max(info_ours["length"]) <= 15
    assert seen["side"] == seen["ours"] == [s for batch in side.eval_seeds(3, 5, 2) for s in batch]
    assert seen["ours"][0] == ours.EVAL_SEED_OFFSET + 30_000 and len(set(seen["ours"])) == 5
    assert np.array_equal(got, expected) and len(got) == 5
    assert side.eval_seeds(0, 120) == [[side.EVAL_SEED_OFFSET + i for i in range(s, min(s + 50, 120))]
                                       for s in (0, 50, 100)]
    assert side.EVAL_SEED_OFFSET == ours.EVAL_SEED_OFFSET
    assert np.allclose(side.normalized_score([-20.0, 3000.0, 1490.0], -20.0, 3000.0), [0.0, 100.0, 50.0])


def test_missing_or_stale_venv_errors(tmp_path, monkeypatch):
    venv = tmp_path / "venv"
    monkeypatch.setenv(D3RLPY_VENV_VAR, str(venv))
    with pytest.raises(PeerError, match=r"is missing; create it with `python benchmarks/peers/make_d3rlpy_venv.py`"):
        check_d3rlpy_venv()
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    with pytest.raises(PeerError, match="incomplete"):
        check_d3rlpy_venv()
    (venv / STAMP_FILE).write_text(json.dumps({"requirements_sha256": "0" * 64}))
    with pytest.raises(PeerError, match="out of date"):
        check_d3rlpy_venv()
    (venv / STAMP_FILE).write_text(json.dumps({"requirements_sha256": requirements_hash()}))
    assert check_d3rlpy_venv() == venv / "bin" / "python"

    # the grid, the speed script and the driver stop at once with the command that makes the venv
    env = dict(os.environ, OMP_NUM_THREADS="1", **{D3RLPY_VENV_VAR: str(tmp_path / "none")})
    for cmd in (["benchmarks/run_grid.py", "--algos", "iql", "d3rlpy_iql", "--datasets", "x", "--dry-run",
                 "--results", str(tmp_path / "r.jsonl")],
                ["benchmarks/speed.py", "--algos", "d3rlpy_cql", "--out", str(tmp_path / "s.json")],
                ["benchmarks/peers/run_d3rlpy.py", "--algo", "bc"]):
        proc = subprocess.run([sys.executable, *cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0 and "make_d3rlpy_venv.py" in proc.stderr and "missing" in proc.stderr, cmd
        assert "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "r.jsonl").exists() and not (tmp_path / "s.json").exists()


def test_grid_and_driver_commands_for_a_peer_cell(tmp_path):
    from benchmarks.peers.run_d3rlpy import build_command, parse_args
    from benchmarks.run_grid import Cell, build_record, cell_command

    cell = Cell("d3rlpy_iql", "stitch/hopper/medium-replay-v0", 1, ["--eval-every=50", "--eval-episodes=2"])
    cmd = cell_command(cell, 200, tmp_path / "cell", ROOT)
    assert cmd == [sys.executable, str(ROOT / "benchmarks" / "peers" / "run_d3rlpy.py"), "--algo", "iql",
                   "--no-progress", "--dataset", "stitch/hopper/medium-replay-v0", "--seed", "1", "--total-steps",
                   "200", "--runs-dir", str(tmp_path / "cell"), "--eval-every=50", "--eval-episodes=2"]
    resume = cell_command(cell, 200, tmp_path / "cell", ROOT, tmp_path / "cell" / "run1")
    assert resume[4:] == ["--no-progress", "--resume", str(tmp_path / "cell" / "run1")]
    ours = cell_command(cell._replace(algo="iql"), 200, tmp_path / "cell", ROOT)
    assert ours[:3] == [sys.executable, str(ROOT / "algorithms" / "iql.py"), "--no-progress"]
    # the grid's checkpoint interval goes before the cell's flags (an --extra may override it) ...
    every = cell_command(cell, 200, tmp_path / "cell", ROOT, checkpoint_every=100)
    assert every == cmd[:-2] + ["--checkpoint-every", "100"] + cmd[-2:]
    # ... and not into a resumed run, which keeps its own settings
    assert cell_command(cell, 200, tmp_path / "cell", ROOT, tmp_path / "cell" / "run1", 100) == resume

    rec = build_record(cell, 200, 1, {"final_score": 1.0, "evals": []}, 3.0, -20.0, 3000.0)
    assert rec["command"] == ("python benchmarks/peers/run_d3rlpy.py --algo iql --dataset "
                              "stitch/hopper/medium-replay-v0 --seed 1 --total-steps 200 --eval-every=50 "
                              "--eval-episodes=2")
    assert rec["algo"] == "d3rlpy_iql"

    # the driver keeps --algo/--dataset and hands every other flag to the venv side, which accepts them all
    own, rest = parse_args(cmd[2:])
    assert (own.algo, own.dataset, own.resume) == ("iql", "stitch/hopper/medium-replay-v0", None)
    venv_cmd = build_command(tmp_path / "py", tmp_path / "d.npz", own.algo, own.resume, rest)
    assert venv_cmd[:4] == [str(tmp_path / "py"), str(ROOT / "benchmarks" / "peers" / "d3rlpy_train.py"), "--data",
                            str(tmp_path / "d.npz")]
    parsed = side.parse_args(venv_cmd[2:])
    assert (parsed.algo, parsed.seed, parsed.total_steps, parsed.eval_every, parsed.eval_episodes, parsed.progress,
            parsed.runs_dir) == ("iql", 1, 200, 50, 2, False, str(tmp_path / "cell"))
    own, rest = parse_args(resume[2:])
    parsed = side.parse_args(build_command(tmp_path / "py", tmp_path / "d.npz", own.algo, own.resume, rest)[2:])
    assert parsed.resume == str(tmp_path / "cell" / "run1")
    # the flags the speed script passes
    parsed = side.parse_args(["--data", "d.npz", "--algo", "cql", "--total-steps", "300", "--eval-every", "3000",
                              "--eval-episodes", "1", "--log-every", "100", "--checkpoint-every", "3000", "--device",
                              "cpu", "--runs-dir", "r", "--no-progress"])
    assert (parsed.log_every, parsed.checkpoint_every, parsed.device) == (100, 3000, "cpu")


# ----------------------------------------------------------------------------------------------
# benchmarks/peers/flops.py: FLOPs per update and the speed-up bound
# ----------------------------------------------------------------------------------------------
def test_flops_per_update_of_our_script_counts_its_updates_only(tiny_hopper, tmp_path):
    from benchmarks.peers import flops

    # bc.py: Linear(11, 8) ReLU Linear(8, 8) ReLU Linear(8, 3) Tanh at batch 16; 2 FLOPs per multiply-add.
    # Forward 2*16*(11*8 + 8*8 + 8*3); backward: every weight's gradient (as much again) and the input
    # gradients of the last two layers (the first layer's input needs none).
    forward = 2 * 16 * (11 * 8 + 8 * 8 + 8 * 3)
    expected = forward + forward + 2 * 16 * (8 * 8 + 8 * 3)
    for updates in (3, 6):  # no evaluation episode and no set-up work is counted: the same per update
        got = flops.ours_flops_per_update("bc", tiny_hopper, updates, tmp_path / f"runs{updates}", hidden_dim=8,
                                          batch_size=16)
        assert got == expected


def test_flops_analysis_by_hand_and_readme_table(tmp_path):
    from benchmarks.peers import flops

    rows = flops.analyse({"x": {"ours": 1e9, "d3rlpy": 2e9}}, {"x": 10.0, "d3rlpy_x": 4.0}, ceiling=50.0)
    row = rows["x"]
    assert row["matmul_bound_updates_per_s"] == 50.0  # 50 GFLOP/s / 1 GFLOP per update
    assert row["achieved_gflops"] == {"ours": 10.0, "d3rlpy": 8.0}
    assert row["matmul_share_at_ceiling"] == {"ours": 0.2, "d3rlpy": 0.16}
    assert (row["speedup"], row["max_speedup_on_this_cpu"]) == (2.5, 12.5)

    record = {"algorithms": rows, "speed_file": "s.json", "device_name": "CPU", "threads": 2, "ceiling_gflops": 50.0,
              "command": "python benchmarks/peers/flops.py --speed s.json --out f.json"}
    (tmp_path / "f.json").write_text(json.dumps(record))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- peers-speed:start -->\nold\n<!-- peers-speed:end -->\nrest\n")
    flops.main(["--render", str(tmp_path / "f.json"), "--readme", str(readme)])
    text = readme.read_text()
    assert "| x | 10.0 | 4.0 | 2.50x | 1,000 / 2,000 | 10 / 8 | 12.50x |" in text
    assert "old" not in text and text.startswith("intro\n") and text.endswith("rest\n")

    with pytest.raises(SystemExit, match="give --readme"):
        flops.main(["--render", str(tmp_path / "f.json")])
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a results file of this script"):
        flops.main(["--render", str(tmp_path / "bad.json"), "--readme", str(readme)])
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        flops.main(["--render", str(tmp_path / "f.json"), "--readme", str(readme)])
    with pytest.raises(SystemExit, match="--speed"):
        flops.main([])


def test_coverage_hands_a_d3rlpy_run_to_its_venv(tiny_hopper, tmp_path, monkeypatch):
    """coverage.py recognizes a d3rlpy run folder and evaluates it through d3rlpy_train.py --evaluate-run in the
    venv; without the venv it stops with the command that makes it."""
    from benchmarks.coverage import Args as CoverageArgs
    from benchmarks.coverage import is_peer_run
    from benchmarks.coverage import main as coverage

    run = tmp_path / "d3rlpy_iql__run"
    run.mkdir()
    (run / "args.json").write_text(json.dumps({"algo": "iql", "seed": 0, "content_sha1": "ab"}))
    (run / "checkpoint.pt").write_bytes(b"")
    assert is_peer_run(run) and not is_peer_run(tmp_path)
    monkeypatch.setenv(D3RLPY_VENV_VAR, str(tmp_path / "no-venv"))
    with pytest.raises(SystemExit, match=r"is a d3rlpy run: .*is missing; create it with `python benchmarks/peers/"):
        coverage(CoverageArgs(dataset=tiny_hopper, runs=[str(run)]))
    parsed = side.parse_args(["--data", "d.npz", "--evaluate-run", str(run), "--eval-episodes", "3"])
    assert parsed.evaluate_run == str(run) and parsed.eval_episodes == 3


# ----------------------------------------------------------------------------------------------
# d3rlpy's configurations, checked against a stand-in d3rlpy that records what it is given
# ----------------------------------------------------------------------------------------------
class _Recorder:
    """Stands in for a d3rlpy config or factory class: records its keyword arguments."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        made = _Recorder(self.name)
        made.args, made.kwargs = args, kwargs
        made.create = lambda device=None: made
        return made


def _fake_d3rlpy():
    import types

    mod = types.ModuleType("d3rlpy")
    mod.algos = types.SimpleNamespace(**{n: _Recorder(n) for n in (
        "BCConfig", "TD3PlusBCConfig", "IQLConfig", "CQLConfig", "BCQConfig", "BEARConfig", "DiscreteBCConfig",
        "DiscreteBCQConfig", "DiscreteCQLConfig")})
    mod.models = types.SimpleNamespace(encoders=types.SimpleNamespace(VectorEncoderFactory=_Recorder("Encoder")),
                                       q_functions=types.SimpleNamespace(QRQFunctionFactory=_Recorder("QR")))
    mod.preprocessing = types.SimpleNamespace(StandardObservationScaler=_Recorder("Scaler"),
                                              ReturnBasedRewardScaler=_Recorder("RewardScaler"))
    mod.optimizers = types.SimpleNamespace(AdamFactory=_Recorder("Adam"),
                                           CosineAnnealingLRFactory=_Recorder("Cosine"))
    return mod


def test_every_peer_name_maps_to_an_algorithm_the_venv_side_builds(monkeypatch):
    from benchmarks.peers import D3RLPY_ALGOS
    from benchmarks.peers.run_d3rlpy import parse_args

    assert {"d3rlpy_bcq": "bcq", "d3rlpy_bear": "bear"}.items() <= D3RLPY_ALGOS.items()
    assert set(D3RLPY_ALGOS.values()) == set(side.ALGOS)
    monkeypatch.setitem(sys.modules, "d3rlpy", _fake_d3rlpy())
    for peer, algo in D3RLPY_ALGOS.items():
        assert (ROOT / "algorithms" / f"{algo}.py").is_file(), peer  # the script a report compares it with
        assert parse_args(["--algo", algo])[0].algo == algo
        assert side.parse_args(["--data", "d.npz", "--algo", algo]).algo == algo
        assert side.make_algo(algo, "stitch/hopper/medium-v0", 1000, None, False).name.startswith(
            {"bc": "BC", "td3_bc": "TD3", "iql": "IQL", "cql": "CQL", "bcq": "BCQ", "bear": "BEAR",
             "bc_discrete": "DiscreteBC", "bcq_discrete": "DiscreteBCQ", "cql_discrete": "DiscreteCQL"}[algo])


def test_d3rlpy_bcq_and_bear_use_their_reproduction_settings(monkeypatch):
    monkeypatch.setitem(sys.modules, "d3rlpy", _fake_d3rlpy())
    bcq = side.make_algo("bcq", "stitch/hopper/medium-v0", 1000, None, False).kwargs
    assert (bcq["actor_learning_rate"], bcq["critic_learning_rate"], bcq["imitator_learning_rate"]) == (1e-3,) * 3
    assert (bcq["batch_size"], bcq["lam"], bcq["action_flexibility"], bcq["n_action_samples"]) == (100, 0.75, 0.05, 100)
    assert bcq["actor_encoder_factory"].args == bcq["critic_encoder_factory"].args == ([400, 300],)
    assert bcq["imitator_encoder_factory"].args == ([750, 750],)
    assert side.make_algo("bcq", "x", 1000, 32, False).kwargs["batch_size"] == 32  # --batch-size overrides
    assert side.make_algo("bcq", "x", 1000, None, False, n_action_samples=10).kwargs["n_action_samples"] == 10
    assert side.parse_args(["--data", "d.npz", "--algo", "bcq", "--n-action-samples", "10"]).n_action_samples == 10
    for bad in (["--algo", "bear", "--n-action-samples", "10"], ["--algo", "bcq", "--n-action-samples", "0"]):
        with pytest.raises(SystemExit):
            side.parse_args(["--data", "d.npz", *bad])

    bear = side.make_algo("bear", "stitch/hopper/medium-v0", 1000, None, False).kwargs
    assert (bear["actor_learning_rate"], bear["critic_learning_rate"], bear["imitator_learning_rate"],
            bear["alpha_learning_rate"]) == (1e-4, 3e-4, 3e-4, 1e-3)
    assert (bear["temp_learning_rate"], bear["initial_temperature"]) == (0.0, 1e-20)  # no entropy term
    assert (bear["batch_size"], bear["mmd_sigma"], bear["n_mmd_action_samples"], bear["alpha_threshold"],
            bear["n_target_samples"], bear["n_action_samples"], bear["warmup_steps"]) == (256, 20.0, 4, 0.05, 10, 100,
                                                                                          40_000)
    assert bear["imitator_encoder_factory"].args == ([750, 750],)
    # the reproduction's kernel: gaussian on halfcheetah, laplacian elsewhere
    assert bear["mmd_kernel"] == "laplacian"
    assert side.make_algo("bear", "stitch/halfcheetah/medium-v0", 1000, None, False).kwargs["mmd_kernel"] == "gaussian"


def test_discrete_export_layout_and_evaluation(tiny_cartpole, tmp_path):
    """A discrete dataset exports with its n_actions and int64 actions (no Box bounds); the d3rlpy side keeps the
    actions as one integer column, d3rlpy samples exactly our transitions, and its evaluation steps CartPole with
    int actions as common/evaluation.py does."""
    import common.evaluation as ours

    data = load_dataset(tiny_cartpole)
    exported = side.load_export(export_dataset(tiny_cartpole, tmp_path / "cartpole.npz"))
    assert exported["n_actions"] == 2 and exported["actions"].dtype == np.int64
    assert exported["action_low"].shape == exported["action_high"].shape == (0,)
    for name in FLAT:
        assert np.array_equal(exported[name], getattr(data, name)), name
    rows = side.to_d3rlpy_arrays(exported)
    assert rows["actions"].dtype == np.int64 and rows["actions"].shape[1] == 1
    sampled = d3rlpy_transitions(rows)
    assert np.array_equal(sampled["actions"][:, 0], data.actions)
    assert np.array_equal(sampled["observations"], data.observations)
    assert np.array_equal(sampled["terminals"], data.terminals)

    def policy(obs):  # the balancing rule, as d3rlpy's predict returns discrete actions: an int per row
        return (obs[:, 2] + obs[:, 3] > 0).astype(np.int64)

    spec = gym.envs.registration.EnvSpec.from_json(exported["env_spec"])
    expected = ours.evaluate(policy, spec, episodes=3, seed=1)
    assert np.array_equal(side.evaluate(policy, spec, episodes=3, seed=1), expected)
    assert expected.tolist() == [60.0] * 3  # the 60-step limit of the tiny dataset's environment

    class Predicts:  # d3rlpy's algo.predict for a discrete algorithm
        def predict(self, obs):
            return np.full(len(obs), 2)

    acts = side.acting(Predicts(), exported)(np.zeros((4, 4), np.float32))
    assert acts.tolist() == [2, 2, 2, 2] and acts.dtype == np.int64  # not clipped to [-1, 1]
    assert set(side.ALGOS) >= {"bc_discrete", "bcq_discrete", "cql_discrete"}
    from benchmarks.peers import D3RLPY_ALGOS

    assert {k: v for k, v in D3RLPY_ALGOS.items() if v.endswith("_discrete")} == {
        f"d3rlpy_{a}": a for a in ("bc_discrete", "bcq_discrete", "cql_discrete")}
    assert all((ROOT / "algorithms" / f"{a}.py").is_file() for a in ("bc_discrete", "bcq_discrete", "cql_discrete"))
