"""algorithms/td3_bc.py: the public policy of a finished run."""

from __future__ import annotations

from pathlib import Path

from algorithms import td3_bc
from common.data import load_dataset
from common.evaluation import evaluate


def test_load_policy_replays_the_final_evaluation(tiny_hopper, tmp_path):
    # observations are normalized (the default): load_policy must apply the statistics saved in the checkpoint
    args = td3_bc.Args(dataset=tiny_hopper, total_steps=20, eval_every=20, eval_episodes=2, log_every=10,
                       hidden_dim=32, batch_size=32, runs_dir=str(tmp_path / "runs"), progress=False)
    result = td3_bc.train(args)
    (run_dir,) = Path(args.runs_dir).iterdir()
    policy = td3_bc.load_policy(run_dir)
    assert isinstance(policy.module.actor, td3_bc.Actor)
    returns = evaluate(policy, load_dataset(args.dataset).env_spec, args.eval_episodes, seed=args.seed)
    assert float(returns.mean()) == result["final_return"]
