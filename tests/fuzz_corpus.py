"""A deterministic corpus of upload files, valid and hostile, for fuzzing the photo decoder.

`generate_corpus(seed, n)` returns `n` (file name, bytes) pairs: first the valid base images
(every format and Pillow mode the decoder must handle) and the special cases (decompression-bomb
headers, empty, text, archives, random bytes), then mutations of the base images (truncated,
bit-flipped, spliced, PNG chunks edited with their CRC fixed so the decoder reads past the
check, mislabelled extensions). Everything is built in memory from a seeded numpy Generator, so
the same seed gives the same bytes; the Streamlit upload tests push the same corpus through the
page.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

Corpus = list[tuple[str, bytes]]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ZIP_DATE = (2024, 1, 1, 0, 0, 0)  # fixed so archives are byte-identical across runs


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, 4-byte type, payload, CRC-32 of type + payload."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def crafted_png(
    width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2, scanlines: bytes = b""
) -> bytes:
    """A PNG written by hand, so its header can claim any size (e.g. a 30000x30000 bomb over a
    few bytes of IDAT). `scanlines` is the raw filtered data (one filter byte per row)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(scanlines or b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def crafted_grey_tiff(width: int, height: int, pixels: bytes) -> bytes:
    """A minimal uncompressed 8-bit grey little-endian TIFF whose header may claim any size."""
    entries = [  # (tag, type: 3 SHORT / 4 LONG, value), sorted by tag as TIFF requires
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),  # BitsPerSample
        (259, 3, 1),  # Compression: none
        (262, 3, 1),  # Photometric: black is zero
        (273, 4, 8 + 2 + 12 * 9 + 4),  # StripOffsets: pixels follow the IFD
        (277, 3, 1),  # SamplesPerPixel
        (278, 4, height),  # RowsPerStrip
        (279, 4, len(pixels)),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + pixels


def _save(
    image: Image.Image, fmt: str, append_images: Sequence[Image.Image] = (), **params: object
) -> bytes:
    buffer = io.BytesIO()
    # Save copies: Pillow leaves encoder state on saved images (e.g. JPEG's encoderconfig) that
    # a later save in another format would pick up and choke on.
    frames = [frame.copy() for frame in append_images]
    image.copy().save(buffer, format=fmt, append_images=frames, **params)
    return buffer.getvalue()


def _photo_like(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """uint8 HxWx3: a smooth gradient plus noise, so codecs see both structure and detail."""
    rows, cols = np.mgrid[0:height, 0:width]
    gradient = np.stack([rows * 255 // max(1, height - 1), cols * 255 // max(1, width - 1)], -1)
    base = np.concatenate([gradient, (gradient[..., :1] + gradient[..., 1:]) // 2], axis=-1)
    noise = rng.integers(-20, 21, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def base_files(seed: int) -> Corpus:
    """Valid images covering every format and Pillow mode the decoder accepts."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(_photo_like(rng, 24, 32))
    alpha = Image.fromarray(rng.integers(0, 256, size=(24, 32), dtype=np.uint8))
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    grey = rgb.convert("L")
    palette = rgb.quantize(16)
    palette.info["transparency"] = 0
    grey16 = Image.fromarray(rng.integers(0, 65536, size=(24, 32), dtype=np.uint16))
    floats = Image.fromarray(rng.random((24, 32), dtype=np.float32))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    frames = [Image.fromarray(_photo_like(rng, 24, 32)) for _ in range(3)]
    gif_frames = [frame.quantize(8) for frame in frames]
    rgb48 = rng.integers(0, 65536, size=(6, 5, 3), dtype=np.uint16).astype(">u2")
    one_pixel = Image.new("RGB", (1, 1), (200, 120, 40))
    return [
        ("photo.jpg", _save(rgb, "JPEG", quality=85)),
        ("progressive.jpg", _save(rgb, "JPEG", quality=75, progressive=True, optimize=True)),
        ("grey.jpg", _save(grey, "JPEG")),
        ("cmyk.jpg", _save(rgb.convert("CMYK"), "JPEG")),
        ("rotated.jpg", _save(rgb, "JPEG", exif=exif.tobytes())),
        ("stereo.mpo", _save(frames[0], "MPO", save_all=True, append_images=frames[1:2])),
        ("photo.png", _save(rgb, "PNG")),
        ("rgba.png", _save(rgba, "PNG")),
        ("palette_transparent.png", _save(palette, "PNG")),
        ("grey.png", _save(grey, "PNG")),
        ("grey_alpha.png", _save(grey.convert("LA"), "PNG")),
        ("bilevel.png", _save(grey.convert("1"), "PNG")),
        ("grey16.png", _save(grey16, "PNG")),
        ("rgb48.png", crafted_png(5, 6, bit_depth=16, scanlines=_scanlines(rgb48))),
        ("animated.png", _save(frames[0], "PNG", save_all=True, append_images=frames[1:])),
        ("lossy.webp", _save(rgb, "WEBP", quality=80)),
        ("lossless_rgba.webp", _save(rgba, "WEBP", lossless=True)),
        ("animated.webp", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:])),
        ("photo.bmp", _save(rgb, "BMP")),
        ("palette.bmp", _save(palette, "BMP")),
        ("photo.tif", _save(rgb, "TIFF")),
        ("lzw.tif", _save(rgb, "TIFF", compression="tiff_lzw")),
        ("jpeg.tif", _save(rgb, "TIFF", compression="jpeg")),
        ("cmyk.tif", _save(rgb.convert("CMYK"), "TIFF", compression="tiff_deflate")),
        ("grey16.tif", _save(grey16, "TIFF")),
        ("float.tif", _save(floats, "TIFF")),
        ("fax.tif", _save(grey.convert("1"), "TIFF", compression="group4")),
        ("pages.tif", _save(frames[0], "TIFF", save_all=True, append_images=frames[1:])),
        ("crafted_grey.tif", crafted_grey_tiff(4, 3, bytes(range(0, 240, 20)))),
        ("still.gif", _save(palette, "GIF")),
        (
            "animated.gif",
            _save(
                gif_frames[0], "GIF", save_all=True, append_images=gif_frames[1:], transparency=0
            ),
        ),
        ("one_pixel.png", _save(one_pixel, "PNG")),
        ("one_pixel.jpg", _save(one_pixel, "JPEG")),
        ("one_pixel.gif", _save(one_pixel.convert("P"), "GIF")),
    ]


def _scanlines(samples: np.ndarray) -> bytes:
    """Raw PNG image data for an HxW(xC) big-endian array: filter type 0 before each row."""
    return b"".join(b"\x00" + row.tobytes() for row in samples)


def _patch(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    return data[:offset] + struct.pack(fmt, *values) + data[offset + struct.calcsize(fmt) :]


def _jpeg_sof_offset(data: bytes) -> int:
    """Offset of the frame header (SOFn) segment, walking the marker segments from SOI."""
    offset = 2
    while data[offset + 1] not in (0xC0, 0xC1, 0xC2):
        offset += 2 + struct.unpack(">H", data[offset + 2 : offset + 4])[0]
    return offset


def special_files(seed: int) -> Corpus:
    """Decompression-bomb headers, degenerate images and files that are not images at all."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(_photo_like(rng, 8, 8))
    jpeg, gif, bmp = _save(small, "JPEG"), _save(small.convert("P"), "GIF"), _save(small, "BMP")
    png = _save(small, "PNG")
    sof = _jpeg_sof_offset(jpeg)
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr(zipfile.ZipInfo("lesion.png", date_time=_ZIP_DATE), png)
    tarred = io.BytesIO()
    with tarfile.open(fileobj=tarred, mode="w") as archive:
        member = tarfile.TarInfo("lesion.jpg")
        member.size = len(jpeg)
        archive.addfile(member, io.BytesIO(jpeg))
    notes = "Patient notes: lesion on left forearm, 6 mm, irregular border.\n" * 20
    return [
        ("empty.jpg", b""),
        ("bomb_30000.png", crafted_png(30_000, 30_000)),
        ("bomb_10000.png", crafted_png(10_000, 10_000)),  # inside Pillow's warning band
        ("bomb_7000.png", crafted_png(7_000, 7_000)),  # under Pillow's limits, over ours
        ("bomb_1x2e9.png", crafted_png(1, 2_000_000_000)),
        ("zero_width.png", crafted_png(0, 10)),
        ("bomb.jpg", _patch(jpeg, sof + 5, ">HH", 65_500, 65_500)),
        ("bomb.gif", _patch(gif, 6, "<HH", 65_535, 65_535)),
        ("bomb.bmp", _patch(bmp, 18, "<ii", 100_000, -100_000)),
        ("bomb.tif", crafted_grey_tiff(30_000, 30_000, b"\x00" * 16)),
        ("short_strip.tif", crafted_grey_tiff(64, 64, b"\x80" * 16)),
        ("notes.txt", notes.encode()),
        ("notes_renamed.jpg", notes.encode("utf-16")),
        ("page.png", b"<!DOCTYPE html><html><body><img src='x.png'></body></html>"),
        ("vector.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
        ("report.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"),
        ("photos.zip", zipped.getvalue()),
        ("photos.tar", tarred.getvalue()),
        ("photo.png.gz", gzip.compress(png, mtime=0)),
        ("png_then_zip.png", png + zipped.getvalue()),
        ("signature_only.png", PNG_SIGNATURE),
        ("soi_only.jpg", b"\xff\xd8"),
        ("header_only.gif", b"GIF89a"),
        ("riff_only.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 "),
        ("tiff_header_only.tif", b"II*\x00\x08\x00\x00\x00"),
        ("bm_only.bmp", b"BM"),
        *[(f"random_{size}.jpg", rng.bytes(size)) for size in (1, 2, 16, 257, 4096)],
    ]


def _random_offset(rng: np.random.Generator, data: bytes, start: int = 0) -> int:
    return int(rng.integers(min(start, len(data) - 1), len(data)))


def _truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def _drop_tail(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: -int(rng.integers(1, min(32, len(data) - 1) + 1))]


def _flip_bits(data: bytes, rng: np.random.Generator) -> bytes:
    mutated = bytearray(data)
    for _ in range(int(rng.integers(1, 9))):
        mutated[_random_offset(rng, data)] ^= 1 << int(rng.integers(0, 8))
    return bytes(mutated)


def _flip_bits_after_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Keep the first 16 bytes, so the format is still recognised and the decoder runs."""
    mutated = bytearray(data)
    for _ in range(int(rng.integers(1, 5))):
        mutated[_random_offset(rng, data, start=16)] ^= 1 << int(rng.integers(0, 8))
    return bytes(mutated)


def _overwrite_run(data: bytes, rng: np.random.Generator) -> bytes:
    start = _random_offset(rng, data)
    length = int(rng.integers(1, 33))
    fill = [rng.bytes(length), b"\x00" * length, b"\xff" * length][int(rng.integers(0, 3))]
    return (data[:start] + fill + data[start + length :])[: len(data)]


def _insert_run(data: bytes, rng: np.random.Generator) -> bytes:
    start = _random_offset(rng, data)
    return data[:start] + rng.bytes(int(rng.integers(1, 65))) + data[start:]


def _delete_run(data: bytes, rng: np.random.Generator) -> bytes:
    start = _random_offset(rng, data)
    return data[:start] + data[start + int(rng.integers(1, 65)) :]


def _duplicate_run(data: bytes, rng: np.random.Generator) -> bytes:
    start = _random_offset(rng, data)
    segment = data[start : start + int(rng.integers(1, 257))]
    at = _random_offset(rng, data)
    return data[:at] + segment + data[at:]


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length = struct.unpack(">I", data[offset : offset + 4])[0]
        chunks.append((data[offset + 4 : offset + 8], data[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def _edit_png_chunk(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip bits inside one chunk's payload and recompute its CRC, so Pillow's CRC check passes
    and the damage reaches the IHDR parser, the palette code or zlib."""
    chunks = _png_chunks(data)
    index = int(rng.integers(0, len(chunks)))
    kind, payload = chunks[index]
    if payload:
        payload = _flip_bits(payload, rng)
    chunks[index] = (kind, payload)
    return PNG_SIGNATURE + b"".join(png_chunk(kind, payload) for kind, payload in chunks)


def _resize_png_header(data: bytes, rng: np.random.Generator) -> bytes:
    """Claim another width and height in IHDR (CRC fixed) over the same pixel data."""
    sizes = (0, 1, 2, 3, 255, 4096, 6_000, 30_000, 65_535, 2**31 - 1)
    width, height = (sizes[int(i)] for i in rng.integers(0, len(sizes), size=2))
    chunks = _png_chunks(data)
    chunks[0] = (b"IHDR", struct.pack(">II", width, height) + chunks[0][1][8:])
    return PNG_SIGNATURE + b"".join(png_chunk(kind, payload) for kind, payload in chunks)


Mutation = Callable[[bytes, np.random.Generator], bytes]
_MUTATIONS: dict[str, Mutation] = {
    "truncated": _truncate,
    "tail_cut": _drop_tail,
    "bitflip": _flip_bits,
    "bitflip_body": _flip_bits_after_header,
    "overwrite": _overwrite_run,
    "insert": _insert_run,
    "delete": _delete_run,
    "duplicate": _duplicate_run,
}
_PNG_MUTATIONS: dict[str, Mutation] = {"png_chunk": _edit_png_chunk, "png_size": _resize_png_header}
_WRONG_EXTENSION = {"jpg": "png", "png": "jpg", "webp": "jpeg", "gif": "bmp", "tif": "webp"}


def generate_corpus(seed: int, n: int) -> Corpus:
    """`n` (name, bytes) upload files, identical for the same seed: the base images and special
    cases first (as many as fit in `n`), then mutations that cycle through every mutation kind.
    Names end in the extension a user would see, which for "mislabelled" files is a wrong one."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    bases = base_files(seed)
    corpus = bases + special_files(seed + 1)
    png_bases = [(name, data) for name, data in bases if data.startswith(PNG_SIGNATURE)]
    kinds = [*_MUTATIONS, *_PNG_MUTATIONS, "mislabelled", "spliced"]
    index = len(corpus)
    while len(corpus) < n:
        kind = kinds[index % len(kinds)]
        pool = png_bases if kind in _PNG_MUTATIONS else bases
        name, data = pool[int(rng.integers(0, len(pool)))]
        stem, extension = name.rsplit(".", 1)
        if kind == "mislabelled":
            extension = _WRONG_EXTENSION.get(extension, "png")
        elif kind == "spliced":
            other = bases[int(rng.integers(0, len(bases)))][1]
            data = data[: _random_offset(rng, data)] + other[_random_offset(rng, other) :]
        else:
            data = {**_MUTATIONS, **_PNG_MUTATIONS}[kind](data, rng)
        corpus.append((f"{index:04d}_{kind}_{stem}.{extension}", data))
        index += 1
    return corpus[:n]
