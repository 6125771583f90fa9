"""What the Teaching page needs from the app around a deck: each case's photo (a shipped sample,
or one uploaded in this session and kept in its memory only), its model, and its cached
clean-vs-corrupted comparison (ui.views.compare, the same computation Explore draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from dermcore.comparison import Comparison
from dermcore.imageio import (
    WORKING_SIDE_PX,
    downscale_for_display,
    encode_png,
    load_image,
    upright_size,
)
from dermcore.teaching import Case, Deck
from ui import common
from ui.views import ExploreSettings, compare

HEATMAP_ALPHA = 0.45
PREVIEW_SIDE_PX = 256


def decode_photo(data: bytes, name: str) -> common.CurrentPhoto:
    """A photo file's bytes -> the working copy every page uses; raises ImageLoadError. The
    bytes themselves are not kept."""
    image = load_image(data, max_side=WORKING_SIDE_PX)
    preview = encode_png(downscale_for_display(image, PREVIEW_SIDE_PX))
    return common.CurrentPhoto(
        image, common.photo_sha256(data), name, preview, (*upright_size(data), 3)
    )


@st.cache_data(max_entries=64, show_spinner=False)
def sample_photo(path: str, stamp: tuple[int, int]) -> common.CurrentPhoto:
    """A shipped sample, decoded once per file version (stamp: size and mtime)."""
    with open(path, "rb") as f:
        data = f.read()
    return decode_photo(data, path.rsplit("/", 1)[-1])


def samples_by_file() -> dict[str, common.Sample]:
    return {sample.path.name: sample for sample in common.sample_photos()}


def load_sample(sample: common.Sample) -> common.CurrentPhoto:
    stat = sample.path.stat()
    return sample_photo(str(sample.path), (stat.st_size, stat.st_mtime_ns))


def case_photo(
    case: Case, uploads: dict[str, common.CurrentPhoto], samples: dict[str, common.Sample]
) -> common.CurrentPhoto | None:
    """The case's photo when this session has it with the deck's hash, else None."""
    if case.uploaded:
        return uploads.get(case.photo_sha256)
    sample = samples.get(case.sample_file)
    if sample is None:
        return None
    photo = load_sample(sample)
    return photo if photo.sha256 == case.photo_sha256 else None


def models_by_name() -> dict[str, common.ModelEntry]:
    return {e.card.name: e for e in common.available_models() if e.card is not None}


@dataclass(frozen=True)
class ReadyCase:
    """A case whose photo and model are both at hand."""

    index: int
    case: Case
    photo: common.CurrentPhoto
    entry: common.ModelEntry


def deck_status(
    deck: Deck, uploads: dict[str, common.CurrentPhoto]
) -> tuple[list[ReadyCase], list[str]]:
    """The cases that can be shown, and one sentence per case that cannot (or that will not
    show exactly what the deck recorded)."""
    samples, models = samples_by_file(), models_by_name()
    ready, problems = [], []
    for index, case in enumerate(deck.cases):
        number = index + 1
        photo = case_photo(case, uploads, samples)
        entry = models.get(case.model_name)
        if photo is None and case.uploaded:
            problems.append(
                f"Case {number}: upload the photo with SHA-256 {case.photo_sha256[:12]}… again "
                "(uploaded photos are never stored, so an imported deck cannot bring them)."
            )
        elif photo is None:
            problems.append(
                f"Case {number}: the sample {case.sample_file} is not among the shipped "
                "samples with the deck's SHA-256."
            )
        if entry is None:
            problems.append(
                f"Case {number}: no model named “{case.model_name}” in {common.weights_dir()}."
            )
        elif entry.card.weights_sha256 != case.weights_sha256:
            problems.append(
                f"Case {number}: the model “{entry.label}” here has other weights than the "
                "deck's, so its answers may differ from the presenter's."
            )
        if photo is not None and entry is not None:
            ready.append(ReadyCase(index, case, photo, entry))
    return ready, problems


def case_comparison(ready: ReadyCase, cam_method: str) -> Comparison:
    """The case's clean and corrupted views, cached like Explore's (ui.views.compare)."""
    predictor = common.load_predictor(ready.entry)
    settings = ExploreSettings(ready.case.spec, ready.case.where, cam_method, None, HEATMAP_ALPHA)
    return compare(ready.entry, predictor, ready.photo, settings)


def photo_label(case: Case, samples: dict[str, common.Sample]) -> str:
    """A sample's caption, or "uploaded photo 1a2b3c4d" (an upload's file name may name the
    patient, so it is never shown in a deck)."""
    if case.uploaded:
        return f"uploaded photo {case.photo_sha256[:8]}"
    sample = samples.get(case.sample_file)
    return sample.caption if sample else case.sample_file
