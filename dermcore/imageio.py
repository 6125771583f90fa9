"""Uploaded photo bytes -> uint8 HxWx3 RGB array, and back to PNG bytes for downloads.

Everything happens in memory: uploads are patient photos, so the bytes are never written to
disk and never logged (only their size and format name, at debug level). Every way a file can
fail to decode ends in one exception type, `ImageLoadError`, whose message is a sentence meant
for the person who uploaded the file.
"""

from __future__ import annotations

import io
import logging
import math
import warnings

import cv2
import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

logger = logging.getLogger(__name__)
# Pillow logs every EXIF/TIFF tag value at DEBUG (descriptions, dates, GPS: patient metadata), so
# its loggers stay above DEBUG even when the app runs at DEBUG.
logging.getLogger("PIL").setLevel(logging.INFO)

try:
    from pillow_heif import register_heif_opener
except ImportError:  # optional: iPhone HEIC photos are refused as "not an image" without it
    HEIC_SUPPORTED = False
else:
    register_heif_opener()
    HEIC_SUPPORTED = True

# Pillow formats we hand the bytes to. Restricting Image.open to these keeps the many exotic
# plugins (EPS runs Ghostscript, PSD, ICO, ...) away from untrusted uploads. Camera JPEGs that
# carry a second picture (MPO) are opened by the JPEG entry too.
_PILLOW_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF") + (
    ("HEIF",) if HEIC_SUPPORTED else ()
)
SUPPORTED_EXTENSIONS: tuple[str, ...] = (
    "jpg",
    "jpeg",
    "png",
    "webp",
    "bmp",
    "tif",
    "tiff",
    "gif",
) + (("heic", "heif") if HEIC_SUPPORTED else ())
_FORMAT_LIST = (
    "JPEG, PNG, WebP, BMP, TIFF or HEIC" if HEIC_SUPPORTED else "JPEG, PNG, WebP, BMP or TIFF"
)

_NOT_AN_IMAGE = f"This file is not an image we can read. Please upload a {_FORMAT_LIST} photo."
_DAMAGED = (
    "This photo is damaged or incomplete and cannot be opened. "
    "Please upload the original file again."
)
_WHITE = (255, 255, 255)
# EXIF orientation -> the transpose that displays the stored pixels upright.
_TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_SIDES = frozenset((5, 6, 7, 8))  # orientations whose transpose swaps width and height


class ImageLoadError(ValueError):
    """An upload that cannot become an RGB array. The message is safe to show to the user."""


def load_image(
    data: bytes,
    *,
    max_bytes: int = 50_000_000,
    max_pixels: int = 40_000_000,
    max_side: int | None = None,
) -> np.ndarray:
    """Decode JPEG/PNG/WebP/BMP/TIFF/GIF (and HEIC with pillow-heif) bytes to uint8 HxWx3 RGB.

    The result is a new C-contiguous array with values in [0, 255], turned upright by its EXIF
    orientation. Transparent areas are composited on white; 16-bit samples are scaled by their
    bit depth; animations give their first frame. Raises ImageLoadError for anything else,
    including files over `max_bytes` bytes or `max_pixels` pixels, which are refused before any
    pixel data is decoded.

    With `max_side`, the result's longer side is at most that many pixels (area averaging, as
    downscale_for_display). A JPEG is then decoded at the smallest DCT scale (1/2, 1/4, 1/8)
    that still covers `max_side`, which for a 12-megapixel phone photo and max_side 1536 needs a
    quarter of the memory and time of a full decode.
    """
    if max_bytes < 1 or max_pixels < 1:
        raise ValueError(f"limits must be positive, got {max_bytes=} and {max_pixels=}")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ImageLoadError("No file data was received. Please upload the photo again.")
    size_bytes = memoryview(data).nbytes
    if size_bytes == 0:
        raise ImageLoadError("This file is empty. Please upload the photo again.")
    if size_bytes > max_bytes:
        raise ImageLoadError(
            f"This file is too large ({_millions(size_bytes)} MB); "
            f"the limit is {max_bytes / 1e6:g} MB."
        )
    try:
        return _decode(data, max_pixels, max_side)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        logger.debug("refused %d bytes: %s", size_bytes, type(error).__name__)
        raise ImageLoadError(
            f"This photo is too large to open safely; the limit is {max_pixels / 1e6:g} megapixels."
        ) from None
    except UnidentifiedImageError:
        logger.debug("refused %d bytes: no allowed format recognised", size_bytes)
        raise ImageLoadError(_NOT_AN_IMAGE) from None
    except Exception as error:
        # Pillow's plugins and codecs signal damaged data with many types (OSError, SyntaxError,
        # ValueError, struct.error, EOFError, MemoryError, ...). Only the type name is logged:
        # some messages quote header bytes of the file.
        logger.debug("refused %d bytes: %s", size_bytes, type(error).__name__)
        raise ImageLoadError(_DAMAGED) from None


