"""Fuzzing load_image with over 4,000 generated and mutated upload files.

The property: every input gives either a uint8 HxWx3 C-contiguous array or ImageLoadError,
never another exception, and each call returns within MAX_SECONDS_PER_FILE. The fixed corpus
(fuzz_corpus.generate_corpus) covers the named cases; Hypothesis adds derandomized mutations,
random bytes and forged PNG headers on top, and shrinks any failure to a small file.
"""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from fuzz_corpus import (
    PNG_SIGNATURE,
    base_files,
    crafted_png,
    generate_corpus,
    png_chunk,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dermcore.imageio import HEIC_SUPPORTED, ImageLoadError, load_image

CORPUS_SEED = 20240611
CORPUS_SIZE = 1200
CORPUS = generate_corpus(CORPUS_SEED, CORPUS_SIZE)
BASES = base_files(CORPUS_SEED)
MAX_SECONDS_PER_FILE = 2.0

# Damaged files make Pillow warn ("Corrupt EXIF data", "Truncated File Read"): expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")

# Derandomized so CI always runs the same examples; no database, so nothing is written to disk.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,  # timing is asserted per call below, without Hypothesis' warm-up noise
    suppress_health_check=[HealthCheck.too_slow],
)


def assert_decodes_or_refuses(data: bytes) -> None:
    start = time.perf_counter()
    try:
        image = load_image(data)
    except ImageLoadError as error:
        assert str(error).endswith(".") and "\n" not in str(error)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 1 and image.flags.c_contiguous
    assert time.perf_counter() - start < MAX_SECONDS_PER_FILE


@pytest.mark.parametrize(("name", "data"), CORPUS, ids=[name for name, _ in CORPUS])
def test_corpus_file_decodes_or_is_refused(name: str, data: bytes) -> None:
    assert_decodes_or_refuses(data)


def test_corpus_is_deterministic_and_covers_every_kind_of_file() -> None:
    assert generate_corpus(CORPUS_SEED, CORPUS_SIZE) == CORPUS
    assert generate_corpus(CORPUS_SEED + 1, CORPUS_SIZE) != CORPUS
    assert len(generate_corpus(CORPUS_SEED, 5)) == 5
    names = [name for name, _ in CORPUS]
    assert len(set(names)) == len(names)
    for kind in (
        "truncated",
        "bitflip",
        "png_chunk",
        "png_size",
        "mislabelled",
        "spliced",
        "bomb_30000",
        "animated.gif",
        "animated.webp",
        "cmyk",
        "grey16",
        "palette_transparent",
        "one_pixel",
        "photos.zip",
        "photos.tar",
        "notes.txt",
        "random_",
        "empty",
    ):
        assert any(kind in name for name in names), kind


def test_every_valid_base_file_decodes() -> None:
    # Guards the property above against a decoder that refuses everything.
    for name, data in BASES:
        image = load_image(data)
        assert image.dtype == np.uint8 and image.shape[2] == 3, name


@st.composite
def mutated_images(draw: st.DrawFn, bases: list[bytes]) -> bytes:
    """A valid base image with up to eight bytes XOR-ed and, sometimes, its tail cut off."""
    data = draw(st.sampled_from(bases))
    mutated = bytearray(data)
    edits = st.tuples(st.integers(0, 2**16), st.integers(1, 255))
    for offset, mask in draw(st.lists(edits, min_size=1, max_size=8)):
        mutated[offset % len(mutated)] ^= mask
    return bytes(mutated[: draw(st.integers(1, len(mutated)))])


@settings(FUZZ, max_examples=1500)
@given(mutated_images([data for _, data in BASES]))
def test_mutated_images_decode_or_are_refused(data: bytes) -> None:
    assert_decodes_or_refuses(data)


@settings(FUZZ, max_examples=400)
@given(st.binary(max_size=4096))
def test_random_bytes_decode_or_are_refused(data: bytes) -> None:
    assert_decodes_or_refuses(data)


SIGNATURES = [
    PNG_SIGNATURE,
    b"\xff\xd8\xff\xe0",  # JPEG/JFIF
    b"\xff\xd8\xff\xdb",
    b"GIF89a",
    b"RIFF\x00\x10\x00\x00WEBPVP8L",
    b"RIFF\x00\x10\x00\x00WEBPVP8X",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
]


@settings(FUZZ, max_examples=600)
@given(st.sampled_from(SIGNATURES), st.binary(max_size=2048))
def test_format_signature_with_random_body(signature: bytes, body: bytes) -> None:
    assert_decodes_or_refuses(signature + body)


@settings(FUZZ, max_examples=400)
@given(
    width=st.integers(0, 2**31 - 1),
    height=st.integers(0, 2**31 - 1),
    bit_depth=st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]),
    colour_type=st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
    scanlines=st.binary(max_size=512),
)
def test_forged_png_headers(
    width: int, height: int, bit_depth: int, colour_type: int, scanlines: bytes
) -> None:
    data = crafted_png(
        width, height, bit_depth=bit_depth, colour_type=colour_type, scanlines=scanlines
    )
    assert_decodes_or_refuses(data)


@settings(FUZZ, max_examples=300)
@given(st.lists(st.integers(0, 255), min_size=3, max_size=3 * 256), st.integers(0, 255))
def test_forged_palette_and_transparency_chunks(palette: list[int], transparent: int) -> None:
    # A 4x4 paletted PNG whose PLTE and tRNS chunks have arbitrary (often wrong) lengths.
    header = struct.pack(">IIBBBBB", 4, 4, 8, 3, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + bytes([transparent] * 4) for _ in range(4)))
    data = (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"PLTE", bytes(palette))
        + png_chunk(b"tRNS", bytes(palette[: transparent + 1]))
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )
    assert_decodes_or_refuses(data)


def heic_bases() -> list[bytes]:
    """Two small HEIC photos (opaque and with alpha), or none without pillow-heif."""
    if not HEIC_SUPPORTED:
        return []
    photo = Image.fromarray(
        np.random.default_rng(CORPUS_SEED).integers(0, 256, (24, 32, 3), np.uint8)
    )
    files = []
    for image in (photo, photo.convert("RGBA")):
        buffer = io.BytesIO()
        image.save(buffer, format="HEIF", quality=80)
        files.append(buffer.getvalue())
    return files


@pytest.mark.skipif(not HEIC_SUPPORTED, reason="pillow-heif is not installed")
@settings(FUZZ, max_examples=300)
@given(mutated_images(heic_bases()))
def test_mutated_heic_decode_or_are_refused(data: bytes) -> None:
    assert_decodes_or_refuses(data)
