"""training/: split, sampling, augmentation, schedules, LR range test, the two phases, resume,
and a two-process torchrun run. Tiny seeded synthetic data written into tmp folders; the model
is an untrained EfficientNet-Lite0 at 64 px, so nothing here reads the real data or weights."""

import csv
import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from dermcore.imageio import load_image
from dermcore.labels import CLASSES
from dermcore.models import build_model, get_arch, get_module
from dermcore.preprocessing import Preprocessing
from training import data as D
from training import engine, report, seed_run
from training import train as T
from training.augment import AugmentConfig, augment, corrupt_for_training, robust_spec
from training.config import ADDED_FIELDS, TrainConfig
from training.experiments import dann, dro, probe
from training.lr_find import LRFindResult, lr_find
from training.schedules import (
    cycle_lengths,
    cycle_starts,
    discriminative_lrs,
    exponential_sweep,
    sgdr_lambda,
    sgdr_lr,
)

REPO = Path(__file__).resolve().parents[1]
CLASSES3 = ("Acne", "Blister", "Ulcer")
TINY = [
    "--no-pretrained",
    "--train-size",
    "64",
    "--input-size",
    "64",
    "--batch-size",
    "8",
    "--lr-find-iters",
    "5",
]


def write_synthetic_set(
    root: Path, per_stratum: int, sources: tuple[str, ...], seed: int, table2: bool = False
) -> list[dict]:
    """48 px JPEGs whose colour depends on the class (learnable) and the source (a style cue),
    with groups of two images among the first six of each stratum."""
    rng = np.random.default_rng(seed)
    rows = []
    for ci, label in enumerate(CLASSES3):
        for si, source in enumerate(sources):
            for k in range(per_stratum):
                colour = np.array([60 + 80 * ci, 90 + 40 * si, 200 - 70 * ci], float)
                image = np.clip(colour + rng.normal(0, 25, (48, 48 + 8 * si, 3)), 0, 255).astype(
                    np.uint8
                )
                rel = f"images/{label}/{source}-{k:03d}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                encoded = cv2.imencode(".jpg", image[..., ::-1])[1].tobytes()
                (root / rel).write_bytes(encoded)
                row = {
                    "path": rel,
                    "label": label,
                    "source": source,
                    "group": f"{source}-{label}-{k // 2 if k < 6 else k}",
                    "sha256": hashlib.sha256(encoded).hexdigest(),
                }
                if table2:
                    row["table2"] = "yes" if k % 3 else "no"
                rows.append(row)
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("data")
    write_synthetic_set(base / "train", 10, ("srcA", "srcB"), seed=0)
    write_synthetic_set(base / "shift-sd198", 3, ("sd198",), seed=1, table2=True)
    return base / "train"


@pytest.fixture(autouse=True)
def restore_torch_globals():
    """engine.seed_everything() switches on deterministic algorithms; keep other tests unaffected."""
    deterministic, rng = torch.are_deterministic_algorithms_enabled(), torch.get_rng_state()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_rng_state(rng)


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--data-root",
        str(root),
        "--split-file",
        str(out / "split.json"),
        "--cache-dir",
        str(out / "cache"),
        "--out-dir",
        str(out / "runs"),
        "--weights-dir",
        str(out / "weights"),
        *TINY,
        *extra,
    ]


def run_main(*argv: str) -> Path | None:
    return T.main(T.get_args_parser().parse_args(list(argv)))


# --- split and sampling -----------------------------------------------------------------------


def fake_rows(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for label, source, n_groups in [
        ("Acne", "a", 60),
        ("Acne", "b", 25),
        ("Ulcer", "c", 40),
        ("Tumor", "d", 9),
    ]:
        for g in range(n_groups):
            for k in range(int(rng.choice([1, 1, 1, 2, 3, 5]))):
                rows.append(
                    {
                        "path": f"{source}/{g}-{k}.jpg",
                        "label": label,
                        "source": source,
                        "group": f"{source}{g}",
                        "sha256": "0" * 64,
                    }
                )
    return rows


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_split_never_leaks_a_group_and_hits_the_fractions(seed):
    rows = fake_rows()
    splits = D.grouped_split(rows, seed)
    groups = {s: {r["group"] for r in splits[s]} for s in D.SPLITS}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(v) for v in splits.values()) == len(rows)
    for split, fraction in zip(D.SPLITS, D.DEFAULT_FRACTIONS, strict=True):
        assert abs(len(splits[split]) / len(rows) - fraction) < 0.03
    for stratum in {(r["label"], r["source"]) for r in rows}:  # every stratum reaches val and test
        assert all(any((r["label"], r["source"]) == stratum for r in splits[s]) for s in D.SPLITS)
    assert D.grouped_split(rows, seed) == splits


