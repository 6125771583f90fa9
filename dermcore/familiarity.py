"""Familiarity: how much a photo looks like the training photos, from the model's own features.

The score is the Mahalanobis distance of the penultimate features (the classifier's input, the
pooled CAM-layer activations) to the nearest training class mean under one shared covariance
(Lee et al. 2018), negated so that higher means more familiar. The means and the covariance are
fitted on the training split; the covariance is shrunk (Ledoit-Wolf) because there are fewer
training photos (about 1,700) than feature dimensions is far from (1,280 for EfficientNet-Lite0),
which would make a plain inverse unstable. Why Mahalanobis and not a k-nearest-neighbour
distance or the energy score: training/README.md ("Familiarity and abstention"), with the
validation numbers.

`familiarity` in [0, 1] is the raw score as a percentile of the validation photos' scores: the
share of validation photos that look less familiar than this one. In-distribution photos spread
evenly over [0, 1]; a photo less familiar than every validation photo scores 0.

Abstention uses one more number per photo: the calibrated confidence (top softmax(logits / T))
as a percentile of the validation photos' confidences. The abstention score is the smaller of
the two percentiles, and a model abstains when it falls below the card's threshold, i.e. when
the photo is stranger or its answer less sure than that share of validation photos. Both
reference distributions are stored with the statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

METHODS = ("mahalanobis",)

# familiarity_badge: below this percentile a photo is stranger than 95 % of validation photos.
UNUSUAL_BELOW = 0.05
BADGES = ("familiar", "unusual", "unlike anything in training")


@dataclass(frozen=True)
class FamiliarityStats:
    """Fitted statistics: training class means and shared precision, and the validation
    reference distributions that turn raw scores into percentiles."""

    class_means: torch.Tensor  # float32 (C, D), training-split mean feature per class
    precision: torch.Tensor  # float32 (D, D), inverse of the shrunk shared covariance
    val_scores: torch.Tensor  # float32 (V,), sorted raw familiarity scores of validation photos
    val_confidence: torch.Tensor  # float32 (V,), sorted calibrated top probabilities (same photos)
    method: str = "mahalanobis"

    def __post_init__(self) -> None:
        c, d = self.class_means.shape
        if self.precision.shape != (d, d):
            raise ValueError(f"precision must be ({d}, {d}), got {tuple(self.precision.shape)}")
        if self.val_scores.ndim != 1 or len(self.val_scores) == 0:
            raise ValueError("val_scores must be a non-empty 1-D tensor")
        if self.val_confidence.shape != self.val_scores.shape:
            raise ValueError("val_confidence must have val_scores' shape")
        if self.method not in METHODS:
            raise ValueError(f"unknown familiarity method {self.method!r}")

    @property
    def feature_dim(self) -> int:
        return int(self.class_means.shape[1])

    def raw_score(self, features: torch.Tensor) -> torch.Tensor:
        """float (N, D) penultimate features -> float32 (N,) minus the squared Mahalanobis
        distance to the nearest class mean (higher = more familiar)."""
        return raw_mahalanobis_score(features, self.class_means, self.precision)

    def familiarity(self, features: torch.Tensor) -> np.ndarray:
        """float (N, D) -> float64 (N,) in [0, 1]: share of validation photos less familiar."""
        return percentile(self.val_scores, self.raw_score(features))

    def confidence_percentile(self, confidence: np.ndarray) -> np.ndarray:
        """float (N,) calibrated top probabilities -> float64 (N,) in [0, 1]: share of
        validation photos whose answer was less confident."""
        return percentile(self.val_confidence, torch.as_tensor(confidence, dtype=torch.float32))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "class_means": self.class_means,
            "precision": self.precision,
            "val_scores": self.val_scores,
            "val_confidence": self.val_confidence,
        }

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().float().contiguous() for k, v in self.tensors().items()}
        save_file(state, str(path), metadata={"method": self.method})

    @classmethod
    def load(cls, path: str | Path) -> FamiliarityStats:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            method = (f.metadata() or {}).get("method", "mahalanobis")
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        return cls(method=method, **tensors)


def raw_mahalanobis_score(
    features: torch.Tensor, class_means: torch.Tensor, precision: torch.Tensor
) -> torch.Tensor:
    """float (N, D) -> float32 (N,): -min_c (x - mu_c)^T P (x - mu_c), expanded as
    x'Px - 2 x'P mu_c + mu_c'P mu_c so no (N, C, D) difference tensor is built."""
    x = features.float()
    xp = x @ precision  # (N, D)
    mp = class_means @ precision  # (C, D)
    distances = (xp * x).sum(1, keepdim=True) - 2 * xp @ class_means.T + (mp * class_means).sum(1)
    return -distances.min(dim=1).values


def percentile(reference_sorted: torch.Tensor, values: torch.Tensor) -> np.ndarray:
    """Share of the (sorted) reference strictly below each value, float64 (N,) in [0, 1]."""
    below = torch.searchsorted(reference_sorted.float(), values.float().contiguous(), side="left")
    return below.numpy().astype(np.float64) / len(reference_sorted)


def fit_mahalanobis(
    features: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training features float (N, D) and int labels (N,) -> (class means float32 (C, D),
    precision float32 (D, D)) of the Ledoit-Wolf-shrunk covariance of the class-centred
    features. Every class must have at least one photo."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, dtype=np.float64)
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"every class needs training features; counts {counts.tolist()}")
    means = np.stack([features[labels == k].mean(axis=0) for k in range(num_classes)])
    centred = features - means[labels]
    covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
    precision = np.linalg.inv(covariance)
    return means.astype(np.float32), ((precision + precision.T) / 2).astype(np.float32)


def abstention_score(familiarity: np.ndarray, confidence_percentile: np.ndarray) -> np.ndarray:
    """The smaller of the two validation percentiles, float64 (N,) in [0, 1]; a model abstains
    where it is below the card's threshold. NaN familiarity (no statistics) is ignored."""
    familiarity = np.asarray(familiarity, dtype=np.float64)
    return np.fmin(familiarity, np.asarray(confidence_percentile, dtype=np.float64))


def familiarity_badge(familiarity: float | None) -> str | None:
    """A plain word for the UI: 'familiar' at or above the 5th validation percentile (as usual
    as 95 % of the validation photos), 'unusual' below it, 'unlike anything in training' at 0
    (less familiar than every validation photo). None for a model without statistics."""
    if familiarity is None or (isinstance(familiarity, float) and math.isnan(familiarity)):
        return None
    if not 0 <= familiarity <= 1:
        raise ValueError(f"familiarity must be in [0, 1], got {familiarity!r}")
    if familiarity >= UNUSUAL_BELOW:
        return BADGES[0]
    return BADGES[1] if familiarity > 0 else BADGES[2]
