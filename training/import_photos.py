"""Import a user's labelled photos for training: write a manifest in the format of
../shared/data/train/manifest.csv, pointing at the photos where they are (nothing is copied).

    python training/import_photos.py folders ~/clinic-photos --source clinic --licence "own" --tier A
    python training/import_photos.py csv ~/labels.csv --images-root ~/photos
    python training/import_photos.py fitzpatrick17k ~/fitzpatrick17k/images \
        --annotations ../shared/data/external-metadata/fitzpatrick17k.csv

Labels go through one mapping to our ten classes: dermcore.classmap for folder and CSV names
(the paper's Table 2, grouping.csv and the class names; --mapping overrides it), and the reviewed
table training/mappings/fitzpatrick17k.csv for Fitzpatrick17k (condition, and the DermaAmin URL
slug where a condition mixes diseases). Photos with no class are left out and listed.

Every photo is screened against our evaluation sets (the test split of weights/split.json over
--data-root, and all of --shift-root): a near-duplicate (training/near_duplicates.py) is dropped,
so a user's data cannot leak into what the reports call held-out. Near-duplicates within the
import share a split group. Written: the manifest (default <photos>/manifest.csv; paths relative
to its folder) and excluded.csv beside it, with every photo left out and why.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `python training/import_photos.py`
    sys.path.insert(0, str(REPO))

from dermcore import classmap  # noqa: E402
from dermcore.imageio import SUPPORTED_EXTENSIONS, ImageLoadError, load_image  # noqa: E402
from training import near_duplicates  # noqa: E402

log = logging.getLogger("import_photos")

MANIFEST_COLUMNS = ["path", "label", "condition", "source", "licence", "tier", "group", "sha256", "width", "height", "origin"]  # fmt: skip
EXCLUDED_COLUMNS = ["path", "label", "condition", "reason", "match", "distance"]
FITZPATRICK_RULES = REPO / "training" / "mappings" / "fitzpatrick17k.csv"
FITZPATRICK_LICENCE = (
    "CC BY-NC-SA 3.0 (Fitzpatrick17k; images collected from Atlas Dermatologico and DermaAmin)"
)
HASH_SIDE_PX = 512  # photos are decoded at most this large to hash them (JPEG draft decoding)
UNMAPPED = "maps to none of our classes"
_SLUG = re.compile(r"clinical-pic/[^/]+/([^/]+)/")


@dataclass
class Candidate:
    """A photo to import, before it is read."""

    path: Path
    label: str  # one of our classes, or classmap.LEAVE_OUT
    condition: str  # the source's own name for it
    origin: str  # where it came from (a relative path, or Fitzpatrick17k's URL)


@dataclass
class Excluded:
    path: str
    label: str
    condition: str
    reason: str
    match: str = ""  # the evaluation photo or imported photo it duplicates
    distance: int | str = ""


# ---- sources -------------------------------------------------------------------------------


def read_mapping(path: Path | None) -> dict[str, str]:
    return {} if path is None else classmap.read_mapping_csv(path.read_text())


def _label(name: str, mapping: dict[str, str]) -> str:
    return mapping[name] if name in mapping else classmap.default_label(name)


def _is_photo(path: Path, relative: Path) -> bool:
    """An image file, not hidden below the import's root (macOS and Windows add such files)."""
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)
    return path.is_file() and not hidden and path.suffix.lower().lstrip(".") in SUPPORTED_EXTENSIONS


def folder_candidates(root: Path, mapping: dict[str, str]) -> list[Candidate]:
    """root/<class folder>/**/<photo>: the first folder under root is the label."""
    candidates = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if len(relative.parts) < 2 or not _is_photo(path, relative):
            continue
        folder = relative.parts[0]
        candidates.append(Candidate(path, _label(folder, mapping), folder, relative.as_posix()))
    return candidates


def csv_candidates(table: Path, images_root: Path, mapping: dict[str, str]) -> list[Candidate]:
    """A CSV with columns path (relative to images_root) and label."""
    with open(table, newline="") as f:
        rows = csv.DictReader(f)
        if not rows.fieldnames or not {"path", "label"} <= set(rows.fieldnames):
            raise SystemExit(f"{table} needs the columns 'path' and 'label'.")
        return [
            Candidate(images_root / row["path"], _label(row["label"], mapping), row["label"], row["path"])
            for row in rows
        ]  # fmt: skip


