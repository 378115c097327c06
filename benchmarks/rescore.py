"""Recompute the normalized scores of a results file from the datasets' current reference scores.

    python benchmarks/rescore.py benchmarks/results/hopper_50k.jsonl

A dataset's reference scores can change after a cell ran (the suite's `ref_max_score` is the
expert's measured return, re-measured when a better expert is selected), while the cell's raw
returns cannot. Every record keeps its raw returns (`evals[].return`, `final_return`), so this
script rewrites each record's `evals[].score`, `final_score` and its `ref_min_score` /
`ref_max_score` from the dataset as it is now (the dataset must be local), and notes the
previous references under `rescored_from`. The file is replaced atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common.data import load_dataset  # noqa: E402


@dataclasses.dataclass
class Args:
    results: tyro.conf.Positional[str]
    """A results JSONL file written by benchmarks/run_grid.py."""


def normalize(ret: float, lo: float, hi: float) -> float:
    return 100.0 * (ret - lo) / (hi - lo)


def rescore(records: list[dict], refs: dict[str, tuple[float, float]]) -> int:
    """Rewrite scores in place with refs[dataset] = (ref_min, ref_max); returns how many records changed."""
    changed = 0
    for rec in records:
        lo, hi = refs[rec["dataset"]]
        old = (rec.get("ref_min_score"), rec.get("ref_max_score"))
        if old == (lo, hi):
            continue
        for ev in rec["evals"]:
            ev["score"] = normalize(ev["return"], lo, hi)
        rec["final_score"] = normalize(rec["final_return"], lo, hi)
        rec.setdefault("rescored_from", []).append({"ref_min_score": old[0], "ref_max_score": old[1]})
        rec["ref_min_score"], rec["ref_max_score"] = lo, hi
        changed += 1
    return changed


def main(args: Args) -> None:
    path = Path(args.results)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    refs = {}
    for dataset in sorted({r["dataset"] for r in records}):
        data = load_dataset(dataset)
        if data.ref_min_score is None or data.ref_max_score is None:
            raise SystemExit(f"error: {dataset} has no reference scores")
        refs[dataset] = (data.ref_min_score, data.ref_max_score)
        print(f"{dataset}: ref_min {data.ref_min_score:.1f}, ref_max {data.ref_max_score:.1f}")
    changed = rescore(records, refs)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    print(f"{changed} of {len(records)} records rescored in {path}")


if __name__ == "__main__":
    main(tyro.cli(Args))
