"""The fast path: one whole update, compiled, and on CUDA replayed as one CUDA graph (`--compile`).

    update_fn = fast_update(update, device, compile=args.compile, generators=[buffer.generator])
    metrics = update_fn()                 # one update, exactly what update() does
    metrics = update_fn(actor=False)      # keyword arguments are Python values that pick a branch

`update` is the script's plain update function, the one the reader reads: it draws its own minibatch on the
device, computes every loss, steps every optimizer, moves the target networks, and returns a dict of metric
tensors. It takes no tensors; its keyword arguments (if any) are Python values that choose a branch, such as
TD3+BC's delayed actor step or CQL's BC warm-up, and each distinct set of them is compiled and captured once.

- `compile=False`: `update(**kw)` as it is (eager).
- `compile=True` on CPU: `torch.compile(update)` (inductor): elementwise work fused, less Python per update. On
  this project's 2-core CPU that gains 0-50% per script and is within measurement noise for most
  (benchmarks/results/speed_cpu_compile.json): the matrix multiplies, which dominate, are the same library calls
  either way. A script whose update measured slower compiled on CPU passes `cpu=False` and runs eager there
  (`STITCH_COMPILE_CPU=1` compiles it anyway, as the equality tests do).
- `compile=True` on CUDA: `torch.compile(update)`, run for `warmup` real updates on a side stream (compilation,
  lazily created optimizer state, cuBLAS workspaces), then captured into one `torch.cuda.CUDAGraph` on the next
  call and replayed from then on: one launch per update and no work on the host. The metrics are the graph's
  static output tensors, overwritten by every replay: read them (`.item()`) every `--log-every` updates only.

Nothing here knows an algorithm. What an update needs to be captured whole:
- no host synchronisation inside it (no `.item()`, `.cpu()`, `if tensor:`);
- optimizers built with `adam` below (learning rate as a tensor, capturable and fused where the device allows),
  and learning-rate schedulers stepped outside the update;
- random draws from torch's default generator or from a generator named in `generators` (the buffer's);
- the tensors it reads from outside (the dataset on the device, the networks' weights) keep their storage:
  load checkpoints with `load_state_dict` (which copies in place) before the first update.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import types
from typing import Callable, Iterable

import torch
import torch._inductor.config

# Random draws inside a compiled update come from torch's own generators, as in eager mode (inductor would use its
# own Philox stream): the compiled update draws the same numbers and computes the same thing.
torch._inductor.config.fallback_random = True
# Dynamo says once per compile that it skips the optimizers' profiler annotations: true, and nothing to act on.
logging.getLogger("torch._dynamo.variables.ctx_manager").addFilter(
    lambda record: "Profiler record function" not in record.getMessage())


class Adam(torch.optim.Adam):
    """torch's Adam, whose `load_state_dict` keeps what the fast path needs: the learning rate a tensor on the
    device (a checkpoint holds a float, or a tensor loaded on the CPU) and this instance's capturable/fused."""

    def load_state_dict(self, state_dict: dict) -> None:
        keep = [(g["lr"].device, g["capturable"], g["fused"]) for g in self.param_groups]
        super().load_state_dict(state_dict)
        for g, (device, capturable, fused) in zip(self.param_groups, keep):
            g.update(lr=torch.tensor(float(g["lr"]), device=device), capturable=capturable, fused=fused)


def adam(params: Iterable, lr: float, device: torch.device, weight_decay: float = 0.0, eps: float = 1e-8,
         decoupled_weight_decay: bool = False, betas: tuple[float, float] = (0.9, 0.999)) -> Adam:
    """Adam with its learning rate as a tensor (a scheduler changes it in place, so a compiled update is not
    recompiled and a captured one reads the new value), fused, and capturable on CUDA. `eps`: Adam's epsilon
    (torch's default 1e-8; the DQN family's Atari settings use larger ones). `decoupled_weight_decay=True`: AdamW
    (weights shrink by lr * weight_decay each step, apart from the gradient) rather than an L2 term in it. `params`
    may be parameter groups (dicts), each with its own `weight_decay`."""
    lr_t = torch.tensor(float(lr), device=device)
    cuda = torch.device(device).type == "cuda"
    params = list(params)  # tried twice below
    kw = dict(lr=lr_t, weight_decay=weight_decay, eps=eps, capturable=cuda,
              decoupled_weight_decay=decoupled_weight_decay, betas=betas)
    try:
        return Adam(params, fused=True, **kw)
    except (RuntimeError, TypeError):  # a device without a fused kernel
        return Adam(params, **kw)


class _Graphed:
    """One branch of a compiled update, captured as a CUDA graph after `warmup` real updates."""

    def __init__(self, fn: Callable, kwargs: dict, warmup: int, generators: list[torch.Generator]):
        self.fn, self.kwargs, self.warmup, self.generators = fn, kwargs, warmup, generators
        self.calls, self.graph, self.out = 0, None, None

    def __call__(self) -> dict[str, torch.Tensor]:
        if self.graph is None and self.calls < self.warmup:  # capture needs one warmed-up run on a side stream
            self.calls += 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn(**self.kwargs)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:  # record this update (capture runs nothing), then replay it below
            self.graph = torch.cuda.CUDAGraph()
            for g in self.generators:
                self.graph.register_generator_state(g)
            with torch.cuda.graph(self.graph):
                self.out = self.fn(**self.kwargs)
        self.graph.replay()
        return self.out


def fast_update(update: Callable[..., dict[str, torch.Tensor]], device: torch.device, compile: bool,
                generators: Iterable[torch.Generator] = (), warmup: int = 3,
                cpu: bool = True) -> Callable[..., dict[str, torch.Tensor]]:
    """`update` as it runs with `--compile` (see the module docstring); the identity without. `cpu=False`: eager
    on CPU, for an update measured slower compiled there."""
    if not compile:
        return update
    if torch.device(device).type == "cpu" and not cpu and os.environ.get("STITCH_COMPILE_CPU") != "1":
        print("--compile: this update runs eager on CPU, where compiling it measured slower "
              "(benchmarks/results/speed_cpu_compile.json); it is compiled on CUDA", file=sys.stderr, flush=True)
        return update
    cuda = torch.device(device).type == "cuda"
    generators = [g for g in generators if g.device.type == "cuda"]
    branches: dict[tuple, Callable[[], dict[str, torch.Tensor]]] = {}

    def run(**kwargs) -> dict[str, torch.Tensor]:
        key = tuple(sorted(kwargs.items()))
        if key not in branches:  # each branch compiles from its own copy of the code: dynamo keeps one cache per
            # code object, so a branch compiles the same whichever ran first (a resumed run may start with another)
            # dynamic=False: an update's shapes are fixed for a run; without it dynamo, having seen the same function
            # (by file, line and name) with another batch size earlier in the process, traces sizes symbolically,
            # which BCQ's sampling (torch.randn of a symbolic size with a generator) cannot take
            compiled = torch.compile(types.FunctionType(update.__code__.replace(), update.__globals__,
                                                        update.__name__, update.__defaults__, update.__closure__),
                                     dynamic=False)
            branches[key] = (_Graphed(compiled, kwargs, warmup, generators) if cuda
                             else functools.partial(compiled, **kwargs))
        return branches[key]()

    return run
