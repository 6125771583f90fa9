"""How degraded does a photo already look? A reading of its own noise, blur, JPEG and exposure.

Before any slider moves, `assess_quality(photo, preprocessing)` estimates four kinds of damage the
photo may carry, each placed on the same severity grid as the robustness reports
(weights/reports/<model>/test.json, `sweeps`):

    noise     share of impulse pixels: pure black or pure white AND unlike their 3x3 median (the
              detection step of preprocessing.remove_impulses, with a luminance margin so the rim
              of a clipped highlight does not count); levels 0, 0.5, 1, 2, 3, 4, 5 %
    blur      a fitted score on six difference-of-Gaussian band energies of the luminance and on
              the same band ratios in the photo's busiest tiles (how fast its detail falls off
              from fine to coarse scales, so it is relative to the photo's own content); levels:
              Gaussian kernel 1 (off), 3, 5, 7, 9, 11
    jpeg      8x8 grid discontinuity: mean |step| across the strongest 8-pixel phase, and across
              the phase of a grid anchored at the corner, against the other phases; with the
              finest band's energy (quantisation erases faint detail first); levels: quality 100
              (no re-encode), 90, 70, 50, 30, 10. An upload's own JPEG blocks, made at its full
              resolution, mostly average away on the way down to 224 px: the reading says what
              the model will see, not how the file was encoded.
    exposure  brightness of the photo in linear light (mean and 99th percentile luminance) and its
              clipped highlights; levels: factor 0.5 (under), 1 (normal), 2 (over)

Everything is measured at the model's input resolution (224 px for the shipped presets, after the
preset's resize and centre crop), because that is where the paper, training/evaluate.py and the
app's default corruption site put the corruptions: a 5% density or a 5x5 kernel means the same
thing there for every photo. Impulses are replaced by their 3x3 median before the blur, JPEG and
exposure measures, so noise does not read as detail, blocking or highlights.

Each family's measures become one score through a small polynomial, and fitted thresholds cut the
score into severity levels. The weights and thresholds are data: `training/quality_calibration.py`
fits them on half of the test split corrupted with known settings, validates on the other half and
writes both into weights/reports/quality.json, which `load_calibration()` reads. A JSON file rather
than constants in code: the script that measures the evidence writes the numbers the app uses, with
the validation table beside them, and nothing has to be copied by hand.

`quality_findings(reading, report)` turns a reading into plain sentences tied to one model's
measured accuracy at that severity.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from itertools import combinations_with_replacement
from pathlib import Path
from types import MappingProxyType

import cv2
import numpy as np

from dermcore.corruptions import check_image
from dermcore.preprocessing import Preprocessing

FAMILIES = ("noise", "blur", "jpeg", "exposure")
DEFAULT_CALIBRATION = Path(__file__).resolve().parents[1] / "weights" / "reports" / "quality.json"

# Difference-of-Gaussian ladder for the blur measure, sigmas in input pixels (0 = the image itself).
# Band i holds the detail between BLUR_BAND_SIGMAS[i] and [i + 1]; the finest bands carry what a
# 3x3..11x11 kernel (sigma 0.8..2.0 px) removes, the coarse ones the photo's own content scale.
BLUR_BAND_SIGMAS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.5)
BLUR_MARGIN_PX = 12  # band energies skip this border, where the Gaussian's reflection dominates
# The same idea per tile, for the photo's sharpest parts: a lesion's edge on smooth skin keeps its
# detail where the skin around it has none to lose. Tiles are TILE_PX square (7x7 at 224 px).
TILE_PX = 32
TILE_SIGMAS = (0.0, 0.7, 1.4, 2.8)
JPEG_BLOCK_PX = 8
SHADOW_MAX, HIGHLIGHT_MIN = 5, 250  # uint8: a channel <= 5 is clipped to black, >= 250 to white
_BLACK, _WHITE = (0, 0, 0), (255, 255, 255)
IMPULSE_MARGIN = 32  # uint8 luminance levels an impulse must differ from its 3x3 median by


# --- raw measures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityMeasures:
    """What is measured on one input-resolution image, before any calibration."""

    impulse_share: float  # fraction of pixels pure black/white, unlike their 3x3 median
    blur_bands: tuple[float, ...]  # log mean squared DoG band energy, finest band first
    blur_tiles: tuple[float, ...]  # log band ratios over the busier half of the tiles
    blockiness: float  # log(strongest 8-px phase step / median other phase), ~0 = no blocking
    grid_blockiness: float  # the same at the phase of a grid anchored at the image's corner
    shadows_clipped: float  # fraction of pixels with some channel <= 5
    highlights_clipped: float  # fraction of pixels with some channel >= 250 (skin clips red first)
    mean_luminance: float  # mean linear-light luminance, in [0, 1]
    bright_luminance: float  # 99th percentile linear-light luminance, in [0, 1]

    def features(self) -> dict[str, float]:
        """Flat name -> value map that calibrations pick their score inputs from."""
        values = {
            "impulse_share": self.impulse_share,
            "blockiness": self.blockiness,
            "grid_blockiness": self.grid_blockiness,
            "shadows_clipped": self.shadows_clipped,
            "highlights_clipped": self.highlights_clipped,
            # log2 of luminance: a change of exposure factor f shifts it by log2(f) until clipping
            "log2_mean_luminance": math.log2(self.mean_luminance + 1e-4),
            "log2_bright_luminance": math.log2(self.bright_luminance + 1e-4),
        }
        values.update({f"blur_band{i}": v for i, v in enumerate(self.blur_bands)})
        values.update({f"blur_tile{i}": v for i, v in enumerate(self.blur_tiles)})
        return values


def measure_quality(image: np.ndarray) -> QualityMeasures:
    """Raw measures of a uint8 (H, W, 3) RGB image that is ALREADY at the model input resolution
    (use `assess_quality` for a photo of any size). The input is not modified."""
    check_image(image, min_side=3)
    impulses = _isolated_impulses(image)
    cleaned = image
    if cv2.countNonZero(impulses):
        cleaned = image.copy()
        cv2.copyTo(cv2.medianBlur(image, 3), impulses, cleaned)
    luma = cv2.cvtColor(cleaned, cv2.COLOR_RGB2GRAY)  # uint8 (H, W), Rec. 601 weights
    linear = _SRGB_TO_LINEAR[luma]
    blockiness, grid_blockiness = _blockiness(luma.astype(np.float32))
    return QualityMeasures(
        impulse_share=cv2.countNonZero(impulses) / impulses.size,
        blur_bands=_blur_bands(luma.astype(np.float32)),
        blur_tiles=_blur_tiles(luma.astype(np.float32)),
        blockiness=blockiness,
        grid_blockiness=grid_blockiness,
        shadows_clipped=float((cleaned.min(axis=2) <= SHADOW_MAX).mean()),
        highlights_clipped=float((cleaned.max(axis=2) >= HIGHLIGHT_MIN).mean()),
        mean_luminance=float(linear.mean()),
        bright_luminance=float(np.percentile(linear, 99)),
    )


def _isolated_impulses(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) mask, 255 where a pixel is pure black or white, its 3x3 per-channel median is
    not that same colour, and its luminance is more than IMPULSE_MARGIN from the median's: a dead
    or hot pixel, not the inside of a black border nor the ragged rim of a blown highlight (the
    margin cut false alarms on photos over-exposed x2 from 33% to 0 of the test photos, and kept
    the noise levels' right-level share at 96-100%)."""
    median = cv2.medianBlur(image, 3)
    black = cv2.inRange(image, _BLACK, _BLACK) & ~cv2.inRange(median, _BLACK, _BLACK)
    white = cv2.inRange(image, _WHITE, _WHITE) & ~cv2.inRange(median, _WHITE, _WHITE)
    luma = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    unlike = cv2.absdiff(luma, cv2.cvtColor(median, cv2.COLOR_RGB2GRAY)) > IMPULSE_MARGIN
    return (black | white) & (unlike.astype(np.uint8) * 255)


