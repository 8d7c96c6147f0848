"""Opening untrusted image files safely, for every step that reads raw images.

`inspect_image` decides whether a file is a usable image (and why not);
`open_image` gives a checked Pillow image to code that goes on to decode it.
Both refuse decompression bombs by pixel count before any pixel is decoded, and
say so against the configured limit (`data.max_image_pixels`), not Pillow's.
Files are hashed in chunks and decoded from disk: never whole in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fauna.data.imaging import exif_orientation

# What counts as "looks like an image" by name, and what Pillow may open.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)
# (JPEG also opens camera MPO files, reported as format "MPO".)
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")
Image.init()  # register every plugin now, not lazily from several threads at once

# Reasons, shared by the quarantine reports of every step.
ZERO_BYTES = "zero-byte file"
NOT_AN_IMAGE = "not an image"
TRUNCATED = "truncated image"
CORRUPT = "corrupt image"
BOMB = "decompression bomb"
FILE_TOO_LARGE = "file too large"

# EXIF orientations that swap width and height (rotated by 90 or 270 degrees).
_TRANSPOSED = {5, 6, 7, 8}


class ImageRejected(Exception):
    """The file is not a usable image; `reason` is one of the constants above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class ImageCheck:
    """What `inspect_image` learnt: the hash always, the rest only when `ok`."""

    sha256: str
    ok: bool
    reason: str = ""
    detail: str = ""
    width: int = 0
    height: int = 0
    format: str = ""


def looks_like_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


@contextlib.contextmanager
def bomb_warnings_as_errors(max_pixels: int | None = None) -> Iterator[None]:
    """Make Pillow's DecompressionBombWarning an exception (so it is quarantined, not printed).

    With `max_pixels`, Pillow's own guard uses that limit too (it would otherwise refuse
    images the configuration allows). Both settings are process-wide: enter this once
    around a whole batch of work (threads included), not per image.
    """
    saved = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        if max_pixels is not None:
            Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def bomb_detail(max_pixels: int, pixels: int | None = None, size: str = "") -> str:
    """Why an image counts as a decompression bomb, against the configured limit."""
    found = f"{size} = {pixels} pixels" if size else f"{pixels} pixels" if pixels else "too large"
    return (
        f"{found} > data.max_image_pixels={max_pixels} "
        "(raise data.max_image_pixels to accept such images)"
    )


def bomb_from_pillow(exc: Exception, max_pixels: int) -> ImageRejected:
    """Pillow's bomb error or warning, restated against `data.max_image_pixels`."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return ImageRejected(BOMB, bomb_detail(max_pixels, int(found.group(1)) if found else None))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in chunks (flat memory whatever the size)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def too_large_detail(size: int, max_bytes: int) -> str:
    return f"{size} bytes > data.max_file_bytes={max_bytes} (raise it to accept such files)"


def open_image(source: bytes | str | Path, max_pixels: int) -> Image.Image:
    """A lazily-decoded Pillow image, refused (ImageRejected) if not an image or too large."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        img = Image.open(fp, formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise bomb_from_pillow(exc, max_pixels) from None
    except UnidentifiedImageError:
        raise ImageRejected(NOT_AN_IMAGE, "Pillow does not recognise the content") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected(CORRUPT, _one_line(exc)) from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageRejected(BOMB, bomb_detail(max_pixels, width * height, f"{width}x{height}"))
    if width <= 0 or height <= 0:
        img.close()
        raise ImageRejected(CORRUPT, f"impossible size {width}x{height}")
    return img


def inspect_image(path: str | Path, max_pixels: int, max_bytes: int = 0) -> ImageCheck:
    """Hash the file (in chunks), then open, verify and fully decode it: any failure is a reason.

    A file over `max_bytes` (0 = no limit) is refused unread.
    """
    size = Path(path).stat().st_size
    if max_bytes and size > max_bytes:
        return ImageCheck("", False, FILE_TOO_LARGE, too_large_detail(size, max_bytes))
    sha = file_sha256(path)
    if not size:
        return ImageCheck(sha, False, ZERO_BYTES)
    try:
        width, height, fmt = _decode_fully(Path(path), max_pixels)
    except ImageRejected as exc:
        return ImageCheck(sha, False, exc.reason, exc.detail)
    return ImageCheck(sha, True, width=width, height=height, format=fmt)


def _decode_fully(path: Path, max_pixels: int) -> tuple[int, int, str]:
    with open_image(path, max_pixels) as img:
        fmt = img.format or ""
        try:
            img.verify()
        except Exception as exc:  # Pillow raises many types for broken structure
            raise ImageRejected(_broken(exc), _one_line(exc)) from None
    with open_image(path, max_pixels) as img:
        width, height = img.size
        orientation = exif_orientation(img)
        # A full decode finds truncation; JPEG decodes at 1/8 scale (same check, ~8x less work).
        img.draft(img.mode, (1, 1))
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise bomb_from_pillow(exc, max_pixels) from None
        except Exception as exc:
            raise ImageRejected(_broken(exc), _one_line(exc)) from None
    if orientation in _TRANSPOSED:
        width, height = height, width
    return width, height, fmt


def _broken(exc: Exception) -> str:
    return TRUNCATED if "truncated" in str(exc).lower() else CORRUPT


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]
