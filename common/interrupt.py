"""Ctrl-C and SIGTERM during training: finish the update in progress, checkpoint, say how to resume.

    with StopSignal() as stop:
        while step < args.total_steps:
            ...one update...
            if stop:                                      # a signal arrived since the last check
                save()
                raise stop.exit(resume_command(__file__, run_dir), step)

The first SIGINT (Ctrl-C) or SIGTERM (a scheduler's or `kill`'s stop) only sets a flag that the training loop
reads after each update, so the checkpoint holds a whole update and resuming continues exactly. A second Ctrl-C
stops at once (KeyboardInterrupt), for a user who does not want to wait for an evaluation to end. Outside the
main thread (where Python cannot install handlers) nothing is installed and signals behave as usual.
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from pathlib import Path


class StopSignal:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\n{signal.Signals(signum).name}: finishing this update, then writing a checkpoint "
              f"(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def __bool__(self) -> bool:
        return self.signum is not None

    def exit(self, resume: str, step: int) -> SystemExit:
        """The SystemExit to raise once the checkpoint is written: it says where the run stopped and how to go
        on, and exits with the shell's code for the signal (130 for SIGINT, 143 for SIGTERM)."""
        print(f"stopped at update {step} by {signal.Signals(self.signum).name}; checkpoint written. "
              f"Resume with:\n  {resume}", file=sys.stderr, flush=True)
        return SystemExit(128 + int(self.signum))


def resume_command(script: str | Path, run_dir: str | Path) -> str:
    """`python <script> --resume <run_dir>`, with paths relative to the working folder where they can be."""
    def short(p: str | Path) -> str:
        p = Path(p).resolve()
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return str(p)
    return f"python {shlex.quote(short(script))} --resume {shlex.quote(short(run_dir))}"
