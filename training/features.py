"""Penultimate features and logits of every photo set a familiarity fit or report needs, cached.

    decoded photos   runs/features/images-<size>-<resize>.npz    (every set, at the input size)
    features         runs/features/<model>-<sha12>/<set>-<condition>.npz
                     logits, penultimate features and texture statistics (Predictor.embed)

Both caches are keyed by what they depend on (preprocessing size; the weights' SHA-256 prefix),
so a retrained model never reads stale features. Corrupted views use training/evaluate.py's
conditions and per-image seeds, so they are the same images its reports score.
training/familiarity.py and training/abstention_report.py fill the cache as they go; running
this first fills it for everything they read (long on a CPU, so it can run in the background):

    python training/features.py --models clean noise-trained robust
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.checkpoint import ModelCard, load_checkpoint  # noqa: E402
from dermcore.explain import Predictor  # noqa: E402
from dermcore.nonskin import non_skin_images  # noqa: E402
from dermcore.preprocessing import Preprocessing  # noqa: E402
from training.augment import corrupt_for_training  # noqa: E402
from training.conditions import CONDITIONS, SWEEPS, corrupt_batch  # noqa: E402
from training.eval_data import default_data_root, load_set, read_manifest, read_split  # noqa: E402

log = logging.getLogger(__name__)

SETS = ("train", "val", "test", "shift_sd198", "non_skin")
# every salt-and-pepper density and blur kernel of evaluate.py's sweeps, "clean" first
REPORT_CONDITIONS = tuple(dict.fromkeys(SWEEPS["noise"] + SWEEPS["blur"]))
REPORT_SETS = ("test", "shift_sd198", "non_skin")
# validation views for choosing the score: corrupted validation photos stand in for the unknown
# (no SD-198 photo and no non-skin image is looked at when choosing)
SELECTION_CONDITIONS = ("clean", "sp5", "blur11")
# training corruptions (training/augment.py) applied to every training photo: the familiarity
# statistics of such a model are fitted on its training photos as it saw them
EVERY_PHOTO = ("sp",)


@dataclass
class PhotoSet:
    name: str
    images: np.ndarray  # uint8 (N, S, S, 3) at the model input size
    labels: np.ndarray  # int64 (N,); -1 for the non-skin set (no class)
    table2: np.ndarray | None = None  # bool (N,) for SD-198: the paper's Table 2 rows


def load_photo_sets(
    data_root: Path,
    shift_root: Path,
    split_path: Path,
    classes: list[str],
    prep: Preprocessing,
    cache_dir: Path,
) -> dict[str, PhotoSet]:
    """Every set of SETS decoded at prep's input size, from the cache when it is there."""
    cache = cache_dir / f"images-{prep.input_size}-{prep.resize_size}.npz"
    if cache.is_file():
        data = np.load(cache)
        return {
            name: PhotoSet(
                name,
                data[f"{name}_images"],
                data[f"{name}_labels"],
                data.get(f"{name}_table2"),
            )
            for name in SETS
        }
    split = read_split(split_path)
    sets = {
        name: load_set(name, data_root, split[name], classes, prep)
        for name in ("train", "val", "test")
    }
    sets["shift_sd198"] = load_set(
        "shift_sd198", shift_root, read_manifest(shift_root), classes, prep
    )
    photo_sets = {
        n: PhotoSet(n, s.images, s.labels, s.table2 if n == "shift_sd198" else None)
        for n, s in sets.items()
    }
    non_skin = np.stack([prep.to_input_resolution(i) for i in non_skin_images().values()])
    photo_sets["non_skin"] = PhotoSet("non_skin", non_skin, np.full(len(non_skin), -1))
    cache.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, s in photo_sets.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = s.images, s.labels
        if s.table2 is not None:
            arrays[f"{name}_table2"] = s.table2
    np.savez(cache, **arrays)
    return photo_sets


