"""The stitch dataset suite builder (benchmarks/suite/build.py) on tiny builds from untrained policies."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch

from benchmarks.suite import build as suite
from benchmarks.suite.behavior import GaussianActor, save_actor
from conftest import kill_at_call

REF_MIN, REF_MAX = 10.0, 1000.0


def make_tiny_policies(policy_dir: Path, env_id: str = "Hopper-v5") -> dict:
    """Freshly initialized actors plus a manifest shaped like select_policies.py's, for tiny builds.

    A SAC run with a 500-step warm-up and a snapshot every 500 steps: medium = step 2000, expert =
    step 3000, medium-replay = warm-up + snapshots 1000, 1500, 2000 (2000 steps in all).
    """
    env = gym.make(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    (policy_dir / "replay").mkdir(parents=True)

    def actor(step: int, path: str) -> dict:
        torch.manual_seed(step)
        save_actor(policy_dir / path, GaussianActor(obs_dim, act_dim, hidden=32), env_id, step)
        return {"file": path, "step": step}

    manifest = {"env_id": env_id, "snapshot_every": 500, "learning_starts": 500,
                "ref_min_score": REF_MIN, "ref_max_score": REF_MAX,
                "expert": actor(3000, "expert.pt"), "medium": actor(2000, "medium.pt"),
                "replay": [actor(s, f"replay/actor_{s:08d}.pt") for s in (1000, 1500, 2000)]}
    (policy_dir / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="module")
def policies(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policies")
    make_tiny_policies(path)
    return path


def episodes(dataset_id: str) -> list[dict]:
    ds = minari.load_dataset(dataset_id)
    return [{k: np.asarray(getattr(ep, k)) for k in ("observations", "actions", "rewards", "terminations",
                                                      "truncations")} for ep in ds.iterate_episodes()]


def test_build_is_deterministic_and_well_formed(minari_root, policies):
    dataset_id = "stitch/hopper/medium-v0"
    data_file = suite.dataset_dir(dataset_id) / "data" / "main_data.hdf5"
    suite.build(dataset_id, n_steps=3000, policy_dir=policies, progress=False)
    first, first_bytes = episodes(dataset_id), data_file.read_bytes()
    with pytest.raises(FileExistsError, match="force"):
        suite.build(dataset_id, n_steps=3000, policy_dir=policies, progress=False)
    suite.build(dataset_id, n_steps=3000, policy_dir=policies, progress=False, force=True)
    second = episodes(dataset_id)
    assert data_file.read_bytes() == first_bytes, "the same build, the same file"
    assert len(first) == len(second) > 1
    for a, b in zip(first, second):
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key

    assert sum(len(ep["rewards"]) for ep in first) == 3000
    for ep in first:
        n = len(ep["rewards"])
        assert 1 <= n <= 1000
        assert ep["observations"].shape == (n + 1, 11) and ep["observations"].dtype == np.float32
        assert ep["actions"].shape == (n, 3) and ep["actions"].dtype == np.float32
        assert ep["rewards"].dtype == np.float64
        ends = ep["terminations"] | ep["truncations"]
        assert not ends[:-1].any() and ends[-1], "flags only at the episode's end, and always there"
        assert not (ep["terminations"] & ep["truncations"]).any()
    assert first[-1]["truncations"][-1] or first[-1]["terminations"][-1]

    ds = minari.load_dataset(dataset_id)
    meta = ds.storage.metadata
    assert (meta["ref_min_score"], meta["ref_max_score"]) == (REF_MIN, REF_MAX)
    assert minari.get_normalized_score(ds, np.array([REF_MAX])) == pytest.approx(1.0)
    assert meta["stitch"]["steps"] == 3000 and meta["stitch"]["episodes"] == len(first)
    assert meta["stitch"]["policy"].startswith("SAC step 2,000")
    assert [p.name for p in minari_root.iterdir()] == ["stitch"], "no temporary build folder left behind"


def test_medium_expert_is_medium_then_expert(minari_root, policies):
    for level in ("medium", "expert", "medium-expert"):
        suite.build(f"stitch/hopper/{level}-v0", n_steps=1500, policy_dir=policies, progress=False)
    medium, expert = episodes("stitch/hopper/medium-v0"), episodes("stitch/hopper/expert-v0")
    both = episodes("stitch/hopper/medium-expert-v0")
    assert len(both) == len(medium) + len(expert)
    for a, b in zip(both, medium + expert):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_medium_replay_follows_the_sac_run(minari_root, policies):
    suite.build("stitch/hopper/medium-replay-v0", policy_dir=policies, progress=False)
    eps = episodes("stitch/hopper/medium-replay-v0")
    assert sum(len(ep["rewards"]) for ep in eps) == 2000  # as many steps as SAC saw up to medium
    # The first 500 steps are the uniform warm-up, the next 500 snapshot 1000's rollouts.
    plan = suite._plan("medium-replay", json.loads((policies / "manifest.json").read_text()), policies, None)
    assert [(stream, steps) for stream, _, steps in plan] == [
        ("medium-replay/warmup", 500), ("medium-replay/1000", 500), ("medium-replay/1500", 500),
        ("medium-replay/2000", 500)]
    warmup = suite.run_group(suite.make_envs("Hopper-v5"), None, seed=0, stream="medium-replay/warmup", group=0,
                             n_steps=500)
    n_warmup = np.searchsorted(np.cumsum([len(ep) for ep in warmup]), 500) + 1
    assert sum(len(ep["rewards"]) for ep in eps[:n_warmup]) == 500
    for a, b in zip(eps[:n_warmup], warmup):
        np.testing.assert_array_equal(a["actions"], b.actions[:len(a["actions"])])
    assert eps[n_warmup - 1]["truncations"][-1] or eps[n_warmup - 1]["terminations"][-1]


def test_random_level_acts_uniformly(minari_root, policies):
    suite.build("stitch/hopper/random-v0", n_steps=2000, policy_dir=policies, progress=False)
    actions = np.concatenate([ep["actions"] for ep in episodes("stitch/hopper/random-v0")])
    assert actions.min() >= -1 and actions.max() <= 1 and abs(actions.mean()) < 0.05 and actions.std() > 0.5


def test_time_limit_is_a_truncation_never_both():
    envs = [gym.make("Hopper-v5", max_episode_steps=12) for _ in range(3)]
    eps = suite.rollout(envs, None, seed=1, stream="t", n_episodes=20)
    assert len(eps) == 20 and any(len(ep) == 12 for ep in eps) and any(len(ep) < 12 for ep in eps)
    group = suite.run_group(envs, None, seed=1, stream="t", group=0, n_steps=200)
    assert sum(len(ep) for ep in group[:-1]) < 200 <= sum(len(ep) for ep in group)
    for ep in eps + group:
        assert not (ep.terminations & ep.truncations).any()
        assert ep.truncations[-1] == (len(ep) == 12 and not ep.terminations[-1])
        assert not (ep.terminations[:-1] | ep.truncations[:-1]).any()


def test_group_is_independent_of_other_work(policies):
    """A lockstep group's episodes depend on its seeds alone: not on what the envs ran before."""
    policy = suite.load_actor(policies / "medium.pt")[0]
    envs = suite.make_envs("Hopper-v5", 4)
    first = suite.run_group(envs, policy, seed=0, stream="s", group=2, n_steps=300)
    suite.run_group(envs, None, seed=5, stream="other", group=0, n_steps=123)
    again = suite.run_group(envs, policy, seed=0, stream="s", group=2, n_steps=300)
    other_group = suite.run_group(envs, policy, seed=0, stream="s", group=3, n_steps=300)
    assert len(first) == len(again)
    for a, b in zip(first, again):
        assert a.observations.tobytes() == b.observations.tobytes() and a.actions.tobytes() == b.actions.tobytes()
    assert first[0].seed != other_group[0].seed


