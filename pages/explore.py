"""Explore: one photo seen clean and corrupted, side by side, with where the model looked.

Laid out for a presenter: on a 1366x768 screen the photo, every control, both heatmaps and both
answers fit without scrolling; the probability chart, the drift numbers and the downloads follow
("Compare all models" puts every model's bars and drift in its card instead).
The clean view is cached per photo, model, CAM method and target, so moving a corruption slider
recomputes only the corrupted view (one forward pass plus a CAM), and the browser redraws only
the live panel (a fragment): the noise and blur sliders and the results. The photo picker and the
heatmap controls are drawn outside it (benchmarks/README.md, bench_browser). The photo itself
lives in this session's memory only: never on disk, never in a log.
"""

from __future__ import annotations

import base64
import html
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import plotly.graph_objects as go
import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from dermcore.checkpoint import CheckpointError
from dermcore.comparison import (
    Comparison,
    chart_classes,
    comparison_png,
    comparison_record,
    flip_callout,
    record_json,
)
from dermcore.corruptions import CorruptionSpec
from dermcore.explain import METHODS, Predictor, overlay
from dermcore.imageio import (
    SUPPORTED_EXTENSIONS,
    WORKING_SIDE_PX,
    ImageLoadError,
    downscale_for_display,
    encode_png,
    load_image,
    upright_size,
)
from dermcore.quality import (
    QualityCalibrationError,
    QualityFinding,
    assess_quality,
    quality_findings,
)
from ui import common
from ui.views import FAMILIARITY_HELP, ExploreSettings, answer_html, answer_markdown, compare

BLUR_KERNELS = (1, 3, 5, 7, 9, 11)
CLEAN_COLOUR, CORRUPTED_COLOUR = "#4c78a8", "#f58518"
# Model inputs scaled up pixel by pixel, so single noisy pixels stay sharp; the answers in type
# large enough for the back of a room.
VIEW_STYLE = (
    "<style>.st-key-explore_views img { image-rendering: pixelated; }"
    ".st-key-explore_answers p { font-size: 1.3rem; line-height: 1.45; }"
    ".st-key-explore_answers [data-testid=stCaptionContainer] p { font-size: 0.9rem; }"
    # Below 1100 px of window the four control columns and the views row wrap two by two.
    "@media (max-width: 1100px) {"
    " .st-key-explore_controls > div > [data-testid=stHorizontalBlock],"
    " .st-key-explore_views > div > [data-testid=stHorizontalBlock] { flex-wrap: wrap; }"
    " .st-key-explore_controls > div > [data-testid=stHorizontalBlock] > [data-testid=stColumn],"
    " .st-key-explore_views > div > [data-testid=stHorizontalBlock] > [data-testid=stColumn]"
    " { min-width: calc(50% - 1rem); } }</style>"
)
PREDICTED = "the predicted class"  # the target select's first option: each view's own top class
PREVIEW_HEIGHT_PX = 130  # drawn at most this tall, so a portrait photo pushes nothing down
# Score-CAM runs one forward pass per feature channel (1280 for EfficientNet-Lite0): about four
# minutes on a CPU, far too slow for a slider. dermcore.explain still offers it.
LIVE_METHODS = tuple(m for m in METHODS if m != "scorecam")
UPLOAD_LIMIT_MB = 50  # dermcore.imageio.load_image's default max_bytes, in MB
# Widget values that outlive a page switch (ui.common.restore_widgets / remember_widgets), with
# their defaults. Noise starts at 0: the first screen shows the photo as it is, and the
# presenter moves the slider.
DEFAULTS = {
    "explore_source": "Samples",
    "explore_noise": 0.0,
    "explore_ratio": 0.75,
    "explore_impulse_filter": True,
    "explore_seed": 0,
    "explore_blur": 1,
    "explore_motion_length": 0,
    "explore_motion_angle": 0,
    "explore_cam_method": "gradcam",
    "explore_target": PREDICTED,
    "explore_opacity": 0.45,
    "explore_where": "input",
    "explore_sample": None,
    "explore_compare": False,
}
PERSISTENT_KEYS = tuple(DEFAULTS)


def init_state(samples: list[common.Sample]) -> None:
    """Each control's value: the one kept from earlier in the session, else its default."""
    common.restore_widgets(DEFAULTS)
    if not samples and st.session_state["explore_source"] == "Samples":
        st.session_state["explore_source"] = "Upload"
    paths = [str(sample.path) for sample in samples]
    if samples and st.session_state["explore_sample"] not in paths:
        st.session_state["explore_sample"] = paths[0]


# ---- photo ---------------------------------------------------------------------------------


