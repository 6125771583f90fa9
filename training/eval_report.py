"""What evaluate.py writes: every metric of one condition on one set, the set's report, the
temperature fitted on validation, Table 4's confusions, the Grad-CAM drift study, Table 5 beside
the paper, and the JSON writer that keeps reports byte-identical (6 digits, keys sorted,
NaN -> null).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dermcore import paper
from dermcore.explain import Predictor, cam_shift
from training import metrics
from training.conditions import SWEEPS, Condition, GridRun, sweep_points
from training.eval_data import ImageSet

ROC_POINTS = 100  # per class and condition; keeps a report well under 2 MB
DRIFT_TOP_FRACTION = 0.2
DRIFT_SWEEPS = ("noise", "blur")


# --- metrics per condition --------------------------------------------------------------------


def condition_report(
    condition: Condition,
    labels: np.ndarray,
    logits: np.ndarray,
    clean_logits: np.ndarray,
    temperature: float,
    classes: Sequence[str],
    sources: Sequence[str],
) -> dict:
    """Every metric of one condition on one set. Probabilities are softmax(logits / T)."""
    num_classes = len(classes)
    predictions = logits.argmax(axis=1)
    probs = metrics.softmax(logits, temperature)
    raw_probs = metrics.softmax(logits)
    prf = metrics.precision_recall_f1(labels, predictions, num_classes)
    curves, auroc, macro_auroc = metrics.roc_curves(labels, probs, ROC_POINTS)
    ece, reliability = metrics.expected_calibration_error(labels, probs)
    ece_raw, _ = metrics.expected_calibration_error(labels, raw_probs)
    correct = predictions == labels
    source_names = sorted(set(sources))
    source_array = np.array(sources)
    return {
        "family": condition.family,
        "severity": condition.severity,
        "description": condition.describe(),
        "n_images": len(labels),
        "top1": metrics.accuracy(labels, predictions),
        "balanced_accuracy": metrics.balanced_accuracy(labels, predictions, num_classes),
        "per_class": {
            "precision": prf["precision"],
            "recall": prf["recall"],
            "f1": prf["f1"],
            "support": prf["support"],
            "auroc": auroc,
        },
        "confusion_matrix": metrics.confusion_matrix(labels, predictions, num_classes),
        "macro_auroc": macro_auroc,
        "roc": curves,
        "ece": ece,
        "reliability": reliability,
        "nll": metrics.negative_log_likelihood(labels, probs),
        "ece_uncalibrated": ece_raw,
        "nll_uncalibrated": metrics.negative_log_likelihood(labels, raw_probs),
        "mean_confidence": float(probs.max(axis=1).mean()) if len(labels) else float("nan"),
        "flip_rate": metrics.flip_rate(clean_logits.argmax(axis=1), predictions),
        "per_source_top1": {s: float(correct[source_array == s].mean()) for s in source_names},
    }


def set_report(
    image_set: ImageSet,
    logits: dict[str, np.ndarray],
    conditions: Sequence[Condition],
    header: dict,
    temperature: float,
    classes: Sequence[str],
) -> dict:
    """The JSON of one set: header + every condition's metrics + the sweep index."""
    counts = np.bincount(image_set.labels, minlength=len(classes))
    names = {c.name for c in conditions}
    return {
        **header,
        "set": image_set.name,
        "n_images": len(image_set.labels),
        "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "probabilities": "temperature_scaled",
        "temperature": temperature,
        "conditions": {
            c.name: condition_report(
                c,
                image_set.labels,
                logits[c.name],
                logits["clean"],
                temperature,
                classes,
                image_set.sources,
            )
            for c in conditions
        },
        "sweeps": {family: sweep_points(family, names) for family in SWEEPS},
        "clean_by_condition": by_condition(
            image_set.labels, logits["clean"].argmax(axis=1), image_set.conditions, classes
        ),
    }


