"""What a whole robustness curve of one photo costs, against classifying its views one by one.

    python -m benchmarks.bench_sweep [--repeats 5] [--photo-side 4032] [--torch-threads 1]

The curve is the Robustness page's default: 21 noise densities (0-5%) x 3 seeds + 6 Gaussian blur
kernels + the clean view, 70 views in all. Both sides use one randomly initialised
EfficientNet-Lite0 at 224 px (speed does not depend on the weights), each timed call round-robin
within a repeat so a burst of load from other jobs hits both alike:

    batched     dermcore.robustness.robustness_curve on the full photo: one resize, 70
                corruptions, batched forward passes, softmax (everything the page waits for)
    one-by-one  70 bare forward passes model(x) of batch 1 under torch.inference_mode(), on the
                same 70 views already corrupted and converted to tensors (only the model's time)

Targets: batched >= 3x faster than one-by-one, and a whole curve in < 2 s. The server runs with
one torch thread (DERM_TORCH_THREADS, default 1), so that is the default here too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import cv2
import numpy as np
import torch

from dermcore.corruptions import CorruptionSpec, apply_corruption
from dermcore.explain import Predictor
from dermcore.models import build_model
from dermcore.robustness import (
    DEFAULT_DENSITIES,
    DEFAULT_KERNELS,
    DEFAULT_SEEDS,
    robustness_curve,
)

ARCH = "efficientnet_lite0"
TARGET_SPEEDUP = 3.0
TARGET_CURVE_S = 2.0


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed curves per side (default: 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed curves first (default: 1)")
    parser.add_argument(
        "--photo-side",
        type=int,
        default=4032,
        help="the photo's longer side, px; 4:3 (default: 4032, 12 MP)",
    )
    parser.add_argument(
        "--torch-threads", type=int, default=1, help="torch intra-op threads (default: 1)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="robustness_curve's batch (default: 1, as the app)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds weights and photo (default: 0)")
    return parser


def synthetic_photo(side: int, seed: int) -> np.ndarray:
    """uint8 (3/4 side, side, 3): smooth skin-like gradients plus fine texture, enlarged from a
    small random image (the resize cost depends on the size, not on the content)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(90, 230, size=(48, 64, 3), dtype=np.uint8)
    photo = cv2.resize(small, (side, side * 3 // 4), interpolation=cv2.INTER_CUBIC)
    return np.clip(photo + rng.integers(-8, 9, size=photo.shape[:2] + (1,)), 0, 255).astype(
        np.uint8
    )


def one_by_one_tensors(predictor: Predictor, photo: np.ndarray) -> list[torch.Tensor]:
    """The curve's 70 views, corrupted as robustness_curve corrupts them, as (1, 3, S, S)."""
    resized = predictor.prepare(photo)
    specs = [CorruptionSpec()]
    specs += [
        CorruptionSpec(noise_density=float(d), seed=int(s))
        for s in DEFAULT_SEEDS
        for d in DEFAULT_DENSITIES
    ]
    specs += [CorruptionSpec(blur_kernel=int(k)) for k in DEFAULT_KERNELS]
    return [predictor.preprocessing.to_tensor(apply_corruption(resized, s)) for s in specs]


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(args.seed)
    predictor = Predictor(build_model(ARCH, pretrained=False), ARCH)
    photo = synthetic_photo(args.photo_side, args.seed)
    tensors = one_by_one_tensors(predictor, photo)

    def batched() -> None:
        robustness_curve(predictor, photo, batch_size=args.batch_size)

    def one_by_one() -> None:
        with torch.inference_mode():
            for x in tensors:
                predictor.model(x)

    sides = {"batched": batched, "one-by-one": one_by_one}
    for _ in range(args.warmup):
        for call in sides.values():
            call()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, call in sides.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"robustness curve of one {photo.shape[1]}x{photo.shape[0]} photo: {len(tensors)} views "
        f"({len(DEFAULT_DENSITIES)} densities x {len(DEFAULT_SEEDS)} seeds + "
        f"{len(DEFAULT_KERNELS)} blur kernels + clean), {ARCH} at {predictor.input_size} px"
    )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"{args.repeats} repeats, CPUs {os.cpu_count()}, load average {load:.1f}"
    )
    print(f"{'statistic':<10}{'batched s':>12}{'one-by-one s':>14}{'speed-up':>10}")
    for statistic, reduce in (("median", statistics.median), ("minimum", min)):
        batch_s, single_s = reduce(seconds["batched"]), reduce(seconds["one-by-one"])
        print(f"{statistic:<10}{batch_s:>12.3f}{single_s:>14.3f}{single_s / batch_s:>9.2f}x")
    batch_s = statistics.median(seconds["batched"])
    speedup = statistics.median(seconds["one-by-one"]) / batch_s
    met = speedup >= TARGET_SPEEDUP and batch_s < TARGET_CURVE_S
    print(
        f"target batched >= {TARGET_SPEEDUP:g}x faster and < {TARGET_CURVE_S:g} s (medians): "
        f"{'PASS' if met else 'MISS'} ({speedup:.2f}x, {batch_s:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
