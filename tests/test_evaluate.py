"""training/metrics.py against scikit-learn, and training/evaluate.py end to end on a tiny
synthetic data set with a tiny randomly initialised model (64 px input, CPU, seconds)."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from dermcore.checkpoint import ModelCard, load_checkpoint, read_card, save_checkpoint
from dermcore.corruptions import CorruptionSpec
from dermcore.explain import Predictor
from dermcore.labels import CLASSES
from dermcore.models import build_model
from training import conditions, eval_data, eval_report, evaluate, metrics

C = len(CLASSES)


def _predictions(seed: int, n: int = 400, absent: tuple[int, ...] = ()):
    """Seeded labels and informative (N, C) probabilities; `absent` classes have no images."""
    rng = np.random.default_rng(seed)
    present = [k for k in range(C) if k not in absent]
    labels = rng.choice(present, n)
    logits = rng.normal(0, 1, (n, C))
    logits[np.arange(n), labels] += rng.uniform(0, 3, n)  # better than chance, not perfect
    return labels, metrics.softmax(logits)


@pytest.mark.parametrize(("seed", "absent"), [(0, ()), (1, ()), (2, (3,)), (3, (0, 9))])
def test_metrics_match_sklearn(seed, absent):
    labels, probs = _predictions(seed, absent=absent)
    predictions = probs.argmax(axis=1)
    everyone = list(range(C))
    assert metrics.accuracy(labels, predictions) == pytest.approx(
        skm.accuracy_score(labels, predictions)
    )
    with pytest.warns(UserWarning) if absent else _no_warning():  # sklearn warns on absent classes
        expected_balanced = skm.balanced_accuracy_score(labels, predictions)
    assert metrics.balanced_accuracy(labels, predictions, C) == pytest.approx(expected_balanced)
    cm = metrics.confusion_matrix(labels, predictions, C)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(labels, predictions, labels=everyone))
    assert cm.sum() == len(labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=everyone, zero_division=np.nan
    )
    ours = metrics.precision_recall_f1(labels, predictions, C)
    np.testing.assert_allclose(ours["precision"], precision, equal_nan=True)
    np.testing.assert_allclose(ours["recall"], recall, equal_nan=True)
    np.testing.assert_allclose(ours["f1"], f1, equal_nan=True)
    np.testing.assert_array_equal(ours["support"], support)
    curves, auroc, macro = metrics.roc_curves(labels, probs)
    for k in range(C):
        if k in absent:
            assert curves[k] is None and np.isnan(auroc[k])  # null, not a crash
        else:
            assert auroc[k] == pytest.approx(skm.roc_auc_score(labels == k, probs[:, k]))
    if not absent:
        assert macro == pytest.approx(
            skm.roc_auc_score(labels, probs, multi_class="ovr", average="macro")
        )
    assert macro == pytest.approx(np.mean([auroc[k] for k in range(C) if k not in absent]))
    assert metrics.negative_log_likelihood(labels, probs) == pytest.approx(
        skm.log_loss(labels, probs, labels=everyone)
    )


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_roc_curves_are_thinned_but_keep_both_ends():
    labels, probs = _predictions(4, n=3000)
    curves, _, _ = metrics.roc_curves(labels, probs, max_points=100)
    for curve in curves:
        assert 2 <= len(curve["fpr"]) <= 100
        assert (curve["fpr"][0], curve["tpr"][0]) == (0.0, 0.0)
        assert (curve["fpr"][-1], curve["tpr"][-1]) == (1.0, 1.0)
        assert np.all(np.diff(curve["fpr"]) >= 0) and np.all(np.diff(curve["tpr"]) >= 0)


def test_ece_near_zero_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(C, 0.5), 40_000)
    labels = np.array([rng.choice(C, p=p) for p in probs])  # the truth drawn from the forecast
    calibrated, reliability = metrics.expected_calibration_error(labels, probs)
    assert calibrated < 0.015
    assert reliability["count"].sum() == len(labels) and len(reliability["edges"]) == 16
    sharpened = probs**4 / (probs**4).sum(axis=1, keepdims=True)  # same ranking, overconfident
    overconfident, _ = metrics.expected_calibration_error(labels, sharpened)
    assert overconfident > 0.15


def test_ece_matches_a_direct_loop():
    labels, probs = _predictions(5, n=500)
    ece, reliability = metrics.expected_calibration_error(labels, probs, n_bins=15)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    expected = 0.0
    for b in range(15):
        inside = (confidence > b / 15) & (confidence <= (b + 1) / 15)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
            assert reliability["accuracy"][b] == pytest.approx(correct[inside].mean())
        else:
            assert np.isnan(reliability["accuracy"][b])
    assert ece == pytest.approx(expected)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(1)
    calibrated_logits = rng.normal(0, 2.5, (20_000, C))
    labels = np.array([rng.choice(C, p=p) for p in metrics.softmax(calibrated_logits)])
    fitted = metrics.fit_temperature(calibrated_logits * true_temperature, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_most_confused_pairs_sum_both_directions_and_sort():
    cm = np.zeros((4, 4), dtype=np.int64)
    cm[0, 1], cm[1, 0] = 3, 4  # 7
    cm[2, 3] = 9  # 9
    cm[3, 1], cm[0, 2] = 2, 2  # 2 and 2: ties keep class order
    cm[np.diag_indices(4)] = 50  # correct predictions are never a pair
    pairs = metrics.most_confused_pairs(cm, ["a", "b", "c", "d"])
    assert [(p["a"], p["b"], p["errors"]) for p in pairs] == [
        ("c", "d", 9),
        ("a", "b", 7),
        ("a", "c", 2),
        ("b", "d", 2),
    ]
    assert pairs[1]["a_as_b"] == 3 and pairs[1]["b_as_a"] == 4


def test_flip_rate():
    assert metrics.flip_rate([0, 1, 2, 3], [0, 1, 2, 3]) == 0.0
    assert metrics.flip_rate([0, 1, 2, 3], [0, 2, 2, 0]) == 0.5


# --- end to end --------------------------------------------------------------------------------

INPUT = 64
SHIFT_LABELS = ("Acne", "Blister", "Erythema", "Pigmented Macula", "Tumor")


def _photo(rng: np.random.Generator, label: int) -> np.ndarray:
    """A 32..64 px photo whose colour depends a little on its class."""
    height, width = rng.integers(32, 65, 2)
    base = np.array([60 + 18 * label, 200 - 15 * label, 90 + 9 * (label % 3)])
    noise = rng.normal(0, 25, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _write_set(root, rng, labels, shift=False):
    rows = []
    for i, label in enumerate(labels):
        name = CLASSES[label]
        path = f"images/{name}/img-{i:03d}.jpg"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".jpg", _photo(rng, label)[..., ::-1])
        assert ok
        (root / path).write_bytes(encoded.tobytes())
        row = {"path": path, "label": name, "source": f"src{label % 3}", "group": f"g{i}",
               "sha256": hashlib.sha256(encoded.tobytes()).hexdigest(),
               "condition": f"{name}-{'ab'[i % 2]}"}  # fmt: skip
        if shift:
            row["table2"] = "yes" if i % 3 else "no"
        rows.append(row)
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Data root, SD-198-like root, weights folder with split.json + a tiny model, runs folder."""
    base = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    data, shift, weights = base / "train", base / "shift", base / "weights"
    for folder in (data, shift, weights):
        folder.mkdir()
    rows = _write_set(data, rng, np.arange(20) % C)
    rows = [{k: v for k, v in row.items() if k != "condition"} for row in rows]  # as split.json
    split = {"splits": {"train": [], "val": rows[:10], "test": rows[10:]}}
    (weights / "split.json").write_text(json.dumps(split))
    shift_labels = [CLASSES.index(SHIFT_LABELS[i % 5]) for i in range(9)]
    _write_set(shift, rng, shift_labels, shift=True)
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", pretrained=False)
    preprocessing = {"input_size": INPUT, "resize_size": INPUT, "mean": [0.5] * 3, "std": [0.5] * 3}
    card = ModelCard(name="clean", arch="efficientnet_lite0", preprocessing=preprocessing,
                     training={"seed": 0})  # fmt: skip
    card_path = save_checkpoint(model, card, weights)
    seed_dir = base / "runs" / "clean" / "seed0"
    seed_dir.mkdir(parents=True)
    for suffix in (".json", ".safetensors"):  # the shipped seed's own checkpoint
        shutil.copyfile(card_path.with_suffix(suffix), seed_dir / f"clean{suffix}")
    (seed_dir / "metrics.jsonl").write_text('{"epoch": 1, "val_loss": 2.0}\n')
    (seed_dir / "lr_find.csv").write_text("lr,loss,smoothed_loss\n0.001,2.3,2.3\n")
    return {"base": base, "data": data, "shift": shift, "weights": weights, "card": card_path}


