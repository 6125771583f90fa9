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


SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "macro_auroc", "n")


def metrics_table(metrics: dict) -> pd.DataFrame | None:
    """{split: {metric: number}} -> a table with one row per summary metric and one column per
    split. Everything else (per-class recall, per-seed records, bookkeeping such as the kept
    epoch) is left to the JSON below."""
    columns = {
        split: {name: values[name] for name in SUMMARY_METRICS if _is_number(values.get(name))}
        for split, values in metrics.items()
        if isinstance(values, dict)
    }
    columns = {split: values for split, values in columns.items() if values}
    if not columns:
        return None
    table = pd.DataFrame(columns)
    table.index = [name.replace("_", " ") for name in table.index]
    return table


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render_model_card(entry: common.ModelEntry) -> None:
    card: ModelCard = entry.card
    st.subheader(card.title or card.name)
    problem = weights_problem(entry.path, common.model_stamp(entry.path))
    if problem:
        st.error(problem)
    first, second, third = st.columns(3)
    first.metric("Architecture", card.arch)
    second.metric("Classes", len(card.classes))
    preprocessing = card.get_preprocessing()
    third.metric("Input", f"{preprocessing.input_size}×{preprocessing.input_size} px")
    st.info(card.intended_use, icon=":material/school:")
    if card.limitations:
        st.markdown("**Limitations**\n" + "\n".join(f"- {item}" for item in card.limitations))
    st.markdown("**Metrics** (from the card)")
    table = metrics_table(card.metrics or {})
    if table is None:
        st.caption("The card lists no metrics.")
    else:
        st.dataframe(
            table,
            width="stretch",
            column_config={c: st.column_config.NumberColumn(format="%.4g") for c in table.columns},
        )
    if card.calibration:
        st.caption(
            f"Calibration: temperature {card.temperature:.3g} (probabilities are softmax(logits / T))."
        )
    with st.expander("Training and data provenance"):
        st.markdown("**Training**")
        st.json(card.training or {}, expanded=False)
        st.markdown("**Data**")
        st.json(card.data or {}, expanded=False)
        st.markdown("**All metrics**")
        st.json(card.metrics or {}, expanded=False)
        st.markdown("**Preprocessing**")
        st.json(preprocessing.to_dict(), expanded=False)
    st.caption(
        f"Weights `{card.weights_file}` · SHA-256 `{card.weights_sha256}` · "
        f"created {card.created or 'unknown'} · card version {card.version}"
    )


def render_dataset_card() -> None:
    path = common.weights_dir() / "DATASET.md"
    if path.is_file():
        st.markdown(path.read_text())
    else:
        st.caption(f"No dataset card yet ({path.name} is not in the weights folder).")


st.title("Model & data")
entry = common.selected_model()
model_tab, data_tab = st.tabs(["Model card", "Dataset card"])
with model_tab:
    if entry is None or entry.card is None:
        st.warning(f"No model card in {common.weights_dir()}.")
    else:
        render_model_card(entry)
with data_tab:
    render_dataset_card()
