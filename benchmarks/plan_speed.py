"""Seconds a planner takes per environment step: tt's beam search (with and without its key-value cache) or
diffuser's guided denoising, on the CPU or a GPU.

    OMP_NUM_THREADS=1 python benchmarks/plan_speed.py --steps 2 --out plan_speed.json
    OMP_NUM_THREADS=1 python benchmarks/plan_speed.py --steps 2 --no-cache --out plan_speed_nocache.json
    python benchmarks/plan_speed.py --algo diffuser --device cuda --steps 5 --out plan_speed_diffuser_cuda.json

tt: an untrained TrajectoryGPT of tt's default size for Hopper (11 observation and 3 action dimensions: 16 tokens per
transition) plans with tt's default planner (beam 128, horizon 15, n_expand 2, context 5 transitions) for episodes
whose context already holds 5 transitions of random tokens (the steady state: the window the model reads is full).
diffuser: an untrained temporal U-Net and value function of diffuser's default size for Hopper plan with its default
sampler (horizon 32, 20 denoising steps, 64 guided plans per state). Planning costs the same whatever the weights, so
no training or dataset is needed. `--episodes` states are planned in one batch, as evaluation plans all its running
episodes at once. Writes a JSON with the seconds of each step, their mean, the mean of those after the first (which also
warms up: allocations, and on a GPU loading kernels), the settings, the machine's thread count, its CPU or GPU and
its load average before and after (other work on the cores slows every step: run it on an idle machine).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from algorithms import diffuser, tt  # noqa: E402
from benchmarks.speed import cpu_name  # noqa: E402


@dataclasses.dataclass
class Options:
    algo: Literal["tt", "diffuser"] = "tt"
    """Whose planner."""
    steps: int = 1
    """Environment steps to plan (each replans from scratch)."""
    cache: bool = True
    """tt: plan with the key-value cache (--no-cache: re-read the whole window for every token, as the authors do)."""
    obs_dim: int = 11
    act_dim: int = 3
    beam_width: int = tt.Args.beam_width
    """tt's beam width."""
    horizon: int | None = None
    """Planning horizon (default: the script's, tt 15 transitions, diffuser 32 steps)."""
    plan_samples: int = diffuser.Args.plan_samples
    """diffuser's guided plans per state."""
    diffusion_steps: int = diffuser.Args.diffusion_steps
    """diffuser's denoising steps."""
    episodes: int = 1
    """Episodes planned at once (evaluation plans all of its running episodes in one batch)."""
    device: str = "cpu"
    """cpu, cuda or cuda:N."""
    seed: int = 0
    out: str | None = None
    """JSON file to write (default: print only)."""


def tt_step(opt: Options, device: torch.device) -> Callable[[np.ndarray], None]:
    """One planning step of tt's PlanningPolicy for opt.episodes running episodes."""
    horizon = tt.Args.horizon if opt.horizon is None else opt.horizon
    args = tt.Args(beam_width=opt.beam_width, horizon=horizon, seed=opt.seed)
    big = opt.obs_dim + opt.act_dim + 2
    model = tt.TrajectoryGPT(big, args.n_bins, args.sequence_length * big - 1, args.hidden_dim, args.n_layers,
                             args.n_heads, args.dropout).to(device).eval()
    edges = torch.linspace(-1, 1, args.n_bins + 1)[:, None].repeat(1, big)
    planner = tt.Planner(model, tt.Discretizer(edges).to(device), opt.obs_dim, opt.act_dim, args)
    planner.settings["cache"] = opt.cache
    policy = tt.PlanningPolicy(planner, args.max_context_transitions, opt.seed, device)
    policy.reset(opt.episodes)
    policy.context = torch.randint(0, args.n_bins, (opt.episodes, args.max_context_transitions * big), device=device)

    def step(obs: np.ndarray) -> None:
        policy(obs)
        policy.observe(np.zeros(opt.episodes, np.float32), np.zeros(opt.episodes, bool))
    return step


def diffuser_step(opt: Options, device: torch.device) -> Callable[[np.ndarray], None]:
    """One planning step of diffuser's Planner for opt.episodes states."""
    horizon = diffuser.Args.horizon if opt.horizon is None else opt.horizon
    args = diffuser.Args(horizon=horizon, plan_samples=opt.plan_samples, diffusion_steps=opt.diffusion_steps,
                         seed=opt.seed)
    d = opt.obs_dim + opt.act_dim
    model = diffuser.TemporalUnet(d, args.hidden_dim, args.dim_mults).to(device).eval()
    value = diffuser.ValueFunction(d, args.horizon, args.hidden_dim, args.dim_mults).to(device).eval()
    stats = {"act_mean": torch.zeros(opt.act_dim), "act_std": torch.ones(opt.act_dim),
             "obs_mean": torch.zeros(opt.obs_dim), "obs_std": torch.ones(opt.obs_dim)}
    planner = diffuser.Planner(model, value, diffuser.Schedule(args.diffusion_steps).to(device),
                               {k: v.to(device) for k, v in stats.items()}, opt.act_dim, args).eval()
    policy = diffuser.policy_function(planner, device)
    return lambda obs: policy(obs)


def main(opt: Options) -> dict:
    if opt.steps < 1 or opt.episodes < 1:
        raise SystemExit("error: --steps and --episodes must be at least 1")
    device = torch.device(opt.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {opt.device}: this torch sees no CUDA device")
    torch.manual_seed(opt.seed)
    step = (tt_step if opt.algo == "tt" else diffuser_step)(opt, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rng = np.random.default_rng(opt.seed)
    load_before = os.getloadavg()[0]
    seconds = []
    for _ in range(opt.steps):
        obs = rng.uniform(-1, 1, (opt.episodes, opt.obs_dim)).astype(np.float32)
        sync()
        start = time.perf_counter()
        step(obs)
        sync()
        seconds.append(time.perf_counter() - start)
        print(f"step {len(seconds)}: {seconds[-1]:.3f} s", flush=True)
    result = {"algo": opt.algo, "plan_s_per_step": float(np.mean(seconds)),
              # the first step also warms up (allocations; on a GPU, loading kernels)
              "plan_s_per_step_after_first": float(np.mean(seconds[1:])) if len(seconds) > 1 else None,
              "seconds": seconds,
              "options": dataclasses.asdict(opt), "device": opt.device,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
              "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "torch": torch.__version__, "cpu": cpu_name(),
              "cpu_count": os.cpu_count(), "load_avg_1min_before": load_before,
              "load_avg_1min_after": os.getloadavg()[0]}
    print(json.dumps(result))
    if opt.out:
        tmp = Path(opt.out).with_name(Path(opt.out).name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, opt.out)
    return result


if __name__ == "__main__":
    main(tyro.cli(Options))