def test_split_depends_on_its_seed_and_round_trips_through_json(tmp_path):
    rows = fake_rows()
    a, b = D.grouped_split(rows, 0), D.grouped_split(rows, 1)
    assert a["test"] != b["test"]
    path = tmp_path / "split.json"
    D.write_split(
        path, a, seed=0, fractions=D.DEFAULT_FRACTIONS, manifest_hash="abc", data_root=tmp_path
    )
    data = D.read_split(path, "abc")
    assert data["seed"] == 0 and data["manifest_sha256"] == "abc"
    assert [r["path"] for r in data["splits"]["val"]] == [r["path"] for r in a["val"]]
    assert set(data["splits"]["test"][0]) == {"path", "sha256", "label", "source", "group"}
    assert sum(data["counts"]["train"].values()) == len(a["train"])
    with pytest.raises(D.DataError, match="different manifest"):
        D.read_split(path, "another")


def test_class_source_weights_balance_classes_then_sources():
    rows = fake_rows()
    weights = D.sampling_weights(rows, "class-source")
    per_class, per_stratum = Counter(), Counter()
    for row, w in zip(rows, weights, strict=True):
        per_class[row["label"]] += w
        per_stratum[(row["label"], row["source"])] += w
    assert all(math.isclose(v, 1 / 3) for v in per_class.values())
    assert math.isclose(per_stratum[("Acne", "a")], per_stratum[("Acne", "b")])
    assert D.sampling_weights(rows, "uniform") is None
    assert all(
        math.isclose(v, 1 / 3)
        for v in _class_totals(rows, D.sampling_weights(rows, "class")).values()
    )


def _class_totals(rows, weights):
    totals = Counter()
    for row, w in zip(rows, weights, strict=True):
        totals[row["label"]] += w
    return totals


@pytest.mark.parametrize("weights", [None, np.full(11, 1 / 11)])
def test_epoch_sampler_shards_cover_the_epoch_and_depend_only_on_seed_and_epoch(weights):
    shards = []
    for rank in range(3):
        sampler = D.EpochSampler(11, weights, seed=5, rank=rank, world_size=3)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    positions = sorted(p for shard in shards for _, _, p in shard)
    assert positions == sorted(list(range(11)) + [0])  # padded to 12 by repeating the head
    full = D.EpochSampler(11, weights, seed=5)
    full.set_epoch(2)
    by_position = {position: index for shard in shards for index, _, position in shard}
    assert [by_position[p] for p in range(11)] == [index for index, _, _ in full]
    again = D.EpochSampler(11, weights, seed=5)
    again.set_epoch(3)
    assert [k[0] for k in again] != [k[0] for k in full]
    if weights is None:
        assert sorted(k[0] for k in full) == list(range(11))


# --- augmentation and cache -------------------------------------------------------------------


@pytest.mark.parametrize("corruption", ["none", "sp", "robust"])
def test_augment_is_seeded_and_does_not_mutate(corruption):
    image = np.random.default_rng(0).integers(0, 256, (90, 130, 3), dtype=np.uint8)
    before = image.copy()
    config = AugmentConfig(size=64, corruption=corruption)
    a = augment(image, config, np.random.default_rng([1, 2, 3]))
    b = augment(image, config, np.random.default_rng([1, 2, 3]))
    c = augment(image, config, np.random.default_rng([1, 2, 4]))
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(image, before)


def test_sp_training_corruption_sets_black_and_white_pixels():
    grey = np.full((200, 200, 3), 128, np.uint8)
    config = AugmentConfig(
        size=128,
        corruption="sp",
        brightness=0,
        contrast=0,
        saturation=0,
        hue=0,
        downscale_p=0,
        jpeg_p=0,
    )
    out = augment(grey, config, np.random.default_rng(3))
    black = np.all(out == 0, axis=2).mean()
    white = np.all(out == 255, axis=2).mean()
    assert 0 < black + white <= 0.05 and black > white


def test_robust_specs_stay_in_their_ranges():
    specs = [robust_spec(np.random.default_rng(i), noise=i % 2 == 0) for i in range(400)]
    for i, spec in enumerate(specs):
        assert spec.blur_kernel in (1, 3, 5, 7, 9, 11)
        assert spec.motion_length_px == 0 or 5 <= spec.motion_length_px <= 25
        assert spec.jpeg_quality is None or 10 <= spec.jpeg_quality <= 90
        assert 0.5 <= spec.exposure <= 1.8
        if i % 2 == 0:
            assert 0 <= spec.noise_density <= 0.06
        else:  # no noise, and at least one other corruption
            assert spec.noise_density == 0 and not spec.is_identity
    assert {s.blur_kernel > 1 for s in specs} == {True, False}
    noisy = [s for s in specs[::2]]
    assert max(s.noise_density for s in noisy) > 0.05  # the range reaches past the paper's 5%


