"""The cached computations behind a clean-vs-corrupted view, shared by the pages that show one
(Explore, the model comparison, Teaching). Keyed on hashes, never on pixels; no Streamlit call
inside a cached function, so a cached result replays for every session. The explanations are
kept as shared, read-only objects (st.cache_resource): a slider move reads the clean view and
any view seen before without unpickling ~350 KB of arrays each time.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace

import numpy as np
import streamlit as st

from dermcore.comparison import Comparison
from dermcore.corruptions import CorruptionSpec
from dermcore.explain import Explanation, Predictor, cam_shift
from dermcore.familiarity import familiarity_badge
from ui import common


@dataclass(frozen=True)
class ExploreSettings:
    spec: CorruptionSpec
    where: str  # "input" or "photo", see dermcore.corruptions.corrupt_for_model
    method: str  # key of dermcore.explain.METHODS
    target: str | None  # class name to explain, None = each view's own top class
    alpha: float  # heatmap opacity in [0, 1]
    impulse_filter: bool = True  # a model with the impulse filter uses it (the switch); else moot


@st.cache_resource(max_entries=64, ttl=3600, show_spinner=False)
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
    (empty spec_items) is computed once per photo, model, method and target. Its arrays are
    read-only: every session shares the one object."""
    spec = CorruptionSpec(**dict(spec_items))
    explanation = _predictor.explain(_predictor.prepare(_photo, spec, where), target, method)
    for array in (
        explanation.probabilities,
        explanation.logits,
        explanation.cam,
        explanation.input_image,
    ):
        array.setflags(write=False)
    return explanation


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
    # where="input" corrupts the photo's model input: where that input passes through
    # to_input_resolution, the clean input stands in for the photo, sparing a 12 MP resize
    # (~50 ms) per slider move.
    source = photo.image
    if settings.where == "input" and predictor.preprocessing.input_passes_through:
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


BADGE_COLOURS = {"familiar": "green", "unusual": "orange", "unlike anything in training": "red"}
FAMILIARITY_HELP = (
    "How much this photo looks like the photos the model learned from. 'Familiar': at least as "
    "usual as 95% of the validation photos; 'unusual': less; 'unlike anything in training': "
    "less familiar than every validation photo. 'Not sure': the model declines to answer "
    "because the photo is unfamiliar or its confidence is low; the chart (or the model's "
    "bars) still shows its top classes."
)


def answer_parts(classes: tuple[str, ...], view: Explanation) -> tuple[str, str, bool, str | None]:
    """(top class, its probability as '61%', whether the model declines, familiarity badge or
    None for a model without familiarity statistics) of one view."""
    return (
        classes[view.top_class],
        f"{view.top_probability:.0%}",
        bool(getattr(view, "abstain", False)),
        familiarity_badge(getattr(view, "familiarity", None)),
    )


def answer_markdown(classes: tuple[str, ...], view: Explanation) -> str:
    """'**Acne** 61% · familiar', or '**Not sure** (Acne 61%) · unusual' where the model
    declines; no badge for a model without familiarity statistics."""
    name, percent, declines, badge = answer_parts(classes, view)
    text = f"**Not sure** ({name} {percent})" if declines else f"**{name}** {percent}"
    if badge is not None:
        text += f" :{BADGE_COLOURS[badge]}-badge[{badge}]"
    return text


def answer_html(classes: tuple[str, ...], view: Explanation) -> str:
    """answer_markdown's sentence as HTML, for a view drawn inside st.html; the badge's
    tooltip is FAMILIARITY_HELP. Its classes are styled by the page that draws it."""
    name, percent, declines, badge = answer_parts(classes, view)
    name = html.escape(name)
    text = f"<b>Not sure</b> ({name} {percent})" if declines else f"<b>{name}</b> {percent}"
    if badge is not None:
        text += (
            f' <span class="derm-pill derm-{BADGE_COLOURS[badge]}" '
            f'title="{html.escape(FAMILIARITY_HELP)}">{badge}</span>'
        )
    return text
