"""One-step RL: behaviour cloning, SARSA evaluation of the behaviour policy, one step of policy improvement.

Brandfonbrener, Whitney, Ranganath, Bruna. "Offline RL Without Off-Policy Evaluation." NeurIPS 2021.
arXiv:2106.08909. Authors' code: github.com/davidbrandfonbrener/onestep-rl (PyTorch).

Iterative offline RL alternates off-policy evaluation and improvement; one-step RL evaluates only the
behaviour policy beta, which needs no off-policy evaluation at all (SARSA on the dataset's own next
actions), and then improves on beta ONCE against that fixed Q^beta. Three phases, one after the other:

    1. behaviour cloning:  L_beta(omega) = -E_(s,a)~D [ log beta_omega(a | s) ]
    2. SARSA evaluation:   L_Q(theta)    = E_(s,a,r,s',a')~D [ ( r + gamma (1 - d) Qbar(s', a') - Q_theta(s, a) )^2 ]
    3. one improvement step from pi = beta, Q fixed:
         exponentially weighted (default):
           A(s, a)   = Q(s, a) - (1/N) sum_j Q(s, a_j),  a_j ~ beta(. | s), N = 10
           L_pi(phi) = -E_(s,a)~D [ min(exp(tau A(s, a)), 100) log pi_phi(a | s) ]
         reverse-KL regularized (`--improvement reverse_kl`):
           L_pi(phi) = E_s [ -Q(s, a~) + alpha (1/N) sum_j ( log pi_phi(a_j | s) - log beta(a_j | s) ) ],
           a~, a_j ~ pi_phi(. | s) reparameterized

Implementation details (all from the authors' code unless marked "deviation"):
 1. The phases are step ranges of one run: updates [0, bc_steps) clone beta, [bc_steps, bc_steps + q_steps)
    fit Q, the rest improve pi. A checkpoint's step says which phase a resumed run is in. When the
    improvement phase starts, pi is a copy of beta with a fresh Adam optimizer (`load_from_pilearner`).
 2. SARSA targets use the dataset's next action a' (the next transition of the same episode) and a
    target Q updated by Polyak averaging (tau 0.005) after every second Q update. The last transition
    of an episode cut by a time limit has no next action in the data and is left out of training (the
    authors' `d4rl_to_replay.py` drops it too); a terminal transition needs none.
 3. One Q network (no twin Q, no min), trained with plain MSE; no reward scaling, no observation
    normalization: Q is on the scale of raw discounted returns.
 4. Policies: Gaussian with a state-dependent mean and log-std from one MLP, the mean soft-clamped to
    [-1, 1] by tanh and the log-std to [-5, 0] by -5 + 2.5 (tanh(x) + 1). beta and pi share this form: the
    authors' pi is configured as a truncated normal, but the one-step run copies beta's network, Normal
    distribution included. Evaluation uses the mean action, clipped to [-1, 1].
 5. The value baseline averages Q over N = 10 actions sampled from beta (not reparameterized); the
    advantages and weights carry no gradient. Dataset actions are clipped to +-(1 - 1e-4) before pi's
    log-probability in the weighted regression. Weights are clipped at 100.
 6. Networks: 2 hidden layers of 1024 ReLU units, PyTorch's default initialization. Adam, lr 1e-4
    everywhere, batch 512, gamma 0.99.
 7. Deviation: the paper tuned the improvement's inverse temperature tau per dataset by online evaluation over
    {0.1, 0.3, 1, 3, 10, 30} (the sweep in the authors' figures notebook) and the chosen values are not
    published; the default here is 1.0, the middle of that sweep. (The repository's exp_weight.yaml
    default, 0.01, is outside the sweep.) The reverse-KL variant's alpha defaults to the repository's 1.0
    (sweep {0.03, 0.1, 0.3, 1, 3, 10}).
 8. Deviation: evaluation (10 episodes every 5,000 updates) runs beta during the first two phases and pi
    after; the score is the final evaluation.

Default hyperparameters are the authors' D4RL settings (config/train.yaml, config/{beta,q,pi}/*.yaml):
500k BC updates, 2M Q updates, 100k improvement updates (2.6M in all; by default the phases keep these
proportions of any --total-steps), width 1024, lr 1e-4, batch 512, 10 baseline samples; the paper's D4RL
locomotion results use the exponentially weighted improvement.

Usage:
    python algorithms/onestep.py                                     # stitch/hopper/medium-replay-v0
    python algorithms/onestep.py --total-steps 260000 --inverse-temperature 3.0
    python algorithms/onestep.py --resume runs/onestep__stitch-hopper-medium-replay-v0__s0__20261121-120000
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Normal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing
from common.buffer import Buffer  # noqa: E402
from common.checkpoints import (CheckpointError, load_policy_checkpoint, load_run_checkpoint,  # noqa: E402
                                resumed_args, rng_state, save_checkpoint, set_rng_state)
from common.config import ArgumentError, check_common, require, resolve_device  # noqa: E402
from common.data import DatasetError, load_dataset  # noqa: E402
from common.evaluation import Evaluator  # noqa: E402
from common.fast import adam, fast_update  # noqa: E402
from common.interrupt import StopSignal, resume_command  # noqa: E402
from common.logging import Run, git_commit, run_name  # noqa: E402
from common.vocabulary import upgrade_args  # noqa: E402


@dataclasses.dataclass
class Args:
    dataset: str = "stitch/hopper/medium-replay-v0"
    """Minari dataset id (stitch/... ids are built locally when missing)."""
    seed: int = 0
    """Seed for network init, minibatch sampling and evaluation."""
    total_steps: int = 2_600_000
    """Number of gradient updates, all three phases together."""
    bc_steps: int | None = None
    """Updates of phase 1, behaviour cloning (default: 5/26 of total_steps, the paper's 500k of 2.6M)."""
    q_steps: int | None = None
    """Updates of phase 2, SARSA Q evaluation (default: 20/26 of total_steps, the paper's 2M); the rest improve pi."""
    batch_size: int = 512
    """Minibatch size."""
    hidden_dim: int = 1024
    """Width of the two hidden layers of every network."""
    actor_lr: float = 1e-4
    """Learning rate of beta (phase 1) and pi (phase 3)."""
    critic_lr: float = 1e-4
    """Learning rate of Q."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target Q."""
    target_update_every: int = 2
    """Q updates between target-Q updates."""
    improvement: Literal["exp_weight", "reverse_kl"] = "exp_weight"
    """Policy-improvement operator: exponentially weighted regression, or reverse-KL-regularized Q maximization."""
    inverse_temperature: float = 1.0
    """exp_weight: inverse temperature tau of the weights exp(tau * A), 0 is behaviour cloning (the paper tuned
    it per dataset)."""
    max_weight: float = 100.0
    """exp_weight: clip on the exponentiated advantage."""
    regularizer_weight: float = 1.0
    """reverse_kl: weight alpha of the KL(pi || beta) penalty."""
    num_action_samples: int = 10
    """Actions N sampled per state: from beta for the value baseline, from pi for the KL estimate."""
    eval_every: int = 5_000
    """Updates between evaluations."""
    eval_episodes: int = 10
    """Episodes per evaluation (deterministic actions); 0: no evaluation."""
    ref_min_score: float | None = None
    """Return that scores 0 (with --ref-max-score; default: the dataset's reference returns, if it has any)."""
    ref_max_score: float | None = None
    """Return that scores 100 (with --ref-min-score)."""
    log_every: int = 1_000
    """Updates between training-metric logs."""
    checkpoint_every: int = 50_000
    """Updates between checkpoints (one is always written at the end, and one on Ctrl-C or SIGTERM)."""
    checkpoint_minutes: float = 10.0
    """Also checkpoint once this many minutes have passed since the last checkpoint (0: off)."""
    device: str = "auto"
    """Training device: auto (cuda if available), cpu, cuda, cuda:N."""
    compile: bool = False
    """Compile the update with torch.compile; on CUDA also capture it as one CUDA graph and replay it."""
    runs_dir: str = "runs"
    """Folder that holds run folders."""
    resume: str | None = None
    """A run folder to continue (its own saved settings are used)."""
    download: bool = False
    """Download a remote (non-stitch) dataset if it is not found locally."""
    track: bool = False
    """Log to Weights & Biases (offline mode unless WANDB_MODE says otherwise)."""
    progress: bool = True
    """Show a progress bar."""


def phase_ends(args: Args) -> tuple[int, int]:
    """(end of phase 1, end of phase 2) in updates; the phases default to the paper's 5 : 20 : 1 split."""
    bc = args.total_steps * 5 // 26 if args.bc_steps is None else args.bc_steps
    q = args.total_steps * 20 // 26 if args.q_steps is None else args.q_steps
    return bc, bc + q


def check_args(args: Args) -> None:
    check_common(args)
    for f in ("bc_steps", "q_steps"):
        v = getattr(args, f)
        require(v is None or (isinstance(v, int) and v >= 0), f, "must be an integer >= 0", v)
    q_end = phase_ends(args)[1]
    require(q_end < args.total_steps, "total_steps", f"must exceed bc_steps + q_steps = {q_end} (phase 3 needs "
            "at least one update)", args.total_steps)
    require(args.target_update_every > 0, "target_update_every", "must be a positive integer", args.target_update_every)
    require(math.isfinite(args.inverse_temperature) and args.inverse_temperature >= 0.0, "inverse_temperature",
            "must be >= 0", args.inverse_temperature)
    require(args.max_weight > 0.0, "max_weight", "must be positive", args.max_weight)
    require(math.isfinite(args.regularizer_weight) and args.regularizer_weight >= 0.0, "regularizer_weight",
            "must be >= 0", args.regularizer_weight)
    require(args.num_action_samples > 0, "num_action_samples", "must be a positive integer", args.num_action_samples)
    require(args.hidden_dim > 0, "hidden_dim", "must be a positive integer", args.hidden_dim)


# ----------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------
def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Two hidden ReLU layers, PyTorch's default init (the authors' utils.MLP)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out_dim))


