"""Robustness reports: every shipped model on the test split and the external SD-198 set, clean
and under every corruption, with calibration, class confusions, explanation drift and the
paper's numbers beside ours.

    python training/evaluate.py --weights-dir weights --models clean noise-trained robust

Per model it writes into `<out>/<model>/`:

    test.json                  the test split of weights/split.json, every condition
    shift_sd198.json           SD-198 rows with table2=yes (the paper's Table 2 grouping)
    shift_sd198_lenient.json   every SD-198 row, lenient classes included
    table4.json                most-confused class pairs on the clean test split (per seed if any)
    drift.json                 Grad-CAM drift against noise density and blur kernel
    training_curves.jsonl, lr_find.csv, lr_find.png   copied from runs/ when present

and `<out>/table5.json` (train condition x test condition, ours beside the paper's) and
`<out>/paper.json`. The temperature is fitted on the clean validation split and written into the
model card (`calibration`); report probabilities are softmax(logits / T) and every report says so.

Photos are decoded once to the model input resolution; each condition corrupts them there (the
paper's setting) with per-image seeds derived from (--seed, condition, set, image index), so the
JSON is byte-identical between runs. Floats are rounded to 6 digits, keys sorted, NaN -> null.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import logging
import shutil
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python training/evaluate.py`
    sys.path.insert(0, str(REPO))

from dermcore import paper  # noqa: E402
from dermcore.checkpoint import (  # noqa: E402
    ModelCard,
    list_cards,
    load_checkpoint,
    sha256_file,
    write_card,
)
from dermcore.corruptions import CorruptionSpec, apply_corruption  # noqa: E402
from dermcore.explain import Predictor, cam_shift  # noqa: E402
from dermcore.imageio import load_image  # noqa: E402
from dermcore.malloc import keep_freed_memory  # noqa: E402
from dermcore.preprocessing import Preprocessing  # noqa: E402
from training import metrics  # noqa: E402

log = logging.getLogger("evaluate")

ROC_POINTS = 100  # per class and condition; keeps a report well under 2 MB
DRIFT_TOP_FRACTION = 0.2


# --- conditions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One way of showing the test images to the model. Severities are data: `spec` holds them,
    and two switches redraw a part of it per image from that image's seeded generator."""

    name: str
    family: str  # clean | noise | blur | motion | jpeg | exposure
    severity: float  # noise: density fraction; blur: kernel px; motion: length px; jpeg: quality; exposure: factor
    spec: CorruptionSpec = field(default_factory=CorruptionSpec)
    max_density: float | None = None  # noise density drawn per image from U[0, max_density]
    random_angle: bool = False  # motion angle drawn per image from U[0, 180) degrees
    seed_key: str = ""  # conditions sharing a key share per-image draws ("" = the name)

    def spec_for(self, rng: np.random.Generator) -> CorruptionSpec:
        """The spec for one image; rng is that image's generator (it then drives the noise)."""
        changes = {}
        if self.max_density is not None:
            changes["noise_density"] = float(rng.uniform(0.0, self.max_density))
        if self.random_angle:
            changes["motion_angle_deg"] = float(rng.uniform(0.0, 180.0))
        return dataclasses.replace(self.spec, **changes) if changes else self.spec

    def describe(self) -> str:
        if self.max_density is not None:
            return f"salt-and-pepper, density U[0, {self.max_density:g}] per image (3:1)"
        if self.random_angle:
            return f"{self.spec.motion_length_px} px motion blur, angle U[0, 180) per image"
        return self.spec.describe()


def _build_conditions() -> list[Condition]:
    conditions = [
        Condition("clean", "clean", 0.0),
        # the paper's test: "at most 5% of the image pixels", black:white 3:1
        Condition("sp_upto5", "noise", 0.05, max_density=0.05),
    ]
    for percent in (0.5, 1, 2, 3, 4, 5):  # sp5 is the paper's maximum, exactly 5%
        density = percent / 100
        conditions.append(
            Condition(f"sp{percent:g}", "noise", density, CorruptionSpec(noise_density=density))
        )
    for kernel in (3, 5, 7, 9, 11):  # blur5 is the paper's 5x5 Gaussian
        conditions.append(
            Condition(f"blur{kernel}", "blur", kernel, CorruptionSpec(blur_kernel=kernel))
        )
    for length in (5, 10, 15, 20, 25):  # one angle per image for the whole sweep
        spec = CorruptionSpec(motion_length_px=length)
        conditions.append(
            Condition(
                f"motion{length}", "motion", length, spec, random_angle=True, seed_key="motion"
            )
        )
    for quality in (90, 70, 50, 30, 10):
        conditions.append(
            Condition(f"jpeg{quality}", "jpeg", quality, CorruptionSpec(jpeg_quality=quality))
        )
    for factor in (0.5, 0.7, 1.4, 2.0):
        conditions.append(
            Condition(f"exposure{factor:g}", "exposure", factor, CorruptionSpec(exposure=factor))
        )
    return conditions


