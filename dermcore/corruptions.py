"""Imperfect-photo corruptions: pure functions on uint8 HxWx3 RGB images, and the one entry point.

Every function takes a uint8 (H, W, 3) RGB array and returns a NEW uint8 (H, W, 3) array; the
input is never written to (read-only arrays are fine). Randomness comes only from an explicit
`numpy.random.Generator`, so a seed reproduces a corruption exactly. Bad arguments raise
`ValueError` saying which argument and what range is allowed.

The paper (Mishra et al. 2020, sec. 2.3) uses two corruptions: salt-and-pepper "shot noise" on up
to 5% of the pixels, black:white 3:1, and a 5x5 Gaussian kernel as its "motion blur". We add a
true linear motion blur, JPEG re-encoding and exposure changes for the evaluation sweeps and for
robust training.

`CorruptionSpec` holds the severities as data; `apply_corruption(image, spec)` is the validated
entry point. It applies the stages in the order a camera would produce them:

    Gaussian blur -> motion blur   (optics and a moving hand)
    -> exposure                     (how much light reached the sensor)
    -> salt-and-pepper noise        (the sensor's dead and hot pixels)
    -> JPEG                         (the camera's encoder, always last)

Where the corruption is applied (`corrupt_for_model`, `where=`):

- "input" (the default, as in the paper): the photo is first brought to the network's input
  resolution, then corrupted. The paper's "5% of the pixels" are then 5% of the pixels the
  network sees, and a density means the same thing for every photo size.
- "photo": the full-resolution photo is corrupted, then downscaled. On a 12-megapixel photo
  shrunk to 224x224 each input pixel averages ~240 photo pixels (INTER_AREA), so a 5% noise
  mostly averages away into a faint grey haze and a 5x5 blur becomes invisible. This is closer
  to a real phone camera, but it is not the experiment the paper reports.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from fractions import Fraction

import cv2
import numpy as np

from dermcore.preprocessing import Preprocessing

CORRUPTION_SITES = ("input", "photo")  # valid values of corrupt_for_model(where=...)


def salt_and_pepper(
    image: np.ndarray, density: float, pepper_fraction: float = 0.75, *, rng: np.random.Generator
) -> np.ndarray:
    """Set exactly round(density * H * W) distinct pixels to black or white, all channels together.

    Exactly round(pepper_fraction * n) of them become black (0, 0, 0), the rest white
    (255, 255, 255). density and pepper_fraction are fractions in [0, 1]; the paper uses
    density <= 0.05 and pepper_fraction 0.75 (black:white 3:1). uint8 HxWx3 -> new uint8 HxWx3.
    """
    check_image(image)
    _check_fraction("density", density)
    _check_fraction("pepper_fraction", pepper_fraction)
    _check_rng(rng)
    height, width = image.shape[:2]
    n_changed = round(density * height * width)
    n_black = round(pepper_fraction * n_changed)
    out = image.copy()  # C-contiguous, so the flat (H*W, 3) view below writes into it
    if n_changed == 0:
        return out
    # Generator.choice without replacement is exact and distinct, and shuffled, so the first
    # n_black positions are a uniform subset of the chosen ones. Measured on 12 MP at density
    # 0.05 it takes ~35 ms: as fast as a bitmask of rejection-sampled draws, and simpler.
    positions = rng.choice(height * width, n_changed, replace=False)
    black, white = positions[:n_black], positions[n_black:]
    pixels = out.reshape(-1, 3)
    for channel in range(3):  # one strided column at a time: ~2x faster than row assignment
        column = pixels[:, channel]
        column[black] = 0
        column[white] = 255
    return out


def gaussian_blur(image: np.ndarray, kernel_size: int = 5, sigma: float = 0.0) -> np.ndarray:
    """The paper's 5x5 Gaussian "motion blur": exactly cv2.GaussianBlur(image, (k, k), sigma).

    kernel_size is odd and >= 1 (1 = identity); sigma in pixels, 0 lets OpenCV derive it from
    the kernel size (0.3 * ((k - 1) / 2 - 1) + 0.8). uint8 HxWx3 -> new uint8 HxWx3.
    """
    check_image(image)
    _check_int("kernel_size", kernel_size, minimum=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    _check_real("sigma", sigma, minimum=0.0)
    if kernel_size == 1:
        return image.copy()
    return cv2.GaussianBlur(image, (kernel_size, kernel_size), float(sigma))


def motion_kernel(length_px: int, angle_deg: float) -> np.ndarray:
    """float32 (k, k) kernel of a line segment length_px long at angle_deg, summing to 1.

    angle 0 is horizontal, angles turn counter-clockwise as seen on screen (45 runs from bottom
    left to top right). Each cell weighs max(0, 1 - distance to the segment), which anti-aliases
    oblique lines and keeps a horizontal one a single row; k = 2 * ceil((length_px - 1) / 2) + 1
    is odd so the kernel is centred. length 0 or 1 gives the 1x1 identity kernel.
    """
    _check_int("length_px", length_px, minimum=0)
    _check_real("angle_deg", angle_deg)
    if length_px <= 1:
        return np.ones((1, 1), dtype=np.float32)
    half_length = (length_px - 1) / 2
    radius = math.ceil(half_length)
    theta = math.radians(angle_deg)
    # Rounding makes cos(90 deg) exactly 0, so 90 and 0 degrees are exact transposes.
    dx, dy = round(math.cos(theta), 12), -round(math.sin(theta), 12)  # rows grow downwards
    ys, xs = np.mgrid[-radius : radius + 1, -radius : radius + 1].astype(np.float64)
    along = np.clip(xs * dx + ys * dy, -half_length, half_length)  # nearest point on segment
    distance = np.hypot(xs - along * dx, ys - along * dy)
    weights = np.clip(1.0 - distance, 0.0, None)
    return (weights / weights.sum()).astype(np.float32)


def motion_blur(image: np.ndarray, length_px: int, angle_deg: float) -> np.ndarray:
    """Linear motion blur along a length_px segment at angle_deg (see `motion_kernel`).

    Applied with cv2.filter2D and BORDER_REFLECT_101, the same border as `gaussian_blur`. The
    kernel is point-symmetric, so OpenCV's correlation equals convolution. length 0 or 1 is the
    identity. uint8 HxWx3 -> new uint8 HxWx3.
    """
    check_image(image)
    kernel = motion_kernel(length_px, angle_deg)
    if kernel.shape == (1, 1):
        return image.copy()
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def jpeg_compression(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode to JPEG at quality 1..100 in memory and decode again. uint8 HxWx3 -> uint8 HxWx3.

    OpenCV's encoder expects BGR; converting first keeps JPEG's luma/chroma split correct.
    """
    check_image(image)
    _check_int("quality", quality, minimum=1, maximum=100)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def exposure(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale the light reaching the sensor by factor > 0 (2 = one stop over, 0.5 = one under).

    sRGB -> linear light, multiply, clip to [0, 1], back to sRGB, through a 256-entry lookup
    table. factor 1 is the identity. uint8 HxWx3 -> new uint8 HxWx3.
    """
    check_image(image)
    _check_real("factor", factor)
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if factor == 1:
        return image.copy()
    return cv2.LUT(image, _exposure_lut(float(factor)))


def _exposure_lut(factor: float) -> np.ndarray:
    srgb = np.arange(256, dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    linear = np.clip(linear * factor, 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(srgb * 255.0), 0, 255).astype(np.uint8)


# Each corruption by name, in the order apply_corruption applies them.
CORRUPTIONS: dict[str, Callable[..., np.ndarray]] = {
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "exposure": exposure,
    "salt_and_pepper": salt_and_pepper,
    "jpeg_compression": jpeg_compression,
}


@dataclass(frozen=True)
class CorruptionSpec:
    """The severities of one corrupted view of an image; the defaults corrupt nothing."""

    noise_density: float = 0.0  # fraction of pixels set to black/white, in [0, 1]; paper <= 0.05
    pepper_fraction: float = 0.75  # fraction of those that turn black; paper 3:1 black:white
    blur_kernel: int = 1  # odd side of the Gaussian kernel, pixels; 1 = off, paper 5
    blur_sigma: float = 0.0  # Gaussian sigma in pixels; 0 = OpenCV's default for the kernel
    motion_length_px: int = 0  # length of the linear motion blur, pixels; 0 or 1 = off
    motion_angle_deg: float = 0.0  # direction of motion, degrees counter-clockwise; 0 = horizontal
    jpeg_quality: int | None = None  # JPEG re-encode quality 1..100; None = no re-encode
    exposure: float = 1.0  # linear-light multiplier > 0; 1 = unchanged, 2 = one stop over
    seed: int = 0  # seeds the noise when apply_corruption gets no Generator

    def __post_init__(self) -> None:
        # Validate, then store builtin int/float so to_dict() is JSON-safe even for numpy inputs.
        _check_fraction("noise_density", self.noise_density)
        _check_fraction("pepper_fraction", self.pepper_fraction)
        _check_int("blur_kernel", self.blur_kernel, minimum=1)
        if self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd, got {self.blur_kernel}")
        _check_real("blur_sigma", self.blur_sigma, minimum=0.0)
        _check_int("motion_length_px", self.motion_length_px, minimum=0)
        _check_real("motion_angle_deg", self.motion_angle_deg)
        if self.jpeg_quality is not None:
            _check_int("jpeg_quality", self.jpeg_quality, minimum=1, maximum=100)
        _check_real("exposure", self.exposure)
        if self.exposure <= 0:
            raise ValueError(f"exposure must be > 0, got {self.exposure}")
        _check_int("seed", self.seed, minimum=0)
        for name in (
            "noise_density",
            "pepper_fraction",
            "blur_sigma",
            "motion_angle_deg",
            "exposure",
        ):
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("blur_kernel", "motion_length_px", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        if self.jpeg_quality is not None:
            object.__setattr__(self, "jpeg_quality", int(self.jpeg_quality))

    @property
    def is_identity(self) -> bool:
        return (
            self.noise_density == 0
            and self.blur_kernel == 1
            and self.motion_length_px <= 1
            and self.jpeg_quality is None
            and self.exposure == 1
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> CorruptionSpec:
        """Inverse of to_dict(); missing keys take their defaults, unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"expected a dict of CorruptionSpec fields, got {type(data).__name__}")
        known = {field.name for field in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown CorruptionSpec fields {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**data)

    def describe(self) -> str:
        """Short human summary, stages in application order, e.g.
        '5x5 Gaussian blur, 2.3% salt-and-pepper (3:1)'."""
        parts = []
        if self.blur_kernel > 1:
            sigma = f" (sigma {self.blur_sigma:g} px)" if self.blur_sigma > 0 else ""
            parts.append(f"{self.blur_kernel}x{self.blur_kernel} Gaussian blur{sigma}")
        if self.motion_length_px > 1:
            parts.append(f"{self.motion_length_px} px motion blur at {self.motion_angle_deg:g}°")
        if self.exposure != 1:
            stops = math.log2(self.exposure)
            parts.append(f"exposure x{self.exposure:g} ({stops:+.1f} EV)")
        if self.noise_density > 0:
            ratio = _black_white_ratio(self.pepper_fraction)
            parts.append(f"{self.noise_density * 100:.3g}% salt-and-pepper ({ratio})")
        if self.jpeg_quality is not None:
            parts.append(f"JPEG quality {self.jpeg_quality}")
        return ", ".join(parts) if parts else "no corruption"


def _black_white_ratio(pepper_fraction: float) -> str:
    if pepper_fraction == 1:
        return "black only"
    if pepper_fraction == 0:
        return "white only"
    fraction = Fraction(pepper_fraction).limit_denominator(12)
    if abs(float(fraction) - pepper_fraction) > 1e-9:
        return f"{pepper_fraction:.0%} black"
    return f"{fraction.numerator}:{fraction.denominator - fraction.numerator}"


def apply_corruption(
    image: np.ndarray, spec: CorruptionSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Apply every stage of spec in camera order (see the module docstring).

    rng drives the noise; None means np.random.default_rng(spec.seed), so a spec alone
    reproduces its output. uint8 HxWx3 -> new uint8 HxWx3; an identity spec returns a copy.
    """
    check_image(image)
    if not isinstance(spec, CorruptionSpec):
        raise ValueError(f"spec must be a CorruptionSpec, got {type(spec).__name__}")
    if rng is None:
        rng = np.random.default_rng(spec.seed)
    _check_rng(rng)
    out = image
    if spec.blur_kernel > 1:
        out = gaussian_blur(out, spec.blur_kernel, spec.blur_sigma)
    if spec.motion_length_px > 1:
        out = motion_blur(out, spec.motion_length_px, spec.motion_angle_deg)
    if spec.exposure != 1:
        out = exposure(out, spec.exposure)
    if spec.noise_density > 0:
        out = salt_and_pepper(out, spec.noise_density, spec.pepper_fraction, rng=rng)
    if spec.jpeg_quality is not None:
        out = jpeg_compression(out, spec.jpeg_quality)
    return out.copy() if out is image else out


def corrupt_for_model(
    photo: np.ndarray,
    spec: CorruptionSpec,
    preprocessing: Preprocessing,
    where: str = "input",
    *,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """uint8 HxWx3 photo -> corrupted uint8 (input_size, input_size, 3) model-input image.

    where="input" (default, the paper's setting): resize/crop to the input resolution, then
    corrupt. where="photo": corrupt the full photo, then resize/crop. rng as in apply_corruption.
    """
    if where not in CORRUPTION_SITES:
        raise ValueError(f"where must be one of {CORRUPTION_SITES}, got {where!r}")
    if not isinstance(preprocessing, Preprocessing):
        raise ValueError(
            f"preprocessing must be a Preprocessing, got {type(preprocessing).__name__}"
        )
    check_image(photo)
    if where == "input":
        return apply_corruption(preprocessing.to_input_resolution(photo), spec, rng)
    return preprocessing.to_input_resolution(apply_corruption(photo, spec, rng))


def apply_batch(image: np.ndarray, specs: Sequence[CorruptionSpec]) -> np.ndarray:
    """One image under many specs (a robustness sweep): uint8 (N, H, W, 3), row i = specs[i].

    Each row uses its own spec's seed, so it equals apply_corruption(image, specs[i]).
    """
    check_image(image)
    specs = list(specs)
    batch = np.empty((len(specs), *image.shape), dtype=np.uint8)
    for i, spec in enumerate(specs):
        batch[i] = apply_corruption(image, spec)
    return batch


def check_image(image: np.ndarray, min_side: int = 1) -> None:
    """ValueError unless `image` is a uint8 HxWx3 array with both sides >= min_side."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 numpy array, got {type(image).__name__} "
            f"{getattr(image, 'dtype', '')}".rstrip()
        )
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < min_side:
        at_least = f" at least {min_side}x{min_side}" if min_side > 1 else ""
        raise ValueError(f"expected an HxWx3 RGB image{at_least}, got shape {image.shape}")


def _check_rng(rng: object) -> None:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )


def _check_real(
    name: str, value: object, minimum: float | None = None, maximum: float | None = None
) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    _check_range(name, value, minimum, maximum)


def _check_fraction(name: str, value: object) -> None:
    _check_real(name, value, minimum=0.0, maximum=1.0)


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    _check_range(name, value, minimum, maximum)


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if (minimum is None or value >= minimum) and (maximum is None or value <= maximum):
        return
    if minimum is not None and maximum is not None:
        bound = f"in [{minimum:g}, {maximum:g}]"
    else:
        bound = f">= {minimum:g}" if minimum is not None else f"<= {maximum:g}"
    raise ValueError(f"{name} must be {bound}, got {value!r}")
