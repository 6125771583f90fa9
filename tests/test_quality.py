"""The photo-quality reading: raw measures on seeded synthetic photos, calibrations fitted here on
other synthetic photos (never the shipped numbers, except one schema check), the sentences on a
hand-made report, and the calibration script end to end on a tiny fake data root."""

from __future__ import annotations

import csv
import hashlib
import json

import cv2
import numpy as np
import pytest

from dermcore import corruptions
from dermcore.preprocessing import Preprocessing
from dermcore.quality import (
    FAMILIES,
    FamilyCalibration,
    QualityCalibration,
    QualityCalibrationError,
    assess_quality,
    load_calibration,
    measure_quality,
    quality_findings,
    read_measures,
)
from training import quality_calibration

SIZE = 128  # input side of the synthetic photos, pixels; the measures work at any size >= 3


def textured_lesion(seed: int, size: int = SIZE) -> np.ndarray:
    """uint8 (size, size, 3): skin with smooth multi-scale texture and a darker irregular blob,
    roughly the 1/f spectrum of a photo rather than per-pixel white noise."""
    rng = np.random.default_rng(seed)
    texture = sum(
        cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), sigma) * sigma
        for sigma in (0.7, 1.5, 3.0, 6.0)
    )
    ys, xs = np.mgrid[0:size, 0:size] / size
    angle = np.arctan2(ys - 0.5, xs - 0.5)
    edge = 0.25 + 0.04 * np.sin(5 * angle + rng.uniform(0, 6))
    lesion = np.clip((edge - np.hypot(ys - 0.5, xs - 0.5)) / 0.02, 0, 1)[..., None]
    skin = np.array([215, 165, 140]) + rng.uniform(-15, 15, 3)
    spot = np.array([120, 65, 55]) + rng.uniform(-15, 15, 3)
    image = skin * (1 - lesion) + spot * lesion + 6 * texture[..., None]
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def calibration() -> QualityCalibration:
    """Every family fitted with the script's own functions on 10 synthetic photos (seeds 100+)."""
    images = np.stack([textured_lesion(100 + seed) for seed in range(10)])
    families = {}
    for family, plan in quality_calibration.PLANS.items():
        measured = {
            level: quality_calibration.measure_family(images, family, level, seed=0)
            for level in plan.levels
        }
        families[family] = quality_calibration.fit_family(family, measured)
    return QualityCalibration(families, input_size=SIZE, source="tests")


PREP = Preprocessing(input_size=SIZE, resize_size=SIZE)


def test_clean_photo_reads_no_noise_and_no_blur(calibration):
    reading = assess_quality(textured_lesion(0), PREP, calibration)
    assert reading.measures.impulse_share == 0
    assert reading.estimate("noise").is_clean and reading.estimate("noise").severity == 0
    assert reading.estimate("blur").is_clean and reading.estimate("blur").severity == 1
    assert reading.estimate("exposure").severity == 1
    assert [e.family for e in reading.estimates] == list(FAMILIES)


@pytest.mark.parametrize("density", [0.005, 0.01, 0.02, 0.05])
def test_noise_density_is_estimated_within_tolerance(calibration, density):
    photo = textured_lesion(1)
    noisy = corruptions.salt_and_pepper(photo, density, rng=np.random.default_rng(7))
    reading = read_measures(measure_quality(noisy), calibration)
    # isolated impulses miss only the rare ones whose 3x3 median is the same colour
    assert reading.measures.impulse_share == pytest.approx(density, rel=0.1)
    assert reading.estimate("noise").severity == pytest.approx(density)


def test_impulses_inside_black_or_white_areas_are_not_noise():
    photo = textured_lesion(2)
    photo[:, :20] = 0  # a black border and a blown highlight, as photos have
    photo[40:60, 40:60] = 255
    # only the square's 4 corners, where 5 of 9 neighbours are skin, read as impulses
    assert measure_quality(photo).impulse_share == 4 / SIZE**2


def test_more_blur_reads_as_a_larger_kernel(calibration):
    photo = textured_lesion(3)
    blur = calibration.families["blur"]
    kernels = (1, 3, 5, 7, 9, 11)
    views = [corruptions.gaussian_blur(photo, k) for k in kernels]
    finest = [measure_quality(view).blur_bands[0] for view in views]
    scores = [blur.score(measure_quality(view).features()) for view in views]
    estimated = [
        read_measures(measure_quality(v), calibration).estimate("blur").severity for v in views
    ]
    assert np.all(np.diff(finest) < 0)  # a wider kernel leaves less fine detail
    assert np.all(np.diff(scores) > 0)
    assert np.all(np.diff(estimated) >= 0) and estimated[0] == 1 and estimated[-1] >= 9
    assert estimated[-1] > estimated[1]


