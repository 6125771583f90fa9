"""Explore: one photo seen clean and corrupted, side by side, with where the model looked.

The clean view is cached per photo, model, CAM method and target, so moving a corruption slider
recomputes only the corrupted view (one forward pass plus a CAM). The photo itself lives in this
session's memory only: never on disk, never in a log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dermcore.comparison import (
    Comparison,
    chart_classes,
    comparison_png,
    comparison_record,
    flip_callout,
    record_json,
)
from dermcore.corruptions import CorruptionSpec
from dermcore.explain import METHODS, Explanation, Predictor, cam_shift, overlay
from dermcore.imageio import (
    SUPPORTED_EXTENSIONS,
    WORKING_SIDE_PX,
    ImageLoadError,
    downscale_for_display,
    encode_png,
    load_image,
    upright_size,
)
from ui import common

BLUR_KERNELS = (1, 3, 5, 7, 9, 11)
CLEAN_COLOUR, CORRUPTED_COLOUR = "#4c78a8", "#f58518"
CRISP_IMAGES = "<style>.st-key-explore_views img { image-rendering: pixelated; }</style>"
PREDICTED = "the predicted class"  # the target select's first option: each view's own top class
PREVIEW_SIDE_PX = 1024  # the photo preview's longer side; the column is narrower than that


@dataclass(frozen=True)
class ExploreSettings:
    spec: CorruptionSpec
    where: str  # "input" or "photo", see dermcore.corruptions.corrupt_for_model
    method: str  # key of dermcore.explain.METHODS
    target: str | None  # class name to explain, None = each view's own top class
    alpha: float  # heatmap opacity in [0, 1]
    impulse_filter: bool = True  # a model with the impulse filter uses it (the switch); else moot


# ---- photo ---------------------------------------------------------------------------------


def photo_controls() -> common.CurrentPhoto | None:
    """Upload, camera or sample gallery; the decoded photo is kept in session_state."""
    samples = _sample_files()
    sources = ["Upload", "Camera"] + (["Samples"] if samples else [])
    source = st.segmented_control(
        "Photo from", sources, default="Upload", required=True, key="explore_source"
    )
    chosen = None  # the source id of the file the active widget holds
    if source == "Camera":
        shot = st.camera_input("Take a photo of the lesion", key="explore_camera")
        if shot is not None:
            chosen = _use_photo(f"camera:{shot.file_id}", shot.name, shot.getvalue)
    elif source == "Samples":
        chosen = _sample_gallery(samples)
    else:
        upload = st.file_uploader(
            "Upload a photo",
            type=list(SUPPORTED_EXTENSIONS),
            key="explore_upload",
            help="The photo stays in this browser session's memory; it is never stored.",
        )
        if upload is not None:
            chosen = _use_photo(f"upload:{upload.file_id}", upload.name, upload.getvalue)
    failed = st.session_state.get("explore_photo_error")
    if failed and failed[0] == chosen:  # a file removed or replaced takes its error with it
        st.error(failed[1])
        return None
    return common.current_photo()


def render_photo(photo: common.CurrentPhoto | None) -> None:
    if photo is None:
        return
    height, width = photo.original_shape[:2]
    st.image(photo.preview_png, caption=f"{photo.name} · {width}×{height} px")


def _use_photo(source_id: str, name: str, read: Callable[[], bytes]) -> str:
    """Decode a newly chosen file once (reruns with the same file reuse the decoded photo);
    returns source_id. A file that cannot be decoded leaves no photo and a one-sentence error."""
    if st.session_state.get("explore_photo_source") == source_id:
        return source_id
    st.session_state["explore_photo_source"] = source_id
    data = read()
    try:
        image = load_image(data, max_side=WORKING_SIDE_PX)
    except ImageLoadError as error:
        st.session_state["explore_photo_error"] = (source_id, str(error))
        common.set_current_photo(None)
        return source_id
    st.session_state["explore_photo_error"] = None
    original_shape = (*upright_size(data), 3)
    preview = encode_png(downscale_for_display(image, PREVIEW_SIDE_PX))
    photo = common.CurrentPhoto(image, common.photo_sha256(data), name, preview, original_shape)
    common.set_current_photo(photo)
    return source_id


def _sample_files() -> list[Path]:
    folder = common.samples_dir()
    if folder is None:
        return []
    suffixes = {f".{ext}" for ext in SUPPORTED_EXTENSIONS}
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)[:24]


@st.cache_data(max_entries=64, show_spinner=False)
def _thumbnail(path: str, mtime_ns: int) -> np.ndarray | None:
    try:
        return downscale_for_display(load_image(Path(path).read_bytes()), 256)
    except (ImageLoadError, OSError):
        return None


def _sample_gallery(samples: list[Path]) -> str | None:
    chosen = None
    for row in range(0, len(samples), 4):
        for column, path in zip(st.columns(4), samples[row : row + 4], strict=False):
            thumbnail = _thumbnail(str(path), path.stat().st_mtime_ns)
            if thumbnail is None:
                column.caption(f"{path.name}: not readable")
                continue
            column.image(thumbnail, caption=path.stem)
            if column.button("Use", key=f"explore_sample_{path.name}", width="stretch"):
                chosen = _use_photo(f"sample:{path}", path.name, path.read_bytes)
    return chosen


# ---- corruption and explanation controls ---------------------------------------------------


def _reroll_seed() -> None:
    st.session_state["explore_seed"] = int(np.random.default_rng().integers(0, 2**31 - 1))


def explore_controls(
    input_size: int, classes: tuple[str, ...], has_filter: bool = False
) -> ExploreSettings:
    noise, blur, heatmap = st.columns(3, gap="large")
    with noise:
        st.markdown("**Sensor noise** · salt and pepper")
        density_pct = st.slider(
            "Noisy pixels", 0.0, 5.0, 1.0, 0.1, format="%.1f%%", key="explore_noise",
            help="Share of pixels set to pure black or white. The paper goes up to 5%.",
        )  # fmt: skip
        pepper_fraction = st.select_slider(
            "Black : white", list(common.PEPPER_FRACTIONS), value=0.75,
            format_func=common.PEPPER_FRACTIONS.get, key="explore_ratio",
            help="The paper uses 3:1, three black pixels for each white one.",
        )  # fmt: skip
        impulse_filter = has_filter and st.toggle(
            "Impulse filter", value=True, key="explore_impulse_filter",
            help="This model replaces pure black and white pixels by their 3×3 median before its "
            "network. Switch it off to see the network face the noise alone.",
        )  # fmt: skip
        seed_column, button_column = st.columns([3, 2], vertical_alignment="bottom")
        seed = seed_column.number_input(
            "Noise seed", 0, 2**31 - 1, 0, 1, key="explore_seed",
            help="The same seed gives exactly the same noisy pixels.",
        )  # fmt: skip
        button_column.button(
            "Re-roll", key="explore_reroll", icon=":material/casino:", on_click=_reroll_seed
        )
    with blur:
        st.markdown("**Blur**")
        kernel = st.select_slider(
            "Gaussian blur kernel", BLUR_KERNELS, value=1, key="explore_blur",
            format_func=lambda k: "off" if k == 1 else f"{k}×{k}" + (" (paper)" if k == 5 else ""),
            help="The paper's 'motion blur' is a 5×5 Gaussian kernel.",
        )  # fmt: skip
        motion = st.slider(
            "Motion blur length", 0, 25, 0, 1, format="%d px", key="explore_motion_length",
            help="A straight-line smear, as from a moving hand. 0 = off.",
        )  # fmt: skip
        angle = st.slider(
            "Motion direction", 0, 175, 0, 5, format="%d°", key="explore_motion_angle",
            disabled=motion <= 1,
        )  # fmt: skip
    with heatmap:
        st.markdown("**Heatmap**")
        method = st.selectbox(
            "Method", list(METHODS), key="explore_cam_method",
            format_func=lambda m: METHODS[m] + (" (slow on a CPU)" if m == "scorecam" else ""),
            help="Score-CAM runs one forward pass per feature channel: slow without a GPU.",
        )  # fmt: skip
        target = st.selectbox(
            "Explain class", [PREDICTED, *classes], key="explore_target",
            format_func=lambda name: name if name == PREDICTED else f"{name} (why not?)",
            help="Where would the model look for this class? Compare heatmaps of one class.",
        )  # fmt: skip
        alpha = st.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="explore_opacity")
    where = st.radio(
        "Corrupt",
        ["input", "photo"],
        format_func={
            "input": f"the model's {input_size}×{input_size} input (as in the paper)",
            "photo": "the full photo, then resize",
        }.get,
        horizontal=True,
        key="explore_where",
        help="On a large photo, noise added before shrinking mostly averages away.",
    )
    spec = CorruptionSpec(
        noise_density=round(density_pct / 100, 6),
        pepper_fraction=pepper_fraction,
        blur_kernel=kernel,
        motion_length_px=motion,
        motion_angle_deg=float(angle),
        seed=int(seed),
    )
    target = None if target == PREDICTED else target
    return ExploreSettings(spec, where, method, target, alpha, impulse_filter)


# ---- computation (cached dermcore calls) ---------------------------------------------------


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def explain_view(
    model_key: str,
    photo_sha256: str,
    spec_items: tuple,
    where: str,
    method: str,
    target: str | None,
    _predictor: Predictor,
    _photo: np.ndarray,
) -> Explanation:
    """Prepare (corrupt) and explain one view. Keyed on hashes, not pixels: the clean view
    (empty spec_items) is computed once per photo, model, method and target."""
    spec = CorruptionSpec(**dict(spec_items))
    return _predictor.explain(_predictor.prepare(_photo, spec, where), target, method)


def compare(
    entry: common.ModelEntry,
    predictor: Predictor,
    photo: common.CurrentPhoto,
    settings: ExploreSettings,
) -> Comparison:
    model_key = common.model_key(entry)
    impulse_filter = None  # the model has no filter
    if predictor.preprocessing.impulse_filter:
        impulse_filter = settings.impulse_filter
        if not impulse_filter:
            predictor = predictor.with_preprocessing(
                replace(predictor.preprocessing, impulse_filter=False)
            )
            model_key += ":impulse-filter-off"
    method, target = settings.method, settings.target
    clean = explain_view(
        model_key, photo.sha256, (), "input", method, target, predictor, photo.image
    )
    # where="input" corrupts the photo's model input, and an image already at the input size
    # passes through to_input_resolution unchanged when resize_size == input_size: then the
    # clean input stands in for the photo, sparing a 12 MP resize (~50 ms) per slider move.
    source = photo.image
    if settings.where == "input" and predictor.preprocessing.resize_size == predictor.input_size:
        source = clean.input_image
    spec_items = tuple(sorted(settings.spec.to_dict().items()))
    corrupted = explain_view(
        model_key, photo.sha256, spec_items, settings.where, method, target, predictor, source
    )
    return Comparison(
        classes=predictor.classes,
        clean=clean,
        corrupted=corrupted,
        spec=settings.spec,
        where=settings.where,
        shift=cam_shift(clean.cam, corrupted.cam),
        impulse_filter=impulse_filter,
    )


# ---- drawing -------------------------------------------------------------------------------


def render_callout(comparison: Comparison) -> None:
    classes = comparison.classes
    callout = flip_callout(
        classes, comparison.clean.top_class, comparison.corrupted.top_class, comparison.spec
    )
    if callout:
        st.warning(f"**The prediction changed:** {callout}.", icon=":material/swap_horiz:")
    elif comparison.spec.is_identity:
        st.caption("No corruption selected: both views are the same image.")
    else:
        st.caption(
            f"The top class, {classes[comparison.clean.top_class]}, holds under "
            f"{comparison.spec.describe()}."
        )


def render_views(comparison: Comparison, alpha: float) -> None:
    """Model inputs and heatmaps at their own resolution; the browser scales them up pixelated
    (CRISP_IMAGES), so single noisy pixels stay sharp and the images stay small to send."""
    st.html(CRISP_IMAGES)
    classes = comparison.classes
    views = (("Clean", comparison.clean), ("Corrupted", comparison.corrupted))
    columns = st.container(key="explore_views").columns(2, gap="large")
    for column, (name, view) in zip(columns, views, strict=True):
        with column:
            st.markdown(f"**{name}** · {classes[view.top_class]} {view.top_probability:.1%}")
            image_column, heatmap_column = st.columns(2, gap="small")
            image_column.image(view.input_image, caption="what the model sees", width="stretch")
            heatmap_column.image(
                overlay(view.input_image, view.cam, alpha),
                width="stretch",
                caption=f"{METHODS[view.method]} for {classes[view.target]}",
            )


def probability_figure(comparison: Comparison) -> go.Figure:
    classes = comparison.classes
    clean, corrupted = comparison.clean.probabilities, comparison.corrupted.probabilities
    shown = chart_classes(clean, corrupted)
    names = [classes[i] for i in shown]
    figure = go.Figure()
    for label, probs, colour in (
        ("Clean", clean, CLEAN_COLOUR),
        ("Corrupted", corrupted, CORRUPTED_COLOUR),
    ):
        figure.add_bar(
            name=label,
            y=names,
            x=probs[shown],
            orientation="h",
            marker_color=colour,
            text=[f"{p:.1%}" for p in probs[shown]],
            textposition="outside",
            cliponaxis=False,
        )
    figure.update_layout(
        barmode="group",
        height=90 + 42 * len(shown),
        margin={"l": 0, "r": 40, "t": 10, "b": 0},
        xaxis={"range": [0, 1], "tickformat": ".0%", "title": "probability"},
        yaxis={"autorange": "reversed"},
        legend={"orientation": "h", "y": -0.25},
    )
    return figure


def render_predictions(comparison: Comparison) -> None:
    classes = comparison.classes
    clean, corrupted = comparison.clean, comparison.corrupted
    with st.container(key="explore_predictions"):
        chart_column, metric_column = st.columns([3, 2], gap="large")
        chart_column.plotly_chart(
            probability_figure(comparison), key="explore_probabilities",
            config={"staticPlot": True},
        )  # fmt: skip
        with metric_column:
            clean_class = classes[clean.top_class]
            change = corrupted.probabilities[clean.top_class] - clean.top_probability
            first, second = st.columns(2)
            first.metric(
                "Clean prediction",
                clean_class,
                f"{clean.top_probability:.1%}",
                delta_color="off",
                delta_arrow="off",
            )
            second.metric(
                "Corrupted prediction",
                classes[corrupted.top_class],
                f"{change * 100:+.1f} pts for {clean_class}",
                help="The change in the clean prediction's probability.",
            )
            first.metric(
                "Heatmap correlation", f"{comparison.shift.correlation:.2f}",
                help="Pearson r between the clean and corrupted heatmaps: 1 = the model looks "
                "at the same places, 0 = unrelated.",
            )  # fmt: skip
            second.metric(
                "Hot-spot overlap", f"{comparison.shift.top_iou:.2f}",
                help="Intersection over union of the hottest 20% of each heatmap.",
            )  # fmt: skip
            if not comparison.same_target:
                st.caption(
                    "The two heatmaps explain different classes. Choose one class under "
                    "'Explain class' to compare like with like."
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
    title = f"{card.title or card.name} · photo sha256 {photo.sha256[:12]}"
    png_column, json_column, _ = st.columns([1, 1, 2])
    png_column.download_button(
        "Comparison figure (PNG)",
        data=lambda: comparison_png(comparison, alpha, title),
        file_name=f"{stem}.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/image:",
        key="explore_download_png",
    )
    json_column.download_button(
        "Settings record (JSON)",
        data=record_json(record),
        file_name=f"{stem}.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/data_object:",
        key="explore_download_json",
        help="Model, weights hash, photo hash, every corruption setting and seed, and the "
        "probabilities: enough to reproduce this view exactly. Contains no image.",
    )


# ---- page ----------------------------------------------------------------------------------


@st.fragment
def comparison_panel(
    entry: common.ModelEntry, predictor: Predictor, photo: common.CurrentPhoto | None
) -> None:
    """Controls and results. A fragment: moving a control reruns only this panel, not the
    sidebar or the photo picker."""
    settings = explore_controls(
        predictor.input_size, predictor.classes, predictor.preprocessing.impulse_filter
    )
    st.divider()
    if photo is None:
        st.info("Upload a photo (or take one) to begin.", icon=":material/add_photo_alternate:")
        return
    with st.spinner("Explaining…"):
        comparison = compare(entry, predictor, photo, settings)
    render_callout(comparison)
    if comparison.impulse_filter is not None and settings.spec.noise_density > 0:
        st.caption(
            common.IMPULSE_FILTER_NOTE
            if comparison.impulse_filter
            else "Impulse filter off: this model's network faces the noise alone, as it never "
            "did in training (its training images passed the filter too)."
        )
    render_views(comparison, settings.alpha)
    render_predictions(comparison)
    render_downloads(comparison, entry, photo, settings.alpha)


st.title("Explore")
st.caption(
    "How does the model's answer change when the photo is noisy or blurred? Corrupt a photo the "
    "way a phone camera might, and compare predictions and heatmaps side by side."
)
entry, predictor = common.model_or_stop()
source_column, preview_column = st.columns([3, 2], gap="large")
with source_column:
    photo = photo_controls()
with preview_column:
    render_photo(photo)
comparison_panel(entry, predictor, photo)
