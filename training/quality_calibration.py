"""Fit and validate the photo-quality reading (dermcore/quality.py) on corrupted test photos.

    PYTHONPATH=. python training/quality_calibration.py      # writes weights/reports/quality.json

The test photos of weights/split.json are decoded once to the model input resolution (224 px) and
split by a seeded shuffle into two halves of photos. Every photo is corrupted with known settings,
one family at a time, with dermcore.corruptions' own functions, at the report sweeps' levels:

    noise     salt-and-pepper 0, 0.5, 1, 2, 3, 4, 5 % (black:white 3:1)
    blur      Gaussian kernel 1 (off), 3, 5, 7, 9, 11
    jpeg      no re-encode, quality 90, 70, 50, 30, 10
    exposure  factor 0.5 (under), 1, 2 (over); 0.7 and 1.4 (half a stop) are read but not fitted

Each family's score (a polynomial of its measures) is fitted as an ordinal (proportional-odds)
logistic regression of the level, and each threshold between two neighbouring levels is then put
where it misreads the fewest photos; both on the FIRST half of the photos only. The validation table is measured on the SECOND half: per family and level, the share of
photos whose estimate lands on the right level and within one level, the full confusion counts,
and how often photos damaged in another family, or half-stop exposures, read as damaged here.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

# The imports below need the sys.path line above:
# ruff: noqa: E402
from dermcore import corruptions
from dermcore.preprocessing import Preprocessing
from dermcore.quality import FAMILIES, FamilyCalibration, measure_quality, polynomial_terms
from training.eval_data import default_data_root, load_set, read_split
from training.eval_report import write_json

log = logging.getLogger("quality_calibration")


@dataclass(frozen=True)
class FamilyPlan:
    """How one family is corrupted, which measures its score reads, and its levels."""

    levels: tuple[float, ...]  # fitted severities, in increasing score order
    clean_level: float
    features: tuple[str, ...]
    degree: int
    corrupt: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    extra_levels: tuple[float, ...] = ()  # read and reported, not fitted


def _noise(image, density, rng):
    return corruptions.salt_and_pepper(image, density, 0.75, rng=rng)


def _blur(image, kernel, rng):
    return corruptions.gaussian_blur(image, int(kernel))


def _jpeg(image, quality, rng):
    return image.copy() if quality == 100 else corruptions.jpeg_compression(image, int(quality))


def _exposure(image, factor, rng):
    return corruptions.exposure(image, factor)


BLUR_FEATURES = (*(f"blur_band{i}" for i in range(6)), *(f"blur_tile{i}" for i in range(4)))
PLANS: dict[str, FamilyPlan] = {
    "noise": FamilyPlan(
        (0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05), 0.0, ("impulse_share",), 1, _noise
    ),
    # Degree 2: how much fine detail a sharp photo has depends on its coarse content, and the
    # pairwise products let the score learn that (mean right-level share on the held-out half:
    # six bands, degree 1, 0.74; degree 2, 0.85; with the tile ratios, 0.87).
    "blur": FamilyPlan((1, 3, 5, 7, 9, 11), 1, BLUR_FEATURES, 2, _blur),
    # quality 100 stands for "no re-encode", as in the reports' sweeps. The finest band's absolute
    # energy helps: JPEG's quantisation steps are absolute, so it erases faint detail first
    # (0.70 -> 0.83 mean right-level share when tried; as a contrast-free ratio it did not help).
    "jpeg": FamilyPlan(
        (100, 90, 70, 50, 30, 10), 100, ("blockiness", "grid_blockiness", "blur_band0"), 2, _jpeg
    ),
    "exposure": FamilyPlan(
        (0.5, 1.0, 2.0),
        1.0,
        ("log2_mean_luminance", "log2_bright_luminance", "highlights_clipped"),
        2,
        _exposure,
        extra_levels=(0.7, 1.4),
    ),
}


def measure_family(
    images: np.ndarray, family: str, level: float, seed: int
) -> dict[str, np.ndarray]:
    """Corrupt every image at one level and measure it: feature name -> float64 (N,)."""
    plan = PLANS[family]
    rows = []
    for index, image in enumerate(images):
        rng = np.random.default_rng([seed, FAMILIES.index(family), int(level * 1000), index])
        rows.append(measure_quality(plan.corrupt(image, level, rng)).features())
    return {name: np.array([row[name] for row in rows]) for name in rows[0]}


def fit_family(family: str, measured: dict[float, dict[str, np.ndarray]]) -> FamilyCalibration:
    """One family's score: an ordinal (proportional-odds) logistic regression of the level index
    on the polynomial terms of its measures, P(level <= k) = sigmoid(cut_k - score); then cuts."""
    plan = PLANS[family]
    x = np.concatenate([_matrix(measured[level], plan) for level in plan.levels])
    target = np.concatenate(
        [np.full(len(measured[level][plan.features[0]]), i) for i, level in enumerate(plan.levels)]
    )
    weights, bias, _ = fit_ordinal(x, target, len(plan.levels), L2_PENALTY, family)
    scores = [_matrix(measured[level], plan) @ weights + bias for level in plan.levels]
    # The model's own cuts share one logistic slope, which misplaces them where levels are unevenly
    # spaced (noise: 0.5% steps, then 1%); each cut is instead placed where it misreads the fewest
    # fitted photos of its two neighbouring levels.
    cuts = np.maximum.accumulate(
        [_best_cut(lower, upper) for lower, upper in zip(scores, scores[1:], strict=False)]
    )
    return FamilyCalibration(
        family=family,
        features=plan.features,
        degree=plan.degree,
        weights=(*(float(w) for w in weights), float(bias)),
        levels=tuple(float(v) for v in plan.levels),
        thresholds=tuple(float(c) for c in cuts),
        clean_level=float(plan.clean_level),
    )


# On standardised terms. Tried on the blur fit (bands and tiles, degree 2), mean right-level
# share on the held-out half: 0.01 -> 0.86, 0.003 -> 0.87, 0.001 -> 0.87, 0.0003 -> 0.87.
L2_PENALTY = 1e-3


def fit_ordinal(
    x: np.ndarray, target: np.ndarray, n_levels: int, l2: float, name: str = ""
) -> tuple[np.ndarray, float, np.ndarray]:
    """float (N, T) terms, int (N,) level indices -> (weights (T,), bias, cuts (n_levels - 1,))
    maximising the proportional-odds likelihood with an L2 penalty on the standardised weights.
    Cuts are c0 + cumsum(exp(d)), so they always increase; the standardisation is folded back
    into the returned weights and bias, so score = x @ weights + bias on raw terms."""
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    n, t = z.shape
    rows = np.arange(n)

    def unpack(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return p[:t], p[t] + np.concatenate([[0.0], np.cumsum(np.exp(p[t + 1 :]))])

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        w, cuts = unpack(p)
        s = z @ w
        cdf = np.c_[np.zeros(n), expit(cuts[None, :] - s[:, None]), np.ones(n)]  # (N, K + 1)
        density = cdf * (1 - cdf)
        prob = np.maximum(cdf[rows, target + 1] - cdf[rows, target], 1e-12)
        f_upper, f_lower = density[rows, target + 1], density[rows, target]
        grad_score = (f_upper - f_lower) / prob  # d loss / d score, (N,)
        grad_cuts = np.zeros(n_levels - 1)
        np.add.at(
            grad_cuts, target[target < n_levels - 1], -(f_upper / prob)[target < n_levels - 1]
        )
        np.add.at(grad_cuts, target[target > 0] - 1, (f_lower / prob)[target > 0])
        # cut j = c0 + sum_{i < j} exp(d_i), so d loss / d d_i = exp(d_i) * sum_{j > i} grad_cuts[j]
        tail = np.cumsum(grad_cuts[::-1])[::-1]
        grad = np.concatenate(
            [z.T @ grad_score + 2 * l2 * w, [grad_cuts.sum()], np.exp(p[t + 1 :]) * tail[1:]]
        )
        return float(-np.log(prob).sum() + l2 * w @ w), grad

    start = np.zeros(t + n_levels - 1)
    result = minimize(objective, start, jac=True, method="L-BFGS-B", options={"maxiter": 20000})
    if not result.success:
        # seen on the one-feature noise fit, whose levels barely overlap; it only sets the
        # score's direction there, and fit_family places the cuts itself
        log.info("%s: the ordinal fit stopped early (%s)", name, result.message)
    w, cuts = unpack(result.x)
    return w / scale, float(-(mean / scale) @ w), cuts


def _best_cut(lower: np.ndarray, upper: np.ndarray) -> float:
    """The cut with the fewest errors (lower >= cut, upper < cut) between two levels' scores,
    halfway between neighbouring candidate scores so no fitted photo sits on it."""
    candidates = np.unique(np.concatenate([lower, upper]))
    cuts = (candidates[:-1] + candidates[1:]) / 2 if len(candidates) > 1 else candidates
    errors = [(lower >= cut).sum() + (upper < cut).sum() for cut in cuts]
    return float(cuts[int(np.argmin(errors))])


def _matrix(features: dict[str, np.ndarray], plan: FamilyPlan) -> np.ndarray:
    return polynomial_terms(
        np.stack([features[name] for name in plan.features], axis=1), plan.degree
    )


def validate_family(
    calibration: FamilyCalibration,
    measured: dict[float, dict[str, np.ndarray]],
    levels: tuple[float, ...],
) -> list[dict]:
    """Per true level: images, share on the right level, within one level, estimated counts."""
    rows = []
    for level in levels:
        features = measured[level]
        n = len(next(iter(features.values())))
        estimated = [
            calibration.level_index(calibration.score({k: v[i] for k, v in features.items()}))
            for i in range(n)
        ]
        counts = np.bincount(estimated, minlength=len(calibration.levels))
        row = {
            "severity": level,
            "n_images": n,
            "estimated": {
                f"{v:g}": int(c) for v, c in zip(calibration.levels, counts, strict=True)
            },
        }
        if level in calibration.levels:
            truth = calibration.levels.index(level)
            row["right_level"] = counts[truth] / n
            row["within_one_level"] = counts[max(0, truth - 1) : truth + 2].sum() / n
        rows.append(row)
    return rows


def summarise(validation: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    """Per family, pooled over the fitted levels of the validation half: the share right on clean
    photos, and right / within one level on the damaged ones (the issue's >= 80% target)."""
    out = {}
    for family, rows in validation.items():
        clean_level = PLANS[family].clean_level
        fitted = [r for r in rows if "right_level" in r]
        damaged = [r for r in fitted if r["severity"] != clean_level]
        total = sum(r["n_images"] for r in damaged)
        out[family] = {
            "clean_right": next(r["right_level"] for r in fitted if r["severity"] == clean_level),
            "damaged_right": sum(r["right_level"] * r["n_images"] for r in damaged) / total,
            "damaged_within_one": sum(r["within_one_level"] * r["n_images"] for r in damaged)
            / total,
        }
    return out


def false_alarms(
    calibrations: dict[str, FamilyCalibration], measured: dict[str, dict[float, dict]]
) -> dict[str, dict[str, float]]:
    """For each family, over photos damaged ONLY in another family (validation half): the share
    that reads as damaged in this family. The clean level of each other family is skipped."""
    out = {}
    for family, calibration in calibrations.items():
        out[family] = {}
        for other, by_level in measured.items():
            if other == family:
                continue
            damaged, total = 0, 0
            for level, features in by_level.items():
                if level == PLANS[other].clean_level:
                    continue
                n = len(next(iter(features.values())))
                for i in range(n):
                    score = calibration.score({k: v[i] for k, v in features.items()})
                    damaged += (
                        calibration.levels[calibration.level_index(score)]
                        != calibration.clean_level
                    )
                total += n
            out[family][other] = damaged / total if total else None
    return out


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fit the photo-quality reading on corrupted test photos; write its constants "
        "and validation table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=default_data_root("train"),
        help="set A folder (manifest.csv, images/)",
    )
    parser.add_argument(
        "--split", type=Path, default=REPO / "weights" / "split.json", help="split file"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "weights" / "reports" / "quality.json",
        help="calibration + validation JSON",
    )
    parser.add_argument(
        "--input-size", type=int, default=224, help="model input side, pixels (shipped presets)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the halves and the noise")
    parser.add_argument(
        "--limit", type=int, default=None, help="use only the first N test photos (smoke runs)"
    )
    return parser


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.data_root is None:
        raise SystemExit("No --data-root given and ../shared/data/train does not exist.")
    started = time.perf_counter()
    rows = read_split(args.split)["test"][: args.limit]
    classes = sorted({row["label"] for row in rows})
    prep = Preprocessing(input_size=args.input_size, resize_size=args.input_size)
    images = load_set("test", args.data_root, rows, classes, prep).images
    order = np.random.default_rng(args.seed).permutation(len(images))
    halves = {
        "fit": np.sort(order[: len(order) // 2]),
        "validation": np.sort(order[len(order) // 2 :]),
    }
    log.info("%d test photos at %d px: %d to fit, %d to validate", len(images), args.input_size,
             len(halves["fit"]), len(halves["validation"]))  # fmt: skip

    measured: dict[str, dict[str, dict[float, dict]]] = {"fit": {}, "validation": {}}
    for family, plan in PLANS.items():
        for level in (*plan.levels, *plan.extra_levels):
            features = measure_family(images, family, level, args.seed)
            for half, index in halves.items():
                by_level = measured[half].setdefault(family, {})
                by_level[level] = {name: values[index] for name, values in features.items()}
        log.info("measured %s", family)

    calibrations = {family: fit_family(family, measured["fit"][family]) for family in PLANS}
    validation = {
        family: validate_family(
            calibrations[family],
            measured["validation"][family],
            (*PLANS[family].levels, *PLANS[family].extra_levels),
        )
        for family in PLANS
    }
    fitted_only = {
        family: {level: measured["validation"][family][level] for level in PLANS[family].levels}
        for family in PLANS
    }
    report = {
        "source": "training/quality_calibration.py",
        "input_size": args.input_size,
        "seed": args.seed,
        "data": {
            "split_file": _display(args.split),
            "split_sha256": hashlib.sha256(args.split.read_bytes()).hexdigest(),
            "set": "test",
            "n_photos": len(images),
            "fit_photos": len(halves["fit"]),
            "validation_photos": len(halves["validation"]),
            "halves": "seeded shuffle of the test photos; constants fitted on the first half, "
            "the validation table measured on the second",
        },
        "families": {family: cal.to_dict() for family, cal in calibrations.items()},
        "validation": validation,
        "summary": summarise(validation),
        "false_alarms": false_alarms(calibrations, fitted_only),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, report)
    print_table(validation, report["summary"])
    log.info("wrote %s in %.1f s", args.out, time.perf_counter() - started)
    return report


def print_table(validation: dict[str, list[dict]], summary: dict[str, dict]) -> None:
    print(f"\n{'family':<10}{'level':>8}{'right':>8}{'+-1':>8}  estimated")
    for family, rows in validation.items():
        for row in rows:
            right = f"{100 * row['right_level']:.0f}%" if "right_level" in row else "-"
            near = f"{100 * row['within_one_level']:.0f}%" if "within_one_level" in row else "-"
            print(f"{family:<10}{row['severity']:>8g}{right:>8}{near:>8}  {row['estimated']}")
    for family, pooled in summary.items():
        print(
            f"{family}: clean photos right {100 * pooled['clean_right']:.1f}%, damaged right "
            f"{100 * pooled['damaged_right']:.1f}% (within one level "
            f"{100 * pooled['damaged_within_one']:.1f}%)"
        )


def _display(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
