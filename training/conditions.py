"""The evaluation's conditions and the grid that runs them: how each test image is corrupted
(`Condition`, `CONDITIONS`, the severity `SWEEPS`), with per-image seeds that make every report
byte-identical between runs, and `run_grid`, the logits of every image set under every condition.

    run = run_grid(batch_predictor(model, arch, prep, classes), [test, shift], conditions, seed)
    run.logits["sp5"]["test"]   # float32 (N, C)
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from dermcore.corruptions import CorruptionSpec, apply_corruption
from dermcore.explain import Predictor
from dermcore.preprocessing import Preprocessing
from training.eval_data import ImageSet

log = logging.getLogger("evaluate")


@dataclass(frozen=True)
class Condition:
    """One way of showing the test images to the model. Severities are data: `spec` holds them,
    and two switches redraw a part of it per image from that image's seeded generator."""

    name: str
    family: str  # clean | noise | blur | motion | jpeg | exposure
    severity: float  # noise: density fraction; blur: kernel px; motion: length px; jpeg: quality; exposure: factor
    spec: CorruptionSpec = field(default_factory=CorruptionSpec)
    max_density: float | None = None  # noise density drawn per image from U[0, max_density]
    random_angle: bool = False  # motion angle drawn per image from U[0, 180) degrees
    seed_key: str = ""  # conditions sharing a key share per-image draws ("" = the name)

    def spec_for(self, rng: np.random.Generator) -> CorruptionSpec:
        """The spec for one image; rng is that image's generator (it then drives the noise)."""
        changes = {}
        if self.max_density is not None:
            changes["noise_density"] = float(rng.uniform(0.0, self.max_density))
        if self.random_angle:
            changes["motion_angle_deg"] = float(rng.uniform(0.0, 180.0))
        return dataclasses.replace(self.spec, **changes) if changes else self.spec

    def describe(self) -> str:
        if self.max_density is not None:
            return f"salt-and-pepper, density U[0, {self.max_density:g}] per image (3:1)"
        if self.random_angle:
            return f"{self.spec.motion_length_px} px motion blur, angle U[0, 180) per image"
        return self.spec.describe()


def _build_conditions() -> list[Condition]:
    conditions = [
        Condition("clean", "clean", 0.0),
        # the paper's test: "at most 5% of the image pixels", black:white 3:1
        Condition("sp_upto5", "noise", 0.05, max_density=0.05),
    ]
    for percent in (0.5, 1, 2, 3, 4, 5):  # sp5 is the paper's maximum, exactly 5%
        density = percent / 100
        conditions.append(
            Condition(f"sp{percent:g}", "noise", density, CorruptionSpec(noise_density=density))
        )
    for kernel in (3, 5, 7, 9, 11):  # blur5 is the paper's 5x5 Gaussian
        conditions.append(
            Condition(f"blur{kernel}", "blur", kernel, CorruptionSpec(blur_kernel=kernel))
        )
    for length in (5, 10, 15, 20, 25):  # one angle per image for the whole sweep
        spec = CorruptionSpec(motion_length_px=length)
        conditions.append(
            Condition(
                f"motion{length}", "motion", length, spec, random_angle=True, seed_key="motion"
            )
        )
    for quality in (90, 70, 50, 30, 10):
        conditions.append(
            Condition(f"jpeg{quality}", "jpeg", quality, CorruptionSpec(jpeg_quality=quality))
        )
    for factor in (0.5, 0.7, 1.4, 2.0):
        conditions.append(
            Condition(f"exposure{factor:g}", "exposure", factor, CorruptionSpec(exposure=factor))
        )
    return conditions


CONDITIONS: dict[str, Condition] = {c.name: c for c in _build_conditions()}
# Severity sweeps for plots, mildest first. "clean" is each sweep's baseline, plotted at the
# severity that means "unchanged": density 0, kernel 1, length 0, quality 100 (no re-encode),
# exposure factor 1. sp_upto5 is the paper's mixed test, not a sweep point.
SWEEPS: dict[str, list[str]] = {
    "noise": ["clean", "sp0.5", "sp1", "sp2", "sp3", "sp4", "sp5"],
    "blur": ["clean", "blur3", "blur5", "blur7", "blur9", "blur11"],
    "motion": ["clean", "motion5", "motion10", "motion15", "motion20", "motion25"],
    "jpeg": ["clean", "jpeg90", "jpeg70", "jpeg50", "jpeg30", "jpeg10"],
    "exposure": ["exposure0.5", "exposure0.7", "clean", "exposure1.4", "exposure2"],
}
SWEEP_BASELINE = {"noise": 0.0, "blur": 1, "motion": 0, "jpeg": 100, "exposure": 1.0}


