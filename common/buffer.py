"""The dataset as tensors on the training device, sampled without touching the host.

    buffer = Buffer.from_dataset(data, device="cuda", seed=0)
    batch = buffer.sample(256)          # batch.obs, batch.actions, batch.rewards, batch.next_obs, batch.dones

Indices are drawn with `torch.randint` on the buffer's device from the buffer's own generator, whose
state is part of every checkpoint (`state_dict` / `load_state_dict`), so a resumed run samples the
same minibatches as one never interrupted. `add` appends online transitions (offline-to-online).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class Batch(NamedTuple):
    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    dones: torch.Tensor  # 1.0 where the environment terminated: no bootstrapping


class Buffer:
    def __init__(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
                 dones: np.ndarray, device: str | torch.device = "cpu", seed: int = 0, capacity: int | None = None):
        n = len(rewards)
        self.capacity = max(n, capacity or n)
        self.device = torch.device(device)

        def alloc(x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            t = torch.zeros((self.capacity, *x.shape[1:]), dtype=dtype, device=self.device)
            t[:n] = torch.as_tensor(x, dtype=dtype).to(self.device)
            return t

        act_dtype = torch.long if np.issubdtype(actions.dtype, np.integer) else torch.float32
        self.obs = alloc(obs, torch.float32)
        self.actions = alloc(actions, act_dtype)
        self.rewards = alloc(rewards.reshape(n), torch.float32)
        self.next_obs = alloc(next_obs, torch.float32)
        self.dones = alloc(dones.reshape(n), torch.float32)
        self.size = n
        self.insert = n % self.capacity if capacity else 0
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    @classmethod
    def from_dataset(cls, data, device: str | torch.device = "cpu", seed: int = 0, capacity: int | None = None,
                     rewards: np.ndarray | None = None, obs_mean: np.ndarray | None = None,
                     obs_std: np.ndarray | None = None) -> "Buffer":
        """Build from a `common.data.Dataset`: continuous actions in [-1, 1]; optionally rescaled rewards and
        normalized observations."""
        obs, next_obs = data.observations, data.next_observations
        if obs_mean is not None:
            obs, next_obs = (obs - obs_mean) / obs_std, (next_obs - obs_mean) / obs_std
        actions = data.actions
        bounded = data.action_low is not None and not (np.all(data.action_low == -1) and np.all(data.action_high == 1))
        if bounded:  # continuous actions rescaled from [low, high] to [-1, 1]
            actions = 2.0 * (actions - data.action_low) / (data.action_high - data.action_low) - 1.0
        r = data.rewards if rewards is None else rewards
        return cls(obs, actions, r, next_obs, data.terminals, device=device, seed=seed, capacity=capacity)

    def __len__(self) -> int:
        return self.size

    def sample(self, batch_size: int) -> Batch:
        return self.at(self.indices(batch_size))

    def indices(self, batch_size: int) -> torch.Tensor:
        """`batch_size` uniform row indices, drawn on the device from the buffer's generator (what `sample` draws)."""
        return torch.randint(0, self.size, (batch_size,), device=self.device, generator=self.generator)

    def at(self, idx: torch.Tensor) -> Batch:
        """The transitions at rows `idx` (for a script that also reads its own per-row values at the same rows)."""
        return Batch(self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.dones[idx])

    def add(self, obs, action, reward, next_obs, done) -> None:
        """Append one transition (ring buffer once `capacity` is reached)."""
        i = self.insert
        self.obs[i] = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        self.actions[i] = torch.as_tensor(action, dtype=self.actions.dtype, device=self.device)
        self.rewards[i] = float(reward)
        self.next_obs[i] = torch.as_tensor(next_obs, dtype=torch.float32, device=self.device)
        self.dones[i] = float(done)
        self.insert = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def state_dict(self, rows_from: int | None = None) -> dict:
        """Sampling state (generator, fill level) for checkpoints; the data itself comes from the dataset. With
        `rows_from`, also the rows from there on (those `add` appended online, which no dataset holds)."""
        state = {"generator": self.generator.get_state(), "size": self.size, "insert": self.insert}
        if rows_from is not None:
            state["rows_from"] = rows_from
            for name in Batch._fields:
                state[name] = getattr(self, name)[rows_from:self.size].cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.size, self.insert = int(state["size"]), int(state["insert"])
        if "rows_from" in state:
            for name in Batch._fields:
                getattr(self, name)[state["rows_from"]:self.size].copy_(state[name])  # in place: storage kept
