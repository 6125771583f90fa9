"""Build the shipped sample gallery (samples/) from the test split, redistributable sources only.

    python scripts/make_samples.py --data-root ../shared/data/train

Only photos of the **test split** (weights/split.json) are taken, so no shipped model trained on
them, and only from sources whose licence allows redistribution: tier A and A- in the data
README (PAD-UFES-20, CC BY 4.0; the Roboflow CC BY 4.0 exports). Two photos per class, from
different sources where a class has several, picked by the order of their SHA-256 (no look at
what any model says of them), after leaving out photos that show a third party's watermark.
Each is re-encoded (EXIF dropped) with its longer side at most
768 px, and samples/ATTRIBUTION.csv records its source, licence and origin.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageOps

from dermcore.labels import CLASSES

REPO = Path(__file__).resolve().parent.parent
REDISTRIBUTABLE_TIERS = ("A", "A-")
PER_CLASS = 2
MAX_SIDE_PX = 768
# Human-readable names of the redistributable sources, for captions and the attribution file.
SOURCE_NAMES = {
    "padufes20": "PAD-UFES-20",
    "skinscanner": "Roboflow 'Skin Scanner'",
    "rfacne": "Roboflow 'Acne Dataset'",
    "hairloss": "Roboflow 'hair-loss'",
}
# Photos looked at and left out: a third party's watermark shows that the export re-hosts
# material its uploader did not own (the A- tier's risk), so the photo is not redistributed.
EXCLUDED = {
    "images/Erythema/skinscanner-a942341c2f5b.jpg": "third-party watermark (A.D.A.M.)",
    "images/Erythema/skinscanner-280454f54e04.jpg": "third-party watermark (DermNet NZ)",
}
FIELDS = ("file", "label", "condition", "source", "source_name", "licence", "tier", "origin", "sha256_original")  # fmt: skip


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=REPO / ".." / "shared" / "data" / "train",
                        help="set A's folder with manifest.csv (default: ../shared/data/train)")  # fmt: skip
    parser.add_argument("--split", type=Path, default=REPO / "weights" / "split.json",
                        help="the split file whose test photos are drawn (default: weights/split.json)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=REPO / "samples",
                        help="output folder (default: samples/)")  # fmt: skip
    return parser


def pick(rows: list[dict]) -> list[dict]:
    """PER_CLASS rows per class, round-robin over sources, each source in SHA-256 order."""
    chosen = []
    for label in CLASSES:
        by_source = defaultdict(list)
        for row in sorted((r for r in rows if r["label"] == label), key=lambda r: r["sha256"]):
            by_source[row["source"]].append(row)
        queues = [by_source[s] for s in sorted(by_source)]
        taken = []
        while len(taken) < PER_CLASS and any(queues):
            for queue in queues:
                if queue and len(taken) < PER_CLASS:
                    taken.append(queue.pop(0))
        chosen += taken
    return chosen


def main(args: argparse.Namespace) -> None:
    with open(args.data_root / "manifest.csv", newline="") as f:
        manifest = {row["path"]: row for row in csv.DictReader(f)}
    test = json.loads(args.split.read_text())["splits"]["test"]
    rows = [manifest[item["path"]] for item in test]
    rows = [
        r
        for r in rows
        if r["tier"] in REDISTRIBUTABLE_TIERS
        and r["source"] in SOURCE_NAMES
        and r["path"] not in EXCLUDED
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for row in pick(rows):
        image = ImageOps.exif_transpose(Image.open(args.data_root / row["path"])).convert("RGB")
        image.thumbnail((MAX_SIDE_PX, MAX_SIDE_PX), Image.Resampling.LANCZOS)
        name = f"{row['label'].replace(' ', '-')}-{Path(row['path']).stem}.jpg"
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90, optimize=True)
        (args.out / name).write_bytes(buffer.getvalue())
        records.append(
            {
                "file": name,
                "label": row["label"],
                "condition": row["condition"],
                "source": row["source"],
                "source_name": SOURCE_NAMES[row["source"]],
                "licence": row["licence"],
                "tier": row["tier"],
                "origin": row["origin"],
                "sha256_original": row["sha256"],
            }
        )
    with open(args.out / "ATTRIBUTION.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(records)
    missing = [c for c in CLASSES if not any(r["label"] == c for r in records)]
    print(f"wrote {len(records)} photos to {args.out}; no redistributable sample of: {missing}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