def photo_controls(samples: list[common.Sample]) -> common.CurrentPhoto | None:
    """Samples, upload or camera; the decoded photo is kept in session_state across pages."""
    sources = (["Samples"] if samples else []) + ["Upload", "Camera"]
    source = st.segmented_control(
        "Photo from", sources, required=True, key="explore_source", label_visibility="collapsed"
    )
    if source == "Camera":
        st.camera_input(
            "Take a photo of the lesion", key="explore_camera", on_change=_camera_changed
        )
    elif source == "Samples":
        by_path = {str(sample.path): sample for sample in samples}
        st.selectbox(
            "Sample photo", list(by_path), key="explore_sample",
            format_func=lambda path: by_path[path].caption, label_visibility="collapsed",
            help="Photos from the test split (no shipped model trained on them), from sources "
            "that allow redistribution; each caption names the true class and the source. "
            + common.NO_SAMPLE_NOTE,
        )  # fmt: skip
        sample = by_path[st.session_state["explore_sample"]]
        _use_photo(f"sample:{sample.path}", sample.path.name, sample.path.read_bytes)
    else:
        st.file_uploader(
            f"Upload a photo (up to {UPLOAD_LIMIT_MB} MB)",
            type=list(SUPPORTED_EXTENSIONS),
            key="explore_upload",
            on_change=_upload_changed,
            label_visibility="collapsed",
            help=f"JPEG, PNG, HEIC, TIFF, WebP and more, up to {UPLOAD_LIMIT_MB} MB. The photo "
            "stays in this browser session's memory; it is never stored.",
        )
    failed = st.session_state.get("explore_photo_error")
    if failed:
        st.error(failed)
        return None
    return common.current_photo()


def _upload_changed() -> None:
    upload = st.session_state.get("explore_upload")
    if upload is None:  # the user removed the file: the page stops using it
        _forget_photo()
    else:
        _use_photo(f"upload:{upload.file_id}", upload.name, upload.getvalue)


def _camera_changed() -> None:
    shot = st.session_state.get("explore_camera")
    if shot is None:
        _forget_photo()
    else:
        _use_photo(f"camera:{shot.file_id}", shot.name, shot.getvalue)


def _forget_photo() -> None:
    st.session_state["explore_photo_source"] = None
    st.session_state["explore_photo_error"] = None
    common.set_current_photo(None)


def _use_photo(source_id: str, name: str, read: Callable[[], bytes]) -> None:
    """Decode a newly chosen file once (reruns with the same file reuse the decoded photo). A
    file that cannot be decoded leaves no photo and a one-sentence error."""
    if st.session_state.get("explore_photo_source") == source_id:
        return
    st.session_state["explore_photo_source"] = source_id
    data = read()
    try:
        image = load_image(data, max_side=WORKING_SIDE_PX)
    except ImageLoadError as error:
        st.session_state["explore_photo_error"] = f"{name}: {error}"
        common.set_current_photo(None)
        return
    st.session_state["explore_photo_error"] = None
    original_shape = (*upright_size(data), 3)
    # Encoded once at exactly the width it is drawn at: st.image passes it through untouched,
    # where a wider one would be decoded, resized and re-encoded on every slider move (~10 ms).
    width = preview_width(original_shape)
    height = width * image.shape[0] // image.shape[1]  # rounded down: never wider than `width`
    preview = encode_png(downscale_for_display(image, max(width, height)))
    photo = common.CurrentPhoto(image, common.photo_sha256(data), name, preview, original_shape)
    common.set_current_photo(photo)


def preview_width(shape: tuple[int, ...]) -> int:
    """The preview's drawn width in px: PREVIEW_HEIGHT_PX tall (a portrait photo never taller),
    60 to 260 px wide."""
    height, width = shape[:2]
    return max(60, min(260, round(PREVIEW_HEIGHT_PX * width / height)))


def render_photo(photo: common.CurrentPhoto | None) -> None:
    if photo is None:
        return
    height, width = photo.original_shape[:2]
    st.image(photo.preview_png, width=preview_width(photo.original_shape))
    st.caption(f"{width}×{height} px")


# ---- corruption and explanation controls ---------------------------------------------------


def _reroll_seed() -> None:
    st.session_state["explore_seed"] = int(np.random.default_rng().integers(0, 2**31 - 1))


def noise_controls(has_filter: bool) -> None:
    st.markdown("**Noise** · salt and pepper")
    st.slider(
        "Noisy pixels", 0.0, 5.0, step=0.1, format="%.1f%%", key="explore_noise",
        help="Share of pixels set to pure black or white. The paper goes up to 5%.",
    )  # fmt: skip
    st.select_slider(
        "Black : white", list(common.PEPPER_FRACTIONS), key="explore_ratio",
        format_func=common.PEPPER_FRACTIONS.get,
        help="The paper uses 3:1, three black pixels for each white one.",
    )  # fmt: skip
    if has_filter:
        st.toggle(
            "Impulse filter", key="explore_impulse_filter",
            help="This model replaces pure black and white pixels by their 3×3 median before "
            "its network. Switch it off to see the network face the noise alone.",
        )  # fmt: skip


