"""README.md: its generated parts are up to date, and every command it shows runs, shortened.

Each `python <script> ...` line of the README's shell blocks is checked the way a newcomer would meet it:
the script must exist and accept every flag (tyro's parser, or the script's `--help` for the few that use
argparse); the algorithm scripts then really train with those flags, shortened to a few updates on a tiny
dataset (`--total-steps 20`, one evaluation episode, CPU, no --compile or --track); `--resume runs/<run>` resumes
one of those runs; report.py and pages.py run on the committed results without writing into the checkout. The
Python block that loads a policy runs against a trained run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import tyro
from conftest import ROOT

from benchmarks import pages

README = ROOT / "README.md"
PLACEHOLDER_RUN = re.compile(r"runs/<[^>]*>")


def test_generated_pages_are_up_to_date():
    for path, text in pages.pages().items():
        assert path.read_text() == text, (f"{path.relative_to(ROOT)} is out of date: run `python benchmarks/pages.py` "
                                          "and commit the result")


def test_pages_check_names_a_stale_page(tmp_path, monkeypatch):
    stale = tmp_path / "README.md"
    stale.write_text(README.read_text().replace("<!-- generated: algorithms -->\n",
                                                "<!-- generated: algorithms -->\n| stale |\n"))
    monkeypatch.setattr(pages, "README", stale)
    with pytest.raises(SystemExit, match="README.md out of date"):
        pages.main(pages.Args(check=True))


def blocks(language: str) -> list[str]:
    return [body for lang, body in re.findall(r"```(\w*)\n(.*?)```", README.read_text(), re.S) if lang == language]


def shell_commands() -> list[list[str]]:
    """Every `python ...` command of the README's bash blocks, continuation lines joined, comments dropped."""
    out = []
    for body in blocks("bash"):
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["python"]:
                out.append(words[1:])
    return out


def load(script: Path):
    name = "readme_" + re.sub(r"\W", "_", str(script.relative_to(ROOT)))
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and tyro look the module up by name
    spec.loader.exec_module(module)
    return module


def parse(module, flags: list[str], where: str):
    """The script's Args from the README's flags; None for --help (which tyro answers by exiting 0)."""
    try:
        return tyro.cli(module.Args, args=flags)
    except SystemExit as e:
        if e.code == 0:
            return None
        pytest.fail(f"the README's `python {where} {shlex.join(flags)}` is rejected by the script (exit {e.code})")


def check_with_help(script: Path, flags: list[str], where: str) -> None:
    """A script without a tyro Args: every flag the README gives it must be in its --help."""
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 0, f"`python {where} --help` failed:\n{result.stderr}"
    for flag in [f.split("=")[0] for f in flags if f.startswith("--")]:
        assert flag in result.stdout, f"the README gives `python {where}` the flag {flag}, which it does not know"


def evaluate_shortened(module, args, dataset: str, out: Path) -> None:
    """fqe.py / ope.py as the README runs them, on the tiny dataset (which records no behaviour probabilities, so
    the importance weights use the estimated behaviour) with a few updates; the estimate must be written."""
    small = dict(dataset=dataset, total_steps=20, fqe_steps=20, bc_steps=20, log_every=10, hidden_dim=32,
                 batch_size=32, device="cpu", behavior="estimated", out=str(out))
    fields = {f.name for f in dataclasses.fields(args)}
    args = dataclasses.replace(args, **{k: v for k, v in small.items() if k in fields})
    (getattr(module, "train", None) or module.run)(args)
    assert out.is_file(), f"`{module.__name__}` wrote no estimate to --out"


def shortened(args, dataset: str, runs_dir: Path):
    fields = {f.name for f in dataclasses.fields(args)}
    small = dict(dataset=dataset, runs_dir=str(runs_dir), total_steps=20, eval_every=10, eval_episodes=1, log_every=10,
                 checkpoint_every=20, progress=False, device="cpu", compile=False, track=False)
    small |= {k: v for k, v in dict(hidden_dim=32, batch_size=32).items() if k in fields}
    if "online_steps" in fields:  # fine-tuning: a few environment steps, as few updates
        small["online_steps"] = min(args.online_steps, 20)
    return dataclasses.replace(args, **{k: v for k, v in small.items() if k in fields})


def test_readme_commands_run(minari_root, tiny_hopper, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a command writes lands in the checkout
    commands = shell_commands()
    assert any(c[0].startswith("algorithms/") for c in commands), "the README shows no script to run"
    runs: dict[str, Path] = {}
    later = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (target, *flags) in enumerate(commands):
            script = ROOT / target
            assert script.is_file(), f"the README runs `python {target}`, which does not exist"
            if target.startswith("algorithms/") and not any(PLACEHOLDER_RUN.fullmatch(f) for f in flags):
                module = load(script)
                args = parse(module, flags, target)
                if args is not None:
                    module.train(shortened(args, tiny_hopper, tmp_path / f"runs{i}"))
                    (run_dir,) = [p for p in (tmp_path / f"runs{i}").iterdir() if p.is_dir()]
                    runs.setdefault(script.stem, run_dir)
            else:
                later.append((script, target, flags))
        for script, target, flags in later:  # these need a trained run
            run = next(iter(runs.values()))
            flags = [str(runs.get(script.stem, run)) if PLACEHOLDER_RUN.fullmatch(f) else f for f in flags]
            if target.startswith("algorithms/"):
                module = load(script)
                args = parse(module, flags, target)
                if args is None:
                    continue
                if "policy" in {f.name for f in dataclasses.fields(args)}:  # an off-policy evaluator of a run
                    evaluate_shortened(module, args, tiny_hopper, tmp_path / f"{script.stem}.json")
                else:
                    module.train(module.Args(resume=args.resume, progress=False))
                continue
            module = load(script)
            if not hasattr(module, "Args"):
                check_with_help(script, flags, target)
                continue
            args = parse(module, flags, target)
            if args is None:
                continue
            if target == "benchmarks/report.py":  # the real report, into the temporary folder, without plots
                module.main(dataclasses.replace(args, results=[str(ROOT / r) for r in args.results], readme=None,
                                                out=str(tmp_path / "report.md"), plots=False, bootstrap_reps=100))
            elif target == "benchmarks/pages.py":
                module.main(dataclasses.replace(args, check=True))
            # other tools (the grid, export, record, speed) are checked by their parser only: they train for
            # hours, or need packages and displays a test cannot count on
    finally:
        torch.set_num_threads(threads)


def test_readme_python_block_loads_a_policy(minari_root, tiny_hopper, tmp_path):
    (code,) = [b for b in blocks("python") if "load_policy" in b]
    algo = re.search(r"from algorithms import (\w+)", code).group(1)
    module = load(ROOT / "algorithms" / f"{algo}.py")
    module.train(shortened(module.Args(), tiny_hopper, tmp_path / "runs"))
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    code = re.sub(r'"runs/[^"]*"', repr(str(run_dir)), code)
    namespace = {"observations": torch.zeros(3, 11)}
    exec(code, namespace)  # noqa: S102 -- the README's own example
    assert namespace["actions"].shape == (3, 3)
