"""The training engine: model and optimizer set-up for each phase, one training epoch and one
evaluation pass. Pure functions of their arguments; the seed loop (`seed_run.py`) calls them.

    configure_phase(model, arch, "frozen" | "full")   which parameters train, eval/train mode
    build_optimizer(model, config, phase, head_lr)      SGD, param groups per layer group
    train_one_epoch(...)                                SGDR rate set before every step
    evaluate(model, loader, criterion, device)          logits of every image, in eval mode
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dermcore.labels import NUM_CLASSES
from dermcore.models import build_model, get_arch, get_module, layer_groups
from training.config import GROUP_NAMES, TrainConfig
from training.distributed import Dist
from training.schedules import discriminative_lrs, sgdr_lr

if TYPE_CHECKING:  # the optional levers, for annotations only
    from training.experiments.dann import AdversaryPlan
    from training.experiments.dro import GroupDRO


# --- set-up -------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Python, numpy and torch RNGs; deterministic kernels where torch has them."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def resolve_device(device_arg: str, ctx: Dist) -> torch.device:
    if device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was asked for, but torch sees no CUDA device.")
        return torch.device("cuda", ctx.local_rank)
    return torch.device("cpu")


def create_model(
    config: TrainConfig, weights_path: str | Path | None = None, pretrained: bool | None = None
) -> nn.Module:
    pretrained = config.pretrained if pretrained is None else pretrained
    return build_model(config.arch, NUM_CLASSES, pretrained=pretrained, weights_path=weights_path)


def configure_phase(model: nn.Module, arch: str, phase: str) -> None:
    """Phase 1 ("frozen"): only the head has requires_grad, and the whole model stays in eval
    mode, so BatchNorm statistics do not move and dropout is off. As no backbone parameter
    requires grad, autograd records nothing there: the backbone costs one no-grad forward.
    Phase 2 ("full"): everything trains, in train mode."""
    head = {id(p) for p in get_module(model, get_arch(arch).head).parameters()}
    for p in model.parameters():
        p.requires_grad_(phase == "full" or id(p) in head)
    set_mode(model, phase)


def set_mode(model: nn.Module, phase: str, bn: str = "train") -> None:
    """Phase 1: eval mode throughout. Phase 2: train mode; with bn="frozen" the BatchNorm
    layers stay in eval mode (ImageNet running statistics, affine parameters still learn)."""
    model.train(phase == "full")
    if phase == "full" and bn == "frozen":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def build_optimizer(
    model: nn.Module,
    config: TrainConfig,
    phase: str,
    head_lr: float,
    extra_head: Sequence[nn.Parameter] = (),
) -> torch.optim.SGD:
    """SGD with momentum; param groups carry `name` and `peak_lr` (the SGDR maximum). Phase 1
    holds the head only; phase 2 the four layer groups at head_lr x lr_factors. `extra_head`
    (the source adversary) trains at the head's rate. Weight decay applies to weights, not to
    biases and BatchNorm parameters (1-D tensors)."""
    groups = layer_groups(model, config.arch)
    groups[-1] = [*groups[-1], *extra_head]
    peaks = discriminative_lrs(head_lr, config.lr_factors)
    names = GROUP_NAMES
    if phase == "frozen":
        groups, peaks, names = groups[-1:], [head_lr], GROUP_NAMES[-1:]
    param_groups = []
    for name, params, peak in zip(names, groups, peaks, strict=True):
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                wd = config.weight_decay if decay else 0.0
                param_groups.append(
                    {
                        "params": chosen,
                        "name": name,
                        "peak_lr": peak,
                        "lr": peak,
                        "weight_decay": wd,
                    }
                )
    return torch.optim.SGD(param_groups, lr=head_lr, momentum=config.momentum)


def cycle_steps(config: TrainConfig, phase: str, steps_per_epoch: int) -> list[int]:
    """SGDR cycle lengths in optimizer steps: phase 1 restarts every epoch."""
    epochs = [1] * config.epochs_frozen if phase == "frozen" else list(config.cycles)
    return [e * steps_per_epoch for e in epochs]


def set_lrs(
    optimizer: torch.optim.Optimizer, step: int, lengths: list[int], min_ratio: float
) -> None:
    for group in optimizer.param_groups:
        group["lr"] = sgdr_lr(step, lengths, group["peak_lr"], group["peak_lr"] * min_ratio)


def group_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    return {g["name"]: g["lr"] for g in optimizer.param_groups}


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# --- one epoch, one evaluation ------------------------------------------------------------------


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    device: torch.device,
    *,
    phase: str,
    first_step: int,
    cycle_lengths: list[int],
    min_ratio: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
    ctx: Dist | None = None,
    desc: str = "",
    sample_log: list[int] | None = None,
    adversary: AdversaryPlan | None = None,
    bn: str = "train",
    group_dro: GroupDRO | None = None,
) -> dict:
    """One pass over (float (N, 3, H, W), int64 (N,) labels, int64 (N,) indices) batches; the
    rate is set before every step from the phase step. With `adversary`, `model` is a
    dann.WithAdversary and its source loss is added. With `group_dro` the class loss that
    trains is its worst-group weighted loss (the reported train_loss stays the plain mean).
    Both levers live in training/experiments/ and are off by default. Returns
    {"train_loss", "train_acc", "lrs" (at the first step), "steps"[, "adversary_loss"][,
    "dro_worst_group", "dro_worst_weight"]} over all processes."""
    ctx = ctx or Dist()
    set_mode(model, phase, bn)
    autocast = device.type == "cuda"
    totals = torch.zeros(4, dtype=torch.float64)  # class loss sum, correct, images, adversary sum
    first_lrs = None
    batches = tqdm(loader, desc=desc, disable=not ctx.main, leave=False)
    for i, (inputs, targets, indices) in enumerate(batches):
        set_lrs(optimizer, first_step + i, cycle_lengths, min_ratio)
        first_lrs = first_lrs or group_lrs(optimizer)
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with torch.autocast(device.type, torch.float16, enabled=autocast):
            if adversary is None:
                logits, adversary_loss = model(inputs), torch.zeros((), device=device)
            else:
                unwrap(model).weight = adversary.weight(first_step + i)
                sources = adversary.sources[indices].to(device)
                logits, adversary_loss = model(inputs, targets, sources)
            class_loss = criterion(logits, targets)
            if group_dro is not None:
                trained_loss = group_dro.loss(logits, targets, indices, ctx)
            else:
                trained_loss = class_loss
        optimizer.zero_grad(set_to_none=True)
        loss = trained_loss + adversary_loss
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = len(targets)
        correct = float((logits.argmax(1) == targets).sum())
        step_totals = [
            float(class_loss.detach()) * n,
            correct,
            n,
            float(adversary_loss.detach()) * n,
        ]
        totals += torch.tensor(step_totals, dtype=torch.float64)
        if sample_log is not None:
            sample_log.extend(int(v) for v in indices)
    ctx.all_reduce_sum(totals)
    images = max(float(totals[2]), 1.0)
    stats = {
        "train_loss": float(totals[0]) / images,
        "train_acc": float(totals[1]) / images,
        "lrs": first_lrs or group_lrs(optimizer),
        "steps": len(loader),
    }
    if adversary is not None:
        stats["adversary_loss"] = float(totals[3]) / images
    if group_dro is not None:
        stats["dro_worst_group"], stats["dro_worst_weight"] = group_dro.worst()
    return stats


@dataclass
class EvalOutput:
    loss: float
    logits: np.ndarray  # float32 (N, C)
    labels: np.ndarray  # int64 (N,)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device
) -> EvalOutput:
    """Logits of every image in the loader's order, in eval mode."""
    model.eval()
    all_logits, all_labels, loss_sum = [], [], 0.0
    for inputs, targets, _ in loader:
        with torch.autocast(device.type, torch.float16, enabled=device.type == "cuda"):
            logits = model(inputs.to(device)).float()
        loss_sum += float(criterion(logits, targets.to(device))) * len(targets)
        all_logits.append(logits.cpu().numpy())
        all_labels.append(targets.numpy())
    labels = np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64)
    logits = np.concatenate(all_logits) if all_logits else np.zeros((0, NUM_CLASSES), np.float32)
    return EvalOutput(loss_sum / max(len(labels), 1), logits, labels)


# --- LR range test ------------------------------------------------------------------------------
