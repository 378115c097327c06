"""One vocabulary: every script's flags and logged metrics use the names of CONTRIBUTING.md's tables.

The tables are read from CONTRIBUTING.md and the scripts from their source (ast), so adding a script, a flag or
a metric without its row fails here, and so does a synonym the "Not" column rules out (`--beta`, `--alpha`,
`loss/critic`, ...).
"""

from __future__ import annotations

import ast
import dataclasses
import html
import importlib
import json
import re
from pathlib import Path

import pytest

from benchmarks import all_scripts, training_scripts

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = all_scripts()  # the off-policy evaluators (benchmarks.EVALUATORS) log no training metrics; flags checked
BACKTICKED = re.compile(r"`([^`]+)`")


# ----------------------------------------------------------------------------------------------
# CONTRIBUTING.md's tables
# ----------------------------------------------------------------------------------------------
def table(title: str) -> list[dict[str, str]]:
    """The rows of the markdown table under `### <title>` in CONTRIBUTING.md's Vocabulary section."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert "\n## Vocabulary\n" in text, "CONTRIBUTING.md has no '## Vocabulary' section"
    section = text.split("\n## Vocabulary\n", 1)[1].split(f"\n### {title}\n", 1)
    assert len(section) == 2, f"CONTRIBUTING.md's Vocabulary section has no '### {title}' table"
    lines = [line.strip() for line in section[1].split("\n## ", 1)[0].split("\n### ", 1)[0].splitlines()]
    lines = [line for line in lines if line.startswith("|")]
    header, rows = lines[0], lines[2:]  # lines[1] is the |---| rule

    def cells(line: str) -> list[str]:
        return [html.unescape(c.strip()) for c in line.strip("|").split("|")]

    names = cells(header)
    out = []
    for line in rows:
        values = cells(line)
        assert len(values) == len(names), f"CONTRIBUTING.md: {line!r} has {len(values)} cells, not {len(names)}"
        out.append(dict(zip(names, values)))
    return out


def names_in(cell: str) -> list[str]:
    return BACKTICKED.findall(cell)


def per_script(cell: str) -> dict[str, str]:
    """'cql: alpha; xql: beta' -> {'cql': 'alpha', 'xql': 'beta'}; '—' -> {}."""
    if cell.strip() in ("", "—", "-"):
        return {}
    pairs = [part.split(":", 1) for part in cell.split(";")]
    assert all(len(p) == 2 for p in pairs), f"CONTRIBUTING.md: {cell!r} is not 'script: symbol; ...'"
    return {script.strip(): symbol.strip() for script, symbol in pairs}


def scripts_in(cell: str) -> set[str]:
    return set(SCRIPTS) if cell.strip() == "all" else {s.strip() for s in cell.split(",") if s.strip()}


FLAGS = table("Flags")
METRICS = table("Metrics")
CANONICAL_FLAGS = {name for row in FLAGS for name in names_in(row["Flag"])}
FORBIDDEN_FLAGS: dict[str, list[str]] = {}  # a ruled-out name -> the canonical flags it may have meant
for _row in FLAGS:
    for _name in names_in(_row["Not"]):
        FORBIDDEN_FLAGS.setdefault(_name, []).extend(names_in(_row["Flag"]))
CANONICAL_METRICS = {name for row in METRICS for name in names_in(row["Metric"])}
FORBIDDEN_METRICS = {name: row["Metric"] for row in METRICS for name in names_in(row["Not"])}


# ----------------------------------------------------------------------------------------------
# The scripts, from their source
# ----------------------------------------------------------------------------------------------
def source(script: str) -> ast.Module:
    return ast.parse((ROOT / "algorithms" / f"{script}.py").read_text())


def args_fields(script: str) -> dict[str, str]:
    """{field: docstring} of the script's `Args` dataclass."""
    (cls,) = [n for n in source(script).body if isinstance(n, ast.ClassDef) and n.name == "Args"]
    fields = {}
    for i, node in enumerate(cls.body):
        if isinstance(node, ast.AnnAssign):
            nxt = cls.body[i + 1] if i + 1 < len(cls.body) else None
            doc = nxt.value.value if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) else ""
            fields[node.target.id] = doc
    return fields