def noise_seed_controls(input_size: int) -> None:
    """The noise's seed and where it is added, in a popover under the noise sliders."""
    with st.popover("Seed and where", icon=":material/tune:"):
        seed_column, button_column = st.columns([3, 2], vertical_alignment="bottom")
        seed_column.number_input(
            "Noise seed", 0, 2**31 - 1, step=1, key="explore_seed",
            help="The same seed gives exactly the same noisy pixels.",
        )  # fmt: skip
        button_column.button(
            "Re-roll", key="explore_reroll", icon=":material/casino:", on_click=_reroll_seed
        )
        st.radio(
            "Corrupt",
            ["input", "photo"],
            format_func={
                "input": f"the model's {input_size}×{input_size} input (as in the paper)",
                "photo": "the full photo, then resize",
            }.get,
            key="explore_where",
            help="On a large photo, noise added before shrinking mostly averages away.",
        )


def blur_controls() -> None:
    st.markdown("**Blur**")
    st.select_slider(
        "Gaussian blur kernel", BLUR_KERNELS, key="explore_blur",
        format_func=lambda k: "off" if k == 1 else f"{k}×{k}" + (" (paper)" if k == 5 else ""),
        help="The paper's 'motion blur' is a 5×5 Gaussian kernel.",
    )  # fmt: skip
    motion = st.slider(
        "Motion blur length", 0, 25, step=1, format="%d px", key="explore_motion_length",
        help="A straight-line smear, as from a moving hand. 0 = off.",
    )  # fmt: skip
    st.slider(
        "Motion direction", 0, 175, step=5, format="%d°", key="explore_motion_angle",
        disabled=motion <= 1,
    )  # fmt: skip


def heatmap_controls(classes: tuple[str, ...]) -> None:
    st.markdown("**Heatmap**")
    st.selectbox(
        "Method", list(LIVE_METHODS), key="explore_cam_method", format_func=METHODS.get,
        on_change=rerun_live,
        help="How the heatmap is computed. Score-CAM is left out here: it runs one forward pass "
        "per feature channel, about four minutes on a CPU (dermcore.explain offers it offline).",
    )  # fmt: skip
    st.selectbox(
        "Explain class", [PREDICTED, *classes], key="explore_target", on_change=rerun_live,
        format_func=lambda name: name if name == PREDICTED else f"{name} (why not?)",
        help="Where would the model look for this class? Compare heatmaps of one class.",
    )  # fmt: skip
    st.slider("Opacity", 0.0, 1.0, step=0.05, key="explore_opacity", on_change=rerun_live)


def compare_toggle() -> None:
    st.toggle(
        "Compare all models", key="explore_compare", on_change=rerun_live,
        help="The same photo, under the same corruption, through every model in the weights "
        "folder side by side: which ones hold their clean answer?",
    )  # fmt: skip


def rerun_live() -> None:
    """A heatmap or comparison control changed: only the live panel reruns. These controls sit
    outside it, so that a slider move does not redraw them."""
    st.rerun(LIVE_PANEL)


def current_settings(predictor: Predictor) -> ExploreSettings:
    """The view the controls ask for, read from their session-state values. These hold the new
    values before the controls are drawn again, so the views can be computed first."""
    state = st.session_state
    spec = CorruptionSpec(
        noise_density=round(state["explore_noise"] / 100, 6),
        pepper_fraction=state["explore_ratio"],
        blur_kernel=state["explore_blur"],
        motion_length_px=state["explore_motion_length"],
        motion_angle_deg=float(state["explore_motion_angle"]),
        seed=int(state["explore_seed"]),
    )
    target = state["explore_target"]
    return ExploreSettings(
        spec,
        state["explore_where"],
        state["explore_cam_method"],
        None if target == PREDICTED or target not in predictor.classes else target,
        state["explore_opacity"],
        # the switch is drawn for a model with the filter and belongs to it: with another model
        # chosen, a model with the filter in the comparison runs as shipped, filter on
        state["explore_impulse_filter"] or not predictor.preprocessing.impulse_filter,
    )


def chosen_photo() -> common.CurrentPhoto | None:
    """The photo the controls point at (decoded by photo_controls or by the upload and camera
    widgets' callbacks), or None when there is none or it could not be read."""
    if st.session_state.get("explore_photo_error"):
        return None
    return common.current_photo()


# ---- drawing -------------------------------------------------------------------------------