@pytest.mark.parametrize("clean_share", [1 / 3, 2 / 3])
def test_robust_mix_splits_the_corrupted_share_between_noise_and_the_rest(clean_share):
    grey = np.full((32, 32, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    kinds = []
    for _ in range(600):
        out = corrupt_for_training(grey, "robust", rng, clean_share)
        extreme = np.all(out == 0, axis=2) | np.all(out == 255, axis=2)
        kinds.append("clean" if out is grey else "noise" if extreme.any() else "other")
    shares = {k: kinds.count(k) / len(kinds) for k in ("clean", "noise", "other")}
    expected = {
        "clean": clean_share,
        "noise": (1 - clean_share) / 2,
        "other": (1 - clean_share) / 2,
    }
    for kind, share in shares.items():
        assert abs(share - expected[kind]) < 0.06, shares


def test_robust_name_turns_the_impulse_filter_on_and_the_card_preset_carries_it():
    parse = lambda *a: T.config_from_args(T.get_args_parser().parse_args(list(a)))  # noqa: E731
    robust, clean = parse("--name", "robust"), parse("--name", "clean")
    assert robust.impulse_filter and robust.preprocessing().impulse_filter
    assert not clean.impulse_filter and not clean.preprocessing().impulse_filter
    assert not parse("--name", "robust", "--no-impulse-filter").impulse_filter
    assert parse("--name", "x", "--impulse-filter", "--input-size", "64").preprocessing() == (
        Preprocessing(64, 64, impulse_filter=True)
    )
    assert parse("--robust-clean-share", "0.5").robust_clean_share == 0.5
    with pytest.raises(ValueError, match="robust_clean_share"):
        AugmentConfig(corruption="robust", robust_clean_share=1.5)


def test_cache_matches_the_app_preprocessing_and_is_reused(dataset_root, tmp_path):
    rows = D.read_manifest(dataset_root)
    prep = Preprocessing(64, 64)
    digest = D.manifest_sha256(dataset_root)
    first = D.load_decoded(dataset_root, rows, prep, tmp_path, digest, short_side=32)
    photo = load_image((dataset_root / rows[3]["path"]).read_bytes())
    assert np.array_equal(first.eval_images[3], prep.to_input_resolution(photo))
    assert min(first.train_image(3).shape[:2]) == 32
    mtime = next(tmp_path.iterdir()).stat().st_mtime_ns
    second = D.load_decoded(dataset_root, rows, prep, tmp_path, digest, short_side=32)
    assert next(tmp_path.iterdir()).stat().st_mtime_ns == mtime
    assert np.array_equal(second.train_image(7), first.train_image(7))


# --- schedules --------------------------------------------------------------------------------


def test_sgdr_matches_its_formula_and_restarts_at_1_3_7_epochs():
    steps_per_epoch = 10
    lengths = [e * steps_per_epoch for e in cycle_lengths(3, first=1, cycle_mult=2)]
    assert cycle_lengths(3) == [1, 2, 4] and cycle_starts([1, 2, 4]) == [0, 1, 3]
    lr_max, lr_min = 0.3, 0.01
    for epoch in (0, 1, 3):  # cycle starts
        assert sgdr_lr(epoch * steps_per_epoch, lengths, lr_max, lr_min) == pytest.approx(lr_max)
    assert sgdr_lr(5, lengths, lr_max, lr_min) == pytest.approx(
        (lr_max + lr_min) / 2
    )  # mid cycle 1
    assert sgdr_lr(20, lengths, lr_max, lr_min) == pytest.approx(
        (lr_max + lr_min) / 2
    )  # mid cycle 2
    assert sgdr_lr(50, lengths, lr_max, lr_min) == pytest.approx(
        (lr_max + lr_min) / 2
    )  # mid cycle 3
    for step in (3, 17, 44):
        start = max(s for s in (0, 10, 30) if s <= step)
        length = dict(zip((0, 10, 30), lengths, strict=True))[start]
        expected = lr_min + 0.5 * (lr_max - lr_min) * (
            1 + math.cos(math.pi * (step - start) / length)
        )
        assert sgdr_lr(step, lengths, lr_max, lr_min) == pytest.approx(expected)
    assert sgdr_lr(9, lengths, lr_max, lr_min) < sgdr_lr(10, lengths, lr_max, lr_min)  # a restart
    assert sgdr_lr(70, lengths, lr_max, lr_min) == lr_min  # after the last cycle (7 epochs)


def test_sgdr_lambda_drives_lambdalr_like_the_pure_function():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, sgdr_lambda([4, 8], min_ratio=0.1))
    for step in range(12):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(sgdr_lr(step, [4, 8], 0.2, 0.02))
        optimizer.step()
        scheduler.step()


def test_sweep_and_discriminative_rates():
    assert exponential_sweep(0, 5, 1e-4, 1.0) == pytest.approx(1e-4)
    assert exponential_sweep(4, 5, 1e-4, 1.0) == pytest.approx(1.0)
    assert exponential_sweep(2, 5, 1e-4, 1.0) == pytest.approx(1e-2)
    assert discriminative_lrs(0.3) == pytest.approx([0.003, 0.03, 0.1, 0.3])


# --- LR range test ----------------------------------------------------------------------------


def quadratic_problem(curvature: float, seed: int = 0):
    """Least squares whose Hessian is ~curvature * I: plain SGD converges fastest at
    lr = 1/curvature and diverges above 2/curvature."""
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(4096, 8, generator=g) * math.sqrt(curvature)
    targets = inputs @ torch.randn(8, 1, generator=g)
    model = nn.Linear(8, 1, bias=False)
    batches = [(inputs[i : i + 256], targets[i : i + 256]) for i in range(0, 4096, 256)]
    return model, batches, lambda out, y: 0.5 * ((out - y) ** 2).mean()


@pytest.mark.parametrize("curvature", [10.0, 1000.0])
def test_lr_find_lands_below_the_known_divergence_point(curvature):
    torch.manual_seed(0)
    model, batches, loss = quadratic_problem(curvature)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    result = lr_find(model, batches, optimizer, loss, start_lr=1e-6, end_lr=10.0, num_iter=100)
    best = 1 / curvature
    assert result.diverged
    # min loss / 10 lands on the optimum 1/curvature: the EMA's lag puts the smoothed minimum
    # about 10x past it, near the divergence point 2/curvature and beyond.
    assert best / 3 <= result.suggested_lr <= 3 * best
    assert result.steepest_lr < result.min_loss_lr
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) < 100


