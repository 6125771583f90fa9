"""Small labelled photo sets built in memory for the photo-set tests: seeded synthetic lesions
encoded as PNG or JPEG, zipped as a folder per class. Nothing is written to disk here."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from conftest import lesion_photo
from PIL import Image


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def labelled_photos(folders: dict[str, int], seed: int = 0, size: int = 96) -> dict[str, bytes]:
    """{'<folder>/photo-<k>.png': PNG bytes}: `n` seeded lesion photos per folder, each
    different (its own seed, shape and tint)."""
    files = {}
    k = 0
    for folder, n in folders.items():
        for _ in range(n):
            image = lesion_photo(seed * 1000 + k, height=size, width=size + 8 * (k % 5))
            image = np.clip(image.astype(int) + (k % 7) * 9, 0, 255).astype(np.uint8)
            files[f"{folder}/photo-{k:03d}.png"] = encode(image)
            k += 1
    return files


def zip_bytes(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def lying_zip(name: str, real: bytes, declared_size: int) -> bytes:
    """A zip whose one member declares `declared_size` uncompressed bytes but holds `real`:
    both the central directory and the local header are patched, as a crafted bomb would be."""
    data = bytearray(zip_bytes({name: real}, zipfile.ZIP_STORED))
    true_size = len(real).to_bytes(4, "little")
    fake = declared_size.to_bytes(4, "little")
    # local header: uncompressed size at offset 22; central directory entry: at offset 24
    local = data.index(b"PK\x03\x04")
    central = data.index(b"PK\x01\x02")
    assert data[local + 22 : local + 26] == true_size
    assert data[central + 24 : central + 28] == true_size
    data[local + 22 : local + 26] = fake
    data[central + 24 : central + 28] = fake
    return bytes(data)
