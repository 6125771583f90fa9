"""Fine-tune an ImageNet backbone on set A the paper's way (Mishra et al. 2020, sec. 2.2):

    LR range test (head only)  ->  phase 1: frozen backbone, SGDR restarting every epoch
                               ->  phase 2: every layer, SGDR with cycle-length multiplication
                                   and discriminative rates over four layer groups

    python training/train.py --name clean --seeds 0 1 2
    python training/train.py --name noise-trained --seeds 0 1 2          # --train-corruption sp
    python training/train.py --name robust --seeds 0 1 2                 # --train-corruption robust
    torchrun --standalone --nproc_per_node=2 training/train.py --name clean
    python training/train.py --data-root ../shared/data/train ~/clinic-photos --name clean-clinic
                                          # ours plus an imported root (training/README.md)

Each seed runs in runs/<name>/seed<k>/ (last.pt after every epoch, metrics.jsonl, lr_find.*,
loss_curves.png, and the seed's own checkpoint + card); a killed run continues bit-identically
with --resume. The seed whose validation balanced accuracy is closest to the median over seeds
is shipped to weights/<name>.safetensors + .json. Test and SD-198 numbers are reported, never
used for a choice. Timings and expected numbers: training/README.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python training/train.py`
    sys.path.insert(0, str(REPO))

# The imports below need the sys.path line above:
# ruff: noqa: E402
from dermcore.checkpoint import save_checkpoint
from dermcore.malloc import keep_freed_memory
from dermcore.models import ARCHITECTURES
from training import data as D
from training import report
from training.augment import TRAIN_CORRUPTIONS
from training.config import (
    CORRUPTION_FOR_NAME,
    IMPULSE_FILTER_FOR_NAME,
    RunPaths,
    TrainConfig,
)
from training.distributed import Dist, setup_distributed, teardown
from training.engine import create_model, resolve_device
from training.loaders import Data, prepare_data
from training.seed_run import RunOptions, SeedRun

log = logging.getLogger("train")


def ship(
    config: TrainConfig,
    paths: RunPaths,
    data: Data,
    results: list[dict],
    device: torch.device,
    ctx: Dist,
) -> Path:
    """The shipped seed's weights into --weights-dir, with a card over every seed."""
    from safetensors.torch import load_file

    shipped = report.pick_shipped(results)
    run_dir = paths.out_dir / config.name / f"seed{shipped['seed']}"
    model = create_model(config, pretrained=False)
    model.load_state_dict(load_file(str(run_dir / f"{config.name}.safetensors")))
    card = report.make_card(config, data, paths.split_file, results, shipped, run_dir, device, ctx)
    return save_checkpoint(model, card, paths.weights_dir)


