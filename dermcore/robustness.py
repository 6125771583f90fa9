"""Robustness curve of one photo: class probabilities against noise density and blur kernel,
with whether the model abstains and how familiar each view looks (`Predictor.assess`).

Every corrupted view (each density under each seed, each blur kernel) is prepared first, from
one resize of the photo, and then classified. On the CPU the views go through the model one at a
time by default: EfficientNet-Lite0 costs the same CPU time per image at any batch size there,
and batches of 8-32 were measured 1.7-2.5x *slower* on the 2-core machine, because their
activations exceed glibc's mmap threshold and every layer maps and zeroes fresh pages
(`benchmarks/README.md`, bench_sweep). On a GPU pass a larger `batch_size`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dermcore.corruptions import CORRUPTION_SITES, CorruptionSpec, apply_corruption
from dermcore.explain import Assessment, Predictor

DEFAULT_DENSITIES = np.linspace(0.0, 0.05, 21)  # fractions of input pixels; the paper goes to 5%
DEFAULT_KERNELS = (1, 3, 5, 7, 9, 11)  # odd Gaussian kernel sides, pixels; 1 = no blur
DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class RobustnessCurve:
    densities: np.ndarray  # float64 (D,), noise densities as fractions of pixels
    kernels: np.ndarray  # int64 (K,), Gaussian blur kernel sides in pixels
    seeds: np.ndarray  # int64 (S,), noise seeds
    noise_probs: np.ndarray  # float32 (S, D, C), probabilities per seed and density
    blur_probs: np.ndarray  # float32 (K, C), probabilities per blur kernel
    clean_probs: np.ndarray  # float32 (C,), probabilities of the uncorrupted input
    clean_class: int  # top class of the uncorrupted input
    classes: tuple[str, ...]
    # Predictor.assess per view: abstain (bool) and familiarity (float64 in [0, 1], NaN for a
    # model without statistics), shaped like the probabilities without the class axis
    noise_abstain: np.ndarray  # bool (S, D)
    blur_abstain: np.ndarray  # bool (K,)
    clean_abstain: bool
    noise_familiarity: np.ndarray  # float64 (S, D)
    blur_familiarity: np.ndarray  # float64 (K,)
    clean_familiarity: float

    @property
    def noise_top_classes(self) -> np.ndarray:
        """int64 (D,): the top class of the mean-over-seeds probabilities at each density."""
        return self.noise_probs.mean(axis=0).argmax(axis=-1)

    @property
    def blur_top_classes(self) -> np.ndarray:
        """int64 (K,): the top class under each blur kernel."""
        return self.blur_probs.argmax(axis=-1)

    @property
    def noise_tipping_point(self) -> float | None:
        """The smallest density whose mean-over-seeds top class is not the clean one, or None."""
        index = _first_change(self.noise_top_classes, self.clean_class)
        return None if index is None else float(self.densities[index])

    @property
    def blur_tipping_point(self) -> int | None:
        """The smallest blur kernel whose top class is not the clean one, or None."""
        index = _first_change(self.blur_top_classes, self.clean_class)
        return None if index is None else int(self.kernels[index])

    @property
    def noise_abstention_onset(self) -> float | None:
        """The smallest density at which the model abstains under at least half of the seeds,
        or None: where the first of noise_abstain_runs starts."""
        runs = self.noise_abstain_runs
        return float(self.densities[runs[0][0]]) if runs else None

    @property
    def blur_abstention_onset(self) -> int | None:
        """The smallest blur kernel under which the model abstains, or None."""
        runs = self.blur_abstain_runs
        return int(self.kernels[runs[0][0]]) if runs else None

    @property
    def noise_abstain_runs(self) -> list[tuple[int, int]]:
        """(first, last) density index of each run of densities at which the model abstains
        under at least half of the seeds: where a curve shades "Not sure". A model may answer
        again at higher densities, so there can be several runs."""
        return _runs(self.noise_abstain.mean(axis=0) >= 0.5)

    @property
    def blur_abstain_runs(self) -> list[tuple[int, int]]:
        """(first, last) kernel index of each run of kernels under which the model abstains."""
        return _runs(self.blur_abstain)

    def describe(self) -> str:
        """One sentence, e.g. 'The top class changes from Ulcer to Acne at 2.3% noise; it holds
        under every blur kernel.'"""
        clean = self.classes[self.clean_class]
        noise_index = _first_change(self.noise_top_classes, self.clean_class)
        blur_index = _first_change(self.blur_top_classes, self.clean_class)
        if noise_index is None:
            up_to = _percent(self.densities.max())
            noise_part = f"The top class, {clean}, holds at every noise density up to {up_to}"
        else:
            new = self.classes[self.noise_top_classes[noise_index]]
            density = _percent(self.densities[noise_index])
            noise_part = f"The top class changes from {clean} to {new} at {density} noise"
        if blur_index is None:
            joiner = " and" if noise_index is None else "; it holds"
            return f"{noise_part}{joiner} under every blur kernel."
        kernel = int(self.kernels[blur_index])
        new = self.classes[self.blur_top_classes[blur_index]]
        return f"{noise_part}; a {kernel}x{kernel} blur changes it to {new}."


