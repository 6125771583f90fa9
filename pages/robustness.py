"""Robustness curve: every class probability of the current photo against noise density and blur.

All corrupted views (every density under every seed, every blur kernel) go through the model in
one batched pass (dermcore.robustness); the seeds' spread is drawn as a band around their mean.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dermcore.corruptions import CorruptionSpec
from dermcore.explain import Assessment, Predictor
from dermcore.robustness import (
    DEFAULT_DENSITIES,
    DEFAULT_KERNELS,
    RobustnessCurve,
    assemble_curve,
    classify_views,
    curve_parts,
    rows,
)
from ui import common

HIGHLIGHTED = 4  # classes drawn with a band; the rest start hidden in the legend
# One strong, distinct hue per class, in dermcore.labels.CLASSES order (category10 with its grey
# and pale olive replaced by indigo and dark olive, so whichever class is the photo's clean
# answer, its thick line stands out).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#393b79", "#7f7f00", "#17becf")  # fmt: skip
CLEAN_LINE_PX, OTHER_LINE_PX = 4.5, 1.6
NOT_SURE_COLOUR = "#7b2cbf"  # the shaded range where the model declines to answer
ASSESSMENT_FIELDS = ("probabilities", "familiarity", "abstain", "score")  # Assessment's, in order
DEFAULTS = {"robustness_seeds": 3, "robustness_ratio": 0.75, "robustness_where": "input"}


def robustness_controls(input_size: int) -> tuple[int, float, str]:
    """(number of noise seeds, pepper fraction, where)."""
    common.restore_widgets(DEFAULTS)
    seeds_column, ratio_column, where_column = st.columns(3, gap="medium")
    n_seeds = seeds_column.slider(
        "Noise seeds", 1, 5, key="robustness_seeds",
        help="Each density is drawn with this many different random noise patterns.",
    )  # fmt: skip
    pepper_fraction = ratio_column.select_slider(
        "Black : white", list(common.PEPPER_FRACTIONS),
        format_func=common.PEPPER_FRACTIONS.get, key="robustness_ratio",
    )  # fmt: skip
    where = where_column.radio(
        "Corrupt", ["input", "photo"], key="robustness_where", horizontal=True,
        format_func={"input": f"the {input_size}×{input_size} model input", "photo": "the full photo"}.get,
    )  # fmt: skip
    common.remember_widgets(DEFAULTS)
    return n_seeds, pepper_fraction, where


@st.cache_data(max_entries=128, ttl=3600, show_spinner=False)
def classify_part(
    model_key: str,
    photo_sha256: str,
    spec_items: tuple[tuple, ...],
    where: str,
    _predictor: Predictor,
    _photo: np.ndarray,
) -> Assessment:
    """Probabilities, familiarity and abstention of one part of the curve. No Streamlit call in here: a cached function is
    replayed for every session that asks for the same part, and a call on a block made outside
    it (a progress bar) cannot be replayed."""
    specs = [CorruptionSpec(**dict(items)) for items in spec_items]
    return classify_views(_predictor, _photo, specs, where)


@st.cache_resource(max_entries=16, ttl=3600, show_spinner=False)
def model_input(
    model_key: str, photo_sha256: str, _predictor: Predictor, _photo: np.ndarray
) -> np.ndarray:
    """The photo at the model's input resolution, read-only. Each part of a curve corrupted at
    the input starts from it, instead of resizing the photo again (~25 ms for 12 MP)."""
    image = _predictor.prepare(_photo)
    image.setflags(write=False)
    return image


def curve_in_parts(
    model_key: str,
    photo: common.CurrentPhoto,
    predictor: Predictor,
    n_seeds: int,
    pepper_fraction: float,
    where: str,
) -> Iterator[tuple[float, RobustnessCurve]]:
    """(fraction done, the curve so far): first after the clean view, the blur views and the
    first noise seed, then after each further seed. Each part is cached on its own."""
    parts = curve_parts(n_seeds, pepper_fraction)
    n_views = sum(len(part) for part in parts)
    source = photo.image
    if where == "input" and predictor.preprocessing.input_passes_through:
        source = model_input(model_key, photo.sha256, predictor, photo.image)
    probs, done = [], 0
    for index, part in enumerate(parts):
        spec_items = tuple(tuple(sorted(spec.to_dict().items())) for spec in part)
        probs.append(classify_part(model_key, photo.sha256, spec_items, where, predictor, source))
        done += len(part)
        if index == 0:
            continue
        base, noise = probs[0], probs[1:]
        yield (
            done / n_views,
            assemble_curve(
                DEFAULT_DENSITIES,
                DEFAULT_KERNELS,
                list(range(index)),
                clean=rows(base, 0, 1),
                noise=Assessment(
                    *(np.concatenate([getattr(a, f) for a in noise]) for f in ASSESSMENT_FIELDS)
                ),
                blur=rows(base, 1),
                classes=predictor.classes,
            ),
        )


def show_curve(
    model_key: str,
    photo: common.CurrentPhoto,
    predictor: Predictor,
    n_seeds: int,
    pepper_fraction: float,
    where: str,
) -> None:
    """Draw the curve as soon as its first noise seed is in, then refine it seed by seed, with
    a progress bar above until the last one."""
    n_views = sum(len(part) for part in curve_parts(n_seeds, pepper_fraction))
    text = f"Corrupting and classifying {n_views} views…"
    bar = st.progress(0.0, text=text)
    slot = st.empty()
    for fraction, curve in curve_in_parts(
        model_key, photo, predictor, n_seeds, pepper_fraction, where
    ):
        final = len(curve.seeds) == n_seeds
        if final:
            bar.empty()
        else:
            bar.progress(fraction, text=f"{text} {len(curve.seeds)} of {n_seeds} noise seeds in")
        with slot.container():
            # Keys must be unique within a run: drafts get their own, the last draw the real one.
            render_curve(curve, key_suffix="" if final else f"_draft{len(curve.seeds)}")


def _shown_classes(probs: np.ndarray, clean_class: int) -> list[int]:
    """The clean class first, then the classes that ever come closest to winning."""
    peak = probs.reshape(-1, probs.shape[-1]).max(axis=0)
    order = [int(i) for i in np.argsort(-peak, kind="stable") if i != clean_class]
    return [clean_class, *order[: HIGHLIGHTED - 1]]


def noise_figure(curve: RobustnessCurve) -> go.Figure:
    x = curve.densities * 100
    mean = curve.noise_probs.mean(axis=0)  # (D, C)
    low, high = curve.noise_probs.min(axis=0), curve.noise_probs.max(axis=0)
    highlighted = _shown_classes(curve.noise_probs, curve.clean_class)
    figure = go.Figure()
    for index, name in enumerate(curve.classes):
        colour = PALETTE[index % len(PALETTE)]
        visible = True if index in highlighted else "legendonly"
        if len(curve.seeds) > 1:
            figure.add_scatter(
                x=np.concatenate([x, x[::-1]]),
                y=np.concatenate([high[:, index], low[::-1, index]]),
                fill="toself", fillcolor=colour, opacity=0.18, line={"width": 0},
                hoverinfo="skip", showlegend=False, legendgroup=name, visible=visible,
            )  # fmt: skip
        figure.add_scatter(
            x=x, y=mean[:, index], name=name, legendgroup=name, visible=visible,
            line={"color": colour, "width": CLEAN_LINE_PX if index == curve.clean_class else OTHER_LINE_PX},
            hovertemplate=f"{name}: %{{y:.1%}} at %{{x:.2f}}% noise<extra></extra>",
        )  # fmt: skip
    if curve.noise_tipping_point is not None:
        figure.add_vline(
            x=curve.noise_tipping_point * 100, line_dash="dash", line_color="#e45756",
            annotation_text="top class changes", annotation_position="top left",
        )  # fmt: skip
    for number, (first, last) in enumerate(curve.noise_abstain_runs):
        # each run reaches halfway to its neighbours, whose answers are given
        x0 = x[first] if first == 0 else (x[first - 1] + x[first]) / 2
        x1 = x[last] if last == len(x) - 1 else (x[last] + x[last + 1]) / 2
        figure.add_vrect(
            x0=float(x0), x1=float(x1), fillcolor=NOT_SURE_COLOUR, opacity=0.12, line_width=0,
            annotation_text="Not sure" if number == 0 else None,
            annotation_position="bottom right",
        )  # fmt: skip
    figure = _layout(figure, "noisy pixels (%)", ticksuffix="%")
    return figure.update_xaxes(range=[0, float(x.max())], rangemode="nonnegative")


def blur_figure(curve: RobustnessCurve) -> go.Figure:
    labels = ["off" if k == 1 else f"{k}×{k}" for k in curve.kernels]
    highlighted = _shown_classes(curve.blur_probs, curve.clean_class)
    figure = go.Figure()
    for index, name in enumerate(curve.classes):
        figure.add_scatter(
            x=labels, y=curve.blur_probs[:, index], name=name, mode="lines+markers",
            visible=True if index in highlighted else "legendonly",
            line={"color": PALETTE[index % len(PALETTE)],
                  "width": CLEAN_LINE_PX if index == curve.clean_class else OTHER_LINE_PX},
            hovertemplate=f"{name}: %{{y:.1%}} with %{{x}} blur<extra></extra>",
        )  # fmt: skip
    if curve.blur_tipping_point is not None:
        position = labels[list(curve.kernels).index(curve.blur_tipping_point)]
        figure.add_vline(x=position, line_dash="dash", line_color="#e45756")
    for number, (first, last) in enumerate(curve.blur_abstain_runs):
        figure.add_vrect(
            x0=first - 0.5, x1=last + 0.5, fillcolor=NOT_SURE_COLOUR, opacity=0.12, line_width=0,
            annotation_text="Not sure" if number == 0 else None,
            annotation_position="bottom right",
        )  # fmt: skip
    return _layout(figure, "Gaussian blur kernel")


def _layout(figure: go.Figure, x_title: str, ticksuffix: str = "") -> go.Figure:
    figure.update_layout(
        height=380,
        margin={"l": 0, "r": 0, "t": 30, "b": 0},
        xaxis={"title": x_title, "ticksuffix": ticksuffix},
        yaxis={"title": "probability", "range": [0, 1], "tickformat": ".0%"},
        legend={"orientation": "h", "y": -0.3},
        font={"size": 13},
    )
    return figure


def abstention_sentence(curve: RobustnessCurve) -> str:
    """' It says "Not sure" (shaded) from 0.75% noise to 2% noise and from a 9×9 blur on.',
    or '' for a model that never declines here (or has no familiarity statistics). Where the
    model answers again at a stronger corruption, the span ends there."""
    if curve.clean_abstain:
        return " It is not sure of the photo even uncorrupted."
    densities = [f"{d * 100:.3g}% noise" for d in curve.densities]
    kernels = [f"a {k}×{k} blur" for k in curve.kernels]
    parts = _spans(densities, curve.noise_abstain_runs) + _spans(kernels, curve.blur_abstain_runs)
    if not parts:
        return ""
    spans = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    return f' It says "Not sure" (shaded) {spans}.'


def _spans(values: list[str], runs: list[tuple[int, int]]) -> list[str]:
    """'at 1% noise', 'from 1% noise to 2% noise' or 'from 1% noise on' (to the end of the
    sweep) per run."""
    spans = []
    for first, last in runs:
        if first == last:
            spans.append(f"at {values[first]}")
        elif last == len(values) - 1:
            spans.append(f"from {values[first]} on")
        else:
            spans.append(f"from {values[first]} to {values[last]}")
    return spans


def render_curve(curve: RobustnessCurve, key_suffix: str = "") -> None:
    st.info(curve.describe() + abstention_sentence(curve), icon=":material/insights:")
    clean = curve.classes[curve.clean_class]
    noise_point, blur_point = curve.noise_tipping_point, curve.blur_tipping_point
    first, second, third = st.columns(3)
    first.metric(
        "Clean prediction",
        clean,
        f"{curve.clean_probs[curve.clean_class]:.1%}",
        delta_color="off",
        delta_arrow="off",
    )
    second.metric(
        "Noise tipping point",
        "none" if noise_point is None else f"{noise_point:.2%}",
        help="The lowest density at which the top class (mean over seeds) is no longer "
        f"{clean}. 'none' means it holds up to {curve.densities.max():.0%}.",
    )
    third.metric(
        "Blur tipping point",
        "none" if blur_point is None else f"{blur_point}×{blur_point}",
        help=f"The smallest Gaussian kernel at which the top class is no longer {clean}.",
    )
    noise_column, blur_column = st.container(key=f"wrap_robustness_charts{key_suffix}").columns(
        2, gap="large"
    )
    with noise_column:
        st.markdown("**Against salt-and-pepper noise**")
        st.plotly_chart(noise_figure(curve), key=f"robustness_noise_chart{key_suffix}")
        if len(curve.seeds) > 1:
            st.caption(f"Lines: mean over {len(curve.seeds)} noise seeds; bands: their range.")
    with blur_column:
        st.markdown("**Against Gaussian blur**")
        st.plotly_chart(blur_figure(curve), key=f"robustness_blur_chart{key_suffix}")
    st.caption(
        f"The clean class ({clean}, thick line) and the {HIGHLIGHTED - 1} classes that come "
        "closest to it are shown; click a name in a legend to show the others."
    )


entry, predictor = common.model_or_stop()
common.page_header(
    "Robustness curve",
    "How far can this photo be degraded before the model changes its mind? Every class's "
    "probability against noise density and blur strength.",
)
photo = common.current_photo()
if photo is None:
    st.info("Choose a photo on the Explore page first.", icon=":material/image_search:")
    st.page_link("pages/explore.py", label="Go to Explore", icon=":material/arrow_forward:")
    st.stop()
photo_column, controls_column = st.columns([1, 4], gap="medium")
with photo_column:
    height, width = photo.original_shape[:2]
    st.image(photo.preview_png, width=max(60, min(200, round(120 * width / height))))
    st.caption(f"{width}×{height} px · {entry.label}")
with controls_column:
    n_seeds, pepper_fraction, where = robustness_controls(predictor.input_size)
    if predictor.preprocessing.impulse_filter:
        st.caption(common.IMPULSE_FILTER_NOTE)
show_curve(common.model_key(entry), photo, predictor, n_seeds, pepper_fraction, where)
