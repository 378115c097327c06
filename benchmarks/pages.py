"""The generated parts of the documentation: README.md's algorithm table and run times, and benchmarks/RESULTS.md.

    python benchmarks/pages.py            # rewrite them from the committed results
    python benchmarks/pages.py --check    # exit 1, naming the page, when either is stale (tests/test_readme.py)

Nothing a page shows as a result is typed by hand. The sources are the results files committed under
`benchmarks/results/` (`git ls-files`, so a file not yet added does not count): run_grid.py's `.jsonl` records,
speed.py's `speed_*.json`, and the `.md` reports that benchmarks/report.py wrote from them.

README.md: the text between `<!-- generated: NAME -->` and `<!-- /generated -->` is replaced; the rest is the
README's own. NAME is one of
  quickstart   the one-minute first command and how long it and the default run take on CPU (and GPU, once a
               speed file measured one);
  algorithms   one row per script in algorithms/: its algorithm and paper (from its docstring), family, its best
               final score on the suite (the best cell, mean over seeds, of the committed results), its eager
               updates/s and what its default number of updates takes at that rate.

benchmarks/RESULTS.md is rendered from `benchmarks/RESULTS.src.md`, which holds the page's prose (the findings,
the commands that made each table). In it
  <!-- include results/X.md -->     inserts a report written by benchmarks/report.py (links rebased);
  <!-- speed results/X.json -->     the speed table of a speed.py file (report.py's speed_table);
  <!-- flops results/X.json -->     the FLOP table of a benchmarks/peers/flops.py file;
  <!-- dated -->                    under a heading: the commits of the runs and the files whose numbers the
                                    section quotes, found while rendering it;
  {{ expression }}                  a number from a committed file, through the helpers in `Source` below:
                                    final / late / best / at / seeds / wall_min (a cell or one run of a results
                                    file), value (a field of a JSON file), lengths (episode lengths in a coverage
                                    file), mean, fmt. Floats print with one
                                    decimal, integers with thousands separators, unless passed through fmt.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks import EVALUATORS  # noqa: E402
from benchmarks.report import best_score, late_score, speed_table, variant_of  # noqa: E402

RESULTS_DIR = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
RESULTS_PAGE = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_SOURCE = ROOT / "benchmarks" / "RESULTS.src.md"
GENERATED = re.compile(r"(<!-- generated: ([\w-]+) -->\n)(.*?)(<!-- /generated -->)", re.S)

# Where a script's speed comes from: the first of these (committed) files that measured it, eager updates/s at the
# script's default sizes. Files measured on a GPU are found by their "device" field.
CPU_SPEED_FILES = ["speed_cpu_compile.json", "speed_cpu_peers.json", "speed_cpu.json"]
# The one-minute first command: this script on its default dataset, with as many thousand updates as take at most
# QUICK_SECONDS at its measured CPU rate.
QUICK_SCRIPT, QUICK_SECONDS = "iql", 40

# The family of each script, for the README's table (a script missing here shows "—"; add its line).
FAMILIES = {
    "bc": "imitation", "bc_discrete": "imitation",
    "td3_bc": "policy constraint", "bcq": "policy constraint", "bcq_discrete": "policy constraint",
    "bear": "policy constraint", "brac": "policy constraint", "spibb": "policy constraint",
    "cql": "conservative critic", "cql_discrete": "conservative critic",
    "iql": "in-sample value", "sql": "in-sample value", "eql": "in-sample value", "xql": "in-sample value",
    "awr": "weighted regression", "awac": "weighted regression", "crr": "weighted regression",
    "onestep": "one-step",
    "cal_ql": "offline-to-online",
    "mopo": "model-based", "combo": "model-based",
    "dt": "sequence model", "tt": "sequence model",
    "diffuser": "sequence model",
}
VENUES = r"NeurIPS|ICLR|ICML|CoRL|AAAI|IJCAI|AISTATS|UAI|JMLR|TMLR|Nature|Science|L4DC"


# ----------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------


def committed(pattern: str) -> list[Path]:
    """Files under benchmarks/results/ matching `pattern` that git tracks (all matches outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", f"benchmarks/results/{pattern}"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
        return sorted(ROOT / p for p in out.split("\0") if p and "/" not in p[len("benchmarks/results/"):])
    except (OSError, subprocess.CalledProcessError):
        return sorted(RESULTS_DIR.glob(pattern))


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclasses.dataclass
class Script:
    name: str
    title: str          # the docstring's first line
    paper: str          # "Kostrikov et al., ICLR 2022 (arXiv:2110.06169)"
    total_steps: int    # Args.total_steps's default


def paper_of(doc: str) -> str:
    """First author, venue and year, arXiv id of the paper a script's docstring cites first."""
    m = re.search(r"arXiv:(\d{4}\.\d{4,5})", doc)
    if not m:
        return "—"
    paras = doc.split("\n\n")
    para = next(p for p in paras if m.group(0) in p)
    before = para[:para.index(m.group(0))]
    author = re.match(r"\s*([A-Z][\w'-]+),", para) or re.search(r"([A-Z][\w'-]+) et al\.", before)
    venue = list(re.finditer(rf"\b({VENUES})\s+((?:19|20)\d\d)\b", before))
    years = r"\b((?:19|20)\d\d)\b"  # before the arXiv id, else the first after it ("arXiv:2006.09359, 2020.")
    year = list(re.finditer(years, before)) or list(re.finditer(years, para[len(before) + len(m.group(0)):]))[:1]
    when = f"{venue[-1].group(1)} {venue[-1].group(2)}" if venue else (year[-1].group(1) if year else "")
    who = f"{author.group(1)} et al." if author else ""
    head = ", ".join(x for x in (who, when) if x)
    return f"{head} ({m.group(0)})" if head else m.group(0)


def scripts() -> list[Script]:
    """Every script in algorithms/ that trains a policy, read from its source (nothing is imported)."""
    out = []
    for path in sorted((ROOT / "algorithms").glob("*.py")):
        if path.name.startswith("_") or path.stem in EVALUATORS:
            continue
        tree = ast.parse(path.read_text())
        doc = ast.get_docstring(tree) or path.stem
        steps = 0
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == "Args":
                for f in node.body:
                    if (isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)
                            and f.target.id == "total_steps" and isinstance(f.value, ast.Constant)):
                        steps = int(f.value.value)
        title = doc.splitlines()[0].rstrip(".")
        out.append(Script(path.stem, title, paper_of(doc), steps))
    return out


