"""training/import_photos.py and training/near_duplicates.py on small photo folders, a CSV and a
Fitzpatrick17k-shaped table built here; one test reads the real annotation table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from dermcore import classmap
from training import import_photos, near_duplicates

REAL_FITZPATRICK = Path(__file__).resolve().parents[2] / "shared/data/external-metadata/fitzpatrick17k.csv"  # fmt: skip
MANIFEST_HEADER = "path,label,condition,source,licence,tier,group,sha256,width,height,origin"


def distinct_photo(seed: int, height: int = 120, width: int = 160) -> np.ndarray:
    """uint8 HxWx3: a smooth random colour field, far (in pHash bits) from any other seed's."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (9, 12, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)  # fmt: skip


def near_copy(image: np.ndarray) -> bytes:
    """The same photo resized to 80%, brightened and re-encoded as JPEG."""
    height, width = image.shape[:2]
    small = cv2.resize(image, (int(width * 0.8), int(height * 0.8)), interpolation=cv2.INTER_AREA)
    return encode(np.clip(small.astype(int) + 12, 0, 255).astype(np.uint8), "JPEG")


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def eval_sets(tmp_path) -> dict:
    """A training pool with a split (seed 100 in test, seed 101 in train) and an SD-198-like
    set (seed 102), as import_photos' arguments."""
    train, shift = tmp_path / "data/train", tmp_path / "data/shift"
    rows = []
    for seed, split in ((100, "test"), (101, "train")):
        name = f"images/Acne/p{seed}.png"
        write(train / name, encode(distinct_photo(seed)))
        rows.append((split, {"path": name, "label": "Acne", "source": "s", "group": str(seed)}))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"splits": {s: [r for n, r in rows if n == s] for s in ("train", "val", "test")}}))  # fmt: skip
    write(shift / "images/Tumor/sd.png", encode(distinct_photo(102)))
    (shift / "manifest.csv").write_text("path,label\nimages/Tumor/sd.png,Tumor\n")
    return {"data_root": train, "split": split, "shift_root": shift}


def run(kind: list[str], eval_sets: dict, *extra: str) -> import_photos.ImportResult:
    argv = [*kind, "--data-root", str(eval_sets["data_root"]), "--split", str(eval_sets["split"]),
            "--shift-root", str(eval_sets["shift_root"]), *extra]  # fmt: skip
    return import_photos.main(import_photos.get_args_parser().parse_args(argv))


# ---- near-duplicates -----------------------------------------------------------------------


def hashes_of(data: bytes) -> np.ndarray:
    from dermcore.imageio import load_image

    return near_duplicates.photo_hashes(load_image(data))[None]


def test_a_resized_reencoded_copy_is_near_and_other_photos_are_far():
    image = distinct_photo(1)
    original = hashes_of(encode(image))
    assert near_duplicates.distances(original, hashes_of(near_copy(image)))[0, 0] <= near_duplicates.THRESHOLD_BITS  # fmt: skip
    square = encode(image[:, 20:140])  # the centre square, cropped
    assert near_duplicates.distances(original, hashes_of(square))[0, 0] <= near_duplicates.THRESHOLD_BITS  # fmt: skip
    square = encode(image[12:108, 16:144])  # the centre 80%
    assert near_duplicates.distances(original, hashes_of(square))[0, 0] <= near_duplicates.THRESHOLD_BITS  # fmt: skip
    others = np.concatenate([hashes_of(encode(distinct_photo(seed))) for seed in range(2, 12)])
    assert near_duplicates.distances(original, others).min() > near_duplicates.THRESHOLD_BITS


def test_clusters_join_pairs_transitively():
    h = np.array(
        [[0], [0b1111], [0b11111111], [2**64 - 1]], dtype=np.uint64
    )  # 4 bits apart in a row
    np.testing.assert_array_equal(near_duplicates.clusters(h, threshold=4), [0, 0, 0, 3])
    distance, index = near_duplicates.nearest(h[:2], h[2:])
    np.testing.assert_array_equal(distance, [8, 4])
    np.testing.assert_array_equal(index, [0, 0])


# ---- folders -------------------------------------------------------------------------------


@pytest.fixture
def clinic(tmp_path, eval_sets) -> Path:
    """A folder per class: Acne (2 photos, one a near-duplicate of an evaluation test photo),
    Hives (a photo, its near copy and a byte-identical copy), Psoriasis (no class), an
    unreadable file and a near copy of an SD-198 photo under Tumour."""
    root = tmp_path / "clinic"
    write(root / "Acne/a1.png", encode(distinct_photo(1)))
    write(root / "Acne/leak.jpg", near_copy(distinct_photo(100)))
    write(root / "Acne/train-twin.jpg", near_copy(distinct_photo(101)))  # train split: allowed
    write(root / "Hives/h1.png", encode(distinct_photo(2)))
    write(root / "Hives/visit2/h1-again.jpg", near_copy(distinct_photo(2)))
    write(root / "Hives/z-copy.png", encode(distinct_photo(2)))
    write(root / "Psoriasis/p1.png", encode(distinct_photo(3)))
    write(root / "Acne/broken.jpg", b"\xff\xd8\xff not a photo")
    write(root / "Tumours/sd-twin.jpg", near_copy(distinct_photo(102)))
    write(root / "notes.txt", b"not a photo")
    return root