def noise_specs(
    densities: Sequence[float], seeds: Sequence[int], pepper_fraction: float = 0.75
) -> list[CorruptionSpec]:
    """Salt-and-pepper views, seed-major: every density under the first seed, then the next."""
    return [
        CorruptionSpec(noise_density=float(d), pepper_fraction=pepper_fraction, seed=int(s))
        for s in seeds
        for d in densities
    ]


def blur_specs(kernels: Sequence[int]) -> list[CorruptionSpec]:
    """Gaussian-blur views, one per kernel side."""
    return [CorruptionSpec(blur_kernel=int(k)) for k in kernels]


def curve_parts(n_seeds: int = len(DEFAULT_SEEDS), pepper_fraction: float = 0.75) -> list[list]:
    """The default curve's views in the order a page draws them: the clean view and every blur
    kernel first, then one part per noise seed (every density), so a first curve can be drawn
    after two parts and refined seed by seed."""
    parts = [[CorruptionSpec(), *blur_specs(DEFAULT_KERNELS)]]
    return parts + [
        noise_specs(DEFAULT_DENSITIES, [seed], pepper_fraction) for seed in range(n_seeds)
    ]


def classify_views(
    predictor: Predictor,
    photo: np.ndarray,
    specs: Sequence[CorruptionSpec],
    where: str = "input",
    progress: Callable[[float], None] | None = None,
    batch_size: int = 1,
) -> Assessment:
    """Predictor.assess of one uint8 HxWx3 photo under each corruption (N = len(specs)),
    applied `where` as in `corrupt_for_model`: probabilities, familiarity and abstention per
    view. `progress(fraction)` is called as the work advances, ending at 1.0."""
    if where not in CORRUPTION_SITES:
        raise ValueError(f"where must be one of {CORRUPTION_SITES}, got {where!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    report = progress or (lambda fraction: None)
    steps = 2 * len(specs)  # one per prepared image, one per classified image
    inputs = np.empty((len(specs), predictor.input_size, predictor.input_size, 3), np.uint8)
    # where="input" resizes then corrupts (corrupt_for_model), so resize the photo only once.
    resized = predictor.prepare(photo) if where == "input" else None
    for i, spec in enumerate(specs):
        if resized is None:
            inputs[i] = predictor.prepare(photo, spec, where)
        else:
            inputs[i] = apply_corruption(resized, spec)
        report((i + 1) / steps)
    parts = []
    for start in range(0, len(specs), batch_size):
        stop = min(start + batch_size, len(specs))
        parts.append(predictor.assess(inputs[start:stop], batch_size=batch_size))
        report((len(specs) + stop) / steps)
    return Assessment(
        probabilities=np.concatenate([a.probabilities for a in parts]).astype(np.float32),
        familiarity=np.concatenate([a.familiarity for a in parts]).astype(np.float64),
        abstain=np.concatenate([a.abstain for a in parts]).astype(bool),
        score=np.concatenate([a.score for a in parts]).astype(np.float64),
    )


def assemble_curve(
    densities: Sequence[float],
    kernels: Sequence[int],
    seeds: Sequence[int],
    clean: Assessment,
    noise: Assessment,
    blur: Assessment,
    classes: tuple[str, ...],
) -> RobustnessCurve:
    """A curve from assessments computed in parts: clean (1 view), noise (S*D views in the
    order of `noise_specs`), blur (K views in the order of `blur_specs`)."""
    densities = np.asarray(densities, dtype=np.float64)
    seeds = np.asarray(seeds, dtype=np.int64)
    noise_shape = (len(seeds), len(densities))
    return RobustnessCurve(
        densities=densities,
        kernels=np.asarray(kernels, dtype=np.int64),
        seeds=seeds,
        noise_probs=np.asarray(noise.probabilities, np.float32).reshape(*noise_shape, -1),
        blur_probs=np.asarray(blur.probabilities, np.float32),
        clean_probs=np.asarray(clean.probabilities[0], np.float32),
        clean_class=int(np.argmax(clean.probabilities[0])),
        classes=classes,
        noise_abstain=np.asarray(noise.abstain, bool).reshape(noise_shape),
        blur_abstain=np.asarray(blur.abstain, bool),
        clean_abstain=bool(clean.abstain[0]),
        noise_familiarity=np.asarray(noise.familiarity, np.float64).reshape(noise_shape),
        blur_familiarity=np.asarray(blur.familiarity, np.float64),
        clean_familiarity=float(clean.familiarity[0]),
    )


def rows(assessment: Assessment, start: int, stop: int | None = None) -> Assessment:
    """Views start:stop of an assessment."""
    part = slice(start, stop)
    return Assessment(
        assessment.probabilities[part],
        assessment.familiarity[part],
        assessment.abstain[part],
        assessment.score[part],
    )


def robustness_curve(
    predictor: Predictor,
    photo: np.ndarray,
    densities: Sequence[float] = DEFAULT_DENSITIES,
    kernels: Sequence[int] = DEFAULT_KERNELS,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    pepper_fraction: float = 0.75,
    where: str = "input",
    progress: Callable[[float], None] | None = None,
    batch_size: int = 1,
) -> RobustnessCurve:
    """Class probabilities, familiarity and abstention of one uint8 HxWx3 photo under
    salt-and-pepper noise (every density under every seed) and under Gaussian blur (every
    kernel), corrupted `where` as in `corrupt_for_model`. `progress(fraction)` is called as the
    work advances, ending at 1.0."""
    densities = np.asarray(densities, dtype=np.float64)
    kernels = np.asarray(kernels, dtype=np.int64)
    seeds = np.asarray(seeds, dtype=np.int64)
    if any(a.ndim != 1 or len(a) == 0 for a in (densities, kernels, seeds)):
        raise ValueError("densities, kernels and seeds must each be a non-empty 1-D sequence")
    noise = noise_specs(densities, seeds, pepper_fraction)
    specs = [CorruptionSpec(), *noise, *blur_specs(kernels)]  # row 0: the clean input
    views = classify_views(predictor, photo, specs, where, progress, batch_size)
    n_noise = len(noise)
    return assemble_curve(
        densities,
        kernels,
        seeds,
        clean=rows(views, 0, 1),
        noise=rows(views, 1, 1 + n_noise),
        blur=rows(views, 1 + n_noise),
        classes=predictor.classes,
    )


def _first_change(top_classes: np.ndarray, clean_class: int) -> int | None:
    changed = np.flatnonzero(top_classes != clean_class)
    return int(changed[0]) if len(changed) else None


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of consecutive True values, in order."""
    edges = np.diff(np.concatenate([[0], np.asarray(flags, dtype=np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"  # as CorruptionSpec.describe writes densities