def test_lr_find_restores_model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()  # momentum buffers exist now
    model_before = {k: v.clone() for k, v in model.state_dict().items()}
    optim_before = optimizer.state_dict()
    momentum_before = [optimizer.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    lr_find(model, [(x, y)] * 4, optimizer, nn.functional.cross_entropy, num_iter=20)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in model_before.items())
    assert [g["lr"] for g in optimizer.param_groups] == [
        g["lr"] for g in optim_before["param_groups"]
    ]
    after = [optimizer.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(after, momentum_before, strict=True))


# --- the two phases ---------------------------------------------------------------------------


def random_batches(n: int, size: int = 64, batch: int = 4):
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, 3, size, size, generator=g),
            torch.randint(0, 10, (batch,), generator=g),
            torch.arange(batch),
        )
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def lite0():
    torch.manual_seed(0)
    return build_model("efficientnet_lite0", pretrained=False)


def test_frozen_phase_changes_only_the_head(lite0):
    model = build_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0.state_dict())
    config = TrainConfig()
    engine.configure_phase(model, config.arch, "frozen")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = engine.build_optimizer(model, config, "frozen", 0.5)
    engine.train_one_epoch(
        model,
        random_batches(3),
        optimizer,
        nn.CrossEntropyLoss(),
        torch.device("cpu"),
        phase="frozen",
        first_step=0,
        cycle_lengths=[3],
    )
    head = get_arch(config.arch).head
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"{head}.weight", f"{head}.bias"}  # BN running stats included in "unchanged"
    assert not model.training
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {
        id(p) for p in get_module(model, head).parameters()
    }