def _decode(data: bytes, max_pixels: int, max_side: int | None = None) -> np.ndarray:
    """Open lazily, check the header's size, then decode and convert; Pillow errors propagate."""
    # catch_warnings swaps the process-wide filter list before Python 3.14, so a Streamlit session
    # decoding at the same time may briefly see this filter or leave it installed. Both are
    # harmless: it only turns Pillow's bomb warning into an error, and _check_pixel_count is what
    # enforces our (lower) limit either way.
    with (
        warnings.catch_warnings(action="error", category=Image.DecompressionBombWarning),
        Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as image,
    ):
        _check_pixel_count(image.size, max_pixels)
        if max_side is not None and image.format in ("JPEG", "MPO") and max(image.size) > max_side:
            scale = max_side / max(image.size)
            image.draft(image.mode, tuple(math.ceil(side * scale) for side in image.size))
        image.load()
        logger.debug("decoding %s %s %dx%d", image.format, image.mode, *image.size)
        integer_bits = _integer_bits(image)
        rgb = _to_rgb(_upright(image), integer_bits)
    return rgb if max_side is None else downscale_for_display(rgb, max_side)


def upright_size(data: bytes) -> tuple[int, int]:
    """(height, width) of an image file as load_image would turn it, from its header alone.
    For files load_image has accepted; Pillow's errors propagate for others."""
    with Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as image:
        width, height = image.size
        orientation = _orientation(image)
    return (width, height) if orientation in _SWAPS_SIDES else (height, width)


def _millions(count: int) -> str:
    """count / 1e6 with one decimal, rounded up so a file just over a limit never reads as equal
    to it."""
    return f"{math.ceil(count / 1e5) / 10:.1f}"


def _check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse on the header's size alone: Image.open has not decoded any pixels yet."""
    width, height = size
    if width < 1 or height < 1:
        raise ImageLoadError("This image has no pixels. Please upload the photo again.")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"This photo is too large ({_millions(width * height)} megapixels); "
            f"the limit is {max_pixels / 1e6:g} megapixels."
        )


def rgb_from_pil(image: Image.Image) -> np.ndarray:
    """An opened Pillow image in any mode -> new uint8 HxWx3 RGB array, upright by its EXIF
    orientation, transparency composited on white: what load_image gives for its file."""
    return _to_rgb(_upright(image), _integer_bits(image))


def _integer_bits(image: Image.Image) -> int:
    """Magnitude bits per sample of a 16/32-bit integer image. TIFF states them (BitsPerSample,
    tag 258, less the sign bit when SampleFormat, tag 339, is 2); files of other formats only
    produce unsigned 16-bit samples. A mode "I" image with no tags and no sample above 255 was
    made in memory from 8-bit pixels (Image.convert("I")), not read from a 16-bit file.
    Read before _upright, which drops the TIFF tags."""
    tags = getattr(image, "tag_v2", None)
    if image.mode == "I" and tags is None and image.getextrema()[1] <= 255:
        return 8
    if image.mode != "I" or tags is None:
        return 16
    signed = tags.get(339, (1,))[0] == 2
    return max(8, int(tags.get(258, (16,))[0]) - int(signed))