def _run(workspace, out_name: str, *extra: str):
    args = evaluate.get_args_parser().parse_args(
        [
            "--weights-dir",
            str(workspace["weights"]),
            "--data-root",
            str(workspace["data"]),
            "--shift-root",
            str(workspace["shift"]),
            "--runs-dir",
            str(workspace["base"] / "runs"),
            "--out",
            str(workspace["base"] / out_name),
            "--drift-images",
            "2",
            "--batch-size",
            "32",
            *extra,
        ]  # fmt: skip
    )
    evaluate.main(args)
    return workspace["base"] / out_name


@pytest.fixture(scope="module")
def two_runs(workspace):
    """The full condition grid, twice with the same seed."""
    card_before = read_card(workspace["card"])
    first = _run(workspace, "reports-a")
    second = _run(workspace, "reports-b")
    return first, second, card_before


def test_two_runs_with_one_seed_give_byte_identical_json(two_runs):
    first, second, _ = two_runs
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {
        "paper.json", "table5.json", "clean/test.json", "clean/shift_sd198.json",
        "clean/shift_sd198_lenient.json", "clean/table4.json", "clean/drift.json",
        "clean/summary.json", "clean/training_curves.jsonl", "clean/lr_find.csv",
    }  # fmt: skip
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_reports_hold_every_condition_with_consistent_metrics(two_runs):
    first, _, _ = two_runs
    test = json.loads((first / "clean" / "test.json").read_text())
    assert set(test["conditions"]) == set(conditions.CONDITIONS)
    assert test["probabilities"] == "temperature_scaled"
    for name, result in test["conditions"].items():
        cm = np.array(result["confusion_matrix"])
        assert cm.sum() == test["n_images"] == 10, name
        assert result["top1"] == pytest.approx(np.trace(cm) / cm.sum(), abs=1e-6)
        assert result["family"] in {"clean", "noise", "blur", "motion", "jpeg", "exposure"}
        assert 0 <= result["flip_rate"] <= 1 and 0 <= result["ece"] <= 1
        assert sum(result["reliability"]["count"]) == 10
        assert all(len(c["fpr"]) <= eval_report.ROC_POINTS for c in result["roc"] if c)
    assert test["conditions"]["clean"]["flip_rate"] == 0
    assert [p["severity"] for p in test["sweeps"]["noise"]] == [
        0,
        0.005,
        0.01,
        0.02,
        0.03,
        0.04,
        0.05,
    ]
    strict = json.loads((first / "clean" / "shift_sd198.json").read_text())
    lenient = json.loads((first / "clean" / "shift_sd198_lenient.json").read_text())
    assert (strict["n_images"], lenient["n_images"]) == (6, 9)  # table2=yes rows, all rows
    absent = [k for k, name in enumerate(CLASSES) if name not in SHIFT_LABELS]
    assert all(strict["conditions"]["clean"]["per_class"]["auroc"][k] is None for k in absent)


