"""Where a dataset comes from: Kaggle, a local folder or archive, S3 or an http(s) URL.

Every source ends up as a local folder, within limits (`Limits`, from `data.max_*`)
enforced while the bytes stream in: a download that grows past `max_dataset_bytes`,
an archive that unpacks to more than that or to more than `max_compression_ratio`
times its own size (a zip bomb), or one with more than `max_files` members, stops at
once with one line naming the limit and the config key that raises it. Memory stays
flat whatever the input: everything moves in chunks.

Archives are unpacked member by member; a member that would land outside the target
(absolute path, `..`, a link) or is larger than `max_file_bytes` is refused and
reported, never written.

Sources are shown and stored redacted (`redact`): a presigned URL's signature, or a
user:password in a URL, never reaches a log, a report or `source.json`.
"""

from __future__ import annotations

import base64
import logging
import re
import stat
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from tqdm import tqdm

from fauna import storage
from fauna.config import DataConfig
from fauna.errors import FaunaError
from fauna.imagecheck import FILE_TOO_LARGE, too_large_detail

log = logging.getLogger(__name__)

KAGGLE_PREFIX = "kaggle:"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
UNSAFE_MEMBER = "unsafe archive member"
_KAGGLE_HANDLE = re.compile(r"^[\w.-]+/[\w.-]+(/versions/\d+)?$")
HTTP_TIMEOUT_S = 60
CHUNK = 1 << 20
# The compression ratio is judged only past this many unpacked bytes: a few small,
# very compressible files (a CSV, tar headers) are no bomb.
RATIO_FLOOR_BYTES = 1 << 20


class SourceError(FaunaError):
    """The dataset source cannot be read (one clear line, no traceback)."""


class LimitExceeded(SourceError):
    """The source crosses one of the `data.max_*` limits."""


@dataclass(frozen=True)
class Limits:
    """How much a source may bring in (see DataConfig for the meaning of each)."""

    max_file_bytes: int
    max_dataset_bytes: int
    max_files: int
    max_compression_ratio: float

    @classmethod
    def from_config(cls, cfg: DataConfig) -> Limits:
        return cls(
            cfg.max_file_bytes, cfg.max_dataset_bytes, cfg.max_files, cfg.max_compression_ratio
        )

    def exceeded(self, what: str, found: float, key: str) -> LimitExceeded:
        """One line: what crossed which limit, and the config key that raises it."""
        limit = getattr(self, key)
        return LimitExceeded(
            f"{what}: {_number(found)} > data.{key}={_number(limit)}; stopped "
            f"(raise data.{key} if the source is what you expect)"
        )


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass
class Fetched:
    """A source made local: `root` holds the data; `refused` lists (member, reason, detail)."""

    root: Path
    remote: bool
    refused: list[tuple[str, str, str]] = field(default_factory=list)


def source_kind(source: str) -> str:
    """kaggle | s3 | http | local."""
    if source.startswith(KAGGLE_PREFIX):
        return "kaggle"
    if storage.is_s3_uri(source):
        return "s3"
    if source.startswith(("http://", "https://")):
        return "http"
    return "local"