class QNet(nn.Module):
    """Q(s, a) for any leading batch shape: [..., obs], [..., act] -> [...]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(obs_dim + act_dim, hidden, 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1)).squeeze(-1)


class GaussianPolicy(nn.Module):
    """N(mu(s), sigma(s)^2); mean soft-clamped to [-1, 1], log-std to [-5, 0] (the authors' GaussMLP)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim)

    def dist(self, obs: torch.Tensor) -> Normal:
        mu, log_std = self.net(obs).chunk(2, -1)
        # validate_args=False: the argument checks would read tensors on the host inside the update (--compile)
        return Normal(torch.tanh(mu), (-5.0 + 2.5 * (torch.tanh(log_std) + 1.0)).exp(), validate_args=False)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.dist(obs).log_prob(act).sum(-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs).chunk(2, -1)[0])


# ----------------------------------------------------------------------------------------------
# Data: SARSA needs the dataset's next action
# ----------------------------------------------------------------------------------------------
def sarsa_rows(episode_starts: np.ndarray, episode_lengths: np.ndarray, terminals: np.ndarray):
    """(rows, next_rows): the transitions usable for SARSA and the row of each one's next action a'.
    An episode's last transition has no a' in the data: kept if terminal (a' is never used), else dropped."""
    n = len(terminals)
    last = np.zeros(n, dtype=bool)
    last[episode_starts + episode_lengths - 1] = True
    next_rows = np.where(last, np.arange(n), np.arange(n) + 1)
    rows = np.flatnonzero(~last | (terminals > 0))
    return rows, next_rows


