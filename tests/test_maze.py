"""The PointMaze datasets of the stitch suite (benchmarks/suite/maze.py, built by benchmarks/suite/build.py), small
builds."""

from __future__ import annotations

import hashlib
import tempfile

import minari
import numpy as np
import pytest

from benchmarks.suite import build as suite
from benchmarks.suite import maze
from common.data import load_dataset
from common.evaluation import evaluate, flatten_obs

UMAZE = "stitch/pointmaze/umaze-v0"


def episodes(dataset_id: str) -> list[dict]:
    ds = minari.load_dataset(dataset_id)
    return [{"observations": {k: np.asarray(v) for k, v in ep.observations.items()},
             **{k: np.asarray(getattr(ep, k)) for k in ("actions", "rewards", "terminations", "truncations")}}
            for ep in ds.iterate_episodes()]


def file_hash(dataset_id: str) -> str:
    return hashlib.sha256((suite.dataset_dir(dataset_id) / "data" / "main_data.hdf5").read_bytes()).hexdigest()


@pytest.fixture
def small(monkeypatch):
    """Small builds: 4 reference episodes per policy (2 tasks each) and segments of 600 steps."""
    monkeypatch.setattr(maze, "REF_EPISODES", 4)
    monkeypatch.setattr(maze, "REF_CHUNK", 2)
    monkeypatch.setattr(maze, "SEGMENT_STEPS", 600)


def test_layouts_match_the_registered_mazes_and_the_planner_finds_shortest_paths():
    for m in maze.MAZES.values():
        spec = maze.env_spec(m)  # raises if the layout or the time limit differ from gymnasium-robotics'
        assert spec.max_episode_steps == m.episode_steps and spec.kwargs["reward_type"] == "sparse"
        assert maze.env_spec(m, dense=True).kwargs["reward_type"] == "dense"
        assert spec.kwargs["continuing_task"] and not spec.kwargs["reset_target"]
        for start in m.open_cells:
            path = maze.plan(m, start, m.goal_cell)
            for a, b in zip([start, *path], path):
                assert b in m.open_cells and abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1
        assert maze.plan(m, m.goal_cell, m.goal_cell) == []
    u = maze.MAZES["umaze"]
    assert maze.plan(u, u.reset_cell, u.goal_cell) == [(3, 2), (3, 3), (2, 3), (1, 3), (1, 2), (1, 1)]
    # the shortest path in the large maze is 14 cells (the grid distance a breadth-first search gives)
    assert len(maze.plan(maze.MAZES["large"], (1, 1), (7, 9))) == 14
    for xy in ([0.3, -0.2], [-1.9, 1.2]):
        assert u.xy_cell(u.cell_xy(u.xy_cell(np.array(xy)))) == u.xy_cell(np.array(xy))
    assert u.xy_cell(np.array([-1.0, 0.0])) in u.open_cells  # inside the wall at (2, 1): the nearest open cell


def test_unknown_id_is_a_clear_error():
    for bad in ("stitch/pointmaze/open-v0", "stitch/pointmaze/umaze-v1"):
        with pytest.raises(ValueError, match=bad) as err:
            suite.build(bad, n_steps=100, progress=False)
        assert UMAZE in str(err.value)


def test_build_is_deterministic_and_well_formed(minari_root, small):
    suite.build(UMAZE, n_steps=1500, progress=False, workers=1)
    first, first_hash = episodes(UMAZE), file_hash(UMAZE)
    with pytest.raises(FileExistsError, match="force"):
        suite.build(UMAZE, n_steps=1500, progress=False)
    suite.build(UMAZE, n_steps=1500, progress=False, workers=2, force=True)
    assert file_hash(UMAZE) == first_hash, "same seed, same bytes, whatever the number of workers"
    suite.build(UMAZE, n_steps=1500, progress=False, workers=1, force=True, seed=1)
    assert not np.array_equal(episodes(UMAZE)[0]["actions"], first[0]["actions"]), "another seed, other data"
    assert [p.name for p in minari_root.iterdir()] == ["stitch"], "no temporary build folder left behind"

    # Episodes of the evaluation's length (the last one cut), a truncation at each cut, no terminations.
    assert [len(ep["rewards"]) for ep in first] == [300, 300, 300, 300, 300]
    for ep in first:
        assert ep["truncations"][-1] and not ep["truncations"][:-1].any()
        assert not ep["terminations"].any() and not (ep["terminations"] & ep["truncations"]).any()
        assert ep["actions"].dtype == np.float32 and np.abs(ep["actions"]).max() <= 1.0
    # Segments of 600 steps: a reset (a seed) every second episode; logging is continuous in between.
    ds = minari.load_dataset(UMAZE)
    assert ["seed" in m for m in ds.storage.get_episode_metadata(range(5))] == [True, False, True, False, True]
    for a, b, continuous in zip(first, first[1:], [True, False, True, False]):
        same = np.array_equal(a["observations"]["observation"][-1], b["observations"]["observation"][0])
        assert same == continuous

    # The observation's desired_goal is the evaluation goal, and the rewards are the env's own reward for it.
    u = maze.MAZES["umaze"]
    env = maze.make_env(u)
    goals = np.array([ep["observations"]["desired_goal"][0] for ep in first])
    assert np.abs(goals - u.cell_xy(u.goal_cell)).max() <= 0.25 and len(np.unique(goals, axis=0)) == 5
    for ep in first:
        obs = ep["observations"]
        assert (obs["desired_goal"] == obs["desired_goal"][0]).all()
        np.testing.assert_array_equal(obs["achieved_goal"], obs["observation"][:, :2])
        expected = env.unwrapped.compute_reward(obs["achieved_goal"][1:], obs["desired_goal"][1:], None)
        np.testing.assert_array_equal(ep["rewards"], expected)
        assert set(np.unique(ep["rewards"])) <= {0.0, 1.0}
    assert sum(ep["rewards"].sum() for ep in first) > 0, "the behaviour passes by the evaluation goal"

    # Reference scores recorded (random from the far reset cell: nothing; the planner: most of the episode).
    meta = ds.storage.metadata
    stats = meta["stitch"]
    assert stats["ref_random"]["episodes"] == stats["ref_planner"]["episodes"] == 4
    assert meta["ref_min_score"] == stats["ref_random"]["return_mean"] < 10
    assert meta["ref_max_score"] == stats["ref_planner"]["return_mean"] > 100
    assert stats["steps"] == 1500 and stats["episodes"] == 5 and stats["goal_cell"] == [1, 1]


