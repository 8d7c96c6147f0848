"""One logging setup for every entry point (the CLI and the KFP components).

Modules log with `logging.getLogger(__name__)` and %-style arguments (ruff's G rules);
this shows their lines on stderr as `[step] message`, so a run's log reads as the
pipeline does. `-q` leaves warnings and errors only. `progress` is the one progress
display (a bar on a terminal, periodic lines in files and pod logs) and `result` a
step's JSON result on stdout for scripts (README, "Output").

TensorFlow's C++ start-up chatter (oneDNN and CPU-feature notices) is written before its
log level applies, so TF_CPP_MIN_LOG_LEVEL cannot hide it, and TF_ENABLE_ONEDNN_OPTS=0
would hide it at 3-5x the cost in CPU training. Instead, the first `import tensorflow`
runs with the process's stderr captured, and every line but the known notices is
written back.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any

# -v / -q on the command line move from the default (INFO) one step either way.
LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)


class _StepFormatter(logging.Formatter):
    """`[train] message` (the last part of the logger name); warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name.rsplit(".", 1)[-1]
        text = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return f"[{name}] {text}"


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (pytest and kfp.local swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


# TensorFlow's start-up notices (C++, printed before its log level applies).
_STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on"
    r"|cpu_feature_guard|To enable the following instructions|rebuild TensorFlow with"
)


@contextlib.contextmanager
def _filtered_stderr():
    """Capture file descriptor 2 (C++ writes there too); write back all but the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not _STARTUP_NOISE.search(line):
                    sys.stderr.write(line)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Wraps the first import of TensorFlow in `_filtered_stderr`, then steps aside."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow" or "tensorflow" in sys.modules:
            return None
        sys.meta_path.remove(self)
        with _filtered_stderr():
            __import__("tensorflow")
        return None  # already imported: the normal machinery returns sys.modules' entry


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up notices off stderr (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def result(data: Any) -> None:
    """A step's result as one JSON line on stdout, for a script reading a pipe or a file.

    Not on a terminal (the step's summary line already says it there) and not under `-q`
    (warnings and errors only); the same facts are in the step's output folder.
    """
    if sys.stdout.isatty() or not logging.getLogger("fauna").isEnabledFor(logging.INFO):
        return
    print(json.dumps(data), flush=True)


def configure(verbosity: int = 0) -> None:
    """Send fauna's log lines to stderr; verbosity -1 = warnings only, 1 = debug."""
    quiet_tensorflow()
    level = LEVELS[max(-1, min(1, verbosity)) + 1]
    root = logging.getLogger("fauna")
    root.setLevel(level)
    if not any(getattr(h, "_fauna", False) for h in root.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_StepFormatter())
        handler._fauna = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False


# ------------------------------------------------------------------------ progress

# Plain progress lines (not a terminal): one per tenth of the work, at most one per
# MIN_GAP_S, and one at least every MAX_GAP_S; then a closing line (count, time, rate).
# Work done in under MIN_GAP_S shows none (the step's summary line has its count).
EVERY_FRACTION = 0.1
MIN_GAP_S = 5.0
MAX_GAP_S = 30.0


def duration(seconds: float) -> str:
    """`45 s`, `12 min 5 s`, `3 h 20 min`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _amount(n: float, unit: str, scale: bool) -> str:
    """`12 img`; with `scale`, `12.3 MB` (what tqdm's unit_scale shows)."""
    if not scale:
        return f"{n:.0f} {unit}"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.0f} {unit}" if not prefix else f"{n:.1f} {prefix}{unit}"
        n /= 1000
    raise AssertionError("unreachable")


class PlainProgress:
    """tqdm's `update`/iterate/`with` surface, as a periodic log line (count, rate, ETA).

    What fauna shows where output is a file or a pod log (no `\\r`, no bar characters);
    nothing at all when the logger is quieter than INFO (`-q`).
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        total: int | None,
        desc: str,
        unit: str,
        log: logging.Logger,
        leave: bool = True,
        unit_scale: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.log, self.leave, self.scale, self.clock = log, leave, unit_scale, clock
        self.n, self.closed, self.lines = 0, False, 0
        self.on = log.isEnabledFor(logging.INFO)
        self.start = self.last = clock()
        self.next_step = 1

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update()
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        self.closed = True  # after an error, its own line says enough

    def update(self, n: float = 1) -> None:
        self.n += n
        if not self.on:
            return
        now = self.clock()
        step = int(self.n / self.total / EVERY_FRACTION) if self.total else 0
        due = now - self.last >= MAX_GAP_S or (
            step >= self.next_step and now - self.last >= MIN_GAP_S
        )
        if due and not (self.total and self.n >= self.total):  # the end is close()'s line
            self.next_step, self.last = step + 1, now
            self._line(now)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        elapsed = self.clock() - self.start
        # A closing line for work long enough to have shown progress (a short loop's
        # count is in the step's summary); none for a transient display (`leave=False`).
        if self.on and self.leave and (self.lines or elapsed >= MIN_GAP_S):
            rate = f" ({self._rate(elapsed)})" if elapsed > 0 else ""
            took = f"{elapsed:.1f} s" if elapsed < 10 else duration(elapsed)
            self.log.info("%s: %s in %s%s", self.desc, self._count(), took, rate)

    def _count(self) -> str:
        done = _amount(self.n, self.unit, self.scale)
        if not self.total:
            return done
        whole = _amount(self.total, self.unit, self.scale)
        return f"{done.rsplit(' ', 1)[0]}/{whole}" if not self.scale else f"{done} of {whole}"

    def _rate(self, elapsed: float) -> str:
        rate = self.n / elapsed
        if self.scale:
            return f"{_amount(rate, self.unit, True)}/s"
        return f"{rate:.3g} {self.unit}/s" if rate < 100 else f"{rate:.0f} {self.unit}/s"

    def _line(self, now: float) -> None:
        self.lines += 1
        elapsed = now - self.start
        parts = [self._count()]
        if self.total:
            parts[0] += f" ({self.n / self.total:.0%})"
        parts.append(f"{self._rate(elapsed)}, {duration(elapsed)} elapsed")
        if self.total and self.n:
            parts.append(f"ETA {duration((self.total - self.n) * elapsed / self.n)}")
        self.log.info("%s: %s", self.desc, ", ".join(parts))


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str,
    unit: str = "item",
    log: logging.Logger | None = None,
    leave: bool = True,
    unit_scale: bool = False,
) -> Any:
    """The one progress display: a tqdm bar on stderr where stderr is a terminal, else
    `PlainProgress`'s periodic lines through `log`; nothing under `-q` either way.

    Use it as tqdm is used: iterate it, or `with progress(total=n, ...) as bar:
    bar.update(k)`. `log` names the step in the plain lines (`[ingest] check: ...`).
    """
    log = log or logging.getLogger("fauna.progress")
    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    if sys.stderr.isatty() and log.isEnabledFor(logging.INFO):
        from tqdm import tqdm

        name = log.name.rsplit(".", 1)[-1]
        return tqdm(
            iterable,
            total=total,
            desc=f"[{name}] {desc}",
            unit=unit,
            unit_scale=unit_scale,
            leave=leave,
            file=sys.stderr,
            mininterval=0.5,
        )
    return PlainProgress(iterable, total, desc, unit, log, leave, unit_scale)
