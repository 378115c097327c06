"""FQE: fitted Q evaluation, the value of a saved policy estimated from logged data alone.

Le, Voloshin & Yue, "Batch Policy Learning under Constraints", ICML 2019 (arXiv:1903.08738), Algorithm 3; the
estimator that Paine et al. (arXiv:2007.09055) and DOPE (Fu et al., "Benchmarks for Deep Off-Policy Evaluation",
ICLR 2021, arXiv:2103.16596) found the most reliable for choosing among policies. Q^pi is fitted by regression to
its own Bellman target under the evaluated policy pi (not a max: nothing is improved), and the policy's value is
Q^pi averaged over the data's start states:

    y          = r + gamma * (1 - terminal) * E_{a' ~ pi(.|s')} Q_target(s', a')
    L(theta)   = E_(s,a,r,s')~D [ (Q_theta(s, a) - y)^2 ]
    J_hat(pi)  = mean over the data's episodes i of E_{a ~ pi(.|s0_i)} Q_theta(s0_i, a)

Implementation details:
 1. The evaluated policy is a run folder's `load_policy(run_dir).module` (what the run's evaluation acts with),
    loaded through the run's own script in algorithms/; the dataset's action space must be the policy's.
    Discrete: epsilon-greedy on the policy's action, pi(a|s) = eps / n + (1 - eps) [a = a_pi(s)]
    (`--target-epsilon`, default 0: the policy as evaluated); the expectation over a' is exact.
    Continuous: clip(a_pi(s) + half_width * N(0, target_std^2), low, high) (`--target-std`, default 0: the policy
    as evaluated); the expectation over a' is one sample per target (exact when target_std is 0).
 2. Q network: MLP 2x256 ReLU on normalized observations (mean, std + 1e-3 of the data); continuous Q(s, a) has
    one output, discrete Q(s, .) one output per action.
 3. A target network updated by Polyak averaging (tau 0.005) after every step; Adam 1e-4 (d3rlpy's FQE lr), batch
    256, 100k updates by default (DOPE's FQE ran 250k-1M; the budget is a flag). The value propagates back one
    slow target update at a time, so a short budget underestimates; a larger --critic-lr and --tau converge
    faster (benchmarks/ope_benchmark.py measures the error against true values).
 4. Only terminations stop bootstrapping; time-limit truncations bootstrap (as in training). What pi does at the
    data's next states (its action probabilities, or its mean action before the noise) is computed once, before
    the updates: pi and the data are fixed, and a policy slow to query (SPIBB's pseudo-counts compare a state with
    every state of its data) then costs one pass over the data instead of one per minibatch.
 5. J_hat is a discounted return. Its normalized score converts it to an episode return as if the policy earned
    its reward evenly over a full episode of H steps (H the environment's time limit):
    R ~ J_hat * H (1 - gamma) / (1 - gamma^H), then 100 (R - ref_min) / (ref_max - ref_min). That is exact only
    for an even reward over full episodes (roughly true of a locomotion policy that does not fall); compare
    estimators with true values in discounted returns (benchmarks/ope_benchmark.py does).
 6. No checkpoints or resume: a fit takes minutes. The result goes to `--out` (JSON) and the console.

Usage:
    python algorithms/fqe.py --policy runs/bc_discrete__stitch-cartpole-medium-v0__s0__... \
        --dataset stitch/cartpole/medium-replay-v0
    python algorithms/fqe.py --policy runs/iql__stitch-hopper-medium-v0__s0__... --dataset stitch/hopper/medium-v0 \
        --total-steps 250000 --out fqe_iql.json
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from common.checkpoints import CheckpointError, load_checkpoint  # noqa: E402
from common.config import ArgumentError, require, resolve_device  # noqa: E402
from common.data import Dataset, DatasetError, load_dataset, observation_stats  # noqa: E402


@dataclasses.dataclass
class Args:
    policy: str = ""
    """Run folder of the policy to evaluate (written by any script in algorithms/)."""
    dataset: str = "stitch/cartpole/medium-replay-v0"
    """Minari dataset id of the logged data (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling and target-policy noise."""
    total_steps: int = 100_000
    """Number of gradient updates."""
    batch_size: int = 256
    """Minibatch size."""
    hidden_dim: int = 256
    """Width of the two hidden layers of the Q network."""
    critic_lr: float = 1e-4
    """Learning rate of the Q network."""
    gamma: float = 0.99
    """Discount factor of the estimated value."""
    tau: float = 0.005
    """Polyak averaging rate of the target Q network."""
    target_epsilon: float = 0.0
    """Discrete actions: evaluate the policy acting uniformly at random with this probability (0: as evaluated)."""
    target_std: float = 0.0
    """Continuous actions: evaluate the policy with Gaussian noise of this std (x half the action range), clipped."""
    log_every: int = 5_000
    """Updates between console lines (loss, current estimate)."""
    device: str = "auto"
    """Device: auto (cuda if available), cpu, cuda, cuda:N."""
    out: str | None = None
    """Write the result (estimate, normalized score, settings) to this JSON file."""
    download: bool = False
    """Download a remote (non-stitch) dataset if it is not found locally."""


def check_args(args: Args) -> None:
    require(isinstance(args.dataset, str) and args.dataset.strip() != "", "dataset", "must be a dataset id")
    for f in ("total_steps", "batch_size", "hidden_dim", "log_every"):
        require(getattr(args, f) > 0, f, "must be a positive integer", getattr(args, f))
    require(args.critic_lr > 0, "critic_lr", "must be positive", args.critic_lr)
    require(0.0 <= args.gamma < 1.0, "gamma", "must be in [0, 1)", args.gamma)
    require(0.0 < args.tau <= 1.0, "tau", "must be in (0, 1]", args.tau)
    require(0.0 <= args.target_epsilon <= 1.0, "target_epsilon", "must be in [0, 1]", args.target_epsilon)
    require(args.target_std >= 0.0, "target_std", "must be >= 0", args.target_std)
    resolve_device(args.device)
    require(bool(args.policy), "policy", "must be a run folder (runs/<algo>__<dataset>__s<seed>__...)")


# ----------------------------------------------------------------------------------------------
# The evaluated policy
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TargetPolicy:
    """The evaluated policy pi: a module from observations to actions, plus the noise it is evaluated with."""
    module: nn.Module
    """observations [B, obs_dim] -> actions [B, act_dim] (float) or [B] (int64), as the run's evaluation acts."""
    n_actions: int | None
    """Discrete: the number of actions; None for continuous actions."""
    noise: float = 0.0
    """Discrete: epsilon; continuous: Gaussian std in units of half the action range."""
    low: torch.Tensor | None = None
    high: torch.Tensor | None = None

    @torch.no_grad()
    def act(self, obs: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """The module's actions, `chunk` rows at a time: a policy may hold a [B, N] intermediate (SPIBB's
        pseudo-counts compare every state with the data's N states), too big for a whole dataset at once."""
        if len(obs) <= chunk:
            return self.module(obs)
        return torch.cat([self.module(obs[i:i + chunk]) for i in range(0, len(obs), chunk)])

    @torch.no_grad()
    def probs(self, obs: torch.Tensor) -> torch.Tensor:
        """Discrete: pi(. | s) [B, n] = eps / n + (1 - eps) one_hot(a_pi(s))."""
        greedy = self.act(obs).long().reshape(-1)
        p = torch.full((len(obs), self.n_actions), self.noise / self.n_actions, device=obs.device)
        return p.scatter_add_(1, greedy[:, None], torch.full_like(p[:, :1], 1.0 - self.noise))

    @torch.no_grad()
    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        """Continuous: a_pi(s) [B, act_dim] as the environment takes it (the policy's [-1, 1] mapped to [low, high]
        as common.evaluation.env_actions maps it; unchanged where that is [-1, 1])."""
        a = self.act(obs).float().reshape(len(obs), -1)
        if bool((self.low == -1).all() and (self.high == 1).all()):
            return a
        return self.low + (a.clamp(-1.0, 1.0) + 1.0) * 0.5 * (self.high - self.low)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Continuous: a ~ pi(. | s), clip(a_pi(s) + half_width * std * N(0, 1), low, high)."""
        return self.add_noise(self.mean_action(obs), generator)

    @torch.no_grad()
    def add_noise(self, a: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Continuous: clip(a + half_width * std * N(0, 1), low, high) of mean actions a [B, act_dim]."""
        if self.noise == 0:
            return a
        half = (self.high - self.low) / 2
        eps = torch.randn(a.shape, generator=generator, device=a.device)
        return torch.minimum(torch.maximum(a + half * self.noise * eps, self.low), self.high)

    @torch.no_grad()
    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Continuous: log pi(a | s) [B] of actions inside the box (the clip only adds mass on its faces)."""
        mean = self.mean_action(obs).double()
        std = ((self.high - self.low) / 2).double() * self.noise
        z = (act.double() - mean) / std
        return (-0.5 * z.pow(2) - torch.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)


def load_target(run_dir: str | Path, data: Dataset, noise: float, device: torch.device) -> TargetPolicy:
    """The policy of a run folder, through its own script's `load_policy` (algorithms/<algo>.py), checked to act in
    `data`'s action space. CheckpointError (one line) for a folder that is not a run or a policy that does not fit."""
    path = Path(run_dir) / "checkpoint.pt"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"--policy {run_dir}: no such run folder")
    state = load_checkpoint(path)
    algo = state.get("algo")
    if not isinstance(algo, str) or not (Path(__file__).resolve().parent / f"{algo}.py").is_file():
        raise CheckpointError(f"--policy {run_dir}: {path} is not the checkpoint of a script in algorithms/")
    discrete = np.issubdtype(data.actions.dtype, np.integer)
    n_actions = state.get("n_actions")
    if (n_actions is not None) != discrete or (discrete and int(n_actions) != data.n_actions) or (
            not discrete and int(state.get("act_dim", -1)) != data.act_dim):
        theirs = f"{int(n_actions)} discrete actions" if n_actions is not None else \
            f"{int(state.get('act_dim', -1))}-dimensional continuous actions"
        ours = f"{data.n_actions} discrete actions" if discrete else f"{data.act_dim}-dimensional continuous actions"
        raise CheckpointError(f"--policy {run_dir} ({algo}) acts with {theirs}, but {data.dataset_id} has {ours}")
    if int(state.get("obs_dim", -1)) != data.obs_dim:
        raise CheckpointError(f"--policy {run_dir} ({algo}) observes {state.get('obs_dim')} features, but "
                              f"{data.dataset_id} has {data.obs_dim}")
    module = importlib.import_module(f"algorithms.{algo}").load_policy(run_dir, str(device)).module.eval()
    low = high = None
    if not discrete:
        low = torch.as_tensor(data.action_low if data.action_low is not None else -np.ones(data.act_dim),
                              dtype=torch.float32, device=device)
        high = torch.as_tensor(data.action_high if data.action_high is not None else np.ones(data.act_dim),
                               dtype=torch.float32, device=device)
    return TargetPolicy(module, None if not discrete else int(n_actions), noise, low, high)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
class QNetwork(nn.Module):
    """Q(s, a) [B] (continuous: [s, a] in, one output) or Q(s, .) [B, n] (discrete), on normalized observations."""

    def __init__(self, obs_dim: int, act_dim: int, n_actions: int | None, hidden: int, obs_mean: torch.Tensor,
                 obs_std: torch.Tensor):
        super().__init__()
        self.discrete = n_actions is not None
        n_in, n_out = (obs_dim, n_actions) if self.discrete else (obs_dim + act_dim, 1)
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_out))
        self.register_buffer("obs_mean", obs_mean)
        self.register_buffer("obs_std", obs_std)

    def forward(self, obs: torch.Tensor, act: torch.Tensor | None = None) -> torch.Tensor:
        x = (obs - self.obs_mean) / self.obs_std
        if self.discrete:
            q = self.net(x)
            return q if act is None else q.gather(1, act.long()[:, None]).squeeze(1)
        return self.net(torch.cat([x, act], -1)).squeeze(-1)


