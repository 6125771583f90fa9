"""The Explore page's clean-vs-corrupted comparison as plain data: the flip callout, which classes
to chart, and the two downloads (a JSON record and a PNG figure). No Streamlit here, so the tests
call these directly.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

import dermcore
from dermcore.corruptions import CorruptionSpec
from dermcore.explain import METHODS, CamShift, Explanation, overlay
from dermcore.imageio import WORKING_SIDE_PX

NOTICE = "Teaching and research tool, not a diagnostic device."


@dataclass(frozen=True)
class Comparison:
    """One photo seen clean and corrupted by one model, and what changed between the two."""

    classes: tuple[str, ...]
    clean: Explanation
    corrupted: Explanation
    spec: CorruptionSpec
    where: str  # "input" or "photo", as in dermcore.corruptions.corrupt_for_model
    shift: CamShift
    impulse_filter: bool | None = None  # the model's impulse filter: on, off, or None (has none)

    @property
    def flipped(self) -> bool:
        return self.clean.top_class != self.corrupted.top_class

    @property
    def same_target(self) -> bool:
        return self.clean.target == self.corrupted.target

    @property
    def declined(self) -> bool:
        """The corruption made the model decline ("Not sure") a photo it answered clean."""
        return self.corrupted.abstain and not self.clean.abstain


def flip_callout(classes: tuple[str, ...], clean_top: int, corrupted_top: int, spec) -> str | None:
    """'Ulcer → Acne at 2.3% salt-and-pepper (3:1)' when the top class changed, else None."""
    if clean_top == corrupted_top:
        return None
    return f"{classes[clean_top]} → {classes[corrupted_top]} at {spec.describe()}"


def chart_classes(clean_probs: np.ndarray, corrupted_probs: np.ndarray, k: int = 5) -> list[int]:
    """The clean view's top k classes, most probable first, plus the corrupted view's top class
    when it is not among them, so the new winner is always on the chart."""
    order = [int(i) for i in np.argsort(-clean_probs, kind="stable")[:k]]
    winner = int(np.argmax(corrupted_probs))
    return order if winner in order else [*order, winner]


def comparison_record(
    comparison: Comparison,
    *,
    model_name: str,
    weights_sha256: str,
    image_sha256: str,
    image_shape: tuple[int, ...],
    original_shape: tuple[int, ...],
) -> dict:
    """Everything needed to reproduce this view exactly, and nothing of the photo but its hash."""
    classes = comparison.classes

    def view(explanation: Explanation) -> dict:
        return {
            "top_class": classes[explanation.top_class],
            "top_probability": round(explanation.top_probability, 6),
            "cam_target": classes[explanation.target],
            "probabilities": {
                c: round(float(p), 6)
                for c, p in zip(classes, explanation.probabilities, strict=True)
            },
            "abstain": bool(explanation.abstain),  # True: the model said "Not sure"
            "familiarity": (
                None if np.isnan(explanation.familiarity) else round(explanation.familiarity, 6)
            ),
        }

    return {
        "app": "Derm Robustness Lab",
        "dermcore_version": dermcore.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": {
            "name": model_name,
            "weights_sha256": weights_sha256,
            **(
                {}
                if comparison.impulse_filter is None
                else {"impulse_filter": comparison.impulse_filter}
            ),
        },
        "image": {
            "sha256": image_sha256,
            "height": image_shape[0],
            "width": image_shape[1],
            "original_height": original_shape[0],
            "original_width": original_shape[1],
            "working_copy": f"dermcore.imageio.load_image(file, max_side={WORKING_SIDE_PX}): "
            "decoded at reduced scale where the format allows (JPEG), then area-averaged",
        },
        "corruption": {**comparison.spec.to_dict(), "where": comparison.where},
        "corruption_description": comparison.spec.describe(),
        "cam_method": comparison.clean.method,
        "clean": view(comparison.clean),
        "corrupted": view(comparison.corrupted),
        "top_class_changed": comparison.flipped,
        "cam_shift": {
            "correlation": round(comparison.shift.correlation, 6),
            "top_iou": round(comparison.shift.top_iou, 6),
        },
        "notice": NOTICE,
    }


def record_json(record: dict) -> str:
    return json.dumps(record, indent=2, ensure_ascii=False) + "\n"


def view_heading(classes: tuple[str, ...], name: str, explanation: Explanation) -> str:
    """ "Corrupted: Acne 61.0%", or "Corrupted: Not sure (Acne 31.0%)" where the model
    declines, as the app says it."""
    top = f"{classes[explanation.top_class]} {explanation.top_probability:.1%}"
    return f"{name}: Not sure ({top})" if explanation.abstain else f"{name}: {top}"


def figure_heading(comparison: Comparison, title: str) -> str:
    """The title, then what the corruption did: the model declined, its answer changed, or
    just the corruption."""
    spec = comparison.spec
    if comparison.declined:
        line = f"Not sure under {spec.describe()}: the model declines to answer"
    else:
        line = flip_callout(
            comparison.classes, comparison.clean.top_class, comparison.corrupted.top_class, spec
        )
    return f"{title}\n{line or 'Corruption: ' + spec.describe()}"


def comparison_png(comparison: Comparison, alpha: float, title: str) -> bytes:
    """A 2x3 figure (clean and corrupted image, their heatmaps, their probabilities) as PNG bytes,
    drawn in memory with matplotlib's object API (no pyplot state, safe across sessions)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 3, width_ratios=(1, 1, 1.35))
    classes = comparison.classes
    method = METHODS.get(comparison.clean.method, comparison.clean.method)
    for row, (name, explanation) in enumerate(
        (("Clean", comparison.clean), ("Corrupted", comparison.corrupted))
    ):
        ax = figure.add_subplot(grid[row, 0])
        ax.imshow(explanation.input_image)
        ax.set_title(view_heading(classes, name, explanation), fontsize=10)
        ax.axis("off")
        ax = figure.add_subplot(grid[row, 1])
        ax.imshow(overlay(explanation.input_image, explanation.cam, alpha))
        ax.set_title(f"{method} for {classes[explanation.target]}", fontsize=10)
        ax.axis("off")
    ax = figure.add_subplot(grid[:, 2])
    shown = chart_classes(comparison.clean.probabilities, comparison.corrupted.probabilities)
    y = np.arange(len(shown))
    ax.barh(y - 0.2, comparison.clean.probabilities[shown], 0.4, label="Clean", color="#4c78a8")
    ax.barh(
        y + 0.2, comparison.corrupted.probabilities[shown], 0.4, label="Corrupted", color="#f58518"
    )
    ax.set_yticks(y, [classes[i] for i in shown])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    ax.legend(loc="lower right")
    figure.suptitle(figure_heading(comparison, title), fontsize=11)
    figure.text(0.5, 0.002, NOTICE, ha="center", va="bottom", fontsize=8, color="#666666")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
