"""A set of images that are not skin photos, made in memory from a seed (no download).

For tests and reports of familiarity and abstention only: a model must never train on them. The
set mixes what a curious user might upload: scikit-learn's two bundled photos (a temple, a
flower) and crops of them, flat colours, gradients, noise, stripes and checkerboards, text and a
document page, matplotlib chart renders, a cartoon house, a smiley, geometric shapes, a user
interface mock-up, a fractal and a random binary code. Every image is uint8 HxWx3 RGB.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np

SIZE = 256  # side of the drawn images, pixels; the photos and crops keep their own sizes


def non_skin_images(seed: int = 0) -> dict[str, np.ndarray]:
    """Name -> uint8 HxWx3 image; the same 48 images for the same seed."""
    rng = np.random.default_rng(seed)
    images: dict[str, np.ndarray] = {}
    images.update(_sample_photos(rng))
    images.update(_flat_colours())
    for name, draw in _DRAWINGS.items():
        images[name] = draw(rng)
    for k in range(4):
        images[f"chart-{_CHART_KINDS[k]}"] = _chart(_CHART_KINDS[k], rng)
    return images


def _sample_photos(rng: np.random.Generator) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images()
    out = {}
    for path, photo in zip(photos.filenames, photos.images, strict=True):
        stem = path.rsplit("/", 1)[-1].split(".")[0]
        out[f"photo-{stem}"] = np.ascontiguousarray(photo)
        height, width = photo.shape[:2]
        for k in range(4):  # four random square crops, 160-320 px
            side = int(rng.integers(160, 321))
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            out[f"photo-{stem}-crop{k}"] = np.ascontiguousarray(
                photo[top : top + side, left : left + side]
            )
    return out


_COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (30, 60, 220),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "grey": (128, 128, 128),
    "yellow": (240, 220, 40),
    "purple": (120, 40, 160),
}


def _flat_colours() -> dict[str, np.ndarray]:
    return {f"flat-{n}": np.full((SIZE, SIZE, 3), c, np.uint8) for n, c in _COLOURS.items()}


def _canvas(colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), colour, np.uint8)


def _uniform_noise(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)


def _grey_noise(rng: np.random.Generator) -> np.ndarray:
    grey = np.clip(rng.normal(128, 40, (SIZE, SIZE)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _smooth_noise(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)


def _colour_blocks(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)


def _gradient(axis: int) -> Callable[[np.random.Generator], np.ndarray]:
    def draw(rng: np.random.Generator) -> np.ndarray:
        ramp = np.linspace(0, 255, SIZE, dtype=np.float64)
        plane = np.broadcast_to(ramp[None, :] if axis else ramp[:, None], (SIZE, SIZE))
        image = np.stack([plane, 255 - plane, np.full_like(plane, 128)], axis=2)
        return image.astype(np.uint8)

    return draw


def _rainbow(rng: np.random.Generator) -> np.ndarray:
    hue = np.broadcast_to(np.linspace(0, 179, SIZE, dtype=np.float64)[None, :], (SIZE, SIZE))
    hsv = np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 255)], 2).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _checkerboard(rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[0:SIZE, 0:SIZE] // 32
    board = ((ys + xs) % 2 * 255).astype(np.uint8)
    return np.repeat(board[..., None], 3, axis=2)


def _stripes(rng: np.random.Generator) -> np.ndarray:
    image = _canvas()
    for x in range(0, SIZE, 24):
        image[:, x : x + 12] = (20, 40, 200)
    return image


def _diagonal_stripes(rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    band = ((ys + xs) // 16) % 2 == 0
    image = _canvas((250, 210, 0))
    image[band] = (10, 10, 10)
    return image


def _text(lines: list[str], scale: float, colour: tuple[int, int, int]):
    def draw(rng: np.random.Generator) -> np.ndarray:
        image = _canvas()
        for i, line in enumerate(lines):
            y = 40 + i * int(40 * scale + 10)
            cv2.putText(image, line, (10, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2)
        return image

    return draw


def _document(rng: np.random.Generator) -> np.ndarray:
    image = _canvas((250, 250, 245))
    cv2.putText(image, "Report", (16, 34), cv2.FONT_HERSHEY_DUPLEX, 0.9, (0, 0, 0), 2)
    for y in range(56, SIZE - 12, 14):
        width = int(rng.integers(120, SIZE - 30))
        cv2.line(image, (16, y), (16 + width, y), (60, 60, 60), 3)
    return image


def _house(sky: tuple[int, int, int], wall: tuple[int, int, int]):
    def draw(rng: np.random.Generator) -> np.ndarray:
        image = _canvas(sky)
        cv2.rectangle(image, (0, 200), (SIZE, SIZE), (60, 170, 60), -1)  # grass
        cv2.rectangle(image, (60, 120), (196, 210), wall, -1)  # walls
        roof = np.array([[48, 122], [128, 56], [208, 122]], np.int32)
        cv2.fillPoly(image, [roof], (170, 40, 40))
        cv2.rectangle(image, (112, 160), (144, 210), (110, 70, 30), -1)  # door
        cv2.rectangle(image, (72, 134), (100, 158), (170, 220, 250), -1)  # windows
        cv2.rectangle(image, (156, 134), (184, 158), (170, 220, 250), -1)
        cv2.circle(image, (215, 40), 20, (250, 220, 40), -1)  # sun
        return image

    return draw


def _smiley(rng: np.random.Generator) -> np.ndarray:
    image = _canvas((90, 160, 230))
    cv2.circle(image, (128, 128), 90, (250, 220, 40), -1)
    cv2.circle(image, (96, 100), 12, (0, 0, 0), -1)
    cv2.circle(image, (160, 100), 12, (0, 0, 0), -1)
    cv2.ellipse(image, (128, 140), (50, 35), 0, 0, 180, (0, 0, 0), 6)
    return image


def _shapes(count: int):
    def draw(rng: np.random.Generator) -> np.ndarray:
        image = _canvas()
        for _ in range(count):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = (int(v) for v in rng.integers(20, SIZE - 20, 2))
            r = int(rng.integers(10, 50))
            if rng.random() < 0.5:
                cv2.circle(image, (x, y), r, colour, -1)
            else:
                cv2.rectangle(image, (x - r, y - r), (x + r, y + r), colour, -1)
        return image

    return draw


def _interface(rng: np.random.Generator) -> np.ndarray:
    image = _canvas((245, 245, 250))
    cv2.rectangle(image, (0, 0), (SIZE, 32), (40, 90, 200), -1)  # title bar
    cv2.putText(image, "Settings", (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    for i in range(5):
        y = 50 + i * 40
        cv2.rectangle(image, (16, y), (SIZE - 16, y + 28), (220, 220, 230), -1)
        on = bool(rng.random() < 0.5)
        cv2.circle(image, (SIZE - 36, y + 14), 9, (40, 180, 80) if on else (160, 160, 160), -1)
    return image


def _concentric(rng: np.random.Generator) -> np.ndarray:
    image = _canvas()
    for k, radius in enumerate(range(120, 0, -15)):
        cv2.circle(image, (128, 128), radius, (200, 30, 30) if k % 2 else (255, 255, 255), -1)
    return image


def _grid_lines(rng: np.random.Generator) -> np.ndarray:
    image = _canvas()
    for v in range(0, SIZE, 16):
        cv2.line(image, (v, 0), (v, SIZE), (0, 120, 200), 1)
        cv2.line(image, (0, v), (SIZE, v), (0, 120, 200), 1)
    return image


def _big_letter(rng: np.random.Generator) -> np.ndarray:
    image = _canvas((20, 20, 60))
    cv2.putText(image, "A", (40, 220), cv2.FONT_HERSHEY_TRIPLEX, 8, (255, 255, 0), 12)
    return image


def _spiral(rng: np.random.Generator) -> np.ndarray:
    image = _canvas()
    angle = np.linspace(0, 8 * np.pi, 400)
    points = np.stack([128 + angle * 4.5 * np.cos(angle), 128 + angle * 4.5 * np.sin(angle)], 1)
    cv2.polylines(image, [points.astype(np.int32)], False, (0, 0, 0), 3)
    return image


def _fractal(rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[-1.3 : 1.3 : SIZE * 1j, -2.1 : 0.7 : SIZE * 1j]
    c = xs + 1j * ys
    z = np.zeros_like(c)
    steps = np.zeros(c.shape, np.int32)
    for i in range(40):
        inside = np.abs(z) <= 2
        z[inside] = z[inside] ** 2 + c[inside]
        steps[inside] = i
    levels = (steps * 255 // 39).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)


def _binary_code(rng: np.random.Generator) -> np.ndarray:
    cells = (rng.random((21, 21)) < 0.5).astype(np.uint8) * 255
    code = cv2.resize(255 - cells, (SIZE - 24, SIZE - 24), interpolation=cv2.INTER_NEAREST)
    image = np.full((SIZE, SIZE), 255, np.uint8)
    image[12:-12, 12:-12] = code
    return np.repeat(image[..., None], 3, axis=2)


_DRAWINGS: dict[str, Callable[[np.random.Generator], np.ndarray]] = {
    "noise-uniform": _uniform_noise,
    "noise-grey": _grey_noise,
    "noise-smooth": _smooth_noise,
    "colour-blocks": _colour_blocks,
    "gradient-vertical": _gradient(0),
    "gradient-horizontal": _gradient(1),
    "rainbow": _rainbow,
    "checkerboard": _checkerboard,
    "stripes": _stripes,
    "stripes-diagonal": _diagonal_stripes,
    "text-hello": _text(["Hello,", "world!"], 1.6, (0, 0, 0)),
    "text-lorem": _text(
        ["Lorem ipsum", "dolor sit amet", "consectetur", "adipiscing"], 0.9, (30, 30, 120)
    ),
    "text-numbers": _text(["0123456789", "3.14159", "42"], 1.1, (150, 0, 0)),
    "document": _document,
    "house-day": _house((140, 200, 250), (240, 230, 200)),
    "house-dusk": _house((250, 170, 120), (200, 200, 210)),
    "smiley": _smiley,
    "shapes-few": _shapes(4),
    "shapes-many": _shapes(25),
    "interface": _interface,
    "fractal": _fractal,
    "concentric-circles": _concentric,
    "grid-lines": _grid_lines,
    "big-letter": _big_letter,
    "spiral": _spiral,
    "binary-code": _binary_code,
}

_CHART_KINDS = ("line", "bar", "scatter", "pie")


def _chart(kind: str, rng: np.random.Generator) -> np.ndarray:
    """A matplotlib render (Agg backend, no window) of a small seeded chart, uint8 HxWx3."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(3.2, 2.56), dpi=100)
    axes = figure.add_subplot()
    values = rng.uniform(1, 10, 8)
    if kind == "line":
        axes.plot(np.cumsum(values), marker="o")
    elif kind == "bar":
        axes.bar(list("ABCDEFGH"), values, color="tab:orange")
    elif kind == "scatter":
        axes.scatter(rng.normal(size=60), rng.normal(size=60), c="tab:green")
    else:
        axes.pie(values[:5])
    axes.set_title(f"{kind} chart")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    png = np.frombuffer(buffer.getvalue(), np.uint8)
    return cv2.cvtColor(cv2.imdecode(png, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
