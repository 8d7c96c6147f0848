"""Where a task's time goes: start-up and imports, data in, compute, data out.

A step calls `begin(STEP)` when its function starts and wraps its reading and writing
in `phase("data_in")` / `phase("data_out")`; `fauna.step_output.step_output` writes the
result as `timings.json` into the step's output folder (`write_into`). Time not in a
named phase is compute; start-up is the process's age when `begin` is called (the
interpreter, the KFP executor and the module imports of a task). `fauna local-run`
reads every task's file and prints one table (`table`).

Steps that read, transform and write in one streamed pass (ingest, preprocess, split,
augment) name no phase: all their time after start-up is compute.

Only the standard library: every step imports this.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TIMINGS = "timings.json"
PHASES = ("startup", "data_in", "compute", "data_out")


def process_age() -> float | None:
    """Seconds since this process started (Linux /proc); None where that is unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime, in ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started)


@dataclass
class _Timer:
    step: str
    startup: float | None
    started: float = field(default_factory=time.perf_counter)
    phases: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    current: str | None = None  # the open phase, since `since`
    since: float = 0.0


_timer: _Timer | None = None


def begin(step: str, *, preload: tuple[str, ...] = (), **info: Any) -> None:
    """Start timing this process's step (`info`: e.g. the backbone, for the table).

    `preload`: modules the step will import anyway (TensorFlow, Keras), imported now so
    that their import counts as start-up rather than as the phase that first needs them.
    """
    global _timer
    _timer = _Timer(step, process_age(), info=dict(info))
    with phase("startup"):
        for module in preload:
            importlib.import_module(module)


def end() -> None:
    """Stop timing (a process that runs several steps, e.g. a test)."""
    global _timer
    _timer = None


def note(**info: Any) -> None:
    """Add what identifies the task (e.g. the backbone) once the step knows it."""
    if _timer is not None:
        _timer.info.update(info)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the time of the block as `name` (nested phases count once, as the outer one)."""
    timer = _timer
    if timer is None or timer.current is not None:
        yield
        return
    timer.current, timer.since = name, time.perf_counter()
    try:
        yield
    finally:
        timer.phases[name] = timer.phases.get(name, 0.0) + time.perf_counter() - timer.since
        timer.current = None


def timed(name: str) -> Callable:
    """A decorator: every call of the function counts as phase `name`."""

    def wrap(func: Callable) -> Callable:
        @functools.wraps(func)
        def timed_call(*args: Any, **kwargs: Any) -> Any:
            with phase(name):
                return func(*args, **kwargs)

        return timed_call

    return wrap


def summary(step: str) -> dict[str, Any] | None:
    """The phases of `step` so far (seconds); None when this process is not timing it."""
    timer = _timer
    if timer is None or timer.step != step:
        return None
    now = time.perf_counter()
    total = now - timer.started
    phases = dict(timer.phases)
    if timer.current is not None:  # still open: step_output writes inside `data_out`
        phases[timer.current] = phases.get(timer.current, 0.0) + now - timer.since
    named = {k: round(v, 3) for k, v in phases.items()}
    compute = total - sum(v for k, v in phases.items() if k != "compute")
    preloaded = phases.get("startup", 0.0)
    startup = None if timer.startup is None else round(timer.startup + preloaded, 3)
    return {
        "step": step,
        **timer.info,
        "startup": startup,
        "data_in": named.get("data_in", 0.0),
        "compute": round(max(0.0, compute), 3),
        "data_out": named.get("data_out", 0.0),
        "total": round(total + (timer.startup or 0.0), 3),
        "since_begin": round(total, 3),
    }


def write_into(folder: Path, step: str) -> None:
    """timings.json in a step's output folder, when this process is timing that step.

    The timer ends here: a task runs its step once, and a process that goes on to run
    more steps (a test) writes no timings for them.
    """
    result = summary(step)
    if result is not None:
        (Path(folder) / TIMINGS).write_text(json.dumps(result, indent=2) + "\n")
        end()


def collect(root: Path) -> list[dict[str, Any]]:
    """Every task's timings under `root` (a local run's folder), in the order they ended,
    each once."""
    found = []
    for path in Path(root).rglob(TIMINGS):
        try:
            found.append((path.stat().st_mtime, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    tasks, seen = [], set()
    for _, t in sorted(found, key=lambda x: x[0]):
        key = json.dumps(t, sort_keys=True)  # a copied folder (a report's) holds the same file
        if isinstance(t, dict) and key not in seen:
            seen.add(key)
            tasks.append(t)
    return tasks


def table(tasks: list[dict[str, Any]]) -> str:
    """One row per task and a total row: seconds in each phase."""

    def cell(value: Any) -> str:
        return f"{value:>10.1f}" if isinstance(value, (int, float)) else f"{'?':>10}"

    heads = ("start-up", "data in", "compute", "data out", "total")
    rows = [f"{'task':<22}" + "".join(f"{h:>10}" for h in heads)]
    sums = dict.fromkeys((*PHASES, "total"), 0.0)
    for t in tasks:
        name = t.get("step", "?") + (f" {t['backbone']}" if t.get("backbone") else "")
        rows.append(f"{name:<22}" + "".join(cell(t.get(k)) for k in (*PHASES, "total")))
        for k in sums:
            sums[k] += t.get(k) or 0.0
    rows.append(f"{'all tasks':<22}" + "".join(cell(sums[k]) for k in (*PHASES, "total")))
    return "\n".join(rows)
