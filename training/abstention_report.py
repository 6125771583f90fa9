"""Abstention reports: how often each shipped model declines to answer, and whether it declines
the right photos, on the test split, SD-198 and the non-skin set, clean and under every
salt-and-pepper density and blur kernel of training/evaluate.py.

    python training/abstention_report.py --models clean noise-trained robust

Run training/familiarity.py first (it writes the statistics and the threshold into each card).
Writes weights/reports/<model>/abstention.json. Per set and condition:

    coverage            share of photos answered
    top1_all            accuracy on every photo; top1_answered on the answered ones
    aurc, risk_coverage error rate among the photos the abstention score trusts most, at each
                        coverage (the curve thinned to <= 51 points), and its mean over coverages
    auroc_right_wrong   how well the abstention score ranks right answers above wrong ones
    flip_catch          of the photos whose answer the condition changes from the clean one, the
                        share the model abstains on instead of answering (flip_catch_wrong: of
                        those it would answer wrongly); not for "clean"
    ece_answered, ece_all   15-bin ECE of the calibrated probabilities
    badges              share of photos per familiarity_badge

The non-skin set has no labels: only coverage, familiarity and badges. The validation split's
clean coverage and ECE are in "validation" (the threshold was chosen there). Features come from
training/features.py's cache, so the photos are exactly evaluate.py's corrupted photos.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.explain import Assessment, Predictor  # noqa: E402
from dermcore.familiarity import familiarity_badge  # noqa: E402
from training import metrics  # noqa: E402
from training.conditions import CONDITIONS  # noqa: E402
from training.eval_report import write_json  # noqa: E402
from training.features import (  # noqa: E402
    REPORT_CONDITIONS,
    REPORT_SETS,
    add_data_arguments,
    feature_predictor,
    features_of,
    photo_sets_for,
)

log = logging.getLogger("abstention_report")

CURVE_POINTS = 51


def risk_coverage(score: np.ndarray, correct: np.ndarray) -> tuple[dict, float]:
    """Photos sorted by score, most trusted first: error rate of the first k at each k.
    Returns ({"coverage": [...], "risk": [...]} thinned, AURC = mean risk over all k)."""
    order = np.argsort(-score, kind="stable")
    errors = np.cumsum(~correct[order])
    k = np.arange(1, len(order) + 1)
    risk = errors / k
    keep = np.unique(np.linspace(0, len(k) - 1, CURVE_POINTS).round().astype(int))
    return {"coverage": k[keep] / len(k), "risk": risk[keep]}, float(risk.mean())


def condition_block(
    assessment: Assessment,
    labels: np.ndarray | None,
    clean: Assessment | None,
) -> dict:
    """Every measure of one set under one condition (see the module docstring)."""
    answered = ~assessment.abstain
    block = {
        "n_images": len(answered),
        "coverage": float(answered.mean()),
        "mean_familiarity": float(np.nanmean(assessment.familiarity)),
        "badges": _badge_shares(assessment.familiarity),
    }
    predictions = assessment.top_classes
    if clean is not None:
        flipped = predictions != clean.top_classes
        block["flip_rate"] = float(flipped.mean())
        block["flip_catch"] = _share(assessment.abstain[flipped])
        if labels is not None:
            wrong_flips = flipped & (predictions != labels)
            block["flip_catch_wrong"] = _share(assessment.abstain[wrong_flips])
    if labels is None:
        return block
    correct = predictions == labels
    curve, aurc = risk_coverage(assessment.score, correct)
    block.update(
        top1_all=float(correct.mean()),
        top1_answered=_share(correct[answered]),
        n_answered=int(answered.sum()),
        aurc=aurc,
        risk_coverage=curve,
        auroc_right_wrong=_auroc(correct, assessment.score),
        ece_all=metrics.expected_calibration_error(labels, assessment.probabilities)[0],
        ece_answered=(
            metrics.expected_calibration_error(
                labels[answered], assessment.probabilities[answered]
            )[0]
            if answered.any()
            else float("nan")
        ),
    )
    return block


def _share(flags: np.ndarray) -> float:
    return float(flags.mean()) if len(flags) else float("nan")


def _auroc(correct: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if correct.all() or not correct.any():
        return float("nan")
    return float(roc_auc_score(correct, score))


def _badge_shares(familiarity: np.ndarray) -> dict[str, float]:
    badges = [familiarity_badge(float(f)) for f in familiarity]
    return {str(b): badges.count(b) / len(badges) for b in dict.fromkeys(badges)}


def model_report(card_path: Path, args: argparse.Namespace) -> dict:
    predictor = Predictor.from_checkpoint(card_path)
    if predictor.familiarity_stats is None:
        raise SystemExit(f"{card_path.name} has no familiarity statistics; run familiarity.py")
    feature_model, card = feature_predictor(card_path)
    sets = photo_sets_for(card, args)

    def assess(set_name: str, condition: str) -> Assessment:
        outputs = features_of(
            feature_model,
            card,
            sets[set_name],
            condition,
            args.seed,
            args.cache_dir,
            args.batch_size,
        )
        return predictor.assessment_from(*outputs)

    report = {
        "model": card.name,
        "weights_sha256": card.weights_sha256,
        "familiarity": card.familiarity,
        "abstention": card.abstention,
        "probabilities": "temperature_scaled",
        "command": "python training/abstention_report.py --models " + " ".join(args.models),
        "note": "thresholds chosen on the validation split only; these sets were never used",
        "validation": condition_block(assess("val", "clean"), sets["val"].labels, None),
        "sets": {},
    }
    for set_name in REPORT_SETS:
        labels = None if set_name == "non_skin" else sets[set_name].labels
        clean = assess(set_name, "clean")
        report["sets"][set_name] = {
            condition: {
                "family": CONDITIONS[condition].family,
                "severity": CONDITIONS[condition].severity,
                **condition_block(
                    assess(set_name, condition), labels, None if condition == "clean" else clean
                ),
            }
            for condition in args.conditions
        }
        if set_name == "shift_sd198" and sets[set_name].table2 is not None:
            rows = sets[set_name].table2
            table2 = _subset(clean, rows)
            report["sets"]["shift_sd198_table2_clean"] = condition_block(table2, labels[rows], None)
    report["targets"] = targets(report)
    out = args.out / card.name / "abstention.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    log.info("wrote %s", out)
    return report


def targets(report: dict) -> dict:
    """The issue's target measures, each beside its target (">= 0.9": at least 0.9)."""
    test, sd198 = report["sets"]["test"], report["sets"]["shift_sd198"]
    non_skin = report["sets"]["non_skin"]["clean"]
    measures = {
        "test_coverage": (test["clean"]["coverage"], ">= 0.9"),
        "test_top1_answered_minus_all": (
            test["clean"]["top1_answered"] - test["clean"]["top1_all"],
            "> 0",
        ),
        "non_skin_abstain": (1 - non_skin["coverage"], ">= 0.95"),
        "sd198_auroc_right_wrong": (sd198["clean"]["auroc_right_wrong"], ">= 0.75"),
        "sd198_coverage": (sd198["clean"]["coverage"], ">= 0.25"),
        "sd198_top1_answered": (sd198["clean"]["top1_answered"], ">= 0.45"),
        "test_flip_catch_sp5": (test.get("sp5", {}).get("flip_catch"), ">= 0.6"),
        "test_flip_catch_blur11": (test.get("blur11", {}).get("flip_catch"), ">= 0.6"),
        "sd198_ece_answered": (sd198["clean"]["ece_answered"], "<= 0.15"),
    }
    out = {}
    for name, (value, target) in measures.items():
        op, bound = target.split()
        met = None
        if value is not None and np.isfinite(value):
            met = {">=": value >= float(bound), ">": value > float(bound)}.get(
                op, value <= float(bound)
            )
        out[name] = {"value": value, "target": target, "met": met}
    return out


def _subset(assessment: Assessment, rows: np.ndarray) -> Assessment:
    return Assessment(
        assessment.probabilities[rows],
        assessment.familiarity[rows],
        assessment.abstain[rows],
        assessment.score[rows],
    )


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Coverage, selective accuracy, AURC and flip-catch of every shipped model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=["clean", "noise-trained", "robust"])
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=list(REPORT_CONDITIONS),
        choices=list(REPORT_CONDITIONS),
        help="evaluate.py conditions to report",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="report folder (default: <weights-dir>/reports)"
    )
    add_data_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict[str, dict]:
    args.out = args.out or args.weights_dir / "reports"
    return {name: model_report(args.weights_dir / f"{name}.json", args) for name in args.models}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name, report in main(get_args_parser().parse_args()).items():
        for measure, row in report["targets"].items():
            value = row["value"]
            shown = "n/a" if value is None else f"{value:.3f}"
            print(
                f"{name:<14} {measure:<30} {shown:>7}  target {row['target']:<8} met {row['met']}"
            )