CONDITIONS: dict[str, Condition] = {c.name: c for c in _build_conditions()}
# Severity sweeps for plots, mildest first. "clean" is each sweep's baseline, plotted at the
# severity that means "unchanged": density 0, kernel 1, length 0, quality 100 (no re-encode),
# exposure factor 1. sp_upto5 is the paper's mixed test, not a sweep point.
SWEEPS: dict[str, list[str]] = {
    "noise": ["clean", "sp0.5", "sp1", "sp2", "sp3", "sp4", "sp5"],
    "blur": ["clean", "blur3", "blur5", "blur7", "blur9", "blur11"],
    "motion": ["clean", "motion5", "motion10", "motion15", "motion20", "motion25"],
    "jpeg": ["clean", "jpeg90", "jpeg70", "jpeg50", "jpeg30", "jpeg10"],
    "exposure": ["exposure0.5", "exposure0.7", "clean", "exposure1.4", "exposure2"],
}
SWEEP_BASELINE = {"noise": 0.0, "blur": 1, "motion": 0, "jpeg": 100, "exposure": 1.0}


def sweep_points(family: str, available: Sequence[str]) -> list[dict]:
    """[{"condition", "severity"}] of one family's sweep, limited to the available conditions."""
    return [
        {
            "condition": n,
            "severity": SWEEP_BASELINE[family] if n == "clean" else CONDITIONS[n].severity,
        }
        for n in SWEEPS[family]
        if n in available
    ]


DRIFT_SWEEPS = ("noise", "blur")


def image_rng(seed: int, condition: Condition, set_name: str, index: int) -> np.random.Generator:
    """The generator for one image under one condition: a pure function of its arguments."""
    key = condition.seed_key or condition.name
    return np.random.default_rng(
        [seed, zlib.crc32(key.encode()), zlib.crc32(set_name.encode()), index]
    )


# --- data -------------------------------------------------------------------------------------


class DataError(RuntimeError):
    """Data files missing or not matching their recorded checksums; the message says what to do."""


@dataclass
class ImageSet:
    """Photos decoded once to the model input resolution, with their labels."""

    name: str  # seeds the per-image draws: "test", "val", "shift_sd198"
    paths: list[str]  # relative to the data root
    labels: np.ndarray  # int64 (N,) indices into the card's classes
    sources: list[str]
    images: np.ndarray  # uint8 (N, S, S, 3) at the model input size
    table2: np.ndarray | None = None  # bool (N,): the row's condition is in the paper's Table 2
    conditions: list[str] = field(default_factory=list)  # the source's own class name per row


def read_split(path: Path) -> dict[str, list[dict]]:
    """weights/split.json -> {"train"|"val"|"test": [{path, sha256, label, source, group}]}."""
    if not path.is_file():
        raise DataError(
            f"The split file {path} is missing. Run training/train.py first (it writes it)."
        )
    data = json.loads(path.read_text())
    splits = data.get("splits", data)
    if "val" not in splits and "validation" in splits:
        splits["val"] = splits["validation"]
    missing = [name for name in ("val", "test") if not isinstance(splits.get(name), list)]
    if missing:
        raise DataError(f"The split file {path} has no {' or '.join(missing)} list.")
    return splits