# ----------------------------------------------------------------------------------------------
# Losses (one per phase of the paper)
# ----------------------------------------------------------------------------------------------
def bc_loss(log_prob: torch.Tensor) -> torch.Tensor:
    """L_beta = -E[log beta(a|s)]  (phase 1, maximum likelihood)."""
    return -log_prob.mean()


def sarsa_loss(q: torch.Tensor, rew: torch.Tensor, done: torch.Tensor, next_q: torch.Tensor,
               gamma: float) -> torch.Tensor:
    """L_Q = E[(r + gamma (1 - d) Qbar(s', a') - Q(s, a))^2]  (phase 2); next_q = Qbar(s', a') at the DATASET a'."""
    target = (rew + gamma * (1.0 - done) * next_q).detach()
    return ((q - target) ** 2).mean()


def advantage(q_data: torch.Tensor, q_samples: torch.Tensor) -> torch.Tensor:
    """A(s, a) = Q(s, a) - (1/N) sum_j Q(s, a_j), a_j ~ beta; q_data [B], q_samples [N, B]."""
    return q_data - q_samples.mean(0)


def exp_weight_loss(log_prob: torch.Tensor, adv: torch.Tensor, tau: float, max_weight: float) -> torch.Tensor:
    """L_pi = -E[min(exp(tau A(s, a)), max_weight) log pi(a|s)]  (phase 3, exponentially weighted)."""
    weight = torch.exp(tau * adv.detach()).clamp(max=max_weight)
    return -(weight * log_prob).mean()


