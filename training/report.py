"""What a training run reports: metrics of one evaluation, their mean/std over seeds, the shipped
seed, the model card, the loss curves and the summary table.

Selection happens on validation only: the shipped seed (and, with --keep best, the kept epoch)
is chosen by validation balanced accuracy; test and SD-198 numbers are written down, never
consulted.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dermcore.checkpoint import ModelCard, sha256_file
from dermcore.labels import CLASSES, NUM_CLASSES
from training import metrics
from training.data import SPLITS, display_path
from training.distributed import Dist

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.loaders import Data

METRIC_KEYS = ("accuracy", "balanced_accuracy", "macro_auroc")
CORRUPTION_WORDS = {
    "none": "clean photos",
    "sp": "salt-and-pepper noise (the paper's noise-trained model)",
    "robust": "a mix of corruptions",
}


def classification_report(labels: np.ndarray, logits: np.ndarray) -> dict:
    """int64 (N,) labels and float (N, C) logits -> {"accuracy", "balanced_accuracy",
    "macro_auroc", "per_class_recall": {class: recall}, "n"}. Balanced accuracy and AUROC
    average over the classes present in `labels` (SD-198 has four of the ten)."""
    predictions = logits.argmax(1)
    recall = metrics.per_class_recall(metrics.confusion_matrix(labels, predictions, NUM_CLASSES))
    _, _, macro_auroc = metrics.roc_curves(labels, metrics.softmax(logits))
    return {
        "accuracy": _round(metrics.accuracy(labels, predictions)),
        "balanced_accuracy": _round(metrics.balanced_accuracy(labels, predictions, NUM_CLASSES)),
        "macro_auroc": _round(macro_auroc),
        "per_class_recall": {
            c: _round(r) for c, r in zip(CLASSES, recall, strict=True) if np.isfinite(r)
        },
        "n": len(labels),
    }


def _round(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def mean_std(reports: list[dict]) -> tuple[dict, dict]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) of each metric over seeds."""

    def aggregate(values: list[float | None]) -> tuple[float | None, float | None]:
        values = [v for v in values if v is not None]
        if not values:
            return None, None
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return _round(float(np.mean(values))), _round(std)

    mean, std = {}, {}
    for key in METRIC_KEYS:
        mean[key], std[key] = aggregate([r[key] for r in reports])
    classes = [c for c in CLASSES if all(c in r["per_class_recall"] for r in reports)]
    pairs = {c: aggregate([r["per_class_recall"][c] for r in reports]) for c in classes}
    mean["per_class_recall"] = {c: m for c, (m, _) in pairs.items()}
    std["per_class_recall"] = {c: s for c, (_, s) in pairs.items()}
    return mean, std


def pick_shipped(results: list[dict]) -> dict:
    """The seed whose validation balanced accuracy is closest to the median over seeds (ties:
    the lower seed). A typical run, not the luckiest one, and chosen on validation only."""
    median = statistics.median(r["val"]["balanced_accuracy"] for r in results)
    return min(results, key=lambda r: (abs(r["val"]["balanced_accuracy"] - median), r["seed"]))


def machine_info(device: torch.device, ctx: Dist) -> dict:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
        cpu = names[0] if names else cpu
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": ctx.world_size,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def command_line() -> str:
    return shlex.join(["python", *sys.argv]) if sys.argv and sys.argv[0].endswith(".py") else ""


