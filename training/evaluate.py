"""Robustness reports: every shipped model on the test split and the external SD-198 set, clean
and under every corruption, with calibration, class confusions, explanation drift and the
paper's numbers beside ours.

    python training/evaluate.py --weights-dir weights --models clean noise-trained robust
    python training/evaluate.py --models clean-fitz --split weights/split-clean-fitz.json \
        --data-root ../shared/data/train ~/fitz-root     # trained on two roots: both test splits

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
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python training/evaluate.py`
    sys.path.insert(0, str(REPO))

# The imports below need the sys.path line above:
# ruff: noqa: E402
from dermcore import paper
from dermcore.checkpoint import ModelCard, list_cards, load_checkpoint, sha256_file, write_card
from dermcore.malloc import keep_freed_memory
from dermcore.preprocessing import Preprocessing
from training.conditions import CONDITIONS, batch_predictor, run_grid
from training.eval_data import (
    DataError,
    ImageSet,
    default_data_root,
    load_set,
    read_manifest,
    read_split,
    subset,
)
from training.eval_report import (
    calibrate,
    confusion_report,
    drift_indices,
    drift_report,
    set_report,
    table5,
    write_json,
)
from training.roots import ROOT_FIELD, root_folders, row_key

log = logging.getLogger("evaluate")


# --- training curves and per-seed checkpoints ----------------------------------------------------


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


# --- per model --------------------------------------------------------------------------------


@dataclass
class ModelResult:
    name: str
    headline: dict  # report file -> condition -> top-1
    images: int = 0  # forward passes, validation included
    total_s: float = 0.0
    forward_s: float = 0.0


def load_sets(
    args: argparse.Namespace, split: dict, classes: Sequence[str], prep: Preprocessing
) -> tuple[ImageSet, list[ImageSet]]:
    """(validation set, [test set, SD-198 set if --shift-root]) decoded at prep's input size."""
    # the split file lists path, label, source and group; the source's own condition name
    # (for clean_by_condition) is in the manifest. A split made from several data roots has a
    # root id on each row: the roots given resolve them in order (training/roots.py).
    folders = root_folders(args.data_root)
    condition = {
        row_key({**row, ROOT_FIELD: root_id}): row.get("condition", "")
        for root_id, folder in folders.items()
        for row in read_manifest(folder)
    }

    def rows(name: str) -> list[dict]:
        return [
            {**r, "condition": condition.get(row_key(r), "")} for r in split[name][: args.limit]
        ]

    val = load_set("val", folders, rows("val"), classes, prep)
    sets = [load_set("test", folders, rows("test"), classes, prep)]
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


def read_shift(path: Path) -> dict | None:
    """The held-out-source proxies' temperature measures (training/shift_proxy.py), or None."""
    if not path.is_file():
        log.info("no %s: the temperature is the validation split's alone", path)
        return None
    data = json.loads(path.read_text())
    return {**data["temperature"], "heldout_source": data["heldout_source"]}


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
    calibration = calibrate(val_logits, val.labels, read_shift(args.shift_proxy))
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
        nargs="+",
        default=[default_data_root("train")],
        metavar="ROOT",
        help="set A folder (manifest.csv, images/); for a model trained on several roots, every "
        "root in the training order, with that model's --split (default: ../shared/data/train)",
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
    parser.add_argument(
        "--shift-proxy",
        type=Path,
        default=None,
        help="held-out-source proxies (training/shift_proxy.py) whose shift factor multiplies the "
        "validation temperature (default: <out>/shift_proxy.json when it exists)",
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
    if None in args.data_root:
        raise DataError("No --data-root given and ../shared/data/train does not exist.")
    args.split = args.split or args.weights_dir / "split.json"
    args.out = args.out or args.weights_dir / "reports"
    args.shift_proxy = args.shift_proxy or args.out / "shift_proxy.json"
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