def read_manifest(root: Path) -> list[dict]:
    path = root / "manifest.csv"
    if not path.is_file():
        raise DataError(f"No manifest.csv in {root}; pass the data set folder (see --help).")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def load_set(
    name: str,
    root: Path,
    rows: Sequence[dict],
    classes: Sequence[str],
    preprocessing: Preprocessing,
) -> ImageSet:
    """Read, verify (SHA-256 when the row has one) and decode rows to the model input size."""
    images = np.empty((len(rows), preprocessing.input_size, preprocessing.input_size, 3), np.uint8)
    for i, row in enumerate(rows):
        path = root / row["path"]
        try:
            data = path.read_bytes()
        except OSError:
            raise DataError(f"{path} is missing; is --data-root / --shift-root right?") from None
        if row.get("sha256") and hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise DataError(
                f"{path} does not match the SHA-256 recorded for it: the data changed since the "
                "split was made. Rebuild the data or the split."
            )
        images[i] = preprocessing.to_input_resolution(load_image(data))
    table2 = [row.get("table2") for row in rows]
    return ImageSet(
        name=name,
        paths=[row["path"] for row in rows],
        labels=np.array([classes.index(row["label"]) for row in rows], dtype=np.int64),
        sources=[row.get("source", "") for row in rows],
        images=images,
        table2=None if None in table2 else np.array([v == "yes" for v in table2], dtype=bool),
        conditions=[row.get("condition", "") for row in rows],
    )


def subset(image_set: ImageSet, mask: np.ndarray, name: str) -> ImageSet:
    return ImageSet(
        name=name,
        paths=[p for p, keep in zip(image_set.paths, mask, strict=True) if keep],
        labels=image_set.labels[mask],
        sources=[s for s, keep in zip(image_set.sources, mask, strict=True) if keep],
        images=image_set.images[mask],
        table2=None if image_set.table2 is None else image_set.table2[mask],
        conditions=[c for c, keep in zip(image_set.conditions, mask, strict=True) if keep],
    )


# --- running the grid -------------------------------------------------------------------------


@dataclass
class GridRun:
    logits: dict[str, dict[str, np.ndarray]]  # condition -> set name -> float32 (N, C)
    kept: dict[str, np.ndarray]  # condition -> uint8 (K, S, S, 3) images at `keep` of the first set
    forward_s: float = 0.0  # seconds inside the model
    total_s: float = 0.0  # seconds for everything (corrupting, batching, forward)
    n_forward: int = 0


def run_grid(
    predictor: Predictor,
    sets: Sequence[ImageSet],
    conditions: Sequence[Condition],
    seed: int,
    batch_size: int = 64,
    keep: Sequence[int] = (),
) -> GridRun:
    """Logits of every set under every condition. The sets are pooled so batches stay full;
    `keep` indexes the first set, whose corrupted images are kept for the drift study."""
    start = time.perf_counter()
    pool = np.concatenate([s.images for s in sets]) if len(sets) > 1 else sets[0].images
    owners = [(s.name, i) for s in sets for i in range(len(s.labels))]
    bounds = np.cumsum([0] + [len(s.labels) for s in sets])
    run = GridRun(logits={}, kept={})
    for condition in conditions:
        logits = np.empty((len(pool), len(predictor.classes)), np.float32)
        kept = []
        for lo in range(0, len(pool), batch_size):
            hi = min(lo + batch_size, len(pool))
            batch = corrupt_batch(pool[lo:hi], condition, seed, owners[lo:hi])
            kept.extend(batch[i - lo] for i in keep if lo <= i < hi)
            t0 = time.perf_counter()
            logits[lo:hi] = predictor.predict_logits(batch, batch_size=batch_size)
            run.forward_s += time.perf_counter() - t0
            run.n_forward += hi - lo
        run.logits[condition.name] = {
            s.name: logits[bounds[k] : bounds[k + 1]] for k, s in enumerate(sets)
        }
        run.kept[condition.name] = np.stack(kept) if kept else pool[:0]
        log.info("  %-12s %s", condition.name, condition.describe())
    run.total_s = time.perf_counter() - start
    return run


def corrupt_batch(
    images: np.ndarray, condition: Condition, seed: int, owners: Sequence[tuple[str, int]]
) -> np.ndarray:
    """uint8 (B, S, S, 3) -> corrupted copy; owners[i] = (set name, index) of image i."""
    if condition.spec.is_identity and condition.max_density is None:
        return images
    out = np.empty_like(images)
    for i, (set_name, index) in enumerate(owners):
        rng = image_rng(seed, condition, set_name, index)
        out[i] = apply_corruption(images[i], condition.spec_for(rng), rng)
    return out


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


# --- calibration, confusions, drift, training curves -------------------------------------------


