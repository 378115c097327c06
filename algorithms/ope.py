"""Off-policy evaluation by importance sampling: IS, WIS, per-decision IS, weighted PDIS, doubly robust, weighted DR.

The value of a saved policy pi from episodes logged by a behaviour policy mu, reweighting what mu did by how much
more (or less) likely pi was to do it. Precup, Sutton & Singh, "Eligibility Traces for Off-Policy Policy
Evaluation", ICML 2000 (IS, WIS, PDIS, WPDIS); Jiang & Li, "Doubly Robust Off-policy Value Evaluation for
Reinforcement Learning", ICML 2016 (arXiv:1511.03722) (DR); Thomas & Brunskill, "Data-Efficient Off-Policy Policy
Evaluation for Reinforcement Learning", ICML 2016 (arXiv:1604.00923) (weighted DR). With n episodes i of length
T_i, discount gamma, and the cumulative importance ratio rho_i,t = prod_{k<=t} pi(a_i,k|s_i,k) / mu(a_i,k|s_i,k):

    IS     = 1/n sum_i rho_i,T_i G_i                       G_i = sum_t gamma^t r_i,t
    WIS    = sum_i rho_i,T_i G_i / sum_i rho_i,T_i
    PDIS   = 1/n sum_i sum_t gamma^t rho_i,t r_i,t
    WPDIS  = sum_t gamma^t sum_i w_i,t r_i,t               w_i,t = rho_i,t / sum_j rho_j,t
    DR     = 1/n sum_i sum_t gamma^t (rho_i,t (r_i,t - Q(s_i,t, a_i,t)) + rho_i,t-1 V(s_i,t))     rho_i,-1 = 1
    WDR    = sum_t gamma^t sum_i (w_i,t (r_i,t - Q(s_i,t, a_i,t)) + w_i,t-1 V(s_i,t))            w_i,-1 = 1/n

with Q the fitted Q evaluation of pi (algorithms/fqe.py) and V(s) = E_{a~pi(.|s)} Q(s, a). IS and PDIS are unbiased
(given mu's true probabilities and mu > 0 wherever pi > 0); the weighted forms trade a bias that vanishes with n
for much less variance; DR is unbiased for any Q and has low variance when Q is good.

Implementation details:
 1. mu: `--behavior recorded` reads the behaviour's probabilities that the stitch suite records with every action
    (common.data.load_behavior: log-densities for Box actions, all actions' probabilities for Discrete ones);
    `--behavior estimated` fits behaviour cloning instead (discrete: a softmax classifier; continuous: a
    tanh-Gaussian on the actions rescaled to [-1, 1], both MLP 2x256 by maximum likelihood), for data that
    records none. A dataset without records and `--behavior recorded` is an error.
 2. pi: the run's policy as algorithms/fqe.py loads it. It acts deterministically, and a deterministic pi has no
    density ratio in a continuous action space, so pi is evaluated with Gaussian noise of std `--target-std`
    (default 0.1) x half the action range, clipped to the range (its density inside the range is the Gaussian's;
    the behaviour's actions lie inside). Discrete pi acts epsilon-greedily with `--target-epsilon` (default 0:
    the policy as evaluated; ratios are then 0 or 1 / mu). FQE evaluates the same pi.
 3. Ratios are kept as log-ratios and summed in log space; the weighted forms normalize with the largest weight
    factored out, so a long episode does not overflow them. IS and PDIS may still overflow to inf for long
    episodes with large ratios: that is the estimator's variance showing, and it is reported as is.
 4. Episodes are the dataset's (to a termination, the time limit, or the end of a logged stream); after its end an
    episode keeps its last rho and adds nothing (the padding of Voloshin et al.'s OPE toolkit), so the weighted
    per-decision forms normalize over all episodes at every t. Where every weight at a step is 0 the step adds 0.
 5. Values are discounted returns from the data's start states; the normalized score converts them as
    algorithms/fqe.py does (detail 5 there), an approximation. `--gamma` is shared with FQE.

Usage:
    python algorithms/ope.py --policy runs/bc_discrete__stitch-cartpole-medium-v0__s0__... \
        --dataset stitch/cartpole/medium-replay-v0
    python algorithms/ope.py --policy runs/iql__stitch-hopper-medium-v0__s0__... --dataset stitch/hopper/medium-v0 \
        --behavior estimated --fqe-steps 250000 --out ope_iql.json
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from algorithms.fqe import (QNetwork, TargetPolicy, discounted_to_normalized, fit_q, load_target,  # noqa: E402
                            policy_value)
from common.checkpoints import CheckpointError  # noqa: E402
from common.config import ArgumentError, require, resolve_device  # noqa: E402
from common.data import Dataset, DatasetError, load_behavior, load_dataset, observation_stats  # noqa: E402

ESTIMATORS = ("is", "wis", "pdis", "wpdis", "dr", "wdr")


@dataclasses.dataclass
class Args:
    policy: str = ""
    """Run folder of the policy to evaluate (written by any script in algorithms/)."""
    dataset: str = "stitch/cartpole/medium-replay-v0"
    """Minari dataset id of the logged data (stitch/... ids are built locally when missing)."""
    behavior: Literal["recorded", "estimated"] = "recorded"
    """The behaviour's action probabilities: as the dataset records them, or estimated by behaviour cloning."""
    seed: int = 0
    """Seed for network init, minibatch sampling and target-policy noise."""
    gamma: float = 0.99
    """Discount factor of the estimated value."""
    target_epsilon: float = 0.0
    """Discrete actions: evaluate the policy acting uniformly at random with this probability."""
    target_std: float = 0.1
    """Continuous actions: evaluate the policy with Gaussian noise of this std (x half the action range), clipped."""
    fqe_steps: int = 100_000
    """Gradient updates of the FQE model of DR and WDR (0: no model, Q = 0, so DR = PDIS and WDR = WPDIS)."""
    bc_steps: int = 20_000
    """Gradient updates of the behaviour-cloning estimate of mu (--behavior estimated)."""
    batch_size: int = 256
    """Minibatch size of FQE and behaviour cloning."""
    hidden_dim: int = 256
    """Width of the two hidden layers of the FQE and behaviour-cloning networks."""
    critic_lr: float = 1e-4
    """Learning rate of FQE's Q network."""
    actor_lr: float = 1e-3
    """Learning rate of the behaviour-cloning network."""
    tau: float = 0.005
    """Polyak averaging rate of FQE's target Q network."""
    log_every: int = 10_000
    """Updates between console lines of FQE and behaviour cloning."""
    device: str = "auto"
    """Device: auto (cuda if available), cpu, cuda, cuda:N."""
    out: str | None = None
    """Write the estimates (value and normalized score per estimator, settings) to this JSON file."""
    download: bool = False
    """Download a remote (non-stitch) dataset if it is not found locally."""