def string_keys(node: ast.AST) -> set[str]:
    """String keys of every dict literal inside `node`."""
    return {k.value for d in ast.walk(node) if isinstance(d, ast.Dict)
            for k in d.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def logged_metrics(script: str) -> set[str]:
    """Metric names a script logs: the dict keys that its update functions (`update`, `q_update`, `actor_step`,
    ...) return, that it assigns to a `*metrics` name, or that it passes to a `.log(...)` call; and those that
    common/evaluation.py's `Evaluator` logs, for a script that evaluates with it."""
    keys: set[str] = set()
    tree = source(script)
    if any(isinstance(n, ast.Name) and n.id == "Evaluator" for n in ast.walk(tree)):
        evaluation = ast.parse((ROOT / "common" / "evaluation.py").read_text())
        keys |= {k for n in ast.walk(evaluation) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr == "log" for arg in n.args for k in string_keys(arg)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (
                "update" in node.name or node.name.endswith("_step")):
            for ret in ast.walk(node):
                if isinstance(ret, ast.Return) and ret.value is not None:
                    keys |= string_keys(ret.value)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id.endswith("metrics")
                                                  for t in node.targets):
            keys |= string_keys(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "log":
            for arg in node.args:
                keys |= string_keys(arg)
    return keys


# ----------------------------------------------------------------------------------------------
# The tables themselves
# ----------------------------------------------------------------------------------------------
def test_tables_are_consistent():
    assert len(FLAGS) > 10 and len(METRICS) > 10
    assert not CANONICAL_FLAGS & set(FORBIDDEN_FLAGS), "a flag is both canonical and ruled out"
    assert not CANONICAL_METRICS & set(FORBIDDEN_METRICS), "a metric is both canonical and ruled out"
    for row in FLAGS:
        assert len(names_in(row["Flag"])) == 1, f"one flag per row: {row['Flag']!r}"
        assert set(per_script(row["Papers' symbol, per script"])) <= set(SCRIPTS), row
    for row in METRICS:
        assert len(names_in(row["Metric"])) == 1, f"one metric per row: {row['Metric']!r}"
        assert scripts_in(row["Scripts"]) <= set(SCRIPTS), row


# ----------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", SCRIPTS)
def test_flags_use_the_vocabulary(script):
    fields = args_fields(script)
    bad = {f"--{f.replace('_', '-')} (use {' or '.join(FORBIDDEN_FLAGS[f])}, by meaning)" for f in fields
           if f in FORBIDDEN_FLAGS}
    assert not bad, f"algorithms/{script}.py: non-canonical flags " + ", ".join(sorted(bad))


@pytest.mark.parametrize("row", FLAGS, ids=lambda r: names_in(r["Flag"])[0])
def test_flags_name_the_papers_symbol(row):
    """A flag whose symbol differs between papers is listed with every script that has it, and each of those
    scripts' docstrings names the paper's symbol, so a reader can match the flag to the equation."""
    (flag,) = names_in(row["Flag"])
    symbols = per_script(row["Papers' symbol, per script"])
    if not symbols:
        return
    having = {s for s in SCRIPTS if flag in args_fields(s)}
    assert having == set(symbols), (f"--{flag}: CONTRIBUTING.md lists {sorted(symbols)}, but the scripts that "
                                    f"have it are {sorted(having)}")
    for script, symbol in symbols.items():
        doc = args_fields(script)[flag]
        assert re.search(rf"(?<![\w']){re.escape(symbol)}(?![\w'])", doc), (
            f"algorithms/{script}.py: --{flag}'s docstring {doc!r} does not name the paper's {symbol!r}")


# ----------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", training_scripts())
def test_metrics_use_the_vocabulary(script):
    logged = logged_metrics(script)
    # a generative planner (diffuser) has no actor, Q or cloning loss: its denoising loss is its main metric
    assert {"loss/actor", "loss/bc", "loss/q", "loss/diffusion"} & logged, (
        f"found no metrics in algorithms/{script}.py (the parser is stale?)")
    bad = {f"{m} (use {FORBIDDEN_METRICS[m]})" for m in logged if m in FORBIDDEN_METRICS}
    assert not bad, f"algorithms/{script}.py logs non-canonical metrics " + ", ".join(sorted(bad))
    unknown = logged - CANONICAL_METRICS
    assert not unknown, (f"algorithms/{script}.py logs {sorted(unknown)}, which CONTRIBUTING.md's metrics table "
                         "lacks (add a row, or use an existing name)")
    for row in METRICS:
        (metric,) = names_in(row["Metric"])
        listed = script in scripts_in(row["Scripts"])
        assert listed == (metric in logged), (f"CONTRIBUTING.md says {script} {'logs' if listed else 'does not log'}"
                                              f" {metric!r}, but it {'does not' if listed else 'does'}")


# ----------------------------------------------------------------------------------------------
# Renamed flags: old checkpoints, results and commands keep working
# ----------------------------------------------------------------------------------------------
def test_renamed_flags_are_ruled_out_and_mapped():
    from common.vocabulary import RENAMED

    for script, renames in RENAMED.items():
        fields = args_fields(script)
        for old, new in renames.items():
            assert new in fields and old not in fields, (script, old, new)
            # the old name is ruled out in the new name's row, or is a canonical name whose meaning it did not have
            assert new in FORBIDDEN_FLAGS.get(old, []) or old in CANONICAL_FLAGS, (
                f"{script}: --{old} was renamed --{new}, but CONTRIBUTING.md does not list {old!r} under Not "
                f"in --{new}'s row")


def test_old_saved_args_upgrade():
    from common.vocabulary import RENAMED, upgrade_args

    for script, renames in RENAMED.items():
        module = importlib.import_module(f"algorithms.{script}")
        saved = dataclasses.asdict(module.Args())
        for old, new in renames.items():  # the settings a checkpoint written before the rename holds
            saved[old] = saved.pop(new)
        before = json.loads(json.dumps(saved))
        assert module.Args(**upgrade_args(script, saved)) == module.Args(), script
        assert saved == before, "upgrade_args changed its argument"
        with pytest.raises(TypeError):
            module.Args(**saved)  # what resuming did before the mapping
        assert upgrade_args(script, dataclasses.asdict(module.Args())) == dataclasses.asdict(module.Args())


def test_upgrade_flags():
    from common.vocabulary import upgrade_flags

    assert upgrade_flags("cql", ["--bc-steps=0", "--cql-alpha=10", "--num_actions", "4", "--temp=2"]) == [
        "--bc-steps=0", "--regularizer-weight=10", "--num-action-samples", "4", "--logsumexp-temperature=2"]
    assert upgrade_flags("onestep", ["--temperature=3"]) == ["--inverse-temperature=3"]
    assert upgrade_flags("crr", ["--beta=2", "--temperature=1"]) == ["--temperature=2", "--temperature=1"]
    assert upgrade_flags("d3rlpy_cql", ["--cql-alpha=10"]) == ["--cql-alpha=10"]  # not our script: as it is
    assert upgrade_flags("bc", ["--top-fraction=0.1"]) == ["--top-fraction=0.1"]


@pytest.mark.parametrize("script", sorted(RENAMED_SCRIPTS := ["awac", "awr", "cql", "crr", "eql", "iql", "onestep",
                                                               "sql", "td3_bc", "xql"]))
def test_resume_a_checkpoint_saved_before_the_renames(script, tiny_hopper, tmp_path):
    """A checkpoint whose saved settings hold the old names (written before the renames) still resumes."""
    from common.checkpoints import load_checkpoint, save_checkpoint
    from common.vocabulary import RENAMED

    module = importlib.import_module(f"algorithms.{script}")
    tiny = dict(dataset=tiny_hopper, total_steps=4, eval_every=4, eval_episodes=1, log_every=2, checkpoint_every=4,
                batch_size=8, hidden_dim=8, runs_dir=str(tmp_path / "runs"), progress=False)
    extra = {"cql": dict(bc_steps=2, num_action_samples=2), "onestep": dict(bc_steps=1, q_steps=1),
             "awr": dict(recompute_every=2)}.get(script, {})
    result = module.train(module.Args(**tiny, **extra))
    (run_dir,) = (tmp_path / "runs").iterdir()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    saved = json.loads(state["args"])
    for old, new in RENAMED[script].items():
        saved[old] = saved.pop(new)
    state["args"] = json.dumps(saved)
    save_checkpoint(run_dir / "checkpoint.pt", state)
    resumed = module.train(module.Args(resume=str(run_dir), progress=False))  # finished: trains no further
    assert resumed["evals"] == result["evals"]
    assert resumed["args"] == result["args"] | {"resume": str(run_dir)}  # the new names, the same values


def test_the_resume_test_covers_every_renamed_script():
    from common.vocabulary import RENAMED

    assert set(RENAMED) == set(RENAMED_SCRIPTS)