def test_arrays_do_not_depend_on_the_number_of_workers(minari_root, policies, monkeypatch):
    monkeypatch.setattr(suite, "GROUP_STEPS", 400)  # 2000 steps: 5 groups, spread over the workers
    monkeypatch.setattr(suite, "GROUP_ENVS", 4)
    dataset_id = "stitch/hopper/medium-v0"
    suite.build(dataset_id, n_steps=2000, policy_dir=policies, progress=False, workers=1)
    one = episodes(dataset_id)
    suite.build(dataset_id, n_steps=2000, policy_dir=policies, progress=False, workers=2, force=True)
    two = episodes(dataset_id)
    assert len(one) == len(two) > 5 and sum(len(ep["rewards"]) for ep in two) == 2000
    for a, b in zip(one, two):
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    # The stream is its groups' whole episodes in order, cut once at the end.
    policy = suite.load_actor(policies / "medium.pt")[0]
    envs = suite.make_envs("Hopper-v5", 4)
    groups = [suite.run_group(envs, policy, seed=0, stream="medium", group=g, n_steps=400) for g in range(5)]
    expected = [ep for group in groups for ep in group]
    for a, b in zip(two, expected):
        np.testing.assert_array_equal(a["observations"], b.observations[:len(a["observations"])])
    assert not any(ep["truncations"][-1] for ep in two[:-1] if len(ep["rewards"]) < 1000)