def policy_value(q: QNetwork, target: TargetPolicy, obs: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """V(s) = E_{a~pi(.|s)} Q(s, a) [B]: exact for discrete actions, one sample for continuous ones."""
    if q.discrete:
        return (target.probs(obs) * q(obs)).sum(-1)
    return q(obs, target.sample(obs, generator))


# ----------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------
def fqe_loss(q: QNetwork, obs: torch.Tensor, act: torch.Tensor, rew: torch.Tensor, next_value: torch.Tensor,
             terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """L = E[(Q(s, a) - (r + gamma (1 - d) V_target(s')))^2], V_target(s') = E_{a'~pi} Q_target(s', a') given."""
    y = rew + gamma * (1.0 - terminal) * next_value
    return (q(obs, act) - y).pow(2).mean()


def next_state_values(target: TargetPolicy, next_obs: torch.Tensor, generator: torch.Generator | None):
    """A function (q, rows i) -> E_{a'~pi(.|s'_i)} q(s'_i, a') [len(i)] over the data's next states `next_obs`.
    pi and the data are fixed, so what pi does at each s' is computed once, before the updates, and not at every
    minibatch: its probabilities (discrete) or its mean action (continuous, noise drawn per update as
    TargetPolicy.sample draws it). A policy with its own sampling (a subclass's `sample`) is asked each time."""
    if target.n_actions is not None:
        probs = target.probs(next_obs)
        return lambda q, i: (probs[i] * q(next_obs[i])).sum(-1)
    if type(target).sample is TargetPolicy.sample:
        mean = target.mean_action(next_obs)
        return lambda q, i: q(next_obs[i], target.add_noise(mean[i], generator))
    return lambda q, i: policy_value(q, target, next_obs[i], generator)


# ----------------------------------------------------------------------------------------------
# Fitting
# ----------------------------------------------------------------------------------------------
def fit_q(data: Dataset, target: TargetPolicy, args, steps: int, device: torch.device, log=print) -> QNetwork:
    """Q^pi fitted to `data` in `steps` updates (args: seed, batch_size, hidden_dim, critic_lr, gamma, tau,
    log_every)."""
    torch.manual_seed(args.seed)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    obs_mean, obs_std = observation_stats(data.observations, eps=1e-3)
    t = {name: torch.as_tensor(getattr(data, name), device=device)
         for name in ("observations", "actions", "rewards", "next_observations", "terminals")}
    q = QNetwork(data.obs_dim, data.act_dim, target.n_actions, args.hidden_dim,
                 torch.as_tensor(obs_mean, device=device), torch.as_tensor(obs_std, device=device)).to(device)
    q_target = copy.deepcopy(q).requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=args.critic_lr)
    starts = torch.as_tensor(data.observations[data.episode_starts], device=device)
    next_value = next_state_values(target, t["next_observations"], gen)
    for step in range(1, steps + 1):
        i = torch.randint(len(data), (args.batch_size,), device=device, generator=gen)
        with torch.no_grad():
            v = next_value(q_target, i)
        loss = fqe_loss(q, t["observations"][i], t["actions"][i], t["rewards"][i], v, t["terminals"][i], args.gamma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, p_targ in zip(q.parameters(), q_target.parameters()):
                p_targ.lerp_(p, args.tau)  # Polyak: p_targ <- (1 - tau) p_targ + tau p
        if step % args.log_every == 0 or step == steps:
            with torch.no_grad():
                estimate = policy_value(q, target, starts, gen).mean().item()
            log(f"fqe step {step}: loss {loss.item():.4g}, J_hat {estimate:.4g}")
    return q.eval()


def discounted_to_normalized(value: float, data: Dataset, gamma: float) -> float | None:
    """100 (R - ref_min) / (ref_max - ref_min) of R = value * H (1 - gamma) / (1 - gamma^H) (detail 5); None
    without reference scores or a time limit."""
    horizon = None if data.env_spec is None else data.env_spec.max_episode_steps
    if horizon is None or data.ref_min_score is None or data.ref_max_score is None:
        return None
    episode_return = value * horizon * (1 - gamma) / (1 - gamma ** horizon) if gamma > 0 else value * horizon
    return float(data.normalized_score([episode_return])[0])


def train(args: Args) -> dict:
    check_args(args)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, download=args.download)
    discrete = np.issubdtype(data.actions.dtype, np.integer)
    target = load_target(args.policy, data, args.target_epsilon if discrete else args.target_std, device)
    q = fit_q(data, target, args, args.total_steps, device)
    with torch.no_grad():
        gen = torch.Generator(device=device).manual_seed(args.seed)
        starts = torch.as_tensor(data.observations[data.episode_starts], device=device)
        value = float(policy_value(q, target, starts, gen).mean())
    result = {"estimator": "fqe", "policy": str(args.policy), "dataset": args.dataset, "value": value,
              "normalized": discounted_to_normalized(value, data, args.gamma), "args": dataclasses.asdict(args)}
    shown = "" if result["normalized"] is None else f", normalized score ~ {result['normalized']:.1f}"
    print(f"fqe {args.dataset}: J_hat = {value:.3f} (discounted, gamma {args.gamma}){shown}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
