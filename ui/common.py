"""What every page shares: settings, the model list, the cached predictor and the current photo.

Pages draw and dermcore computes; this module only finds files, caches dermcore's results and
keeps the few session_state entries that cross pages (the chosen model, the current photo).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from stat import S_ISREG

import numpy as np
import streamlit as st

from dermcore.checkpoint import CheckpointError, ModelCard, list_cards, read_card
from dermcore.comparison import NOTICE as NOTICE  # re-exported for app.py
from dermcore.explain import Predictor
from dermcore.imageio import SUPPORTED_EXTENSIONS
from dermcore.malloc import fix_mmap_threshold

APP_DIR = Path(__file__).resolve().parent.parent
MODEL_KEY = "sidebar_model"  # the sidebar's model picker (a card path); drawn in app.py
# Black:white ratios of salt-and-pepper noise, as fractions of black ("pepper") pixels.
PEPPER_FRACTIONS = {1.0: "black only", 0.75: "3:1", 0.5: "1:1", 0.25: "1:3", 0.0: "white only"}
PHOTO_KEY = "photo"  # the current CurrentPhoto, set by Explore and read by Robustness curve


def input_caption(impulse_filter: bool | None) -> str:
    """The caption of a view's model input: with the impulse filter on, the network sees the
    input after the filter, not these pixels (Comparison.impulse_filter)."""
    return "model input, before its impulse filter" if impulse_filter else "what the model sees"


# Shown where noise meets a model whose preset has the impulse filter (the robust model).
IMPULSE_FILTER_NOTE = (
    "This model replaces pure black and pure white pixels by their 3×3 median before the network "
    "sees them (a switching median filter, the classical remedy for salt-and-pepper noise), so "
    "noise added at the model input barely reaches the network. Noise added to the full photo is "
    "averaged into grey specks by the resize and passes the filter. Switch off “Impulse filter” "
    "(Explore, under Noise) to see this network face the noise alone."
)


# Return freed photo buffers to the system (why: dermcore/malloc.py).
fix_mmap_threshold()  # once per process, when the first page imports this module


def familiarity_catches(card: ModelCard) -> str:
    """What the familiarity check catches for this model, in one or two sentences: noise is
    caught only by a model that meets it bare and was not trained on it."""
    if card.familiarity.get("fitted_corruption", "none") != "none":
        return (
            "This catches blurred and non-skin images well. Salt-and-pepper noise, which it "
            "was trained on, looks familiar to it, so it keeps answering noisy photos. "
        )
    if card.preprocessing.get("impulse_filter"):
        return (
            "This catches blurred and non-skin images well. Its impulse filter removes "
            "salt-and-pepper noise before the network, so it keeps answering noisy photos. "
        )
    return "This catches blurred, noisy and non-skin images well. "


def weights_dir() -> Path:
    """DERM_WEIGHTS_DIR, else weights/ beside app.py (read on every run, so tests can point it)."""
    return Path(os.environ.get("DERM_WEIGHTS_DIR") or APP_DIR / "weights")


def samples_dir() -> Path | None:
    """DERM_SAMPLES_DIR when it names an existing folder (a gallery of one's own, shown after the
    shipped samples), else None."""
    value = os.environ.get("DERM_SAMPLES_DIR")
    return Path(value) if value and Path(value).is_dir() else None


SHIPPED_SAMPLES_DIR = APP_DIR / "samples"
# Why two classes have no shipped sample (samples/README.md says the same).
NO_SAMPLE_NOTE = (
    "No sample of Crust or Ulcer ships: every photo of them in the training data comes from "
    "sources without a licence that allows redistribution."
)


@dataclass(frozen=True)
class Sample:
    path: Path
    caption: str  # "Acne · Roboflow 'Acne Dataset' (CC BY 4.0)": the true class and the source
    label: str | None  # the true class where the attribution file says it


def sample_photos() -> list[Sample]:
    """The shipped samples (captions from samples/ATTRIBUTION.csv), then DERM_SAMPLES_DIR's
    photos (captioned by file name)."""
    samples = _attributed(SHIPPED_SAMPLES_DIR)
    if (folder := samples_dir()) is not None and folder.resolve() != SHIPPED_SAMPLES_DIR:
        suffixes = {f".{ext}" for ext in SUPPORTED_EXTENSIONS}
        own = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes)[:24]
        samples += [Sample(p, f"{p.stem} · your folder", None) for p in own]
    return numbered(samples)


def numbered(samples: list[Sample]) -> list[Sample]:
    """Captions made unique: samples that share one get " · photo 1", " · photo 2", ... A
    selectbox tells its options apart by their captions, so two alike would load one photo."""
    counts, seen = Counter(sample.caption for sample in samples), Counter()
    unique = []
    for sample in samples:
        if counts[sample.caption] > 1:
            seen[sample.caption] += 1
            sample = replace(sample, caption=f"{sample.caption} · photo {seen[sample.caption]}")
        unique.append(sample)
    return unique


def _attributed(folder: Path) -> list[Sample]:
    table = folder / "ATTRIBUTION.csv"
    if not table.is_file():
        return []
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        Sample(
            folder / row["file"],
            f"{row['label']} · {row['source_name']} ({_licence(row)})",
            row["label"],
        )
        for row in rows
        if (folder / row["file"]).is_file()
    ]


def _licence(row: dict) -> str:
    return "CC BY 4.0" if row["licence"].startswith("CC BY 4.0") else row["licence"]


# Plain names for the shipped models, one line each on what they are; the sidebar picker and the
# Results page use the same names. A card this table does not know keeps its own title.
MODEL_NAMES = {
    "clean": ("Clean", "Fine-tuned on clean photos, as in the paper."),
    "noise-trained": (
        "Noise-trained",
        "Fine-tuned on photos with salt-and-pepper noise added (the paper's Table 5).",
    ),
    "robust": (
        "Robust (impulse filter)",
        "Fine-tuned on a mix of clean and degraded photos, with a filter in front that removes "
        "salt-and-pepper pixels.",
    ),
}


def model_name(card: ModelCard) -> str:
    """'Clean', 'Noise-trained', 'Robust (impulse filter)', else the card's title or name."""
    if card.name in MODEL_NAMES:
        return MODEL_NAMES[card.name][0]
    return _OLD_TITLE_SCORE.sub("", card.title or "") or card.name


