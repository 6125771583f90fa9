"""A run's data: the split, the decoded-image cache and the evaluation sets (`prepare_data`),
the training loader of one seed (`make_train_loader`) and evaluation loaders (`eval_loader`).

    manifest.csv [+ more roots' manifest.csv] -> weights/split.json -> runs/cache/
        -> Data(val, test, SD-198) -> make_train_loader(config, data, seed)

Several data roots (ours first, then a user's) are read as one set: training/roots.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dermcore.labels import CLASSES
from dermcore.preprocessing import Preprocessing
from training import data as D
from training import roots as R
from training.augment import AugmentConfig
from training.config import RunPaths, TrainConfig
from training.distributed import Dist


@dataclass
class Data:
    root: Path  # the first data root
    manifest_hash: str  # its manifest's SHA-256; with several roots, roots.combined_sha256
    split: dict  # the split file's content
    preprocessing: Preprocessing  # evaluation preset (the app's)
    images: D.DecodedImages
    val: D.EvalDataset
    test: D.EvalDataset
    shift: D.EvalDataset | None
    shift_info: dict = field(default_factory=dict)
    roots: list[dict] = field(default_factory=list)  # root_records(): one per data root

    def rows(self, split: str) -> list[dict]:
        return self.split["splits"][split]


def prepare_data(config: TrainConfig, paths: RunPaths, ctx: Dist | None = None) -> Data:
    """Manifest -> split file -> decoded-image cache -> evaluation sets (training sets are made
    per seed by make_train_loader). Rank 0 writes the split and the cache before the others read."""
    ctx = ctx or Dist()
    rows, records = read_roots(paths.roots, paths.roots_given)
    manifest_hash = R.combined_sha256([r["manifest_sha256"] for r in records])
    # one root: no `roots` entry, so the split file is byte-identical to a one-root run's
    split_roots = [split_root_entry(r) for r in records] if len(records) > 1 else None
    prep = config.preprocessing()
    if not ctx.main:
        ctx.barrier()
    check_split_roots(paths.split_file, records)
    split = D.load_or_make_split(
        paths.split_file,
        rows,
        paths.data_root,
        manifest_hash,
        config.split_seed,
        config.fractions,
        roots=split_roots,
    )
    folders = R.root_folders(paths.roots)
    images = D.load_decoded(
        folders, rows, prep, paths.cache_dir, manifest_hash, config.cache_short_side
    )
    shift, shift_info = None, {}
    if paths.shift_root is not None:
        shift_rows = [
            r
            for r in D.read_manifest(paths.shift_root)
            if r.get("table2", "yes") == "yes" and r["label"] in CLASSES
        ]
        shift_hash = D.manifest_sha256(paths.shift_root)
        decoded = D.load_decoded(
            paths.shift_root, shift_rows, prep, paths.cache_dir, shift_hash, None
        )
        shift = D.EvalDataset(decoded, shift_rows)
        shift_info = {
            "root": D.display_path(paths.shift_root),
            "manifest_sha256": shift_hash,
            "rows": "table2 == yes",
            "images": len(shift_rows),
        }
    if ctx.main:
        ctx.barrier()
    val = D.EvalDataset(images, split["splits"]["val"])
    test = D.EvalDataset(images, split["splits"]["test"])
    return Data(
        paths.data_root, manifest_hash, split, prep, images, val, test, shift, shift_info, records
    )


def read_roots(folders: Sequence[Path], given: Sequence[str]) -> tuple[list[dict], list[dict]]:
    """Every root's rows as one list (roots.tag_rows: ids and prefixes only with several roots),
    and a record per root for the split file and the card: id, path as given, resolved path,
    manifest SHA-256, row count and rows per licence tier."""
    rows, records = [], []
    for root_id, folder, as_given in zip(R.root_ids(len(folders)), folders, given, strict=True):
        own = D.read_manifest(folder)
        rows += R.tag_rows(own, root_id)
        records.append(
            {
                **({"id": root_id} if root_id else {}),  # one root: rows carry no id
                "path": as_given,
                "resolved": D.display_path(folder),
                "manifest_sha256": D.manifest_sha256(folder),
                "rows": len(own),
                "tiers": R.tier_counts(own),
            }
        )
    return rows, records


def split_root_entry(record: dict) -> dict:
    """What the split file keeps of a root record: enough to say which manifest each row is from."""
    return {k: record[k] for k in ("id", "resolved", "manifest_sha256", "rows")}


def check_split_roots(split_file: Path, records: Sequence[dict]) -> None:
    """An existing split file must come from the same roots with the same manifests; the message
    says which root differs (D.read_split checks the combined hash as well)."""
    if not split_file.exists():
        return
    existing = D.read_split(split_file)
    if "roots" not in existing:
        if len(records) > 1:
            raise D.DataError(
                f"The split file {split_file} was made from one data root "
                f"({existing.get('data_root')}); a run on several roots needs its own: pass "
                "--split-file weights/split-<name>.json."
            )
        return
    recorded = {r["id"]: r for r in existing["roots"]}
    for record in records if len(records) > 1 else []:
        old = recorded.pop(record["id"], None)
        if old is None or old["manifest_sha256"] != record["manifest_sha256"]:
            was = "was not part of it" if old is None else "has another manifest.csv now"
            raise D.DataError(
                f"The split file {split_file} was made from other data: root {record['id']} "
                f"({record['path']}) {was}. Delete the split file to make a new split, or pass "
                "--split-file with another name."
            )
    if recorded:
        raise D.DataError(
            f"The split file {split_file} was made from more data roots ({', '.join(recorded)} "
            "not given now). Pass every root it was made from, in order, or another --split-file."
        )


def make_train_loader(
    config: TrainConfig, data: Data, seed: int, ctx: Dist | None = None
) -> tuple[DataLoader, D.EpochSampler]:
    ctx = ctx or Dist()
    rows = data.rows("train")
    augment = AugmentConfig(
        size=config.train_size,
        corruption=config.train_corruption,
        robust_clean_share=config.robust_clean_share,
    )
    dataset = D.TrainDataset(data.images, rows, augment, seed)
    weights = D.sampling_weights(rows, config.sampling)
    sampler = D.EpochSampler(len(rows), weights, seed, rank=ctx.rank, world_size=ctx.world_size)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.workers,
        collate_fn=D.Collate(data.preprocessing),
        drop_last=len(sampler) % config.batch_size == 1,  # BatchNorm cannot train on one image
        pin_memory=torch.cuda.is_available(),
    )
    return loader, sampler


def eval_loader(dataset: D.EvalDataset, prep: Preprocessing, batch_size: int = 64) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=D.Collate(prep))
