"""Archives: a local zip or tar(.gz/.bz2/.xz) file, and the bounded unpacking every source uses.

Archives are unpacked member by member; a member that would land outside the target
(absolute path, `..`, a link) or is larger than `max_file_bytes` is refused and
reported, never written. An archive that unpacks to more than `max_dataset_bytes`, to
more than `max_compression_ratio` times its own size (a zip bomb), or to more than
`max_files` members stops at once with one line naming the limit.
"""

from __future__ import annotations

import logging
import re
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from fauna.logs import progress
from fauna.sources.base import CHUNK, Fetched, Limits, Source, SourceError, slug

log = logging.getLogger(__name__)

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
UNSAFE_MEMBER = "unsafe archive member"
# The compression ratio is judged only past this many unpacked bytes: a few small,
# very compressible files (a CSV, tar headers) are no bomb.
RATIO_FLOOR_BYTES = 1 << 20


def is_archive(path: str | Path) -> bool:
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def strip_archive_suffix(name: str) -> str:
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _detect(source: str) -> bool:
    path = Path(source).expanduser()
    return path.is_file() and path.suffix.lower() != ".csv"


def _fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    return unpacked(Path(source).expanduser(), workdir / "unpacked", limits, remote=False)


def _name(source: str) -> str:
    path = Path(source).expanduser()
    return slug(strip_archive_suffix(path.name) if is_archive(path) else path.stem)


SOURCE = Source("archive", _detect, _fetch, _name, "an archive", local=True)


def unpacked(archive: Path, target: Path, limits: Limits, remote: bool) -> Fetched:
    refused = extract_archive(archive, target, limits)
    return Fetched(target, remote=remote, refused=refused)


def extract_archive(archive: Path, target: Path, limits: Limits) -> list[tuple[str, str, str]]:
    """Unpack a zip or tar(.gz/.bz2/.xz) into `target`; returns the refused members.

    The format comes from the first bytes (`archive_format`), never from trying to read
    the whole file as a tar (which takes minutes on gigabytes of zeros and says yes).
    """
    target.mkdir(parents=True, exist_ok=True)
    with archive.open("rb") as fh:
        head = fh.read(SNIFF_BYTES)
    kind = archive_format(head) or ("zip" if zipfile.is_zipfile(archive) else None)
    if kind == "zip":
        return _extract_zip(archive, target, limits)
    if kind:
        return _extract_tar(archive, target, limits, "r:" if kind == "tar" else f"r:{kind}")
    raise not_an_archive(archive.name, head)


# What `archive_format` needs: a tar header's "ustar" magic sits at 257..262.
SNIFF_BYTES = 512
_MAGIC = (
    ((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"), "zip"),
    ((b"\x1f\x8b",), "gz"),
    ((b"BZh",), "bz2"),
    ((b"\xfd7zXZ\x00",), "xz"),
)


def archive_format(head: bytes) -> str | None:
    """zip | gz | bz2 | xz | tar from an archive's first `SNIFF_BYTES` (None: none of them)."""
    for magics, kind in _MAGIC:
        if head.startswith(magics):
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    if len(head) >= SNIFF_BYTES:  # an old (v7) tar header: no magic, but a valid checksum
        try:
            tarfile.TarInfo.frombuf(head[:SNIFF_BYTES], "utf-8", "surrogateescape")
            return "tar"
        except tarfile.HeaderError:
            return None
    return None


def not_an_archive(name: str, head: bytes) -> SourceError:
    what = "only zero bytes" if head and not head.strip(b"\0") else f"starts with {head[:8]!r}"
    return SourceError(
        f"{name} is not a folder or a supported archive ({', '.join(ARCHIVE_SUFFIXES)}): "
        f"its first bytes say none of them ({what})"
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
        _check_zip_count(archive, budget)
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_zip_directory(infos, budget)
            for info in progress(infos, desc=f"unpack {archive.name}", unit="file", log=log):
                why = _unsafe_name(info.filename)
                if not why and stat.S_ISLNK(info.external_attr >> 16):
                    why = "symbolic link"
                dest = None if why else _inside(target, info.filename)
                if dest is None:
                    refused.append((info.filename, UNSAFE_MEMBER, why or "path escapes the target"))
                elif info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                elif info.file_size > limits.max_file_bytes:
                    refused.append(_too_large(info.filename, info.file_size, limits))
                else:
                    _unzip_member(zf, info, dest, budget)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceError(f"cannot unpack {archive.name}: {exc}") from None
    return refused


def _too_large(name: str, size: int, limits: Limits) -> tuple[str, str, str]:
    """A member refused for its size, as the image checks word it (PIL imported only here,
    so the sources table loads without it: `fauna <command> --help` lists its kinds)."""
    from fauna.data.imagecheck import FILE_TOO_LARGE, too_large_detail

    return (name, FILE_TOO_LARGE, too_large_detail(size, limits.max_file_bytes))


def _check_zip_count(archive: Path, budget: _Budget) -> None:
    """The end record declares the member count: too many is refused before the central
    directory (one object per member) is read."""
    with archive.open("rb") as fh:
        end = zipfile._EndRecData(fh)  # the stdlib's own reader of that record
    if end and end[zipfile._ECD_ENTRIES_TOTAL] > budget.limits.max_files:
        count = end[zipfile._ECD_ENTRIES_TOTAL]
        raise budget.limits.exceeded(f"{archive.name} has more members", count, "max_files")


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


def _extract_tar(
    archive: Path, target: Path, limits: Limits, mode: str = "r:*"
) -> list[tuple[str, str, str]]:
    refused: list[tuple[str, str, str]] = []
    budget = _Budget(archive, limits)
    try:
        _check_tar_headers(archive, mode, limits)
        with tarfile.open(archive, mode) as tf:
            for member in progress(tf, desc=f"unpack {archive.name}", unit="file", log=log):
                tf.members = []  # tarfile keeps every header otherwise: memory per member
                budget.member()
                # Where this member ends in the unpacked stream: known before reading it.
                budget.ratio(member.offset_data + member.size)
                why = _tar_refusal(member)
                if why:
                    refused.append((member.name, UNSAFE_MEMBER, why))
                elif member.size > limits.max_file_bytes:
                    refused.append(_too_large(member.name, member.size, limits))
                else:
                    budget.write(member.size)  # tar headers tell the truth about sizes
                    try:
                        tf.extract(member, target, filter="data")
                    except tarfile.FilterError as exc:
                        refused.append((member.name, UNSAFE_MEMBER, str(exc)))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"cannot unpack {archive.name}: {exc}") from None
    return refused


def _check_tar_headers(archive: Path, mode: str, limits: Limits) -> None:
    """A pass over the headers alone (data skipped, nothing written): too many members, or
    a bomb, is refused in seconds rather than after unpacking up to the limit."""
    budget = _Budget(archive, limits)
    with tarfile.open(archive, mode) as tf:
        for member in tf:
            tf.members = []
            budget.member()
            budget.ratio(member.offset_data + member.size)


def _tar_refusal(member: tarfile.TarInfo) -> str:
    why = _unsafe_name(member.name)
    if not why and member.issym():
        why = "symbolic link"
    if not why and member.islnk():
        why = "hard link"
    if not why and not (member.isfile() or member.isdir()):
        why = "special file (device or fifo)"
    return why