def all_records() -> list[dict]:
    """Every committed run record, each run once: peers.jsonl copies cells of other files (`--reuse`), so a run
    is keyed by its variant, dataset and seed, and the first file (by name) that holds it wins."""
    seen, out = set(), []
    for path in committed("*.jsonl"):
        for rec in read_records(path):
            key = (variant_of(rec), rec["dataset"], rec["seed"])
            if key not in seen:
                seen.add(key)
                out.append({**rec, "_file": path.name})
    return out


def speed_files() -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in committed("speed_*.json")]


def cpu_speed(algo: str, files: list[tuple[Path, dict]]) -> tuple[float, Path, dict] | None:
    by_name = {p.name: (p, rec) for p, rec in files}
    for name in CPU_SPEED_FILES:
        if name in by_name and algo in by_name[name][1]["updates_per_s"]:
            p, rec = by_name[name]
            return rec["updates_per_s"][algo], p, rec
    return None


def gpu_speeds(files: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    return [(p, rec) for p, rec in files if str(rec.get("device", "")).startswith("cuda")]


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def short_dataset(d: str) -> str:
    return d.removeprefix("stitch/").removesuffix("-v0")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


# ----------------------------------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------------------------------


def best_cell(algo: str, records: list[dict]) -> tuple[str, set[str]] | None:
    """The algorithm's best cell on the suite (highest mean final score over seeds) as table text."""
    cells: dict = {}
    for r in records:
        if r["algo"] == algo and r["dataset"].startswith("stitch/"):
            cells.setdefault((variant_of(r), r["dataset"]), []).append(r)
    if not cells:
        return None
    (variant, dataset), runs = max(cells.items(), key=lambda kv: (np.mean([r["final_score"] for r in kv[1]]),
                                                                 len(kv[1])))
    scores = [r["final_score"] for r in runs]
    spread = f" ± {np.std(scores):.1f}" if len(scores) > 1 else ""
    flags = f", `{' '.join(variant.flags)}`" if variant.flags else ""
    text = (f"{np.mean(scores):.1f}{spread} ({short_dataset(dataset)}, {variant.total_steps // 1000:,}k updates, "
            f"{len(scores)} seed{'s' if len(scores) > 1 else ''}{flags})")
    return text, {r["_file"] for r in runs}


def algorithms_section() -> str:
    records, files = all_records(), speed_files()
    gpus = gpu_speeds(files)
    rows, used_results, used_speed = [], set(), set()
    header = "| script | algorithm | family | paper | best score on the suite | CPU updates/s | default run, CPU |"
    sep = "|---|---|---|---|---|---:|---:|"
    if gpus:
        header = header[:-1] + "| GPU updates/s |"
        sep += "---:|"
    for s in scripts():
        best = best_cell(s.name, records)
        if best:
            used_results |= best[1]
        speed = cpu_speed(s.name, files)
        if speed:
            used_speed.add(speed[1].name)
        ups = f"{speed[0]:.0f}" if speed else "—"
        default = f"{duration(s.total_steps / speed[0])} ({s.total_steps / 1e6:g}M updates)" if speed else "—"
        row = (f"| [`{s.name}.py`](algorithms/{s.name}.py) | {s.title} | {FAMILIES.get(s.name, '—')} | {s.paper} | "
               f"{best[0] if best else '—'} | {ups} | {default} |")
        if gpus:
            rates = [rec["updates_per_s"].get(s.name) for _, rec in gpus]
            rates = [r for r in rates if r]
            row = row[:-1] + f"| {max(rates):.0f} |" if rates else row[:-1] + "| — |"
        rows.append(row)
    cpu = next((rec for name in CPU_SPEED_FILES for p, rec in files if p.name == name), None)
    where = f"{cpu['device_name']}, {cpu['threads']} threads" if cpu else "CPU"
    notes = [
        "",
        "Best score: the highest final normalized score × 100 (0 random, 100 expert) of any cell the script has in "
        "the committed results, mean ± std over its seeds, with the dataset, the number of updates and any flags "
        "that differ from the defaults (runs are shorter than the papers' 1M updates: compare rows only on the "
        "same dataset and budget; every table is in [benchmarks/RESULTS.md](benchmarks/RESULTS.md)). "
        "— : no results committed yet.",
        f"CPU updates/s: training alone (no evaluation), default sizes, eager, on {where}; the default run's time is "
        "its default number of updates at that rate, evaluations not included. From "
        + (", ".join(f"`benchmarks/results/{n}`" for n in CPU_SPEED_FILES if n in used_speed) or "no speed file")
        + (f"; GPU from {', '.join(f'`{rel(p)}`' for p, _ in gpus)}." if gpus else
           ". No GPU speed has been measured yet (`benchmarks/gpu_check.sh` measures it on a CUDA machine)."),
        f"Scores from {', '.join(f'`benchmarks/results/{f}`' for f in sorted(used_results)) or 'no results file'}.",
    ]
    return "\n".join([header, sep, *rows, *notes])


def quickstart_section() -> str:
    files = speed_files()
    script = next(s for s in scripts() if s.name == QUICK_SCRIPT)
    speed = cpu_speed(QUICK_SCRIPT, files)
    if not speed:
        raise SystemExit(f"error: no CPU speed of {QUICK_SCRIPT} in {', '.join(CPU_SPEED_FILES)}")
    ups, path, rec = speed
    steps = max(1000, int(QUICK_SECONDS * ups) // 1000 * 1000)
    build = [json.loads(p.read_text()) for p in committed("build_speed_*.json")]
    build_text = ""
    if build and build[0].get("builds"):
        b = build[0]["builds"][0]
        build_text = (f", plus building the dataset the first time (a {b['steps'] / 1e6:g}M-step level takes "
                      f"{b['wall_min_per_1M_steps'] * b['steps'] / 1e6:.1f} min with {build[0]['workers']} workers, "
                      f"`{rel(committed('build_speed_*.json')[0])}`)")
    gpus = [(p, r) for p, r in gpu_speeds(files) if QUICK_SCRIPT in r["updates_per_s"]]
    gpu_text = ("On a GPU: no speed has been measured yet, so no time is given (`--device cuda`; "
                "`--compile` captures the whole update as one CUDA graph there).") if not gpus else (
        "On a GPU ({}): {} updates/s, so the default run takes {} (`{}`).".format(
            gpus[0][1]["device_name"], f"{gpus[0][1]['updates_per_s'][QUICK_SCRIPT]:.0f}",
            duration(script.total_steps / gpus[0][1]["updates_per_s"][QUICK_SCRIPT]), rel(gpus[0][0])))
    return "\n".join([
        "```bash",
        f"python algorithms/{QUICK_SCRIPT}.py --total-steps {steps} --eval-every {steps // 2}   # about a minute",
        f"python algorithms/{QUICK_SCRIPT}.py                                  # the paper's run: "
        f"{script.total_steps:,} updates",
        "```",
        "",
        f"On a CPU ({rec['device_name']}, {rec['threads']} threads) {QUICK_SCRIPT}.py trains at {ups:.0f} "
        f"updates/s (`{rel(path)}`): the first command's {steps:,} updates take about {duration(steps / ups)}"
        f"{build_text}; the default run's {script.total_steps:,} take about {duration(script.total_steps / ups)}, "
        "evaluations not included. " + gpu_text,
    ])


SECTIONS = {"quickstart": quickstart_section, "algorithms": algorithms_section}


def render_readme(text: str) -> str:
    names = [m.group(2) for m in GENERATED.finditer(text)]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"error: README.md has generated sections {unknown}; known: {sorted(SECTIONS)}")
    return GENERATED.sub(lambda m: f"{m.group(1)}{SECTIONS[m.group(2)]()}\n{m.group(4)}", text)


# ----------------------------------------------------------------------------------------------------------
# RESULTS.md
# ----------------------------------------------------------------------------------------------------------


class Source:
    """The helpers a `{{ ... }}` placeholder may call; each records which files and run commits it read."""

    def __init__(self):
        self.files: dict[str, None] = {}
        self.commits: dict[str, None] = {}
        self._records: dict[str, list[dict]] = {}

    def _path(self, name: str) -> Path:
        path = RESULTS_DIR / name
        if not path.is_file():
            raise SystemExit(f"error: RESULTS.src.md quotes {name}, which is not in benchmarks/results/")
        self.files[name] = None
        return path

    def _runs(self, file: str, algo: str, dataset: str, flags: str = "", seed: int | None = None,
              steps: int | None = None) -> list[dict]:
        name = file if file.endswith(".jsonl") else f"{file}.jsonl"
        if name not in self._records:
            self._records[name] = read_records(self._path(name))
        self.files[name] = None
        dataset = dataset if dataset.startswith(("stitch/", "test/", "mujoco/")) else f"stitch/{dataset}-v0"
        want = tuple(sorted(flags.split()))
        runs = [r for r in self._records[name] if r["algo"] == algo and r["dataset"] == dataset
                and variant_of(r).flags == want and (seed is None or r["seed"] == seed)
                and (steps is None or r["total_steps"] == steps)]
        if not runs or len({r["total_steps"] for r in runs}) > 1:
            raise SystemExit(f"error: RESULTS.src.md: {name} has {len(runs)} runs of {algo} {flags!r} on {dataset}"
                             f"{'' if seed is None else f' seed {seed}'}"
                             + (" with different numbers of updates (give steps=)" if runs else ""))
        for r in runs:
            if r.get("git_commit"):
                self.commits[str(r["git_commit"])[:7]] = None
        return runs

    def final(self, *a, **k) -> float:
        """Final score, mean over the cell's seeds (or of one run with seed=)."""
        return float(np.mean([r["final_score"] for r in self._runs(*a, **k)]))

    def late(self, *a, **k) -> float:
        """Mean of the evaluations in the last 20% of training (report.py's), mean over seeds."""
        return float(np.mean([late_score(r) for r in self._runs(*a, **k)]))

    def best(self, *a, **k) -> float:
        return float(np.mean([best_score(r) for r in self._runs(*a, **k)]))

    def at(self, file: str, algo: str, dataset: str, step: int, **k) -> float:
        """The evaluation at `step`, mean over the cell's seeds (or of one run with seed=)."""
        scores = [e["score"] for r in self._runs(file, algo, dataset, **k) for e in r["evals"] if e["step"] == step]
        if not scores:
            raise SystemExit(f"error: RESULTS.src.md: no evaluation of {algo} on {dataset} at step {step} in {file}")
        return float(np.mean(scores))

    def seeds(self, *a, **k) -> int:
        return len(self._runs(*a, **k))

    def wall_min(self, *a, **k) -> float:
        return float(np.mean([r["wall_time_s"] for r in self._runs(*a, **k)])) / 60

    def value(self, file: str, *keys):
        """A field of a committed JSON file: value("speed_cpu_peers.json", "updates_per_s", "cql")."""
        node = json.loads(self._path(file).read_text())
        for k in keys:
            node = node[k]
        return node

    def lengths(self, file: str, run: str = "") -> list[int]:
        """Episode lengths of the final policies in a benchmarks/coverage.py file, of the runs whose folder
        contains `run` (e.g. "grid/iql__")."""
        runs = [r for r in self.value(file, "runs") if run in r["run"]]
        if not runs:
            raise SystemExit(f"error: RESULTS.src.md: no run matching {run!r} in {file}")
        return [n for r in runs for n in r["lengths"]]

    @staticmethod
    def mean(values) -> float:
        return float(np.mean(list(values)))

    @staticmethod
    def fmt(x, spec: str) -> str:
        return format(x, spec)

    def namespace(self) -> dict:
        names = ["final", "late", "best", "at", "seeds", "wall_min", "value", "lengths", "mean", "fmt"]
        builtins = {"min": min, "max": max, "abs": abs, "round": round, "len": len, "sum": sum, "range": range}
        return {"__builtins__": builtins,
                **{n: getattr(self, n) for n in names}}


def show(x) -> str:
    if isinstance(x, bool) or isinstance(x, str):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            raise SystemExit(f"error: RESULTS.src.md: a placeholder gave {x}")
        return f"{x:.1f}"
    raise SystemExit(f"error: RESULTS.src.md: a placeholder gave {type(x).__name__} {x!r}, not a number")


PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)
DIRECTIVE = re.compile(r"^<!-- (include|speed|flops) (\S+) -->$", re.M)
LINK = re.compile(r"(\]\()([^)\s]+)(\))")


