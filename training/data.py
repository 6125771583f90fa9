"""Training data: the manifest, a grouped split saved as JSON, a decoded-image cache, datasets
and a seeded, shardable epoch sampler.

    <root>/manifest.csv  ->  grouped_split()  ->  weights/split.json   (which image is where)
    <root>/images/...    ->  load_decoded()   ->  runs/cache/<key>/    (decoded once, memory-mapped)
                             TrainDataset / EvalDataset over the cache, EpochSampler over indices

The split keeps every `group` (patient, subject, near-duplicate cluster) on one side, and is
stratified by (label, source), so validation and test see every source of every class.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dermcore.imageio import load_image
from dermcore.labels import class_index
from dermcore.preprocessing import Preprocessing
from training.augment import AugmentConfig, augment
from training.roots import ROOT_FIELD, read_row, root_folders, row_key

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
SAMPLING_MODES = ("uniform", "class", "class-source")
SPLIT_FIELDS = ("path", "sha256", "label", "source", "group")


class DataError(RuntimeError):
    """The data or the split cannot be used; the message says what to do."""


def default_data_root() -> Path:
    """../shared/data/train beside the repository."""
    return (REPO.parent / "shared" / "data" / "train").resolve()


def resolve_data_root(root: str | Path | None) -> Path:
    """A relative root is taken relative to the repository, not the working directory."""
    if root is None:
        return default_data_root()
    root = Path(root)
    return root if root.is_absolute() else (REPO / root).resolve()


def read_manifest(root: str | Path) -> list[dict]:
    """The rows of <root>/manifest.csv as dicts (path, label, source, group, sha256, ...)."""
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise DataError(f"No manifest.csv in {root}; pass the data set folder with --data-root.")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def manifest_sha256(root: str | Path) -> str:
    return hashlib.sha256((Path(root) / "manifest.csv").read_bytes()).hexdigest()


def grouped_split(
    rows: Sequence[dict], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, list[dict]]:
    """Split rows into train/val/test with whole groups on one side, stratified by (label, source).

    Within each stratum the groups are visited largest first (random order among equal sizes,
    from `seed`), and each goes to the split furthest below its share of that stratum's images.
    A group whose images span strata counts in its most common one. Rows keep their manifest
    fields; each split is sorted by path.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in sorted(groups):
        counts = Counter((r["label"], r["source"]) for r in groups[name])
        stratum = min(counts, key=lambda key: (-counts[key], key))  # most common, ties by name
        strata[stratum].append(name)

    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for stratum in sorted(strata):
        names = strata[stratum]
        tiebreak = rng.permutation(len(names))
        order = sorted(range(len(names)), key=lambda i: (-len(groups[names[i]]), tiebreak[i]))
        total = sum(len(groups[n]) for n in names)
        assigned = [0, 0, 0]
        for i in order:
            deficit = [f * total - a for f, a in zip(fractions, assigned, strict=True)]
            target = int(np.argmax(deficit))
            assigned[target] += len(groups[names[i]])
            out[SPLITS[target]].extend(groups[names[i]])
    return {s: sorted(out[s], key=lambda r: r["path"]) for s in SPLITS}


def split_each_root(
    rows: Sequence[dict], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, list[dict]]:
    """grouped_split of each data root on its own (training/roots.py), joined; one root: exactly
    grouped_split. Groups and strata never span roots anyway, and so every root's rows fall as they
    would alone: our test split stays the held-out set of every model, whatever else it saw."""
    by_root: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_root[row.get(ROOT_FIELD, "")].append(row)
    if len(by_root) == 1:
        return grouped_split(rows, seed, fractions)
    parts = [grouped_split(by_root[k], seed, fractions) for k in sorted(by_root)]
    return {s: [row for part in parts for row in part[s]] for s in SPLITS}


def write_split(
    path: str | Path,
    splits: dict[str, list[dict]],
    *,
    seed: int,
    fractions: Sequence[float],
    manifest_hash: str,
    data_root: str | Path,
    roots: list[dict] | None = None,
) -> None:
    """weights/split.json: everything needed to rebuild the exact split. Written atomically.
    With several data roots, `roots` records each one (training/loaders.py) and rows carry theirs."""
    data = {
        "seed": seed,
        "fractions": list(fractions),
        "manifest_sha256": manifest_hash,
        "data_root": display_path(data_root),
        "method": "training/data.py grouped_split: whole groups, stratified by (label, source)"
        + (", each data root on its own" if roots else ""),
        "counts": {s: dict(sorted(Counter(r["label"] for r in splits[s]).items())) for s in SPLITS},
        "splits": {s: [_split_row(r) for r in splits[s]] for s in SPLITS},
    }
    if roots:
        data["roots"] = roots
    _atomic_write_text(Path(path), json.dumps(data, indent=1) + "\n")


def _split_row(row: dict) -> dict:
    fields = ((ROOT_FIELD,) if ROOT_FIELD in row else ()) + SPLIT_FIELDS
    return {k: row[k] for k in fields}


