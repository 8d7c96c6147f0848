"""Kill a step with SIGKILL at a random moment, and compare step outputs byte by byte.

Used by the kill test of each data step (ingest, preprocess, split, augment): start the
step as `fauna <argv>` in a child process, wait until it holds its output lock (it is
writing), let it run a random part of the time an uninterrupted run took, `kill -9` it,
then check that nothing half-written is visible and that a rerun gives the same bytes.
`kill_when` is the kill itself, for any moment a test can tell (publish's stalled write).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fauna.step_output import MARKER

# The child imports these before the step starts, so the random moment falls in the
# step's own work rather than in an import (the in-process reference run has them loaded).
PRELOAD = ("tensorflow", "keras", "PIL.Image", "fauna.data.records", "fauna.cli")


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


def partial_folders(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.partial-*"))


def kill_when(
    argv: list[str],
    ready: Callable[[], bool],
    delay: float,
    *,
    preload: tuple[str, ...] = PRELOAD,
    env: dict[str, str] | None = None,
    wait_s: float = 120,
) -> bool:
    """Run `fauna <argv>` in a child; once `ready()` holds (or the child has ended), wait
    `delay` seconds and SIGKILL it. Returns whether it was killed (still running then)."""
    imports = "".join(f"import {name}; " for name in preload)
    code = f"import sys; {imports}from fauna.cli import main; sys.exit(main(sys.argv[1:]))"
    child = subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )
    try:
        started = time.monotonic()
        while not ready() and child.poll() is None:
            assert time.monotonic() - started < wait_s, f"`fauna {argv[0]}` never got ready"
            time.sleep(0.005)
        time.sleep(delay)
        killed = child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return killed


def kill_at_random(
    argv: list[str], out: Path, window_s: float, seed: int, preload: tuple[str, ...] = PRELOAD
) -> dict:
    """Run `fauna <argv>`; SIGKILL it a random time (0..window_s) after it takes its lock.

    Returns what happened: {"delay": seconds, "killed": bool, "partial": [folders left]}.
    """
    delay = random.Random(seed).uniform(0, window_s)
    killed = kill_when(argv, lock_path(out).exists, delay, preload=preload)
    return {"delay": round(delay, 3), "killed": killed, "partial": partial_folders(out)}


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file of a step output (but its completion marker, which holds a time) by path."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file() and path.name != MARKER
    }