def test_full_phase_has_discriminative_rates_in_the_optimizer():
    model = build_model("efficientnet_lite0", pretrained=False)
    config = TrainConfig()
    engine.configure_phase(model, config.arch, "full")
    optimizer = engine.build_optimizer(model, config, "full", 0.09)
    engine.train_one_epoch(
        model,
        random_batches(1),
        optimizer,
        nn.CrossEntropyLoss(),
        torch.device("cpu"),
        phase="full",
        first_step=0,
        cycle_lengths=[10],
    )
    by_name = {}
    for group in optimizer.param_groups:
        by_name.setdefault(group["name"], set()).add(group["lr"])
    lrs = {name: next(iter(v)) for name, v in by_name.items()}
    assert sgdr_lr(0, [10], 0.09) == pytest.approx(0.09)
    assert lrs["head"] == pytest.approx(0.09) and lrs["low"] == pytest.approx(0.0009)
    assert len({round(v, 12) for v in lrs.values()}) >= 3
    assert model.conv_stem.weight in [
        p for g in optimizer.param_groups if g["name"] == "low" for p in g["params"]
    ]
    no_decay = [p for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert all(p.ndim == 1 for p in no_decay) and model.bn1.weight in no_decay
    assert model.training


# --- whole runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_lr_range_test_is_recorded_with_lr_and_changes_no_training_draw(
    dataset_root, tmp_path, monkeypatch
):
    """With --lr the range test still runs (Figures 1-2), on a forked RNG: the weights equal a
    run whose range test is replaced by one that draws nothing."""
    args = ["--epochs-frozen", "1", "--cycles", "1", "--lr", "0.05", "--seed", "0"]
    run_main(*run_args(dataset_root, tmp_path / "real", *args))
    real = tmp_path / "real/runs/clean/seed0"
    assert (real / "lr_find.png").is_file() and (real / "lr_find.csv").is_file()
    card = json.loads((tmp_path / "real/weights/clean.json").read_text())
    assert card["training"]["lr"]["phase1"] == 0.05 and card["training"]["lr"]["source"] == "--lr"
    assert card["training"]["lr"]["suggested_lr"] > 0

    stub = LRFindResult([1e-3], [1.0], [1.0], 1e-4, 1e-3, None, False)
    monkeypatch.setattr(seed_run, "run_lr_find", lambda *a, **k: stub)
    monkeypatch.setattr(seed_run, "write_lr_find", lambda *a, **k: None)
    run_main(*run_args(dataset_root, tmp_path / "stub", *args))
    a = torch.load(real / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "stub/runs/clean/seed0/last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_resume_continues_bit_identically_and_ships_the_median_seed(dataset_root, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = ["--epochs-frozen", "1", "--cycles", "1"]
    card_path = run_main(*run_args(dataset_root, straight, *args, "--seeds", "0", "1"))
    assert (
        run_main(*run_args(dataset_root, split, *args, "--seed", "0", "--stop-after-epochs", "1"))
        is None
    )
    with pytest.raises(SystemExit, match="--resume"):
        run_main(*run_args(dataset_root, split, *args, "--seed", "0"))
    # A run started before a config field existed holds the value the code then used.
    stopped = split / "runs/clean/seed0/last.pt"
    state = torch.load(stopped, weights_only=False)
    for field in ADDED_FIELDS:
        del state["config"][field]
    torch.save(state, stopped)
    with pytest.raises(SystemExit, match=r"configuration \(robust_clean_share\)"):
        run_main(*run_args(dataset_root, split, *args, "--seed", "0", "--resume"))
    resume = ["--seed", "0", "--resume", "--robust-clean-share", repr(1 / 3)]
    run_main(*run_args(dataset_root, split, *args, *resume))

    a = torch.load(straight / "runs/clean/seed0/last.pt", weights_only=False)
    b = torch.load(split / "runs/clean/seed0/last.pt", weights_only=False)
    assert (
        a["progress"]["epoch_done"] == b["progress"]["epoch_done"] == 2 and a["done"] and b["done"]
    )
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    momentum = lambda s: [v["momentum_buffer"] for v in s["optimizer"]["state"].values()]  # noqa: E731
    assert all(torch.equal(x, y) for x, y in zip(momentum(a), momentum(b), strict=True))
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(a["progress"]["history"]) == strip(b["progress"]["history"])
    lines = (split / "runs/clean/seed0/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    saved = np.load(split / "runs/clean/seed0/val_logits_e2.npz")
    assert saved["logits"].shape == (len(saved["labels"]), len(CLASSES))
    assert float(
        report.classification_report(saved["labels"], saved["logits"])["balanced_accuracy"]
    ) == pytest.approx(json.loads(lines[1])["val_balanced_acc"], abs=1e-6)

    card = json.loads(card_path.read_text())
    metrics = card["metrics"]
    for key in ("test", "test_mean", "test_std", "shift_sd198"):
        assert {"accuracy", "balanced_accuracy", "macro_auroc", "per_class_recall"} <= set(
            metrics[key]
        )
    assert [r["seed"] for r in metrics["per_seed"]] == [0, 1]
    vals = [r["val"]["balanced_accuracy"] for r in metrics["per_seed"]]
    median = float(np.median(vals))
    assert (
        card["training"]["shipped_seed"]
        == min((abs(v - median), s) for s, v in zip((0, 1), vals, strict=True))[1]
    )
    assert card["data"]["manifest_sha256"] == D.manifest_sha256(dataset_root)
    assert card["data"]["split_file"] == "split.json" and len(card["data"]["split_sha256"]) == 64
    assert card["training"]["config"]["cycles"] == [1] and card["training"]["command"]
    assert (straight / "runs/clean/seed0/lr_find.png").is_file()
    assert (straight / "runs/clean/seed0/loss_curves.png").is_file()


@pytest.mark.slow
def test_torchrun_two_processes_share_each_epoch_and_write_one_checkpoint(dataset_root, tmp_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(REPO / "training" / "train.py"),
        *run_args(
            dataset_root,
            tmp_path,
            "--epochs-frozen",
            "0",
            "--cycles",
            "1",
            "--sampling",
            "uniform",
            "--debug-sample-log",
            "--device",
            "cpu",
            "--domain-adversarial",
            "0.3",
        ),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.pt")) == [
        "runs/clean/seed0/last.pt"
    ]
    assert [p.name for p in (tmp_path / "weights").glob("*.json")] == ["clean.json"]
    entries = [
        json.loads(line)
        for line in (tmp_path / "runs/clean/seed0/samples.jsonl").read_text().splitlines()
    ]
    assert sorted(e["rank"] for e in entries) == [0, 1]
    n_train = len(json.loads((tmp_path / "split.json").read_text())["splits"]["train"])
    assert n_train % 2 == 0  # so no padding: the two shards together are a permutation
    shard0, shard1 = (e["indices"] for e in sorted(entries, key=lambda e: e["rank"]))
    assert len(shard0) == len(shard1) == n_train // 2
    assert sorted(shard0 + shard1) == list(range(n_train))
    row = json.loads((tmp_path / "runs/clean/seed0/metrics.jsonl").read_text())
    assert row["phase"] == "full" and row["adversary_loss"] > 0  # the DANN head trained under DDP


# --- domain-adversarial head ------------------------------------------------------------------


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = torch.randn(5, 3, requires_grad=True)
    (dann.grad_reverse(x, 0.7) * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.7 * torch.arange(3.0).expand(5, 3))
    assert dann.adversary_weight(0.0, 0.3) == 0.0
    assert dann.adversary_weight(1.0, 0.3) == pytest.approx(0.3, rel=1e-3)


def test_source_adversary_only_separates_sources_within_a_class():
    rows = [
        {"label": "Acne", "source": "a"},
        {"label": "Acne", "source": "b"},
        {"label": "Ulcer", "source": "c"},
    ]
    names, per_row, allowed = dann.source_table(rows)
    assert names == ["a", "b", "c"] and per_row.tolist() == [0, 1, 2]
    adversary = dann.SourceAdversary(4, allowed, hidden=8)
    features = torch.randn(3, 4, requires_grad=True)
    labels = torch.tensor([CLASSES.index(r["label"]) for r in rows])
    adversary.loss(features, labels, per_row, weight=1.0).backward()
    assert features.grad[:2].abs().sum() > 0  # the two Acne sources are told apart
    assert features.grad[2].abs().sum() == 0  # Ulcer has one source: no signal at all
    only_ulcer = adversary.loss(features[2:], labels[2:], per_row[2:], weight=1.0)
    assert only_ulcer.item() == 0.0 and only_ulcer.requires_grad


def test_with_adversary_returns_the_classifier_logits():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", pretrained=False).eval()
    _, sources, allowed = dann.source_table([{"label": "Acne", "source": s} for s in "ab"])
    net = dann.WithAdversary(model, "efficientnet_lite0", dann.SourceAdversary(1280, allowed))
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 0])
    logits, loss = net(x, labels, sources)
    assert torch.equal(logits, model(x)) and torch.equal(net(x), logits)
    assert loss.item() > 0 and not model.classifier._forward_hooks