# --- command line -------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add(
        "--data-root",
        type=Path,
        nargs="+",
        default=None,
        metavar="ROOT",
        help="data set folder(s) with manifest.csv, ours first, e.g. ../shared/data/train ~/clinic-root; "
        "several are split and trained on as one set (training/roots.py); relative paths are taken "
        "from the repository root (default: ../shared/data/train)",
    )
    add(
        "--shift-root",
        type=Path,
        default=None,
        help="external SD-198 set, reported only (default: <first data root>/../shift-sd198 when it exists)",
    )
    add(
        "--arch",
        default=d.arch,
        choices=sorted(ARCHITECTURES),
        help=f"backbone (default: {d.arch})",
    )
    add(
        "--weights-path",
        type=Path,
        default=None,
        help="local ImageNet weights file for the backbone (default: the offline package, or the hub)",
    )
    add(
        "--no-pretrained",
        action="store_true",
        help="random initial weights, for tests (default: ImageNet weights)",
    )
    add(
        "--name",
        default=d.name,
        help=f"model name, e.g. clean, noise-trained, robust (default: {d.name})",
    )
    add(
        "--train-corruption",
        choices=TRAIN_CORRUPTIONS,
        default=None,
        help="none | sp | robust (default: from --name: clean=none, noise-trained=sp, robust=robust, other names none)",
    )
    add(
        "--robust-clean-share",
        type=float,
        default=d.robust_clean_share,
        metavar="FRACTION",
        help="share of clean images in the robust mix; the rest is half noisy, half other corruptions (default: 2/3)",
    )
    add(
        "--impulse-filter",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace pure black/white pixels by their 3x3 median before the network, in training and in the card (default: from --name: on for robust, else off)",
    )
    add(
        "--sampling",
        choices=D.SAMPLING_MODES,
        default=d.sampling,
        help=f"how training images are drawn (default: {d.sampling})",
    )
    add("--seed", type=int, default=0, help="training seed (default: 0)")
    add(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="several trials, e.g. 0 1 2: mean/std reported, the median-validation seed shipped (default: --seed)",
    )
    add(
        "--split-seed",
        type=int,
        default=d.split_seed,
        help=f"seed of the grouped split when it is made (default: {d.split_seed})",
    )
    add(
        "--split-file",
        type=Path,
        default=None,
        help="split JSON, made when missing (default: weights/split.json; with several "
        "--data-root folders weights/split-<name>.json)",
    )
    add(
        "--epochs-frozen",
        type=int,
        default=d.epochs_frozen,
        help=f"phase 1 epochs (default: {d.epochs_frozen})",
    )
    add(
        "--cycles",
        type=int,
        nargs="+",
        default=list(d.cycles),
        help="phase 2 SGDR cycle lengths in epochs (default: 1 2; the paper's longer schedule: 1 2 4)",
    )
    add(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"images per step and process (default: {d.batch_size})",
    )
    add(
        "--lr",
        type=float,
        default=None,
        help="phase 1 head rate; phase 2 (--phase2-divisor 10): head lr/10, lower groups lr/30, lr/100, lr/1000 (default: from the LR range test)",
    )
    add(
        "--phase2-divisor",
        type=float,
        default=d.phase2_divisor,
        help=f"phase 2 head rate = phase 1 rate / this (default: {d.phase2_divisor:g})",
    )
    add(
        "--lr-find-iters",
        type=int,
        default=d.lr_find_iters,
        help=f"mini-batches in the LR range test (default: {d.lr_find_iters})",
    )
    add(
        "--weight-decay",
        type=float,
        default=d.weight_decay,
        help=f"SGD weight decay, not on biases and BatchNorm (default: {d.weight_decay})",
    )
    add(
        "--label-smoothing",
        type=float,
        default=d.label_smoothing,
        help=f"(default: {d.label_smoothing})",
    )
    add(
        "--keep",
        choices=("best", "last"),
        default=d.keep,
        help=f"which epoch a seed keeps: best validation balanced accuracy, or the last (default: {d.keep})",
    )
    add(
        "--bn",
        choices=("train", "frozen"),
        default=d.bn,
        help="phase 2 BatchNorm: train (batch statistics; running statistics adapt to set A) or "
        f"frozen (ImageNet statistics kept, continuous with phase 1) (default: {d.bn})",
    )
    add(
        "--domain-adversarial",
        type=float,
        default=d.domain_adversarial,
        metavar="WEIGHT",
        help="phase 2 DANN: a class-conditional source adversary behind gradient reversal with this maximum weight, e.g. 0.3 (default: 0 = off)",
    )
    add(
        "--group-dro",
        type=float,
        default=d.group_dro,
        metavar="ETA",
        help="group DRO over (class, source) groups with this step size for the group weights, e.g. 0.01 (default: 0 = off)",
    )
    add(
        "--probe-c",
        type=float,
        default=d.probe_c,
        metavar="C",
        help="before phase 1, fit the head as a logistic-regression probe on frozen features (LP-FT; training/experiments/probe.py) with this inverse regularisation, e.g. 0.01; with --epochs-frozen 0 phase 2 starts from it (default: 0 = off)",
    )
    add(
        "--train-size",
        type=int,
        default=d.train_size,
        help=f"training crop side in px; evaluation uses the preset's size (default: {d.train_size})",
    )
    add(
        "--input-size",
        type=int,
        default=None,
        help="override the preset's evaluation input size, for tests (default: the preset's 224)",
    )
    add(
        "--workers",
        type=int,
        default=d.workers,
        help=f"DataLoader worker processes (default: {d.workers}; 8 on a GPU machine)",
    )
    add(
        "--cache-dir",
        type=Path,
        default=Path("runs/cache"),
        help="decoded-image cache (default: runs/cache)",
    )
    add(
        "--out-dir",
        type=Path,
        default=Path("runs"),
        help="run folders are <out-dir>/<name>/seed<k>/ (default: runs)",
    )
    add(
        "--weights-dir",
        type=Path,
        default=Path("weights"),
        help="where the shipped checkpoint and card go (default: weights)",
    )
    add(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA with fp16 autocast when available, else CPU fp32 (default: auto)",
    )
    add(
        "--resume",
        action="store_true",
        help="continue the runs in their folders from last.pt (default: refuse to overwrite a run)",
    )
    add(
        "--stop-after-epochs",
        type=int,
        default=None,
        help="end this invocation after so many epochs, as if killed; for tests (default: run to the end)",
    )
    add(
        "--debug-sample-log",
        action="store_true",
        help="write every rank's image indices per epoch to samples.jsonl (default: off)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        name=args.name,
        arch=args.arch,
        pretrained=not args.no_pretrained,
        train_corruption=args.train_corruption or CORRUPTION_FOR_NAME.get(args.name, "none"),
        robust_clean_share=args.robust_clean_share,
        impulse_filter=(
            IMPULSE_FILTER_FOR_NAME.get(args.name, False)
            if args.impulse_filter is None
            else args.impulse_filter
        ),
        sampling=args.sampling,
        train_size=args.train_size,
        input_size=args.input_size,
        batch_size=args.batch_size,
        workers=args.workers,
        epochs_frozen=args.epochs_frozen,
        cycles=tuple(args.cycles),
        lr=args.lr,
        phase2_divisor=args.phase2_divisor,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        lr_find_iters=args.lr_find_iters,
        keep=args.keep,
        bn=args.bn,
        domain_adversarial=args.domain_adversarial,
        group_dro=args.group_dro,
        probe_c=args.probe_c,
        split_seed=args.split_seed,
    )


