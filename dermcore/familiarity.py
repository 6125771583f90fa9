"""Familiarity: how much a photo looks like the training photos, from what the model computes.

Two views of one forward pass, each scored by the Mahalanobis distance to the nearest training
class mean under one shared covariance (Lee et al. 2018), negated so that higher = more familiar:

  content   the penultimate features (the classifier's input): what the model concluded
  texture   per-channel mean and standard deviation of an early block's activations (the
            architecture's `texture_layer`, e.g. EfficientNet's blocks.2): what the photo looks
            like up close. Noise, blur and drawings change it far more than the content does.

Means and covariances are fitted on the training split; each covariance is shrunk (Ledoit-Wolf),
because with about 1,700 training photos a 1,280-dimensional covariance is not invertible as is.
Which views count (`views`: content, texture or both) is chosen per model on validation by
training/familiarity.py. Each raw score becomes a percentile of the validation photos' scores;
the familiarity is the smallest over the views, itself as a percentile of the validation
photos' values, so `familiarity` in
[0, 1] is the share of validation photos that look less familiar than this one: validation
photos spread evenly over [0, 1], and a photo stranger than every validation photo scores 0.
Why these and not a k-nearest-neighbour distance or the energy score: training/README.md ("Familiarity and abstention"), with the validation numbers.

Abstention also uses the calibrated confidence (top softmax(logits / T)) as a percentile of the
validation photos' confidences. A model abstains where min(familiarity, confidence percentile)
falls below the card's threshold: the photo is stranger, or its answer less sure, than that
share of validation photos. The abstention score that ranks photos (risk-coverage, AUROC) is
that minimum, except that a photo familiar enough to pass the threshold ranks by its
confidence percentile alone (`abstention_score`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

METHOD = "mahalanobis"
VIEWS = ("content", "texture")

# familiarity_badge: below this percentile a photo is stranger than 95 % of validation photos.
UNUSUAL_BELOW = 0.05
BADGES = ("familiar", "unusual", "unlike anything in training")

_TENSORS = (
    "class_means",
    "precision",
    "val_scores",
    "texture_means",
    "texture_precision",
    "val_texture_scores",
    "val_familiarity",
    "val_confidence",
)


@dataclass(frozen=True)
class FamiliarityStats:
    """Fitted statistics (see the module docstring); build them with `FamiliarityStats.fit`."""

    class_means: torch.Tensor  # float32 (C, D), training mean penultimate feature per class
    precision: torch.Tensor  # float32 (D, D), inverse of the shrunk shared covariance
    val_scores: torch.Tensor  # float32 (V,), sorted raw content scores of validation photos
    texture_means: torch.Tensor  # float32 (C, E), training mean texture statistics per class
    texture_precision: torch.Tensor  # float32 (E, E)
    val_texture_scores: torch.Tensor  # float32 (V,), sorted raw texture scores
    val_familiarity: torch.Tensor  # float32 (V,), sorted min of the two validation percentiles
    val_confidence: torch.Tensor  # float32 (V,), sorted calibrated top probabilities
    texture_layer: str = "blocks.2"  # dotted module path whose output gives the texture view
    # which views the familiarity takes the minimum over, chosen per model on validation
    # (training/familiarity.py); an unused view's means and precision are stored empty
    views: tuple[str, ...] = VIEWS
    method: str = METHOD

    def __post_init__(self) -> None:
        for means, precision in (
            (self.class_means, self.precision),
            (self.texture_means, self.texture_precision),
        ):
            d = means.shape[1]
            if precision.shape != (d, d):
                raise ValueError(f"a precision must be ({d}, {d}), got {tuple(precision.shape)}")
        if not self.views or set(self.views) - set(VIEWS):
            raise ValueError(f"views must be a non-empty subset of {VIEWS}, got {self.views}")
        lengths = {len(getattr(self, n)) for n in _TENSORS if n.startswith("val_")}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError("the validation references must be non-empty and of one length")

    @classmethod
    def fit(
        cls,
        train: tuple[np.ndarray, np.ndarray],
        train_labels: np.ndarray,
        val: tuple[np.ndarray, np.ndarray],
        val_confidence: np.ndarray,
        num_classes: int,
        texture_layer: str,
        views: tuple[str, ...] = ("content", "texture"),
    ) -> FamiliarityStats:
        """train/val = (penultimate features (N, D), texture statistics (N, E)), float;
        val_confidence = calibrated top probabilities of the same validation photos."""
        t = torch.from_numpy
        if "content" in views:
            content = [t(a) for a in fit_mahalanobis(train[0], train_labels, num_classes)]
            val_content = raw_mahalanobis_score(t(val[0]), *content)
        else:  # an unused view is stored empty (a 1,280-wide precision is 6.5 MB)
            content = [torch.zeros(num_classes, 0), torch.zeros(0, 0)]
            val_content = torch.zeros(len(val[0]))
        texture = [t(a) for a in fit_mahalanobis(train[1], train_labels, num_classes)]
        val_texture = raw_mahalanobis_score(t(val[1]), *texture)
        content_ref, texture_ref = torch.sort(val_content).values, torch.sort(val_texture).values
        combined = _combine(
            {
                "content": percentile(content_ref, val_content),
                "texture": percentile(texture_ref, val_texture),
            },
            views,
        )
        return cls(
            *content,
            content_ref,
            *texture,
            texture_ref,
            torch.sort(t(combined).float()).values,
            torch.sort(t(np.asarray(val_confidence, np.float32))).values,
            texture_layer=texture_layer,
            views=tuple(views),
        )

    @property
    def dims(self) -> dict[str, int]:
        """Width of each stored view (0 for a view not used, stored empty)."""
        content, texture = self.class_means.shape[1], self.texture_means.shape[1]
        return {"content": int(content), "texture": int(texture)}

    def familiarity(self, features: torch.Tensor, texture: torch.Tensor) -> np.ndarray:
        """Penultimate features float (N, D) and texture statistics float (N, E) -> float64
        (N,) in [0, 1]: the share of validation photos less familiar."""
        percentiles = {}
        if "content" in self.views:
            raw = raw_mahalanobis_score(
                features, self.class_means, self.precision, self._content_terms
            )
            percentiles["content"] = percentile(self.val_scores, raw)
        if "texture" in self.views:
            raw = raw_mahalanobis_score(
                texture, self.texture_means, self.texture_precision, self._texture_terms
            )
            percentiles["texture"] = percentile(self.val_texture_scores, raw)
        combined = _combine(percentiles, self.views)
        return percentile(self.val_familiarity, torch.from_numpy(combined))

    @cached_property
    def _content_terms(self) -> torch.Tensor:
        return mahalanobis_mean_terms(self.class_means, self.precision)

    @cached_property
    def _texture_terms(self) -> torch.Tensor:
        return mahalanobis_mean_terms(self.texture_means, self.texture_precision)

    def confidence_percentile(self, confidence: np.ndarray) -> np.ndarray:
        """float (N,) calibrated top probabilities -> float64 (N,) in [0, 1]: share of
        validation photos whose answer was less confident."""
        return percentile(self.val_confidence, torch.as_tensor(confidence, dtype=torch.float32))

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in _TENSORS}

    def save(self, path: str | Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().float().contiguous() for k, v in self.tensors().items()}
        metadata = {
            "method": self.method,
            "texture_layer": self.texture_layer,
            "views": ",".join(self.views),
        }
        save_file(state, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path) -> FamiliarityStats:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in _TENSORS}
        return cls(
            **tensors,
            texture_layer=metadata.get("texture_layer", "blocks.2"),
            views=tuple(metadata.get("views", ",".join(VIEWS)).split(",")),
            method=metadata.get("method", METHOD),
        )


def _combine(percentiles: dict[str, np.ndarray], views: tuple[str, ...]) -> np.ndarray:
    """The smallest of the chosen views' validation percentiles, float64 (N,)."""
    return np.minimum.reduce([percentiles[v] for v in views])