def make_card(
    config: TrainConfig,
    data: Data,
    split_file: Path,
    results: list[dict],
    shipped: dict,
    run_dir: Path,
    device: torch.device,
    ctx: Dist,
) -> ModelCard:
    """The model card of `shipped` (one of `results`), with mean/std over all of `results`."""
    test_mean, test_std = mean_std([r["test"] for r in results])
    shifts = [r["shift_sd198"] for r in results if "shift_sd198" in r]
    shift_mean, shift_std = mean_std(shifts) if shifts else ({}, {})
    # no score in the title: the app shows the card's metrics beside it
    title = f"{config.arch}, trained on {CORRUPTION_WORDS[config.train_corruption]}"
    if config.impulse_filter:
        title += ", behind an impulse-noise filter"
    return ModelCard(
        name=config.name,
        arch=config.arch,
        classes=list(CLASSES),
        preprocessing=data.preprocessing.to_dict(),
        title=title,
        training={
            "command": command_line(),
            "config": asdict(config),
            "train_corruption": config.train_corruption,
            "seeds": [r["seed"] for r in results],
            "shipped_seed": shipped["seed"],
            "seed": shipped["seed"],
            "selection": "seed: validation balanced accuracy closest to the median over seeds; "
            f"epoch: {'best validation balanced accuracy' if config.keep == 'best' else 'the last'}",
            "kept_epoch": shipped["kept_epoch"],
            "run_dir": display_path(run_dir),
            "lr": shipped["lr"],
            "seconds": {str(r["seed"]): r["seconds"] for r in results},
            "resolution": f"trained on {config.train_size} px random-resized crops, evaluated on the "
            f"preset's {data.preprocessing.input_size} px centre crop (train/test resolution "
            "discrepancy, Touvron et al. 2019: benign after random-resized-crop training)",
            "machine": machine_info(device, ctx),
        },
        data={
            "data_root": display_path(data.root),
            "manifest_sha256": data.manifest_hash,
            "split_file": split_file.name,
            "split_sha256": sha256_file(split_file),
            "split_seed": data.split["seed"],
            "split_counts": {s: len(data.split["splits"][s]) for s in SPLITS},
            "shift_sd198": data.shift_info,
            # every root trained on: path as given, manifest SHA-256, rows, rows per licence tier;
            # with several, manifest_sha256 above is training/roots.py combined_sha256 of these
            "roots": data.roots,
        },
        metrics={
            "test": shipped["test"],
            "test_mean": test_mean,
            "test_std": test_std,
            "val": shipped["val"],
            "shift_sd198": shipped.get("shift_sd198", {}),
            "shift_sd198_mean": shift_mean,
            "shift_sd198_std": shift_std,
            "per_seed": results,
            "seed_result": shipped,
            "note": "test and shift_sd198 are reported only; no choice was made on them",
        },
        limitations=[
            "Each class of the training data comes from one to three sources, so part of what the "
            "model learned is photo style, not morphology; the SD-198 numbers show what that costs "
            "on other photos.",
            "Alopecia is androgenetic (male-pattern) only; Blister is herpes zoster and varicella; "
            "Crust is impetigo only.",
            "Web-scraped labels are unverified (shared/data/README.md, Known issues).",
            *(
                [
                    "The impulse filter removes only pure black and pure white pixels: noise "
                    "added to the full photo before the resize, and grey or coloured noise, "
                    "reach the network unfiltered."
                ]
                if config.impulse_filter
                else []
            ),
        ],
    )


def plot_loss_curves(run_dir: Path, history: list[dict], title: str) -> None:
    """loss_curves.png: training and validation loss per epoch (the paper's Figure 7)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="training")
    ax.plot(epochs, [row["val_loss"] for row in history], "o-", label="validation")
    frozen = [row["epoch"] for row in history if row["phase"] == "frozen"]
    if frozen:
        ax.axvspan(0.5, max(frozen) + 0.5, color="0.92", label="phase 1 (frozen backbone)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (label smoothing 0.1)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "loss_curves.png")
    plt.close(fig)


def summary_table(config: TrainConfig, results: list[dict], shipped_seed: int) -> str:
    """Per-seed rows and the mean/std over seeds, as fixed-width text."""

    def cell(report: dict | None, key: str, width: int) -> str:
        value = (report or {}).get(key)
        return f"{value:.3f}".rjust(width) if value is not None else "-".rjust(width)

    lines = [
        f"{config.name} ({config.arch}, train corruption {config.train_corruption})",
        "  seed  val bal  test acc  test bal  test AUC  SD198 acc  SD198 bal  minutes",
    ]
    for r in results:
        mark = "*" if r["seed"] == shipped_seed else " "
        shift = r.get("shift_sd198")
        lines.append(
            f"{r['seed']:>5}{mark}{cell(r['val'], 'balanced_accuracy', 9)}{cell(r['test'], 'accuracy', 10)}"
            f"{cell(r['test'], 'balanced_accuracy', 10)}{cell(r['test'], 'macro_auroc', 10)}"
            f"{cell(shift, 'accuracy', 11)}{cell(shift, 'balanced_accuracy', 11)}"
            f"{r['seconds']['total'] / 60:9.1f}"
        )
    for label, report in zip(("mean", "std"), mean_std([r["test"] for r in results]), strict=True):
        lines.append(
            f"{label:>6}{'':9}{cell(report, 'accuracy', 10)}{cell(report, 'balanced_accuracy', 10)}"
            f"{cell(report, 'macro_auroc', 10)}"
        )
    lines.append("* shipped seed (validation balanced accuracy closest to the median)")
    return "\n".join(lines)