def calibrate(val_logits: np.ndarray, val_labels: np.ndarray) -> dict:
    bounds = (0.05, 20.0)
    temperature = metrics.fit_temperature(val_logits, val_labels, bounds)
    before, _ = metrics.expected_calibration_error(val_labels, metrics.softmax(val_logits))
    after, _ = metrics.expected_calibration_error(
        val_labels, metrics.softmax(val_logits, temperature)
    )
    return {
        "temperature": temperature,
        "ece_before": before,
        "ece_after": after,
        "nll_before": metrics.nll_from_logits(val_labels, val_logits),
        "nll_after": metrics.nll_from_logits(val_labels, val_logits, temperature),
        "fitted_on": f"validation split, clean, {len(val_labels)} images",
        "ece_bins": metrics.ECE_BINS,
        # a fit at a bound means the search range, not the data, set T (e.g. an untrained head)
        "at_bound": bool(np.isclose(temperature, bounds, rtol=1e-4).any()),
    }


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


def find_run_dir(card: ModelCard, runs_dir: Path) -> Path | None:
    """The shipped seed's run folder: card.training's run_dir, else runs/<name>/seed<k> with
    k = card.training's shipped_seed or seed, else the only seed folder there is."""
    training = card.training or {}
    named = training.get("run_dir")
    if named and (REPO / named).is_dir():
        return REPO / named
    base = runs_dir / card.name
    for key in ("shipped_seed", "seed"):
        if training.get(key) is not None and (base / f"seed{training[key]}").is_dir():
            return base / f"seed{training[key]}"
    seeds = sorted(base.glob("seed*")) if base.is_dir() else []
    return seeds[0] if len(seeds) == 1 else None


# report file <- file in the shipped seed's run folder (or the folder above it)
RUN_FILES = {
    "training_curves.jsonl": "metrics.jsonl",
    "loss_curves.png": "loss_curves.png",
    "lr_find.csv": "lr_find.csv",
    "lr_find.png": "lr_find.png",
}


def copy_training_curves(card: ModelCard, runs_dir: Path, out: Path) -> dict:
    """Copy the shipped seed's metrics.jsonl, loss curves and LR range test into out/."""
    run_dir = find_run_dir(card, runs_dir)
    copied = {}
    for target, name in RUN_FILES.items() if run_dir is not None else ():
        source = next((d / name for d in (run_dir, run_dir.parent) if (d / name).is_file()), None)
        if source is not None:
            shutil.copyfile(source, out / target)
            copied[target] = _display(source)
    return {"run_dir": _display(run_dir) if run_dir else None, "copied": copied}