# --- reporting --------------------------------------------------------------------------------


def test_shipped_seed_is_the_median_on_validation_never_on_test():
    def scores(b):
        return {
            "accuracy": b,
            "balanced_accuracy": b,
            "macro_auroc": b,
            "per_class_recall": {"Acne": b},
        }

    def result(seed, val, test):
        return {"seed": seed, "val": scores(val), "test": scores(test)}

    results = [result(0, 0.70, 0.99), result(1, 0.80, 0.10), result(2, 0.74, 0.50)]
    assert report.pick_shipped(results)["seed"] == 2  # median validation, whatever test says
    assert report.pick_shipped(results[:2])["seed"] == 0  # a tie goes to the lower seed
    mean, std = report.mean_std([r["test"] for r in results])
    assert mean["accuracy"] == pytest.approx(0.53) and mean["per_class_recall"][
        "Acne"
    ] == pytest.approx(0.53)
    assert std["balanced_accuracy"] == pytest.approx(
        float(np.std([0.99, 0.10, 0.50], ddof=1)), abs=1e-6
    )


def test_classification_report_averages_over_present_classes_only():
    labels = np.array([0, 0, 2, 2])
    logits = np.eye(10)[[0, 1, 2, 2]] * 5.0
    scores = report.classification_report(labels, logits)
    assert scores["accuracy"] == 0.75 and scores["balanced_accuracy"] == 0.75
    assert scores["per_class_recall"] == {"Acne": 0.5, "Blister": 1.0}
    assert scores["macro_auroc"] == 0.875 and scores["n"] == 4  # Acne 0.75 (a tie), Blister 1


def test_frozen_batchnorm_in_phase_two_keeps_running_stats_but_learns_affine():
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", pretrained=False)
    config = TrainConfig(bn="frozen")
    engine.configure_phase(model, config.arch, "full")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = engine.build_optimizer(model, config, "full", 0.5)
    engine.train_one_epoch(
        model,
        random_batches(1),
        optimizer,
        nn.CrossEntropyLoss(),
        torch.device("cpu"),
        phase="full",
        first_step=0,
        cycle_lengths=[10],
        bn="frozen",
    )
    after = model.state_dict()
    assert torch.equal(after["bn2.running_mean"], before["bn2.running_mean"])
    assert not torch.equal(after["bn2.weight"], before["bn2.weight"])
    assert not torch.equal(after["conv_stem.weight"], before["conv_stem.weight"])


# --- WiSE-FT ----------------------------------------------------------------------------------