def reverse_kl_loss(q_pi: torch.Tensor, log_pi: torch.Tensor, log_beta: torch.Tensor, alpha: float) -> torch.Tensor:
    """L_pi = E[-Q(s, a~) + alpha (1/N) sum_j (log pi(a_j|s) - log beta(a_j|s))]  (phase 3, reverse KL);
    q_pi [B] at a~ ~ pi, log_pi and log_beta [N, B] at a_j ~ pi (all reparameterized)."""
    return (-q_pi + alpha * (log_pi - log_beta).mean(0)).mean()


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    state = None
    if args.resume is not None:
        state = load_run_checkpoint(args.resume, "onestep")
        saved_phases = json.loads(state["args"])  # phases given as fractions of --total-steps fix its length
        fixed = None if saved_phases.get("bc_steps") is not None and saved_phases.get("q_steps") is not None else \
            "its phases are fractions of --total-steps (a run with --bc-steps and --q-steps set can be extended)"
        args = resumed_args(Args, args, "onestep", state, fixed_length=fixed)  # the run's own settings
    check_args(args)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    bc_end, q_end = phase_ends(args)

    # Data: raw rewards; each usable transition's next dataset action for the SARSA target.
    data = load_dataset(args.dataset, download=args.download, continuous=True)
    evaluator = Evaluator(data, args, "onestep")  # says at start if it cannot evaluate or score
    buffer = Buffer.from_dataset(data, device=device, seed=args.seed)
    rows, next_rows = sarsa_rows(data.episode_starts, data.episode_lengths, data.terminals)
    rows, next_actions = torch.as_tensor(rows, device=device), buffer.actions[torch.as_tensor(next_rows, device=device)]

    behaviour = GaussianPolicy(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q = QNet(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target = QNet(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    policy = GaussianPolicy(data.obs_dim, data.act_dim, args.hidden_dim).to(device)
    beta_opt = adam(behaviour.parameters(), args.actor_lr, device)
    q_opt = adam(q.parameters(), args.critic_lr, device)
    pi_opt = adam(policy.parameters(), args.actor_lr, device)

    step, evals = 0, []
    if state is not None:
        try:
            for name, obj in (("behaviour", behaviour), ("q", q), ("q_target", q_target), ("policy", policy),
                              ("beta_opt", beta_opt), ("q_opt", q_opt), ("pi_opt", pi_opt), ("buffer", buffer)):
                obj.load_state_dict(state[name])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{args.resume}: checkpoint does not match this script's networks ({e})") from e
        set_rng_state(state["rng"])
        step, evals = int(state["step"]), json.loads(state["evals"])
    run_dir = Path(args.resume) if args.resume else Path(args.runs_dir) / run_name("onestep", args.dataset, args.seed)
    run = Run(run_dir, args, "onestep", args.total_steps, step, args.track, progress=args.progress)
    run.write_json("args.json", dataclasses.asdict(args))

    def sample(batch_size: int):
        """A minibatch of SARSA-usable transitions, drawn with the buffer's own (checkpointed) generator."""
        i = rows[torch.randint(0, len(rows), (batch_size,), device=device, generator=buffer.generator)]
        return buffer.obs[i], buffer.actions[i], buffer.rewards[i], buffer.next_obs[i], next_actions[i], buffer.dones[i]

    # One update function per phase (each compiled and captured on its own with --compile), each drawing its minibatch.
    def bc_update() -> dict[str, torch.Tensor]:
        obs, act, *_ = sample(args.batch_size)
        loss = bc_loss(behaviour.log_prob(obs, act))
        beta_opt.zero_grad(set_to_none=True)
        loss.backward()
        beta_opt.step()
        return {"loss/bc": loss}

    def q_update(target: bool) -> dict[str, torch.Tensor]:
        obs, act, rew, next_obs, next_act, done = sample(args.batch_size)
        with torch.no_grad():
            next_q = q_target(next_obs, next_act)
        q_sa = q(obs, act)
        loss = sarsa_loss(q_sa, rew, done, next_q, args.gamma)
        q_opt.zero_grad(set_to_none=True)
        loss.backward()
        q_opt.step()
        if target:  # every target_update_every Q updates (the authors' target_update_freq: every 2nd)
            with torch.no_grad():
                torch._foreach_lerp_(list(q_target.parameters()), list(q.parameters()), args.tau)
        return {"loss/q": loss, "q_data": q_sa.detach().mean()}

    def pi_update() -> dict[str, torch.Tensor]:
        obs, act, *_ = sample(args.batch_size)
        if args.improvement == "exp_weight":
            with torch.no_grad():
                samples = behaviour.dist(obs).sample((args.num_action_samples,))  # [N, B, act]
                adv = advantage(q(obs, act), q(obs.expand(args.num_action_samples, -1, -1), samples))
            loss = exp_weight_loss(policy.log_prob(obs, act.clamp(-1 + 1e-4, 1 - 1e-4)), adv,
                                   args.inverse_temperature, args.max_weight)
            metrics = {"adv_mean": adv.mean(), "adv_std": adv.std()}
        else:
            dist = policy.dist(obs)
            a_pi, a_kl = dist.rsample(), dist.rsample((args.num_action_samples,))
            q_pi = q(obs, a_pi)
            loss = reverse_kl_loss(q_pi, dist.log_prob(a_kl).sum(-1), behaviour.log_prob(obs, a_kl),
                                   args.regularizer_weight)
            metrics = {"q_pi": q_pi.detach().mean()}
        pi_opt.zero_grad(set_to_none=True)
        loss.backward()
        pi_opt.step()
        return {"loss/actor": loss} | metrics

    def current_policy() -> GaussianPolicy:
        return policy if step > q_end else behaviour  # pi exists from the first improvement update on

    def policy_fn(obs: np.ndarray) -> np.ndarray:
        return policy_function(current_policy(), device)(obs)

    def save() -> None:
        save_checkpoint(run_dir / "checkpoint.pt", {
            "behaviour": behaviour.state_dict(), "q": q.state_dict(), "q_target": q_target.state_dict(),
            "policy": policy.state_dict(), "beta_opt": beta_opt.state_dict(), "q_opt": q_opt.state_dict(),
            "pi_opt": pi_opt.state_dict(), "buffer": buffer.state_dict(),
            "rng": rng_state(), "step": step, "evals": json.dumps(evals),
            "algo": "onestep", "args": json.dumps(dataclasses.asdict(args)),
            "obs_dim": data.obs_dim, "act_dim": data.act_dim})

    for net in (behaviour, q):  # fixed in phase 3 (a resumed run may start there), which differentiates through them
        net.requires_grad_(step < q_end)
    bc_update_fn, q_update_fn, pi_update_fn = (fast_update(f, device, args.compile, generators=[buffer.generator])
                                               for f in (bc_update, q_update, pi_update))  # --compile: common/fast.py
    start_time, start_step = time.time(), step
    with StopSignal() as stop:  # Ctrl-C or SIGTERM: finish the update, checkpoint, say how to resume
        while step < args.total_steps:
            if step < bc_end:
                metrics = bc_update_fn()
            elif step < q_end:
                metrics = q_update_fn(target=(step - bc_end + 1) % args.target_update_every == 0)
            else:
                if step == q_end:  # one step of improvement, starting from beta, against the fixed Q^beta
                    policy.load_state_dict(behaviour.state_dict())
                    behaviour.requires_grad_(False)
                    q.requires_grad_(False)
                metrics = pi_update_fn()
            step += 1
            if step % args.log_every == 0:
                run.log(step, {k: v.item() for k, v in metrics.items()}
                        | {"phase": 1 if step <= bc_end else 2 if step <= q_end else 3,
                           "updates_per_s": (step - start_step) / (time.time() - start_time)})
                run.advance(args.log_every)
            if step == args.total_steps:
                save()  # the final checkpoint comes before the final evaluation: a failure there loses nothing
            if evaluator.due(step, evals):
                evals.append(evaluator(policy_fn, step, run))
            if run.checkpoint_due(step) or stop:
                save()
            if stop:
                run.close()
                raise stop.exit(resume_command(__file__, run_dir), step)
    if evaluator.due(step, evals):  # resumed from a final checkpoint whose evaluation did not finish
        evals.append(evaluator(policy_fn, step, run))
        save()
    run.advance(step - run.progress.n)
    final = evals[-1] if evals else {"score": None, "return": None}  # no evaluation: losses only
    result = {"algo": "onestep", "dataset": args.dataset, "seed": args.seed, "steps": step,
              "final_score": final["score"], "final_return": final["return"], "evals": evals,
              "updates_per_s": (step - start_step) / max(time.time() - start_time, 1e-9),
              "train_metrics": run.training_metrics(),
              "git_commit": git_commit(), "args": dataclasses.asdict(args)}
    run.write_json("result.json", result)
    run.close()
    shown = ("no evaluation" if final["return"] is None else f"final return {final['return']:.1f}"
             if final["score"] is None else f"final score {final['score']:.1f} ({final['return']:.1f})")
    print(f"onestep {args.dataset} seed {args.seed}: {shown} after {step} updates -> {run_dir}")
    return result


# ----------------------------------------------------------------------------------------------
# The trained policy, for tools and users: observations -> actions
# ----------------------------------------------------------------------------------------------
class DeterministicPolicy(nn.Module):
    """What evaluation runs, as one module on tensors: observations [n, obs_dim] -> the policy's mean actions
    [n, act_dim], clipped to [-1, 1]. Its forward is the whole policy, so it exports as it is (benchmarks/export.py)."""

    def __init__(self, policy: GaussianPolicy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.act(obs).clamp(-1, 1)


def policy_function(policy: GaussianPolicy, device: torch.device) -> Callable[[np.ndarray], np.ndarray]:
    """What evaluation runs: float32 observations [n, obs_dim] -> deterministic actions [n, act_dim] in [-1, 1]
    (`.module`: the same policy as one nn.Module on tensors, a DeterministicPolicy)."""
    module = DeterministicPolicy(policy)

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(obs, dtype=torch.float32, device=device)).cpu().numpy()
    act.module = module
    return act


def load_policy(run_dir: str | Path, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """The policy of a run folder's checkpoint, as `policy_function` returns it (`.module`: one nn.Module): pi once
    the improvement phase has begun, else beta, as the run evaluates."""
    state = load_policy_checkpoint(run_dir, "onestep")
    args = Args(**upgrade_args("onestep", json.loads(state["args"])))
    policy = GaussianPolicy(state["obs_dim"], state["act_dim"], args.hidden_dim).to(device)
    policy.load_state_dict(state["policy" if int(state["step"]) > phase_ends(args)[1] else "behaviour"])
    return policy_function(policy.eval(), torch.device(device))


if __name__ == "__main__":
    try:
        train(tyro.cli(Args))
    except (ArgumentError, CheckpointError, DatasetError) as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
    except OSError as e:  # a full disk or a vanished folder while writing logs or results
        raise SystemExit(f"error: {e.strerror or e}: {e.filename}" if e.filename else f"error: {e}")
