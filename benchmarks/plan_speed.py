"""Seconds tt's planner takes per environment step, with and without its key-value cache.

    OMP_NUM_THREADS=2 python benchmarks/plan_speed.py --steps 1 --out plan_speed.json
    OMP_NUM_THREADS=2 python benchmarks/plan_speed.py --steps 1 --no-cache --out plan_speed_nocache.json

An untrained TrajectoryGPT of tt's default size for Hopper (11 observation and 3 action dimensions: 16 tokens per
transition) plans with tt's default planner (beam 128, horizon 15, n_expand 2, context 5 transitions) for one
episode whose context already holds 5 transitions of random tokens (the steady state: the window the model reads
is full). Planning costs the same whatever the weights, so no training or dataset is needed. Writes a JSON with
the seconds of each step, their mean, the settings, the machine's thread count, its CPU and its load average
before and after (other work on the cores slows every step: run it on an idle machine).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from algorithms import tt  # noqa: E402
from benchmarks.speed import cpu_name  # noqa: E402


@dataclasses.dataclass
class Options:
    steps: int = 1
    """Environment steps to plan (each replans from scratch)."""
    cache: bool = True
    """Plan with the key-value cache (--no-cache: re-read the whole window for every token, as the authors do)."""
    obs_dim: int = 11
    act_dim: int = 3
    beam_width: int = tt.Args.beam_width
    horizon: int = tt.Args.horizon
    episodes: int = 1
    """Episodes planned at once (evaluation plans all of its running episodes in one batch)."""
    seed: int = 0
    out: str | None = None
    """JSON file to write (default: print only)."""


def main(opt: Options) -> dict:
    torch.manual_seed(opt.seed)
    args = tt.Args(beam_width=opt.beam_width, horizon=opt.horizon, seed=opt.seed)
    big = opt.obs_dim + opt.act_dim + 2
    model = tt.TrajectoryGPT(big, args.n_bins, args.sequence_length * big - 1, args.hidden_dim, args.n_layers,
                             args.n_heads, args.dropout).eval()
    edges = torch.linspace(-1, 1, args.n_bins + 1)[:, None].repeat(1, big)
    planner = tt.Planner(model, tt.Discretizer(edges), opt.obs_dim, opt.act_dim, args)
    planner.settings["cache"] = opt.cache
    policy = tt.PlanningPolicy(planner, args.max_context_transitions, opt.seed, torch.device("cpu"))
    policy.reset(opt.episodes)
    policy.context = torch.randint(0, args.n_bins, (opt.episodes, args.max_context_transitions * big))
    rng = np.random.default_rng(opt.seed)
    load_before = os.getloadavg()[0]
    seconds = []
    for _ in range(opt.steps):
        start = time.perf_counter()
        policy(rng.uniform(-1, 1, (opt.episodes, opt.obs_dim)).astype(np.float32))
        seconds.append(time.perf_counter() - start)
        policy.observe(np.zeros(opt.episodes, np.float32), np.zeros(opt.episodes, bool))
        print(f"step {len(seconds)}: {seconds[-1]:.2f} s", flush=True)
    result = {"plan_s_per_step": float(np.mean(seconds)), "seconds": seconds, "options": dataclasses.asdict(opt),
              "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
              "torch": torch.__version__, "cpu": cpu_name(),
              "cpu_count": os.cpu_count(), "load_avg_1min_before": load_before,
              "load_avg_1min_after": os.getloadavg()[0]}
    print(json.dumps(result))
    if opt.out:
        Path(opt.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main(tyro.cli(Options))