def test_clean_results_by_source_condition_add_up(two_runs):
    first, _, _ = two_runs
    for stem, n in (("test", 10), ("shift_sd198_lenient", 9)):
        report = json.loads((first / "clean" / f"{stem}.json").read_text())
        by_condition = report["clean_by_condition"]
        assert sum(c["n_images"] for c in by_condition.values()) == n
        correct = 0
        for name, entry in by_condition.items():
            assert name.startswith(entry["label"])  # the fixture names conditions <label>-a/b
            assert sum(entry["predicted"].values()) == entry["n_images"]
            hits = entry["predicted"].get(entry["label"], 0)
            assert entry["recall"] == pytest.approx(hits / entry["n_images"], abs=1e-6)
            correct += hits
        assert correct / n == pytest.approx(report["conditions"]["clean"]["top1"], abs=1e-6)


def test_calibration_goes_into_the_card_and_leaves_the_weights_alone(two_runs, workspace):
    first, _, card_before = two_runs
    _, card = load_checkpoint(workspace["card"])  # verifies the weights' SHA-256
    assert card.weights_sha256 == card_before.weights_sha256
    assert set(card.calibration) >= {"temperature", "ece_before", "ece_after"}
    test = json.loads((first / "clean" / "test.json").read_text())
    assert test["temperature"] == pytest.approx(card.calibration["temperature"], abs=1e-6)


