"""One logging setup for every entry point (the CLI and the KFP components).

Modules log with `logging.getLogger(__name__)`; this shows their lines on stderr as
`[step] message`, so a run's log reads as the pipeline does.

TensorFlow's C++ start-up chatter (oneDNN and CPU-feature notices) is written before its
log level applies, so TF_CPP_MIN_LOG_LEVEL cannot hide it, and TF_ENABLE_ONEDNN_OPTS=0
would hide it at 3-5x the cost in CPU training. Instead, the first `import tensorflow`
runs with the process's stderr captured, and every line but the known notices is
written back.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import os
import re
import sys
import tempfile

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
