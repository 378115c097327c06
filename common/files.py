r"""Leftovers of killed processes: temporary files and folders whose writer no longer runs.

Every writer in Stitch writes to a temporary name that carries its process id and renames it into place when
complete (checkpoints, the flat dataset cache, suite builds), so a process killed mid-write leaves a temporary
behind. The next run that looks in the same folder removes the ones whose process is gone:

    remove_orphans(run_dir, r"checkpoint\.pt\.tmp(?P<pid>\d+)")
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path


def remove_orphans(folder: str | Path, pattern: str) -> list[Path]:
    """Delete the temporary files or folders matching `pattern` in `folder` (a regex whose group `pid` is the
    process that made them) whose process no longer runs: what a run or build killed mid-write left behind."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = re.fullmatch(pattern, p.name)
        if m is None or _alive(int(m.group("pid"))):
            continue
        try:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            removed.append(p)
        except OSError:  # not ours to delete (read-only, say): leave it
            continue
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
