"""Training on several data roots (training/roots.py): one root exactly as before; two roots whose
paths, groups and sources are spelt the same never collide in the split, the cache or the card;
a changed manifest is refused on resume. Tiny synthetic roots written into tmp folders."""

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_training import fake_rows, run_args, run_main, write_synthetic_set

from dermcore.imageio import load_image
from dermcore.labels import CLASSES
from dermcore.preprocessing import Preprocessing
from training import data as D
from training import eval_data, evaluate
from training import roots as R
from training.config import RunPaths, TrainConfig
from training.loaders import prepare_data, read_roots

PREP = Preprocessing(64, 64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
CONFIG = TrainConfig(input_size=64, cache_short_side=32)


def add_tiers(root: Path, tiers: tuple[str, ...]) -> None:
    """Give the manifest a licence `tier` column, cycling through `tiers`."""
    with open(root / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        row["tier"] = tiers[i % len(tiers)]
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def two_roots(tmp_path_factory) -> tuple[Path, Path]:
    """Ours and a user's, spelt alike: the same relative paths, groups and source name."""
    base = tmp_path_factory.mktemp("roots")
    write_synthetic_set(base / "ours", 8, ("web",), seed=0)
    write_synthetic_set(base / "clinic", 8, ("web",), seed=5)
    add_tiers(base / "ours", ("A", "A-", "C"))
    add_tiers(base / "clinic", ("own",))
    return base / "ours", base / "clinic"


def paths_for(roots, tmp_path: Path) -> RunPaths:
    return RunPaths.from_args(list(roots), tmp_path / "split.json", tmp_path / "cache")


def test_one_root_split_is_grouped_split_and_the_file_is_unchanged(tmp_path):
    rows = fake_rows(3)
    assert D.split_each_root(rows, 0) == D.grouped_split(rows, 0)
    assert R.tag_rows(rows, "") == rows and R.root_ids(1) == [""]
    assert R.combined_sha256(["abc"]) == "abc"
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    D.write_split(
        before,
        D.grouped_split(rows, 0),
        seed=0,
        fractions=D.DEFAULT_FRACTIONS,
        manifest_hash="abc",
        data_root=tmp_path,
    )
    D.load_or_make_split(after, rows, tmp_path, "abc", 0, D.DEFAULT_FRACTIONS)
    assert after.read_bytes() == before.read_bytes()


def test_one_root_run_data_matches_the_split_function(two_roots, tmp_path):
    ours, _ = two_roots
    data = prepare_data(CONFIG, paths_for([ours], tmp_path))
    rows = D.read_manifest(ours)
    expected = D.grouped_split(rows, CONFIG.split_seed)
    for s in D.SPLITS:
        assert data.split["splits"][s] == [{k: r[k] for k in D.SPLIT_FIELDS} for r in expected[s]]
    assert "roots" not in data.split and data.manifest_hash == D.manifest_sha256(ours)
    assert data.images.paths == [r["path"] for r in rows]
    (record,) = data.roots
    assert "id" not in record and record["tiers"] == {"A": 8, "A-": 8, "C": 8}


def test_two_roots_are_read_split_and_cached_without_collisions(two_roots, tmp_path):
    ours, clinic = two_roots
    data = prepare_data(CONFIG, paths_for(two_roots, tmp_path))
    rows = [r for s in D.SPLITS for r in data.split["splits"][s]]
    assert Counter(r["root"] for r in rows) == {"r0": 24, "r1": 24}
    assert {r["source"] for r in rows} == {"r0:web", "r1:web"}
    for s in D.SPLITS:  # stratified: every (class, source) of both roots in every split
        strata = {(r["label"], r["source"]) for r in data.split["splits"][s]}
        assert len(strata) == 6, s
    side = {}
    for s in D.SPLITS:
        for r in data.split["splits"][s]:
            assert side.setdefault(r["group"], s) == s  # a group never spans splits
    assert all(g.startswith(("r0:", "r1:")) for g in side)

    # each root falls exactly as it would alone: our test split stays held out for every model
    for root_id, folder in (("r0", ours), ("r1", clinic)):
        alone = D.grouped_split(D.read_manifest(folder), CONFIG.split_seed)
        for s in D.SPLITS:
            mine = [r["path"] for r in data.split["splits"][s] if r["root"] == root_id]
            assert mine == [r["path"] for r in alone[s]]

    # one cache entry per row; the same relative path in both roots decodes its own file
    assert len(set(data.images.paths)) == len(data.images.paths) == 48
    where = data.images.index()
    rel = D.read_manifest(ours)[0]["path"]
    for root_id, folder in (("r0", ours), ("r1", clinic)):
        own = CONFIG.preprocessing().to_input_resolution(load_image((folder / rel).read_bytes()))
        np.testing.assert_array_equal(data.images.eval_images[where[f"{root_id}/{rel}"]], own)

    recorded = json.loads((tmp_path / "split.json").read_text())["roots"]
    assert [r["manifest_sha256"] for r in recorded] == [
        D.manifest_sha256(ours),
        D.manifest_sha256(clinic),
    ]
    assert [r["tiers"] for r in data.roots] == [{"A": 8, "A-": 8, "C": 8}, {"own": 24}]


def test_resume_refuses_a_changed_manifest_or_another_set_of_roots(two_roots, tmp_path):
    ours, clinic = two_roots
    copy = tmp_path / "clinic"
    write_synthetic_set(copy, 8, ("web",), seed=5)
    roots = [ours, copy]
    prepare_data(CONFIG, paths_for(roots, tmp_path))
    prepare_data(CONFIG, paths_for(roots, tmp_path))  # unchanged: the split file is reused
    manifest = copy / "manifest.csv"
    original = manifest.read_bytes()
    manifest.write_bytes(original + original.splitlines(keepends=True)[1])
    with pytest.raises(D.DataError, match=r"root r1 .* has another manifest"):
        prepare_data(CONFIG, paths_for(roots, tmp_path))
    with pytest.raises(D.DataError, match="more data roots"):
        prepare_data(CONFIG, paths_for([ours], tmp_path))
    manifest.write_bytes(original)
    prepare_data(CONFIG, paths_for(roots, tmp_path))
    with pytest.raises(D.DataError, match="root r2 .* was not part of it"):
        prepare_data(CONFIG, paths_for([ours, copy, clinic], tmp_path))
    one = tmp_path / "one"
    prepare_data(CONFIG, paths_for([ours], one))
    with pytest.raises(D.DataError, match="made from one data root"):
        prepare_data(CONFIG, paths_for([ours, clinic], one))


def test_evaluation_sets_resolve_each_row_against_its_own_root(two_roots, tmp_path):
    ours, clinic = two_roots
    rows, _ = read_roots([ours, clinic], ["ours", "clinic"])
    picked = [rows[0], rows[24]]  # the same relative path in both roots
    assert picked[0]["path"] == picked[1]["path"]
    image_set = eval_data.load_set("test", R.root_folders([ours, clinic]), picked, ["Acne"], PREP)
    assert image_set.paths == [f"r0/{picked[0]['path']}", f"r1/{picked[1]['path']}"]
    assert not np.array_equal(image_set.images[0], image_set.images[1])
    with pytest.raises(eval_data.DataError, match="every data root"):
        eval_data.load_set("test", ours, picked, ["Acne"], PREP)


def test_evaluate_reads_every_root_of_a_multi_root_split(two_roots, tmp_path):
    data = prepare_data(CONFIG, paths_for(two_roots, tmp_path))
    args = argparse.Namespace(data_root=list(two_roots), limit=None, shift_root=None)
    val, (test,) = evaluate.load_sets(
        args, eval_data.read_split(tmp_path / "split.json"), CLASSES, PREP
    )
    assert test.paths == [R.row_key(r) for r in data.rows("test")]
    assert {p.split("/")[0] for p in val.paths + test.paths} == {"r0", "r1"}
    assert set(test.sources) == {"r0:web", "r1:web"}


@pytest.mark.slow
def test_two_root_training_run_ships_a_card_naming_both_roots(two_roots, tmp_path):
    ours, clinic = two_roots
    args = run_args(ours, tmp_path, "--epochs-frozen", "0", "--cycles", "1", "--lr", "0.05")
    at = args.index("--data-root")
    args[at + 1 : at + 2] = [str(ours), str(clinic)]
    card = json.loads(run_main(*args).read_text())
    roots = card["data"]["roots"]
    assert [r["path"] for r in roots] == [str(ours), str(clinic)]
    assert [r["manifest_sha256"] for r in roots] == [
        D.manifest_sha256(ours),
        D.manifest_sha256(clinic),
    ]
    assert [(r["rows"], r["tiers"]) for r in roots] == [
        (24, {"A": 8, "A-": 8, "C": 8}),
        (24, {"own": 24}),
    ]
    assert card["data"]["manifest_sha256"] == R.combined_sha256(
        [r["manifest_sha256"] for r in roots]
    )
    split = json.loads((tmp_path / "split.json").read_text())
    assert card["data"]["split_counts"]["test"] == len(split["splits"]["test"])
    assert {r["root"] for r in split["splits"]["test"]} == {"r0", "r1"}
