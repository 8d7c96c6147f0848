"""One logging setup for every entry point (the CLI and the KFP components).

Modules log with `logging.getLogger(__name__)`; this shows their lines on stderr as
`[step] message`, so a run's log reads as the pipeline does. TensorFlow's C++ start-up
chatter is turned down before TensorFlow is first imported.
"""

from __future__ import annotations

import logging
import os
import sys

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


def quiet_tensorflow() -> None:
    """TensorFlow's C++ logs (oneDNN notices, CUDA probing) stay out of the way."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


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
