"""Export a trained policy to one file that acts without this repository: TorchScript (needs torch only) or ONNX.

    python benchmarks/export.py runs/iql__stitch-hopper-medium-v0__s0__... --format torchscript   # -> <run>/policy.pt
    python benchmarks/export.py runs/iql__stitch-hopper-medium-v0__s0__... --format onnx --out hopper_iql.onnx

The file computes what the run's script evaluates, `load_policy(run).module`: float32 observations [n, obs_dim]
(any n) -> deterministic actions [n, act_dim] in [-1, 1], with whatever the script does around its network
inside (observation normalization, the mean of a Gaussian, BCQ's fixed latents and argmax over Q, the clip).
Continuous actions are in [-1, 1]; an environment whose action bounds are not [-1, 1] takes
low + (a + 1) / 2 * (high - low), as common/evaluation.py does (every stitch/ dataset's environment is [-1, 1]).
After writing, the file is loaded back and its actions are compared with `load_policy`'s on a batch of
observations; the export fails (and leaves no file) if they differ.

Use it elsewhere:
    import torch                                    # TorchScript: torch only
    policy = torch.jit.load("policy.pt")
    actions = policy(torch.as_tensor(obs, dtype=torch.float32))

    import onnxruntime as ort                       # ONNX: input "obs", output "action"
    policy = ort.InferenceSession("policy.onnx")
    actions = policy.run(None, {"obs": obs.astype("float32")})[0]

Both files carry the run's facts as JSON (algorithm, dataset, seed, update, dimensions): TorchScript as the extra
file `stitch.json` (`torch.jit.load(path, _extra_files={"stitch.json": ""})`), ONNX as the metadata entry "stitch".

ONNX export uses torch.onnx's exporter (torch.export-based), which needs `pip install onnx onnxscript`;
checking the written file also needs `onnxruntime` (skipped with a note when it is missing).

A new script needs nothing here: its `load_policy(...).module` must be an nn.Module whose forward on a float32
tensor of observations is the whole policy (CONTRIBUTING.md, "The public policy"); tests/test_export.py checks
every script in algorithms/.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.run_policy import RunError, RunPolicy, load_run_policy  # noqa: E402

TRACE_BATCH, CHECK_BATCH = 16, 7  # different sizes: the check also shows the batch dimension is not fixed
# largest |difference| from load_policy's actions a written file may show: TorchScript replays torch's own ops
# (0 in practice); ONNX Runtime's kernels differ from torch's in the last bits (up to ~1e-5 on a trained BCQ policy)
ATOL = {"torchscript": 1e-6, "onnx": 1e-4}
ONNX_PACKAGES = "pip install onnx onnxscript onnxruntime"


@dataclasses.dataclass
class Args:
    run: tyro.conf.Positional[str]
    """A run folder (with checkpoint.pt) written by a script in algorithms/."""
    format: Literal["torchscript", "onnx"] = "torchscript"
    """torchscript: a .pt file that torch alone loads (torch.jit.load); onnx: a .onnx file for ONNX Runtime."""
    out: str | None = None
    """The file to write (default: policy.pt or policy.onnx in the run folder)."""


def metadata(run: RunPolicy, fmt: str) -> dict:
    return {"algo": run.algo, "dataset": run.args.get("dataset"), "seed": run.args.get("seed"), "step": run.step,
            "obs_dim": run.obs_dim, "act_dim": run.act_dim, "format": fmt, "input": "obs: float32 [n, obs_dim]",
            "output": "action [n, act_dim]: in [-1, 1]; environment bounds [low, high] take "
                      "low + (action + 1) / 2 * (high - low)"}


def observations(obs_dim: int, n: int, seed: int) -> torch.Tensor:
    """A batch of made-up observations: the file is checked on the same inputs as load_policy, whatever they are."""
    return 3.0 * torch.randn(n, obs_dim, generator=torch.Generator().manual_seed(seed))


def write_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    with warnings.catch_warnings():  # torch.jit.trace is deprecated in favour of torch.export, but still the format
        warnings.simplefilter("ignore")  # that loads with `import torch` alone, in C++ (libtorch) too
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_inputs=[(example[:3],)])
    torch.jit.save(traced, str(path), _extra_files={"stitch.json": json.dumps(meta)})


def write_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401 -- torch.onnx's exporter needs it
    except ImportError as e:
        raise RunError(f"--format onnx needs the package {e.name}: {ONNX_PACKAGES}") from None
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and the like
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, (example,), str(path), input_names=["obs"], output_names=["action"],
                              dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"stitch": json.dumps(meta)})
    model.doc_string = f"Stitch {meta['algo']} policy, {meta['dataset']}: obs [n, {meta['obs_dim']}] -> action"
    onnx.save(model, str(path))


def run_file(path: Path, fmt: str, obs: np.ndarray) -> np.ndarray | None:
    """The written file's actions on `obs`, loaded as a user would load it (None: no onnxruntime to run it)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(path))
        with torch.no_grad():
            return loaded(torch.as_tensor(obs)).numpy()
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"obs": obs})[0]


