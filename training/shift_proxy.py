"""Judge familiarity scores and the temperature on photos from a source the model never saw.

    python training/source_holdout.py                      # runs/holdout/split.json
    python training/train.py --name clean --seeds 0 --lr 0.03 --split-file runs/holdout/split.json \
        --out-dir runs/holdout --weights-dir runs/holdout/weights        # the proxy, ~7 min
    python training/shift_proxy.py                         # -> weights/reports/shift_proxy.json

The proxy is the shipped recipe trained without one source (training/source_holdout.py). Its
statistics are fitted on its own training split and its percentiles and thresholds on its own
validation split, exactly as training/familiarity.py does for a shipped model; then its held-out
source is scored as a new clinic's photos
(-> weights/reports/shift_proxy.json, read by training/familiarity.py and training/evaluate.py). Per candidate score (training/familiarity.py's, with
the threshold that answers 90 % of the proxy's validation):

  heldout_auroc_rw       how well the abstention score ranks right answers above wrong ones on
                         the held-out source (SD-198's right-vs-wrong AUROC, without SD-198)
  heldout_coverage, heldout_answered_acc
  auroc_val_vs_heldout   how well the familiarity alone ranks validation above held-out photos

and for the temperature: T fitted on the proxy's validation, T fitted on its held-out source,
their ratio (`shift_factor`) and the ECE of each on both. Nothing here reads the test split,
SD-198 or the non-skin set.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from training import metrics  # noqa: E402
from training.eval_data import default_data_root, load_set  # noqa: E402
from training.familiarity import candidate_rules, candidate_scores  # noqa: E402
from training.features import PhotoSet, feature_predictor, features_of  # noqa: E402

log = logging.getLogger("shift_proxy")
TEMPERATURE_BOUNDS = (0.05, 20.0)


def score_table(
    scores: dict,
    views: dict[str, tuple[np.ndarray, ...]],
    labels: dict[str, np.ndarray],
    temperature: float,
    coverage: float,
) -> dict[str, dict]:
    """Candidate -> held-out measures, each with its own threshold at `coverage` of validation."""
    from sklearn.metrics import roc_auc_score

    correct = views["heldout"][0].argmax(axis=1) == labels["heldout"]
    is_val = np.r_[np.ones(len(labels["clean"])), np.zeros(len(labels["heldout"]))]
    rows = {}
    for name, familiarity, abstention, threshold in candidate_rules(
        scores, views, temperature, coverage
    ):
        answered = abstention["heldout"] >= threshold
        rows[name] = {
            "threshold": threshold,
            "heldout_coverage": float(answered.mean()),
            "heldout_answered_acc": float(correct[answered].mean()) if answered.any() else None,
            "heldout_auroc_rw": float(roc_auc_score(correct, abstention["heldout"])),
        }
        if familiarity is not None:
            both = np.concatenate([familiarity["clean"], familiarity["heldout"]])
            rows[name]["auroc_val_vs_heldout"] = float(roc_auc_score(is_val, both))
    return {name: rows[name] for name in [*scores, "confidence"]}  # the tables' order


def temperature_table(views: dict, labels: dict) -> dict:
    """T fitted on validation and on the held-out source, and each one's ECE on both sets."""
    fitted = {
        s: metrics.fit_temperature(views[s][0], labels[s], TEMPERATURE_BOUNDS)
        for s in ("clean", "heldout")
    }
    out = {
        "t_val": fitted["clean"],
        "t_heldout": fitted["heldout"],
        "shift_factor": fitted["heldout"] / fitted["clean"],
        "heldout_accuracy": float((views["heldout"][0].argmax(1) == labels["heldout"]).mean()),
        "val_accuracy": float((views["clean"][0].argmax(1) == labels["clean"]).mean()),
    }
    for fit_on, t in fitted.items():
        for s in ("clean", "heldout"):
            probs = metrics.softmax(views[s][0], t)
            key = (
                f"ece_{'val' if s == 'clean' else s}_at_t_{'val' if fit_on == 'clean' else fit_on}"
            )
            out[key] = metrics.expected_calibration_error(labels[s], probs)[0]
            out[key.replace("ece", "mean_top")] = float(probs.max(axis=1).mean())
    return out


def relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def main(args: argparse.Namespace) -> dict:
    predictor, card = feature_predictor(args.weights_dir / f"{args.model}.json")
    split = json.loads(args.split.read_text())
    classes, prep = list(card.classes), card.get_preprocessing()
    rows = {"train": split["splits"]["train"], "clean": split["splits"]["val"]}
    rows["heldout"] = split["heldout"]
    views, labels = {}, {}
    for name, set_rows in rows.items():
        image_set = load_set(name, args.data_root, set_rows, classes, prep)
        photo_set = PhotoSet(f"holdout-{name}", image_set.images, image_set.labels)
        views[name] = features_of(
            predictor, card, photo_set, "clean", args.seed, args.cache_dir, args.batch_size
        )
        labels[name] = image_set.labels
    train = views.pop("train")
    scores = candidate_scores(train, labels.pop("train"), len(classes))
    result = {
        "model": relative(args.weights_dir / f"{args.model}.json"),
        "split": relative(args.split),
        "weights_sha256": card.weights_sha256,
        "heldout_source": split.get("heldout_source"),
        "counts": {s: len(v) for s, v in labels.items()},
        "coverage": args.coverage,
        "temperature": temperature_table(views, labels),
        "scores": score_table(scores, views, labels, card.temperature, args.coverage),
        "command": " ".join(["python training/shift_proxy.py", *sys.argv[1:]]),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["temperature"], indent=1))
    columns = sorted({k for row in result["scores"].values() for k in row})
    print(f"\n{'score':<22}" + "".join(f"{c[:20]:>22}" for c in columns))
    for name, row in result["scores"].items():
        cells = "".join(f"{np.nan if row.get(c) is None else row[c]:>22.3f}" for c in columns)
        print(f"{name:<22}{cells}")
    return result


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    holdout = REPO / "runs" / "holdout"
    parser.add_argument("--model", default="clean", help="the proxy's card name")
    parser.add_argument("--weights-dir", type=Path, default=holdout / "weights")
    parser.add_argument("--split", type=Path, default=holdout / "split.json")
    parser.add_argument("--data-root", type=Path, default=default_data_root("train"))
    parser.add_argument("--cache-dir", type=Path, default=holdout / "features")
    parser.add_argument(
        "--out", type=Path, default=REPO / "weights" / "reports" / "shift_proxy.json"
    )
    parser.add_argument("--coverage", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main(get_args_parser().parse_args())