def check_args(args: Args) -> None:
    require(isinstance(args.dataset, str) and args.dataset.strip() != "", "dataset", "must be a dataset id")
    require(args.behavior in ("recorded", "estimated"), "behavior", "must be recorded or estimated", args.behavior)
    for f in ("batch_size", "hidden_dim", "log_every", "bc_steps"):
        require(getattr(args, f) > 0, f, "must be a positive integer", getattr(args, f))
    require(args.fqe_steps >= 0, "fqe_steps", "must be >= 0 (0: DR without a model)", args.fqe_steps)
    for f in ("critic_lr", "actor_lr"):
        require(getattr(args, f) > 0, f, "must be positive", getattr(args, f))
    require(0.0 <= args.gamma < 1.0, "gamma", "must be in [0, 1)", args.gamma)
    require(0.0 < args.tau <= 1.0, "tau", "must be in (0, 1]", args.tau)
    require(0.0 <= args.target_epsilon <= 1.0, "target_epsilon", "must be in [0, 1]", args.target_epsilon)
    require(args.target_std > 0.0, "target_std", "must be positive (a deterministic policy has no density)",
            args.target_std)
    resolve_device(args.device)
    require(bool(args.policy), "policy", "must be a run folder (runs/<algo>__<dataset>__s<seed>__...)")


