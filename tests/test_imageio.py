"""dermcore.imageio: every accepted format and mode decodes to the right uint8 RGB pixels, and
every bad upload ends in ImageLoadError with a readable sentence, refused before decoding where
the size alone is enough. All fixtures are small seeded images built in memory."""

from __future__ import annotations

import io
import logging
import struct
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fuzz_corpus import crafted_png, special_files
from PIL import Image, ImageFile

from dermcore.imageio import (
    SUPPORTED_EXTENSIONS,
    ImageLoadError,
    downscale_for_display,
    encode_png,
    load_image,
    upright_size,
)

ORIENTATION = 0x0112  # EXIF tag


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def random_rgb(height: int = 6, width: int = 9, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def block_rgb() -> np.ndarray:
    """uint8 48x64x3 of twelve 16x16 blocks, each a different flat colour: no flip or rotation
    of it equals another, and blocks aligned to JPEG's 16x16 chroma-subsampled MCUs survive
    compression almost exactly."""
    colours = np.random.default_rng(1).integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    return np.kron(colours, np.ones((16, 16, 1), dtype=np.uint8))


def smooth_rgb() -> np.ndarray:
    """uint8 48x64x3 of smooth ramps in all three channels: lossy codecs keep it within a few
    levels, so a colour or channel-order mistake stands far above their error."""
    rows, cols = np.mgrid[0:48, 0:64]
    ramps = np.stack([rows * 5, cols * 4, 255 - 2 * rows - 2 * cols], axis=-1)
    return ramps.clip(0, 255).astype(np.uint8)


def assert_rgb_result(image: np.ndarray) -> None:
    assert image.dtype == np.uint8
    assert image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 1
    assert image.flags.c_contiguous and image.flags.writeable


LOSSLESS = [
    ("PNG", {}),
    ("WEBP", {"lossless": True}),
    ("BMP", {}),
    ("TIFF", {}),
    ("TIFF", {"compression": "tiff_lzw"}),
    ("TIFF", {"compression": "tiff_deflate"}),
]


@pytest.mark.parametrize(("fmt", "params"), LOSSLESS, ids=lambda v: str(v))
def test_lossless_formats_round_trip_exactly(fmt: str, params: dict) -> None:
    pixels = random_rgb()
    decoded = load_image(encode(Image.fromarray(pixels), fmt, **params))
    assert_rgb_result(decoded)
    np.testing.assert_array_equal(decoded, pixels)


def test_gif_round_trips_its_palette_colours_exactly() -> None:
    palette_image = Image.fromarray(random_rgb()).quantize(16)
    decoded = load_image(encode(palette_image, "GIF"))
    np.testing.assert_array_equal(decoded, np.asarray(palette_image.convert("RGB")))


@pytest.mark.parametrize(
    ("fmt", "params"),
    [
        ("JPEG", {"quality": 95}),
        ("JPEG", {"quality": 95, "progressive": True}),
        ("WEBP", {"quality": 95}),
        ("TIFF", {"compression": "jpeg"}),
    ],
    ids=["baseline", "progressive", "webp_lossy", "tiff_jpeg"],
)
def test_lossy_formats_round_trip_within_tolerance(fmt: str, params: dict) -> None:
    pixels = smooth_rgb()
    decoded = load_image(encode(Image.fromarray(pixels), fmt, **params))
    assert decoded.shape == pixels.shape
    error = np.abs(decoded.astype(int) - pixels.astype(int))
    assert error.mean() < 2 and error.max() <= 10


def test_heic_round_trips_within_tolerance() -> None:
    pytest.importorskip("pillow_heif")
    pixels = smooth_rgb()
    data = encode(Image.fromarray(pixels), "HEIF", quality=95)
    decoded = load_image(data)
    assert decoded.shape == pixels.shape
    error = np.abs(decoded.astype(int) - pixels.astype(int))
    assert error.mean() < 3 and error.max() <= 12
    with pytest.raises(ImageLoadError):
        load_image(data[: len(data) // 2])


# EXIF orientation -> how the stored pixels must be turned to display them (EXIF 2.3, table of
# tag 0x0112: where the stored row 0 and column 0 go), written without Pillow's own table.
DISPLAY_TRANSFORMS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # rotated 180
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # stored rows are display columns
    6: lambda a: np.rot90(a, k=-1),  # needs 90 degrees clockwise
    7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],  # transverse
    8: lambda a: np.rot90(a, k=1),  # needs 90 degrees counter-clockwise
}


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_max_side_gives_the_downscaled_upright_photo(fmt: str, orientation: int) -> None:
    """A JPEG takes the reduced-scale decoding path, a PNG the full one; both must match a full
    decode followed by downscale_for_display, up to the DCT scaling's rounding."""
    stored = np.kron(block_rgb(), np.ones((40, 40, 1), dtype=np.uint8))  # 1920x2560 px blocks
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    params = {"quality": 95} if fmt == "JPEG" else {}
    data = encode(Image.fromarray(stored), fmt, exif=exif, **params)
    full = load_image(data)
    reduced = load_image(data, max_side=1000)
    expected = downscale_for_display(full, 1000)
    assert reduced.shape == expected.shape and max(reduced.shape[:2]) == 1000
    assert np.abs(reduced.astype(int) - expected.astype(int)).mean() <= (2 if fmt == "JPEG" else 0)
    assert upright_size(data) == full.shape[:2]
    assert load_image(data, max_side=4000).shape == full.shape  # never enlarged


def test_max_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_side"):
        load_image(encode_png(random_rgb()), max_side=0)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_exif_orientation_turns_the_photo_upright(fmt: str, orientation: int) -> None:
    stored = block_rgb()
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    params = {"quality": 95} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    decoded = load_image(encode(Image.fromarray(stored), fmt, exif=exif, **params))
    expected = DISPLAY_TRANSFORMS[orientation](stored)
    assert decoded.shape == expected.shape
    tolerance = 6 if fmt == "JPEG" else 0
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() <= tolerance


def test_orientation_is_applied_even_when_another_exif_tag_is_malformed() -> None:
    # Big-endian EXIF with two tags: PhotometricInterpretation (0x0106, a SHORT by definition)
    # wrongly stored as the ASCII "abc", then Orientation 6. Reading it works; rewriting it, as
    # ImageOps.exif_transpose does after turning the pixels, raises struct.error.
    malformed = struct.pack(">HHI4s", 0x0106, 2, 4, b"abc\0")
    orientation = struct.pack(">HHIHH", ORIENTATION, 3, 1, 6, 0)
    exif = b"Exif\0\0MM\0*" + struct.pack(">IH", 8, 2) + malformed + orientation + bytes(4)
    stored = block_rgb()
    decoded = load_image(encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif))
    expected = DISPLAY_TRANSFORMS[6](stored)
    assert decoded.shape == expected.shape
    assert np.abs(decoded.astype(int) - expected.astype(int)).mean() <= 6


