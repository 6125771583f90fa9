"""Training augmentations on uint8 HxWx3 RGB arrays (numpy + OpenCV, no PIL, no torch).

Each class of set A comes from one to three sources, and a model can learn a source's style
(resolution, framing, colour cast, compression) instead of the lesion (shared/data/README.md,
"Known issues"). The augmentations are chosen against those cues:

    random 90-degree rotation + flip   Alopecia photos were rotated at random by the exporter, so
                                       every class gets all eight orientations
    random resized crop, scale 0.35-1  framing and zoom
    colour jitter                      brightness, contrast, saturation, hue of a camera or agency
    random down-and-up scaling         the small 100-250 px sources look soft when enlarged
    random JPEG re-encode, q 30-95     compression strength differs by source
    [training corruption]              "sp" (the paper's noise-trained model) or "robust" (our mix),
                                       at the model's input resolution, after everything else

All randomness comes from the `numpy.random.Generator` passed in, which the dataset seeds from
(base seed, epoch, position in the epoch, image index): a run is reproducible and a resumed run
draws exactly what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from dermcore.corruptions import CorruptionSpec, apply_corruption, jpeg_compression, salt_and_pepper

TRAIN_CORRUPTIONS = ("none", "sp", "robust")


@dataclass(frozen=True)
class AugmentConfig:
    size: int = 192  # side of the square training crop, pixels
    crop_scale: tuple[float, float] = (0.35, 1.0)  # crop area as a fraction of the image area
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio (w / h), log-uniform
    brightness: float = 0.3  # multiplier drawn from [1 - b, 1 + b]
    contrast: float = 0.3  # blend with the mean grey, factor from [1 - c, 1 + c]
    saturation: float = 0.3  # blend with the luma image, factor from [1 - s, 1 + s]
    hue: float = 0.04  # hue shift as a fraction of the full circle, from [-h, h]
    downscale_p: float = 0.3  # probability of the down-and-up scaling
    downscale_factor: tuple[float, float] = (0.3, 0.9)  # intermediate side / crop side
    jpeg_p: float = 0.5  # probability of a JPEG re-encode
    jpeg_quality: tuple[int, int] = (30, 95)  # inclusive range
    corruption: str = "none"  # none | sp | robust (see corrupt_for_training)
    robust_clean_share: float = 2 / 3  # robust mix: share of images left clean

    def __post_init__(self) -> None:
        if self.corruption not in TRAIN_CORRUPTIONS:
            raise ValueError(
                f"corruption must be one of {TRAIN_CORRUPTIONS}, got {self.corruption!r}"
            )
        if not 0 <= self.robust_clean_share <= 1:
            raise ValueError(f"robust_clean_share must be in [0, 1], got {self.robust_clean_share}")


def augment(image: np.ndarray, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """uint8 (H, W, 3) photo -> new uint8 (size, size, 3) training image."""
    out = random_dihedral(image, rng)
    out = random_resized_crop(out, config.size, config.crop_scale, config.crop_ratio, rng)
    out = colour_jitter(out, config.brightness, config.contrast, config.saturation, config.hue, rng)
    if rng.random() < config.downscale_p:
        out = down_and_up(out, rng.uniform(*config.downscale_factor))
    if rng.random() < config.jpeg_p:
        out = jpeg_compression(
            out, int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        )
    return corrupt_for_training(out, config.corruption, rng, config.robust_clean_share)


def random_dihedral(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the 8 rotations/reflections of the square, uniformly (a view, not a copy)."""
    out = np.rot90(image, int(rng.integers(4)))
    return out[:, ::-1] if rng.random() < 0.5 else out


def random_resized_crop(
    image: np.ndarray,
    size: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """torchvision's RandomResizedCrop: up to 10 tries for a crop of random area and aspect that
    fits, else the largest centred crop within `ratio`; resized to (size, size)."""
    height, width = image.shape[:2]
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(height - h + 1))
            left = int(rng.integers(width - w + 1))
            return _resize(image[top : top + h, left : left + w], size)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return _resize(image[top : top + h, left : left + w], size)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
    shrink = image.shape[0] >= size and image.shape[1] >= size
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(image), (size, size), interpolation=interpolation)