def sweep_points(family: str, available: Sequence[str]) -> list[dict]:
    """[{"condition", "severity"}] of one family's sweep, limited to the available conditions."""
    return [
        {
            "condition": n,
            "severity": SWEEP_BASELINE[family] if n == "clean" else CONDITIONS[n].severity,
        }
        for n in SWEEPS[family]
        if n in available
    ]


def image_rng(seed: int, condition: Condition, set_name: str, index: int) -> np.random.Generator:
    """The generator for one image under one condition: a pure function of its arguments."""
    key = condition.seed_key or condition.name
    return np.random.default_rng(
        [seed, zlib.crc32(key.encode()), zlib.crc32(set_name.encode()), index]
    )


# --- running the grid -------------------------------------------------------------------------


@dataclass
class GridRun:
    logits: dict[str, dict[str, np.ndarray]]  # condition -> set name -> float32 (N, C)
    kept: dict[str, np.ndarray]  # condition -> uint8 (K, S, S, 3) images at `keep` of the first set
    forward_s: float = 0.0  # seconds inside the model
    total_s: float = 0.0  # seconds for everything (corrupting, batching, forward)
    n_forward: int = 0


def run_grid(
    predictor: Predictor,
    sets: Sequence[ImageSet],
    conditions: Sequence[Condition],
    seed: int,
    batch_size: int = 64,
    keep: Sequence[int] = (),
) -> GridRun:
    """Logits of every set under every condition. The sets are pooled so batches stay full;
    `keep` indexes the first set, whose corrupted images are kept for the drift study."""
    start = time.perf_counter()
    pool = np.concatenate([s.images for s in sets]) if len(sets) > 1 else sets[0].images
    owners = [(s.name, i) for s in sets for i in range(len(s.labels))]
    bounds = np.cumsum([0] + [len(s.labels) for s in sets])
    run = GridRun(logits={}, kept={})
    for condition in conditions:
        logits = np.empty((len(pool), len(predictor.classes)), np.float32)
        kept = []
        for lo in range(0, len(pool), batch_size):
            hi = min(lo + batch_size, len(pool))
            batch = corrupt_batch(pool[lo:hi], condition, seed, owners[lo:hi])
            kept.extend(batch[i - lo] for i in keep if lo <= i < hi)
            t0 = time.perf_counter()
            logits[lo:hi] = predictor.predict_logits(batch, batch_size=batch_size)
            run.forward_s += time.perf_counter() - t0
            run.n_forward += hi - lo
        run.logits[condition.name] = {
            s.name: logits[bounds[k] : bounds[k + 1]] for k, s in enumerate(sets)
        }
        run.kept[condition.name] = np.stack(kept) if kept else pool[:0]
        log.info("  %-12s %s", condition.name, condition.describe())
    run.total_s = time.perf_counter() - start
    return run


def corrupt_batch(
    images: np.ndarray, condition: Condition, seed: int, owners: Sequence[tuple[str, int]]
) -> np.ndarray:
    """uint8 (B, S, S, 3) -> corrupted copy; owners[i] = (set name, index) of image i."""
    if condition.spec.is_identity and condition.max_density is None:
        return images
    out = np.empty_like(images)
    for i, (set_name, index) in enumerate(owners):
        rng = image_rng(seed, condition, set_name, index)
        out[i] = apply_corruption(images[i], condition.spec_for(rng), rng)
    return out


def batch_predictor(
    model: torch.nn.Module, arch: str, prep: Preprocessing, classes: Sequence[str]
) -> Predictor:
    """A Predictor for batched evaluation (it turns the weights channels-last). Raw logits; T is
    ours."""
    return Predictor(model, arch, prep, classes=classes)