@pytest.mark.parametrize(
    ("fmt", "params"), [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {})]
)
def test_rgba_is_composited_on_white(fmt: str, params: dict) -> None:
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent: its stored colour must not show
    rgba[0, 1] = (255, 0, 0, 128)  # half-transparent red
    rgba[0, 2] = (0, 0, 255, 255)  # opaque blue
    rgba[1] = (0, 128, 0, 255)
    decoded = load_image(encode(Image.fromarray(rgba), fmt, **params))
    np.testing.assert_array_equal(decoded[0, 0], (255, 255, 255))
    np.testing.assert_allclose(decoded[0, 1], (255, 128, 128), atol=1)
    np.testing.assert_array_equal(decoded[0, 2], (0, 0, 255))
    np.testing.assert_array_equal(decoded[1], np.full((3, 3), (0, 128, 0)))


def test_grey_with_alpha_is_composited_on_white() -> None:
    la = Image.fromarray(np.array([[[0, 0], [0, 255], [100, 128]]], dtype=np.uint8), mode="LA")
    decoded = load_image(encode(la, "PNG"))
    np.testing.assert_array_equal(decoded[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(decoded[0, 1], (0, 0, 0))
    np.testing.assert_allclose(decoded[0, 2], (177, 177, 177), atol=1)  # 100*a + 255*(1-a)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_becomes_white(fmt: str) -> None:
    indices = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    palette_image = Image.fromarray(indices, mode="P")
    palette_image.putpalette([0, 0, 0, 200, 30, 40, 10, 220, 90] + [0] * (3 * 253))
    decoded = load_image(encode(palette_image, fmt, transparency=0))
    expected = np.array(
        [
            [(255, 255, 255), (200, 30, 40), (10, 220, 90)],
            [(10, 220, 90), (200, 30, 40), (255,) * 3],
        ]
    )
    np.testing.assert_array_equal(decoded, expected)


def test_colour_key_transparency_becomes_white() -> None:
    pixels = random_rgb()
    pixels[0, 0] = (1, 2, 3)
    decoded = load_image(encode(Image.fromarray(pixels), "PNG", transparency=(1, 2, 3)))
    np.testing.assert_array_equal(decoded[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(decoded[1:], pixels[1:])


@pytest.mark.parametrize("mode", ["L", "1"])
def test_grey_and_bilevel_images_give_equal_channels(mode: str) -> None:
    grey = Image.fromarray(random_rgb()).convert(mode)
    decoded = load_image(encode(grey, "PNG"))
    expected = np.asarray(grey.convert("L"))
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], expected)


CMYK_COLOURS = [
    ((0, 255, 255, 0), (255, 0, 0)),
    ((255, 0, 255, 0), (0, 255, 0)),
    ((0, 0, 0, 0), (255, 255, 255)),
    ((0, 0, 0, 255), (0, 0, 0)),
]


@pytest.mark.parametrize(("fmt", "tolerance"), [("JPEG", 6), ("TIFF", 0)])
@pytest.mark.parametrize(("cmyk", "rgb"), CMYK_COLOURS, ids=lambda v: str(v))
def test_cmyk_decodes_to_the_right_colour(
    fmt: str, tolerance: int, cmyk: tuple[int, ...], rgb: tuple[int, ...]
) -> None:
    decoded = load_image(encode(Image.new("CMYK", (16, 16), cmyk), fmt, quality=95))
    np.testing.assert_allclose(decoded[8, 8], rgb, atol=tolerance)


SIXTEEN_BIT = np.array([[65535, 32768, 0, 255, 256, 65280]], dtype=np.uint16)
SIXTEEN_BIT_AS_8 = np.array([[255, 128, 0, 0, 1, 255]], dtype=np.uint8)


@pytest.mark.parametrize(
    ("fmt", "mode"), [("PNG", "I;16"), ("TIFF", "I;16"), ("TIFF", "I;16B")], ids=str
)
def test_16_bit_grey_is_scaled_by_its_bit_depth(fmt: str, mode: str) -> None:
    samples = SIXTEEN_BIT.astype(">u2" if mode == "I;16B" else "<u2")
    grey16 = Image.frombytes(mode, (samples.shape[1], 1), samples.tobytes())
    decoded = load_image(encode(grey16, fmt))
    np.testing.assert_array_equal(decoded, np.repeat(SIXTEEN_BIT_AS_8[..., None], 3, axis=2))


def test_16_bit_grey_colour_key_becomes_white() -> None:
    grey16 = Image.fromarray(SIXTEEN_BIT)
    decoded = load_image(encode(grey16, "PNG", transparency=32768))
    np.testing.assert_array_equal(decoded[0, :, 0], [255, 255, 0, 0, 1, 255])


def test_48_bit_rgb_png_keeps_the_high_byte() -> None:
    samples = np.array([[[65535, 0, 32768], [256, 512, 1024]]], dtype=">u2")
    scanlines = b"".join(b"\x00" + row.tobytes() for row in samples)
    decoded = load_image(crafted_png(2, 1, bit_depth=16, scanlines=scanlines))
    np.testing.assert_array_equal(decoded, [[[255, 0, 128], [1, 2, 4]]])


def test_32_bit_signed_integer_tiff_is_scaled_by_its_31_magnitude_bits() -> None:
    samples = np.array([[0, 2**23, 2**31 - 1, -5]], dtype=np.int32)
    decoded = load_image(encode(Image.fromarray(samples), "TIFF"))
    np.testing.assert_array_equal(decoded[0, :, 0], [0, 1, 255, 0])


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        ([0.0, 0.5, 1.0, 0.25], [0, 128, 255, 64]),  # a [0, 1] float photo
        ([0.0, 100.0, 300.0, float("nan")], [0, 100, 255, 0]),  # already on the 0..255 scale
    ],
)
def test_float_tiff(samples: list[float], expected: list[int]) -> None:
    floats = Image.fromarray(np.array([samples], dtype=np.float32))
    decoded = load_image(encode(floats, "TIFF"))
    np.testing.assert_array_equal(decoded[0, :, 1], expected)