# ----------------------------------------------------------------------------------------------
# Estimators: pure functions of per-episode arrays [n_episodes, T], padded after each episode's end
# ----------------------------------------------------------------------------------------------
def _normalized_weights(log_rho: np.ndarray) -> np.ndarray:
    """w_i,t = rho_i,t / sum_j rho_j,t per column, with the largest weight factored out; 0 where all are 0."""
    top = log_rho.max(0, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    w = np.exp(log_rho - top)
    total = w.sum(0, keepdims=True)
    return np.divide(w, total, out=np.zeros_like(w), where=total > 0)


def ope_estimates(rewards: np.ndarray, log_ratios: np.ndarray, gamma: float, q: np.ndarray | None = None,
                  v: np.ndarray | None = None, lengths: np.ndarray | None = None) -> dict[str, float]:
    """Every estimator of the module docstring. rewards, log_ratios = log pi(a|s) - log mu(a|s), q = Q(s_t, a_t),
    v = V(s_t): [n, T], each 0 after the episode's end. q, v None: DR and WDR with Q = 0. lengths [n]: the episodes'
    lengths, so that an overflowed (inf) rho adds nothing after its episode's end (inf * 0 would be nan)."""
    n, horizon = rewards.shape
    live = np.ones((n, horizon), bool) if lengths is None else np.arange(horizon) < np.asarray(lengths)[:, None]
    q = np.zeros_like(rewards) if q is None else q
    v = np.zeros_like(rewards) if v is None else v
    disc = gamma ** np.arange(horizon)
    log_rho = np.cumsum(log_ratios, 1)                                       # log rho_i,t
    with np.errstate(over="ignore", invalid="ignore"):
        rho = np.exp(log_rho)
        rho_prev = np.concatenate([np.ones((n, 1)), rho[:, :-1]], 1)         # rho_i,t-1, rho_i,-1 = 1
        returns = (disc * rewards).sum(1)                                    # G_i
        w = _normalized_weights(log_rho)                                     # w_i,t
        w_prev = np.concatenate([np.full((n, 1), 1.0 / n), w[:, :-1]], 1)    # w_i,t-1, w_i,-1 = 1/n
        w_end = w[:, -1]
        return {
            "is": float(np.mean(rho[:, -1] * returns)),
            "wis": float(np.sum(w_end * returns)) if w_end.sum() > 0 else float("nan"),
            "pdis": float(np.mean((disc * np.where(live, rho * rewards, 0.0)).sum(1))),
            "wpdis": float((disc * (w * rewards).sum(0)).sum()),
            "dr": float(np.mean((disc * np.where(live, rho * (rewards - q) + rho_prev * v, 0.0)).sum(1))),
            "wdr": float((disc * (w * (rewards - q) + w_prev * v).sum(0)).sum()),
        }


def per_episode(values: np.ndarray, data: Dataset) -> np.ndarray:
    """A flat per-transition array [N] as [n_episodes, max length], 0 after each episode's end."""
    out = np.zeros((len(data.episode_lengths), int(data.episode_lengths.max())), np.float64)
    rows = data.episode_ids()
    cols = np.arange(len(data)) - data.episode_starts[rows]
    out[rows, cols] = values
    return out


# ----------------------------------------------------------------------------------------------
# The behaviour policy, recorded or estimated
# ----------------------------------------------------------------------------------------------
class BehaviorNet(nn.Module):
    """mu_hat(a | s): discrete, softmax logits [B, n]; continuous, a tanh-Gaussian (mean, log std) [B, act_dim] x 2."""

    def __init__(self, obs_dim: int, n_out: int, hidden: int, obs_mean: torch.Tensor, obs_std: torch.Tensor):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_out))
        self.register_buffer("obs_mean", obs_mean)
        self.register_buffer("obs_std", obs_std)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net((obs - self.obs_mean) / self.obs_std)


def behavior_log_prob(net: BehaviorNet, obs: torch.Tensor, act: torch.Tensor, low: torch.Tensor | None,
                      high: torch.Tensor | None) -> torch.Tensor:
    """log mu_hat(a | s) [B]. Continuous: x = actions rescaled to [-1, 1] (clipped just inside), u = atanh(x),
    log N(u; m, s) - sum log(1 - x^2) - sum log(half width)."""
    out = net(obs)
    if low is None:
        return F.log_softmax(out, -1).gather(1, act.long()[:, None]).squeeze(1)
    mean, log_std = out.chunk(2, -1)
    log_std = log_std.clamp(-5.0, 2.0)
    half = (high - low) / 2
    x = ((act - low) / half - 1.0).clamp(-1 + 1e-6, 1 - 1e-6)
    u = torch.atanh(x)
    log_normal = -0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * np.log(2 * np.pi)
    return (log_normal - torch.log1p(-x.pow(2)) - torch.log(half)).sum(-1)


def estimate_behavior(data: Dataset, target: TargetPolicy, args, device: torch.device, log=print) -> np.ndarray:
    """log mu_hat(a_i | s_i) [N] of every logged action, mu_hat fitted by maximum likelihood (behaviour cloning)."""
    torch.manual_seed(args.seed)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    obs_mean, obs_std = observation_stats(data.observations, eps=1e-3)
    n_out = target.n_actions if target.n_actions is not None else 2 * data.act_dim
    net = BehaviorNet(data.obs_dim, n_out, args.hidden_dim, torch.as_tensor(obs_mean, device=device),
                      torch.as_tensor(obs_std, device=device)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=args.actor_lr)
    obs, act = torch.as_tensor(data.observations, device=device), torch.as_tensor(data.actions, device=device)
    for step in range(1, args.bc_steps + 1):
        i = torch.randint(len(data), (args.batch_size,), device=device, generator=gen)
        loss = -behavior_log_prob(net, obs[i], act[i], target.low, target.high).mean()  # max likelihood
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.log_every == 0 or step == args.bc_steps:
            log(f"behaviour cloning step {step}: negative log-likelihood {loss.item():.4g}")
    with torch.no_grad():
        return torch.cat([behavior_log_prob(net, obs[j:j + 65536], act[j:j + 65536], target.low, target.high)
                          for j in range(0, len(data), 65536)]).double().cpu().numpy()