def redact(source: str) -> str:
    """A source as it may be shown and stored: a URL keeps scheme, host and path only.

    A presigned URL's query (signature, key id), a fragment and a user:password are
    dropped; anything that is not a URL is returned as it is.
    """
    if source_kind(source) not in ("s3", "http"):
        return source
    parts = urllib.parse.urlsplit(source)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _strip_archive_suffix(name: str) -> str:
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def dataset_name(source: str) -> str:
    """A name for the dataset, from its source (when `data.name` is not set).

    The Kaggle dataset's name, a folder's name, an archive's stem, the last part of an
    S3 prefix (or the bucket), a URL's file stem.
    """
    kind = source_kind(source)
    if kind == "kaggle":
        parts = source[len(KAGGLE_PREFIX) :].strip("/").split("/")
        name = parts[1] if len(parts) > 1 else parts[0]
    elif kind in ("s3", "http"):
        parts = urllib.parse.urlsplit(source)
        last = PurePosixPath(parts.path.rstrip("/")).name
        if is_archive(last):
            name = _strip_archive_suffix(last)
        else:
            name = (PurePosixPath(last).stem if kind == "http" else last) or parts.hostname or ""
    else:
        path = Path(source).expanduser().absolute()
        if path.is_dir():
            name = path.name
        else:
            name = _strip_archive_suffix(path.name) if is_archive(path) else path.stem
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "dataset"


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    """Make `source` available as a local folder (downloading into `workdir` if needed)."""
    kind = source_kind(source)
    if kind == "kaggle":
        return Fetched(download_kaggle(source, workdir / "kaggle"), remote=True)
    if kind == "s3":
        return _fetch_s3(source, workdir, limits)
    if kind == "http":
        archive = download_url(source, workdir / "download", limits)
        return _unpacked(archive, workdir / "unpacked", limits, remote=True)
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(f"source not found: {source} (no such file or folder)")
    if path.is_dir():
        return Fetched(path, remote=False)
    return _unpacked(path, workdir / "unpacked", limits, remote=False)


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
    """kagglehub downloads and unpacks; the size limits apply to what it unpacked."""
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


def download_url(url: str, target_dir: Path, limits: Limits) -> Path:
    """Stream an http(s) URL to a file, stopping at `max_dataset_bytes`; returns the file."""
    shown = redact(url)
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


# -- S3 -----------------------------------------------------------------------------------------


def _fetch_s3(source: str, workdir: Path, limits: Limits) -> Fetched:
    """An archive object, or a prefix holding a folder tree (or a single archive)."""
    storage.check_bucket(source)
    loc = storage.parse_s3_uri(source)
    if loc.key and is_archive(loc.key) and storage.exists(source):
        archive = storage.download_file(source, workdir / "download" / PurePosixPath(loc.key).name)
        _check_download_size(archive, source, limits)
        return _unpacked(archive, workdir / "unpacked", limits, remote=True)
    count = size = 0
    for _key, object_size in storage.list_keys(source):
        count, size = count + 1, size + object_size
        if count > limits.max_files:
            raise limits.exceeded(f"{source} holds more objects", count, "max_files")
    if size > limits.max_dataset_bytes:
        raise limits.exceeded(f"{source} holds {size} bytes", size, "max_dataset_bytes")
    target = workdir / "s3"
    try:
        storage.download_dir(source, target)
    except storage.StorageError as exc:
        if str(exc).startswith("nothing found"):
            raise SourceError(f"nothing found under {source}") from None
        raise
    files = [p for p in target.rglob("*") if p.is_file()]
    if len(files) == 1 and is_archive(files[0]):
        return _unpacked(files[0], workdir / "unpacked", limits, remote=True)
    return Fetched(target, remote=True)


def _check_download_size(path: Path, source: str, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_dataset_bytes:
        path.unlink()
        raise limits.exceeded(f"{source} is {size} bytes", size, "max_dataset_bytes")


# -- archives -----------------------------------------------------------------------------------


def _unpacked(archive: Path, target: Path, limits: Limits, remote: bool) -> Fetched:
    refused = extract_archive(archive, target, limits)
    return Fetched(target, remote=remote, refused=refused)


def extract_archive(archive: Path, target: Path, limits: Limits) -> list[tuple[str, str, str]]:
    """Unpack a zip or tar(.gz/.bz2/.xz) into `target`; returns the refused members."""
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, target, limits)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, target, limits)
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


class _Budget:
    """What an archive has unpacked so far, against the limits (raises when one is crossed)."""

    def __init__(self, archive: Path, limits: Limits) -> None:
        self.archive = archive
        self.limits = limits
        self.size = max(1, archive.stat().st_size)
        self.members = 0
        self.written = 0

    def member(self, count: int = 1) -> None:
        self.members += count
        if self.members > self.limits.max_files:
            what = f"{self.archive.name} has more members"
            raise self.limits.exceeded(what, self.members, "max_files")

    def write(self, size: int) -> None:
        self.written += size
        if self.written > self.limits.max_dataset_bytes:
            what = f"{self.archive.name} unpacks to more bytes"
            raise self.limits.exceeded(what, self.written, "max_dataset_bytes")

    def ratio(self, unpacked: int) -> None:
        """`unpacked` bytes (so far, or declared) out of an archive of `self.size` bytes."""
        ratio = unpacked / self.size
        if unpacked >= RATIO_FLOOR_BYTES and ratio > self.limits.max_compression_ratio:
            what = (
                f"{self.archive.name} ({self.size} bytes) unpacks to {unpacked} bytes or more "
                "(a zip bomb?); compression ratio"
            )
            raise self.limits.exceeded(what, round(ratio, 1), "max_compression_ratio")


