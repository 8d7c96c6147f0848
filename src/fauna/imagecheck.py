"""Opening untrusted image files safely, for every step that reads raw images.

`inspect_image` decides whether a file is a usable image (and why not);
`open_image` gives a checked Pillow image to code that goes on to decode it.
Both refuse decompression bombs by pixel count before any pixel is decoded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

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

# EXIF orientations that swap width and height (rotated by 90 or 270 degrees).
_TRANSPOSED = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


class ImageRejected(Exception):
    """The file is not a usable image; `reason` is one of the constants above."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
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
def bomb_warnings_as_errors() -> Iterator[None]:
    """Make Pillow's DecompressionBombWarning an exception (so it is quarantined, not printed).

    Warning filters are process-wide: enter this once around a whole batch of
    work (threads included), not per image.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def open_image(source: bytes | str | Path, max_pixels: int) -> Image.Image:
    """A lazily-decoded Pillow image, refused (ImageRejected) if not an image or too large."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        img = Image.open(fp, formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(BOMB, str(exc)) from None
    except UnidentifiedImageError:
        raise ImageRejected(NOT_AN_IMAGE, "Pillow does not recognise the content") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageRejected(CORRUPT, _one_line(exc)) from None
    width, height = img.size
    if width * height > max_pixels:
        img.close()
        raise ImageRejected(BOMB, f"{width}x{height} = {width * height} pixels > {max_pixels}")
    if width <= 0 or height <= 0:
        img.close()
        raise ImageRejected(CORRUPT, f"impossible size {width}x{height}")
    return img


def inspect_image(path: str | Path, max_pixels: int) -> ImageCheck:
    """Hash the file, then open, verify and fully decode it: any failure is a reason."""
    data = Path(path).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return ImageCheck(sha, False, ZERO_BYTES)
    try:
        width, height, fmt = _decode_fully(data, max_pixels)
    except ImageRejected as exc:
        return ImageCheck(sha, False, exc.reason, exc.detail)
    return ImageCheck(sha, True, width=width, height=height, format=fmt)


def _decode_fully(data: bytes, max_pixels: int) -> tuple[int, int, str]:
    with open_image(data, max_pixels) as img:
        fmt = img.format or ""
        try:
            img.verify()
        except Exception as exc:  # Pillow raises many types for broken structure
            raise ImageRejected(_broken(exc), _one_line(exc)) from None
    with open_image(data, max_pixels) as img:
        width, height = img.size
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
        except Exception:  # a broken EXIF block is not worth rejecting the pixels for
            orientation = 1
        # A full decode finds truncation; JPEG decodes at 1/8 scale (same check, ~8x less work).
        img.draft(img.mode, (1, 1))
        try:
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageRejected(BOMB, str(exc)) from None
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
