"""common/data.py: flattening Minari episodes into transitions, helpers, and bad-input errors."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time

import minari
import numpy as np
import pytest
from conftest import ROOT, make_dataset

from common import data as data_mod
from common.data import DatasetError, load_dataset, observation_stats, return_range_scale, top_fraction_episodes
from common.evaluation import flatten_obs


def raw_episodes(dataset_id: str) -> list:
    return list(minari.load_dataset(dataset_id).iterate_episodes())


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


# ----------------------------------------------------------------------------------------------
# Flattening
# ----------------------------------------------------------------------------------------------
def test_flat_arrays_pair_obs_with_next_obs_inside_episodes(tiny_hopper):
    data = load_dataset(tiny_hopper)
    episodes = raw_episodes(tiny_hopper)
    assert len(data.episode_lengths) == len(episodes) == 6
    np.testing.assert_array_equal(data.episode_lengths, [len(ep.rewards) for ep in episodes])
    np.testing.assert_array_equal(data.episode_starts, np.concatenate([[0], np.cumsum(data.episode_lengths)[:-1]]))
    assert len(data) == data.episode_lengths.sum() == len(data.observations) == len(data.next_observations)
    assert data.observations.dtype == np.float32 and data.actions.dtype == np.float32
    assert data.obs_dim == 11 and data.act_dim == 3

    for start, n, ep in zip(data.episode_starts, data.episode_lengths, episodes):
        sl = slice(start, start + n)
        np.testing.assert_array_equal(data.observations[sl], ep.observations[:-1].astype(np.float32))
        np.testing.assert_array_equal(data.next_observations[sl], ep.observations[1:].astype(np.float32))
        np.testing.assert_array_equal(data.actions[sl], ep.actions)
        np.testing.assert_array_equal(data.rewards[sl], ep.rewards.astype(np.float32))
        # inside an episode: next_obs[i] is obs[i + 1]
        np.testing.assert_array_equal(data.next_observations[start:start + n - 1],
                                      data.observations[start + 1:start + n])

    # across a boundary: the last next_obs is the episode's own final observation, not the next episode's first
    for k in range(len(episodes) - 1):
        last = data.episode_starts[k] + data.episode_lengths[k] - 1
        np.testing.assert_array_equal(data.next_observations[last], episodes[k].observations[-1].astype(np.float32))
        assert not np.array_equal(data.next_observations[last], data.observations[last + 1])
        np.testing.assert_array_equal(data.observations[last + 1], episodes[k + 1].observations[0].astype(np.float32))
    np.testing.assert_array_equal(data.episode_ids(), np.repeat(np.arange(6), data.episode_lengths))


def test_time_limit_episodes_are_timeouts_not_terminals(minari_root):
    # random Hopper actions never fall within 5 steps: every episode is cut by the time limit
    make_dataset("test/hopper/timelimit-v0", episodes=3, max_steps=5)
    data = load_dataset("test/hopper/timelimit-v0")
    np.testing.assert_array_equal(data.episode_lengths, [5, 5, 5])
    ends = data.episode_starts + data.episode_lengths - 1
    expected = np.zeros(len(data), np.float32)
    expected[ends] = 1.0
    np.testing.assert_array_equal(data.timeouts, expected)
    np.testing.assert_array_equal(data.terminals, np.zeros(len(data)))


def test_terminating_episodes_are_terminals_not_timeouts(minari_root):
    # random Hopper actions fall long before the 1000-step limit
    make_dataset("test/hopper/falls-v0", episodes=3, max_steps=1000)
    data = load_dataset("test/hopper/falls-v0")
    assert (data.episode_lengths < 1000).all()
    ends = data.episode_starts + data.episode_lengths - 1
    expected = np.zeros(len(data), np.float32)
    expected[ends] = 1.0
    np.testing.assert_array_equal(data.terminals, expected)
    np.testing.assert_array_equal(data.timeouts, np.zeros(len(data)))


def test_discrete_actions_are_int64_vectors(minari_root):
    make_dataset("test/cartpole/tiny-v0", env_id="CartPole-v1", episodes=3, max_steps=50)
    data = load_dataset("test/cartpole/tiny-v0")
    assert data.actions.dtype == np.int64 and data.actions.shape == (len(data),)
    assert data.act_dim == 1 and set(np.unique(data.actions)) <= {0, 1}
    with pytest.raises(DatasetError, match="'test/cartpole/tiny-v0' has discrete actions; this script is for"):
        load_dataset("test/cartpole/tiny-v0", continuous=True)  # what every continuous-action script asks for


def test_continuous_scripts_reject_discrete_data_in_one_line(minari_root):
    make_dataset("test/cartpole/tiny-v0", env_id="CartPole-v1", episodes=2, max_steps=20)
    out = subprocess.run([sys.executable, "algorithms/bc.py", "--dataset", "test/cartpole/tiny-v0", "--no-progress"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: dataset 'test/cartpole/tiny-v0' has discrete actions")


def test_dict_observations_flatten_like_evaluation():
    # goal-conditioned datasets store dict observations; training and evaluation must order the parts alike
    rng = np.random.default_rng(0)
    obs = {"observation": rng.normal(size=(4, 3)), "achieved_goal": rng.normal(size=(4, 2)),
           "desired_goal": {"z": rng.normal(size=(4, 1)), "a": rng.normal(size=(4, 2))}}
    flat = data_mod._flatten_obs(obs, "test")
    assert flat.shape == (4, 8) and flat.dtype == np.float32
    for i in range(4):
        one = {"observation": obs["observation"][i], "achieved_goal": obs["achieved_goal"][i],
               "desired_goal": {"z": obs["desired_goal"]["z"][i], "a": obs["desired_goal"]["a"][i]}}
        np.testing.assert_array_equal(flat[i], flatten_obs(one))
    # sorted keys: achieved_goal, desired_goal.a, desired_goal.z, observation
    np.testing.assert_array_equal(flat[0, :2], obs["achieved_goal"][0].astype(np.float32))
    np.testing.assert_array_equal(flat[0, 2:4], obs["desired_goal"]["a"][0].astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def test_episode_returns_and_normalized_score(tiny_hopper):
    data = load_dataset(tiny_hopper)
    expected = [ep.rewards.astype(np.float64).sum() for ep in raw_episodes(tiny_hopper)]
    np.testing.assert_allclose(data.episode_returns(), expected, rtol=1e-6)
    # make_dataset records ref scores (-20, 3000): 100 (R + 20) / 3020
    assert (data.ref_min_score, data.ref_max_score) == (-20.0, 3000.0)
    np.testing.assert_allclose(data.normalized_score([-20.0, 3000.0, 1490.0]), [0.0, 100.0, 50.0])
    no_refs = dataclasses.replace(data, ref_min_score=None, ref_max_score=None)
    with pytest.raises(DatasetError, match="reference scores"):
        no_refs.normalized_score([1.0])


def test_return_range_scale(tiny_hopper):
    data = load_dataset(tiny_hopper)
    returns = data.episode_returns()
    assert return_range_scale(data) == pytest.approx(1000.0 / (returns.max() - returns.min()))
    assert return_range_scale(data, target=1.0) == pytest.approx(1.0 / (returns.max() - returns.min()))
    with pytest.raises(DatasetError, match="same return"):  # a single episode has no return range
        return_range_scale(data.select_episodes([0]))


def test_top_fraction_episodes(tiny_hopper):
    data = load_dataset(tiny_hopper)
    returns = data.episode_returns()
    top = top_fraction_episodes(data, 0.5)
    assert len(top) == 3
    np.testing.assert_array_equal(np.sort(returns[top]), np.sort(returns)[-3:])
    np.testing.assert_array_equal(top_fraction_episodes(data, 1e-6), [np.argmax(returns)])  # at least one
    assert len(top_fraction_episodes(data, 1.0)) == 6
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(DatasetError, match="fraction"):
            top_fraction_episodes(data, bad)


def test_select_episodes_keeps_whole_episodes_in_order(tiny_hopper):
    data = load_dataset(tiny_hopper)
    sub = data.select_episodes(np.array([4, 1]))  # order of `keep` does not matter: dataset order is kept
    np.testing.assert_array_equal(sub.episode_lengths, data.episode_lengths[[1, 4]])
    np.testing.assert_array_equal(sub.episode_starts, [0, data.episode_lengths[1]])
    np.testing.assert_allclose(sub.episode_returns(), data.episode_returns()[[1, 4]])
    for new_k, old_k in enumerate([1, 4]):
        s, n, s0 = sub.episode_starts[new_k], sub.episode_lengths[new_k], data.episode_starts[old_k]
        for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
            np.testing.assert_array_equal(getattr(sub, name)[s:s + n], getattr(data, name)[s0:s0 + n], err_msg=name)
    assert len(sub) == data.episode_lengths[[1, 4]].sum()


def test_observation_stats():
    obs = np.array([[1.0, 5.0, 0.0], [3.0, 5.0, 2.0], [5.0, 5.0, 4.0]], np.float32)
    mean, std = observation_stats(obs)
    np.testing.assert_allclose(mean, [3.0, 5.0, 2.0])
    # population std: sqrt(((1-3)^2 + 0 + (5-3)^2) / 3) = sqrt(8/3); a constant feature gets std = eps
    np.testing.assert_allclose(std, [np.sqrt(8 / 3) + 1e-3, 1e-3, np.sqrt(8 / 3) + 1e-3], rtol=1e-6)
    assert mean.dtype == std.dtype == np.float32
    _, std0 = observation_stats(obs, eps=0.5)
    assert std0[1] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# Ids and bad input
# ----------------------------------------------------------------------------------------------
def test_unknown_id_fails_at_once_listing_local_ids(tiny_hopper, no_network):
    data_mod.suite_ids()  # the suite's ids (a subprocess, once) before timing: the time limit is for a network wait
    t = time.time()
    with pytest.raises(DatasetError) as e:
        load_dataset("someone/hopper/nothing-v0")
    assert time.time() - t < 10
    msg = str(e.value)
    assert "'someone/hopper/nothing-v0'" in msg and "not in the local Minari root" in msg
    assert tiny_hopper in msg  # the local ids
    assert "--download" in msg and "minari download someone/hopper/nothing-v0" in msg  # how to get it


def test_download_failure_is_a_dataset_error(minari_root, monkeypatch):
    def offline(dataset_id, download=False):
        raise ConnectionError("no network")
    monkeypatch.setattr(minari, "load_dataset", offline)
    with pytest.raises(DatasetError, match="could not download 'someone/hopper/nothing-v0'.*no network"):
        load_dataset("someone/hopper/nothing-v0", download=True)


def test_unknown_stitch_id_lists_the_suite(minari_root, no_network):
    with pytest.raises(DatasetError) as e:
        load_dataset("stitch/hopper/nonsense-v0")
    msg = str(e.value)
    assert "'stitch/hopper/nonsense-v0'" in msg
    suite = data_mod.suite_ids()
    assert suite and all(i in msg for i in suite)


def fake_suite(root, build: str):
    """A stand-in for Stitch's benchmarks/suite/build.py under `root`: `--list-ids` lists two ids, and building
    one runs the lines `build`."""
    script = root / "benchmarks" / "suite" / "build.py"
    script.parent.mkdir(parents=True)
    script.write_text("import sys\n"
                      "if sys.argv[1:] == ['--list-ids']:\n"
                      "    print('stitch/hopper/random-v0\\nstitch/hopper/medium-v0')\n"
                      "    raise SystemExit\n" + build)
    return root


@pytest.mark.parametrize("build, reason", [
    ("sys.stderr.write('\\rbuilding: 10%\\rbuilding: 20%\\n')\n"
     "raise SystemExit('error: missing behaviour-policy manifest p/manifest.json')\n",
     "missing behaviour-policy manifest p/manifest.json"),
    ("sys.stderr.write('\\rbuilding: 10%')\nraise RuntimeError('a bug in the builder')\n",
     "RuntimeError: a bug in the builder (the builder crashed; `python benchmarks/suite/build.py "
     "stitch/hopper/random-v0` in {root} shows its traceback)"),
])
def test_stitch_build_failure_is_one_dataset_error_line(minari_root, monkeypatch, capfd, tmp_path, build, reason):
    root = fake_suite(tmp_path / "stitch", build)
    monkeypatch.setattr(data_mod, "STITCH_ROOT", root)
    with pytest.raises(DatasetError) as e:
        load_dataset("stitch/hopper/random-v0")
    assert str(e.value) == f"could not build 'stitch/hopper/random-v0': {reason.format(root=root)}"
    err = capfd.readouterr().err
    assert "\rbuilding: 10%" in err  # the progress went through as it came
    assert "error:" not in err and "Traceback" not in err  # the reason is said once, in the DatasetError
    assert not (minari_root / "stitch").exists()


def test_a_missing_stitch_id_is_built_by_the_suites_command_line_once(minari_root, capfd):
    import threading

    dataset_id = "stitch/cartpole/random-v0"  # the quickest real build: 100k steps of uniform random actions
    loaded = []
    threads = [threading.Thread(target=lambda: loaded.append(len(load_dataset(dataset_id)))) for _ in range(2)]
    for t in threads:  # runs started together: the second waits for the first's build, then loads it
        t.start()
    for t in threads:
        t.join()
    assert loaded == [100_000, 100_000]
    out, err = capfd.readouterr()
    assert out.count("building it now") == 1 and "python benchmarks/suite/build.py stitch/cartpole/random-v0" in out
    assert "100000/100000" in err  # the builder's progress bar, passed on


def nan_observation(ep, o, a, r):
    if ep == 2:
        o = o.copy()
        o[3, 1] = np.nan
    return o, a, r


def inf_reward(ep, o, a, r):
    if ep == 1:
        r = r.copy()
        r[2] = np.inf
    return o, a, r


@pytest.mark.parametrize("corrupt, field, where", [
    (nan_observation, "observations", "transition 23, episode 2"),  # episodes of 10 steps: 2 * 10 + 3
    (inf_reward, "rewards", "transition 12, episode 1"),
])
def test_non_finite_values(minari_root, corrupt, field, where):
    make_dataset("test/hopper/bad-v0", episodes=3, max_steps=10, corrupt=corrupt)
    with pytest.raises(DatasetError) as e:
        load_dataset("test/hopper/bad-v0")
    msg = str(e.value)
    assert f"{field} contains NaN or inf" in msg and where in msg and "'test/hopper/bad-v0'" in msg


def test_observation_shape_must_match_env(minari_root):
    make_dataset("test/hopper/short-obs-v0", episodes=2, max_steps=10, corrupt=lambda ep, o, a, r: (o[:, :-1], a, r))
    with pytest.raises(DatasetError, match="observations have 10 features but environment Hopper-v5 observes 11"):
        load_dataset("test/hopper/short-obs-v0")


def test_action_shape_must_match_env(minari_root):
    make_dataset("test/hopper/short-act-v0", episodes=2, max_steps=10, corrupt=lambda ep, o, a, r: (o, a[:, :-1], r))
    with pytest.raises(DatasetError, match=r"actions have shape \(2,\) but environment Hopper-v5 expects \(3,\)"):
        load_dataset("test/hopper/short-act-v0")


def test_discrete_actions_out_of_range(minari_root):
    make_dataset("test/cartpole/bad-act-v0", env_id="CartPole-v1", episodes=2, max_steps=20,
                 corrupt=lambda ep, o, a, r: (o, a + 5, r))
    with pytest.raises(DatasetError, match=r"discrete actions must be integers in \[0, 2\)"):
        load_dataset("test/cartpole/bad-act-v0")


@pytest.mark.parametrize("dataset_id", ["test/hopper/half-v0", "stitch/hopper/medium-v0"])
def test_data_folder_without_metadata(minari_root, dataset_id, no_network):
    # an interrupted build or download: data/ exists, metadata.json does not (for a stitch id: no rebuild attempt)
    (minari_root / dataset_id / "data").mkdir(parents=True)
    with pytest.raises(DatasetError, match="incomplete .*metadata.json.*delete it") as e:
        load_dataset(dataset_id)
    assert str(minari_root / dataset_id) in str(e.value)
    assert (minari_root / dataset_id / "data").is_dir()  # nothing deleted behind the user's back


def test_invalid_metadata(minari_root):
    make_dataset("test/hopper/badmeta-v0", episodes=2, max_steps=10)
    meta = minari_root / "test/hopper/badmeta-v0/data/metadata.json"
    meta.write_text(meta.read_text()[:50])
    with pytest.raises(DatasetError, match="'test/hopper/badmeta-v0' exists at .* cannot be opened"):
        load_dataset("test/hopper/badmeta-v0")


def test_truncated_hdf5(minari_root):
    make_dataset("test/hopper/cut-v0", episodes=2, max_steps=10)
    h5 = minari_root / "test/hopper/cut-v0/data/main_data.hdf5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    with pytest.raises(DatasetError, match="'test/hopper/cut-v0' .*cannot be read.*delete it"):
        load_dataset("test/hopper/cut-v0")


def test_missing_hdf5(minari_root):
    make_dataset("test/hopper/nofile-v0", episodes=2, max_steps=10)
    (minari_root / "test/hopper/nofile-v0/data/main_data.hdf5").unlink()
    with pytest.raises(DatasetError, match="'test/hopper/nofile-v0' exists at .* cannot be opened"):
        load_dataset("test/hopper/nofile-v0")


def test_flat_cache_is_used_and_never_stale(minari_root, monkeypatch):
    make_dataset("test/hopper/cache-v0", episodes=3, max_steps=10)
    first = load_dataset("test/hopper/cache-v0")
    assert (minari_root / "test/hopper/cache-v0" / data_mod.CACHE_FILE).is_file()

    def no_minari_read(ds, dataset_id):
        raise AssertionError("read the episodes again instead of the cache")
    with monkeypatch.context() as m:
        m.setattr(data_mod, "_flatten_episodes", no_minari_read)
        again = load_dataset("test/hopper/cache-v0")
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
                 "episode_starts", "episode_lengths"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name), err_msg=name)
        assert getattr(again, name).dtype == getattr(first, name).dtype, name

    # a corrupt cache is ignored (and rewritten)
    (minari_root / "test/hopper/cache-v0" / data_mod.CACHE_FILE).write_bytes(b"garbage")
    np.testing.assert_array_equal(load_dataset("test/hopper/cache-v0").observations, first.observations)
    # data changed after the cache was written: the change is seen, not the cached arrays
    h5 = minari_root / "test/hopper/cache-v0/data/main_data.hdf5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    with pytest.raises(DatasetError, match="cannot be read"):
        load_dataset("test/hopper/cache-v0")


def test_hidden_build_folders_are_not_local_ids(minari_root):
    make_dataset("test/hopper/visible-v0", episodes=1, max_steps=5)
    (minari_root / ".stitch-build-x" / "test/hopper/hidden-v0" / "data").mkdir(parents=True)
    (minari_root / ".stitch-build-x" / "test/hopper/hidden-v0" / "data" / "metadata.json").write_text("{}")
    assert data_mod.local_dataset_ids() == ["test/hopper/visible-v0"]


def test_remote_style_id_without_refs_gets_d4rl_fallback(minari_root, no_network):
    make_dataset("mujoco/hopper/medium-v0", episodes=2, max_steps=10, ref_scores=None)
    assert "ref_min_score" not in minari.load_dataset("mujoco/hopper/medium-v0").storage.metadata
    data = load_dataset("mujoco/hopper/medium-v0")
    assert (data.ref_min_score, data.ref_max_score) == (-20.272305, 3234.3)
    np.testing.assert_allclose(data.normalized_score([3234.3]), [100.0])


def test_unknown_env_without_refs_has_none(minari_root):
    make_dataset("test/pendulum/norefs-v0", env_id="Pendulum-v1", episodes=2, max_steps=10, ref_scores=None)
    data = load_dataset("test/pendulum/norefs-v0")
    assert data.ref_min_score is None and data.ref_max_score is None