def test_wise_ft_interpolates_floats_and_keeps_integer_buffers():
    from training.experiments.wise_ft import interpolate

    torch.manual_seed(0)
    probe = {"w": torch.randn(3, 4), "bn.num_batches_tracked": torch.tensor(0)}
    tuned = {"w": torch.randn(3, 4), "bn.num_batches_tracked": torch.tensor(7)}
    assert torch.equal(interpolate(probe, tuned, 0.0)["w"], probe["w"])
    assert torch.equal(interpolate(probe, tuned, 1.0)["w"], tuned["w"])
    half = interpolate(probe, tuned, 0.5)
    assert torch.allclose(half["w"], (probe["w"] + tuned["w"]) / 2)
    assert half["bn.num_batches_tracked"].item() == 7
    with pytest.raises(ValueError, match="different keys"):
        interpolate({"w": probe["w"]}, tuned, 0.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate({**probe, "w": torch.zeros(4, 3)}, tuned, 0.5)


# --- group DRO --------------------------------------------------------------------------------


def test_group_table_pairs_class_and_source():
    rows = [
        {"label": "Acne", "source": "b"},
        {"label": "Acne", "source": "a"},
        {"label": "Ulcer", "source": "a"},
        {"label": "Acne", "source": "b"},
    ]
    names, groups = dro.group_table(rows)
    assert names == ["Acne / a", "Acne / b", "Ulcer / a"]
    assert groups.tolist() == [1, 0, 2, 1]


def test_group_dro_moves_weight_to_the_worst_group_and_weights_the_loss():
    names, groups = ["g0", "g1", "g2"], torch.tensor([0, 0, 1, 1, 2])
    robust = dro.GroupDRO(names, groups, eta=0.5)
    targets = torch.tensor([0, 1, 0, 1])
    logits = torch.zeros(4, 3, requires_grad=True)
    with torch.no_grad():
        logits[2:, 2] = 4.0  # group 1 (indices 2, 3) confidently wrong
    indices = torch.tensor([0, 1, 2, 3])  # group 2 absent from this batch
    loss = robust.loss(logits, targets, indices)
    per_image = torch.nn.functional.cross_entropy(logits, targets, reduction="none").detach()
    group_loss = torch.stack([per_image[:2].mean(), per_image[2:].mean()]).double()
    q = torch.tensor([1 / 3, 1 / 3, 1 / 3], dtype=torch.float64)
    q[:2] *= torch.exp(0.5 * group_loss)
    q /= q.sum()
    torch.testing.assert_close(robust.q, q)  # exponentiated gradient, absent group untouched
    expected = (q[:2] * group_loss).sum() / q[:2].sum()
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert robust.worst() == ("g1", pytest.approx(float(q[1])))
    assert robust.q[1] > robust.q[0] > robust.q[2]
    loss.backward()
    assert logits.grad[2:].abs().sum() > logits.grad[:2].abs().sum()  # the worst group pulls harder

    twin = dro.GroupDRO(names, groups, eta=0.5)
    twin.load_state_dict(robust.state_dict())
    assert torch.equal(twin.q, robust.q)
    with pytest.raises(ValueError, match="other groups"):
        dro.GroupDRO(["x", "y", "z"], groups, eta=0.5).load_state_dict(robust.state_dict())
    with pytest.raises(ValueError, match="eta"):
        dro.GroupDRO(names, groups, eta=0.0)


@pytest.mark.slow
def test_group_dro_run_logs_the_worst_group_and_resumes_its_weights(dataset_root, tmp_path):
    args = ["--epochs-frozen", "1", "--cycles", "1", "--group-dro", "0.05", "--seed", "0"]
    run_main(*run_args(dataset_root, tmp_path, *args, "--stop-after-epochs", "1"))
    first = torch.load(tmp_path / "runs/clean/seed0/last.pt", weights_only=False)
    q = first["group_dro"]["q"]
    assert len(q) == len(first["group_dro"]["names"]) and max(q) > min(q)
    run_main(*run_args(dataset_root, tmp_path, *args, "--resume"))
    rows = [json.loads(x) for x in (tmp_path / "runs/clean/seed0/metrics.jsonl").open()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(r["dro_worst_group"] in first["group_dro"]["names"] for r in rows)
    assert rows[0]["dro_worst_weight"] == pytest.approx(max(q), abs=1e-6)


def test_keep_study_scores_each_rule_on_the_half_it_did_not_choose_on(tmp_path):
    from training.experiments import keep_study

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    groups = np.arange(len(labels)) // 2  # pairs of images share a group
    wrong = (labels + 1) % 4
    noisy = np.where(rng.random(len(labels)) < 0.5, labels, wrong)  # epoch 1: ~50% right
    slightly = np.where(np.arange(len(labels)) % 10 == 0, wrong, labels)  # epoch 3: 90% right
    predictions = np.stack([noisy, labels, slightly])  # epoch 2 is perfect
    for k, p in enumerate(predictions, 1):
        np.savez_compressed(tmp_path / f"val_logits_e{k}.npz", logits=np.eye(4)[p], labels=labels)
    loaded_labels, loaded = keep_study.load_epochs(tmp_path)
    assert np.array_equal(loaded_labels, labels) and np.array_equal(loaded, predictions)

    rules = keep_study.rule_epochs(3, epochs_frozen=1)
    assert rules == {"best": [0, 1, 2], "last": [2], "best-full": [1, 2]}
    scores = keep_study.held_out_scores(
        labels, predictions, groups, rules, np.random.default_rng(1), n_splits=5
    )
    assert scores["best"] == scores["best-full"] == 1.0
    assert scores["last"] == pytest.approx(0.9, abs=0.05)


# --- linear probe (LP-FT) ----------------------------------------------------------------------


def test_dihedral_views_are_the_eight_symmetries_of_the_square():
    image = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    views = [probe.dihedral(image, v) for v in range(probe.VIEWS)]
    assert np.array_equal(views[0], image)
    assert len({v.tobytes() for v in views}) == 8  # all distinct for an asymmetric image
    assert np.array_equal(views[1][0], np.rot90(image[0]))
    assert np.array_equal(views[4][0], image[0][:, ::-1])


def test_probe_head_gives_scikit_learn_probabilities_and_absent_classes_never_win():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    centres = rng.normal(0, 3, (3, 5))
    features = (centres[labels][:, None] + rng.normal(0, 1, (60, 2, 5))).astype(np.float32)
    features[..., 4] = features[..., 4] * 100 + 50  # scale and offset: folded back correctly?
    weights = rng.uniform(0.5, 2, 60)
    weight, bias, info = probe.fit_probe(features, labels, weights, c=1.0, num_classes=5)
    assert weight.shape == (5, 5) and bias.shape == (5,) and info["converged"]
    head = nn.Linear(5, 5)
    probe.set_linear(head, weight, bias)
    x = features.reshape(-1, 5)
    with torch.no_grad():
        ours = torch.softmax(head(torch.from_numpy(x)), 1).numpy()
    # the same fit by hand, on standardised features
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    w = np.repeat(weights, 2) / weights.mean()
    scaler = StandardScaler().fit(x, sample_weight=w)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(
        scaler.transform(x), np.repeat(labels, 2), sample_weight=w
    )
    expected = ref.predict_proba(scaler.transform(x))
    np.testing.assert_allclose(ours[:, :3], expected, atol=1e-4)
    assert ours[:, 3:].max() < 1e-4  # classes 3 and 4 had no sample
    assert (ours.argmax(1) == np.repeat(labels, 2)).mean() > 0.9
    with pytest.raises(ValueError, match="does not fit"):
        probe.set_linear(nn.Linear(5, 4), weight, bias)


def test_probe_features_are_the_head_inputs_of_every_view_with_its_corruption(lite0):
    model = lite0.eval()
    head = get_module(model, get_arch("efficientnet_lite0").head)
    prep = Preprocessing(32, 32)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    seen = []

    def corrupt(image, view, index):
        seen.append((view, index))
        return np.zeros_like(image) if view == 7 else image

    feats = probe.head_features(model, head, images, prep, torch.device("cpu"), corrupt=corrupt)
    assert feats.shape == (3, 8, head.in_features) and feats.dtype == np.float32
    assert sorted(seen) == [(v, i) for v in range(8) for i in range(3)]
    captured = []
    handle = head.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    with torch.no_grad():
        model(prep.to_tensor(np.ascontiguousarray(images.transpose(0, 2, 1, 3)[:, ::-1])))
    handle.remove()
    # the view of a 90-degree rotation, computed independently of probe.dihedral
    np.testing.assert_allclose(feats[:, 1], captured[0].numpy(), atol=1e-5)
    blank = feats[:, 7]
    assert np.allclose(blank, blank[0], atol=1e-5)  # view 7 was corrupted to black for all


def test_probe_run_starts_phase_two_from_the_probe_and_records_it(dataset_root, tmp_path):
    # at rate 0 (and BatchNorm statistics frozen) phase 2 leaves the weights as they start, so
    # its first epoch must score exactly what the probe scored
    args = ["--epochs-frozen", "0", "--cycles", "1", "--probe-c", "0.1", "--lr", "0", "--seed", "0"]
    run_main(*run_args(dataset_root, tmp_path, *args))
    state = torch.load(tmp_path / "runs/clean/seed0/last.pt", weights_only=False)
    info = state["progress"]["lr"]["probe"]
    assert info["c"] == 0.1 and info["converged"] and 0 <= info["val_balanced_acc"] <= 1
    assert state["config"]["probe_c"] == 0.1
    rows = [json.loads(x) for x in (tmp_path / "runs/clean/seed0/metrics.jsonl").open()]
    assert [r["phase"] for r in rows] == ["full"]
    assert rows[0]["val_balanced_acc"] == info["val_balanced_acc"]
    head = state["model"]["classifier.weight"]
    present = [CLASSES.index(c) for c in CLASSES3]
    absent = [i for i in range(len(CLASSES)) if i not in present]
    assert head[absent].abs().max() == 0 < head[present].abs().max()  # classes with no image
