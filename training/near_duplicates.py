"""Near-duplicate photos by perceptual hash: the screen that keeps imported photos out of what the
reports call held-out, and the clusters that keep twins in one split group.

A hash is a 64-bit DCT pHash (grey 32x32 area-averaged thumbnail, 2-D DCT, the 8x8 lowest
frequencies against their median). Each photo gets six: of the whole picture, of its centre
95%, 90%, 85% and 80% (each side), and of its centre square. Two photos are near-duplicates when
one's whole-picture hash is within THRESHOLD_BITS of any hash of the other. So a resized,
re-encoded, brightened or centre-cropped copy meets its original.

Why 4 bits: on our own data (weights/split.json over ../shared/data/train, and SD-198), every
evaluation photo's 80%-resized, brightened, JPEG-85 copy and its 5%, 10% and 20% centre crops are
within 4 bits of it, while none of the 2,043 train and validation photos comes within 4 bits of
any of the 621 evaluation photos; at 8 bits, 24 of them do, different photos of a dark
naevus centred on plain skin. Mirrored and off-centre crops are not caught.
"""

from __future__ import annotations

import cv2
import numpy as np

THRESHOLD_BITS = 4  # of 64; pairs at <= this distance are the same photo
CROP_FRACTIONS = (0.95, 0.9, 0.85, 0.8)  # centre crops hashed beside the whole picture
HASHES_PER_PHOTO = 2 + len(CROP_FRACTIONS)  # whole picture, centre crops, centre square


def phash(image: np.ndarray) -> np.uint64:
    """uint8 HxWx3 RGB -> 64-bit DCT perceptual hash (bit k = DCT coefficient k of the 8x8
    lowest frequencies, row-major, is above their median)."""
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return np.uint64(int("".join("1" if b else "0" for b in bits), 2))


def photo_hashes(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> uint64 (HASHES_PER_PHOTO,): the whole picture first, then its centre
    crops (CROP_FRACTIONS of each side) and its centre square."""
    height, width = image.shape[:2]
    views = [image]
    for fraction in CROP_FRACTIONS:
        h, w = max(1, round(height * fraction)), max(1, round(width * fraction))
        top, left = (height - h) // 2, (width - w) // 2
        views.append(image[top : top + h, left : left + w])
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    views.append(image[top : top + side, left : left + side])
    return np.array([phash(view) for view in views], dtype=np.uint64)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint64 (N, K) and (M, K) hashes -> int (N, M): the smallest Hamming distance between one
    photo's whole-picture hash (column 0) and any hash of the other, either way round."""
    a_whole = np.bitwise_count(a[:, None, :1] ^ b[None, :, :]).min(axis=2)  # (N, M)
    b_whole = np.bitwise_count(a[:, None, :] ^ b[None, :, :1]).min(axis=2)
    return np.minimum(a_whole, b_whole).astype(np.int64)


def nearest(
    queries: np.ndarray, references: np.ndarray, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """For each query photo (N, K), the closest reference photo (M, K): (distance (N,), index
    (N,)). With no references, distance 65 (farther than any two hashes) and index -1."""
    n = len(queries)
    if len(references) == 0:
        return np.full(n, 65, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    best, where = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for lo in range(0, n, chunk):
        d = distances(queries[lo : lo + chunk], references)
        where[lo : lo + chunk] = d.argmin(axis=1)
        best[lo : lo + chunk] = d.min(axis=1)
    return best, where


def clusters(hashes: np.ndarray, threshold: int = THRESHOLD_BITS, chunk: int = 128) -> np.ndarray:
    """uint64 (N, K) -> int (N,): the index of each photo's cluster representative (its lowest
    index), where near-duplicate pairs are joined transitively (union-find)."""
    parent = np.arange(len(hashes))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for lo in range(0, len(hashes), chunk):
        d = distances(hashes[lo : lo + chunk], hashes)
        for i, j in zip(*np.nonzero(d <= threshold), strict=True):
            a, b = root(lo + int(i)), root(int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return np.array([root(i) for i in range(len(hashes))], dtype=np.int64)
