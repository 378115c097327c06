"""Where a trained BCQ policy's actions come from: its acting rule taken apart, each part evaluated.

    python benchmarks/bcq_probe.py runs/bcq__stitch-hopper-medium-replay-v0__s0__.../ \
        --out benchmarks/results/bcq_probe_hopper_mr_s0.json

Evaluates, on the run's dataset environment with the evaluation seeds, the policy as the script acts
(`load_policy`: 100 fixed latents, perturbed, the best by Q_1), the same with other fixed latent sets, with fresh
latents at every step (the authors' acting), and the VAE's decoder at z = 0 alone (no perturbation, no Q). If only
the rules that choose by Q fail, the critic's choice among the candidates is what fails, not the latents.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import algorithms.bcq as bcq  # noqa: E402
from common.data import load_dataset  # noqa: E402
from common.evaluation import evaluate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a bcq.py run folder")
    p.add_argument("--episodes", type=int, default=5)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    saved = json.loads((Path(args.run) / "args.json").read_text())
    data = load_dataset(saved["dataset"])
    m = bcq.load_policy(args.run).module
    n = saved["num_eval_action_samples"]

    def returns(policy) -> float:
        def act(obs: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return policy(torch.as_tensor(obs, dtype=torch.float32)).clamp(-1, 1).numpy()
        return float(evaluate(act, data.env_spec, args.episodes, seed=saved["seed"]).mean())

    def fresh(obs: torch.Tensor) -> torch.Tensor:  # new latents at every step
        rep, act = bcq.candidates(obs, m.vae.sample_latent(len(obs) * n, obs.device), m.vae, m.perturb)
        return bcq.select_action(m.q(rep, act)[0].view(-1, n), act.view(-1, n, act.shape[-1]))

    torch.manual_seed(0)
    out = {"run": Path(args.run).name, "episodes": args.episodes, "returns": {
        "as_the_script_acts": returns(m),
        **{f"fixed_latents_seed_{s}": returns(bcq.BCQPolicy(m.vae, m.perturb, m.q, n, s).eval())
           for s in (1000, 1001, 1002)},
        "fresh_latents_per_step": returns(fresh),
        "vae_decoder_at_z0": returns(lambda obs: m.vae.decode(obs, torch.zeros(len(obs), m.vae.latent_dim))),
    }}
    out["scores"] = {k: float(data.normalized_score([v])[0]) for k, v in out["returns"].items()}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
