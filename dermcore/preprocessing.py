"""One preprocessing preset per architecture, imported by training, evaluation and the app alike.

The pipeline is always:

    photo (uint8 HxWx3, any size)
      -> to_input_resolution()   shorter side resized to `resize_size`, centre crop `input_size`
      -> [corruption]            by default here, at the model's input resolution, as in the paper
      -> to_tensor()             [impulse filter, when the preset has one: remove_impulses()]
                                 float32 (N, 3, input_size, input_size), normalised with mean/std

Corrupting after the resize is what the paper did (its 5% of pixels are 5% of the network's input
pixels); corrupting the full photo first is the alternative `where="photo"` in
`dermcore.corruptions.corrupt_for_model`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch


@dataclass(frozen=True)
class Preprocessing:
    input_size: int = 224  # side of the square network input, pixels
    resize_size: int = 224  # shorter side is resized to this before the centre crop, pixels
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # per-channel, on [0, 1] values
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    # Replace pure black and pure white pixels by their 3x3 median before the network
    # (remove_impulses): part of the `robust` model, off for the paper's models.
    impulse_filter: bool = False

    def __post_init__(self) -> None:
        if self.input_size < 8 or self.resize_size < self.input_size:
            raise ValueError(
                f"need 8 <= input_size <= resize_size, got {self.input_size} and {self.resize_size}"
            )

    @property
    def input_passes_through(self) -> bool:
        """True when an image already at input_size x input_size comes out of
        to_input_resolution unchanged (resize_size == input_size): a model input can then
        stand in for its photo, sparing a resize of the photo."""
        return self.resize_size == self.input_size

    def to_input_resolution(self, image: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 photo -> uint8 (input_size, input_size, 3). An image already at the
        input size passes through unchanged when resize_size == input_size."""
        _check_rgb_uint8(image)
        height, width = image.shape[:2]
        scale = self.resize_size / min(height, width)
        new_w = max(self.input_size, round(width * scale))
        new_h = max(self.input_size, round(height * scale))
        if (new_h, new_w) != (height, width):
            # INTER_AREA averages when shrinking (no aliasing); bilinear when enlarging.
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (new_w, new_h), interpolation=interp)
        top = (new_h - self.input_size) // 2
        left = (new_w - self.input_size) // 2
        return np.ascontiguousarray(
            image[top : top + self.input_size, left : left + self.input_size]
        )

    def to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (H, W, 3) or (N, H, W, 3) -> normalised float32 (N, 3, H, W)."""
        if images.ndim == 3:
            images = images[None]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if self.impulse_filter:
            images = remove_impulses(images)
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).contiguous()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            input_size=int(data["input_size"]),
            resize_size=int(data["resize_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            impulse_filter=bool(data.get("impulse_filter", False)),  # absent from older cards
        )


_BLACK, _WHITE = (0, 0, 0), (255, 255, 255)


def remove_impulses(images: np.ndarray) -> np.ndarray:
    """Switching median filter: uint8 (N, H, W, 3) -> new array where every pixel that is pure
    black (0, 0, 0) or pure white (255, 255, 255) is replaced by the 3x3 median of its channel.

    Salt-and-pepper noise sets pixels to exactly these values, so the filter removes it while
    leaving every other pixel untouched; a clean photo changes only where it is saturated, and
    inside a black border or a blown highlight the median is the same black or white. The
    classical remedy for impulse noise; it fails only where 5 of 9 neighbours are impulses
    (rare below ~20% density).
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    out = images.copy()
    for image in out:  # views into out; cv2.inRange is ~10x faster than numpy reductions here
        impulses = cv2.inRange(image, _BLACK, _BLACK) | cv2.inRange(image, _WHITE, _WHITE)
        if cv2.countNonZero(impulses):
            cv2.copyTo(cv2.medianBlur(image, 3), impulses, image)
    return out


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check_rgb_uint8(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