def test_dataset_loads_and_evaluates_in_its_env(minari_root, small, monkeypatch):
    suite.build(UMAZE, n_steps=600, progress=False, workers=1)
    data = load_dataset(UMAZE)
    u = maze.MAZES["umaze"]
    assert data.obs_dim == 8 and data.act_dim == 2 and len(data) == 600
    assert data.timeouts.sum() == 2 and data.terminals.sum() == 0
    env = maze.make_env(u)
    obs, _ = env.reset(seed=3)
    assert flatten_obs(obs).shape == (data.obs_dim,)
    eval_env = minari.load_dataset(UMAZE).recover_environment(eval_env=True)
    obs, _ = eval_env.reset(seed=5)
    assert u.xy_cell(obs["desired_goal"]) == u.goal_cell and u.xy_cell(obs["achieved_goal"]) == u.reset_cell
    # flattened in key order: achieved_goal, desired_goal, observation
    np.testing.assert_array_equal(data.observations[0, 4:6], data.observations[0, :2])
    tmp = minari_root.parent / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # where gymnasium-robotics writes its maze model
    returns = evaluate(lambda o: np.zeros((len(o), 2), np.float32), data.env_spec, episodes=2)
    maze.make_env(u).close()
    assert tempfile.gettempdir() == str(tmp) and list(tmp.iterdir()) == [], "maze model files left behind"
    assert returns.shape == (2,) and (returns == 0).all(), "standing still at the reset cell earns nothing"
    lo, hi = data.ref_min_score, data.ref_max_score
    assert data.normalized_score(returns) == pytest.approx(np.full(2, -100 * lo / (hi - lo)))


def test_controller_reaches_many_goal_cells():
    m = maze.MAZES["medium"]
    seg = maze.run_segment(m, False, seed=0, segment=0, n_steps=3000)
    assert len(seg.goals_reached) >= 12, "the behaviour keeps reaching goals"
    assert len(set(seg.goals_reached)) >= 8 and seg.goals_abandoned <= 1
    assert sum(len(ep) for ep in seg.episodes) == 3000 and len(seg.episodes) == 5


def test_dense_variant_has_the_same_states_and_dense_rewards():
    m = maze.MAZES["umaze"]
    sparse = maze.run_segment(m, False, seed=0, segment=3, n_steps=400)
    dense = maze.run_segment(m, True, seed=0, segment=3, n_steps=400)
    for a, b in zip(sparse.episodes, dense.episodes):
        np.testing.assert_array_equal(a.actions, b.actions)
        for key in a.observations:
            np.testing.assert_array_equal(a.observations[key], b.observations[key])
        d = np.linalg.norm(a.observations["achieved_goal"][1:] - a.observations["desired_goal"][1:], axis=1)
        np.testing.assert_allclose(b.rewards, np.exp(-d), rtol=1e-12)
        np.testing.assert_array_equal(a.rewards, (d <= 0.45).astype(float))


def test_cards_list_the_maze(minari_root, small, tmp_path, capsys):
    suite.build(UMAZE, n_steps=600, progress=False, workers=1)
    suite.main(["--list"])
    listing = capsys.readouterr().out
    assert all(i in listing for i in maze.MAZE_IDS)
    cards = suite.write_cards(tmp_path / "DATASETS.md").read_text()
    rows = [line for line in cards.splitlines() if UMAZE in line]
    assert len(rows) == 2 and "grid planner" in rows[0] and "(3, 1) -> (1, 1)" in rows[1]
    assert "stitch/pointmaze/medium-v0" not in cards
