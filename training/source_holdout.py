"""A split with one source held out: a content-shift stand-in that never touches SD-198.

    python training/source_holdout.py --source skinscanner --out runs/holdout-skinscanner/split.json

Validation photos come from the training sources, so they cannot show what the models meet in
another clinic: other framing, other cameras, other diseases under the same label. This writes
a copy of weights/split.json without one source in its train and validation splits, and lists
that source's train and validation photos as `heldout`. A model trained on this split (a
"proxy", same recipe) meets those photos as it would meet a new clinic's, so familiarity
scores and temperatures can be judged on them. The test split is not used for anything here,
and neither is SD-198.

A source can be held out when each of its classes keeps another source, so the proxy still
learns all ten classes; training/shift_proxy.py's SOURCES lists those it uses. `skinscanner`,
the default, feeds five classes (Acne, Blister, Erythema, Leukoderma, Wheal); every other
source that feeds several classes but `rfacne` would take a class with it (`padufes20` is the
only source of Pigmented Macula).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from training.data import read_split  # noqa: E402


def hold_out(split: dict, source: str) -> dict:
    """split.json's dict with `source` moved out of train and val into `heldout` (test kept)."""
    rows = split["splits"]
    heldout = [r for s in ("train", "val") for r in rows[s] if r["source"] == source]
    if not heldout:
        raise ValueError(f"no photo of source {source!r} in the train or validation split")
    kept = {s: [r for r in rows[s] if r["source"] != source] for s in ("train", "val")}
    missing = {r["label"] for r in heldout} - {r["label"] for r in kept["train"]}
    if missing:
        raise ValueError(f"holding out {source!r} leaves no training photo of {sorted(missing)}")
    splits = {**kept, "test": rows["test"]}
    return {
        **split,
        "method": f"{split['method']}; then source {source!r} moved out of train and val "
        "into heldout (training/source_holdout.py)",
        "heldout_source": source,
        "counts": {
            s: dict(sorted(Counter(r["label"] for r in v).items()))
            for s, v in {**splits, "heldout": heldout}.items()
        },
        "splits": splits,
        "heldout": heldout,
    }


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", type=Path, default=REPO / "weights" / "split.json")
    parser.add_argument("--source", default="skinscanner", help="the source to hold out")
    parser.add_argument(
        "--out", type=Path, default=REPO / "runs" / "holdout-skinscanner" / "split.json"
    )
    return parser


def main(args: argparse.Namespace) -> dict:
    data = hold_out(read_split(args.split), args.source)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(
        f"wrote {args.out}: "
        + ", ".join(f"{s} {sum(c.values())}" for s, c in data["counts"].items())
    )
    return data


if __name__ == "__main__":
    main(get_args_parser().parse_args())
