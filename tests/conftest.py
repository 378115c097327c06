"""Shared fixtures: every test runs against a private, temporary Minari root."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_dataset(dataset_id: str, env_id: str = "Hopper-v5", episodes: int = 5, max_steps: int = 200, seed: int = 0,
                 policy=None, ref_scores=(-20.0, 3000.0), corrupt=None) -> None:
    """Write a small Minari dataset of `episodes` rollouts (random actions unless `policy(obs, rng, episode)`)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    env = gym.make(env_id, max_episode_steps=max_steps)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    buffers = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 1000 + ep)
        o, a, r, te, tr = [obs], [], [], [], []
        done = False
        while not done:
            act = env.action_space.sample() if policy is None else policy(obs, rng, ep)
            obs, rew, term, trunc, _ = env.step(act)
            o.append(obs), a.append(act), r.append(rew), te.append(term), tr.append(trunc)
            done = term or trunc
        o, a = np.asarray(o, np.float32), np.asarray(a)
        r = np.asarray(r, np.float64)
        if corrupt is not None:
            o, a, r = corrupt(ep, o, a, r)
        buffers.append(EpisodeBuffer(observations=o, actions=a, rewards=r, terminations=np.asarray(te),
                                     truncations=np.asarray(tr)))
    kwargs = {}
    if ref_scores is not None:
        kwargs = {"ref_min_score": ref_scores[0], "ref_max_score": ref_scores[1]}
    minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers,
                                       env=gym.make(env_id, max_episode_steps=max_steps),
                                       algorithm_name="test", author="tests", code_permalink="none",
                                       author_email="none", description="test data", **kwargs)


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture
def tiny_hopper(minari_root):
    """A few short random-action Hopper episodes under a test id."""
    make_dataset("test/hopper/tiny-v0", episodes=6, max_steps=100)
    return "test/hopper/tiny-v0"
