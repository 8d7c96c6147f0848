"""One image file -> the NxN RGB JPEG that training, evaluation and prediction all see.

Shared by `preprocess` (every image of a dataset) and `predict` (one user's image),
so a served prediction sees exactly the pixels training saw.

`crop` (the paper's version 2) scales the shorter side to N and keeps the centred
NxN square; `stretch` (version 1) squashes the whole image to NxN. Both use
Pillow's LANCZOS filter. JPEGs are decoded at a reduced scale in the DCT domain
(`Image.draft`: 1/2, 1/4 or 1/8, always keeping the shorter side >= N), and the
resize works on the crop box only, so a photo-sized JPEG costs a fraction of a
full decode. The EXIF orientation is applied, so the result is upright.

Imports only Pillow (and NumPy lazily): preprocess's worker processes import it.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import ExifTags, Image

from fauna.contracts import CROP

if TYPE_CHECKING:
    import numpy as np

RESAMPLE = Image.Resampling.LANCZOS
FILTER_NAME = "lanczos"
# Non-JPEGs (no DCT shortcut) are first shrunk by an integer factor with `reduce`,
# leaving >= 3x for LANCZOS: indistinguishable from a full LANCZOS resize.
REDUCING_GAP = 3.0
# Transparent pixels are composited onto white (not black, not dropped alpha).
BACKGROUND = (255, 255, 255, 255)

# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose).
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: deep pixels are scaled, transparency goes onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return Image.fromarray(_to_uint8(image)).convert("RGB")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _to_uint8(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit or float pixels mapped onto 0..255 by scaling, never by clipping.

    I;16 is 0..65535 by definition. For I and F the range is guessed from the
    values: the first of 0..1 (float only), 0..255, 0..65535 that holds them,
    else their own min..max.
    """
    import numpy as np

    pixels = np.asarray(image)
    values = pixels.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        span = (0.0, 65535.0)
    else:
        ranges = ([(0.0, 1.0)] if pixels.dtype.kind == "f" else []) + [(0.0, 255.0), (0.0, 65535.0)]
        span = next(((a, b) for a, b in ranges if a <= low and high <= b), (low, high))
    scale = 255.0 / max(span[1] - span[0], 1e-12)
    return np.clip(np.rint((values - span[0]) * scale), 0, 255).astype(np.uint8)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); a broken EXIF block counts as upright."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels are still good
        return 1


def transform(image: Image.Image, size: int, mode: str) -> Image.Image:
    """Decode (at a reduced JPEG scale where possible), orient, to RGB, resize [+ centre crop]."""
    drafted = image.draft("RGB", (size, size))  # JPEG only; keeps both sides >= size
    image.load()
    orientation = exif_orientation(image)
    # A reduced JPEG decode rounds its size up; `box` is the true image area in it.
    width, height = drafted[1][2:] if drafted else image.size
    if mode == CROP:
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    else:
        box = (0, 0, width, height)
    # The centre square (and the whole-image stretch) is the same region whatever the
    # orientation, so resizing first and orienting the small result is exact and cheaper.
    result = to_rgb(image).resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    transpose = _ORIENT.get(orientation)
    return result.transpose(transpose) if transpose is not None else result


def preprocess_image(path: Path, size: int, mode: str, quality: int) -> bytes:
    """One image file -> NxN RGB JPEG bytes (no metadata; already upright)."""
    with Image.open(path) as image:
        result = transform(image, size, mode)
    buffer = io.BytesIO()
    # 4:4:4: at training sizes, halving the chroma resolution visibly smears colour edges.
    result.save(buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()
