"""Would a deep ensemble know better when it is wrong on SD-198? Scored, not shipped.

    python training/train.py --name clean --seeds 0 1 --lr 0.03 --out-dir runs/ens \
        --weights-dir runs/ens/weights                                   # ~15 min
    python training/ensemble_probe.py --cards weights/clean.json \
        runs/ens/clean/seed0/clean.json runs/ens/clean/seed1/clean.json

Each member's logits at its own validation temperature; the ensemble is the mean of the members'
probabilities (Lakshminarayanan et al. 2017). For every member and for the ensemble, on the test
split and on all 263 SD-198 rows: top-1, how well each uncertainty score ranks right answers above
wrong ones (AUROC of the top probability, of minus the entropy and, for the ensemble, of minus
the members' disagreement: the mutual information), the share answered and top-1 on the answered
photos when each score's threshold answers 90 % of validation, and the ECE. Thresholds and
temperatures come from validation alone. Prints a table; writes runs/ensemble_probe.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from training import metrics  # noqa: E402
from training.features import add_data_arguments, feature_predictor, load_photo_sets  # noqa: E402

SETS = ("val", "test", "shift_sd198")
COVERAGE = 0.90  # the shipped rule's validation coverage (training/familiarity.py)


def uncertainty_scores(probs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """float (M, N, C) members' probabilities -> the mean's top class (N,) and scores (N,),
    higher = more certain: "confidence" (the mean's top probability), "neg_entropy" and, with
    more than one member, "neg_mutual_info" (minus the entropy of the mean less the members'
    mean entropy: how much the members disagree)."""
    mean = probs.mean(axis=0)
    entropy = -(mean * np.log(np.clip(mean, 1e-12, None))).sum(axis=1)
    scores = {"confidence": mean.max(axis=1), "neg_entropy": -entropy}
    if len(probs) > 1:
        members = -(probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=2).mean(axis=0)
        scores["neg_mutual_info"] = members - entropy
    return mean.argmax(axis=1), scores


def score_rows(probs: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """probs[set] float (M, N, C) -> the module docstring's measures, flat."""
    _, val_scores = uncertainty_scores(probs["val"])
    row = {}
    for name in SETS[1:]:
        top, scores = uncertainty_scores(probs[name])
        right = top == labels[name]
        row[f"{name}_top1"] = float(right.mean())
        ece, _ = metrics.expected_calibration_error(labels[name], probs[name].mean(axis=0))
        row[f"{name}_ece"] = ece
        if len(probs[name]) > 1:  # where every member gives the same answer, and how right
            agree = (probs[name].argmax(axis=2) == top).all(axis=0)
            row[f"{name}_all_agree"] = float(agree.mean())
            row[f"{name}_top1_all_agree"] = float(right[agree].mean()) if agree.any() else np.nan
        for score, values in scores.items():
            threshold = np.quantile(val_scores[score], 1 - COVERAGE)
            answered = values >= threshold
            row[f"{name}_auroc_{score}"] = float(roc_auc_score(right, values))
            row[f"{name}_answered_{score}"] = float(answered.mean())
            row[f"{name}_top1_answered_{score}"] = (
                float(right[answered].mean()) if answered.any() else float("nan")
            )
    return row


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cards", type=Path, nargs="+", required=True, help="model cards")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ensemble_probe.json")
    add_data_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    split = args.split or args.weights_dir / "split.json"
    probs, labels = {}, {}
    for card_path in args.cards:
        predictor, card = feature_predictor(card_path)
        sets = load_photo_sets(
            args.data_root, args.shift_root, split, list(card.classes),
            card.get_preprocessing(), args.cache_dir,
        )  # fmt: skip
        logits = {n: predictor.predict_logits(sets[n].images, args.batch_size) for n in SETS}
        labels = {n: sets[n].labels for n in SETS}
        temperature = metrics.fit_temperature(logits["val"], labels["val"])
        probs[str(card_path)] = {n: metrics.softmax(z, temperature) for n, z in logits.items()}
    members = list(probs)
    table = {
        f"member {i}": score_rows({n: probs[m][n][None] for n in SETS}, labels)
        for i, m in enumerate(members)
    }
    table["ensemble"] = score_rows(
        {n: np.stack([probs[m][n] for m in members]) for n in SETS}, labels
    )
    print("members: " + ", ".join(f"{i} = {m}" for i, m in enumerate(members)))
    print(f"{'measure':<40}" + "".join(f"{name:>12}" for name in table))
    for key in table["ensemble"]:
        print(f"{key:<40}" + "".join(f"{table[n].get(key, float('nan')):>12.3f}" for n in table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"members": members, "table": table}, indent=2) + "\n")
    return table


if __name__ == "__main__":
    main(get_args_parser().parse_args())
