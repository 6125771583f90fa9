"""The held-out-source proxy: the split it trains on, the temperature it scales, the rows it reads."""

import json

import numpy as np
import pytest

from training import metrics
from training.eval_report import calibrate
from training.evaluate import read_shift
from training.familiarity import read_proxy
from training.shift_proxy import fit_shift_factor, missing_proxies, pool, temperature_table
from training.source_holdout import hold_out


def split_rows(rng: np.random.Generator) -> dict:
    """A split.json dict: 'web' feeds A and B, 'clinic' feeds A, B and C, in every split."""
    splits = {}
    for name, n in (("train", 12), ("val", 6), ("test", 6)):
        splits[name] = [
            {
                "path": f"images/{label}/{source}-{name}{i}.jpg",
                "sha256": f"{rng.integers(1 << 30):x}",
                "label": label,
                "source": source,
                "group": f"{source}-{name}{i}",
            }
            for i in range(n)
            for label, source in (("A", "web"), ("B", "web"), ("A", "clinic"), ("B", "clinic"))
        ] + [
            {"path": f"images/C/clinic-{name}{i}.jpg", "sha256": "0", "label": "C"}
            | {"source": "clinic", "group": f"c-{name}{i}"}
            for i in range(n)
        ]
    return {"seed": 0, "method": "grouped", "manifest_sha256": "abc", "splits": splits}


def test_hold_out_moves_one_source_out_of_train_and_val_and_keeps_test():
    split = split_rows(np.random.default_rng(0))
    out = hold_out(split, "web")
    assert out["heldout_source"] == "web" and out["manifest_sha256"] == "abc"
    for name in ("train", "val"):
        assert {r["source"] for r in out["splits"][name]} == {"clinic"}
    assert out["splits"]["test"] == split["splits"]["test"]
    heldout = [r for s in ("train", "val") for r in split["splits"][s] if r["source"] == "web"]
    assert out["heldout"] == heldout and len(heldout) == 2 * (12 + 6)
    assert out["counts"]["heldout"] == {"A": 18, "B": 18}
    assert out["counts"]["train"] == {"A": 12, "B": 12, "C": 12}


def test_hold_out_refuses_a_source_that_would_take_a_class_with_it():
    split = split_rows(np.random.default_rng(0))
    with pytest.raises(ValueError, match="no training photo of \\['C'\\]"):
        hold_out(split, "clinic")
    with pytest.raises(ValueError, match="no photo of source"):
        hold_out(split, "atlas")


def test_calibrate_scales_the_validation_temperature_by_the_shift_factor():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in metrics.softmax(logits / 2.0)])
    alone = calibrate(logits, labels)
    assert alone["temperature"] == pytest.approx(2.0, rel=0.1)
    assert "shift_factor" not in alone
    shifted = calibrate(logits, labels, {"shift_factor": 1.5, "heldout_source": "web"})
    assert shifted["in_source_temperature"] == pytest.approx(alone["temperature"])
    assert shifted["temperature"] == pytest.approx(1.5 * alone["temperature"])
    assert shifted["ece_in_source"] == pytest.approx(alone["ece_after"])
    assert shifted["ece_after"] > shifted["ece_in_source"]  # less sure than validation needs
    assert "held-out-source proxies (web)" in shifted["fitted_on"]
    assert shifted["shift_sources"] == ["web"]
    pooled = calibrate(logits, labels, {"shift_factor": 1.5, "heldout_source": "web, atlas"})
    assert pooled["shift_sources"] == ["web", "atlas"]


def test_proxy_file_round_trip_for_evaluate_and_familiarity(tmp_path):
    path = tmp_path / "shift_proxy.json"
    assert read_shift(path) is None
    with pytest.raises(SystemExit, match="shift_proxy.py"):
        read_proxy(path)
    proxy = {
        "heldout_source": "web",
        "temperature": {"shift_factor": 1.3, "t_val": 0.7, "t_heldout": 0.91},
        "scores": {"texture": {"heldout_auroc_rw": 0.6}},
    }
    path.write_text(json.dumps(proxy))
    assert read_shift(path) == {**proxy["temperature"], "heldout_source": "web"}
    assert read_proxy(path) == proxy["scores"]


def test_statistics_see_the_training_photos_as_the_model_saw_them(tiny_weights_dir, tmp_path):
    from dermcore.checkpoint import load_checkpoint
    from dermcore.explain import Predictor
    from tests.conftest import lesion_photo
    from training.features import PhotoSet, features_of, training_view_of

    model, card = load_checkpoint(tiny_weights_dir / "tiny-noise.json")
    predictor = Predictor(model, card.arch, card.get_preprocessing(), classes=card.classes)
    prep = card.get_preprocessing()
    images = np.stack([prep.to_input_resolution(lesion_photo(seed)) for seed in range(3)])
    photos = PhotoSet("train", images, np.zeros(3, np.int64))
    clean = features_of(predictor, card, photos, "clean", 0, tmp_path)
    card.training = {"train_corruption": "robust"}  # two thirds clean: clean statistics
    for a, b in zip(training_view_of(predictor, card, photos, 0, tmp_path), clean, strict=True):
        np.testing.assert_array_equal(a, b)
    card.training = {"train_corruption": "sp"}  # noise-trained: salt-and-pepper on every photo
    noisy = training_view_of(predictor, card, photos, 0, tmp_path)
    assert (tmp_path / f"{card.name}-{card.weights_sha256[:12]}" / "train-train-sp.npz").is_file()
    assert not np.allclose(noisy[2], clean[2], atol=1e-3)  # the texture view sees the noise
    again = training_view_of(predictor, card, photos, 0, tmp_path / "fresh")  # same draws
    for a, b in zip(noisy, again, strict=True):
        np.testing.assert_array_equal(a, b)