def rebase_links(text: str, src_dir: Path, dst_dir: Path) -> str:
    """Relative links of a report written in `src_dir`, rewritten for a page in `dst_dir`."""
    def fix(m: re.Match) -> str:
        target = m.group(2)
        if re.match(r"[a-z]+:|#|/", target):
            return m.group(0)
        return m.group(1) + Path((src_dir / target).resolve().relative_to(dst_dir.resolve())).as_posix() + m.group(3)
    return LINK.sub(fix, text)


def render_directive(kind: str, target: str, source: Source) -> str:
    path = (RESULTS_SOURCE.parent / target).resolve()
    if not path.is_file():
        raise SystemExit(f"error: RESULTS.src.md: <!-- {kind} {target} --> names no file")
    source.files[path.name] = None
    if kind == "include":
        text = path.read_text().strip()
        return rebase_links(text, path.parent, RESULTS_PAGE.parent)
    if kind == "speed":
        text = speed_table(path)
        return text.replace(f"from `{path}`", f"from `{rel(path)}`")
    from benchmarks.peers.flops import markdown  # argparse and stdlib at import; torch only when measuring

    return markdown(json.loads(path.read_text()), rel(path))


def render_results(template: str) -> str:
    # sections: split before each heading, so a <!-- dated --> line dates the section it sits in
    chunks = re.split(r"(?m)^(?=#{1,4} )", template)
    out = []
    for chunk in chunks:
        source = Source()
        ns = source.namespace()

        def evaluate(m: re.Match) -> str:
            expr = m.group(1).strip()
            try:
                return show(eval(expr, ns))  # noqa: S307 -- the committed page source, helpers only
            except SystemExit:
                raise
            except Exception as e:  # a typo in the page source: name it
                raise SystemExit(f"error: RESULTS.src.md: {{{{ {expr} }}}}: {type(e).__name__}: {e}") from None

        chunk = PLACEHOLDER.sub(evaluate, chunk)
        chunk = DIRECTIVE.sub(lambda m: render_directive(m.group(1), m.group(2), source), chunk)
        if "<!-- dated -->" in chunk:
            files = ", ".join(f"`{f}`" for f in source.files) or "no file"
            dated = (f"*Runs at commit {', '.join(source.commits)}; numbers from {files}.*" if source.commits else
                     f"*Numbers from {files} (which record no run commit).*")
            chunk = chunk.replace("<!-- dated -->", dated)
        out.append(chunk)
    head = ("<!-- Generated by `python benchmarks/pages.py` from benchmarks/RESULTS.src.md and the files in "
            "benchmarks/results/: edit those, not this page. -->\n")
    return head + "".join(out)


# ----------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------


def pages() -> dict[Path, str]:
    """Each generated page's path and its up-to-date text."""
    return {README: render_readme(README.read_text()), RESULTS_PAGE: render_results(RESULTS_SOURCE.read_text())}


@dataclasses.dataclass
class Args:
    check: bool = False
    """Write nothing; exit 1 naming each page whose text differs from what the results give."""


def main(args: Args) -> None:
    stale = []
    for path, text in pages().items():
        old = path.read_text() if path.is_file() else ""
        if old == text:
            continue
        stale.append(rel(path))
        if not args.check:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            print(f"wrote {rel(path)}")
    if args.check and stale:
        raise SystemExit(f"error: {', '.join(stale)} out of date: run python benchmarks/pages.py and commit")
    if not stale:
        print("pages up to date")


if __name__ == "__main__":
    main(tyro.cli(Args))
