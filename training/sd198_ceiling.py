"""How far could any score the shipped models compute go on SD-198? A ceiling, read after
every choice was made, choosing nothing.

    python training/sd198_ceiling.py --models clean noise-trained robust

Issue 14 asks the abstention score to tell right answers from wrong ones on all 263 SD-198 rows
with AUROC >= 0.75, to be right on >= 45 % of the photos it answers while answering >= 25 %,
and for an ECE <= 0.15 on the answered photos. The shipped rule was fixed on the validation split
and the held-out-source proxies (training/familiarity.py). This asks a different question: if
each signal the models already compute were chosen on SD-198 itself, the most favourable case,
how close would it come? Per model and signal, on every SD-198 row:

    auroc_right_wrong   how well the signal ranks right answers above wrong ones
    best_top1_quarter   top-1 on the k photos it trusts most, the best k >= 25 % of the rows
    auroc_val_vs_shift  how well it tells SD-198 photos from validation photos (0.5: not at all)

Signals (higher = trust more): the shipped rule's abstention score; the calibrated top
probability, the margin to the second class and minus the entropy; the energy (logsumexp of the
logits); and training/familiarity.py's Mahalanobis, kNN and texture scores, fitted on the training
split as there. And the temperature: the smallest multiple of the card's temperature that brings
the ECE on the shipped rule's answered SD-198 photos to <= 0.15, with the validation ECE it
costs. Features come from training/features.py's cache. Prints the tables.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.explain import Predictor  # noqa: E402
from training import metrics  # noqa: E402
from training.familiarity import KNN_K, candidate_scores  # noqa: E402
from training.features import (  # noqa: E402
    add_data_arguments,
    feature_predictor,
    features_of,
    photo_sets_for,
    training_view_of,
)

TARGET_AUROC, TARGET_TOP1, TARGET_COVERAGE, TARGET_ECE = 0.75, 0.45, 0.25, 0.15
FAMILIARITY_SIGNALS = ("mahalanobis", f"knn{KNN_K}", "energy", "texture")
TEMPERATURE_FACTORS = np.round(np.arange(1.0, 8.0001, 0.05), 2)


def softmax_signals(logits: np.ndarray, temperature: float) -> dict[str, np.ndarray]:
    """Calibrated top probability, margin to the runner-up and minus the entropy (N,) each."""
    probs = metrics.softmax(logits, temperature)
    top2 = np.sort(probs, axis=1)[:, -2:]
    entropy = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=1)
    return {"confidence": top2[:, 1], "margin": top2[:, 1] - top2[:, 0], "neg_entropy": -entropy}


def best_top1_quarter(score: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """The highest top-1 over the k most trusted photos, for every k >= coverage * N."""
    order = np.argsort(-score, kind="stable")
    k = np.arange(1, len(order) + 1)
    top1 = np.cumsum(correct[order]) / k
    return float(top1[k >= np.ceil(coverage * len(order))].max())


def signal_row(
    score: np.ndarray, correct: np.ndarray, val_score: np.ndarray | None = None
) -> dict[str, float]:
    """The module docstring's three measures for one signal on SD-198 (score, correct (N,));
    val_score, the same signal on validation, for the third."""
    row = {
        "auroc_right_wrong": float(roc_auc_score(correct, score)),
        "best_top1_quarter": best_top1_quarter(score, correct, TARGET_COVERAGE),
    }
    if val_score is not None:
        is_val = np.r_[np.ones(len(val_score)), np.zeros(len(score))]
        row["auroc_val_vs_shift"] = float(roc_auc_score(is_val, np.r_[val_score, score]))
    return row


def softest_temperature(
    logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], temperature: float
) -> dict[str, float]:
    """The smallest factor f on TEMPERATURE_FACTORS with ECE(shift, T * f) <= TARGET_ECE, and
    the validation ECE at T * f (NaN where no factor reaches it). logits/labels: "val", "shift"
    (the shift photos the rule answers)."""
    for factor in TEMPERATURE_FACTORS:
        shift_ece, _ = metrics.expected_calibration_error(
            labels["shift"], metrics.softmax(logits["shift"], temperature * factor)
        )
        if shift_ece <= TARGET_ECE:
            val_ece, _ = metrics.expected_calibration_error(
                labels["val"], metrics.softmax(logits["val"], temperature * factor)
            )
            return {"factor": float(factor), "shift_ece": shift_ece, "val_ece": val_ece}
    return {"factor": float("nan"), "shift_ece": float("nan"), "val_ece": float("nan")}


def model_ceiling(card_path: Path, args: argparse.Namespace) -> dict:
    predictor = Predictor.from_checkpoint(card_path)
    feature_model, card = feature_predictor(card_path)
    sets = photo_sets_for(card, args)

    def outputs(set_name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return features_of(
            feature_model, card, sets[set_name], "clean", args.seed, args.cache_dir,
            args.batch_size,
        )  # fmt: skip

    train = training_view_of(
        feature_model, card, sets["train"], args.seed, args.cache_dir, args.batch_size
    )
    val, shift = outputs("val"), outputs("shift_sd198")
    labels = sets["shift_sd198"].labels
    correct = shift[0].argmax(axis=1) == labels
    assessment = predictor.assessment_from(*shift)
    rows = {"shipped rule": signal_row(assessment.score, correct)}
    val_soft = softmax_signals(val[0], card.temperature)
    for name, values in softmax_signals(shift[0], card.temperature).items():
        rows[name] = signal_row(values, correct, val_soft[name])
    scores = candidate_scores(train, sets["train"].labels, len(card.classes))
    for name in FAMILIARITY_SIGNALS:
        (fn,) = scores[name]
        rows[name] = signal_row(fn(*shift), correct, fn(*val))
    answered = ~assessment.abstain
    temperature = softest_temperature(
        {"val": val[0], "shift": shift[0][answered]},
        {"val": sets["val"].labels, "shift": labels[answered]},
        card.temperature,
    )
    return {
        "top1": float(correct.mean()),
        "signals": rows,
        "temperature": {"card": card.temperature, **temperature},
    }


def print_ceiling(name: str, ceiling: dict) -> None:
    print(f"\n{name}: top-1 on all SD-198 rows {100 * ceiling['top1']:.1f} %")
    print(
        f"| signal | AUROC right vs wrong (target >= {TARGET_AUROC}) | best top-1 % answering "
        f">= {TARGET_COVERAGE:.0%} (target >= {TARGET_TOP1:.0%}) | AUROC validation vs SD-198 |"
    )
    print("|---|---|---|---|")
    for signal, row in ceiling["signals"].items():
        separation = row.get("auroc_val_vs_shift")
        print(
            f"| {signal} | {row['auroc_right_wrong']:.3f} | "
            f"{100 * row['best_top1_quarter']:.1f} | "
            + ("" if separation is None else f"{separation:.3f}")
            + " |"
        )
    t = ceiling["temperature"]
    print(
        f"ECE <= {TARGET_ECE} on the answered SD-198 photos needs T = {t['card']:.3f} x "
        f"{t['factor']:.2f}; validation ECE there {t['val_ece']:.3f}"
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["clean", "noise-trained", "robust"])
    add_data_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict[str, dict]:
    ceilings = {}
    for name in args.models:
        ceilings[name] = model_ceiling(args.weights_dir / f"{name}.json", args)
        print_ceiling(name, ceilings[name])
    return ceilings


if __name__ == "__main__":
    main(get_args_parser().parse_args())
