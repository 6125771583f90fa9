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
from dermcore.explain import Predictor

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
        or None: where a curve can mark 'Not sure from here'."""
        index = _first_true(self.noise_abstain.mean(axis=0) >= 0.5)
        return None if index is None else float(self.densities[index])

    @property
    def blur_abstention_onset(self) -> int | None:
        """The smallest blur kernel under which the model abstains, or None."""
        index = _first_true(self.blur_abstain)
        return None if index is None else int(self.kernels[index])

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
    """Class probabilities of one uint8 HxWx3 photo under salt-and-pepper noise (every density
    under every seed) and under Gaussian blur (every kernel), corrupted `where` as in
    `corrupt_for_model`. `progress(fraction)` is called as the work advances, ending at 1.0."""
    if where not in CORRUPTION_SITES:
        raise ValueError(f"where must be one of {CORRUPTION_SITES}, got {where!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    densities = np.asarray(densities, dtype=np.float64)
    kernels = np.asarray(kernels, dtype=np.int64)
    seeds = np.asarray(seeds, dtype=np.int64)
    if any(a.ndim != 1 or len(a) == 0 for a in (densities, kernels, seeds)):
        raise ValueError("densities, kernels and seeds must each be a non-empty 1-D sequence")
    specs = [CorruptionSpec()]  # row 0: the clean input
    specs += [
        CorruptionSpec(noise_density=float(d), pepper_fraction=pepper_fraction, seed=int(s))
        for s in seeds
        for d in densities
    ]
    specs += [CorruptionSpec(blur_kernel=int(k)) for k in kernels]

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
    probs = np.empty((len(specs), len(predictor.classes)), np.float32)
    abstain = np.empty(len(specs), bool)
    familiarity = np.empty(len(specs), np.float64)
    for start in range(0, len(specs), batch_size):
        stop = min(start + batch_size, len(specs))
        assessment = predictor.assess(inputs[start:stop], batch_size=batch_size)
        probs[start:stop] = assessment.probabilities
        abstain[start:stop] = assessment.abstain
        familiarity[start:stop] = assessment.familiarity
        report((len(specs) + stop) / steps)

    n_noise = len(seeds) * len(densities)
    noise_shape = (len(seeds), len(densities))
    return RobustnessCurve(
        densities=densities,
        kernels=kernels,
        seeds=seeds,
        noise_probs=probs[1 : 1 + n_noise].reshape(len(seeds), len(densities), -1),
        blur_probs=probs[1 + n_noise :],
        clean_probs=probs[0],
        clean_class=int(probs[0].argmax()),
        classes=predictor.classes,
        noise_abstain=abstain[1 : 1 + n_noise].reshape(noise_shape),
        blur_abstain=abstain[1 + n_noise :],
        clean_abstain=bool(abstain[0]),
        noise_familiarity=familiarity[1 : 1 + n_noise].reshape(noise_shape),
        blur_familiarity=familiarity[1 + n_noise :],
        clean_familiarity=float(familiarity[0]),
    )


def _first_true(flags: np.ndarray) -> int | None:
    hits = np.flatnonzero(flags)
    return int(hits[0]) if len(hits) else None


def _first_change(top_classes: np.ndarray, clean_class: int) -> int | None:
    changed = np.flatnonzero(top_classes != clean_class)
    return int(changed[0]) if len(changed) else None


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.3g}%"  # as CorruptionSpec.describe writes densities
