"""Fit each model's familiarity statistics and abstention threshold; write them beside its weights.

    python training/familiarity.py --models clean noise-trained robust

For each model: penultimate features of the training split (weights/split.json) give the class
means and the shared covariance; the validation split gives the reference distributions that
make scores into percentiles, and the abstention threshold. Nothing else is looked at: the test
split, SD-198 and the non-skin set are only scored afterwards, by training/abstention_report.py.

Choosing the score (`--compare`, printed and written to runs/familiarity/<model>.json): each
candidate raw score is judged on validation alone, against corrupted validation photos standing
in for the unfamiliar (5% salt-and-pepper and the 11x11 blur of training/evaluate.py), by
  auroc_sp5 / auroc_blur11  how well the score alone ranks clean above corrupted photos
  catch_sp5 / catch_blur11  the flip-catch rate of the full abstention rule: of the validation
                            photos whose answer the corruption changes, the share it abstains on
  answered_acc              validation accuracy on the answered photos (clean)
  auroc_rw                  how well the abstention score ranks right answers above wrong ones
                            (clean validation)
  heldout_auroc_rw          the same AUROC on photos from a source the model never saw, read
                            from the held-out-source proxies (weights/reports/shift_proxy.json,
                            training/shift_proxy.py): the one content-shift measure, since
                            validation photos come from the training sources
with the threshold set as below. The rule that abstains on a low confidence alone is listed too.
The criterion is the mean of catch_sp5, catch_blur11, auroc_rw and heldout_auroc_rw.

Both views are fitted on the training photos as the model saw them in training where its
training corruption touched every photo (noise-trained's salt-and-pepper, one seeded draw per
photo; training/features.py training_view_of), so noisy photos are familiar to it; on the clean
photos otherwise (clean, and robust, which saw two thirds of its photos clean).

Threshold: the abstention score is min(familiarity, confidence percentile), both validation
percentiles; the model abstains below `threshold`, the largest value on a 1/1000 grid that still
answers >= --coverage (90 %) of the clean validation photos.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.checkpoint import ModelCard, save_familiarity, write_card  # noqa: E402
from dermcore.familiarity import (  # noqa: E402
    FamiliarityStats,
    abstention_score,
    fit_mahalanobis,
    percentile,
    raw_mahalanobis_score,
)
from dermcore.models import get_arch  # noqa: E402
from training import metrics  # noqa: E402
from training.features import (  # noqa: E402
    SELECTION_CONDITIONS,
    add_data_arguments,
    feature_predictor,
    features_of,
    fitted_corruption,
    photo_sets_for,
    training_view_of,
)

log = logging.getLogger("familiarity")

# (logits (N, C), penultimate features (N, D), texture statistics (N, E)) -> raw score (N,)
ScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
KNN_K = 10
# candidates FamiliarityStats implements -> its views; the others are listed for comparison
IMPLEMENTED = {
    "mahalanobis": ("content",),
    "texture": ("texture",),
    "mahalanobis+texture": ("content", "texture"),
}
SELECTION_KEYS = ("catch_sp5", "catch_blur11", "auroc_rw", "heldout_auroc_rw")


def selection_value(row: dict) -> float:
    """The validation criterion: mean of the flip-catch rates and the right-vs-wrong AUROC."""
    return float(np.mean([row[k] for k in SELECTION_KEYS]))


def candidate_scores(
    train: tuple[np.ndarray, np.ndarray, np.ndarray], train_labels: np.ndarray, num_classes: int
) -> dict[str, list[ScoreFn]]:
    """Candidate name -> raw scores (higher = more familiar) fitted on the training split; a
    candidate with two scores takes the smaller of their validation percentiles."""
    t = torch.from_numpy
    _, train_features, train_texture = train
    content = [t(a) for a in fit_mahalanobis(train_features, train_labels, num_classes)]
    texture = [t(a) for a in fit_mahalanobis(train_texture, train_labels, num_classes)]
    bank = torch.nn.functional.normalize(t(train_features).float(), dim=1)

    def mahalanobis(logits: np.ndarray, features: np.ndarray, tex: np.ndarray) -> np.ndarray:
        return raw_mahalanobis_score(t(features), *content).numpy()

    def texture_mahalanobis(logits: np.ndarray, features: np.ndarray, tex: np.ndarray):
        return raw_mahalanobis_score(t(tex), *texture).numpy()

    def knn(logits: np.ndarray, features: np.ndarray, tex: np.ndarray) -> np.ndarray:
        # cosine similarity to the k-th nearest training photo (Sun et al. 2022)
        query = torch.nn.functional.normalize(t(features).float(), dim=1)
        return (query @ bank.T).topk(KNN_K, dim=1).values[:, -1].numpy()

    def energy(logits: np.ndarray, features: np.ndarray, tex: np.ndarray) -> np.ndarray:
        return torch.logsumexp(t(logits).float(), dim=1).numpy()  # Liu et al. 2020

    return {
        "mahalanobis": [mahalanobis],
        f"knn{KNN_K}": [knn],
        "energy": [energy],
        "texture": [texture_mahalanobis],
        "mahalanobis+texture": [mahalanobis, texture_mahalanobis],
        f"knn{KNN_K}+texture": [knn, texture_mahalanobis],
        "energy+texture": [energy, texture_mahalanobis],
    }


def familiarity_of(
    fns: list[ScoreFn], views: dict[str, tuple[np.ndarray, ...]]
) -> dict[str, np.ndarray]:
    """Condition -> familiarity (validation percentile) of a candidate, as FamiliarityStats
    computes it: each raw score as a percentile of clean validation, their minimum, and that as
    a percentile of clean validation again."""
    combined = {c: None for c in views}
    for fn in fns:
        raw = {c: torch.from_numpy(fn(*v)).float() for c, v in views.items()}
        ref = torch.sort(raw["clean"]).values
        for c in views:
            pct = percentile(ref, raw[c])
            combined[c] = pct if combined[c] is None else np.fmin(combined[c], pct)
    ref = torch.sort(torch.from_numpy(combined["clean"]).float()).values
    return {c: percentile(ref, torch.from_numpy(v)) for c, v in combined.items()}


def choose_threshold(score: np.ndarray, coverage: float) -> float:
    """The largest threshold t on a 1/1000 grid with mean(score >= t) >= coverage."""
    grid = np.arange(0, 1001) / 1000
    answered = (score[None, :] >= grid[:, None]).mean(axis=1)
    return float(grid[answered >= coverage].max())


def flip_catch(clean_pred: np.ndarray, pred: np.ndarray, abstain: np.ndarray) -> float:
    """Of the photos whose answer the corruption changes, the share the model abstains on."""
    flipped = pred != clean_pred
    return float(abstain[flipped].mean()) if flipped.any() else float("nan")


def candidate_rules(
    scores: dict[str, list[ScoreFn]],
    views: dict[str, tuple[np.ndarray, ...]],
    temperature: float,
    coverage: float,
) -> Iterator[tuple[str, dict | None, dict, float]]:
    """Per candidate, then 'confidence' alone: (name, familiarity per view (None for
    'confidence'), abstention score per view, threshold). Views map a name to Predictor.embed
    outputs; "clean" is the validation reference. The threshold is the largest that answers
    `coverage` of "clean"; photos that pass the familiarity rank by confidence (the decisions
    of the plain minimum, dermcore.familiarity.abstention_score)."""
    confidence = {c: metrics.softmax(v[0], temperature).max(axis=1) for c, v in views.items()}
    conf_ref = torch.sort(torch.from_numpy(confidence["clean"]).float()).values
    conf_pct = {c: percentile(conf_ref, torch.from_numpy(v)) for c, v in confidence.items()}
    yield "confidence", None, conf_pct, choose_threshold(conf_pct["clean"], coverage)
    for name, fns in scores.items():
        familiarity = familiarity_of(fns, views)
        plain = abstention_score(familiarity["clean"], conf_pct["clean"])
        threshold = choose_threshold(plain, coverage)
        abstention = {c: abstention_score(familiarity[c], conf_pct[c], threshold) for c in views}
        yield name, familiarity, abstention, threshold


def compare(
    scores: dict[str, list[ScoreFn]],
    val: dict[str, tuple[np.ndarray, ...]],
    labels: np.ndarray,
    temperature: float,
    coverage: float,
) -> dict[str, dict]:
    """The validation table of the module docstring, one row per candidate (and 'confidence')."""
    from sklearn.metrics import roc_auc_score

    clean_pred = val["clean"][0].argmax(axis=1)
    correct = clean_pred == labels
    is_clean = np.r_[np.ones(len(labels)), np.zeros(len(labels))]
    rows = {}
    for name, familiarity, abstention, threshold in candidate_rules(
        scores, val, temperature, coverage
    ):
        answered = abstention["clean"] >= threshold
        row = {
            "threshold": threshold,
            "coverage": float(answered.mean()),
            "answered_acc": float(correct[answered].mean()),
            "auroc_rw": float(roc_auc_score(correct, abstention["clean"])),
        }
        for c in val:
            if c == "clean":
                continue
            pred = val[c][0].argmax(axis=1)
            row[f"catch_{c}"] = flip_catch(clean_pred, pred, abstention[c] < threshold)
            if familiarity is not None:
                both = np.concatenate([familiarity["clean"], familiarity[c]])
                row[f"auroc_{c}"] = float(roc_auc_score(is_clean, both))
        rows[name] = row
    return {name: rows[name] for name in [*scores, "confidence"]}  # the tables' order


def non_skin_refusals(
    scores: dict[str, list[ScoreFn]],
    val_clean: tuple[np.ndarray, ...],
    non_skin: tuple[np.ndarray, ...],
    temperature: float,
    coverage: float,
) -> dict[str, float]:
    """Candidate (and 'confidence') -> the share of the non-skin images its rule refuses, at
    its own validation threshold. A report set: printed for the record with --non-skin-record
    after the choice, never read by it."""
    rules = candidate_rules(
        scores, {"clean": val_clean, "non_skin": non_skin}, temperature, coverage
    )
    return {name: float((score["non_skin"] < t).mean()) for name, _, score, t in rules}


def fit_model(card_path: Path, args: argparse.Namespace) -> dict:
    predictor, card = feature_predictor(card_path)
    sets = photo_sets_for(card, args)

    def features(set_name: str, condition: str) -> tuple[np.ndarray, np.ndarray]:
        return features_of(
            predictor, card, sets[set_name], condition, args.seed, args.cache_dir, args.batch_size
        )

    train = training_view_of(
        predictor, card, sets["train"], args.seed, args.cache_dir, args.batch_size
    )
    val = {c: features("val", c) for c in SELECTION_CONDITIONS}
    labels = sets["val"].labels
    scores = candidate_scores(train, sets["train"].labels, len(card.classes))
    table = compare(scores, val, labels, card.temperature, args.coverage)
    proxy = read_proxy(args.shift_proxy)
    for name, row in table.items():
        row["heldout_auroc_rw"] = proxy[name]["heldout_auroc_rw"]
        row["criterion"] = selection_value(row) if "catch_sp5" in row else float("nan")
    _print_table(card.name, table)
    chosen = max(IMPLEMENTED, key=lambda name: table[name]["criterion"])
    log.info("%s: chosen on validation: %s", card.name, chosen)
    if args.non_skin_record:
        refused = non_skin_refusals(
            scores, val["clean"], features("non_skin", "clean"), card.temperature, args.coverage
        )
        print(f"{card.name}: non-skin images refused, for the record (not used to choose)")
        for name, share in refused.items():
            print(f"{name:<22}{100 * share:>6.1f} %")
    out = REPO / "runs" / "familiarity" / f"{card.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"chosen": chosen, "table": table}, indent=2) + "\n")
    if args.compare_only:
        return table

    val_logits, *val_views = val["clean"]
    confidence = metrics.softmax(val_logits, card.temperature).max(axis=1)
    stats = FamiliarityStats.fit(
        tuple(train[1:]),
        sets["train"].labels,
        tuple(val_views),
        confidence,
        len(card.classes),
        get_arch(card.arch).texture_layer,
        IMPLEMENTED[chosen],
    )
    familiarity = stats.familiarity(*(torch.from_numpy(v) for v in val_views))
    score = abstention_score(familiarity, stats.confidence_percentile(confidence))
    threshold = choose_threshold(score, args.coverage)
    save_familiarity(
        stats,
        card,
        card_path,
        fitted_on=f"training split, {train_corruption(card)}, "
        f"{len(train[0])} images (means, covariances); "
        f"validation split, clean, {len(val_logits)} images (percentiles)",
        texture_layer=stats.texture_layer,
        # the training corruption the statistics' photos carry ("none": clean photos)
        fitted_corruption=fitted_corruption(card),
        views=list(stats.views),
        shrinkage="Ledoit-Wolf",
        chosen_on="validation: the highest mean of "
        + ", ".join(SELECTION_KEYS)
        + " among "
        + ", ".join(IMPLEMENTED),
        validation_table=table,
        command=_command(args),
    )
    card.abstention = _abstention_fields(card, threshold, stats, score, args)
    write_card(card, card_path)
    log.info(
        "%s: threshold %.3f answers %.1f%% of validation",
        card.name,
        threshold,
        100 * (score >= threshold).mean(),
    )
    return table


def read_proxy(path: Path) -> dict[str, dict]:
    """Candidate -> its held-out-source row (training/shift_proxy.py's `scores`)."""
    if not path.is_file():
        raise SystemExit(
            f"{path} is missing: run training/shift_proxy.py first (training/README.md, "
            "'A content-shift stand-in')."
        )
    return json.loads(path.read_text())["scores"]


def train_corruption(card: ModelCard) -> str:
    mode = fitted_corruption(card)
    if mode == "none":
        return "clean photos"
    return f"as the model saw them in training (training corruption {mode!r}, one draw a photo)"


def _abstention_fields(
    card: ModelCard, threshold: float, stats: FamiliarityStats, score: np.ndarray, args
) -> dict:
    # the confidence at the threshold's percentile: the rule for a model without statistics
    index = min(int(np.ceil(threshold * len(stats.val_confidence))), len(stats.val_confidence) - 1)
    return {
        "threshold": threshold,
        "confidence_min": float(stats.val_confidence[index]),
        "score": "min(familiarity, confidence percentile), both percentiles of the validation split",
        "rule": "abstain when the score is below the threshold",
        "chosen_on": f"validation split, clean, {len(score)} images: the largest threshold on a "
        f"1/1000 grid that answers >= {args.coverage:.0%} of them",
        "val_coverage": float((score >= threshold).mean()),
        "temperature": card.temperature,
    }


def _print_table(name: str, table: dict[str, dict]) -> None:
    columns = sorted({k for row in table.values() for k in row})
    print(f"\n{name}: validation only\n{'score':<14}" + "".join(f"{c:>14}" for c in columns))
    for method, row in table.items():
        cells = "".join(f"{row.get(c, float('nan')):>14.3f}" for c in columns)
        print(f"{method:<14}{cells}")


def _command(args: argparse.Namespace) -> str:
    return "python training/familiarity.py --models " + " ".join(args.models)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fit familiarity statistics and abstention thresholds on train/validation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=["clean", "noise-trained", "robust"])
    parser.add_argument(
        "--coverage", type=float, default=0.9, help="share of validation photos to answer"
    )
    parser.add_argument(
        "--compare-only", action="store_true", help="print the comparison, write nothing"
    )
    parser.add_argument(
        "--non-skin-record",
        action="store_true",
        help="after the choice, print the share of non-skin images each candidate refuses",
    )
    parser.add_argument(
        "--shift-proxy",
        type=Path,
        default=REPO / "weights" / "reports" / "shift_proxy.json",
        help="the held-out-source proxies' scores (training/shift_proxy.py)",
    )
    add_data_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> dict[str, dict]:
    return {name: fit_model(args.weights_dir / f"{name}.json", args) for name in args.models}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main(get_args_parser().parse_args())