def test_low_jpeg_quality_reads_blockier_than_high(calibration):
    photo = textured_lesion(4)
    measures = {q: measure_quality(corruptions.jpeg_compression(photo, q)) for q in (90, 50, 10)}
    assert measures[10].blockiness > measures[50].blockiness > measures[90].blockiness
    assert measures[10].grid_blockiness > measures[90].grid_blockiness
    low = read_measures(measures[10], calibration).estimate("jpeg")
    high = read_measures(measures[90], calibration).estimate("jpeg")
    assert low.severity < high.severity  # JPEG quality: lower is worse
    assert low.score > high.score


def test_under_and_over_exposed_photos_read_so(calibration):
    photo = textured_lesion(5)
    dark = read_measures(measure_quality(corruptions.exposure(photo, 0.5)), calibration)
    bright = read_measures(measure_quality(corruptions.exposure(photo, 2.0)), calibration)
    assert dark.estimate("exposure").severity == 0.5
    assert bright.estimate("exposure").severity == 2.0
    assert dark.measures.mean_luminance < measure_quality(photo).mean_luminance
    assert bright.measures.highlights_clipped > 0


def test_assess_quality_measures_at_the_input_size_and_leaves_the_photo_alone(calibration):
    photo = cv2.resize(textured_lesion(6), (300, 200), interpolation=cv2.INTER_LINEAR)
    photo.flags.writeable = False
    reading = assess_quality(photo, PREP, calibration)
    assert reading.input_size == SIZE
    # a preset of another size is measured at the calibration's size, with its crop ratio
    other = assess_quality(photo, Preprocessing(input_size=64, resize_size=64), calibration)
    assert other == reading
    with pytest.raises(ValueError, match="uint8"):
        measure_quality(photo.astype(np.float32))


REPORT = {
    "conditions": {
        "clean": {"top1": 0.79},
        "blur7": {"top1": 0.61},
        "sp2": {"top1": 0.35},
        "exposure0.5": {"top1": 0.7},
    },
    "sweeps": {
        "blur": [{"condition": "clean", "severity": 1}, {"condition": "blur7", "severity": 7}],
        "noise": [{"condition": "clean", "severity": 0.0}, {"condition": "sp2", "severity": 0.02}],
        "exposure": [
            {"condition": "exposure0.5", "severity": 0.5},
            {"condition": "clean", "severity": 1.0},
        ],
    },
}


def _calibration_at(severities: dict[str, float]) -> QualityCalibration:
    """A calibration whose scores are constant, so each family reads the level asked for."""
    levels = {"noise": (0, 0.01, 0.02, 0.05), "blur": (1, 5, 7, 11), "jpeg": (100, 50, 30),
              "exposure": (0.5, 1, 2)}  # fmt: skip
    clean = {"noise": 0, "blur": 1, "jpeg": 100, "exposure": 1}
    families = {}
    for family in FAMILIES:
        index = levels[family].index(severities[family])
        families[family] = FamilyCalibration(
            family, ("impulse_share",), 1, (0.0, index + 0.5), levels[family],
            tuple(range(1, len(levels[family]))), clean[family],
        )  # fmt: skip
    return QualityCalibration(families, input_size=SIZE)


def test_findings_quote_the_models_accuracy_at_the_estimated_severity():
    photo = corruptions.salt_and_pepper(textured_lesion(7), 0.02, rng=np.random.default_rng(0))
    measures = measure_quality(photo)
    cal = _calibration_at({"noise": 0.02, "blur": 7, "jpeg": 30, "exposure": 0.5})
    findings = {f.family: f for f in quality_findings(read_measures(measures, cal), REPORT)}
    assert list(findings) == list(FAMILIES)
    blur = findings["blur"]
    assert (blur.severity, blur.accuracy, blur.clean_accuracy) == (7, 0.61, 0.79)
    assert "about as blurred as a 7×7" in blur.sentence
    assert "61 %" in blur.sentence and "79 %" in blur.sentence
    noise = findings["noise"]
    assert noise.accuracy == 0.35 and noise.label == "about 2% noise"
    assert noise.sentence.startswith("About 2 % of its pixels look like salt-and-pepper noise")
    jpeg = findings["jpeg"]  # the report has no JPEG curve: a neutral sentence
    assert jpeg.accuracy is None and "no measurement" in jpeg.sentence
    exposure = findings["exposure"]
    assert exposure.label == "under-exposed" and exposure.accuracy == 0.7


