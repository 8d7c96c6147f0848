"""http(s) URLs: streamed to a file within the limits, then unpacked as an archive."""

from __future__ import annotations

import base64
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from fauna.sources.archive import is_archive, strip_archive_suffix, unpacked
from fauna.sources.base import CHUNK, Fetched, Limits, Source, SourceError, redact_url, slug

HTTP_TIMEOUT_S = 60


def download_url(url: str, target_dir: Path, limits: Limits) -> Path:
    """Stream an http(s) URL to a file, stopping at `max_dataset_bytes`; returns the file."""
    shown = redact_url(url)
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "download"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / name
    request = _request(url)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total and total > limits.max_dataset_bytes:
                raise limits.exceeded(f"{shown} is {total} bytes", total, "max_dataset_bytes")
            with target.open("wb") as fh:
                _copy_bounded(response, fh, total, f"download {name}", shown, limits)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"cannot download {shown}: HTTP {exc.code} {exc.reason}") from None
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


def _copy_bounded(
    response: IO[bytes], fh: IO[bytes], total: int | None, desc: str, shown: str, limits: Limits
) -> None:
    done = 0
    with tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr) as bar:
        while chunk := response.read(CHUNK):
            done += len(chunk)
            if done > limits.max_dataset_bytes:
                what = f"download of {shown} passed {limits.max_dataset_bytes} bytes"
                raise limits.exceeded(what, done, "max_dataset_bytes")
            fh.write(chunk)
            bar.update(len(chunk))


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
    "http", lambda s: s.startswith(("http://", "https://")), _fetch, _name, redact=redact_url
)