def by_condition(
    labels: np.ndarray, predictions: np.ndarray, conditions: Sequence[str], classes: Sequence[str]
) -> dict:
    """Per source condition (the manifest's own class name, e.g. SD-198 'Angioma' under Tumor):
    its label, image count, recall and what the model answered. Separates a condition the
    training set never shows from a source style the model never saw."""
    out = {}
    if not any(conditions):  # a manifest without a condition column
        return out
    for name in sorted(set(conditions)):
        rows = np.array([c == name for c in conditions])
        answered = np.bincount(predictions[rows], minlength=len(classes))
        label = int(np.bincount(labels[rows]).argmax())
        out[name] = {
            "label": classes[label],
            "n_images": int(rows.sum()),
            "recall": float((predictions[rows] == labels[rows]).mean()),
            "predicted": {classes[k]: int(n) for k, n in enumerate(answered) if n},
        }
    return out


# --- calibration, confusions, drift ----------------------------------------------------------


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray, shift: dict | None = None) -> dict:
    """T fitted on the clean validation split, times the held-out-source proxies' shift factor
    when `shift` (weights/reports/shift_proxy.json's "temperature") is given: the models meet
    photos from clinics they never saw, where the same recipe is more sure of itself than it
    should be (training/README.md, "A content-shift stand-in")."""
    bounds = (0.05, 20.0)
    in_source = metrics.fit_temperature(val_logits, val_labels, bounds)
    factor = float(shift["shift_factor"]) if shift else 1.0
    temperature = in_source * factor

    def ece(t: float) -> float:
        return metrics.expected_calibration_error(val_labels, metrics.softmax(val_logits, t))[0]

    out = {
        "temperature": temperature,
        "ece_before": ece(1.0),
        "ece_after": ece(temperature),
        "nll_before": metrics.nll_from_logits(val_labels, val_logits),
        "nll_after": metrics.nll_from_logits(val_labels, val_logits, temperature),
        "fitted_on": f"validation split, clean, {len(val_labels)} images",
        "ece_bins": metrics.ECE_BINS,
        # a fit at a bound means the search range, not the data, set T (e.g. an untrained head)
        "at_bound": bool(np.isclose(in_source, bounds, rtol=1e-4).any()),
    }
    if shift:
        out |= {
            "in_source_temperature": in_source,
            "ece_in_source": ece(in_source),
            "shift_factor": factor,
            "shift_sources": [name.strip() for name in shift["heldout_source"].split(",")],
            "fitted_on": f"validation split, clean, {len(val_labels)} images, times the "
            f"shift factor {factor:.3f} (T on held-out sources / T on validation) of the "
            f"held-out-source proxies ({shift['heldout_source']})",
        }
    return out


def confusion_report(
    clean_logits: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    seed_logits: dict[str, np.ndarray],
) -> dict:
    """Table 4: unordered class pairs by errors on the clean test split, shipped model first,
    then mean/std over per-seed checkpoints when runs/<name>/seed*/ held any."""
    cm = metrics.confusion_matrix(labels, clean_logits.argmax(axis=1), len(classes))
    report = {
        "set": "test",
        "condition": "clean",
        "n_images": len(labels),
        "pairs": metrics.most_confused_pairs(cm, classes),
        "seeds_available": sorted(seed_logits),
    }
    if seed_logits:
        per_seed = {
            seed: metrics.confusion_matrix(labels, logits.argmax(axis=1), len(classes))
            for seed, logits in sorted(seed_logits.items())
        }
        pair_errors: dict[tuple[str, str], list[int]] = {}
        for seed_cm in per_seed.values():
            symmetric = seed_cm + seed_cm.T
            for a in range(len(classes)):
                for b in range(a + 1, len(classes)):
                    pair_errors.setdefault((classes[a], classes[b]), []).append(
                        int(symmetric[a, b])
                    )
        rows = [
            {
                "a": a,
                "b": b,
                "mean": float(np.mean(v)),
                "std": float(np.std(v, ddof=1)) if len(v) > 1 else None,
                "per_seed": v,
            }
            for (a, b), v in pair_errors.items()
            if sum(v) > 0
        ]
        report["seed_pairs"] = sorted(rows, key=lambda r: (-r["mean"], r["a"], r["b"]))
    report["note"] = "errors = images of a predicted as b plus images of b predicted as a. " + (
        "Per-seed statistics use the sample std (ddof=1)."
        if seed_logits
        else "No per-seed checkpoints were found under runs/<name>/seed*/, so no mean/std."
    )
    return report