def read_fitzpatrick_rules(path: Path = FITZPATRICK_RULES) -> dict[tuple[str, str], str]:
    """The reviewed table -> {(condition, slug): label}; slug "" is the condition's default."""
    with open(path, newline="") as f:
        rules = {(row["condition"], row["slug"]): row["label"] for row in csv.DictReader(f)}
    classmap.check_mapping({f"{c}/{s}": label for (c, s), label in rules.items()})
    return rules


def url_slug(url: str) -> str:
    """DermaAmin's 'clinical-pic/<letter>/<slug>/' -> slug; '' for other URLs."""
    match = _SLUG.search(url or "")
    return match.group(1) if match else ""


def fitzpatrick_label(rules: dict[tuple[str, str], str], condition: str, url: str) -> str:
    """The class of one annotation row: its (condition, slug) rule, else the condition's
    default, else LEAVE_OUT (a condition the table does not know)."""
    slug = url_slug(url)
    return rules.get((condition, slug), rules.get((condition, ""), classmap.LEAVE_OUT))


def fitzpatrick_counts(annotations: Path, rules: dict[tuple[str, str], str]) -> dict[str, int]:
    """Rows per class (and LEAVE_OUT) that the rules give an annotation table."""
    with open(annotations, newline="") as f:
        labels = [fitzpatrick_label(rules, r["label"], r["url"]) for r in csv.DictReader(f)]
    counts = Counter(labels)
    return {name: counts[name] for name in classmap.CHOICES}


def fitzpatrick_candidates(
    images: Path, annotations: Path, rules: dict[tuple[str, str], str]
) -> list[Candidate]:
    """Every annotation row, its image found as <images>/<md5hash>.<ext>."""
    by_stem = {p.stem: p for p in images.iterdir() if _is_photo(p, Path(p.name))}
    candidates = []
    with open(annotations, newline="") as f:
        for row in csv.DictReader(f):
            path = by_stem.get(row["md5hash"], images / f"{row['md5hash']}.jpg")
            label = fitzpatrick_label(rules, row["label"], row["url"])
            candidates.append(Candidate(path, label, row["label"], row["url"]))
    return candidates


# ---- the evaluation sets -------------------------------------------------------------------


def evaluation_paths(
    data_root: Path | None, split: Path | None, shift_root: Path | None
) -> list[Path]:
    """The photos the reports call held-out: the split's test rows and every SD-198 row."""
    paths = []
    if data_root is not None and split is not None:
        splits = json.loads(split.read_text())
        splits = splits.get("splits", splits)
        paths += [data_root / row["path"] for row in splits["test"]]
    if shift_root is not None:
        with open(shift_root / "manifest.csv", newline="") as f:
            paths += [shift_root / row["path"] for row in csv.DictReader(f)]
    return paths


def hash_file(path: Path) -> tuple[bytes, np.ndarray]:
    """(file bytes, near_duplicates.photo_hashes); ImageLoadError or OSError when unreadable."""
    data = path.read_bytes()
    return data, near_duplicates.photo_hashes(load_image(data, max_side=HASH_SIDE_PX))


def evaluation_hashes(paths: list[Path]) -> np.ndarray:
    hashes = np.empty((len(paths), near_duplicates.HASHES_PER_PHOTO), dtype=np.uint64)
    for i, path in enumerate(paths):
        hashes[i] = hash_file(path)[1]
    log.info("hashed %d evaluation photos", len(paths))
    return hashes


# ---- the import ----------------------------------------------------------------------------


@dataclass
class ImportResult:
    rows: list[dict]
    excluded: list[Excluded]


