"""Throughput of the robustness report against pure batched inference of the same images.

    python -m benchmarks.bench_report --card weights/clean.json --data-root ../shared/data/train
    python -m benchmarks.bench_report --random-model --limit 128       # before any weights exist

Both sides see the same test-split photos, decoded once to the model input resolution. "Report"
is what training/evaluate.py does per model and set: corrupt every image under every condition at
the input resolution, run the model, and compute every metric. "Pure" is
`Predictor.predict_logits` on the same images, measured two ways:

- in-run: the report's own forward passes (same batches, timed inside the report), so the ratio
  is the share of report time spent in the model. It is immune to other work on the machine,
  which slows both sides alike; the verdict uses it. Target >= 0.8.
- separate passes over the clean images before and after the report (mean kept). On a shared
  machine whose load changes during the minutes a report takes, this ratio swings either way.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch

from dermcore.checkpoint import load_checkpoint
from dermcore.labels import CLASSES
from dermcore.models import DEFAULT_ARCH, build_model, get_arch
from training.conditions import CONDITIONS, batch_predictor, run_grid
from training.eval_data import default_data_root, load_set, read_manifest, read_split
from training.eval_report import set_report

TARGET_RATIO = 0.8


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--card", type=Path, default=Path("weights/clean.json"), help="model card")
    parser.add_argument(
        "--random-model",
        action="store_true",
        help="ImageNet backbone with a random head instead of the card's weights",
    )
    parser.add_argument("--arch", default=DEFAULT_ARCH, help="architecture for --random-model")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=default_data_root("train"),
        help="set A folder (manifest.csv, images/)",
    )
    parser.add_argument(
        "--split",
        type=Path,
        default=Path("weights/split.json"),
        help="split file; without one, every 7th manifest row stands in for the test split",
    )
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=list(CONDITIONS),
        choices=list(CONDITIONS),
        metavar="NAME",
        help="conditions in the report (default: the whole grid)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="corruption seed")
    return parser


def test_rows(args: argparse.Namespace) -> tuple[list[dict], str]:
    if args.split.is_file():
        return read_split(args.split)["test"], f"test split of {args.split}"
    rows = read_manifest(args.data_root)[::7]
    return rows, f"every 7th row of {args.data_root / 'manifest.csv'} (no split file)"


def pure_rate(predictor, images: np.ndarray, batch_size: int) -> float:
    """Images per second of predict_logits alone over already decoded images."""
    start = time.perf_counter()
    predictor.predict_logits(images, batch_size)
    return len(images) / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> float:
    """Prints both rates and their ratio; returns the ratio."""
    if args.random_model:
        torch.manual_seed(args.seed)
        model, arch = build_model(args.arch, pretrained=True), args.arch
        prep, classes, name = get_arch(arch).preprocessing, list(CLASSES), f"{arch} (random head)"
    else:
        model, card = load_checkpoint(args.card)
        arch, prep, classes, name = card.arch, card.get_preprocessing(), card.classes, card.name
    predictor = batch_predictor(model, arch, prep, classes)
    rows, described = test_rows(args)
    image_set = load_set("test", args.data_root, rows[: args.limit], classes, prep)
    images, n = image_set.images, len(image_set.labels)
    conditions = [CONDITIONS[c] for c in dict.fromkeys(["clean", *args.conditions])]
    print(
        f"{name}, {n} images ({described}), {len(conditions)} conditions, {torch.get_num_threads()} threads"
    )

    predictor.predict_logits(images[: args.batch_size], args.batch_size)  # warm-up
    before = pure_rate(predictor, images, args.batch_size)
    start = time.perf_counter()
    run = run_grid(predictor, [image_set], conditions, args.seed, args.batch_size)
    logits = {c: v["test"] for c, v in run.logits.items()}
    set_report(image_set, logits, conditions, {}, 1.0, classes)
    report_s = time.perf_counter() - start
    after = pure_rate(predictor, images, args.batch_size)

    n_images = n * len(conditions)
    report = n_images / report_s
    in_run = n_images / run.forward_s
    separate = (before + after) / 2
    corrupt_s = run.total_s - run.forward_s
    metrics_s = report_s - run.total_s
    print(
        f"report          : {report:6.1f} img/s  ({n_images} images in {report_s:.1f} s: "
        f"model {run.forward_s:.1f} s, corrupting + batching {corrupt_s:.1f} s, "
        f"metrics {metrics_s:.1f} s)"
    )
    print(f"pure, in-run    : {in_run:6.1f} img/s  (the report's own forward passes)")
    print(f"pure, separate  : {separate:6.1f} img/s  (before {before:.1f}, after {after:.1f})")
    ratio = report / in_run
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"ratio report / pure in-run   = {ratio:.2f} ({verdict} the target >= {TARGET_RATIO})")
    print(f"ratio report / pure separate = {report / separate:.2f} (load-sensitive)")
    return ratio


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main(get_args_parser().parse_args())