def callout(comparison: Comparison) -> tuple[str, str]:
    """(kind, one line): what the corruption did to the answer. kind is "declines" (the model
    answered the clean photo and is not sure of the corrupted one), "changed", "holds" or
    "none" (no corruption selected)."""
    classes = comparison.classes
    flipped = flip_callout(
        classes, comparison.clean.top_class, comparison.corrupted.top_class, comparison.spec
    )
    if comparison.spec.is_identity:
        return "none", "No corruption yet: move a slider to degrade the photo."
    if comparison.declined:
        return "declines", (
            f"**Not sure** under {comparison.spec.describe()}: the model declines to answer "
            "instead of guessing, as a careful reader would."
        )
    if flipped:
        return "changed", f"**The answer changed:** {flipped}."
    if comparison.spec.is_identity:
        return "none", "No corruption yet: move a slider to degrade the photo."
    return "holds", f"**The answer holds** under {comparison.spec.describe()}."


CALLOUT_STYLE = {  # kind -> (colour, icon)
    "declines": ("violet", ":material/help:"),
    "changed": ("orange", ":material/swap_horiz:"),
    "holds": ("green", ":material/check_circle:"),
    "none": ("blue", ":material/tune:"),
}


@st.cache_data(show_spinner=False)
def colour_bar(width_px: int = 256, height_px: int = 10) -> np.ndarray:
    """uint8 HxWx3: the heatmap's colour scale, low evidence (left) to high (right)."""
    ramp = np.tile(np.linspace(0.0, 1.0, width_px, dtype=np.float32), (height_px, 1))
    return overlay(np.zeros((height_px, width_px, 3), np.uint8), ramp, alpha=1.0)


def render_views(comparison: Comparison, alpha: float) -> Callable[[], None]:
    """Each view's model input and heatmap, then the two answers, in one row. The answers are
    drawn now; the returned function draws the images, so the caller can send the prediction
    chart to the browser before them. Images go at their own resolution; the browser scales
    them up pixelated (VIEW_STYLE), so single noisy pixels stay sharp."""
    classes = comparison.classes
    views = (("Clean", comparison.clean), ("Corrupted", comparison.corrupted))
    *pairs, answers = st.container(key="explore_views").columns([2, 2, 1.5], gap="medium")
    with answers, st.container(key="explore_answers"):
        render_answers(comparison)

    def draw_images() -> None:
        for column, (name, view) in zip(pairs, views, strict=True):
            with column:
                st.markdown(f"**{name}**")
                image_column, heatmap_column = st.columns(2, gap="small")
                image_column.image(
                    view.input_image,
                    caption=common.input_caption(comparison.impulse_filter),
                    width="stretch",
                )
                heatmap_column.image(
                    overlay(view.input_image, view.cam, alpha),
                    width="stretch",
                    caption=f"evidence for {classes[view.target]}",
                )

    return draw_images


def render_answers(comparison: Comparison) -> None:
    """The two answers in large type, never cut off, and what the corruption did to the first."""
    classes = comparison.classes
    clean, corrupted = comparison.clean, comparison.corrupted
    clean_class = classes[clean.top_class]
    change = corrupted.probabilities[clean.top_class] - clean.top_probability
    st.markdown(
        f"Clean: {answer_markdown(classes, clean)}  \n"
        f"Corrupted: {answer_markdown(classes, corrupted)}",
        help=FAMILIARITY_HELP,
    )
    kind, line = callout(comparison)
    colour, icon = CALLOUT_STYLE[kind]
    with st.container(key=f"explore_callout_{kind}"):
        st.caption(f":{colour}[{icon} {line}]")
    if kind != "none":
        st.caption(f"{clean_class}: {change * 100:+.1f} points under the corruption.")


def render_heatmap_key(comparison: Comparison) -> None:
    """The colour bar and what it means, in one sentence."""
    classes = comparison.classes
    explained = {classes[comparison.clean.target], classes[comparison.corrupted.target]}
    target = " / ".join(sorted(explained))
    bar_column, text_column = st.columns([1, 4], vertical_alignment="center")
    bar_column.image(colour_bar(), width="stretch", caption="less ← evidence → more")
    flipped = (
        " The photo still shows the same lesion: what changed is the model's reading of it."
        if comparison.flipped
        else ""
    )
    text_column.caption(
        f"Heatmap ({METHODS[comparison.clean.method]}): red is where the evidence for "
        f"{target} came from, blue where there was little.{flipped}"
        + (
            ""
            if comparison.same_target
            else " The two heatmaps explain different classes; choose one under 'Explain class' "
            "to compare like with like."
        )
    )


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def photo_quality(
    model_key: str, photo_sha256: str, report_path: str, _predictor: Predictor, _photo: np.ndarray
) -> list[QualityFinding] | str:
    """The photo's own noise, blur, JPEG blocking and exposure, each placed on this model's
    measured accuracy (dermcore.quality); a sentence instead when that cannot be read."""
    try:
        reading = assess_quality(_photo, _predictor.preprocessing)
        report = json.loads(Path(report_path).read_text()) if Path(report_path).is_file() else {}
        return quality_findings(reading, report)
    except (QualityCalibrationError, OSError, ValueError) as error:
        return f"The photo-quality reading is not available: {error}"


