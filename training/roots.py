"""Several data roots as one training set: ours first, then a user's own photos
(training/import_photos.py writes their manifest.csv in our format).

With one root nothing changes: rows keep their manifest fields, so the split, the split file and
the cache key are byte-identical to a one-root run. With several, root k gets the id "r<k>" and
each of its rows carries `root`, and its `group` and `source` are prefixed "r<k>:", so two roots
that both name a group "g1" or a source "clinic" never share a split group or a sampling stratum.
A row's image is <root folder>/<path>; `row_key` names it uniquely across roots (cache, reports).

Standard library only: training/data.py and training/eval_data.py both import it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT_FIELD = "root"
UNRECORDED_TIER = "unrecorded"  # rows of a manifest without a `tier` column


def root_ids(count: int) -> list[str]:
    """[""] for one root (rows untouched), else ["r0", "r1", ...] in command-line order."""
    if count < 1:
        raise ValueError("at least one data root is needed")
    return [""] if count == 1 else [f"r{k}" for k in range(count)]


def tag_rows(rows: Sequence[dict], root_id: str) -> list[dict]:
    """Rows of one root, with the root id recorded and prefixed to group and source (none for "")."""
    if not root_id:
        return list(rows)
    return [
        {
            **row,
            ROOT_FIELD: root_id,
            "group": f"{root_id}:{row['group']}",
            "source": f"{root_id}:{row['source']}",
        }
        for row in rows
    ]


def row_key(row: Mapping[str, str]) -> str:
    """The row's name, unique across roots: its path, behind "<root id>/" when it has one."""
    root_id = row.get(ROOT_FIELD, "")
    return f"{root_id}/{row['path']}" if root_id else row["path"]


def root_folders(folders: Path | Sequence[Path]) -> dict[str, Path]:
    """Root id -> folder, for one folder or several in command-line order."""
    folders = [folders] if isinstance(folders, Path) else list(folders)
    return dict(zip(root_ids(len(folders)), folders, strict=True))


def row_file(folders: Mapping[str, Path], row: Mapping[str, str]) -> Path:
    """The image file of a row, resolved against its own root."""
    root_id = row.get(ROOT_FIELD, "")
    if root_id not in folders:
        raise ValueError(
            f"The row {row_key(row)} belongs to data root {root_id or '(single root)'}, but "
            f"{len(folders)} root(s) were given. Pass every data root the split was made from, in "
            "the training order, e.g. --data-root ../shared/data/train <your root>."
        )
    return folders[root_id] / row["path"]


def read_row(folders: Mapping[str, Path], row: Mapping[str, str], roots_flag: str) -> bytes:
    """The bytes of a row's image file, checked against the row's SHA-256 when it has one.
    Raises ValueError with a sentence naming the file (and `roots_flag`, the option that sets
    the roots, when it is missing)."""
    path = row_file(folders, row)
    try:
        data = path.read_bytes()
    except OSError:
        raise ValueError(f"{path} is missing; is {roots_flag} right?") from None
    if row.get("sha256") and hashlib.sha256(data).hexdigest() != row["sha256"]:
        raise ValueError(
            f"{path} does not match the SHA-256 recorded for it: the data changed since its "
            "manifest or split was made. Rebuild the data or the split."
        )
    return data


def combined_sha256(manifest_hashes: Sequence[str]) -> str:
    """One root: its manifest's SHA-256. Several: the SHA-256 of "r<k> <hash>" lines, so a changed
    manifest, an added or dropped root, or another order all give another value."""
    if len(manifest_hashes) == 1:
        return manifest_hashes[0]
    lines = "".join(
        f"{k} {h}\n" for k, h in zip(root_ids(len(manifest_hashes)), manifest_hashes, strict=True)
    )
    return hashlib.sha256(lines.encode()).hexdigest()


def tier_counts(rows: Sequence[Mapping[str, str]]) -> dict[str, int]:
    """Licence tier (the manifest's `tier` column) -> number of rows, sorted by tier."""
    counts = Counter(row.get("tier") or UNRECORDED_TIER for row in rows)
    return dict(sorted(counts.items()))