def sampled(rng: np.random.Generator, n: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): calibrated at that T."""
    logits = rng.normal(0, 3, (n, 5))
    labels = np.array([rng.choice(5, p=p) for p in metrics.softmax(logits, temperature)])
    return logits, labels


def test_pooled_shift_factor_weighs_every_source_the_same_whatever_its_size():
    rng = np.random.default_rng(2)
    big, small = sampled(rng, 6000, 1.2), sampled(rng, 600, 3.0)
    alone = fit_shift_factor([big])
    assert alone == pytest.approx(metrics.fit_temperature(*big), rel=1e-5)
    both = fit_shift_factor([big, small])
    assert 1.3 < both < 2.9  # between the two, not pulled to the big source's 1.2
    photo_pooled = metrics.fit_temperature(np.r_[big[0], small[0]], np.r_[big[1], small[1]])
    assert both > photo_pooled + 0.1  # pooling photos would let the big source decide
    # the pooled factor applies to logits already divided by each proxy's validation T
    halved = [(big[0] / 2, big[1]), (small[0] / 2, small[1])]
    assert fit_shift_factor(halved) == pytest.approx(both / 2, rel=1e-4)


def test_pool_averages_each_candidate_over_the_proxies_and_skips_missing_values():
    rng = np.random.default_rng(3)
    heldout = [sampled(rng, 800, 1.0), sampled(rng, 800, 2.0)]
    proxies = [
        {
            "heldout_source": source,
            "temperature": {"t_val": t_val, "shift_factor": factor, "heldout_accuracy": 0.5},
            "scores": {"texture": {"threshold": 0.05, "heldout_auroc_rw": auroc}},
        }
        for source, t_val, factor, auroc in (("web", 0.5, 2.0, 0.6), ("atlas", 1.0, 2.0, None))
    ]
    out = pool(proxies, heldout)
    assert out["scores"] == {"texture": {"heldout_auroc_rw": 0.6}}
    # held-out logits at T 1 and 2, proxies' validation T 0.5 and 1: both need a factor of 2
    assert out["temperature"]["shift_factor"] == pytest.approx(2.0, rel=0.1)
    assert set(out["temperature"]["sources"]) == {"web", "atlas"}
    for row in out["temperature"]["sources"].values():
        assert row["ece_heldout_at_pooled"] < 0.05


def test_results_table_prints_each_proxy_and_the_pooled_factor(tmp_path):
    from training.results_table import shift_proxies

    assert shift_proxies(tmp_path) == []  # no proxies scored yet: no table
    rng = np.random.default_rng(4)
    heldout = [sampled(rng, 400, 1.5), sampled(rng, 400, 3.0)]
    proxies = []
    for source, (logits, labels) in zip(("web", "atlas"), heldout, strict=True):
        views = {"clean": (rng.normal(0, 3, (200, 5)),), "heldout": (logits,)}
        label_sets = {"clean": rng.integers(0, 5, 200), "heldout": labels}
        proxies.append(
            {
                "heldout_source": source,
                "counts": {"clean": 200, "heldout": 400},
                "temperature": temperature_table(views, label_sets),
                "scores": {"texture": {"heldout_auroc_rw": 0.6}},
            }
        )
    data = {**pool(proxies, heldout), "proxies": proxies}
    (tmp_path / "shift_proxy.json").write_text(json.dumps(data))
    rows = shift_proxies(tmp_path)
    assert [r.split(" | ")[0] for r in rows[2:4]] == ["| web", "| atlas"]
    assert rows[2].split(" | ")[1] == "200 / 400"
    factor = data["temperature"]["shift_factor"]
    assert rows[-1].startswith(f"\nPooled shift factor: {factor:.3f}")


def test_an_untrained_proxy_is_named_with_the_commands_that_train_it(tmp_path):
    ready, missing = tmp_path / "holdout-web", tmp_path / "holdout-atlas"
    (ready / "weights").mkdir(parents=True)
    (ready / "split.json").write_text("{}")
    (ready / "weights" / "clean.json").write_text("{}")
    commands = missing_proxies([ready, missing], "clean")
    assert len(commands) == 2
    assert commands[0].startswith("python training/source_holdout.py --source atlas --out ")
    assert f"--split-file {missing}/split.json" in commands[1]
    assert missing_proxies([ready], "clean") == []


def test_results_page_reads_the_proxies_and_ignores_a_malformed_file(tmp_path):
    from dermcore.reports import load_shift_proxies

    assert load_shift_proxies(tmp_path) is None  # nothing scored yet
    path = tmp_path / "shift_proxy.json"
    for broken in ("{not json", "[]", json.dumps({"proxies": [{"heldout_source": "web"}]})):
        path.write_text(broken)
        assert load_shift_proxies(tmp_path) is None
    proxy = {"heldout_source": "web", "counts": {"heldout": 40}}
    proxy["temperature"] = {"val_accuracy": 0.8, "heldout_accuracy": 0.5, "shift_factor": 1.5}
    path.write_text(json.dumps({"temperature": {"shift_factor": 1.4}, "proxies": [proxy]}))
    rows, pooled = load_shift_proxies(tmp_path)
    assert pooled == 1.4 and rows[0]["factor needed"] == 1.5
    assert rows[0]["photos"] == 40 and rows[0]["right on left-out photos"] == 0.5