def render_quality(
    entry: common.ModelEntry, predictor: Predictor, photo: common.CurrentPhoto
) -> None:
    """One line: how degraded the photo already is, before any slider; the sentences that tie it
    to the model's measured accuracy in an expander."""
    report = common.weights_dir() / "reports" / entry.card.name / "test.json"
    findings = photo_quality(
        common.model_key(entry), photo.sha256, str(report), predictor, photo.image
    )
    if isinstance(findings, str):
        st.caption(findings)
        return
    labels = [f":orange[{f.label}]" if _costs_accuracy(f) else f.label for f in findings]
    with st.expander(
        f"This photo as it came: {' · '.join(labels)}", icon=":material/photo_filter:"
    ):
        st.markdown("\n".join(f"- {finding.sentence}" for finding in findings))
        st.caption(
            "Estimated at the model's input resolution before any slider, and calibrated on "
            "test photos degraded by known amounts. Exposure from one photo is a rough guess."
        )


def _costs_accuracy(finding: QualityFinding) -> bool:
    """The model's measured accuracy at this photo's level is over 2 points below clean."""
    if finding.accuracy is None or finding.clean_accuracy is None:
        return False
    return finding.accuracy < finding.clean_accuracy - 0.02


def probability_figure(comparison: Comparison) -> go.Figure:
    """Grouped horizontal bars of the top classes, clean and corrupted. Built from one dict:
    ~1 ms, where add_bar and update_layout validate each property on its own (~5 ms a move)."""
    classes = comparison.classes
    clean, corrupted = comparison.clean.probabilities, comparison.corrupted.probabilities
    shown = chart_classes(clean, corrupted)
    names = [classes[i] for i in shown]
    bars = [
        {
            "type": "bar",
            "name": label,
            "y": names,
            "x": probs[shown],
            "orientation": "h",
            "marker": {"color": colour},
            "text": [f"{p:.1%}" for p in probs[shown]],
            "textposition": "outside",
            "cliponaxis": False,
        }
        for label, probs, colour in (
            ("Clean", clean, CLEAN_COLOUR),
            ("Corrupted", corrupted, CORRUPTED_COLOUR),
        )
    ]
    layout = {
        "barmode": "group",
        "height": 90 + 38 * len(shown),
        "margin": {"l": 0, "r": 48, "t": 10, "b": 0},
        "xaxis": {
            "range": [0, 1],
            "tickformat": ".0%",
            "title": {"text": "probability"},
            "nticks": 6,
        },
        "yaxis": {"autorange": "reversed", "automargin": True},
        "legend": {"orientation": "h", "y": -0.3},
        "font": {"size": 14},
    }
    return go.Figure({"data": bars, "layout": layout})


SAME_FOCUS_HELP = (
    "Do the two heatmaps point at the same places? The correlation between them: 1 = the same "
    "places, 0 = unrelated."
)
HOT_SPOTS_HELP = (
    "How much of the hottest fifth of each heatmap is shared (intersection over union): "
    "100% = the same hot spots."
)
FOCUS_HELP = f"Same focus: {SAME_FOCUS_HELP} Shared hot spots: {HOT_SPOTS_HELP}"


def render_predictions(comparison: Comparison) -> None:
    """The top-5 chart beside the two drift numbers, with plain names and tooltips."""
    with st.container(key="explore_predictions"):
        chart_column, metric_column = st.columns([3, 2], gap="large")
        chart_column.markdown("**Top classes, clean and corrupted**")
        chart_column.plotly_chart(
            probability_figure(comparison), key="explore_probabilities",
            config={"staticPlot": True},
        )  # fmt: skip
        with metric_column:
            st.markdown("**Did the model look at the same places?**")
            first, second = st.columns(2)
            first.metric("Same focus", f"{comparison.shift.correlation:.2f}", help=SAME_FOCUS_HELP)
            second.metric(
                "Shared hot spots", f"{comparison.shift.top_iou:.0%}", help=HOT_SPOTS_HELP
            )


def render_downloads(
    comparison: Comparison, entry: common.ModelEntry, photo: common.CurrentPhoto, alpha: float
) -> None:
    card = entry.card
    record = comparison_record(
        comparison,
        model_name=card.name,
        weights_sha256=card.weights_sha256,
        image_sha256=photo.sha256,
        image_shape=photo.image.shape,
        original_shape=photo.original_shape,
    )
    # Named by hashes only: a photo's file name may name the patient.
    stem = f"derm-lab-{photo.sha256[:8]}-{card.name}"
    title = f"{as_run(entry.label, comparison)} · photo sha256 {photo.sha256[:12]}"
    png_column, json_column = st.columns(2)
    png_column.download_button(
        "Figure (PNG)",
        data=lambda: comparison_png(comparison, alpha, title),
        file_name=f"{stem}.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/image:",
        key="explore_download_png",
        width="stretch",
    )
    json_column.download_button(
        "Settings (JSON)",
        data=record_json(record),
        file_name=f"{stem}.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/data_object:",
        key="explore_download_json",
        width="stretch",
        help="Model, weights hash, photo hash, every corruption setting and seed, and the "
        "probabilities: enough to reproduce this view exactly. Contains no image.",
    )