def read_split(path: str | Path, manifest_hash: str | None = None) -> dict:
    """The split file's dict; refuses one made from a different manifest."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"The split file {path} could not be read: {exc}") from None
    if manifest_hash and data.get("manifest_sha256") != manifest_hash:
        raise DataError(
            f"The split file {path} was made from a different manifest.csv (hash "
            f"{str(data.get('manifest_sha256'))[:12]}... vs {manifest_hash[:12]}...). Delete it to make "
            "a new split, or pass --split-file with another name."
        )
    return data


def load_or_make_split(
    path: str | Path,
    rows: Sequence[dict],
    root: Path,
    manifest_hash: str,
    seed: int,
    fractions: Sequence[float],
    roots: list[dict] | None = None,
) -> dict:
    """Read the split file when it exists (checking the manifest hash), else make and write it."""
    path = Path(path)
    if not path.exists():
        splits = split_each_root(rows, seed, fractions)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_split(
            path,
            splits,
            seed=seed,
            fractions=fractions,
            manifest_hash=manifest_hash,
            data_root=root,
            roots=roots,
        )
        log.info("wrote split %s: %s", path, {s: len(v) for s, v in splits.items()})
    return read_split(path, manifest_hash)


# --- decoded images -------------------------------------------------------------------------


@dataclass
class DecodedImages:
    """Every image of one manifest decoded once, in manifest order.

    eval_images: uint8 (N, S, S, 3), the preset's to_input_resolution() of the photo: exactly
    what the app and training/evaluate.py feed the model. train_flat/train_index: the photo with
    its shorter side reduced to `short_side` (never enlarged) for random crops; image i is
    train_flat[offset:offset + h*w*3] reshaped (h, w, 3) with (offset, h, w) = train_index[i].
    """

    paths: list[str]  # roots.row_key of each row: the path, behind its root id when several
    eval_images: np.ndarray
    train_flat: np.ndarray | None = None
    train_index: np.ndarray | None = None

    def train_image(self, i: int) -> np.ndarray:
        if self.train_flat is None or self.train_index is None:
            raise ValueError("this cache holds no training-size images")
        offset, height, width = (int(v) for v in self.train_index[i])
        return self.train_flat[offset : offset + height * width * 3].reshape(height, width, 3)

    def index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}


def load_decoded(
    root: Path | Mapping[str, Path],
    rows: Sequence[dict],
    preprocessing: Preprocessing,
    cache_dir: Path,
    manifest_hash: str,
    short_side: int | None = 256,
) -> DecodedImages:
    """Decode (and verify the SHA-256 of) every row once; later calls memory-map the cache.

    The cache folder is keyed by the manifest hash and the sizes, so a changed data set or preset
    never reads a stale cache. Concurrent builders are safe: each writes a private folder and the
    first rename wins. `root` is one folder, or root id -> folder for rows of several roots
    (training/roots.py); images are named by row_key, so equal paths in two roots stay apart.
    """
    folders = root_folders(root) if isinstance(root, Path) else dict(root)
    name = "+".join(folder.name for folder in folders.values())
    key = f"{name}-{manifest_hash[:16]}-e{preprocessing.input_size}r{preprocessing.resize_size}"
    key += f"-n{len(rows)}" + (f"-t{short_side}" if short_side else "")
    folder = Path(cache_dir) / key
    if not (folder / "paths.json").is_file():
        _build_cache(folder, folders, rows, preprocessing, short_side)
    paths = json.loads((folder / "paths.json").read_text())
    has_train = (folder / "train_flat.npy").is_file()
    return DecodedImages(
        paths=paths,
        eval_images=np.load(folder / "eval.npy", mmap_mode="r"),
        train_flat=np.load(folder / "train_flat.npy", mmap_mode="r") if has_train else None,
        train_index=np.load(folder / "train_index.npy") if has_train else None,
    )


def _build_cache(
    folder: Path,
    folders: Mapping[str, Path],
    rows: Sequence[dict],
    preprocessing: Preprocessing,
    short_side: int | None,
) -> None:
    log.info("decoding %d images of %s once into %s", len(rows), list(folders.values()), folder)
    size = preprocessing.input_size
    eval_images = np.empty((len(rows), size, size, 3), np.uint8)
    train_parts, train_index, offset = [], np.zeros((len(rows), 3), np.int64), 0
    for i, row in enumerate(rows):
        try:
            data = read_row(folders, row, "--data-root")
        except ValueError as exc:
            raise DataError(str(exc)) from None
        photo = load_image(data)
        eval_images[i] = preprocessing.to_input_resolution(photo)
        if short_side:
            small = _shrink_shorter_side(photo, short_side)
            train_parts.append(small.reshape(-1))
            train_index[i] = (offset, small.shape[0], small.shape[1])
            offset += small.size
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp", dir=folder.parent))
    np.save(tmp / "eval.npy", eval_images)
    if short_side:
        np.save(tmp / "train_flat.npy", np.concatenate(train_parts))
        np.save(tmp / "train_index.npy", train_index)
    (tmp / "paths.json").write_text(json.dumps([row_key(r) for r in rows]))
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished first: use its cache
        shutil.rmtree(tmp, ignore_errors=True)


def _shrink_shorter_side(image: np.ndarray, short_side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    if scale >= 1:
        return np.ascontiguousarray(image)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# --- datasets and sampling ------------------------------------------------------------------


class TrainDataset(Dataset):
    """Augmented training images. Items are addressed by (index, epoch, position) keys from
    EpochSampler; the augmentation is seeded by (seed, epoch, position, index), so the same key
    always gives the same image, in any process and after a resume."""

    def __init__(
        self, images: DecodedImages, rows: Sequence[dict], config: AugmentConfig, seed: int
    ):
        where = images.index()
        self.images = images
        self.cache_index = [where[row_key(r)] for r in rows]
        self.labels = np.array([class_index(r["label"]) for r in rows], dtype=np.int64)
        self.config = config
        self.seed = seed

    def __len__(self) -> int:
        return len(self.cache_index)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[np.ndarray, int, int]:
        index, epoch, position = key
        rng = np.random.default_rng([self.seed, epoch, position, index])
        image = augment(self.images.train_image(self.cache_index[index]), self.config, rng)
        return image, int(self.labels[index]), index


class EvalDataset(Dataset):
    """Unaugmented images at the model input size (the preset's centre crop)."""

    def __init__(self, images: DecodedImages, rows: Sequence[dict]):
        where = images.index()
        self.images = images
        self.cache_index = [where[row_key(r)] for r in rows]
        self.labels = np.array([class_index(r["label"]) for r in rows], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.cache_index)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int, int]:
        return (
            np.asarray(self.images.eval_images[self.cache_index[index]]),
            int(self.labels[index]),
            index,
        )