def _upright(image: Image.Image) -> Image.Image:
    """Turn the photo as its EXIF orientation (1..8) says. This is ImageOps.exif_transpose's
    table without its last step, rewriting the EXIF block: a malformed tag elsewhere in the
    block (found by fuzzing) makes that rewrite raise after the orientation was read fine."""
    method = _TRANSPOSE_FOR_ORIENTATION.get(_orientation(image))
    return image if method is None else image.transpose(method)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8); 1 (as stored) when absent or unreadable."""
    try:
        return image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception as error:
        logger.warning("EXIF unreadable (%s); using the photo as stored", type(error).__name__)
        return 1


def _to_rgb(image: Image.Image, integer_bits: int) -> np.ndarray:
    """Any decoded Pillow image -> new uint8 HxWx3 RGB array in [0, 255]."""
    if image.mode == "F":
        grey = _float_to_uint8(np.asarray(image, dtype=np.float32))
    elif image.mode == "I" or image.mode.startswith("I;16"):
        samples = np.asarray(image)  # uint16 (either byte order) or int32, never widened
        shifted = np.maximum(samples, 0) >> (integer_bits - 8)
        grey = np.minimum(shifted, 255).astype(np.uint8)
        # A 16-bit grey PNG marks its transparent pixels with one key value (tRNS chunk).
        key = image.info.get("transparency")
        if isinstance(key, int):
            grey[samples == key] = 255
    elif image.has_transparency_data:
        # Composite on white (what a viewer shows) rather than dropping alpha, which would
        # reveal whatever colour the transparent pixels happen to store.
        rgba = image.convert("RGBA")
        composited = Image.new("RGB", rgba.size, _WHITE)
        composited.paste(rgba, mask=rgba)
        return np.array(composited, dtype=np.uint8)
    else:
        # Covers RGB, 1, L, P, CMYK (Adobe-inverted JPEGs are undone by the decoder), YCbCr,
        # LAB, HSV and RGBX; 48-bit PNGs already arrive as 8-bit RGB from Pillow.
        return np.array(image.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _float_to_uint8(samples: np.ndarray) -> np.ndarray:
    """float32 HxW -> uint8. Float photos on [0, 1] are stretched to [0, 255]; anything with
    larger values is taken to be on the 0..255 scale already, as Pillow's own convert does."""
    samples = np.nan_to_num(samples, nan=0.0, posinf=255.0, neginf=0.0)
    if samples.size and samples.max() <= 1.0:
        samples = samples * 255.0
    return np.clip(np.rint(samples), 0, 255).astype(np.uint8)


# A 12-megapixel phone photo decodes to 36 MB; twenty trainees' sessions would hold 0.7 GB of
# pixels the model never sees (its input is 224 px). The app decodes each photo once, on upload,
# to a working copy of at most 1536 px on its longer side (load_image's max_side; a phone JPEG is
# decoded at half scale directly): still ~7x the model's input, so "on the photo" corruptions keep
# their camera-like scale, and a 12 MP upload costs 7 MB instead of 36 MB.
WORKING_SIDE_PX = 1536


def downscale_for_display(image: np.ndarray, max_side: int = 1600) -> np.ndarray:
    """uint8 HxWx3 -> uint8 HxWx3 whose longer side is at most `max_side` pixels.

    Always a new array: a copy when the image is already small enough, else an area-averaged
    (cv2.INTER_AREA, no aliasing) resize keeping the aspect ratio.
    """
    _check_rgb_uint8(image)
    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return image.copy()
    scale = max_side / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2 wants (w, h)
    return cv2.resize(np.ascontiguousarray(image), new_size, interpolation=cv2.INTER_AREA)


def encode_png(image: np.ndarray) -> bytes:
    """uint8 HxWx3 RGB -> PNG file bytes, encoded in memory (lossless)."""
    _check_rgb_uint8(image)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()


def _check_rgb_uint8(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 numpy array, got {getattr(image, 'dtype', type(image))}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