def as_run(label: str, comparison: Comparison) -> str:
    """A model's name as it ran: "· filter off" added where its own impulse filter switch was
    off, so it is not the model as shipped."""
    return f"{label} · filter off" if comparison.impulse_filter is False else label


def verdict(comparison: Comparison) -> str:
    """What the corruption did to a model's answer: 'not sure' (it made the model decline),
    'changed' (it flipped the answer) or 'held'."""
    if comparison.declined:
        return "not sure"
    return "changed" if comparison.flipped else "held"


def held_line(names_and_comparisons: list[tuple[str, Comparison]]) -> str:
    """'Held their clean answer: A. Not sure: B. Changed it: C.' for the model comparison."""
    groups = (
        ("Held their clean answer", "held"),
        ("Not sure", "not sure"),
        ("Changed it", "changed"),
    )
    parts = []
    for title, kind in groups:
        names = [name for name, c in names_and_comparisons if verdict(c) == kind]
        if names:
            parts.append(f"{title}: {', '.join(names)}.")
    return " ".join(parts)


def model_comparisons(
    photo: common.CurrentPhoto, settings: ExploreSettings
) -> tuple[list[tuple[str, Comparison]], list[str]]:
    """Every readable model on the same photo and corruption: one forward pass per model per
    change (each clean view is cached), the models' explanations run at once on their own
    threads (ONNX Runtime and PyTorch's backward release the GIL). Returns (label, comparison)
    pairs in the models' order and a sentence per model that could not be read."""
    entries = [e for e in common.available_models() if e.card is not None]
    jobs, failures = [], []
    for model_entry in entries:
        try:
            model = common.load_predictor(model_entry)
        except CheckpointError as error:
            failures.append(str(error))
            continue
        model_settings = settings
        if settings.target is not None and settings.target not in model.classes:
            model_settings = replace(settings, target=None)
        jobs.append((model_entry, model, model_settings))
    context = get_script_run_ctx()

    def run(job: tuple[common.ModelEntry, Predictor, ExploreSettings]) -> Comparison:
        # the script's context, so that the cached views are this session's cache calls
        add_script_run_ctx(threading.current_thread(), context)
        return compare(job[0], job[1], photo, job[2])

    if len(jobs) < 2:
        comparisons = [run(job) for job in jobs]
    else:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            comparisons = list(pool.map(run, jobs))
    return [(job[0].label, c) for job, c in zip(jobs, comparisons, strict=True)], failures


# One st.html element for the whole row of models: with three models, Streamlit's columns,
# images and markdown were ~16 elements for the browser to redraw on every slider move
# (benchmarks/README.md, bench_browser). The images travel inside it as small JPEGs.
MODELS_STYLE = (
    "<style>.derm-models { display: grid; gap: 1rem 1.5rem;"
    " grid-template-columns: repeat(auto-fit, minmax(15rem, 1fr)); }"
    ".derm-model { display: grid; grid-template-columns: 1fr 1.2fr; gap: 0.75rem;"
    " align-items: start; }"
    ".derm-model figure { margin: 0; } .derm-model img { width: 100%; display: block; }"
    ".derm-model figcaption { font-size: 0.875rem; text-align: center; opacity: 0.6;"
    " margin-top: 0.25rem; }"
    ".derm-model p { margin: 0; line-height: 1.6; }"
    # each card's top classes: one bar per view, the clean one over the corrupted one
    ".derm-bars { grid-column: 1 / -1; display: grid; gap: 0.1rem 0.5rem; margin: 0;"
    " grid-template-columns: minmax(4.5rem, max-content) 1fr 2.6rem; align-items: center;"
    " font-size: 0.875rem; line-height: 1.25; }"
    ".derm-bars .derm-name { grid-row: span 2; overflow-wrap: anywhere; }"
    ".derm-track { height: 0.55rem; border-radius: 0.15rem; background: rgba(128, 128, 128, 0.15); }"
    ".derm-bar { display: block; height: 100%; border-radius: 0.15rem; min-width: 1px; }"
    ".derm-bars .derm-value { text-align: right; font-variant-numeric: tabular-nums; }"
    ".derm-bars-key { grid-column: 1 / -1; font-size: 0.8rem; opacity: 0.75; }"
    ".derm-model .derm-focus { grid-column: 1 / -1; font-size: 0.8rem; opacity: 0.75;"
    " line-height: 1.4; }"
    ".derm-key { display: inline-block; width: 0.6rem; height: 0.6rem; border-radius: 0.1rem;"
    " margin: 0 0.25rem 0 0.5rem; vertical-align: baseline; }"
    ".derm-pill { border-radius: 0.5rem; padding: 0 0.4em; font-size: 0.875rem;"
    " white-space: nowrap; }"
    ".derm-green { color: #177233; background: rgba(33, 195, 84, 0.1); }"
    ".derm-orange { color: #a23c00; background: rgba(255, 164, 33, 0.15); }"
    ".derm-red { color: #bd2e2e; background: rgba(255, 43, 43, 0.09); }"
    ".derm-violet { color: #6630c9; background: rgba(128, 61, 245, 0.1); }"
    "@media (prefers-color-scheme: dark) { .derm-green { color: #5ce488; }"
    " .derm-orange { color: #ffbd45; } .derm-red { color: #ff8c8c; }"
    " .derm-violet { color: #b27eff; } }</style>"
)
VERDICTS = {  # (colour class, words) of each model's mark
    "not sure": ("derm-violet", "? not sure"),
    "changed": ("derm-orange", "\u21c4 changed"),
    "held": ("derm-green", "\u2713 held"),
}