def _display(path: Path) -> str:
    """A path relative to the repository when inside it (reports stay machine-independent)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def seed_checkpoints(name: str, runs_dir: Path) -> dict[str, Path]:
    """Per-seed model cards under runs/<name>/seed*/ (for Table 4's mean and std)."""
    base = runs_dir / name
    found = {}
    for seed_dir in sorted(base.glob("seed*")) if base.is_dir() else []:
        cards = list_cards(seed_dir)
        if cards:
            found[seed_dir.name] = cards[0]
    return found


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


# --- per model --------------------------------------------------------------------------------


@dataclass
class ModelResult:
    name: str
    headline: dict  # report file -> condition -> top-1
    images: int = 0  # forward passes, validation included
    total_s: float = 0.0
    forward_s: float = 0.0


def batch_predictor(
    model: torch.nn.Module, arch: str, prep: Preprocessing, classes: Sequence[str]
) -> Predictor:
    """A Predictor for batched evaluation: channels-last weights run the convolutions ~1.5x
    faster on CPU (measured on EfficientNet-Lite0, batch 64, 224 px). Raw logits; T is ours."""
    return Predictor(model.to(memory_format=torch.channels_last), arch, prep, classes=classes)


def load_sets(
    args: argparse.Namespace, split: dict, classes: Sequence[str], prep: Preprocessing
) -> tuple[ImageSet, list[ImageSet]]:
    """(validation set, [test set, SD-198 set if --shift-root]) decoded at prep's input size."""
    # the split file lists path, label, source and group; the source's own condition name
    # (for clean_by_condition) is in the manifest
    condition = {row["path"]: row.get("condition", "") for row in read_manifest(args.data_root)}

    def rows(name: str) -> list[dict]:
        return [{**r, "condition": condition.get(r["path"], "")} for r in split[name][: args.limit]]

    val = load_set("val", args.data_root, rows("val"), classes, prep)
    sets = [load_set("test", args.data_root, rows("test"), classes, prep)]
    if args.shift_root is not None:
        shift_rows = read_manifest(args.shift_root)[: args.limit]
        sets.append(load_set("shift_sd198", args.shift_root, shift_rows, classes, prep))
    return val, sets


def data_identity(args: argparse.Namespace) -> dict:
    """Which data the numbers are about: the split file and the SD-198 manifest, by hash."""
    identity = {"split_file": _display(args.split), "split_sha256": sha256_file(args.split)}
    if args.shift_root is not None:
        identity["shift_manifest_sha256"] = sha256_file(args.shift_root / "manifest.csv")
    if args.limit is not None:
        identity["limit"] = args.limit  # a smoke run on the first N images of each set
    return identity


def report_sets(sets: Sequence[ImageSet], logits: dict) -> dict[str, tuple[ImageSet, dict]]:
    """Report file stem -> (image set, condition -> logits). SD-198 gives two files: every row
    (lenient) and the rows whose condition the paper's Table 2 lists (table2=yes)."""
    test, *shift = sets
    reports = {"test": (test, {c: v["test"] for c, v in logits.items()})}
    if shift:
        (shift,) = shift
        shift_logits = {c: v["shift_sd198"] for c, v in logits.items()}
        lenient = dataclasses.replace(shift, name="shift_sd198_lenient")
        reports["shift_sd198_lenient"] = (lenient, shift_logits)
        if shift.table2 is not None:
            strict = subset(shift, shift.table2, "shift_sd198")
            reports["shift_sd198"] = (strict, {c: v[shift.table2] for c, v in shift_logits.items()})
    return reports


def evaluate_model(
    card_path: Path, args: argparse.Namespace, split: dict, decoded: dict
) -> ModelResult:
    """Every report of one model; `decoded` caches image sets between models that share an
    input resolution."""
    model, card = load_checkpoint(card_path)
    prep = card.get_preprocessing()
    predictor = batch_predictor(model, card.arch, prep, card.classes)
    classes = list(card.classes)
    conditions = [CONDITIONS[n] for n in args.conditions]
    out = args.out / card.name
    out.mkdir(parents=True, exist_ok=True)
    key = (prep.input_size, prep.resize_size, tuple(classes))
    if key not in decoded:
        log.info("decoding images at %d px", prep.input_size)
        decoded[key] = load_sets(args, split, classes, prep)
    val, sets = decoded[key]

    started = time.perf_counter()
    val_logits = predictor.predict_logits(val.images, args.batch_size)
    calibration = calibrate(val_logits, val.labels)
    card.calibration = {**card.calibration, **calibration}
    write_card(card, card_path)  # only the card changes; the weights and their hash do not

    keep = drift_indices(len(sets[0].labels), args.drift_images, args.seed) if args.drift else []
    log.info(
        "%s: %d conditions x %d images",
        card.name,
        len(conditions),
        sum(len(s.labels) for s in sets),
    )
    run = run_grid(predictor, sets, conditions, args.seed, args.batch_size, keep)

    header = {
        "model": card.name,
        "arch": card.arch,
        "weights_sha256": card.weights_sha256,
        "classes": classes,
        "input_size": prep.input_size,
        "corruption_site": "input",
        "seed": args.seed,
        "data": data_identity(args),
        "calibration": calibration,
        "source": "training/evaluate.py",
    }
    headline, written = {}, []
    for stem, (image_set, logits) in report_sets(sets, run.logits).items():
        report = set_report(
            image_set, logits, conditions, header, calibration["temperature"], classes
        )
        write_json(out / f"{stem}.json", report, compact=True)
        written.append(f"{stem}.json")
        headline[stem] = {
            c: {k: r[k] for k in ("top1", "balanced_accuracy", "macro_auroc", "ece", "flip_rate")}
            for c, r in report["conditions"].items()
        }

    test = sets[0]
    seed_logits = {}
    if args.seed_checkpoints:
        for seed_name, seed_card in seed_checkpoints(card.name, args.runs_dir).items():
            seed_model, _ = load_checkpoint(seed_card)
            seed_predictor = batch_predictor(seed_model, card.arch, prep, classes)
            seed_logits[seed_name] = seed_predictor.predict_logits(test.images, args.batch_size)
    clean_test = run.logits["clean"]["test"]
    write_json(out / "table4.json", confusion_report(clean_test, test.labels, classes, seed_logits))
    written.append("table4.json")
    if keep:
        write_json(out / "drift.json", drift_report(predictor, run, keep, test))
        written.append("drift.json")
    curves = copy_training_curves(card, args.runs_dir, out)
    log.info("%s: training curves %s", card.name, sorted(curves["copied"]) or "not found")
    summary = {
        **header,
        "headline": headline,
        "files": sorted([*written, *curves["copied"], "summary.json"]),
        "training_curves": curves,
        "seeds_evaluated": sorted(seed_logits),
    }
    write_json(out / "summary.json", summary)
    total = time.perf_counter() - started
    top1 = {stem: {c: v["top1"] for c, v in h.items()} for stem, h in headline.items()}
    return ModelResult(card.name, top1, run.n_forward + len(val.labels), total, run.forward_s)


# --- CLI --------------------------------------------------------------------------------------


def default_data_root(name: str) -> Path | None:
    """../shared/data/<name> beside the repository when it exists, else None."""
    path = (REPO / ".." / "shared" / "data" / name).resolve()
    return path if path.is_dir() else None


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate checkpoints clean and under every corruption; write JSON reports.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--weights-dir", type=Path, default=REPO / "weights", help="folder of model cards"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="card names (default: every card in --weights-dir)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=default_data_root("train"),
        help="set A folder (manifest.csv, images/)",
    )
    parser.add_argument(
        "--shift-root",
        type=Path,
        default=default_data_root("shift-sd198"),
        help="SD-198 set folder; evaluation only",
    )
    parser.add_argument(
        "--split", type=Path, default=None, help="split file (default: <weights-dir>/split.json)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: <weights-dir>/reports)"
    )
    parser.add_argument(
        "--runs-dir",
        type=Path,
        default=REPO / "runs",
        help="training runs (curves, per-seed checkpoints)",
    )
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=list(CONDITIONS),
        choices=list(CONDITIONS),
        metavar="NAME",
        help="conditions to evaluate (clean is always added)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds every per-image corruption draw")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument(
        "--drift-images", type=int, default=24, help="test images in the Grad-CAM drift study"
    )
    parser.add_argument(
        "--no-drift", dest="drift", action="store_false", help="skip the Grad-CAM drift study"
    )
    parser.add_argument(
        "--no-seed-checkpoints",
        dest="seed_checkpoints",
        action="store_false",
        help="skip per-seed checkpoints under runs/ for Table 4",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use only the first N images of each set (smoke runs)",
    )
    return parser


