"""Judge familiarity scores and the temperature on photos from sources the models never saw.

    python training/source_holdout.py --source azh --out runs/holdout-azh/split.json
    python training/train.py --name clean --seeds 0 --lr 0.03 --split-file runs/holdout-azh/split.json \
        --out-dir runs/holdout-azh --weights-dir runs/holdout-azh/weights     # one proxy, ~7 min
    ...                                                    # the same for every source in SOURCES
    python training/shift_proxy.py                         # -> weights/reports/shift_proxy.json

A proxy is the shipped recipe trained without one source (training/source_holdout.py). Its
statistics are fitted on its own training split and its percentiles and thresholds on its own
validation split, exactly as training/familiarity.py does for a shipped model; then its held-out
source is scored as a new clinic's photos. SOURCES lists every source that can be held out
(each of its classes keeps another source) with at least 80 training and validation photos.

Per proxy and per candidate score (training/familiarity.py's, with the threshold that answers
90 % of the proxy's validation):

  heldout_auroc_rw       how well the abstention score ranks right answers above wrong ones on
                         the held-out source (SD-198's right-vs-wrong AUROC, without SD-198)
  heldout_coverage, heldout_answered_acc
  auroc_val_vs_heldout   how well the familiarity alone ranks validation above held-out photos

and for the temperature: T fitted on the proxy's validation, T fitted on its held-out source,
their ratio and the ECE of each on both. The file's top-level `scores` are the means over the
proxies (read by training/familiarity.py), and its `temperature.shift_factor` is one factor
fitted on all held-out sources at once, each at its own proxy's validation T and each source
weighted equally (read by training/evaluate.py). Nothing here reads the test split, SD-198 or
the non-skin set.
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
# Every source whose classes each keep another source, with >= 80 training and validation
# photos (medetec, 32 Ulcer photos, is too few to fit a temperature on). Fixed before any of
# the last four was trained: training/README.md, "A content-shift stand-in".
SOURCES = ("skinscanner", "rfacne", "birajadash", "azh", "fuseg", "rfurticaria")


def score_table(
    scores: dict,
    views: dict[str, tuple[np.ndarray, ...]],
    labels: dict[str, np.ndarray],
    temperature: float,
    coverage: float,
) -> dict[str, dict]:
    """Candidate -> held-out measures, each with its own threshold at `coverage` of validation.

    The right-vs-wrong AUROC is None where the held-out photos are all right or all wrong."""
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
            "heldout_auroc_rw": float(roc_auc_score(correct, abstention["heldout"]))
            if 0 < correct.sum() < len(correct)
            else None,
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


def fit_shift_factor(parts: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """One factor f minimising the mean over sources of each source's mean NLL of
    softmax(logits / f): `parts` holds (held-out logits already divided by their proxy's
    validation T, labels), one pair per source, so every source weighs the same whatever its
    size."""
    return metrics.fit_shared_temperature(parts, TEMPERATURE_BOUNDS)


def pool(proxies: list[dict], heldout: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """The file's top level: the pooled shift factor with each source's ECE at it, and each
    candidate's measures averaged over the proxies (None where no proxy had a value)."""
    parts = [
        (logits / p["temperature"]["t_val"], y)
        for p, (logits, y) in zip(proxies, heldout, strict=True)
    ]
    factor = fit_shift_factor(parts)
    per_source = {}
    for p, (z, y) in zip(proxies, parts, strict=True):
        probs = metrics.softmax(z, factor)
        per_source[p["heldout_source"]] = {
            "shift_factor": p["temperature"]["shift_factor"],
            "heldout_accuracy": p["temperature"]["heldout_accuracy"],
            "ece_heldout_at_pooled": metrics.expected_calibration_error(y, probs)[0],
            "mean_top_heldout_at_pooled": float(probs.max(axis=1).mean()),
        }
    names = proxies[0]["scores"]
    scores = {}
    for name in names:
        keys = dict.fromkeys(k for p in proxies for k in p["scores"][name] if k != "threshold")
        scores[name] = {}
        for key in keys:
            values = [p["scores"][name].get(key) for p in proxies]
            values = [v for v in values if v is not None]
            scores[name][key] = float(np.mean(values)) if values else None
    return {
        "temperature": {
            "shift_factor": factor,
            "fitted_on": "every proxy's held-out source at its own validation T, each source "
            "weighted equally",
            "sources": per_source,
        },
        "scores": scores,
    }


def relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def score_proxy(run_dir: Path, args: argparse.Namespace) -> tuple[dict, tuple]:
    """One proxy's tables, and its held-out (logits, labels) for the pooled factor."""
    card_path = run_dir / "weights" / f"{args.model}.json"
    split_path = run_dir / "split.json"
    predictor, card = feature_predictor(card_path)
    split = json.loads(split_path.read_text())
    classes, prep = list(card.classes), card.get_preprocessing()
    rows = {"train": split["splits"]["train"], "clean": split["splits"]["val"]}
    rows["heldout"] = split["heldout"]
    views, labels = {}, {}
    for name, set_rows in rows.items():
        image_set = load_set(name, args.data_root, set_rows, classes, prep)
        photo_set = PhotoSet(f"holdout-{name}", image_set.images, image_set.labels)
        views[name] = features_of(
            predictor, card, photo_set, "clean", args.seed, run_dir / "features", args.batch_size
        )
        labels[name] = image_set.labels
    train = views.pop("train")
    scores = candidate_scores(train, labels.pop("train"), len(classes))
    result = {
        "model": relative(card_path),
        "split": relative(split_path),
        "weights_sha256": card.weights_sha256,
        "heldout_source": split.get("heldout_source"),
        "counts": {s: len(v) for s, v in labels.items()},
        "temperature": temperature_table(views, labels),
        "scores": score_table(scores, views, labels, card.temperature, args.coverage),
    }
    return result, (views["heldout"][0], labels["heldout"])


def print_table(title: str, scores: dict) -> None:
    print(f"\n{title}")
    columns = sorted({k for row in scores.values() for k in row})
    print(f"{'score':<22}" + "".join(f"{c[:20]:>22}" for c in columns))
    for name, row in scores.items():
        cells = "".join(f"{np.nan if row.get(c) is None else row[c]:>22.3f}" for c in columns)
        print(f"{name:<22}{cells}")


def missing_proxies(run_dirs: list[Path], model: str) -> list[str]:
    """The commands that would train each proxy folder that lacks its split or its card."""
    commands = []
    for run_dir in run_dirs:
        if (run_dir / "split.json").is_file() and (run_dir / "weights" / f"{model}.json").is_file():
            continue
        source = run_dir.name.removeprefix("holdout-")
        folder = relative(run_dir)
        commands += [
            f"python training/source_holdout.py --source {source} --out {folder}/split.json",
            f"python training/train.py --name {model} --seeds 0 --lr 0.03 --split-file "
            f"{folder}/split.json --out-dir {folder} --weights-dir {folder}/weights",
        ]
    return commands


def main(args: argparse.Namespace) -> dict:
    commands = missing_proxies(args.proxies, args.model)
    if commands:
        raise SystemExit(
            "some proxies are not trained yet (training/README.md, 'A content-shift "
            "stand-in'); run:\n  " + "\n  ".join(commands)
        )
    proxies, heldout = [], []
    for run_dir in args.proxies:
        result, logits_labels = score_proxy(run_dir, args)
        proxies.append(result)
        heldout.append(logits_labels)
        print(f"\n{result['heldout_source']}: " + json.dumps(result["temperature"], indent=1))
        print_table(f"{result['heldout_source']} held out", result["scores"])
    result = {
        "heldout_source": ", ".join(p["heldout_source"] for p in proxies),
        "coverage": args.coverage,
        **pool(proxies, heldout),
        "proxies": proxies,
        "command": " ".join(["python training/shift_proxy.py", *sys.argv[1:]]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\npooled: " + json.dumps(result["temperature"], indent=1))
    print_table("mean over the proxies", result["scores"])
    return result


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--proxies",
        type=Path,
        nargs="+",
        default=[REPO / "runs" / f"holdout-{s}" for s in SOURCES],
        help="proxy run folders, each with split.json, weights/<model>.json and a features/ cache",
    )
    parser.add_argument("--model", default="clean", help="the proxies' card name")
    parser.add_argument("--data-root", type=Path, default=default_data_root("train"))
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