def bars_html(comparison: Comparison) -> str:
    """A model's top classes (the chart's rule, chart_classes, with k=3), each as two bars on
    a 0-100 % track: clean over corrupted, with their percentages."""
    classes = comparison.classes
    clean, corrupted = comparison.clean.probabilities, comparison.corrupted.probabilities
    key = (
        '<div class="derm-bars-key">'
        f'<span class="derm-key" style="background:{CLEAN_COLOUR}"></span>clean'
        f'<span class="derm-key" style="background:{CORRUPTED_COLOUR}"></span>corrupted</div>'
    )
    rows = []
    for index in chart_classes(clean, corrupted, k=3):
        bars = "".join(
            f'<span class="derm-track" title="{view}: {p:.1%}"><span class="derm-bar" '
            f'style="width:{p:.1%};background:{colour}"></span></span>'
            f'<span class="derm-value">{p:.0%}</span>'
            for view, p, colour in (
                ("clean", clean[index], CLEAN_COLOUR),
                ("corrupted", corrupted[index], CORRUPTED_COLOUR),
            )
        )
        rows.append(f'<span class="derm-name">{html.escape(classes[index])}</span>{bars}')
    return f'<div class="derm-bars">{key}{"".join(rows)}</div>'


def model_card_html(name: str, comparison: Comparison, alpha: float) -> str:
    """One model's corrupted heatmap, both answers and its top classes' probabilities."""
    classes = comparison.classes
    clean, corrupted = comparison.clean, comparison.corrupted
    colour, words = VERDICTS[verdict(comparison)]
    image = cv2.cvtColor(overlay(corrupted.input_image, corrupted.cam, alpha), cv2.COLOR_RGB2BGR)
    jpeg = base64.b64encode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1])
    target = html.escape(classes[corrupted.target])
    name = html.escape(as_run(name, comparison))
    return (
        '<div class="derm-model"><figure>'
        f'<img src="data:image/jpeg;base64,{jpeg.decode()}" '
        f'alt="{name}: heatmap of the evidence for {target} on the corrupted photo">'
        f"<figcaption>evidence for {target}</figcaption></figure>"
        f"<p><b>{name}</b><br>"
        f'<span class="derm-pill {colour}">{words}</span><br>'
        f"Clean: {answer_html(classes, clean)}<br>"
        f"Corrupted: {answer_html(classes, corrupted)}</p>{bars_html(comparison)}"
        f"{focus_html(comparison)}</div>"
    )


def focus_html(comparison: Comparison) -> str:
    """How far the card's heatmap moved from the clean one; where the two explain different
    classes (the answer changed and no class is chosen), that they cannot be compared."""
    classes = comparison.classes
    if not comparison.same_target:
        before, after = (classes[v.target] for v in (comparison.clean, comparison.corrupted))
        return (
            f'<p class="derm-focus">The clean heatmap explains {html.escape(before)}, this one '
            f"{html.escape(after)}: not comparable. Choose a class under 'Explain class'.</p>"
        )
    return (
        f'<p class="derm-focus" title="{html.escape(FOCUS_HELP)}">Heatmap against the clean '
        f"one: same focus {comparison.shift.correlation:.2f} · shared hot spots "
        f"{comparison.shift.top_iou:.0%}</p>"
    )