def recorded_behavior(data: Dataset) -> np.ndarray:
    """log mu(a_i | s_i) [N] as the dataset records it (common.data.load_behavior); DatasetError if it records none."""
    recorded = load_behavior(data)
    if recorded is None:
        raise DatasetError(f"dataset {data.dataset_id!r} records no behaviour probabilities (a dataset built before "
                           f"the suite recorded them, a PointMaze or a remote dataset): rebuild it with `python "
                           f"benchmarks/suite/build.py {data.dataset_id} --force`, or pass --behavior estimated")
    if recorded.ndim == 1:
        return recorded
    with np.errstate(divide="ignore"):
        return np.log(recorded[np.arange(len(data)), data.actions])


@torch.no_grad()
def target_log_prob(target: TargetPolicy, data: Dataset, device: torch.device) -> np.ndarray:
    """log pi(a_i | s_i) [N] of every logged action (-inf where pi cannot take it)."""
    out = []
    for j in range(0, len(data), 65536):
        obs = torch.as_tensor(data.observations[j:j + 65536], device=device)
        act = torch.as_tensor(data.actions[j:j + 65536], device=device)
        if target.n_actions is not None:
            out.append(target.probs(obs).double().gather(1, act[:, None]).squeeze(1).log())
        else:
            out.append(target.log_prob(obs, act))
    return torch.cat(out).cpu().numpy()


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def model_values(q: QNetwork, target: TargetPolicy, data: Dataset, device: torch.device,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Q(s_i, a_i) and V(s_i) = E_{a~pi} Q(s_i, a) [N] of every transition."""
    gen = torch.Generator(device=device).manual_seed(seed)
    qs, vs = [], []
    for j in range(0, len(data), 65536):
        obs = torch.as_tensor(data.observations[j:j + 65536], device=device)
        act = torch.as_tensor(data.actions[j:j + 65536], device=device)
        qs.append(q(obs, act))
        vs.append(policy_value(q, target, obs, gen))
    return torch.cat(qs).double().cpu().numpy(), torch.cat(vs).double().cpu().numpy()


def estimate(data: Dataset, target: TargetPolicy, log_mu: np.ndarray, args, device: torch.device,
             log=print) -> tuple[dict[str, float], float]:
    """Every estimator's value of `target` on `data` given log mu(a_i | s_i) [N] (args: gamma, fqe_steps and FQE's
    settings), FQE's own estimate among them (when fqe_steps > 0), and the effective number of episodes of the
    trajectory weights (Kish: 1 / sum w_i^2)."""
    with np.errstate(invalid="ignore"):
        log_ratio = per_episode(target_log_prob(target, data, device) - log_mu, data)
    q = v = None
    if args.fqe_steps > 0:
        model = fit_q(data, target, args, args.fqe_steps, device, log)
        q_flat, v_flat = model_values(model, target, data, device, args.seed)
        q, v = per_episode(q_flat, data), per_episode(v_flat, data)
    values = ope_estimates(per_episode(data.rewards.astype(np.float64), data), log_ratio, args.gamma, q, v,
                           data.episode_lengths)
    if args.fqe_steps > 0:  # FQE itself: the model's V at the episodes' first states
        values["fqe"] = float(v_flat[data.episode_starts].mean())
    w_end = _normalized_weights(log_ratio.cumsum(1))[:, -1]
    return values, float(1.0 / np.sum(w_end ** 2)) if w_end.sum() > 0 else 0.0


def run(args: Args) -> dict:
    check_args(args)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, download=args.download)
    discrete = np.issubdtype(data.actions.dtype, np.integer)
    target = load_target(args.policy, data, args.target_epsilon if discrete else args.target_std, device)
    log_mu = recorded_behavior(data) if args.behavior == "recorded" else estimate_behavior(data, target, args, device)
    values, ess = estimate(data, target, log_mu, args, device)
    result = {"policy": str(args.policy), "dataset": args.dataset, "behavior": args.behavior, "gamma": args.gamma,
              "episodes": int(len(data.episode_lengths)), "effective_episodes": ess,
              "estimates": {name: {"value": value, "normalized": discounted_to_normalized(value, data, args.gamma)
                                   if np.isfinite(value) else None} for name, value in values.items()},
              "args": dataclasses.asdict(args)}
    print(f"ope {args.dataset}, behaviour {args.behavior}: {len(data.episode_lengths)} episodes, effective sample "
          f"size of the trajectory weights {ess:.1f}")
    for name, est in result["estimates"].items():
        shown = "" if est["normalized"] is None else f"   normalized ~ {est['normalized']:.1f}"
        print(f"  {name:6} {est['value']:12.4g}{shown}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    try:
        run(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
