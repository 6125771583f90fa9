"""Model & data: the chosen model's card and the dataset card, as the files state them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from dermcore.checkpoint import CheckpointError, ModelCard, read_card, verify_weights
from ui import common


@st.cache_data(show_spinner=False, max_entries=16)
def weights_problem(card_path: str, stamp: tuple) -> str | None:
    """None when the weights file matches its card's SHA-256, else the sentence why not."""
    try:
        verify_weights(read_card(card_path), Path(card_path).parent)
    except CheckpointError as error:
        return str(error)
    return None


ARCHITECTURES = {  # card arch -> plain words
    "efficientnet_lite0": "EfficientNet-Lite0",
    "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "resnet101": "ResNet-101",
    "resnet152": "ResNet-152",
}
ACCURACY_ROWS = {  # card metrics key -> the row's plain name
    "test": "Held-out test photos (same collections as training)",
    "shift_sd198": "SD-198: photos from other clinics (the honest test)",
}


def accuracy_table(metrics: dict) -> pd.DataFrame | None:
    """Plain rows (test, SD-198) and columns in percent; the spread over training runs where
    the card has it. Cells the card does not fill say 'not measured', never None."""
    rows = {}
    for key, name in ACCURACY_ROWS.items():
        values = metrics.get(key)
        if not isinstance(values, dict):
            continue
        spread = metrics.get(f"{key}_std") or {}
        mean = metrics.get(f"{key}_mean") or {}
        rows[name] = {
            "photos": f"{values['n']:g}" if _is_number(values.get("n")) else "not measured",
            "right answers": _percent(values.get("accuracy")),
            "balanced over classes": _percent(values.get("balanced_accuracy")),
            "over the training runs": (
                f"{mean['balanced_accuracy']:.0%} ± {spread['balanced_accuracy']:.0%} balanced"
                if _is_number(mean.get("balanced_accuracy"))
                and _is_number(spread.get("balanced_accuracy"))
                else "one run"
            ),
        }
    return pd.DataFrame.from_dict(rows, orient="index") if rows else None


def _percent(value: object) -> str:
    return f"{value:.1%}" if _is_number(value) else "not measured"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def what_it_is(card: ModelCard) -> str:
    """Two or three sentences of provenance, from the card."""
    arch = ARCHITECTURES.get(card.arch, card.arch)
    training = card.training or {}
    data = card.data or {}
    counts = data.get("split_counts") or {}
    config = training.get("config") if isinstance(training.get("config"), dict) else {}
    pretrained = (
        "pretrained on ImageNet's everyday photos, then fine-tuned"
        if config.get("pretrained", True)
        else "trained from scratch"
    )
    photos = f"{counts['train']:,} training photos" if "train" in counts else "training photos"
    article = "An" if arch[:1].upper() in "AEIOU" else "A"
    text = f"{article} {arch} network, {pretrained} on {photos} of ten lesion types from public collections, some without a stated licence (the dataset card)."
    if seeds := training.get("seeds"):
        text += (
            f" It was trained {len(seeds)} times with different random seeds; the run shipped "
            "here is the one whose validation score was closest to the middle of the runs."
        )
    roots = data.get("roots") if isinstance(data.get("roots"), list) else []
    if len(roots) > 1:
        listed = "; ".join(
            f"{Path(str(root.get('path', '?'))).name} ({root.get('rows', '?')} photos)"
            for root in roots
            if isinstance(root, dict)
        )
        text += f" Its photos come from {len(roots)} collections: {listed}."
    if card.created:
        text += f" Trained on {card.created[:10]}."
    return text