def model_blurb(card: ModelCard) -> str | None:
    """One line on what the model is, for the shipped ones."""
    return MODEL_NAMES[card.name][1] if card.name in MODEL_NAMES else None


# Less empty space above each page's header than Streamlit's default (6rem), so a 768-px-tall
# screen shows the controls and both answers at once; and below 1100 px of window, the columns
# of any container keyed "wrap_..." wrap one under the other. A <style>-only st.html takes no
# space.
COMPACT_PAGE = (
    "<style>.stMainBlockContainer { padding-top: 2.5rem; }"
    "@media (max-width: 1100px) {"
    ' [class*="st-key-wrap_"] > div > [data-testid=stHorizontalBlock] { flex-wrap: wrap; }'
    ' [class*="st-key-wrap_"] > div > [data-testid=stHorizontalBlock] > [data-testid=stColumn]'
    " { min-width: 100%; } }</style>"
)


def page_header(title: str, question: str) -> None:
    """The page's title with the notice beside it, and one line on what the page answers."""
    st.html(COMPACT_PAGE)
    st.markdown(f"### {title} &nbsp; :orange-badge[:material/school: {NOTICE}]")
    st.caption(question)


KEPT_PREFIX = "kept_"  # session_state[KEPT_PREFIX + key]: a widget's last value, kept


def restore_widgets(defaults: dict) -> None:
    """Before a page draws its widgets: each widget key that Streamlit dropped (it forgets the
    values of widgets a run did not draw, and a page switch forgets those drawn inside a
    fragment) gets back its last kept value, else its default. Widgets then take their value
    from session_state only (no `value=` argument), so no value conflicts with a default."""
    for key, default in defaults.items():
        if key not in st.session_state:
            st.session_state[key] = st.session_state.get(KEPT_PREFIX + key, default)


def remember_widgets(keys) -> None:
    """After a page (or fragment) has drawn its widgets: keep their values in plain session
    state, which outlives page switches."""
    for key in keys:
        if key in st.session_state:
            st.session_state[KEPT_PREFIX + key] = st.session_state[key]


_OLD_TITLE_SCORE = re.compile(r" \(test balanced accuracy [0-9.]+\)$")


@dataclass(frozen=True)
class ModelEntry:
    """One model card in the weights folder: its card, or the sentence why it cannot be read."""

    path: str
    card: ModelCard | None
    error: str | None = None

    @property
    def label(self) -> str:
        """The plain name for pickers and captions (model_name); older cards end their title
        with "(test balanced accuracy 0.79)", which is dropped."""
        if self.card is None:
            return Path(self.path).stem
        return model_name(self.card)


def available_models() -> list[ModelEntry]:
    """Every card in the weights folder, readable or not, sorted by file name."""
    entries = []
    for path in list_cards(weights_dir()):
        try:
            entries.append(ModelEntry(str(path), card_at(path)))
        except CheckpointError as error:
            entries.append(ModelEntry(str(path), None, str(error)))
    return entries