def features_of(
    predictor: Predictor,
    card: ModelCard,
    photo_set: PhotoSet,
    condition: str,
    seed: int,
    cache_dir: Path,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictor.embed of a set under an evaluate.py condition: float32 logits (N, C),
    penultimate features (N, D), texture statistics (N, E); cached under cache_dir."""

    def corrupted() -> np.ndarray:
        owners = [(photo_set.name, i) for i in range(len(photo_set.images))]
        return corrupt_batch(photo_set.images, CONDITIONS[condition], seed, owners)

    key = f"{photo_set.name}-{condition}"
    return _cached_embed(predictor, card, key, corrupted, cache_dir, batch_size)


def fitted_corruption(card: ModelCard) -> str:
    """The training corruption of the photos the familiarity statistics are fitted on: the
    card's, where it touched every photo (EVERY_PHOTO), else "none" (clean photos)."""
    mode = card.training.get("train_corruption", "none")
    return mode if mode in EVERY_PHOTO else "none"


def training_view_of(
    predictor: Predictor,
    card: ModelCard,
    photo_set: PhotoSet,
    seed: int,
    cache_dir: Path,
    batch_size: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like features_of, with each photo as the model saw it in training, where its training
    corruption touched every photo (EVERY_PHOTO: noise-trained's salt-and-pepper), one seeded
    draw per photo; the clean photos otherwise. robust saw two thirds of its photos clean:
    fitted on its mix, its familiarity stopped seeing blur and 7 of the 48 non-skin images
    (training/README.md, "Familiarity and abstention")."""
    mode = fitted_corruption(card)
    if mode == "none":
        return features_of(predictor, card, photo_set, "clean", seed, cache_dir, batch_size)

    def as_trained() -> np.ndarray:
        rngs = (np.random.default_rng([seed, i, 7919]) for i in range(len(photo_set.images)))
        return np.stack(
            [
                corrupt_for_training(im, mode, r)
                for im, r in zip(photo_set.images, rngs, strict=True)
            ]
        )

    key = f"{photo_set.name}-train-{mode}"
    return _cached_embed(predictor, card, key, as_trained, cache_dir, batch_size)


def _cached_embed(
    predictor: Predictor,
    card: ModelCard,
    key: str,
    images: Callable[[], np.ndarray],
    cache_dir: Path,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictor.embed of images(), cached as <cache_dir>/<model>-<sha12>/<key>.npz."""
    path = cache_dir / f"{card.name}-{card.weights_sha256[:12]}" / f"{key}.npz"
    if path.is_file():
        data = np.load(path)
        return data["logits"], data["features"], data["texture"]
    batch = images()
    logits, features, texture = predictor.embed(batch, batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, logits=logits, features=features, texture=texture)
    log.info("  %s %s: %d photos", card.name, key, len(batch))
    return logits, features, texture


def feature_predictor(card_path: Path) -> tuple[Predictor, ModelCard]:
    """A predictor with raw logits (T = 1; reports apply the card's T)."""
    model, card = load_checkpoint(card_path)
    return Predictor(model, card.arch, card.get_preprocessing(), classes=card.classes), card


def photo_sets_for(card: ModelCard, args: argparse.Namespace) -> dict[str, PhotoSet]:
    """load_photo_sets for a card, from add_data_arguments' options."""
    return load_photo_sets(
        args.data_root,
        args.shift_root,
        args.split or args.weights_dir / "split.json",
        list(card.classes),
        card.get_preprocessing(),
        args.cache_dir,
    )


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--weights-dir, --data-root, --shift-root, --split, --cache-dir, --seed, --batch-size."""
    parser.add_argument(
        "--weights-dir", type=Path, default=REPO / "weights", help="folder of model cards"
    )
    parser.add_argument(
        "--data-root", type=Path, default=default_data_root("train"), help="training data set"
    )
    parser.add_argument(
        "--shift-root", type=Path, default=default_data_root("shift-sd198"), help="SD-198 set"
    )
    parser.add_argument(
        "--split", type=Path, default=None, help="split file (default: <weights-dir>/split.json)"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=REPO / "runs" / "features", help="feature cache"
    )
    parser.add_argument("--seed", type=int, default=0, help="evaluate.py's corruption seed")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Fill the feature cache for familiarity fits and abstention reports.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--models", nargs="+", default=["clean", "noise-trained", "robust"])
    add_data_arguments(parser)
    return parser


def main(args: argparse.Namespace) -> None:
    split = args.split or args.weights_dir / "split.json"
    fit_jobs = [("train", "clean")] + [("val", c) for c in SELECTION_CONDITIONS]
    first = [("test", c) for c in REPORT_CONDITIONS] + [(s, "clean") for s in REPORT_SETS[1:]]
    rest = [(s, c) for s in REPORT_SETS[1:] for c in REPORT_CONDITIONS[1:]]
    for jobs in (fit_jobs, first, rest):  # every model's fit inputs first, then the test split
        for name in args.models:
            predictor, card = feature_predictor(args.weights_dir / f"{name}.json")
            sets = load_photo_sets(
                args.data_root,
                args.shift_root,
                split,
                list(card.classes),
                card.get_preprocessing(),
                args.cache_dir,
            )
            for set_name, condition in jobs:
                features_of(
                    predictor,
                    card,
                    sets[set_name],
                    condition,
                    args.seed,
                    args.cache_dir,
                    args.batch_size,
                )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main(get_args_parser().parse_args())