def test_writer_matches_minaris_layout(minari_root, tmp_path):
    """_EpisodeWriter writes what HDF5Storage.update_episodes writes (bar the datasets' chunking)."""
    import h5py
    from minari.data_collector import EpisodeBuffer

    eps = suite.rollout(suite.make_envs("Hopper-v5", 3), None, seed=0, stream="w", n_episodes=5)
    eps[-1] = eps[-1].cut(len(eps[-1]) // 2 + 1)
    spec = gym.spec("Hopper-v5")
    kwargs = {"env": spec, "algorithm_name": "a", "author": "b", "author_email": "c@d", "code_permalink": "e",
              "description": "f", "data_format": "hdf5"}
    minari.create_dataset_from_buffers("w/hopper/minari-v0", buffer=[
        EpisodeBuffer(seed=ep.seed, observations=ep.observations, actions=ep.actions, rewards=ep.rewards,
                      terminations=ep.terminations, truncations=ep.truncations, infos=ep.infos) for ep in eps],
        **kwargs)
    storage = minari.create_dataset_from_buffers("w/hopper/stitch-v0", buffer=[], **kwargs).storage
    with suite._EpisodeWriter(storage) as writer:
        for ep in eps:
            writer.write(ep)
    storage.update_metadata({"total_steps": writer.steps, "total_episodes": writer.episodes,
                             "dataset_size": storage.get_size()})

    files = [h5py.File(suite.dataset_dir(f"w/hopper/{name}-v0") / "data" / "main_data.hdf5", "r")
             for name in ("minari", "stitch")]
    assert list(files[0]) == list(files[1]) == [f"episode_{i}" for i in range(5)]
    for name in files[0]:
        a, b = files[0][name], files[1][name]
        assert dict(a.attrs) == dict(b.attrs) and list(a) == list(b)
        assert {k: type(v) for k, v in a.attrs.items()} == {k: type(v) for k, v in b.attrs.items()}
        for key in a:
            if isinstance(a[key], h5py.Group):  # the infos: the behaviour's log-density of each action
                assert list(a[key]) == list(b[key]) == ["behavior_log_prob"]
                a_items, b_items = [a[key][k] for k in a[key]], [b[key][k] for k in b[key]]
            else:
                a_items, b_items = [a[key]], [b[key]]
            for x, y in zip(a_items, b_items):
                assert x.dtype == y.dtype and x.shape == y.shape, key
                assert x[()].tobytes() == y[()].tobytes(), key
    for f in files:
        f.close()
    loaded = [minari.load_dataset(f"w/hopper/{name}-v0") for name in ("minari", "stitch")]
    assert loaded[0].total_steps == loaded[1].total_steps == sum(len(ep) for ep in eps)
    assert loaded[0].total_episodes == loaded[1].total_episodes == 5
    for a, b in zip(*(ds.iterate_episodes() for ds in loaded)):
        assert a.id == b.id
        for key in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert [m["seed"] for m in loaded[1].storage.get_episode_metadata(range(5))] == [ep.seed for ep in eps]


def test_unknown_id_is_a_clear_error(minari_root, policies):
    for bad in ("stitch/hopper/bogus-v0", "stitch/ant/medium-v0", "stitch/hopper/medium-v1"):
        with pytest.raises(ValueError, match=bad) as err:
            suite.build(bad, n_steps=100, policy_dir=policies, progress=False)
        assert "stitch/hopper/medium-replay-v0" in str(err.value)


def test_missing_policy_file_is_a_clear_error(minari_root, tmp_path):
    make_tiny_policies(tmp_path / "p")
    (tmp_path / "p" / "replay" / "actor_00001500.pt").unlink()
    with pytest.raises(FileNotFoundError, match="actor_00001500.pt"):
        suite.build("stitch/hopper/medium-replay-v0", policy_dir=tmp_path / "p", progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        suite.build("stitch/hopper/medium-v0", policy_dir=tmp_path / "nowhere", progress=False)
    assert not suite.is_built("stitch/hopper/medium-replay-v0")


def test_interrupted_build_leaves_no_dataset(minari_root, policies, monkeypatch):
    write_episode = suite._EpisodeWriter.write
    written = []

    def crash_after_three(*args, **kwargs):
        if len(written) == 3:
            raise KeyboardInterrupt("simulated crash while writing")
        written.append(1)
        return write_episode(*args, **kwargs)

    monkeypatch.setattr(suite._EpisodeWriter, "write", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        suite.build("stitch/hopper/medium-v0", n_steps=1000, policy_dir=policies, progress=False)
    assert written == [1, 1, 1]
    assert not suite.dataset_dir("stitch/hopper/medium-v0").exists()
    assert not [p for p in minari_root.iterdir() if p.name.startswith(".")], "temporary build folder left behind"
    assert minari.list_local_datasets() == {}
    with pytest.raises(FileNotFoundError):
        minari.load_dataset("stitch/hopper/medium-v0")


def test_command_line(minari_root, capsys):
    suite.main(["--list-ids"])
    assert capsys.readouterr().out.split() == list(suite.SUITE_IDS)  # what common/data.py reads
    with pytest.raises(SystemExit, match="error: unknown stitch dataset id 'stitch/hopper/bogus-v0'"):
        suite.main(["stitch/hopper/medium-v0", "stitch/hopper/bogus-v0"])  # a typo fails before any build
    assert not suite.is_built("stitch/hopper/medium-v0")
    for bad in ([], ["--all", "stitch/hopper/medium-v0"], ["--list", "stitch/hopper/medium-v0"], ["--cards", "--all"]):
        with pytest.raises(SystemExit):
            suite.main(bad)
        assert "error:" in capsys.readouterr().err


def test_list_and_cards(minari_root, policies, tmp_path, capsys):
    suite.build("stitch/hopper/expert-v0", n_steps=500, policy_dir=policies, progress=False)
    suite.main(["--list"])
    listing = capsys.readouterr().out
    assert all(dataset_id in listing for dataset_id in suite.SUITE_IDS)
    assert "not built" in listing and "500" in listing
    cards = suite.write_cards(tmp_path / "DATASETS.md").read_text()
    row = next(line for line in cards.splitlines() if "stitch/hopper/expert-v0" in line)
    assert "SAC step 3,000" in row and f"{REF_MAX:.1f}" in row
    assert "stitch/hopper/medium-v0" not in cards


def test_medium_comes_from_before_the_run_reached_expert_level_and_nearest_the_band():
    from benchmarks.suite.select_policies import medium_pool, pick_medium

    evals = {10: 100, 20: 900, 30: 1000, 40: 3000, 50: 1500, 60: 3300}  # step -> index eval_mean
    index = {s: {"eval_mean": v} for s, v in evals.items()}
    # expert = step 60; 0.9 x 3300 = 2970 is first reached at step 40, so 50 (a fall back) is no candidate
    assert medium_pool(index, expert_step=60, expert_level=0.9, n=2) == [20, 30]
    assert medium_pool(index, expert_step=60, expert_level=0.9, n=10) == [10, 20, 30]
    # a steady climb (HalfCheetah): the candidates are the snapshots nearest the target, mid-run, not the last
    # ones before expert level (70 and 80, at 70% and 80% of the expert)
    steady = {s: {"eval_mean": 100.0 * s} for s in range(10, 110, 10)}  # expert 10000 at step 100
    assert medium_pool(steady, expert_step=100, expert_level=0.9, n=2) == [40, 50]
    assert medium_pool(steady, expert_step=100, expert_level=0.9, n=3, target=0.3) == [20, 30, 40]

    def c(step, norm):
        return {"step": step, "normalized": norm}

    # inside the band [0.40, 0.55], nearest the target wins
    assert pick_medium([c(1, 0.41), c(2, 0.50), c(3, 0.54)], target=0.475) == 2
    # none inside: the nearest to the band wins (0.57 misses by 0.02, 0.34 by 0.06), not the nearest the target
    assert pick_medium([c(1, 0.34), c(2, 0.57)], target=0.475) == 2
    assert pick_medium([c(1, 0.39), c(2, 0.57)], target=0.475) == 1


# ----------------------------------------------------------------------------------------------
# The SAC behaviour trainer (benchmarks/suite/train_behavior.py) and select_policies.py on its runs

def tiny_sac_args(out: Path, **kw):
    from benchmarks.suite import train_behavior
    return train_behavior.Args(**{"env": "Hopper-v5", "out": str(out), "total_steps": 600, "learning_starts": 200,
                                  "batch_size": 16, "hidden": 16, "snapshot_every": 200, "snapshot_eval_episodes": 1,
                                  "checkpoint_every": 400} | kw)


def test_sac_trainer_writes_snapshots_and_resumes(tmp_path, capsys, monkeypatch):
    from benchmarks.suite import select_policies, train_behavior
    from benchmarks.suite.behavior import load_actor
    from common.checkpoints import load_checkpoint

    out = tmp_path / "run"
    args = tiny_sac_args(out)
    # killed in the third snapshot's evaluation, at step 600, after the checkpoint at 400
    kill_at_call(monkeypatch, train_behavior, "evaluate", 3)
    with pytest.raises(KeyboardInterrupt):
        train_behavior.main(args)
    monkeypatch.undo()
    assert not (out / "snapshots" / "actor_00000600.pt").exists()
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 400
    train_behavior.main(args)  # the same command continues from step 400
    assert "resumed" in capsys.readouterr().out
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["algorithm"], state["step"]) == ("SAC", 600)
    with np.load(out / "replay.npz") as replay:
        assert int(replay["n"]) == 600 and replay["obs"].shape == (600, 11)
        assert np.abs(replay["act"][:200]).max() <= 1 and replay["act"][:200].std() > 0.5, "uniform warm-up"
    index = [json.loads(line) for line in (out / "snapshots" / "index.jsonl").read_text().splitlines()]
    assert [r["step"] for r in index] == [200, 400, 600]
    actor, meta = load_actor(out / "snapshots" / "actor_00000600.pt")
    assert (meta["env_id"], meta["step"], actor.obs_dim, actor.act_dim) == ("Hopper-v5", 600, 11, 3)
    # the snapshots differ: SAC updated the actor between them (updates start after the 200-step warm-up)
    first, last = load_actor(out / "snapshots" / "actor_00000200.pt")[0], actor
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), last.state_dict().values()))

    # select_policies.py turns the run into a policy folder: reference scores measured, replay up to medium
    policies = tmp_path / "policies"
    select_policies.main(select_policies.Args(run=str(out), env="hopper", expert_step=600, medium_step=400,
                                              episodes=2, out=str(policies)))
    manifest = json.loads((policies / "manifest.json").read_text())
    assert manifest["env_id"] == "Hopper-v5" and manifest.get("algorithm", "SAC") == "SAC"
    assert (manifest["expert"]["step"], manifest["medium"]["step"]) == (600, 400)
    assert manifest["ref_max_score"] == manifest["expert"]["stochastic"]["mean"]
    assert manifest["ref_min_score"] == manifest["random"]["mean"]
    assert [e["step"] for e in manifest["replay"]] == [400]  # snapshots after the warm-up, up to medium
    assert (policies / "expert.pt").is_file() and (policies / "medium.pt").is_file()
    assert manifest["command"] == (f"python benchmarks/suite/select_policies.py --run {out} --env hopper "
                                   f"--expert-step 600 --medium-step 400 --episodes 2 --out {policies}")

    # --expert-candidates 2: the two best index evaluations are measured and the better measured one is expert
    index = {r["step"]: r["eval_mean"] for r in index}
    best_two = sorted(sorted(index, key=lambda s: -index[s])[:2])
    select_policies.main(select_policies.Args(run=str(out), env="hopper", expert_candidates=2, medium_step=200,
                                              episodes=2, out=str(policies)))
    manifest = json.loads((policies / "manifest.json").read_text())
    cands = manifest["expert"]["candidates"]
    assert [c["step"] for c in cands] == best_two
    assert manifest["expert"]["step"] == max(cands, key=lambda c: c["return_mean"])["step"]
    assert manifest["expert"]["chosen_by"] == "best of the 2 best index evaluations, measured"
    with pytest.raises(SystemExit, match="--expert-candidates"):
        select_policies.main(select_policies.Args(run=str(out), env="hopper", expert_candidates=0, out=str(policies)))


