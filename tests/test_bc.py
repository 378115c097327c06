"""algorithms/bc.py: the policy of a finished run, loaded from its folder, acts as the run evaluated it."""

from __future__ import annotations

from algorithms import bc
from common.data import load_dataset
from common.evaluation import evaluate


def test_load_policy_replays_the_final_evaluation(tiny_hopper, tmp_path):
    # 50%BC: the normalization statistics are those of the kept episodes, which load_policy must take from the run
    args = bc.Args(dataset=tiny_hopper, total_steps=20, eval_every=20, eval_episodes=2, log_every=10,
                   top_fraction=0.5, batch_size=64, hidden_dim=32, runs_dir=str(tmp_path / "runs"), progress=False)
    result = bc.train(args)
    (run_dir,) = (tmp_path / "runs").iterdir()
    policy = bc.load_policy(run_dir)
    assert isinstance(policy.module.actor, bc.Actor)
    returns = evaluate(policy, load_dataset(tiny_hopper).env_spec, args.eval_episodes, seed=args.seed)
    assert float(returns.mean()) == result["final_return"]