def test_table4_table5_drift_and_paper(two_runs):
    first, _, _ = two_runs
    table4 = json.loads((first / "clean" / "table4.json").read_text())
    assert table4["seeds_available"] == ["seed0"]
    assert table4["pairs"] == sorted(table4["pairs"], key=lambda p: -p["errors"])
    table5 = json.loads((first / "table5.json").read_text())
    assert [(r["test_condition"], r["paper_top1_percent"]) for r in table5["rows"]] == [
        ("clean", 86.9), ("sp_upto5", 68.31), ("blur5", 74.85)
    ]  # fmt: skip
    assert table5["missing_models"] == ["noise-trained", "robust"]
    drift = json.loads((first / "clean" / "drift.json").read_text())
    assert drift["n_images"] == 2
    for rows in drift["sweeps"].values():
        assert rows[0]["condition"] == "clean" and rows[0]["correlation_mean"] == 1
        assert all(-1 <= r["correlation_mean"] <= 1 and 0 <= r["top20_iou_mean"] <= 1 for r in rows)
    paper = json.loads((first / "paper.json").read_text())
    figure19 = np.array(paper["sd198"]["figure19"]["confusion_matrix"])
    assert list(figure19.sum(axis=1)) == [100] * 9 + [71]  # 100 per class, Wheal 71
    assert np.trace(figure19) / figure19.sum() == pytest.approx(0.32, abs=0.005)  # the paper's 32%


def test_identity_corruption_flips_nothing(workspace):
    model, card = load_checkpoint(workspace["card"])
    predictor = Predictor(model, card.arch, card.get_preprocessing(), classes=card.classes)
    rng = np.random.default_rng(3)
    images = np.stack([cv2.resize(_photo(rng, k % C), (INPUT, INPUT)) for k in range(10)])
    image_set = eval_data.ImageSet("test", [""] * 10, np.arange(10) % C, [""] * 10, images)
    identity = conditions.Condition(
        "sp_upto0", "noise", 0.0, max_density=0.0
    )  # runs apply_corruption
    run = conditions.run_grid(
        predictor, [image_set], [conditions.CONDITIONS["clean"], identity], 0, 4
    )
    clean, same = run.logits["clean"]["test"], run.logits["sp_upto0"]["test"]
    np.testing.assert_array_equal(clean, same)
    assert metrics.flip_rate(clean.argmax(1), same.argmax(1)) == 0.0


def test_per_image_corruption_ignores_batching_and_leaves_input_alone():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    before = images.copy()
    owners = [("test", i) for i in range(6)]
    for name in ("sp_upto5", "motion10", "jpeg30"):
        condition = conditions.CONDITIONS[name]
        whole = conditions.corrupt_batch(images, condition, 7, owners)
        halves = np.concatenate(
            [conditions.corrupt_batch(images[:2], condition, 7, owners[:2]),
             conditions.corrupt_batch(images[2:], condition, 7, owners[2:])]
        )  # fmt: skip
        np.testing.assert_array_equal(whole, halves)
        assert not np.array_equal(whole, images)
    np.testing.assert_array_equal(images, before)
    # one angle per image across the whole motion sweep
    angles = {
        name: conditions.CONDITIONS[name]
        .spec_for(conditions.image_rng(7, conditions.CONDITIONS[name], "test", 2))
        .motion_angle_deg
        for name in ("motion5", "motion25")
    }
    assert angles["motion5"] == angles["motion25"]
    assert isinstance(conditions.CONDITIONS["sp5"].spec, CorruptionSpec)


def test_val_select_scores_the_validation_split_clean_first(workspace, capsys):
    from training.experiments import val_select

    args = val_select.get_args_parser().parse_args(
        [str(workspace["card"]), "--data-root", str(workspace["data"]),
         "--split", str(workspace["weights"] / "split.json"), "--conditions", "sp5", "blur5"]
    )  # fmt: skip
    (result,) = val_select.main(args).values()
    assert list(result) == ["clean", "sp5", "blur5"]
    model, card = load_checkpoint(workspace["card"])
    split = json.loads((workspace["weights"] / "split.json").read_text())["splits"]
    val = eval_data.load_set(
        "val", workspace["data"], split["val"], card.classes, card.get_preprocessing()
    )
    predictor = conditions.batch_predictor(model, card.arch, card.get_preprocessing(), card.classes)
    predictions = predictor.predict_logits(val.images, 8).argmax(1)
    expected = metrics.balanced_accuracy(val.labels, predictions, len(card.classes))
    assert result["clean"][0] == pytest.approx(expected)
    assert result["clean"][1] == pytest.approx(metrics.accuracy(val.labels, predictions))
    assert "10 images" in capsys.readouterr().out