def test_findings_for_a_clean_photo_and_an_open_ended_top_level():
    measures = measure_quality(textured_lesion(8))
    cal = _calibration_at({"noise": 0.05, "blur": 1, "jpeg": 100, "exposure": 1})
    findings = {f.family: f for f in quality_findings(read_measures(measures, cal), REPORT)}
    assert findings["blur"].label == "sharp" and findings["blur"].accuracy == 0.79
    assert findings["noise"].label == "5% or more noise"
    assert (
        findings["jpeg"].label == "no blocking" and findings["exposure"].label == "normal exposure"
    )


def test_findings_without_a_report_still_read_plainly():
    measures = measure_quality(textured_lesion(9))
    cal = _calibration_at({"noise": 0.01, "blur": 5, "jpeg": 50, "exposure": 2})
    findings = quality_findings(read_measures(measures, cal), {})
    assert all(f.accuracy is None and f.clean_accuracy is None for f in findings)
    assert all("no measurement" in f.sentence for f in findings)
    assert findings[3].label == "over-exposed"


def test_family_calibration_checks_itself_and_round_trips():
    good = FamilyCalibration("blur", ("blur_band0",), 1, (1.0, 0.0), (1, 3), (0.5,), 1)
    assert FamilyCalibration.from_dict(good.to_dict()) == good
    with pytest.raises(ValueError, match="increase"):
        FamilyCalibration("blur", ("blur_band0",), 1, (1.0, 0.0), (1, 3, 5), (0.5, 0.1), 1)
    with pytest.raises(ValueError, match="weights"):
        FamilyCalibration("blur", ("blur_band0",), 2, (1.0, 0.0), (1, 3), (0.5,), 1)


def test_missing_calibration_file_says_what_to_do(tmp_path):
    with pytest.raises(QualityCalibrationError, match="quality_calibration.py"):
        load_calibration(tmp_path / "absent.json")


def test_shipped_calibration_matches_this_code():
    """weights/reports/quality.json (written by the script) loads with every family."""
    shipped = load_calibration()
    assert set(shipped.families) == set(FAMILIES) and shipped.input_size == 224


def _fake_data_root(root, n_photos: int = 10):
    """Photos of 96..140 px as JPEG files, a manifest and a split, as tests/test_evaluate.py."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n_photos):
        height, width = rng.integers(96, 141, 2)
        photo = cv2.resize(textured_lesion(200 + i), (int(width), int(height)))
        ok, encoded = cv2.imencode(".jpg", photo[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        path = f"images/Acne/img-{i:03d}.jpg"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(encoded.tobytes())
        rows.append({"path": path, "label": "Acne", "source": "synthetic", "group": f"g{i}",
                     "sha256": hashlib.sha256(encoded.tobytes()).hexdigest()})  # fmt: skip
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    split = root / "split.json"
    split.write_text(json.dumps({"splits": {"train": [], "val": rows[:2], "test": rows[2:]}}))
    return split


def test_calibration_script_end_to_end(tmp_path):
    split = _fake_data_root(tmp_path)
    out = tmp_path / "reports" / "quality.json"
    argv = ["--data-root", tmp_path, "--split", split, "--out", out, "--input-size", 64]
    args = quality_calibration.get_args_parser().parse_args([str(a) for a in argv])
    quality_calibration.main(args)
    report = json.loads(out.read_text())
    assert report["data"]["fit_photos"] == 4 and report["data"]["validation_photos"] == 4
    for family in FAMILIES:
        rows = report["validation"][family]
        assert rows and all(sum(r["estimated"].values()) == 4 for r in rows)
        fitted = [r for r in rows if "right_level" in r]
        assert all(0 <= r["right_level"] <= r["within_one_level"] <= 1 for r in fitted)
    assert report["false_alarms"]["noise"]["blur"] == 0  # blur never makes isolated impulses
    assert set(report["summary"]) == set(FAMILIES)
    assert all(0 <= v <= 1 for pooled in report["summary"].values() for v in pooled.values())
    calibration = load_calibration(out)
    reading = assess_quality(textured_lesion(1, 90), Preprocessing(64, 64), calibration)
    assert reading.input_size == 64
