"""Score checkpoints on the validation split, clean and under corruption: the numbers a recipe
choice is made on. Never the test split, never SD-198 (those are reported once, by evaluate.py).

    python training/experiments/val_select.py runs/robust/seed0/robust.json runs/exp/robust2_w/robust2.json

Prints balanced accuracy per condition and its change from clean, one row per card.
The corruptions are the evaluation's own conditions with its per-image seeds, applied at the
model input resolution.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from dermcore.checkpoint import load_checkpoint  # noqa: E402
from dermcore.malloc import keep_freed_memory  # noqa: E402
from training import metrics  # noqa: E402
from training.conditions import CONDITIONS, batch_predictor, run_grid  # noqa: E402
from training.eval_data import default_data_root, load_set, read_split  # noqa: E402

DEFAULT_CONDITIONS = ["clean", "sp_upto5", "sp5", "blur5", "blur11", "motion15", "jpeg30"]


def score(card_path: Path, args: argparse.Namespace, split: dict, decoded: dict) -> dict:
    """condition -> (balanced accuracy, top-1) on the validation split."""
    model, card = load_checkpoint(card_path)
    prep = card.get_preprocessing()
    key = (prep.input_size, prep.resize_size, tuple(card.classes))
    if key not in decoded:
        decoded[key] = load_set("val", args.data_root, split["val"], card.classes, prep)
    val = decoded[key]
    predictor = batch_predictor(model, card.arch, prep, card.classes)
    conditions = [CONDITIONS[name] for name in args.conditions]
    run = run_grid(predictor, [val], conditions, args.seed, args.batch_size)
    n = len(card.classes)
    out = {}
    for name, logits in run.logits.items():
        predictions = logits["val"].argmax(1)
        out[name] = (
            metrics.balanced_accuracy(val.labels, predictions, n),
            metrics.accuracy(val.labels, predictions),
        )
    return out


def main(args: argparse.Namespace) -> dict[str, dict]:
    keep_freed_memory()  # as evaluate.py: batch-64 activations reuse freed memory
    args.conditions = ["clean", *[c for c in args.conditions if c != "clean"]]
    split = read_split(args.split)
    decoded: dict = {}
    rows = {str(path): score(path, args, split, decoded) for path in args.cards}
    width = max(len(r) for r in rows)
    print(f"validation balanced accuracy % (change from clean); {len(split['val'])} images")
    print(f"{'card':<{width}}" + "".join(f"{c:>16}" for c in args.conditions))
    for path, result in rows.items():
        clean = result["clean"][0]
        cells = [
            f"{100 * bal:.1f}" + ("" if c == "clean" else f" ({100 * (bal - clean):+.1f})")
            for c, (bal, _) in result.items()
        ]
        print(f"{path:<{width}}" + "".join(f"{cell:>16}" for cell in cells))
    return rows


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Validation-split scores under corruption, for recipe choices.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("cards", nargs="+", type=Path, help="model card JSON files")
    parser.add_argument(
        "--data-root", type=Path, default=default_data_root("train"), help="set A folder"
    )
    parser.add_argument(
        "--split", type=Path, default=REPO / "weights" / "split.json", help="split file"
    )
    parser.add_argument(
        "--conditions",
        nargs="+",
        default=DEFAULT_CONDITIONS,
        choices=list(CONDITIONS),
        metavar="NAME",
        help="evaluation conditions (clean is always added, first)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the per-image corruptions")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