def _extract_zip(archive: Path, target: Path, limits: Limits) -> list[tuple[str, str, str]]:
    refused: list[tuple[str, str, str]] = []
    budget = _Budget(archive, limits)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_zip_directory(infos, budget)
            for info in tqdm(infos, desc=f"unpack {archive.name}", file=sys.stderr):
                why = _unsafe_name(info.filename)
                if not why and stat.S_ISLNK(info.external_attr >> 16):
                    why = "symbolic link"
                dest = None if why else _inside(target, info.filename)
                if dest is None:
                    refused.append((info.filename, UNSAFE_MEMBER, why or "path escapes the target"))
                elif info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif info.file_size > limits.max_file_bytes:
                    detail = too_large_detail(info.file_size, limits.max_file_bytes)
                    refused.append((info.filename, FILE_TOO_LARGE, detail))
                else:
                    _unzip_member(zf, info, dest, budget)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"cannot unpack {archive.name}: {exc}") from None
    return refused


def _check_zip_directory(infos: list[zipfile.ZipInfo], budget: _Budget) -> None:
    """The central directory declares every size: a bomb is refused before any byte is written."""
    limits = budget.limits
    budget.member(len(infos))
    budget.ratio(sum(i.file_size for i in infos))
    kept = sum(i.file_size for i in infos if i.file_size <= limits.max_file_bytes)
    if kept > limits.max_dataset_bytes:
        what = f"{budget.archive.name} declares {kept} bytes of members"
        raise limits.exceeded(what, kept, "max_dataset_bytes")


def _unzip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, budget: _Budget) -> None:
    """Stream one member out, counting every chunk (a header may lie about the size)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with zf.open(info) as src, dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            if written > budget.limits.max_file_bytes:
                what = f"{info.filename} unpacks past its declared size"
                raise budget.limits.exceeded(what, written, "max_file_bytes")
            budget.write(len(chunk))
            budget.ratio(budget.written)
            out.write(chunk)


def _extract_tar(archive: Path, target: Path, limits: Limits) -> list[tuple[str, str, str]]:
    refused: list[tuple[str, str, str]] = []
    budget = _Budget(archive, limits)
    try:
        with tarfile.open(archive) as tf:
            for member in tqdm(tf, desc=f"unpack {archive.name}", file=sys.stderr):
                tf.members = []  # tarfile keeps every header otherwise: memory per member
                budget.member()
                # Where this member ends in the unpacked stream: known before reading it.
                budget.ratio(member.offset_data + member.size)
                why = _tar_refusal(member)
                if why:
                    refused.append((member.name, UNSAFE_MEMBER, why))
                elif member.size > limits.max_file_bytes:
                    detail = too_large_detail(member.size, limits.max_file_bytes)
                    refused.append((member.name, FILE_TOO_LARGE, detail))
                else:
                    budget.write(member.size)  # tar headers tell the truth about sizes
                    try:
                        tf.extract(member, target, filter="data")
                    except tarfile.FilterError as exc:
                        refused.append((member.name, UNSAFE_MEMBER, str(exc)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"cannot unpack {archive.name}: {exc}") from None
    return refused


def _tar_refusal(member: tarfile.TarInfo) -> str:
    why = _unsafe_name(member.name)
    if not why and member.issym():
        why = "symbolic link"
    if not why and member.islnk():
        why = "hard link"
    if not why and not (member.isfile() or member.isdir()):
        why = "special file (device or fifo)"
    return why