def card_at(path: str | Path) -> ModelCard:
    """read_card, parsed once per version of the file (its size and modification time): the
    pages list the models and key their caches on the cards on every slider move, ten card
    reads per move with three models. The card is shared: read it, never change it."""
    path = Path(path)
    stamp = _file_stamp(path)
    if stamp is None:
        return read_card(path)  # raises the missing-card error
    return _card_version(str(path), *stamp)


@functools.lru_cache(maxsize=64)
def _card_version(path: str, size: int, mtime_ns: int) -> ModelCard:
    return read_card(path)


def card_metric(card: ModelCard, split: str, name: str) -> float | None:
    """card.metrics[split][name] as a float; a {"mean": ...} or {"shipped": ...} dict is read
    too. None when the card does not say."""
    value = (card.metrics or {}).get(split, {})
    value = value.get(name) if isinstance(value, dict) else None
    if isinstance(value, dict):
        value = next((value[k] for k in ("shipped", "value", "mean") if k in value), None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def metrics_summary(card: ModelCard) -> str:
    """'test acc. 86.9% · balanced 84.2% · SD-198 balanced 31.0%' from the card; '' when the
    card has none of these."""
    parts = []
    for split, name, label in (
        ("test", "accuracy", "test acc."),
        ("test", "balanced_accuracy", "balanced"),
        ("shift_sd198", "balanced_accuracy", "SD-198 balanced"),
    ):
        value = card_metric(card, split, name)
        if value is not None:
            parts.append(f"{label} {value:.1%}")
    return " · ".join(parts)


def selected_model() -> ModelEntry | None:
    """The model chosen in the sidebar (app.py draws the picker before any page runs)."""
    chosen = st.session_state.get(MODEL_KEY)
    entries = {entry.path: entry for entry in available_models()}
    return entries.get(chosen) or next((e for e in entries.values() if e.card), None)


def model_stamp(card_path: str) -> tuple:
    """Changes whenever the card or its weights file does (retrained, recalibrated, replaced),
    so the predictor is loaded, and its weights verified, anew."""
    card = card_at(card_path)
    weights = Path(card_path).parent / card.weights_file
    return card.weights_sha256, _file_stamp(Path(card_path)), _file_stamp(weights)


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:  # missing, or removed while being looked at
        return None
    return (stat.st_size, stat.st_mtime_ns) if S_ISREG(stat.st_mode) else None


def model_key(entry: ModelEntry) -> str:
    """A cache key for results computed with this model."""
    return f"{entry.path}:{model_stamp(entry.path)}"


def torch_threads() -> int:
    """DERM_TORCH_THREADS, default 1. One intra-op thread per inference keeps a shared server
    responsive: on a busy machine (other sessions, other processes) two threads that wait for
    each other were measured 5x slower than one (Grad-CAM at 224 px: ~250 ms against ~50 ms)."""
    value = os.environ.get("DERM_TORCH_THREADS", "1")
    return max(1, int(value)) if value.isdigit() else 1


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _load_predictor(card_path: str, stamp: tuple) -> Predictor:
    import torch

    torch.set_num_threads(torch_threads())
    # explain (Grad-CAM) runs in torch; the robustness curve and photo sets in ONNX Runtime
    return Predictor.from_checkpoint(card_path, graph_runtime=True, threads=torch_threads())


def load_predictor(entry: ModelEntry) -> Predictor:
    """The shared, read-only predictor for a model; raises CheckpointError naming the file."""
    return _load_predictor(entry.path, model_stamp(entry.path))


def model_or_stop() -> tuple[ModelEntry, Predictor]:
    """The sidebar's model, loaded; otherwise a page-level error and the page stops here."""
    entry = selected_model()
    if entry is None or entry.card is None:
        st.error(
            f"No usable model was found in {weights_dir()}. Add a checkpoint there "
            "(see training/README.md) or set DERM_WEIGHTS_DIR to a folder that has one."
        )
        st.stop()
    try:
        return entry, load_predictor(entry)
    except CheckpointError as error:
        st.error(f"{error} You can pick another model in the sidebar.")
        st.stop()


@dataclass(frozen=True)
class CurrentPhoto:
    """The photo being studied: decoded pixels and the hash of the file's bytes (never the bytes
    themselves, never written anywhere)."""

    image: np.ndarray  # uint8 HxWx3, the working copy (dermcore.imageio.WORKING_SIDE_PX)
    sha256: str  # of the uploaded file's bytes; the cache key for everything derived from it
    name: str  # file name as uploaded, shown in captions only
    preview_png: bytes  # downscaled for display, encoded once rather than on every rerun
    original_shape: tuple[int, ...]  # the decoded file's (height, width, 3)


def photo_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def current_photo() -> CurrentPhoto | None:
    return st.session_state.get(PHOTO_KEY)


def set_current_photo(photo: CurrentPhoto | None) -> None:
    st.session_state[PHOTO_KEY] = photo