def colour_jitter(
    image: np.ndarray,
    brightness: float,
    contrast: float,
    saturation: float,
    hue: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Brightness, contrast, saturation (in float) then hue (in OpenCV's 8-bit HSV, H in 0..179)."""
    out = image.astype(np.float32)
    out *= rng.uniform(1 - brightness, 1 + brightness)
    grey = out @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # (H, W) luma
    factor = rng.uniform(1 - contrast, 1 + contrast)
    out = (out - grey.mean()) * factor + grey.mean()
    grey = (out @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    out = (out - grey) * rng.uniform(1 - saturation, 1 + saturation) + grey
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    shift = round(rng.uniform(-hue, hue) * 180)
    if shift:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + shift) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def down_and_up(image: np.ndarray, factor: float) -> np.ndarray:
    """Shrink to `factor` of the side (INTER_AREA), then enlarge back (bilinear): a soft, small
    source photo. factor in (0, 1]."""
    height, width = image.shape[:2]
    small = (max(8, round(width * factor)), max(8, round(height * factor)))
    reduced = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(reduced, (width, height), interpolation=cv2.INTER_LINEAR)


def corrupt_for_training(
    image: np.ndarray, mode: str, rng: np.random.Generator, clean_share: float = 2 / 3
) -> np.ndarray:
    """The training-time corruption of a model-input-size image.

    none:   unchanged.
    sp:     the paper's noise-trained model: salt-and-pepper on every image, density drawn
            uniformly from [0, 0.05], black:white 3:1.
    robust: our mix: clean_share of the images clean (default 2/3); of the rest, half with
            salt-and-pepper (density up to 6%, 3:1), half of those with one more corruption,
            and half with one or two of Gaussian blur (kernel 3..11), motion blur (5..25 px,
            any direction), JPEG (quality 10..90) and exposure (x0.5..x1.8, log-uniform).
            Applied in camera order by dermcore.corruptions.apply_corruption. The robust
            model also has the impulse filter (dermcore.preprocessing.remove_impulses) in
            front of its network, so its noisy images reach the network filtered; with it, a
            lighter mix keeps more clean accuracy than the mixes measured without it (half
            clean; a third clean), training/README.md, "The robust model's corruption mix".
    """
    if mode == "none":
        return image
    if mode == "sp":
        return salt_and_pepper(image, rng.uniform(0.0, 0.05), 0.75, rng=rng)
    if mode != "robust":
        raise ValueError(f"mode must be one of {TRAIN_CORRUPTIONS}, got {mode!r}")
    draw = rng.random()
    if draw < clean_share:
        return image
    return apply_corruption(image, robust_spec(rng, noise=draw < (1 + clean_share) / 2), rng)


ROBUST_MAX_DENSITY = 0.06  # a little past the paper's 5%, so 5% is not the edge of training


def robust_spec(rng: np.random.Generator, noise: bool) -> CorruptionSpec:
    """A random spec of the robust mix (see corrupt_for_training): with `noise`, salt-and-pepper
    plus, half the time, one of the other four; else one or two of the other four."""
    if noise:
        others = rng.choice(4, size=int(rng.integers(0, 2)), replace=False)
        fields: dict = {"noise_density": rng.uniform(0.0, ROBUST_MAX_DENSITY)}
    else:
        others = rng.choice(4, size=int(rng.integers(1, 3)), replace=False)
        fields = {}
    for kind in sorted(int(k) + 1 for k in others):
        if kind == 1:
            fields["blur_kernel"] = int(rng.choice([3, 5, 7, 9, 11]))
        elif kind == 2:
            fields["motion_length_px"] = int(rng.integers(5, 26))
            fields["motion_angle_deg"] = rng.uniform(0.0, 180.0)
        elif kind == 3:
            fields["jpeg_quality"] = int(rng.integers(10, 91))
        else:
            fields["exposure"] = math.exp(rng.uniform(math.log(0.5), math.log(1.8)))
    return CorruptionSpec(**fields)