def main(args: argparse.Namespace) -> dict[str, ModelResult]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keep_freed_memory()  # batch-64 activations reuse freed memory (dermcore/malloc.py)
    if args.data_root is None:
        raise DataError("No --data-root given and ../shared/data/train does not exist.")
    args.split = args.split or args.weights_dir / "split.json"
    args.out = args.out or args.weights_dir / "reports"
    if "clean" not in args.conditions:
        args.conditions = ["clean", *args.conditions]
    args.conditions = [name for name in CONDITIONS if name in set(args.conditions)]
    if args.models:
        card_paths = [args.weights_dir / f"{name}.json" for name in args.models]
    else:
        card_paths = list_cards(args.weights_dir)
    if not card_paths:
        raise DataError(f"No model cards in {args.weights_dir}; train a model first.")
    split = read_split(args.split)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "paper.json", paper.PAPER_NUMBERS)
    results, decoded = {}, {}
    for card_path in card_paths:
        results[card_path.stem] = evaluate_model(card_path, args, split, decoded)
    write_json(args.out / "table5.json", table5(args.out))
    print_summary(results)
    return results


def print_summary(results: dict[str, ModelResult]) -> None:
    columns = ["clean", "sp_upto5", "blur5", "sp5", "motion15", "jpeg30"]
    print(f"\n{'model':<16}{'set':<22}" + "".join(f"{c:>10}" for c in columns))
    for result in results.values():
        for set_name, top1 in result.headline.items():
            cells = "".join(
                f"{100 * top1[c]:>9.1f}%" if c in top1 else f"{'-':>10}" for c in columns
            )
            print(f"{result.name:<16}{set_name:<22}{cells}")
    print()
    for result in results.values():
        print(
            f"{result.name}: {result.images} images in {result.total_s:.1f} s = "
            f"{result.images / result.total_s:.1f} img/s overall; model forward alone "
            f"{result.forward_s:.1f} s"
        )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