def texture_statistics(activation: torch.Tensor) -> torch.Tensor:
    """float (N, K, h, w) block output -> float32 (N, 2K): per-channel spatial mean, then
    standard deviation."""
    std, mean = torch.std_mean(activation.detach().float(), dim=(2, 3), correction=0)
    return torch.cat([mean, std], dim=1)


def raw_mahalanobis_score(
    features: torch.Tensor,
    class_means: torch.Tensor,
    precision: torch.Tensor,
    mean_terms: torch.Tensor | None = None,
) -> torch.Tensor:
    """float (N, D) -> float32 (N,): -min_c (x - mu_c)^T P (x - mu_c), expanded as
    x'Px - 2 x'P mu_c + mu_c'P mu_c so no (N, C, D) difference tensor is built. `mean_terms`
    is mahalanobis_mean_terms(class_means, precision), passed when scored often."""
    x = features.float()
    xp = x @ precision  # (N, D)
    if mean_terms is None:
        mean_terms = mahalanobis_mean_terms(class_means, precision)
    distances = (xp * x).sum(1, keepdim=True) - 2 * xp @ class_means.T + mean_terms
    return -distances.min(dim=1).values


def mahalanobis_mean_terms(class_means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """float32 (C,): mu_c'P mu_c, the constant of raw_mahalanobis_score (a C x D x D product:
    ~2 ms for 1,280-wide features on one CPU thread, so kept rather than redone per photo)."""
    return ((class_means @ precision) * class_means).sum(1)


def percentile(reference_sorted: torch.Tensor, values: torch.Tensor) -> np.ndarray:
    """Share of the (sorted) reference strictly below each value, float64 (N,) in [0, 1]."""
    values = torch.as_tensor(values).float().contiguous()
    below = torch.searchsorted(reference_sorted.float().contiguous(), values, side="left")
    return below.numpy().astype(np.float64) / len(reference_sorted)


def fit_mahalanobis(
    features: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Training features float (N, D) and int labels (N,) -> (class means float32 (C, D),
    precision float32 (D, D)) of the Ledoit-Wolf-shrunk covariance of the class-centred
    features. Every class must have at least one photo."""
    from sklearn.covariance import LedoitWolf

    features = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        raise ValueError(f"every class needs training features; counts {counts.tolist()}")
    means = np.stack([features[labels == k].mean(axis=0) for k in range(num_classes)])
    centred = features - means[labels]
    covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
    precision = np.linalg.inv(covariance)
    return means.astype(np.float32), ((precision + precision.T) / 2).astype(np.float32)


def abstention_score(
    familiarity: np.ndarray, confidence_percentile: np.ndarray, threshold: float | None = None
) -> np.ndarray:
    """float64 (N,) in [0, 1]; a model abstains where it is below the card's threshold, that is
    where the smaller of the two validation percentiles is. NaN familiarity (no statistics) is
    ignored. With `threshold`, a photo familiar enough to pass it scores by its confidence
    percentile alone: the same decisions, but among the answered photos the order that
    risk-coverage curves and the right-vs-wrong AUROC read is the confidence's, which tells
    right from wrong better than how usual the texture is (training/README.md)."""
    familiarity = np.asarray(familiarity, dtype=np.float64)
    confidence_percentile = np.asarray(confidence_percentile, dtype=np.float64)
    score = np.fmin(familiarity, confidence_percentile)
    if threshold is None:
        return score
    return np.where(familiarity >= threshold, confidence_percentile, score)


def familiarity_badge(familiarity: float | None) -> str | None:
    """A plain word for the UI: 'familiar' at or above the 5th validation percentile (as usual
    as 95 % of the validation photos), 'unusual' below it, 'unlike anything in training' at 0
    (less familiar than every validation photo). None for a model without statistics."""
    if familiarity is None or math.isnan(float(familiarity)):
        return None
    if not 0 <= familiarity <= 1:
        raise ValueError(f"familiarity must be in [0, 1], got {familiarity!r}")
    if familiarity >= UNUSUAL_BELOW:
        return BADGES[0]
    return BADGES[1] if familiarity > 0 else BADGES[2]
