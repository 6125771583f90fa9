"""Learning-rate range test (Smith 2017; fastai's LRFinder), the paper's Figures 1 and 2.

The rate grows geometrically from `start_lr` to `end_lr` over `num_iter` mini-batches while the
training loss is recorded. The raw loss is noisy, so it is smoothed with an exponential moving
average (beta 0.98, bias-corrected as in Adam); the sweep stops early once the smoothed loss
exceeds 4x the best seen (divergence). The model AND the optimizer are restored afterwards from
deep copies of their state dicts, so the test leaves no trace on the run.

Suggested rate: the rate at the minimum of the smoothed loss divided by 10 (fastai v1's
"min loss / 10"). The steepest-descent point of the smoothed curve (fastai's `steep`) is
reported beside it, but not used: with a 0.98 EMA over ~100 steps it lags and jumps with
mini-batch noise, while the minimum is a stable landmark and a tenth of it sits safely on the
descending slope, which is where the paper picks its rate ("in the neighbourhood of the
inflexion"). The loss is the training loss of the swept mini-batches (fastai's choice); the
paper plots a validation loss, which costs a full validation pass per point.

    python training/lr_find.py --data-root ../shared/data/train --out runs/lr
"""

from __future__ import annotations

import argparse
import copy
import csv
import itertools
import logging
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python training/lr_find.py`
    sys.path.insert(0, str(REPO))

# The imports below need the sys.path line above:
# ruff: noqa: E402
from dermcore.models import get_arch, get_module
from training.config import RunPaths, TrainConfig
from training.distributed import Dist
from training.engine import (
    build_optimizer,
    configure_phase,
    create_model,
    resolve_device,
    seed_everything,
)
from training.loaders import Data, make_train_loader, prepare_data
from training.schedules import exponential_sweep

log = logging.getLogger("lr_find")

LR_FIND_EPOCH = 1_000_000  # sampler/augmentation stream of the LR test, apart from real epochs


@dataclass
class LRFindResult:
    lrs: list[float]  # the head group's rate at each recorded mini-batch
    losses: list[float]  # raw training loss per mini-batch
    smoothed: list[float]  # bias-corrected EMA of `losses`
    suggested_lr: float  # min_loss_lr / 10: the rate to use
    min_loss_lr: float  # rate at the smoothed minimum
    steepest_lr: float | None  # rate of steepest smoothed descent (reported, not used)
    diverged: bool  # stopped early because the smoothed loss passed divergence x best


def lr_find(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    num_iter: int = 100,
    beta: float = 0.98,
    divergence: float = 4.0,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
) -> LRFindResult:
    """Sweep the rate over `num_iter` batches of (float (N, 3, H, W) inputs, int64 (N,) targets).

    Every param group follows the sweep, keeping its ratio to the largest group's current rate
    (so discriminative rates stay discriminative). `batches` is cycled if it runs out. The model's
    weights, buffers and the optimizer (momentum, rates) are restored before returning.
    """
    if not 0 < beta < 1 or divergence <= 1:
        raise ValueError(f"need 0 < beta < 1 and divergence > 1, got {beta} and {divergence}")
    device = torch.device(device)
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    peak = max(group["lr"] for group in optimizer.param_groups)
    ratios = [group["lr"] / peak if peak > 0 else 1.0 for group in optimizer.param_groups]
    scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)

    lrs, losses, smoothed = [], [], []
    average, best, diverged = 0.0, math.inf, False
    try:
        for step, (inputs, targets) in zip(range(num_iter), _cycle(batches), strict=False):
            lr = exponential_sweep(step, num_iter, start_lr, end_lr)
            for group, ratio in zip(optimizer.param_groups, ratios, strict=True):
                group["lr"] = lr * ratio
            inputs, targets = inputs.to(device), targets.to(device)
            with torch.autocast(
                device.type, autocast_dtype or torch.float32, enabled=autocast_dtype is not None
            ):
                loss = loss_fn(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

            value = float(loss.detach())
            average = beta * average + (1 - beta) * value
            smooth = average / (1 - beta ** (step + 1))
            lrs.append(lr)
            losses.append(value)
            smoothed.append(smooth)
            if not math.isfinite(smooth) or (step > 0 and smooth > divergence * best):
                diverged = True
                break
            best = min(best, smooth)
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
    if len(lrs) < 2:
        raise RuntimeError("the LR range test recorded fewer than 2 points; raise num_iter")
    return _summarise(lrs, losses, smoothed, diverged)


def _cycle(batches: Iterable) -> Iterable:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the LR range test got no batches")


def _summarise(
    lrs: list[float], losses: list[float], smoothed: list[float], diverged: bool
) -> LRFindResult:
    finite = np.where(np.isfinite(smoothed), smoothed, np.inf)
    min_loss_lr = lrs[int(np.argmin(finite))]
    steepest_lr = None
    # Skip the noisy start and the divergence tail, as fastai does.
    start, stop = min(10, len(lrs) // 10), len(lrs) - (5 if diverged else 0)
    if stop - start >= 3:
        slope = np.gradient(finite[start:stop], np.log(lrs[start:stop]))
        if np.isfinite(slope).any():
            steepest_lr = lrs[
                start + int(np.nanargmin(np.where(np.isfinite(slope), slope, np.nan)))
            ]
    return LRFindResult(lrs, losses, smoothed, min_loss_lr / 10, min_loss_lr, steepest_lr, diverged)


def write_lr_find(result: LRFindResult, out_dir: str | Path, title: str = "LR range test") -> None:
    """lr_find.csv (lr, loss, smoothed_loss) and lr_find.png (smoothed loss against log lr)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "lr_find.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["lr", "loss", "smoothed_loss"])
        writer.writerows(zip(result.lrs, result.losses, result.smoothed, strict=True))

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(result.lrs, result.losses, color="0.8", linewidth=0.8, label="loss (mini-batch)")
    ax.plot(result.lrs, result.smoothed, color="C0", label="smoothed (EMA 0.98)")
    ax.axvline(
        result.suggested_lr,
        color="C3",
        linestyle="--",
        label=f"suggested {result.suggested_lr:.2g}",
    )
    ax.axvline(
        result.min_loss_lr, color="0.5", linestyle=":", label=f"min loss {result.min_loss_lr:.2g}"
    )
    if result.steepest_lr is not None:
        ax.axvline(
            result.steepest_lr,
            color="C2",
            linestyle=":",
            label=f"steepest {result.steepest_lr:.2g}",
        )
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # keep the divergence spike from flattening the interesting part
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.05)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "lr_find.png")
    plt.close(fig)


# --- the range test of a training run ---------------------------------------------------------


def run_lr_find(
    model: nn.Module,
    config: TrainConfig,
    data: Data,
    device: torch.device,
    *,
    phase: str = "frozen",
    seed: int = 0,
) -> LRFindResult:
    """The range test on the model as phase `phase` would train it; model state is restored.

    Phase 1 trains only the head on a backbone frozen in eval mode, so the head's inputs do not
    depend on the rate: they are computed once for `lr_find_batches` mini-batches and the head
    alone is swept over them, cycling (the same losses as a full sweep over those batches, for
    a fraction of the forward passes). Phase 2 sweeps the whole model over fresh batches.
    """
    configure_phase(model, config.arch, phase)
    optimizer = build_optimizer(model, config, phase, 1.0)
    loader, sampler = make_train_loader(config, data, seed)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def batches():  # fresh draws on every pass, in a stream apart from the training epochs
        for epoch in itertools.count(LR_FIND_EPOCH):
            sampler.set_epoch(epoch)
            yield from ((x, y) for x, y, _ in loader)

    swept, sweep_batches = model, batches()
    if phase == "frozen":
        swept = get_module(model, get_arch(config.arch).head)
        count = min(config.lr_find_batches, config.lr_find_iters)
        sweep_batches = head_inputs(model, swept, sweep_batches, count, device)
    return lr_find(
        swept,
        sweep_batches,
        optimizer,
        criterion,
        start_lr=config.lr_find_start,
        end_lr=config.lr_find_end,
        num_iter=config.lr_find_iters,
        device=device,
        autocast_dtype=torch.float16 if device.type == "cuda" else None,
    )


@torch.no_grad()
def head_inputs(
    model: nn.Module, head: nn.Module, batches: Iterable, count: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """[(float (N, F) features entering `head`, int64 (N,) targets)] for `count` batches."""
    captured = []

    def keep_input(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        captured.append(inputs[0].detach().float())

    handle = head.register_forward_hook(keep_input)
    try:
        out = []
        for _, (inputs, targets) in zip(range(count), batches, strict=False):
            with torch.autocast(device.type, torch.float16, enabled=device.type == "cuda"):
                model(inputs.to(device))
            out.append((captured.pop(), targets))
        return out
    finally:
        handle.remove()


# --- command line -------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="data set folder with manifest.csv (default: ../shared/data/train beside the repo)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/lr"),
        help="folder for lr_find.csv and lr_find.png, relative to the repository (default: runs/lr)",
    )
    parser.add_argument(
        "--arch", default="efficientnet_lite0", help="architecture (default: efficientnet_lite0)"
    )
    parser.add_argument(
        "--weights-path",
        type=Path,
        default=None,
        help="local ImageNet weights file (default: the offline package or the hub)",
    )
    parser.add_argument(
        "--phase",
        choices=("frozen", "full"),
        default="frozen",
        help="frozen: only the head trains (phase 1); full: every layer with discriminative ratios (default: frozen)",
    )
    parser.add_argument(
        "--start-lr", type=float, default=1e-5, help="first rate of the sweep (default: 1e-5)"
    )
    parser.add_argument(
        "--end-lr", type=float, default=10.0, help="last rate of the sweep (default: 10)"
    )
    parser.add_argument(
        "--num-iter", type=int, default=100, help="mini-batches in the sweep (default: 100)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images per mini-batch (default: 32)"
    )
    parser.add_argument(
        "--train-size", type=int, default=192, help="training crop side in pixels (default: 192)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for the model head, sampling and augmentation (default: 0)",
    )
    parser.add_argument(
        "--split-file",
        type=Path,
        default=Path("weights/split.json"),
        help="split JSON, created when missing (default: weights/split.json)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("runs/cache"),
        help="decoded-image cache (default: runs/cache)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CUDA with fp16 autocast when available, else CPU (default: auto)",
    )
    return parser


def main(args: argparse.Namespace) -> LRFindResult:
    config = TrainConfig(
        arch=args.arch,
        batch_size=args.batch_size,
        train_size=args.train_size,
        lr_find_start=args.start_lr,
        lr_find_end=args.end_lr,
        lr_find_iters=args.num_iter,
    )
    paths = RunPaths.from_args(args.data_root, args.split_file, args.cache_dir)
    seed_everything(args.seed)
    data = prepare_data(config, paths)
    model = create_model(config, args.weights_path, pretrained=True)
    device = resolve_device(args.device, Dist())
    result = run_lr_find(model.to(device), config, data, device, phase=args.phase, seed=args.seed)
    out = args.out if args.out.is_absolute() else REPO / args.out
    write_lr_find(result, out, title=f"LR range test, {args.arch}, {args.phase}")
    log.info(
        "suggested lr %.3g (min loss at %.3g; steepest %s); wrote %s",
        result.suggested_lr,
        result.min_loss_lr,
        f"{result.steepest_lr:.3g}" if result.steepest_lr else "n/a",
        out,
    )
    return result


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    main(get_args_parser().parse_args())
