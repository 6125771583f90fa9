"""How good is the epoch-selection rule? Scores `--keep` rules on held-out halves of validation.

Each seed's run folder holds every epoch's validation logits (`val_logits_e<k>.npz`, written by
train.py after every epoch). A rule picks an epoch on a random half of the validation *groups*;
the pick is scored, as balanced accuracy, on the other half. Averaged over many random halves,
both directions and every seed, that is the rule's expected score on photos it did not choose
on, which the full-validation score of the `best` rule overstates by construction.

    python training/experiments/keep_study.py runs/exp/keep/clean runs/exp/keep/robust --splits 200

Rules: best (every epoch; `--keep best`), last (`--keep last`, the default since this study),
best-full (phase-2 epochs only). Results: training/experiments/README.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.labels import NUM_CLASSES, class_index  # noqa: E402
from training import metrics  # noqa: E402
from training.eval_data import read_split  # noqa: E402


def load_epochs(seed_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(int64 (N,) labels, int64 (E, N) predicted class per epoch) from val_logits_e<k>.npz."""
    files = sorted(seed_dir.glob("val_logits_e*.npz"), key=lambda p: int(p.stem.split("_e")[1]))
    if not files:
        raise SystemExit(
            f"{seed_dir}: no val_logits_e<k>.npz (train.py writes one per epoch; rerun the seed)"
        )
    loaded = [np.load(f) for f in files]
    return loaded[0]["labels"], np.stack([f["logits"].argmax(1) for f in loaded])


def rule_epochs(n_epochs: int, epochs_frozen: int) -> dict[str, list[int]]:
    """Rule name -> the epochs (0-based) it chooses among."""
    return {
        "best": list(range(n_epochs)),
        "last": [n_epochs - 1],
        "best-full": list(range(epochs_frozen, n_epochs)),
    }


def held_out_scores(
    labels: np.ndarray,
    predictions: np.ndarray,
    groups: np.ndarray,
    rules: dict[str, list[int]],
    rng: np.random.Generator,
    n_splits: int,
) -> dict[str, float]:
    """Rule -> mean balanced accuracy on the half it did not choose on."""
    unique = np.unique(groups)
    totals = dict.fromkeys(rules, 0.0)
    for _ in range(n_splits):
        half = np.isin(groups, rng.permutation(unique)[: len(unique) // 2])
        for choose, score in ((half, ~half), (~half, half)):
            chosen = [
                metrics.balanced_accuracy(labels[choose], p[choose], NUM_CLASSES)
                for p in predictions
            ]
            for name, epochs in rules.items():
                pick = max(epochs, key=lambda e: (chosen[e], -e))  # ties: the earliest, as train.py
                totals[name] += metrics.balanced_accuracy(
                    labels[score], predictions[pick][score], NUM_CLASSES
                )
    return {name: total / (2 * n_splits) for name, total in totals.items()}


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    split = read_split(args.split)
    groups = np.array([r["group"] for r in split["val"]])
    split_labels = np.array([class_index(r["label"]) for r in split["val"]])
    out = {}
    for model_dir in args.runs:
        seed_dirs = sorted(model_dir.glob("seed*"))
        if not seed_dirs:
            raise SystemExit(f"{model_dir}: no seed<k> folders")
        per_seed = []
        for seed_dir in seed_dirs:
            labels, predictions = load_epochs(seed_dir)
            if not np.array_equal(labels, split_labels):  # same images, same order
                raise SystemExit(f"{seed_dir}: its validation labels do not match {args.split}")
            rules = rule_epochs(len(predictions), args.epochs_frozen)
            rng = np.random.default_rng(args.seed)  # the same halves for every seed and model
            per_seed.append(held_out_scores(labels, predictions, groups, rules, rng, args.splits))
        out[model_dir.name] = {r: float(np.mean([s[r] for s in per_seed])) for r in per_seed[0]}
        cells = "  ".join(f"{r} {100 * v:.2f}" for r, v in out[model_dir.name].items())
        print(f"{model_dir.name} ({len(per_seed)} seeds, {args.splits} halvings x 2): {cells}")
    return out


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders <out-dir>/<name>")
    parser.add_argument("--split", type=Path, default=REPO / "weights" / "split.json")
    parser.add_argument("--splits", type=int, default=200, help="random halvings of validation")
    parser.add_argument("--epochs-frozen", type=int, default=5, help="phase-1 epochs of the runs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the halvings")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