def test_folder_import_maps_screens_and_groups(clinic, eval_sets, capsys):
    before = sorted(p for p in clinic.rglob("*"))
    result = run(["folders", str(clinic), "--source", "clinic", "--licence", "own", "--tier", "A"], eval_sets)  # fmt: skip
    manifest = clinic / "manifest.csv"
    assert manifest.read_text().splitlines()[0] == MANIFEST_HEADER
    rows = {row["path"]: row for row in read_rows(manifest)}
    assert set(rows) == {"Acne/a1.png", "Acne/train-twin.jpg", "Hives/h1.png", "Hives/visit2/h1-again.jpg"}  # fmt: skip
    assert rows["Hives/h1.png"]["label"] == "Wheal" and rows["Hives/h1.png"]["condition"] == "Hives"
    assert rows["Hives/h1.png"]["group"] == rows["Hives/visit2/h1-again.jpg"]["group"]
    assert rows["Acne/a1.png"]["group"] != rows["Hives/h1.png"]["group"]
    row = rows["Acne/a1.png"]
    data = (clinic / "Acne/a1.png").read_bytes()
    assert row["sha256"] == import_photos.hashlib.sha256(data).hexdigest()
    assert (row["width"], row["height"], row["source"], row["licence"], row["tier"]) == ("160", "120", "clinic", "own", "A")  # fmt: skip
    excluded = {row["path"]: row for row in read_rows(clinic / "excluded.csv")}
    assert excluded["Acne/leak.jpg"]["reason"] == "near-duplicate of an evaluation photo"
    assert excluded["Acne/leak.jpg"]["match"].endswith("images/Acne/p100.png")
    assert int(excluded["Acne/leak.jpg"]["distance"]) <= near_duplicates.THRESHOLD_BITS
    assert excluded["Tumours/sd-twin.jpg"]["match"].endswith("sd.png")  # SD-198, all of it
    assert excluded["Psoriasis/p1.png"]["reason"] == "maps to none of our classes"
    assert excluded["Hives/z-copy.png"]["reason"] == "byte-identical copy"
    assert excluded["Acne/broken.jpg"]["reason"].startswith("unreadable: ")
    assert len(result.rows) == 4 and len(result.excluded) == 5
    assert "'Psoriasis' (1 photo) maps to none of our classes" in capsys.readouterr().out
    # nothing copied: the folder holds what it held, plus the two tables
    after = sorted(p for p in clinic.rglob("*"))
    assert sorted(set(after) - set(before)) == [clinic / "excluded.csv", manifest]


def test_a_mapping_file_overrides_the_default(clinic, eval_sets, tmp_path):
    mapping = write(tmp_path / "mapping.csv", b"name,label\nPsoriasis,erythema\nHives,leave out\n")
    out = tmp_path / "out/manifest.csv"
    run(["folders", str(clinic), "--mapping", str(mapping), "--out", str(out)], eval_sets)
    labels = {row["path"]: row["label"] for row in read_rows(out)}
    assert labels["../clinic/Psoriasis/p1.png"] == "Erythema"
    assert not any("Hives" in path for path in labels)


def test_a_manifest_inside_the_repository_is_refused(clinic, eval_sets):
    out = Path(import_photos.REPO, "manifest.csv")
    with pytest.raises(SystemExit, match="outside the repository"):
        run(["folders", str(clinic), "--out", str(out)], eval_sets)
    assert not out.exists()


# ---- a CSV ---------------------------------------------------------------------------------


def test_csv_import(tmp_path, eval_sets):
    photos = tmp_path / "photos"
    write(photos / "x/1.png", encode(distinct_photo(5)))
    write(photos / "x/2.png", encode(distinct_photo(6)))
    write(photos / "x/3.png", encode(distinct_photo(7)))
    table = write(tmp_path / "labels.csv", b"path,label\nx/1.png,Urticaria\nx/2.png,Vitiligo\nx/3.png,rash\nx/4.png,Acne\n")  # fmt: skip
    out = tmp_path / "manifest.csv"
    run(["csv", str(table), "--images-root", str(photos), "--out", str(out)], eval_sets)
    rows = read_rows(out)
    assert [(r["path"], r["label"], r["condition"]) for r in rows] == [
        ("photos/x/2.png", "Leukoderma", "Vitiligo"),
        ("photos/x/1.png", "Wheal", "Urticaria"),
    ]
    reasons = {row["path"]: row["reason"] for row in read_rows(tmp_path / "excluded.csv")}
    assert reasons == {"photos/x/3.png": "maps to none of our classes", "photos/x/4.png": "file not found"}  # fmt: skip


# ---- Fitzpatrick17k ------------------------------------------------------------------------

