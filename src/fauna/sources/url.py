"""http(s) URLs: streamed to a file within the limits, then unpacked as an archive.

A download is bounded by default: its size (`max_dataset_bytes`, and an announced
Content-Length over it is refused before a byte is read), its whole duration
(`download_timeout_s`), its rate (`min_download_bytes_per_s` over every window of
`download_rate_window_s`, also the longest silence tolerated), and its format: the first
bytes must be a zip or tar(.gz/.bz2/.xz), so a stream of anything else stops at once.
"""

from __future__ import annotations

import base64
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import IO

from fauna.logs import progress
from fauna.sources.archive import (
    SNIFF_BYTES,
    archive_format,
    is_archive,
    not_an_archive,
    strip_archive_suffix,
    unpacked,
)
from fauna.sources.base import (
    CHUNK,
    Fetched,
    LimitExceeded,
    Limits,
    Source,
    SourceError,
    redact_url,
    slug,
)

log = logging.getLogger(__name__)

# The longest wait for one read (a connection, or silence mid-transfer) at most.
HTTP_TIMEOUT_S = 60


def download_url(url: str, target_dir: Path, limits: Limits) -> Path:
    """Stream an http(s) URL to a file within the limits (see the module); returns the file."""
    shown = redact_url(url)
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / name
    wait = min(HTTP_TIMEOUT_S, limits.download_rate_window_s, limits.download_timeout_s)
    try:
        with urllib.request.urlopen(_request(url), timeout=wait) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total and total > limits.max_dataset_bytes:
                raise limits.exceeded(f"{shown} is {total} bytes", total, "max_dataset_bytes")
            with target.open("wb") as fh:
                _copy_bounded(response, fh, total, name, shown, limits)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"cannot download {shown}: HTTP {exc.code} {exc.reason}") from None
    except TimeoutError:
        raise SourceError(
            f"cannot download {shown}: no data for {wait:g} s "
            "(data.download_rate_window_s bounds the silence tolerated)"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot download {shown}: {reason}") from None
    return target


def _request(url: str) -> urllib.request.Request:
    """The request for a URL; a user:password in it becomes a Basic Authorization header."""
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": "fauna-ingest"}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1])
    return urllib.request.Request(urllib.parse.urlunsplit(parts), headers=headers)


class _Pace:
    """The download's deadline and slowest tolerated rate, checked as bytes arrive."""

    def __init__(self, limits: Limits, shown: str) -> None:
        self.limits, self.shown = limits, shown
        self.start = self.window_start = time.monotonic()
        self.window_done = 0

    def check(self, done: int) -> None:
        limits, now = self.limits, time.monotonic()
        if now - self.start > limits.download_timeout_s:
            what = f"download of {self.shown} still running after {done} bytes; seconds"
            raise limits.exceeded(what, round(now - self.start), "download_timeout_s")
        window = now - self.window_start
        if window < limits.download_rate_window_s:
            return
        rate = (done - self.window_done) / window
        if rate < limits.min_download_bytes_per_s:
            raise LimitExceeded(
                f"download of {self.shown} too slow: {rate:.0f} bytes/s over the last "
                f"{window:.0f} s < data.min_download_bytes_per_s="
                f"{limits.min_download_bytes_per_s}; stopped (lower it, or 0 for any rate)"
            )
        self.window_start, self.window_done = now, done


def _copy_bounded(
    response: IO[bytes], fh: IO[bytes], total: int | None, name: str, shown: str, limits: Limits
) -> None:
    """Copy what arrives (read1: whatever is there, so a slow source is measured, not
    waited for); the format is judged from the first bytes."""
    done, head, pace = 0, b"", _Pace(limits, shown)
    desc = f"download {name}"
    with progress(total=total, desc=desc, unit="B", unit_scale=True, log=log) as bar:
        while chunk := response.read1(CHUNK):
            done += len(chunk)
            if done > limits.max_dataset_bytes:
                what = f"download of {shown} passed {limits.max_dataset_bytes} bytes"
                raise limits.exceeded(what, done, "max_dataset_bytes")
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
                if len(head) == SNIFF_BYTES and not archive_format(head):
                    raise not_an_archive(name, head)
            fh.write(chunk)
            bar.update(len(chunk))
            pace.check(done)
    if len(head) < SNIFF_BYTES and not archive_format(head):
        raise not_an_archive(name, head)


def _fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    archive = download_url(source, workdir / "download", limits)
    return unpacked(archive, workdir / "unpacked", limits, remote=True)


def _name(source: str) -> str:
    parts = urllib.parse.urlsplit(source)
    last = PurePosixPath(parts.path.rstrip("/")).name
    if is_archive(last):
        return slug(strip_archive_suffix(last))
    return slug(PurePosixPath(last).stem or parts.hostname or "")


SOURCE = Source(
    "http",
    lambda s: s.startswith(("http://", "https://")),
    _fetch,
    _name,
    "an http(s) URL",
    redact=redact_url,
)