def drift_report(
    predictor: Predictor, run: GridRun, keep: Sequence[int], image_set: ImageSet
) -> dict:
    """Grad-CAM of each kept image under each noise density and blur kernel against its clean
    CAM, for the class the model predicts on the clean image (so the drift measures where the
    evidence for one class moved, not a change of class)."""
    clean = [predictor.explain(image) for image in run.kept["clean"]]
    sweeps = {}
    for family in DRIFT_SWEEPS:
        rows = []
        for point in sweep_points(family, run.kept):
            name = point["condition"]
            if name == "clean":
                correlation, overlap = np.ones(len(clean)), np.ones(len(clean))
            else:
                shifts = [
                    cam_shift(ref.cam, predictor.explain(image, ref.target).cam, DRIFT_TOP_FRACTION)
                    for ref, image in zip(clean, run.kept[name], strict=True)
                ]
                correlation = np.array([s.correlation for s in shifts])
                overlap = np.array([s.top_iou for s in shifts])
            rows.append(
                {
                    **point,
                    "correlation_mean": float(correlation.mean()),
                    "correlation_std": float(correlation.std()),
                    "top20_iou_mean": float(overlap.mean()),
                    "top20_iou_std": float(overlap.std()),
                }
            )
        sweeps[family] = rows
    return {
        "set": image_set.name,
        "n_images": len(keep),
        "indices": list(keep),
        "paths": [image_set.paths[i] for i in keep],
        "method": "gradcam",
        "target": "the class predicted on the clean image",
        "top_fraction": DRIFT_TOP_FRACTION,
        "sweeps": sweeps,
    }


def drift_indices(n_images: int, n_drift: int, seed: int) -> list[int]:
    rng = np.random.default_rng([seed, zlib.crc32(b"drift")])
    return sorted(int(i) for i in rng.choice(n_images, min(n_drift, n_images), replace=False))


# --- paper and Table 5 -----------------------------------------------------------------------


def table5(out: Path) -> dict:
    """Rows for every model whose test report is on disk, ours beside the paper's."""
    rows, missing = [], set()
    for model, condition, train, test, paper_top1 in paper.TABLE5_ROWS:
        path = out / model / "test.json"
        if not path.is_file():
            missing.add(model)
            continue
        report = json.loads(path.read_text())
        result = report["conditions"].get(condition)
        if result is None:
            continue
        rows.append(
            {
                "model": model,
                "arch": report["arch"],
                "test_condition": condition,
                "test_description": result["description"],
                "top1_percent": 100 * result["top1"],
                "balanced_accuracy_percent": 100 * result["balanced_accuracy"],
                "paper_train": train,
                "paper_test": test,
                "paper_top1_percent": paper_top1,
            }
        )
    return {
        "source": paper.SOURCE,
        "set": "test",
        "paper_model": "resnet50 (the authors' data)",
        "rows": rows,
        "missing_models": sorted(missing),
    }


# --- JSON -------------------------------------------------------------------------------------


def to_json_value(value: object) -> object:
    """numpy and Python values -> JSON-safe: floats rounded to 6 digits, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return round(value, 6) + 0.0 if np.isfinite(value) else None  # + 0.0: no "-0.0"
    return value


def write_json(path: Path, data: dict, compact: bool = False) -> None:
    text = json.dumps(
        to_json_value(data),
        sort_keys=True,
        indent=None if compact else 2,
        separators=(",", ":") if compact else None,
        allow_nan=False,
    )
    path.write_text(text + "\n")
