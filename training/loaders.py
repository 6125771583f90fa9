"""A run's data: the split, the decoded-image cache and the evaluation sets (`prepare_data`),
the training loader of one seed (`make_train_loader`) and evaluation loaders (`eval_loader`).

    manifest.csv -> weights/split.json -> runs/cache/ -> Data(val, test, SD-198)
                                                      -> make_train_loader(config, data, seed)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from dermcore.labels import CLASSES
from dermcore.preprocessing import Preprocessing
from training import data as D
from training.augment import AugmentConfig
from training.config import RunPaths, TrainConfig
from training.distributed import Dist


@dataclass
class Data:
    root: Path
    manifest_hash: str
    split: dict  # the split file's content
    preprocessing: Preprocessing  # evaluation preset (the app's)
    images: D.DecodedImages
    val: D.EvalDataset
    test: D.EvalDataset
    shift: D.EvalDataset | None
    shift_info: dict = field(default_factory=dict)

    def rows(self, split: str) -> list[dict]:
        return self.split["splits"][split]


def prepare_data(config: TrainConfig, paths: RunPaths, ctx: Dist | None = None) -> Data:
    """Manifest -> split file -> decoded-image cache -> evaluation sets (training sets are made
    per seed by make_train_loader). Rank 0 writes the split and the cache before the others read."""
    ctx = ctx or Dist()
    rows = D.read_manifest(paths.data_root)
    manifest_hash = D.manifest_sha256(paths.data_root)
    prep = config.preprocessing()
    if not ctx.main:
        ctx.barrier()
    split = D.load_or_make_split(
        paths.split_file, rows, paths.data_root, manifest_hash, config.split_seed, config.fractions
    )
    images = D.load_decoded(
        paths.data_root, rows, prep, paths.cache_dir, manifest_hash, config.cache_short_side
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
    return Data(paths.data_root, manifest_hash, split, prep, images, val, test, shift, shift_info)


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