def render_model_card(entry: common.ModelEntry) -> None:
    card: ModelCard = entry.card
    st.subheader(entry.label)
    if blurb := common.model_blurb(card):
        st.markdown(blurb)
    problem = weights_problem(entry.path, common.model_stamp(entry.path))
    if problem:
        st.error(problem)
    preprocessing = card.get_preprocessing()
    st.markdown("**What it is**  \n" + what_it_is(card))
    st.info(card.intended_use, icon=":material/school:")
    st.markdown("**How often it is right**")
    table = accuracy_table(card.metrics or {})
    if table is None:
        st.caption("The card lists no accuracy yet.")
    else:
        st.dataframe(table, width="stretch")
        st.caption(
            "Balanced: the average over classes, so rare classes count as much as common ones. "
            "The gap between the two rows is what other clinics' photos cost, and diseases "
            "under these labels that the training photos never show."
        )
    recall = (card.metrics or {}).get("test", {}).get("per_class_recall")
    if isinstance(recall, dict) and recall:
        st.markdown("**How often each lesion type is recognised** (held-out test photos)")
        st.dataframe(
            pd.DataFrame(
                {"recognised": [_percent(v) for v in recall.values()]}, index=list(recall)
            ).T,
            width="stretch",
        )
    if card.calibration.get("shift_factor"):
        sources = len(card.calibration.get("shift_sources") or [None])
        words = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
        times = words[sources - 2] if 2 <= sources <= 10 else str(sources)
        repeated = (
            f"repeated {times} times with one photo source left out each time,"
            if sources > 1
            else "without one photo source,"
        )
        st.markdown(
            "**Confidence.** Its probabilities are set for photos from clinics it never saw. "
            f"The same training, {repeated} was more sure of itself on the left-out photos "
            "than its accuracy there justified, so these probabilities are softened by as "
            "much. On photos like its training photos it is therefore a little "
            "modest; on photos from other clinics (SD-198) it is still too sure. Read a high "
            "probability as the model's certainty, not as the chance of being right."
        )
    elif card.calibration:
        st.markdown(
            "**Confidence.** Its probabilities are calibrated on validation photos: among "
            "answers given at about 80%, about 80% were right there. On photos from other "
            "clinics it is overconfident, so read a high probability as the model's certainty, "
            "not as the chance of being right."
        )
    if card.familiarity:
        st.markdown(
            "**When it says 'Not sure'.** For every photo the model also measures how much it "
            "looks like the photos it learned from (texture, sharpness, colour), and it declines "
            "to answer when the photo is unusual or its confidence is low, as it did for about "
            "one validation photo in ten. "
            + common.familiarity_catches(card)
            + "It does not catch a familiar-looking photo of a disease it never saw, so an "
            "answer is never a diagnosis."
        )
    if card.limitations:
        st.markdown("**Limits**\n" + "\n".join(f"- {item}" for item in card.limitations))
    first, second, third = st.columns(3)
    first.metric("Network", ARCHITECTURES.get(card.arch, card.arch))
    second.metric("Lesion types", len(card.classes))
    third.metric("Sees photos at", f"{preprocessing.input_size}×{preprocessing.input_size} px")
    with st.expander("For engineers: the full model card (JSON)"):
        st.json(card.to_dict(), expanded=False)
        st.caption(
            f"Weights `{card.weights_file}` · SHA-256 `{card.weights_sha256}` · "
            f"card version {card.version}"
        )


def render_sample_credits() -> None:
    """Who made the sample photos, under which licence, and where each came from."""
    table = common.SHIPPED_SAMPLES_DIR / "ATTRIBUTION.csv"
    st.markdown(
        "**Sample photos.** The gallery's photos come from the held-out test split (no model "
        "here trained on them), only from collections whose licence allows sharing them: "
        "PAD-UFES-20 (Pacheco et al. 2020, CC BY 4.0) and Roboflow exports published under "
        "CC BY 4.0. They were resized and re-encoded. " + common.NO_SAMPLE_NOTE
    )
    if table.is_file():
        credits = pd.read_csv(table)
        st.dataframe(
            credits[["file", "label", "source_name", "licence", "origin"]].rename(
                columns={"label": "lesion type", "source_name": "source"}
            ),
            hide_index=True,
            width="stretch",
        )


def render_dataset_card() -> None:
    path = common.weights_dir() / "DATASET.md"
    if path.is_file():
        st.markdown(path.read_text())
    else:
        st.caption(f"No dataset card yet ({path.name} is not in the weights folder).")


common.page_header("Model & data", "What is this model, how was it made, and what are its limits?")
entry = common.selected_model()
model_tab, data_tab, samples_tab = st.tabs(["Model card", "Dataset card", "Sample photos"])
with model_tab:
    if entry is None or entry.card is None:
        st.warning(f"No model card in {common.weights_dir()}.")
    else:
        render_model_card(entry)
with data_tab:
    render_dataset_card()
with samples_tab:
    render_sample_credits()