def import_candidates(
    candidates: list[Candidate],
    out_dir: Path,
    source: str,
    licence: str,
    tier: str,
    eval_paths: list[Path],
    eval_hashes: np.ndarray,
    threshold: int = near_duplicates.THRESHOLD_BITS,
) -> ImportResult:
    """Read, hash and screen the candidates; manifest rows (paths relative to out_dir) for the
    photos kept, and every photo left out with its reason."""
    excluded, kept, hashes, seen = [], [], [], {}
    for candidate in candidates:
        shown = _relative(candidate.path, out_dir)
        if candidate.label == classmap.LEAVE_OUT:
            excluded.append(Excluded(shown, "", candidate.condition, UNMAPPED))
            continue
        try:
            data, photo_hashes = hash_file(candidate.path)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
        except FileNotFoundError:
            excluded.append(Excluded(shown, candidate.label, candidate.condition, "file not found"))
            continue
        except (ImageLoadError, OSError) as error:
            excluded.append(Excluded(shown, candidate.label, candidate.condition, f"unreadable: {error}"))  # fmt: skip
            continue
        sha256 = hashlib.sha256(data).hexdigest()
        if sha256 in seen:
            excluded.append(Excluded(shown, candidate.label, candidate.condition, "byte-identical copy", seen[sha256], 0))  # fmt: skip
            continue
        seen[sha256] = shown
        kept.append((candidate, shown, sha256, width, height))
        hashes.append(photo_hashes)
    hashes = np.array(hashes, dtype=np.uint64).reshape(-1, near_duplicates.HASHES_PER_PHOTO)
    distance, match = near_duplicates.nearest(hashes, eval_hashes)
    leaks = distance <= threshold
    for i in np.nonzero(leaks)[0]:
        candidate, shown = kept[i][:2]
        excluded.append(
            Excluded(shown, candidate.label, candidate.condition,
                     "near-duplicate of an evaluation photo", str(eval_paths[match[i]]), int(distance[i]))
        )  # fmt: skip
    kept = [k for k, leak in zip(kept, leaks, strict=True) if not leak]
    hashes = hashes[~leaks]
    representative = near_duplicates.clusters(hashes, threshold)
    rows = []
    for (candidate, shown, sha256, width, height), rep in zip(kept, representative, strict=True):
        rows.append({
            "path": shown, "label": candidate.label, "condition": candidate.condition,
            "source": source, "licence": licence, "tier": tier,
            "group": f"{source}-{kept[rep][2][:12]}", "sha256": sha256,
            "width": width, "height": height, "origin": candidate.origin,
        })  # fmt: skip
    rows.sort(key=lambda row: (row["label"], row["path"]))
    return ImportResult(rows, excluded)