class Collate:
    """[(uint8 (H, W, 3), label, index)] -> float32 (N, 3, H, W) normalised, int64 (N,), int64 (N,)."""

    def __init__(self, preprocessing: Preprocessing):
        self.preprocessing = preprocessing

    def __call__(self, batch: list[tuple[np.ndarray, int, int]]) -> tuple[torch.Tensor, ...]:
        images = np.stack([item[0] for item in batch])
        labels = torch.tensor([item[1] for item in batch], dtype=torch.int64)
        indices = torch.tensor([item[2] for item in batch], dtype=torch.int64)
        return self.preprocessing.to_tensor(images), labels, indices


def sampling_weights(rows: Sequence[dict], mode: str) -> np.ndarray | None:
    """Per-row draw probabilities (sum 1), or None for uniform sampling without replacement.

    class:        every class equally likely.
    class-source: every class equally likely, and within a class every source equally likely,
                  so a class's small source is not drowned by its big one (and the model has
                  less reason to learn the big source's style).
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    if mode == "uniform":
        return None
    labels = [r["label"] for r in rows]
    per_class = Counter(labels)
    if mode == "class":
        weights = np.array([1.0 / (len(per_class) * per_class[c]) for c in labels])
    else:
        per_stratum = Counter((r["label"], r["source"]) for r in rows)
        sources_of = {c: {s for (c2, s) in per_stratum if c2 == c} for c in per_class}
        weights = np.array(
            [
                1.0
                / (
                    len(per_class)
                    * len(sources_of[r["label"]])
                    * per_stratum[(r["label"], r["source"])]
                )
                for r in rows
            ]
        )
    return weights / weights.sum()


class EpochSampler(Sampler):
    """The epoch's draws as (index, epoch, position) keys: a pure function of (seed, epoch).

    weights None: a permutation of all indices (each image once per epoch); else `num_samples`
    draws with replacement from `weights`. Under DistributedDataParallel every process computes
    the same full list, pads it to a multiple of world_size by repeating its head (as
    torch's DistributedSampler does) and takes every world_size-th key from its rank, so the
    shards are disjoint and together cover the list. `position` indexes the full list, so an
    image's augmentation does not depend on how many processes share the epoch.
    """

    def __init__(
        self,
        num_items: int,
        weights: np.ndarray | None,
        seed: int,
        num_samples: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        if weights is not None and len(weights) != num_items:
            raise ValueError(f"{len(weights)} weights for {num_items} items")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_items = num_items
        self.weights = weights
        self.seed = seed
        self.num_samples = num_samples or num_items
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def epoch_indices(self) -> np.ndarray:
        """int64 (num_samples,) image indices of the whole epoch, before sharding."""
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A3])
        if self.weights is None:
            return rng.permutation(self.num_items)
        return rng.choice(self.num_items, size=self.num_samples, replace=True, p=self.weights)

    def __len__(self) -> int:
        return math.ceil(self._total() / self.world_size)

    def _total(self) -> int:
        return self.num_items if self.weights is None else self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        indices = self.epoch_indices()
        padded = len(self) * self.world_size
        positions = np.arange(padded) % len(indices)
        for position in positions[self.rank :: self.world_size]:
            yield int(indices[position]), self.epoch, int(position)


def display_path(path: str | Path) -> str:
    """Relative to the repository when under its parent folder (runs/..., ../shared/...), else
    absolute."""
    path = Path(path).resolve()
    return os.path.relpath(path, REPO) if path.is_relative_to(REPO.parent) else str(path)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
