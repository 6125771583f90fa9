"""The images an evaluation reads: the split file, the manifests, and each set decoded once to
the model input resolution (`ImageSet`), verified against the SHA-256 recorded for each row.

    split = read_split(Path("weights/split.json"))
    test = load_set("test", data_root, split["test"], card.classes, card.get_preprocessing())
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dermcore.imageio import load_image
from dermcore.preprocessing import Preprocessing
from training.roots import read_row, root_folders, row_key

REPO = Path(__file__).resolve().parents[1]


class DataError(RuntimeError):
    """Data files missing or not matching their recorded checksums; the message says what to do."""


@dataclass
class ImageSet:
    """Photos decoded once to the model input resolution, with their labels."""

    name: str  # seeds the per-image draws: "test", "val", "shift_sd198"
    paths: list[str]  # relative to the data root (roots.row_key: behind its root id when several)
    labels: np.ndarray  # int64 (N,) indices into the card's classes
    sources: list[str]
    images: np.ndarray  # uint8 (N, S, S, 3) at the model input size
    table2: np.ndarray | None = None  # bool (N,): the row's condition is in the paper's Table 2
    conditions: list[str] = field(default_factory=list)  # the source's own class name per row


def read_split(path: Path) -> dict[str, list[dict]]:
    """weights/split.json -> {"train"|"val"|"test": [{path, sha256, label, source, group}]}."""
    if not path.is_file():
        raise DataError(
            f"The split file {path} is missing. Run training/train.py first (it writes it)."
        )
    data = json.loads(path.read_text())
    splits = data.get("splits", data)
    if "val" not in splits and "validation" in splits:
        splits["val"] = splits["validation"]
    missing = [name for name in ("val", "test") if not isinstance(splits.get(name), list)]
    if missing:
        raise DataError(f"The split file {path} has no {' or '.join(missing)} list.")
    return splits


def read_manifest(root: Path) -> list[dict]:
    path = root / "manifest.csv"
    if not path.is_file():
        raise DataError(f"No manifest.csv in {root}; pass the data set folder (see --help).")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_set(
    name: str,
    root: Path | Mapping[str, Path],
    rows: Sequence[dict],
    classes: Sequence[str],
    preprocessing: Preprocessing,
) -> ImageSet:
    """Read, verify (SHA-256 when the row has one) and decode rows to the model input size.
    `root` is one folder, or root id -> folder for a split made from several (training/roots.py)."""
    folders = root_folders(root) if isinstance(root, Path) else dict(root)
    images = np.empty((len(rows), preprocessing.input_size, preprocessing.input_size, 3), np.uint8)
    for i, row in enumerate(rows):
        try:
            data = read_row(folders, row, "--data-root / --shift-root")
        except ValueError as exc:
            raise DataError(str(exc)) from None
        images[i] = preprocessing.to_input_resolution(load_image(data))
    table2 = [row.get("table2") for row in rows]
    return ImageSet(
        name=name,
        paths=[row_key(row) for row in rows],
        labels=np.array([classes.index(row["label"]) for row in rows], dtype=np.int64),
        sources=[row.get("source", "") for row in rows],
        images=images,
        table2=None if None in table2 else np.array([v == "yes" for v in table2], dtype=bool),
        conditions=[row.get("condition", "") for row in rows],
    )


def subset(image_set: ImageSet, mask: np.ndarray, name: str) -> ImageSet:
    return ImageSet(
        name=name,
        paths=[p for p, keep in zip(image_set.paths, mask, strict=True) if keep],
        labels=image_set.labels[mask],
        sources=[s for s, keep in zip(image_set.sources, mask, strict=True) if keep],
        images=image_set.images[mask],
        table2=None if image_set.table2 is None else image_set.table2[mask],
        conditions=[c for c, keep in zip(image_set.conditions, mask, strict=True) if keep],
    )


def default_data_root(name: str) -> Path | None:
    """../shared/data/<name> beside the repository when it exists, else None."""
    path = (REPO / ".." / "shared" / "data" / name).resolve()
    return path if path.is_dir() else None