def _relative(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


def write_csv(path: Path, columns: list[str], rows: Iterable[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


# ---- command line --------------------------------------------------------------------------


def _default(path: Path) -> Path | None:
    return path if path.exists() else None


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write a training manifest for your own labelled photos (nothing is copied).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="kind", required=True)
    kind = {"formatter_class": argparse.ArgumentDefaultsHelpFormatter}
    folders = kinds.add_parser("folders", help="a folder per class under ROOT", **kind)
    folders.add_argument("root", type=Path, help="the folder holding one folder per class")
    table = kinds.add_parser("csv", help="a CSV of path and label", **kind)
    table.add_argument("table", type=Path, help="CSV with columns path and label (and more)")
    table.add_argument("--images-root", type=Path, default=None, help="paths are relative to it (default: the CSV's folder)")  # fmt: skip
    fitz = kinds.add_parser(
        "fitzpatrick17k", help="Fitzpatrick17k: its images named by md5hash", **kind
    )
    fitz.add_argument("images", type=Path, help="the folder of <md5hash>.jpg images")
    fitz.add_argument("--annotations", type=Path, default=REPO.parent / "shared/data/external-metadata/fitzpatrick17k.csv", help="the annotation table")  # fmt: skip
    fitz.add_argument("--rules", type=Path, default=FITZPATRICK_RULES, help="condition/slug -> class table")  # fmt: skip
    for sub in (folders, table):
        sub.add_argument("--mapping", type=Path, default=None, help="CSV name,label overriding the default mapping (dermcore.classmap)")  # fmt: skip
        sub.add_argument("--source", default="user", help="short id written in the source column")
        sub.add_argument("--licence", default="not stated", help="the photos' licence, as you state it")  # fmt: skip
        sub.add_argument("--tier", default="C", choices=["A", "A-", "B", "C"], help="licence tier (../shared/data/README.md)")  # fmt: skip
    for sub in (folders, table, fitz):
        sub.add_argument("--out", type=Path, default=None, help="manifest to write (default: manifest.csv in the photos' folder)")  # fmt: skip
        sub.add_argument("--data-root", type=Path, default=_default(REPO.parent / "shared/data/train"), help="our training pool, whose test split is screened against")  # fmt: skip
        sub.add_argument("--split", type=Path, default=_default(REPO / "weights/split.json"), help="the split whose test rows are held out")  # fmt: skip
        sub.add_argument("--shift-root", type=Path, default=_default(REPO.parent / "shared/data/shift-sd198"), help="SD-198 set, screened against in full")  # fmt: skip
        sub.add_argument("--threshold", type=int, default=near_duplicates.THRESHOLD_BITS, help="near-duplicate Hamming distance, of 64 bits")  # fmt: skip
        sub.add_argument("--skip-eval-screen", action="store_true", help="do not screen against the evaluation sets (the manifest then must not be trained on beside them)")  # fmt: skip
    return parser


def main(args: argparse.Namespace) -> ImportResult:
    if args.kind == "folders":
        folder = args.root
        candidates = folder_candidates(args.root, read_mapping(args.mapping))
        source, licence, tier = args.source, args.licence, args.tier
    elif args.kind == "csv":
        folder = args.table.parent
        images_root = args.images_root or folder
        candidates = csv_candidates(args.table, images_root, read_mapping(args.mapping))
        source, licence, tier = args.source, args.licence, args.tier
    else:
        folder = args.images
        rules = read_fitzpatrick_rules(args.rules)
        candidates = fitzpatrick_candidates(args.images, args.annotations, rules)
        source, licence, tier = "fitzpatrick17k", FITZPATRICK_LICENCE, "B"
    out = args.out or folder / "manifest.csv"
    _refuse_inside_repository(out)
    eval_paths = _screened_paths(args)
    result = import_candidates(
        candidates, out.parent, source, licence, tier, eval_paths,
        evaluation_hashes(eval_paths), args.threshold,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    write_csv(out, MANIFEST_COLUMNS, result.rows)
    write_csv(out.parent / "excluded.csv", EXCLUDED_COLUMNS, (vars(e) for e in result.excluded))
    _report(result, out, list_unmapped=args.kind != "fitzpatrick17k")  # that table is reviewed
    return result


def _screened_paths(args: argparse.Namespace) -> list[Path]:
    if args.skip_eval_screen:
        log.warning("not screened against the evaluation sets (--skip-eval-screen)")
        return []
    if args.data_root is None or args.split is None or args.shift_root is None:
        raise SystemExit(
            "The evaluation sets were not found: pass --data-root, --split and --shift-root "
            "(or --skip-eval-screen, and never train on the result beside our reports)."
        )
    return evaluation_paths(args.data_root, args.split, args.shift_root)


def _refuse_inside_repository(out: Path) -> None:
    """The manifest names patients' photos by path: keep it beside them, not in the repo."""
    if out.resolve().is_relative_to(REPO):
        raise SystemExit(f"Write the manifest outside the repository (got {out}).")


def _report(result: ImportResult, out: Path, list_unmapped: bool) -> None:
    counts = Counter(row["label"] for row in result.rows)
    print(f"wrote {out} ({len(result.rows)} photos) and {out.parent / 'excluded.csv'}")
    for label in classmap.CLASSES:
        if counts[label]:
            print(f"  {label:<17} {counts[label]}")
    for reason, n in sorted(Counter(e.reason.split(":")[0] for e in result.excluded).items()):
        print(f"  left out, {reason}: {n}")
    unmapped = Counter(e.condition for e in result.excluded if e.reason == UNMAPPED)
    for name, n in sorted(unmapped.items()) if list_unmapped else ():
        photos = "1 photo" if n == 1 else f"{n} photos"
        print(f"  '{name}' ({photos}) maps to none of our classes; name it in --mapping to import it")  # fmt: skip


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(get_args_parser().parse_args())