def test_ycbcr_tiff_decodes_to_rgb() -> None:
    pixels = block_rgb()
    decoded = load_image(encode(Image.fromarray(pixels).convert("YCbCr"), "TIFF"))
    assert np.abs(decoded.astype(int) - pixels.astype(int)).max() <= 3


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {}), ("TIFF", {}), ("MPO", {})],
)
def test_animations_and_multi_page_files_give_their_first_frame(fmt: str, params: dict) -> None:
    colours = [(200, 0, 0), (0, 200, 0), (0, 0, 200)]
    frames = [Image.new("RGB", (8, 8), colour) for colour in colours]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **params)
    decoded = load_image(data)
    tolerance = 3 if fmt == "MPO" else 0  # MPO frames are JPEGs
    np.testing.assert_allclose(decoded, np.full((8, 8, 3), colours[0]), atol=tolerance)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_one_pixel_image_is_valid(fmt: str) -> None:
    decoded = load_image(encode(Image.new("RGB", (1, 1), (40, 90, 160)), fmt, quality=100))
    assert decoded.shape == (1, 1, 3)
    assert_rgb_result(decoded)


@pytest.fixture
def pixel_decoders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every pixel decoder Pillow creates (ImageFile.load and the libtiff path both go
    through Image._getdecoder), so a test can assert that no pixel data was decoded."""
    created: list[str] = []
    real_getdecoder = Image._getdecoder

    def recording_getdecoder(mode: str, decoder_name: str, *args: object) -> object:
        created.append(decoder_name)
        return real_getdecoder(mode, decoder_name, *args)

    monkeypatch.setattr(Image, "_getdecoder", recording_getdecoder)
    return created


BOMBS = [(name, data) for name, data in special_files(0) if name.startswith("bomb")]


@pytest.mark.parametrize(("name", "data"), BOMBS, ids=[name for name, _ in BOMBS])
def test_decompression_bombs_are_refused_fast_without_decoding(
    name: str, data: bytes, pixel_decoders: list[str]
) -> None:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ImageLoadError) as error:
        load_image(data)
    assert time.perf_counter() - start < 1.0
    assert "too large" in str(error.value) and "megapixels" in str(error.value)
    assert pixel_decoders == []
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_the_30000_square_png_header_is_refused() -> None:
    data = crafted_png(30_000, 30_000)
    assert len(data) < 100
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(data)
    assert time.perf_counter() - start < 1.0


def test_pixel_limit_applies_to_the_header_size(pixel_decoders: list[str]) -> None:
    data = encode(Image.fromarray(random_rgb(10, 10)), "PNG")
    assert load_image(data, max_pixels=100).shape == (10, 10, 3)
    pixel_decoders.clear()
    with pytest.raises(ImageLoadError, match=r"too large \(0\.1 megapixels\)"):
        load_image(data, max_pixels=99)
    assert pixel_decoders == []


def test_oversize_bytes_are_refused_before_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(Image.fromarray(random_rgb()), "PNG")
    assert load_image(data, max_bytes=len(data)).shape == (6, 9, 3)

    def fail_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("Image.open must not see oversize data")

    monkeypatch.setattr(Image, "open", fail_open)
    with pytest.raises(ImageLoadError, match=r"too large .* MB"):
        load_image(data, max_bytes=len(data) - 1)


def test_a_file_just_over_the_byte_limit_never_reads_as_equal_to_it() -> None:
    with pytest.raises(ImageLoadError) as error:
        load_image(bytes(1_000_001), max_bytes=1_000_000)
    assert str(error.value) == "This file is too large (1.1 MB); the limit is 1 MB."


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("WEBP", {}), ("TIFF", {})],
)
@pytest.mark.parametrize("kept_fraction", [0.1, 0.5, 0.9])
def test_truncated_files_are_refused(fmt: str, params: dict, kept_fraction: float) -> None:
    data = encode(Image.fromarray(random_rgb(64, 64)), fmt, **params)
    with pytest.raises(ImageLoadError):
        load_image(data[: int(len(data) * kept_fraction)])


def test_loading_truncated_images_stays_disabled() -> None:
    data = encode(Image.fromarray(random_rgb(64, 64)), "JPEG")
    with pytest.raises(ImageLoadError):
        load_image(data[:-100])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


NOT_IMAGES = {
    "empty": b"",
    "text": b"Lesion on left forearm, 6 mm.\n" * 10,
    "html": b"<!DOCTYPE html><html></html>",
    "zip": b"PK\x03\x04" + bytes(26) + b"PK\x05\x06" + bytes(18),
    "random": np.random.default_rng(3).bytes(512),
    "psd": b"8BPS\x00\x01" + bytes(40),  # a real format Pillow knows, not one we accept
    "eps": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    "ico": encode(Image.new("RGB", (16, 16)), "ICO"),
    "png_signature_only": b"\x89PNG\r\n\x1a\n",
}


@pytest.mark.parametrize("data", NOT_IMAGES.values(), ids=NOT_IMAGES.keys())
def test_files_that_are_not_accepted_images_are_refused(data: bytes) -> None:
    with pytest.raises(ImageLoadError) as error:
        load_image(data)
    message = str(error.value)
    assert message.endswith(".") and "\n" not in message
    assert "Traceback" not in message and "PIL" not in message and "BytesIO" not in message
    # No chained traceback: Pillow's own exception is neither the cause nor shown context.
    assert error.value.__cause__ is None
    assert error.value.__context__ is None or error.value.__suppress_context__


@pytest.mark.parametrize("value", [None, "photo.jpg", 42, [1, 2, 3], np.zeros(4, np.uint8)])
def test_non_bytes_input_is_refused(value: object) -> None:
    with pytest.raises(ImageLoadError):
        load_image(value)  # type: ignore[arg-type]


def test_bytearray_and_memoryview_are_accepted_and_not_mutated() -> None:
    data = encode(Image.fromarray(random_rgb()), "PNG")
    buffer = bytearray(data)
    np.testing.assert_array_equal(load_image(buffer), load_image(memoryview(data)))
    assert bytes(buffer) == data


@pytest.mark.parametrize("limits", [{"max_bytes": 0}, {"max_pixels": -1}])
def test_non_positive_limits_are_a_programming_error(limits: dict) -> None:
    with pytest.raises(ValueError) as error:
        load_image(b"x", **limits)
    assert not isinstance(error.value, ImageLoadError)


def test_each_call_returns_a_new_writable_array() -> None:
    data = encode(Image.fromarray(random_rgb()), "PNG")
    first, second = load_image(data), load_image(data)
    assert_rgb_result(first)
    assert not np.shares_memory(first, second)


def test_concurrent_decoding_matches_sequential_decoding() -> None:
    # Streamlit decodes each session's upload in its own thread.
    files = [data for _, data in BOMBS] + [
        encode(Image.fromarray(random_rgb(seed=seed)), fmt)
        for seed, fmt in enumerate(["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"])
    ]

    def outcome(data: bytes) -> bytes | str:
        try:
            return load_image(data).tobytes()
        except ImageLoadError as error:
            return str(error)

    expected = [outcome(data) for data in files]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            assert list(pool.map(outcome, files)) == expected


def test_file_contents_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret = "PATIENT-ID-4711"
    exif = Image.Exif()
    exif[0x010E] = secret  # ImageDescription, which Pillow itself would log at DEBUG
    good = [encode(Image.fromarray(random_rgb()), fmt, exif=exif) for fmt in ("JPEG", "TIFF")]
    bad = [good[0][: len(good[0]) // 2] + secret.encode(), b"\x89PNG\r\n\x1a\n" + secret.encode()]
    with caplog.at_level(logging.DEBUG):
        for data in good:
            load_image(data)
        for data in bad:
            with pytest.raises(ImageLoadError):
                load_image(data)
    assert any(record.name == "dermcore.imageio" for record in caplog.records)
    assert secret not in caplog.text


def test_downscale_keeps_small_images_as_a_copy() -> None:
    image = random_rgb(40, 30)
    original = image.copy()
    result = downscale_for_display(image, max_side=40)
    np.testing.assert_array_equal(result, image)
    assert not np.shares_memory(result, image)
    np.testing.assert_array_equal(image, original)


@pytest.mark.parametrize(
    ("shape", "max_side", "expected"),
    [
        ((2000, 3200, 3), 1600, (1000, 1600, 3)),
        ((3200, 2000, 3), 1600, (1600, 1000, 3)),
        ((1, 5000, 3), 1600, (1, 1600, 3)),
        ((301, 200, 3), 100, (100, 66, 3)),
    ],
)
def test_downscale_bounds_the_longer_side(
    shape: tuple[int, ...], max_side: int, expected: tuple[int, ...]
) -> None:
    image = np.zeros(shape, dtype=np.uint8)
    result = downscale_for_display(image, max_side=max_side)
    assert result.shape == expected and result.dtype == np.uint8 and result.flags.c_contiguous


def test_downscale_averages_areas() -> None:
    # A one-pixel checkerboard halved: area averaging gives mid-grey everywhere; nearest or
    # unfiltered sampling would keep pure black or white.
    checkerboard = ((np.indices((64, 96)).sum(axis=0) % 2) * 255).astype(np.uint8)
    image = np.repeat(checkerboard[..., None], 3, axis=2)
    original = image.copy()
    result = downscale_for_display(image, max_side=48)
    assert result.shape == (32, 48, 3)
    assert np.abs(result.astype(int) - 128).max() <= 1
    np.testing.assert_array_equal(image, original)


def test_downscale_accepts_a_strided_view() -> None:
    image = random_rgb(100, 200)
    result = downscale_for_display(image[:, ::2], max_side=50)
    assert result.shape == (50, 50, 3) and result.flags.c_contiguous


@pytest.mark.parametrize(
    ("image", "max_side"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), 10),
        (np.zeros((4, 4), dtype=np.uint8), 10),
        (np.zeros((4, 4, 4), dtype=np.uint8), 10),
        (np.zeros((0, 4, 3), dtype=np.uint8), 10),
        (np.zeros((4, 4, 3), dtype=np.uint8), 0),
    ],
)
def test_downscale_rejects_bad_arguments(image: np.ndarray, max_side: int) -> None:
    with pytest.raises(ValueError):
        downscale_for_display(image, max_side=max_side)


def test_encode_png_round_trips_and_leaves_its_input_alone() -> None:
    image = random_rgb(17, 23)
    original = image.copy()
    data = encode_png(image[:, ::-1])  # a negative-stride view must work too
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(load_image(data), original[:, ::-1])
    np.testing.assert_array_equal(image, original)


@pytest.mark.parametrize(
    "image", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.uint16), "not an array"]
)
def test_encode_png_rejects_non_rgb_uint8(image: object) -> None:
    with pytest.raises(ValueError):
        encode_png(image)  # type: ignore[arg-type]


def test_supported_extensions_cover_the_accepted_formats() -> None:
    required = {"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"}
    assert required <= set(SUPPORTED_EXTENSIONS)
    assert all(ext == ext.lower() and not ext.startswith(".") for ext in SUPPORTED_EXTENSIONS)
