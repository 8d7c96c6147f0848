"""Where a dataset comes from: Kaggle, a local folder or archive, S3 or an http(s) URL.

Every source ends up as a local folder. Archives are unpacked member by member
and a member that would land outside the target (absolute path, `..`, a link)
is refused and reported, never written.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from fauna import storage
from fauna.errors import FaunaError

log = logging.getLogger(__name__)

KAGGLE_PREFIX = "kaggle:"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
UNSAFE_MEMBER = "unsafe archive member"
_KAGGLE_HANDLE = re.compile(r"^[\w.-]+/[\w.-]+(/versions/\d+)?$")
HTTP_TIMEOUT_S = 60


class SourceError(FaunaError):
    """The dataset source cannot be read (one clear line, no traceback)."""


@dataclass
class Fetched:
    """A source made local: `root` holds the data; `refused` lists (member, why) not unpacked."""

    root: Path
    remote: bool
    refused: list[tuple[str, str]] = field(default_factory=list)


def source_kind(source: str) -> str:
    """kaggle | s3 | http | local."""
    if source.startswith(KAGGLE_PREFIX):
        return "kaggle"
    if storage.is_s3_uri(source):
        return "s3"
    if source.startswith(("http://", "https://")):
        return "http"
    return "local"


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def fetch(source: str, workdir: Path) -> Fetched:
    """Make `source` available as a local folder (downloading into `workdir` if needed)."""
    kind = source_kind(source)
    if kind == "kaggle":
        return Fetched(download_kaggle(source, workdir / "kaggle"), remote=True)
    if kind == "s3":
        return _fetch_s3(source, workdir)
    if kind == "http":
        archive = download_url(source, workdir / "download")
        return _unpacked(archive, workdir / "unpacked", remote=True)
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"source not found: {source} (no such file or folder)")
    if path.is_dir():
        return Fetched(path, remote=False)
    return _unpacked(path, workdir / "unpacked", remote=False)


# -- Kaggle -------------------------------------------------------------------------------------


def kaggle_credentials_found() -> bool:
    """Whether kagglehub finds credentials (env or kaggle.json); a broken file is an error."""
    from kagglehub.config import get_kaggle_credentials

    try:
        return bool(get_kaggle_credentials())
    except ValueError as exc:  # a broken kaggle.json
        raise SourceError(f"Kaggle credentials unusable: {exc}") from None


def check_kaggle_credentials() -> None:
    """Fail in one line, before any network call, when no Kaggle credentials are set."""
    if not kaggle_credentials_found():
        raise SourceError(
            "Kaggle credentials missing: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN, "
            "or write ~/.kaggle/kaggle.json), or ingest a folder, archive, s3:// or http(s) URL"
        )


def download_kaggle(source: str, target: Path) -> Path:
    handle = source[len(KAGGLE_PREFIX) :].strip("/")
    if not _KAGGLE_HANDLE.match(handle):
        raise SourceError(f"bad Kaggle handle {source!r}: expected kaggle:owner/dataset")
    check_kaggle_credentials()
    import kagglehub
    import requests

    log.info("downloading Kaggle dataset %s", handle)
    try:
        # kagglehub unpacks the dataset's archive itself.
        return Path(kagglehub.dataset_download(handle, output_dir=str(target)))
    except (requests.RequestException, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"Kaggle download of {handle} failed: {first}") from None


# -- http(s) ------------------------------------------------------------------------------------


def download_url(url: str, target_dir: Path) -> Path:
    """Stream an http(s) URL to a file (never whole in memory); returns the file."""
    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "download"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / name
    request = urllib.request.Request(url, headers={"User-Agent": "fauna-ingest"})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with (
                target.open("wb") as fh,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=f"download {name}",
                    file=sys.stderr,
                ) as bar,
            ):
                while chunk := response.read(1 << 20):
                    fh.write(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise SourceError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot download {url}: {reason}") from None
    return target


# -- S3 -----------------------------------------------------------------------------------------


def _fetch_s3(source: str, workdir: Path) -> Fetched:
    """An archive object, or a prefix holding a folder tree (or a single archive)."""
    storage.check_bucket(source)
    loc = storage.parse_s3_uri(source)
    if loc.key and is_archive(loc.key) and storage.exists(source):
        archive = storage.download_file(source, workdir / "download" / PurePosixPath(loc.key).name)
        return _unpacked(archive, workdir / "unpacked", remote=True)
    target = workdir / "s3"
    try:
        storage.download_dir(source, target)
    except storage.StorageError as exc:
        if str(exc).startswith("nothing found"):
            raise SourceError(f"nothing found under {source}") from None
        raise
    files = [p for p in target.rglob("*") if p.is_file()]
    if len(files) == 1 and is_archive(files[0]):
        return _unpacked(files[0], workdir / "unpacked", remote=True)
    return Fetched(target, remote=True)


# -- archives -----------------------------------------------------------------------------------


def _unpacked(archive: Path, target: Path, remote: bool) -> Fetched:
    refused = extract_archive(archive, target)
    return Fetched(target, remote=remote, refused=refused)


def extract_archive(archive: Path, target: Path) -> list[tuple[str, str]]:
    """Unpack a zip or tar(.gz/.bz2/.xz) into `target`; returns the refused (member, why)."""
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, target)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, target)
    raise SourceError(
        f"{archive.name} is not a folder or a supported archive ({', '.join(ARCHIVE_SUFFIXES)})"
    )


def _unsafe_name(name: str) -> str:
    """Why a member name may not be written under the target ("" if it may)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "path escapes the target (..)"
    return ""


def _inside(target: Path, name: str) -> Path | None:
    path = (target / PurePosixPath(name.replace("\\", "/"))).resolve()
    return path if path.is_relative_to(target.resolve()) else None


def _extract_zip(archive: Path, target: Path) -> list[tuple[str, str]]:
    refused: list[tuple[str, str]] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in tqdm(zf.infolist(), desc=f"unpack {archive.name}", file=sys.stderr):
                why = _unsafe_name(info.filename)
                if not why and stat.S_ISLNK(info.external_attr >> 16):
                    why = "symbolic link"
                dest = None if why else _inside(target, info.filename)
                if dest is None:
                    refused.append((info.filename, why or "path escapes the target"))
                    continue
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"cannot unpack {archive.name}: {exc}") from None
    return refused


def _extract_tar(archive: Path, target: Path) -> list[tuple[str, str]]:
    refused: list[tuple[str, str]] = []
    try:
        with tarfile.open(archive) as tf:
            for member in tqdm(tf, desc=f"unpack {archive.name}", file=sys.stderr):
                why = _unsafe_name(member.name)
                if not why and member.issym():
                    why = "symbolic link"
                if not why and member.islnk():
                    why = "hard link"
                if not why and not (member.isfile() or member.isdir()):
                    why = "special file (device or fifo)"
                if why:
                    refused.append((member.name, why))
                    continue
                try:
                    tf.extract(member, target, filter="data")
                except tarfile.FilterError as exc:
                    refused.append((member.name, str(exc)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"cannot unpack {archive.name}: {exc}") from None
    return refused