def export(run_dir: str | Path, fmt: str = "torchscript", out: str | Path | None = None) -> tuple[Path, float | None]:
    """Write the run's policy to `out`, check it against load_policy; returns the path and the largest difference
    (None: not checked, onnxruntime missing)."""
    if fmt not in ("torchscript", "onnx"):
        raise RunError(f"--format {fmt}: choose torchscript or onnx")
    run = load_run_policy(run_dir)
    if hasattr(run.policy, "reset"):  # a sequence model: its action depends on the episode so far, not obs alone
        raise RunError(f"algorithms/{run.algo}.py's policy acts on the episode's history (returns, observations and "
                       f"actions so far), not on an observation alone: export writes observation -> action policies "
                       f"only; use load_policy(run_dir).module, which takes that history as tensors")
    module = getattr(run.policy, "module", None)
    if not isinstance(module, torch.nn.Module):
        raise RunError(f"algorithms/{run.algo}.py's load_policy gives no `.module` (an nn.Module whose forward is the "
                       f"whole policy), which export needs: see CONTRIBUTING.md, 'The public policy'")
    module.eval()
    path = Path(out) if out is not None else run.run_dir / ("policy.pt" if fmt == "torchscript" else "policy.onnx")
    if path.is_dir():
        raise RunError(f"--out {path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")  # the same suffix-free name for either writer
    meta = metadata(run, fmt)
    example = observations(run.obs_dim, TRACE_BATCH, seed=0)
    try:
        if fmt == "torchscript":
            write_torchscript(module, example, tmp, meta)
        else:
            write_onnx(module, example, tmp, meta)
        obs = observations(run.obs_dim, CHECK_BATCH, seed=1).numpy()
        expected, got = np.asarray(run.policy(obs)), run_file(tmp, fmt, obs)
        diff = None
        if got is not None:
            if got.shape != expected.shape:
                raise RunError(f"the exported {fmt} policy returns actions of shape {got.shape}, load_policy "
                               f"{expected.shape}: not exported")
            diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max())
            if not diff <= ATOL[fmt]:
                raise RunError(f"the exported {fmt} policy's actions differ from load_policy's by up to {diff:.3g} "
                               f"(algorithms/{run.algo}.py's `.module` must compute the whole policy): not exported")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, diff


def main(args: Args) -> None:
    path, diff = export(args.run, args.format, args.out)
    checked = (f"onnxruntime not installed, not checked ({ONNX_PACKAGES})" if diff is None
               else f"actions match load_policy's (max |diff| {diff:.2g})")
    print(f"wrote {path} ({args.format}): observations [n, obs_dim] float32 -> actions; {checked}")


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except RunError as e:  # bad input: one clear line, no traceback
        raise SystemExit(f"error: {e}")