def test_sac_trainer_rejects_bad_input(tmp_path):
    from benchmarks.suite import train_behavior

    with pytest.raises(SystemExit, match=r"Box in \[-1, 1\]"):
        train_behavior.main(tiny_sac_args(tmp_path / "p", env="Pendulum-v1"))  # actions in [-2, 2]
    with pytest.raises(SystemExit, match="Box in"):
        train_behavior.main(tiny_sac_args(tmp_path / "c", env="CartPole-v1"))
    with pytest.raises(SystemExit, match="--env 'NoSuchEnv-v0'"):
        train_behavior.main(tiny_sac_args(tmp_path / "n", env="NoSuchEnv-v0"))
    with pytest.raises(SystemExit, match="--learning-starts"):
        train_behavior.main(tiny_sac_args(tmp_path / "q", learning_starts=600))
    with pytest.raises(SystemExit, match="--batch-size"):
        train_behavior.main(tiny_sac_args(tmp_path / "q", batch_size=0))
    train_behavior.main(tiny_sac_args(tmp_path / "h", total_steps=250, checkpoint_every=250, snapshot_every=250))
    with pytest.raises(SystemExit, match="not a SAC checkpoint for Walker2d-v5"):
        train_behavior.main(tiny_sac_args(tmp_path / "h", env="Walker2d-v5"))
    with pytest.raises(SystemExit, match="already at step 250"):
        train_behavior.main(tiny_sac_args(tmp_path / "h", total_steps=220))


def test_shipped_experts_meet_their_targets():
    """The committed policy folders: every environment with an expert target reaches it over 100 episodes
    acting as in the data, and its medium sits below the expert."""
    checked = 0
    for name, env in suite.ENVS.items():
        if env.expert_target is None:
            continue
        manifest = suite.load_manifest(env.policy_dir)
        expert = manifest["expert"]["stochastic"]
        assert expert["episodes"] >= 100 and expert["mean"] >= env.expert_target, (name, expert)
        assert manifest["ref_max_score"] == expert["mean"], name
        assert manifest["medium"]["stochastic"]["mean"] < expert["mean"], name
        checked += 1
    assert checked >= 1