def _blur_bands(luma: np.ndarray) -> tuple[float, ...]:
    """float32 (H, W) luminance -> log mean squared energy of each DoG band, finest first.
    A Gaussian blur removes energy from the fine bands only; their level against the coarse ones
    is what the calibrated score reads, so a photo with little texture is not called blurred."""
    levels = [
        luma if sigma == 0 else cv2.GaussianBlur(luma, (0, 0), sigma) for sigma in BLUR_BAND_SIGMAS
    ]
    m = BLUR_MARGIN_PX if min(luma.shape) > 4 * BLUR_MARGIN_PX else 0
    inner = (slice(m, luma.shape[0] - m), slice(m, luma.shape[1] - m))
    return tuple(
        math.log(float(np.square(fine[inner] - coarse[inner]).mean()) + 1e-3)
        for fine, coarse in zip(levels, levels[1:], strict=False)
    )


def _blur_tiles(luma: np.ndarray) -> tuple[float, ...]:
    """float32 (H, W) -> (90th percentile and median of log(fine / coarse band energy), 90th
    percentiles of log(fine / middle) and log(middle / coarse)) over the tiles whose coarse band
    is at least the median: flat skin tiles hold only sensor noise and would say nothing."""
    tile = max(4, min(TILE_PX, min(luma.shape) // 2))
    rows, cols = luma.shape[0] // tile, luma.shape[1] // tile
    levels = [luma if s == 0 else cv2.GaussianBlur(luma, (0, 0), s) for s in TILE_SIGMAS]
    energy = [  # per band: (rows * cols,) mean squared band value of each tile
        np.square(fine - coarse)[: rows * tile, : cols * tile]
        .reshape(rows, tile, cols, tile)
        .mean(axis=(1, 3))
        .ravel()
        + 1e-3
        for fine, coarse in zip(levels, levels[1:], strict=False)
    ]
    busy = energy[2] >= np.median(energy[2])
    fine_coarse = np.log(energy[0][busy] / energy[2][busy])
    fine_middle = np.log(energy[0][busy] / energy[1][busy])
    middle_coarse = np.log(energy[1][busy] / energy[2][busy])
    return (
        float(np.percentile(fine_coarse, 90)),
        float(np.median(fine_coarse)),
        float(np.percentile(fine_middle, 90)),
        float(np.percentile(middle_coarse, 90)),
    )


def _blockiness(luma: np.ndarray) -> tuple[float, float]:
    """(strongest phase, corner-anchored phase): log of the mean |step| between neighbouring
    pixels at one of the 8 grid phases over the median of the other seven, averaged over columns
    and rows. JPEG quantises 8x8 blocks independently, so its steps concentrate on one phase; a
    clean image gives ~0 (log 1). A JPEG encoded at this resolution (the app's and the reports'
    corruption) has its block edges between pixels 7 and 8, the phase the second value reads."""
    strongest, anchored = [], []
    for steps in (
        np.abs(np.diff(luma, axis=1)).mean(axis=0),  # (W - 1,): step between columns x and x + 1
        np.abs(np.diff(luma, axis=0)).mean(axis=1),
    ):
        usable = len(steps) // JPEG_BLOCK_PX * JPEG_BLOCK_PX
        if usable == 0:
            continue
        by_phase = steps[:usable].reshape(-1, JPEG_BLOCK_PX).mean(axis=0)
        for phase, ratios in ((int(np.argmax(by_phase)), strongest), (JPEG_BLOCK_PX - 1, anchored)):
            others = np.delete(by_phase, phase)
            ratios.append(by_phase[phase] / max(float(np.median(others)), 1e-3))
    if not strongest:
        return 0.0, 0.0
    return math.log(float(np.mean(strongest))), math.log(float(np.mean(anchored)))


def _srgb_to_linear_table() -> np.ndarray:
    srgb = np.arange(256, dtype=np.float64) / 255.0
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


_SRGB_TO_LINEAR = _srgb_to_linear_table()  # float64 (256,), the inverse of corruptions' exposure


# --- calibration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyCalibration:
    """One family's score and its cuts: score = polynomial(features) . weights, and level i is
    chosen when thresholds[i - 1] <= score < thresholds[i] (levels ordered by increasing score)."""

    family: str
    features: tuple[str, ...]  # names from QualityMeasures.features()
    degree: int  # 1: linear in the features; 2: with every pairwise product and square
    weights: tuple[float, ...]  # one per polynomial term, the constant term last
    levels: tuple[float, ...]  # severity of each level, in score order
    thresholds: tuple[float, ...]  # len(levels) - 1 increasing cuts on the score
    clean_level: float  # the level that means "no damage" (0, 1, 100 or 1.0)

    def __post_init__(self) -> None:
        expected = len(polynomial_terms(np.zeros((1, len(self.features))), self.degree)[0]) + 1
        if len(self.weights) != expected:
            raise ValueError(f"{self.family}: {len(self.weights)} weights, expected {expected}")
        if len(self.thresholds) != len(self.levels) - 1:
            raise ValueError(f"{self.family}: need one threshold fewer than levels")
        if list(self.thresholds) != sorted(self.thresholds):
            raise ValueError(f"{self.family}: thresholds must increase")
        if self.clean_level not in self.levels:
            raise ValueError(f"{self.family}: clean level {self.clean_level} is not a level")

    def score(self, features: Mapping[str, float]) -> float:
        x = np.array([[features[name] for name in self.features]], dtype=np.float64)
        terms = polynomial_terms(x, self.degree)[0]
        return float(terms @ np.asarray(self.weights[:-1]) + self.weights[-1])

    def level_index(self, score: float) -> int:
        return int(np.searchsorted(np.asarray(self.thresholds), score, side="right"))

    def to_dict(self) -> dict:
        return {
            "family": self.family,
            "features": list(self.features),
            "degree": self.degree,
            "weights": list(self.weights),
            "levels": list(self.levels),
            "thresholds": list(self.thresholds),
            "clean_level": self.clean_level,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> FamilyCalibration:
        return cls(
            family=str(data["family"]),
            features=tuple(str(name) for name in data["features"]),
            degree=int(data["degree"]),
            weights=tuple(float(w) for w in data["weights"]),
            levels=tuple(float(v) for v in data["levels"]),
            thresholds=tuple(float(t) for t in data["thresholds"]),
            clean_level=float(data["clean_level"]),
        )


def polynomial_terms(x: np.ndarray, degree: int) -> np.ndarray:
    """float (N, F) -> (N, T): the features, then (degree 2) every product x_i * x_j, i <= j."""
    if degree not in (1, 2):
        raise ValueError(f"degree must be 1 or 2, got {degree}")
    if degree == 1:
        return x
    products = [x[:, i] * x[:, j] for i, j in combinations_with_replacement(range(x.shape[1]), 2)]
    return np.concatenate([x, np.stack(products, axis=1)], axis=1)


@dataclass(frozen=True)
class QualityCalibration:
    families: Mapping[str, FamilyCalibration]
    input_size: int  # the resolution the constants were fitted at, pixels
    source: str = ""  # what fitted them


class QualityCalibrationError(RuntimeError):
    """The calibration file is missing or unreadable; the message says what to do."""


def load_calibration(path: Path | None = None) -> QualityCalibration:
    """Read weights/reports/quality.json (or `path`), written by training/quality_calibration.py.
    Read once per path and process: the result is shared, so its families are read-only."""
    return _load_calibration(Path(path) if path is not None else DEFAULT_CALIBRATION)


@functools.lru_cache(maxsize=4)
def _load_calibration(path: Path) -> QualityCalibration:
    try:
        data = json.loads(path.read_text())
        families = {name: FamilyCalibration.from_dict(data["families"][name]) for name in FAMILIES}
        return QualityCalibration(
            MappingProxyType(families), int(data["input_size"]), str(data.get("source", ""))
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise QualityCalibrationError(
            f"The photo-quality calibration {path} could not be read ({type(error).__name__}); "
            "run training/quality_calibration.py to write it."
        ) from None


# --- the reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FamilyEstimate:
    family: str  # noise | blur | jpeg | exposure
    score: float  # the calibrated score the thresholds cut
    severity: float  # the estimated level: density fraction, kernel px, JPEG quality, factor
    is_clean: bool  # the level means "no damage of this kind"
    is_top: bool  # a damaged level at either end of the ladder, so open-ended ("5% or more")


@dataclass(frozen=True)
class QualityReading:
    """The photo's own degradation, measured at `input_size` px before any corruption."""

    measures: QualityMeasures
    estimates: tuple[FamilyEstimate, ...]  # one per family, in FAMILIES order
    input_size: int

    def estimate(self, family: str) -> FamilyEstimate:
        for estimate in self.estimates:
            if estimate.family == family:
                return estimate
        raise KeyError(f"no estimate for {family!r}; families: {FAMILIES}")


def read_measures(measures: QualityMeasures, calibration: QualityCalibration) -> QualityReading:
    """Place raw measures on each family's severity levels."""
    features = measures.features()
    estimates = []
    for family in FAMILIES:
        cal = calibration.families[family]
        score = cal.score(features)
        index = cal.level_index(score)
        severity = cal.levels[index]
        clean = severity == cal.clean_level
        at_end = index in (0, len(cal.levels) - 1)
        estimates.append(FamilyEstimate(family, score, severity, clean, at_end and not clean))
    return QualityReading(measures, tuple(estimates), calibration.input_size)


def assess_quality(
    photo: np.ndarray,
    preprocessing: Preprocessing,
    calibration: QualityCalibration | None = None,
) -> QualityReading:
    """Read a photo's own noise, blur, JPEG blocking and exposure.

    photo: uint8 (H, W, 3) RGB, any size (the app's working copy); it is brought to the model's
    input resolution with `preprocessing.to_input_resolution` (an image already at the input size
    passes through) and measured there, where the calibration was fitted and where the reports
    corrupt their test photos. A preset with another input size than the calibration's (224 px)
    is measured at the calibration's size with the same crop ratio, since the thresholds are in
    those pixels; `reading.input_size` says which. calibration: None reads
    weights/reports/quality.json. The photo is not modified.
    """
    check_image(photo, min_side=3)
    calibration = calibration or load_calibration()
    if preprocessing.input_size != calibration.input_size:
        scale = calibration.input_size / preprocessing.input_size
        preprocessing = replace(
            preprocessing,
            input_size=calibration.input_size,
            resize_size=max(calibration.input_size, round(preprocessing.resize_size * scale)),
        )
    return read_measures(measure_quality(preprocessing.to_input_resolution(photo)), calibration)


# --- sentences tied to a model's measured curve -------------------------------------------------


@dataclass(frozen=True)
class QualityFinding:
    family: str  # noise | blur | jpeg | exposure
    severity: float  # the estimated level, in the report's sweep units
    label: str  # short, e.g. "7×7 blur", "about 2% noise", "JPEG quality ~30", "under-exposed"
    accuracy: float | None  # the model's top-1 on test photos at that level; None without a curve
    clean_accuracy: float | None  # the model's top-1 on the clean test photos
    sentence: str


def quality_findings(reading: QualityReading, report: Mapping) -> list[QualityFinding]:
    """One finding per family, in FAMILIES order. `report` is one model's parsed
    weights/reports/<model>/test.json: accuracy per condition is `conditions[name]["top1"]`, and
    `sweeps[family]` lists each family's conditions with their severities (clean included)."""
    clean = _top1(report, "clean")
    return [
        _FINDERS[estimate.family](reading, estimate, _curve_accuracy(report, estimate), clean)
        for estimate in reading.estimates
    ]


def _top1(report: Mapping, condition: str) -> float | None:
    value = report.get("conditions", {}).get(condition, {}).get("top1")
    return float(value) if isinstance(value, int | float) else None


def _curve_accuracy(report: Mapping, estimate: FamilyEstimate) -> float | None:
    for point in report.get("sweeps", {}).get(estimate.family, []):
        if math.isclose(float(point["severity"]), estimate.severity, rel_tol=1e-6, abs_tol=1e-9):
            return _top1(report, point["condition"])
    return None


def _percent(fraction: float | None) -> str:
    return "?" if fraction is None else f"{100 * fraction:.0f} %"


def _measured(accuracy: float | None, clean: float | None, setting: str, baseline: str) -> str:
    """'; at that blur the model is right on 61 % of test photos (against 79 % on sharp ones).'"""
    if accuracy is None:
        return ". This model's report has no measurement at that setting."
    against = "" if clean is None else f" (against {_percent(clean)} on {baseline})"
    return f"; at {setting} the model is right on {_percent(accuracy)} of test photos{against}."


def _noise_finding(reading, estimate, accuracy, clean) -> QualityFinding:
    share = reading.measures.impulse_share
    if estimate.is_clean:
        sentence = (
            f"No salt-and-pepper noise found: {100 * share:.2g} % of its pixels are isolated pure "
            f"black or white; the model is right on {_percent(clean)} of noise-free test photos."
        )
        return QualityFinding("noise", estimate.severity, "no noise", clean, clean, sentence)
    level = f"{100 * estimate.severity:g}%"
    about = f"{level} or more" if estimate.is_top else f"about {level}"
    sentence = (
        f"About {100 * share:.2g} % of its pixels look like salt-and-pepper noise (pure black or "
        "white, unlike their neighbours)"
        + _measured(accuracy, clean, f"{100 * estimate.severity:g} % noise", "noise-free ones")
    )
    return QualityFinding("noise", estimate.severity, f"{about} noise", accuracy, clean, sentence)


def _blur_finding(reading, estimate, accuracy, clean) -> QualityFinding:
    if estimate.is_clean:
        sentence = (
            "This photo looks as sharp as the test photos as taken; the model is right on "
            f"{_percent(clean)} of those."
        )
        return QualityFinding("blur", estimate.severity, "sharp", clean, clean, sentence)
    k = int(estimate.severity)
    kernel = f"{k}×{k}"
    how = "at least as blurred as" if estimate.is_top else "about as blurred as"
    sentence = f"This photo looks {how} a {kernel} Gaussian kernel" + _measured(
        accuracy, clean, "that blur", "sharp ones"
    )
    return QualityFinding("blur", estimate.severity, f"{kernel} blur", accuracy, clean, sentence)


def _jpeg_finding(reading, estimate, accuracy, clean) -> QualityFinding:
    if estimate.is_clean:
        sentence = "No JPEG blocking shows at the model's input resolution."
        return QualityFinding("jpeg", estimate.severity, "no blocking", clean, clean, sentence)
    quality = int(estimate.severity)
    sentence = f"It shows 8×8 JPEG blocking like a re-encode at quality {quality}" + _measured(
        accuracy, clean, "that quality", "photos without re-encoding"
    )
    return QualityFinding(
        "jpeg", estimate.severity, f"JPEG quality ~{quality}", accuracy, clean, sentence
    )


def _exposure_finding(reading, estimate, accuracy, clean) -> QualityFinding:
    measures = reading.measures
    if estimate.is_clean:
        sentence = (
            f"Its exposure looks normal ({100 * measures.shadows_clipped:.2g} % of pixels clipped "
            f"to black, {100 * measures.highlights_clipped:.2g} % to white)."
        )
        return QualityFinding(
            "exposure", estimate.severity, "normal exposure", clean, clean, sentence
        )
    under = estimate.severity < 1
    label = "under-exposed" if under else "over-exposed"
    clipped = (
        f"{100 * measures.shadows_clipped:.2g} % of pixels clipped to black"
        if under
        else f"{100 * measures.highlights_clipped:.2g} % clipped to white"
    )
    stops = abs(math.log2(estimate.severity))
    direction = "under" if under else "over"
    setting = (
        f"one stop {direction}" if math.isclose(stops, 1) else f"{stops:.2g} stops {direction}"
    )
    sentence = f"It looks {label} ({clipped})" + _measured(
        accuracy, clean, setting, "photos as taken"
    )
    return QualityFinding("exposure", estimate.severity, label, accuracy, clean, sentence)


_FINDERS = {
    "noise": _noise_finding,
    "blur": _blur_finding,
    "jpeg": _jpeg_finding,
    "exposure": _exposure_finding,
}