def render_model_comparison(
    results: list[tuple[str, Comparison]], failures: list[str], settings: ExploreSettings
) -> None:
    """Each model's corrupted view with its heatmap, both answers, its top classes' bars and
    its heatmap drift, side by side (results and failures of model_comparisons). Every model's
    numbers are in its card, so no chart of one model follows."""
    for failure in failures:
        st.warning(failure)
    if not results:
        return
    kind = "none" if settings.spec.is_identity else "changed"
    line = (
        "No corruption yet: every model sees the photo as it is."
        if kind == "none"
        else held_line(results)
    )
    with st.container(key="explore_models"):
        st.markdown(f"**{settings.spec.describe().capitalize()}** · {line}")
        cards = "".join(model_card_html(n, c, settings.alpha) for n, c in results)
        st.html(f'{MODELS_STYLE}<div class="derm-models">{cards}</div>')


# ---- page ----------------------------------------------------------------------------------


def render_controls(
    predictor: Predictor, samples: list[common.Sample]
) -> tuple[DeltaGenerator, DeltaGenerator]:
    """The photo picker, the noise seed and the heatmap controls, in four columns. Returns the
    two places left for the noise and blur sliders, which the live panel draws: a slider move
    then redraws those and the results, not the controls that did not move."""
    photo_column, noise_column, blur_column, heatmap_column = st.container(
        key="explore_controls"
    ).columns([1.25, 1, 1, 1], gap="medium")
    with photo_column:
        render_photo(photo_controls(samples))
    noise_slot = noise_column.container()
    with noise_column:
        noise_seed_controls(predictor.input_size)
    with heatmap_column:
        heatmap_controls(predictor.classes)
        compare_toggle()
    return noise_slot, blur_column


LIVE_PANEL = "explore_live"  # the fragment's key: heatmap controls rerun it alone (rerun_live)


@st.fragment(key=LIVE_PANEL)
def live_panel(
    entry: common.ModelEntry,
    predictor: Predictor,
    noise_slot: DeltaGenerator,
    blur_slot: DeltaGenerator,
) -> None:
    """The noise and blur sliders (drawn into their columns above) and everything under the
    controls. A fragment: a slider move reruns only this, not the sidebar or the other
    controls."""
    # Computed first, from the controls' session-state values (which already hold the change):
    # the model runs while the browser is idle instead of redrawing beside it on the same CPU.
    # Then the new answers and chart are sent, and the sliders last.
    settings, all_models = current_settings(predictor), st.session_state["explore_compare"]
    photo = chosen_photo()
    comparisons = model_comparisons(photo, settings) if photo is not None and all_models else None
    comparison = compare(entry, predictor, photo, settings) if photo is not None else None
    if comparison is not None:
        render_results(entry, predictor, photo, settings, comparison, comparisons)
    with noise_slot:
        noise_controls(predictor.preprocessing.impulse_filter)
    with blur_slot:
        blur_controls()
    common.remember_widgets(PERSISTENT_KEYS)
    if photo is None:
        st.info(
            f"Pick a sample, upload a photo (up to {UPLOAD_LIMIT_MB} MB) or take one to begin.",
            icon=":material/add_photo_alternate:",
        )
    if current_settings(predictor) != settings:
        st.rerun()  # a slider reset itself while drawn (e.g. a value the new model lacks)


def render_results(
    entry: common.ModelEntry,
    predictor: Predictor,
    photo: common.CurrentPhoto,
    settings: ExploreSettings,
    comparison: Comparison,
    comparisons: tuple[list[tuple[str, Comparison]], list[str]] | None,
) -> None:
    """Everything under the controls. Laid out top to bottom, but the new numbers (answers,
    then the chart; or the row of models, numbers included) go to the browser first and the
    images, heatmap key and quality line after them (benchmarks/bench_browser.py)."""
    if comparisons is not None:
        render_model_comparison(*comparisons, settings)
        # the heatmap key, photo quality and downloads below are the sidebar model's alone
        st.markdown(f"**{as_run(entry.label, comparison)}**, the model chosen in the sidebar:")
    draw_images = render_views(comparison, settings.alpha) if comparisons is None else None
    key_slot, quality_slot = st.container(), st.container()
    filter_note = comparison.impulse_filter is not None and settings.spec.noise_density > 0
    note_slot = st.container() if filter_note else None
    if comparisons is None:  # side by side, each model's card carries its own bars
        render_predictions(comparison)
    if draw_images is not None:
        draw_images()
    with key_slot:
        render_heatmap_key(comparison)
    with quality_slot:
        render_quality(entry, predictor, photo)
    if note_slot is not None:
        note_slot.caption(
            common.IMPULSE_FILTER_NOTE
            if comparison.impulse_filter
            else "Impulse filter off: this model's network faces the noise alone, as it never "
            "did in training (its training images passed the filter too)."
        )
    render_downloads(comparison, entry, photo, settings.alpha)


entry, predictor = common.model_or_stop()
samples = common.sample_photos()
init_state(samples)
common.page_header(
    "Explore", "How does the model's answer change when the photo is noisy or blurred?"
)
st.html(VIEW_STYLE)
live_panel(entry, predictor, *render_controls(predictor, samples))
