"""Run folders, console progress and metrics.

    run = Run(run_dir, args, "iql", total_steps, start_step, track)   # run_dir = runs/<run_name(...)>
    run.log(step, {"loss/q": 0.3})        # -> metrics.jsonl (always), wandb (only with --track)
    run.score(step, 31.2)                 # shown on the progress bar
    run.advance(1000)                     # tqdm bar: step, updates/s, last score, ETA
    if run.checkpoint_due(step): save()   # every --checkpoint-every updates or --checkpoint-minutes minutes
    run.close()

`metrics.jsonl` gets one JSON object per `log` call; Weights & Biases is used only with `--track`,
in offline mode unless `WANDB_MODE` says otherwise, so a run never waits on the network. A resumed
run (start_step > 0) first drops the records logged after its checkpoint (and a line cut short by a
crash), so the file holds each step once, as if the run had never been interrupted.

The run folder is printed when the run starts. Where stderr is not a terminal (a log file, a batch job) the
progress bar is not drawn, so every evaluation prints one line instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common.config import ArgumentError
from common.files import remove_orphans


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or None
    except Exception:
        return None


def run_name(algo: str, dataset: str, seed: int) -> str:
    """<algo>__<dataset>__s<seed>__<date-time>-<4 random hex digits>: runs started in the same second differ."""
    return f"{algo}__{dataset.replace('/', '-')}__s{seed}__{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(2).hex()}"


def keep_until(path: Path, step: int) -> None:
    """Atomically drop the records of a metrics file logged after `step` (and any unreadable line)."""
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line + "\n")
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)


def logged(path: Path, name: str) -> dict[int, float]:
    """{step: value} of one metric in a metrics file (the last record per step; unreadable lines skipped)."""
    points = {}
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            if name in rec:
                points[int(rec["step"])] = float(rec[name])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return points


class Run:
    def __init__(self, run_dir: Path, args: Any, algo: str, total_steps: int, start_step: int, track: bool,
                 project: str = "stitch", progress: bool = True):
        self.dir = run_dir
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / ".write-test").touch()
            (self.dir / ".write-test").unlink()
        except OSError as e:
            raise ArgumentError(f"cannot write the run folder {self.dir}: {e.strerror or e}") from e
        # what a run killed while writing left behind: a checkpoint's temporary file, a half-written JSON file
        remove_orphans(self.dir, r"checkpoint\.pt\.tmp(?P<pid>\d+)")
        for tmp in self.dir.glob("*.json*.tmp"):
            tmp.unlink(missing_ok=True)
        self.algo = algo
        self.total_steps = total_steps
        self.checkpoint_every = getattr(args, "checkpoint_every", None)
        self.checkpoint_seconds = 60.0 * getattr(args, "checkpoint_minutes", 0.0)
        self.last_checkpoint = time.monotonic()
        print(f"{algo}: run folder {self.dir} ({'resumed at update ' + str(start_step) if start_step else 'new run'}"
              f", {total_steps} updates)", file=sys.stderr, flush=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        if start_step > 0 and self.metrics_path.exists():
            keep_until(self.metrics_path, start_step)
        self._metrics = open(self.metrics_path, "a")
        self.last_score: float | None = None
        self.progress = tqdm(total=total_steps, initial=start_step, desc=algo, unit="upd", dynamic_ncols=True,
                             disable=not progress or None, mininterval=1.0, file=sys.stderr)
        self.wandb = None
        if track:
            import wandb

            os.environ.setdefault("WANDB_MODE", "offline")
            self.wandb = wandb.init(project=project, name=self.dir.name, dir=str(self.dir),
                                    config=dataclasses.asdict(args), resume="allow", id=self.dir.name.replace("/", "-"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        record = {"step": int(step), "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self.wandb is not None:
            self.wandb.log(metrics, step=int(step))

    def score(self, step: int, score: float | None, ret: float | None = None) -> None:
        """Show an evaluation: on the progress bar, and as a line of its own where stderr is no terminal."""
        if score is not None:
            self.last_score = float(score)
            self.progress.set_postfix(score=f"{score:.1f}", refresh=False)
        if not sys.stderr.isatty():
            shown = "no reference scores" if score is None else f"score {score:.1f}"
            print(f"{self.algo} update {step}/{self.total_steps}: {shown}"
                  + ("" if ret is None else f" (return {ret:.1f})"), file=sys.stderr, flush=True)

    def checkpoint_due(self, step: int) -> bool:
        """True every `checkpoint_every` updates, at the last one, and once `checkpoint_minutes` have passed since
        the last checkpoint (so a slow run never has more than that at risk); the caller then saves."""
        due = (step == self.total_steps or (self.checkpoint_every and step % self.checkpoint_every == 0)
               or (self.checkpoint_seconds > 0 and time.monotonic() - self.last_checkpoint >= self.checkpoint_seconds))
        if due:
            self.last_checkpoint = time.monotonic()
        return bool(due)

    def training_metrics(self) -> dict[str, float]:
        """The last logged training metrics (losses and the like; evaluations and timings left out), for result.json:
        what a run without evaluation reports."""
        last: dict[str, float] = {}
        self._metrics.flush()
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            values = {k: v for k, v in rec.items()
                      if k not in ("step", "time", "updates_per_s") and not k.startswith("eval/")}
            if values:
                last = {"step": rec["step"], **values}
        return last

    def advance(self, n: int) -> None:
        self.progress.update(n)

    def write_json(self, name: str, obj: Any) -> None:
        tmp = self.dir / (name + ".tmp")
        tmp.write_text(json.dumps(obj, indent=2))
        os.replace(tmp, self.dir / name)

    def close(self) -> None:
        self.progress.close()
        self._metrics.close()
        if self.wandb is not None:
            self.wandb.finish()
