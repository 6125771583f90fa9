"""Domain-adversarial training against photo style (DANN, Ganin et al. 2016), class-conditional.

Each class of set A comes from one to three sources, so "which source is this photo from" is
learnable from style alone and a classifier can lean on it; it then fails on SD-198's photos.
A small adversary head reads the features entering the classifier head and tries to name the
photo's source; a gradient-reversal layer between them makes the backbone *remove* whatever
helps the adversary.

Naming the source outright would also name the class (the sources barely overlap across
classes), and reversing that would erase the class signal we want. So the adversary only
chooses among the sources seen *with the photo's own class* (the other logits are masked), and
photos of single-source classes (Alopecia, Crust) do not enter its loss: what remains to remove
is style that differs between sources of one class.

    features (N, F) --grad x (-weight)--> MLP --> source logits (N, S), masked to the class's sources

`python training/train.py --domain-adversarial 0.3` turns it on in phase 2. Off by default: at
0.3 it changed neither validation nor SD-198 accuracy beyond seed noise
(training/experiments/README.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dermcore.labels import CLASSES
from dermcore.models import get_arch, get_module


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.weight * grad, None


def grad_reverse(x: torch.Tensor, weight: float) -> torch.Tensor:
    """Identity forward; the gradient is multiplied by -weight on the way back."""
    return _GradientReversal.apply(x, weight)


def adversary_weight(progress: float, max_weight: float, gamma: float = 10.0) -> float:
    """Ganin et al.'s ramp 2 / (1 + exp(-gamma p)) - 1 from 0 to max_weight over progress p in
    [0, 1], so the adversary does not shake the features before it has learned anything."""
    progress = min(max(progress, 0.0), 1.0)
    return max_weight * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)


@dataclass
class AdversaryPlan:
    """What train_one_epoch needs for the source adversary: int64 (N_train,) source index per
    training image, and the reversal weight at each phase-2 step (Ganin's ramp)."""

    sources: torch.Tensor
    max_weight: float
    total_steps: int

    def weight(self, step: int) -> float:
        return adversary_weight(step / max(self.total_steps, 1), self.max_weight)


class SourceAdversary(nn.Module):
    """MLP from head features (N, F) to source logits (N, S), masked to the sources of each
    photo's class. `allowed` is bool (num_classes, S): source s occurs with class c in training."""

    def __init__(self, in_features: int, allowed: torch.Tensor, hidden: int = 256):
        super().__init__()
        self.register_buffer("allowed", allowed.clone().bool(), persistent=False)
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, allowed.shape[1])
        )

    def loss(
        self, features: torch.Tensor, labels: torch.Tensor, sources: torch.Tensor, weight: float
    ) -> torch.Tensor:
        """Mean cross-entropy over the photos whose class has two or more sources (0 if none)."""
        mask = self.allowed[labels]  # (N, S)
        keep = mask.sum(1) >= 2
        if not keep.any():  # still give every parameter a (zero) gradient, as DDP expects
            return sum(p.sum() for p in self.net.parameters()) * 0.0
        logits = self.net(grad_reverse(features[keep], weight)).float()
        logits = logits.masked_fill(~mask[keep], float("-inf"))
        return F.cross_entropy(logits, sources[keep])


class WithAdversary(nn.Module):
    """The classifier plus the source adversary, as one module for DistributedDataParallel.

    forward(x) -> class logits (N, C); forward(x, labels, sources) -> (logits, adversary loss).
    `weight` (the reversal strength) is set by the training loop before each step.
    """

    def __init__(self, classifier: nn.Module, arch: str, adversary: SourceAdversary):
        super().__init__()
        self.classifier = classifier
        self.adversary = adversary
        self.head = get_module(classifier, get_arch(arch).head)
        self.weight = 0.0

    def forward(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None = None,
        sources: torch.Tensor | None = None,
    ):
        captured = []
        handle = self.head.register_forward_hook(
            lambda module, inputs, output: captured.append(inputs[0])
        )
        try:
            logits = self.classifier(x)
        finally:
            handle.remove()
        if labels is None:
            return logits
        return logits, self.adversary.loss(captured[0], labels, sources, self.weight)


def source_table(rows: Sequence[dict]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(source names, int64 (N,) source index per row, bool (num_classes, S) class-source table)."""
    names = sorted({r["source"] for r in rows})
    index = {s: i for i, s in enumerate(names)}
    per_row = torch.tensor([index[r["source"]] for r in rows], dtype=torch.int64)
    allowed = torch.zeros(len(CLASSES), len(names), dtype=torch.bool)
    for r in rows:
        allowed[CLASSES.index(r["label"]), index[r["source"]]] = True
    return names, per_row, allowed