def default_split_file(args: argparse.Namespace) -> Path:
    """Our split for one root; a split of its own for several, never overwriting ours."""
    several = args.data_root is not None and len(args.data_root) > 1
    return Path(f"weights/split-{args.name}.json" if several else "weights/split.json")


def main(args: argparse.Namespace) -> Path | None:
    """Train every seed and ship the median-validation seed; returns the shipped card's path
    (None on ranks other than 0 and when stopped early)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    keep_freed_memory()  # ~2x faster steps on CPU: no mmap/munmap per activation (malloc.py)
    config = config_from_args(args)
    ctx = setup_distributed(args.device)
    device = resolve_device(args.device, ctx)
    paths = RunPaths.from_args(
        args.data_root,
        args.split_file or default_split_file(args),
        args.cache_dir,
        args.shift_root,
        args.out_dir,
        args.weights_dir,
    )
    options = RunOptions(
        args.resume, args.weights_path, args.stop_after_epochs, args.debug_sample_log
    )
    seeds = args.seeds if args.seeds is not None else [args.seed]
    if ctx.main:
        log.info("config %s on %s, world size %d", asdict(config), device, ctx.world_size)
    try:
        data = prepare_data(config, paths, ctx)
        results = [SeedRun(config, paths, data, s, device, options, ctx).run() for s in seeds]
        if not ctx.main or any(r is None for r in results):
            return None
        card_path = ship(config, paths, data, results, device, ctx)
        shipped = report.pick_shipped(results)["seed"]
        print(report.summary_table(config, results, shipped), flush=True)
        log.info("shipped seed %d to %s", shipped, card_path)
        return card_path
    finally:
        teardown(ctx)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
