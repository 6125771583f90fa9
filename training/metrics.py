"""Classification metrics for the evaluation reports: plain numpy in, plain numbers/arrays out.

Conventions: `labels` are int class indices (N,), `predictions` int indices (N,), `probs` float
(N, C) rows that sum to 1, `logits` float (N, C) raw model outputs; C = `num_classes`. A quantity
that is undefined (recall of a class with no images, AUROC of a class with no positives or no
negatives) is NaN here; reports write it as null. Every function is checked against
scikit-learn in tests/test_evaluate.py; ROC curves and AUROC call scikit-learn directly.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import roc_auc_score, roc_curve

ECE_BINS = 15  # equal-width confidence bins, as in Guo et al. 2017


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float (N, C) logits -> float64 (N, C) softmax(logits / temperature), rows sum to 1."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)  # exp never overflows
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """float (N, C) -> float64 (N, C) log softmax(logits / temperature), stable for large logits."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1] (sklearn.metrics.accuracy_score)."""
    labels, predictions = _check_pair(labels, predictions)
    return float(np.mean(labels == predictions))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int64 (C, C) counts, row = true class, column = predicted class; sums to N."""
    labels, predictions = _check_pair(labels, predictions)
    both = np.concatenate([labels, predictions])
    if np.any((both < 0) | (both >= num_classes)):
        raise ValueError(f"class indices must be in [0, {num_classes})")
    flat = labels * num_classes + predictions
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """float64 (C,) recall (sensitivity) of each class from a confusion matrix; NaN where the
    class has no images."""
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / support, np.nan)


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in `labels` (sklearn.metrics.balanced_accuracy_score)."""
    recall = per_class_recall(confusion_matrix(labels, predictions, num_classes))
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def precision_recall_f1(
    labels: np.ndarray, predictions: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 (float64 (C,)) and support (int64 (C,)).

    As sklearn's precision_recall_fscore_support(labels=range(C), zero_division=np.nan):
    precision is NaN for a class never predicted, recall for a class with no images, and F1
    = 2 TP / (2 TP + FP + FN) is NaN only when the class is neither present nor predicted.
    """
    cm = confusion_matrix(labels, predictions, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    f1_denominator = predicted + support  # 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "precision": np.where(predicted > 0, tp / predicted, np.nan),
            "recall": per_class_recall(cm),
            "f1": np.where(f1_denominator > 0, 2 * tp / f1_denominator, np.nan),
            "support": support,
        }


def roc_curves(
    labels: np.ndarray, probs: np.ndarray, max_points: int = 100
) -> tuple[list[dict | None], np.ndarray, float]:
    """One-vs-rest ROC per class: (curves, auroc (C,), macro AUROC).

    curves[k] is {"fpr": [...], "tpr": [...]} with at most `max_points` points, or None when
    class k has no positives or no negatives (AUROC NaN there, not an error). The AUROC is
    sklearn's roc_auc_score on all points; only the curve is thinned, keeping both ends. Macro
    AUROC is the mean over the classes where it is defined (NaN when none is).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    curves: list[dict | None] = []
    auroc = np.full(probs.shape[1], np.nan)
    for k in range(probs.shape[1]):
        positive = labels == k
        if positive.all() or not positive.any():
            curves.append(None)
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, k])
        auroc[k] = roc_auc_score(positive, probs[:, k])
        keep = _thin(len(fpr), max_points)
        curves.append({"fpr": fpr[keep], "tpr": tpr[keep]})
    macro = float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan")
    return curves, auroc, macro


def _thin(n: int, max_points: int) -> np.ndarray:
    """Indices of at most max_points of n curve points, evenly spaced, first and last kept."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def expected_calibration_error(
    labels: np.ndarray, probs: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[float, dict[str, np.ndarray]]:
    """Top-label ECE with n_bins equal-width confidence bins, and the reliability-diagram data.

    Bin b holds confidences in (b/n, (b+1)/n] (a confidence of exactly 0 joins bin 0).
    ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|. The returned dict has float64
    (n_bins + 1,) "edges", int64 (n_bins,) "count" and float64 (n_bins,) "confidence" and
    "accuracy" (NaN in empty bins).
    """
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidence, n_bins) / count
        bin_accuracy = np.bincount(bins, correct, n_bins) / count
    gaps = np.where(count > 0, np.abs(bin_accuracy - mean_confidence), 0.0)
    ece = float(np.sum(count * gaps) / max(len(labels), 1))
    reliability = {
        "edges": np.linspace(0.0, 1.0, n_bins + 1),
        "count": count,
        "confidence": mean_confidence,
        "accuracy": bin_accuracy,
    }
    return ece, reliability


def negative_log_likelihood(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean -log p(true class), probabilities clipped at float64 eps (sklearn.metrics.log_loss)."""
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    p_true = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(p_true, np.finfo(np.float64).eps, 1.0))))


def nll_from_logits(labels: np.ndarray, logits: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(logits / temperature)[true class], computed in log space."""
    labels = np.asarray(labels)
    return float(-np.mean(log_softmax(logits, temperature)[np.arange(len(labels)), labels]))


def flip_rate(reference: np.ndarray, predictions: np.ndarray) -> float:
    """Share of images whose top class differs from the reference (clean) prediction, in [0, 1]."""
    reference, predictions = _check_pair(reference, predictions)
    return float(np.mean(reference != predictions)) if reference.size else float("nan")


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature T in `bounds` minimising the NLL of softmax(logits / T) (Guo et al. 2017)."""
    return fit_shared_temperature([(logits, labels)], bounds)


def fit_shared_temperature(
    parts: list[tuple[np.ndarray, np.ndarray]], bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """One temperature T in `bounds` for several (logits, labels) sets, minimising the mean over
    the sets of each set's mean NLL: every set weighs the same whatever its size.

    The NLL is convex in the inverse temperature beta = 1/T (log-sum-exp of a linear function
    of beta minus a linear term), and so is a mean of them, so a bounded scalar search over beta
    finds the global minimum.
    """
    low, high = bounds
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    parts = [(np.asarray(z, dtype=np.float64), np.asarray(y)) for z, y in parts]
    result = minimize_scalar(
        lambda beta: float(np.mean([nll_from_logits(y, z * beta) for z, y in parts])),
        bounds=(1.0 / high, 1.0 / low),
        method="bounded",
        options={"xatol": 1e-7},
    )
    return float(1.0 / result.x)


def most_confused_pairs(cm: np.ndarray, classes: list[str] | tuple[str, ...]) -> list[dict]:
    """Unordered class pairs by their symmetric error count cm[a, b] + cm[b, a], largest first
    (ties by class order); pairs with no errors are left out. Each row: {"a", "b", "errors",
    "a_as_b", "b_as_a"} where a_as_b counts images of class a predicted as b."""
    pairs = [
        (-int(cm[a, b] + cm[b, a]), a, b)
        for a in range(len(classes))
        for b in range(a + 1, len(classes))
        if cm[a, b] + cm[b, a] > 0
    ]
    return [
        {
            "a": classes[a],
            "b": classes[b],
            "errors": -negative_errors,
            "a_as_b": int(cm[a, b]),
            "b_as_a": int(cm[b, a]),
        }
        for negative_errors, a, b in sorted(pairs)
    ]


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D arrays of one length, got {a.shape} and {b.shape}")
    return a.astype(np.int64), b.astype(np.int64)