DERMAAMIN = "https://www.dermaamin.com/site/images/clinical-pic/{}/{}/{}1.jpg"
FITZ_ROWS = [  # md5hash, label, slug ("" = an Atlas Dermatologico URL), expected class
    ("aa01", "halo nevus", "halo_naevus", "Leukoderma"),
    ("aa02", "halo nevus", "ota-nevus", classmap.LEAVE_OUT),  # naevus of Ota
    ("aa03", "lichen simplex", "chicken_pox", "Blister"),
    ("aa04", "lichen simplex", "lichen_simplex", classmap.LEAVE_OUT),
    ("aa05", "vitiligo", "", "Leukoderma"),
    ("aa06", "psoriasis", "psoriasis", classmap.LEAVE_OUT),
    ("aa07", "squamous cell carcinoma", "bowens_disease", "Crust"),
    ("aa08", "neutrophilic dermatoses", "pyoderma-gangrenosum", "Ulcer"),
    ("aa09", "stasis edema", "stasis-ulcer", "Ulcer"),
    ("aa10", "urticaria", "dermographic_urticaria", "Wheal"),
    ("aa11", "not a known condition", "x", classmap.LEAVE_OUT),
]


def fitzpatrick_table(path: Path) -> Path:
    lines = ["md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,three_partition_label,qc,url,url_alphanum"]  # fmt: skip
    for md5, label, slug, _ in FITZ_ROWS:
        url = DERMAAMIN.format(slug[:1], slug, slug) if slug else "http://atlasdermatologico.com.br/img?imageId=1"  # fmt: skip
        lines.append(f"{md5},3,3,{label},inflammatory,non-neoplastic,,{url},x")
    return write(path, ("\n".join(lines) + "\n").encode())


def test_fitzpatrick_rules_by_condition_and_slug(tmp_path):
    rules = import_photos.read_fitzpatrick_rules()
    for _, label, slug, expected in FITZ_ROWS:
        url = (
            DERMAAMIN.format(slug[:1], slug, slug) if slug else "http://atlasdermatologico.com.br/x"
        )
        assert import_photos.fitzpatrick_label(rules, label, url) == expected, (label, slug)


def test_fitzpatrick_import(tmp_path, eval_sets):
    images = tmp_path / "f17k"
    for seed, (md5, *_rest) in enumerate(FITZ_ROWS[:-2]):  # aa10 has no image
        write(images / f"{md5}.jpg", encode(distinct_photo(20 + seed), "JPEG"))
    table = fitzpatrick_table(tmp_path / "fitzpatrick17k.csv")
    run(["fitzpatrick17k", str(images), "--annotations", str(table)], eval_sets)
    rows = read_rows(images / "manifest.csv")
    assert {(r["path"], r["label"]) for r in rows} == {
        ("aa01.jpg", "Leukoderma"), ("aa03.jpg", "Blister"), ("aa05.jpg", "Leukoderma"),
        ("aa07.jpg", "Crust"), ("aa08.jpg", "Ulcer"), ("aa09.jpg", "Ulcer"),
    }  # fmt: skip
    assert {r["source"] for r in rows} == {"fitzpatrick17k"} and {r["tier"] for r in rows} == {"B"}
    assert all(r["origin"].startswith("http") for r in rows)
    reasons = {row["path"]: row["reason"] for row in read_rows(images / "excluded.csv")}
    assert reasons["aa10.jpg"] == "file not found"
    assert reasons["aa02.jpg"] == "maps to none of our classes"


def test_the_rules_table_is_complete_and_reviewed():
    with open(import_photos.FITZPATRICK_RULES, newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(row["label"] in classmap.CHOICES and row["reason"] for row in rows)
    keys = [(row["condition"], row["slug"]) for row in rows]
    assert len(keys) == len(set(keys))
    if REAL_FITZPATRICK.is_file():
        with open(REAL_FITZPATRICK, newline="") as f:
            conditions = {row["label"] for row in csv.DictReader(f)}
        assert conditions == {row["condition"] for row in rows}  # every condition decided


@pytest.mark.skipif(
    not REAL_FITZPATRICK.is_file(),
    reason=f"needs the real annotation table at {REAL_FITZPATRICK} (../shared beside the repo)",
)
def test_the_real_fitzpatrick17k_table_yields_the_documented_counts():
    counts = import_photos.fitzpatrick_counts(REAL_FITZPATRICK, import_photos.read_fitzpatrick_rules())  # fmt: skip
    assert counts == {
        "Acne": 514, "Alopecia": 0, "Blister": 269, "Crust": 87, "Erythema": 636,
        "Leukoderma": 228, "Pigmented Macula": 331, "Tumor": 613, "Ulcer": 189, "Wheal": 155,
        classmap.LEAVE_OUT: 13555,
    }  # fmt: skip
    assert sum(counts.values()) == 16577


def test_a_root_given_through_dot_dot_is_not_taken_for_hidden(clinic, eval_sets, monkeypatch):
    monkeypatch.chdir(clinic / "Acne")
    result = run(["folders", "../../clinic", "--out", "../../out/manifest.csv"], eval_sets)
    assert len(result.rows) == 4
    write(clinic / "Acne/.hidden.png", encode(distinct_photo(9)))
    assert (
        len(run(["folders", "../../clinic", "--out", "../../out/manifest.csv"], eval_sets).rows)
        == 4
    )
