"""Step output folders that are complete or absent, never half-written or shared.

Every step writes its `--out` (a KFP artifact folder on a cluster) through
`step_output`:

- the work happens in a temporary folder beside `out`, which is renamed into place
  only when the step succeeded, with a completion marker (`.fauna-output.json`)
  written last; a failure or a kill leaves `out` as it was;
- a lock beside `out` refuses a second writer while the first runs;
- a non-empty `out` is refused unless it is this step's own completed output
  (a re-run replaces it), so a user's files are never overwritten.

The next step calls `require_output` on its inputs, so a half-written folder or the
output of the wrong step is refused with one line naming what was expected.
Leftovers of a killed run (temporary folders, the lock file) are cleaned up by the
next run over the same `out`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fauna import timing
from fauna.errors import FaunaError

MARKER = ".fauna-output.json"
PARTIAL = "partial"
REPLACED = "replaced"


class OutputError(FaunaError):
    """An output folder cannot be written, or an input folder is not what a step expects."""


def _sibling(out: Path, kind: str, tag: str = "") -> Path:
    return out.parent / f".{out.name}.{kind}{'-' + tag if tag else ''}"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The completion marker of a step output, or None when there is none (or it is damaged)."""
    path = Path(folder) / MARKER
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("complete") is True else None


def require_output(folder: Path, steps: str | Sequence[str], *, role: str = "--data") -> dict:
    """Refuse (one line) a folder that is not a completed output of one of `steps`."""
    folder = Path(folder)
    expected = (steps,) if isinstance(steps, str) else tuple(steps)
    wanted = " or ".join(f"`fauna {s}`" for s in expected)
    if not folder.is_dir():
        raise OutputError(f"{role} {folder} does not exist: it should be the output of {wanted}")
    marker = read_marker(folder)
    if marker is None:
        raise OutputError(
            f"{role} {folder} is not a completed step output (no {MARKER}): "
            f"expected the output of {wanted}; an interrupted run leaves none"
        )
    if marker.get("step") not in expected:
        raise OutputError(
            f"{role} {folder} is the output of `fauna {marker.get('step')}`, "
            f"but this step reads the output of {wanted}"
        )
    return marker


def _check_replaceable(out: Path, step: str) -> None:
    if out.is_symlink() or out.is_file():
        raise OutputError(f"output {out} is not a folder: --out must name a folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = read_marker(out)
    if marker is None or marker.get("step") != step:
        what = f"the output of `fauna {marker['step']}`" if marker else "not a fauna output"
        raise OutputError(
            f"output folder {out} is not empty and is {what}: choose a new --out "
            "(nothing was written)"
        )


@contextmanager
def _lock(out: Path, step: str) -> Iterator[None]:
    """An exclusive lock file beside `out`; the kernel releases it if the process dies."""
    path = _sibling(out, "lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(
                f"another process is writing {out} (lock {path}): wait for it, or use another --out"
            ) from None
        # The lock file may have been removed by a finishing writer between open and flock.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.write(fd, f"{os.getpid()} {step}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _clean_leftovers(out: Path) -> None:
    for kind in (PARTIAL, REPLACED):
        for stale in out.parent.glob(f".{out.name}.{kind}-*"):
            shutil.rmtree(stale, ignore_errors=True)


def _ensure_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".fauna-write-test-{uuid.uuid4().hex[:8]}"
        probe.touch()
        probe.unlink()
    except OSError as exc:  # EROFS too: a folder mounted read-only into the image
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise OutputError(
            f"cannot write in {folder} as uid {os.getuid()} ({exc.strerror}): make it writable "
            "for this user (in the fauna images: uid 10001, or group 0)"
        ) from None


def _publish(tmp: Path, out: Path) -> None:
    """Put the finished folder in place: one rename, or (where `out` is a mount) a move."""
    old = None
    if out.is_dir():
        old = _sibling(out, REPLACED, uuid.uuid4().hex[:8])
        try:
            out.rename(old) if any(out.iterdir()) else out.rmdir()
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
                raise
            _move_into(tmp, out)  # `out` is a mount point: fill it in place, marker last
            return
        old = old if old.exists() else None
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _move_into(tmp: Path, out: Path) -> None:
    for child in out.iterdir():
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    marker = tmp / MARKER
    for child in tmp.iterdir():
        if child != marker:
            shutil.move(str(child), out / child.name)
    shutil.move(str(marker), out / MARKER)
    tmp.rmdir()


def mark_complete(folder: Path, step: str, **info: Any) -> None:
    """Write the completion marker (the last file a step writes)."""
    marker = {
        "step": step,
        "complete": True,
        "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **info,
    }
    tmp = Path(folder) / f"{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=2) + "\n")
    tmp.replace(Path(folder) / MARKER)


@contextmanager
def step_output(out: Path, step: str) -> Iterator[Path]:
    """Yield a temporary folder to write `step`'s output into; it becomes `out` on success."""
    out = Path(out).absolute()
    _ensure_writable(out.parent)
    _check_replaceable(out, step)
    with _lock(out, step):
        _check_replaceable(out, step)  # again: another writer may have finished meanwhile
        _clean_leftovers(out)
        tmp = _sibling(out, PARTIAL, f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            yield tmp
            timing.write_into(tmp, step)  # timings.json when a task times this step
            mark_complete(tmp, step)
            _publish(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
