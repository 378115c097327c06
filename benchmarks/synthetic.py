"""Small Minari datasets of plain rollouts, for the speed benchmark and the tests.

`write_rollout_dataset("speed/hopper/random-v0", episodes=200, max_steps=1000)` writes 200 random-action
Hopper-v5 episodes into the current Minari root (MINARI_DATASETS_PATH). A `policy(obs, rng, episode)` replaces
the random actions; `corrupt(episode, obs, actions, rewards)` may alter each episode's arrays before they are
written (the tests use it to plant NaNs and wrong shapes). Not a suite dataset: no behaviour policy, no card.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np


def write_rollout_dataset(dataset_id: str, env_id: str = "Hopper-v5", episodes: int = 5, max_steps: int = 200,
                          seed: int = 0, policy: Callable | None = None,
                          ref_scores: tuple[float, float] | None = (-20.0, 3000.0),
                          corrupt: Callable | None = None, record_env: bool = True) -> None:
    """Write `episodes` rollouts of `env_id` (capped at `max_steps`) as the Minari dataset `dataset_id`.

    `record_env=False` stores only the observation and action spaces, not the environment: a dataset of logged
    data with no simulator, as a user's own logs would be."""
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
    if record_env:
        kwargs["env"] = gym.make(env_id, max_episode_steps=max_steps)
    else:
        kwargs |= {"observation_space": env.observation_space, "action_space": env.action_space}
    minari.create_dataset_from_buffers(dataset_id=dataset_id, buffer=buffers,
                                       algorithm_name="rollouts", author="stitch", code_permalink="none",
                                       author_email="none", description=f"{episodes} rollouts of {env_id}", **kwargs)
