"""Flags renamed to the project's vocabulary (CONTRIBUTING.md), and their old names for what recorded them.

Checkpoints (their saved `args`), run folders' args.json and results files written before a rename hold the old
names. A script resuming a run reads its saved settings through `upgrade_args`; the benchmark tools read a
results file's flags through `upgrade_flags`. Standard library only: the benchmark driver imports it without
torch.
"""

from __future__ import annotations

# script -> {old field name: new field name}
RENAMED: dict[str, dict[str, str]] = {
    "awac": {"awac_lambda": "temperature"},
    "awr": {"marwil_beta": "inverse_temperature"},
    "cql": {"cql_alpha": "regularizer_weight", "num_actions": "num_action_samples", "temp": "logsumexp_temperature"},
    "crr": {"beta": "temperature"},
    "eql": {"alpha": "regularizer_weight"},
    "iql": {"beta": "inverse_temperature"},
    "onestep": {"temperature": "inverse_temperature", "alpha": "regularizer_weight",
                "n_samples": "num_action_samples"},
    "sql": {"alpha": "regularizer_weight"},
    "td3_bc": {"alpha": "q_weight"},
    "xql": {"gumbel_beta": "regularizer_weight", "beta": "inverse_temperature"},
}
# old metric name -> new, for metrics.jsonl files logged before the rename
RENAMED_METRICS: dict[str, str] = {"loss/q_td": "loss/q", "q_mean": "q_data"}


def upgrade_args(script: str, saved: dict) -> dict:
    """A copy of a script's saved settings (`dataclasses.asdict(args)`) with renamed fields under their new names."""
    renames = RENAMED.get(script, {})
    return {renames.get(k, k): v for k, v in saved.items()}


def upgrade_flags(script: str, flags: list[str]) -> list[str]:
    """Command-line flags (`--cql-alpha=10`, `--num-actions`, ...) of a script with renamed ones under their new
    names; values and other flags as they are."""
    renames = {"--" + old.replace("_", "-"): "--" + new.replace("_", "-")
               for old, new in RENAMED.get(script, {}).items()}
    out = []
    for flag in flags:
        name, eq, value = flag.partition("=")
        name = name.replace("_", "-") if name.startswith("--") else name
        out.append(renames[name] + eq + value if name in renames else flag)
    return out
