"""Your photos: every shipped model scored on a zip of the user's own labelled photos.

Read the zip -> map its folders to our classes (an editable table) -> score every model clean,
under the paper's noise and under its blur -> draw. dermcore.photoset does the work; this page
reads widgets and draws. The photos live in this session's memory only: never on disk, never in a
log, never in a download (the summaries name photos by a hash prefix and hold no pixels).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dermcore import classmap, photoset
from dermcore.checkpoint import CheckpointError
from dermcore.explain import overlay
from dermcore.reports import row_normalised
from ui import common

N_WORST = 6
SHORT_SIDE_PX = 224  # >= every shipped model's resize_size (dermcore.photoset.read_photoset)


def upload_limits() -> photoset.PhotoSetLimits:
    """dermcore's limits, the zip's size capped by the server's upload limit
    (server.maxUploadSize, .streamlit/config.toml), so that the limit the page states is the
    one that holds."""
    server_mb = int(st.get_option("server.maxUploadSize"))
    zip_mb = min(photoset.DEFAULT_LIMITS.max_zip_bytes // 1_000_000, server_mb)
    return replace(photoset.DEFAULT_LIMITS, max_zip_bytes=zip_mb * 1_000_000)


@dataclass(frozen=True)
class Scored:
    """One scoring run: what was scored, so a changed mapping shows the results are stale."""

    key: tuple  # (upload id, mapping items)
    scores: list[photoset.ModelScore]
    photos: list[photoset.Photo]  # those scored, in score order
    errors: list[str]  # one sentence per model that could not be loaded


# ---- the upload ----------------------------------------------------------------------------


def upload_controls() -> tuple[str, photoset.PhotoSet] | None:
    """The zip uploader; the decoded set is kept in session_state per upload."""
    limits = upload_limits()
    upload = st.file_uploader(
        "A zip of your photos, a folder per class",
        type=["zip"],
        key="photos_upload",
        help=f"For example Acne/…, Urticaria/…, Vitiligo/…. The limit is {limits.describe()}. "
        "The photos stay in this browser session's memory; they are never stored.",
        max_upload_size=limits.max_zip_bytes // 1_000_000,
    )
    if upload is None:  # removed: its photos and results leave this session's memory too
        st.session_state.pop("photos_set", None)
        st.session_state.pop("photos_scored", None)
        st.info(
            "Drop a zip with a folder of photos per class to score every model on them. "
            f"The limit is {limits.describe()}.",
            icon=":material/folder_zip:",
        )
        return None
    kept = st.session_state.get("photos_set")
    if kept is None or kept[0] != upload.file_id:
        kept = (upload.file_id, _read(upload.getvalue(), limits))
        st.session_state["photos_set"] = kept
    upload_id, result = kept
    if isinstance(result, str):
        st.error(result)
        return None
    return upload_id, result


def _read(data: bytes, limits: photoset.PhotoSetLimits) -> photoset.PhotoSet | str:
    """The decoded set, or the one sentence why the zip was refused."""
    bar = st.progress(0.0, text="Opening the zip…")
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        bar.progress(
            done / total, text=f"Reading photo {done} of {total}{_eta(start, done, total)}"
        )

    try:
        return photoset.read_photoset(data, limits, SHORT_SIDE_PX, progress)
    except photoset.PhotoSetError as error:
        return str(error)
    finally:
        bar.empty()


def _photos(n: int) -> str:
    return "1 photo" if n == 1 else f"{n} photos"


def _eta(start: float, done: int, total: int) -> str:
    if done == 0 or done >= total:
        return ""
    left = (time.perf_counter() - start) / done * (total - done)
    return f" · about {left:.0f} s left" if left >= 1 else ""


def render_problems(photo_set: photoset.PhotoSet) -> None:
    st.caption(
        f"{_photos(len(photo_set.photos))} read, in {len(photo_set.folder_counts())} folders."
    )
    if photo_set.failed:
        st.warning(
            f"{_photos(len(photo_set.failed))} could not be read and "
            f"{'is' if len(photo_set.failed) == 1 else 'are'} left out (listed below); the others "
            "are scored.",
            icon=":material/broken_image:",
        )
        with st.expander("Photos that could not be read"):
            st.dataframe(_problem_table(photo_set.failed), hide_index=True, width="stretch")
    if photo_set.skipped:
        with st.expander(f"{len(photo_set.skipped)} other files left out"):
            st.dataframe(_problem_table(photo_set.skipped), hide_index=True, width="stretch")


def _problem_table(problems: list[photoset.Problem]) -> pd.DataFrame:
    return pd.DataFrame({"file": [p.name for p in problems], "why": [p.message for p in problems]})


# ---- the mapping ---------------------------------------------------------------------------


def mapping_controls(upload_id: str, photo_set: photoset.PhotoSet) -> dict[str, str]:
    """The editable folder -> class table, defaulting to dermcore.classmap's mapping. Keyed per
    upload: the table's edits are stored by row number, which another zip would reuse."""
    counts = photo_set.folder_counts()
    defaults = classmap.default_mapping(counts)
    table = pd.DataFrame(
        {"folder": list(counts), "photos": list(counts.values()), "class": list(defaults.values())}
    )
    edited = st.data_editor(
        table,
        key=f"photos_mapping_{hashlib.sha256(upload_id.encode()).hexdigest()[:12]}",
        hide_index=True,
        width="stretch",
        disabled=["folder", "photos"],
        column_config={
            "class": st.column_config.SelectboxColumn(
                "class",
                options=list(classmap.CHOICES),
                required=True,
                help="Which of our ten classes this folder's photos show. The defaults follow "
                "the paper's Table 2 and the class names; 'leave out' skips the folder.",
            )
        },
    )
    mapping = classmap.check_mapping(dict(zip(edited["folder"], edited["class"], strict=True)))
    unmapped = [folder for folder, label in mapping.items() if label == classmap.LEAVE_OUT]
    for folder in unmapped:
        st.warning(
            f"Folder “{folder}” ({_photos(counts[folder])}) matches none of our ten classes, so it "
            "is left out; choose a class for it in the table to score it.",
            icon=":material/help:",
        )
    return mapping


# ---- scoring -------------------------------------------------------------------------------


def score_all(
    entries: list[common.ModelEntry], photos: list[photoset.Photo], labels: list[str], key: tuple
) -> Scored:
    """Every model on the mapped photos, with one progress bar for the whole run."""
    steps_per_model = len(photos) * len(photoset.PAPER_CONDITIONS) + min(N_WORST, len(photos))
    total = steps_per_model * len(entries)
    bar = st.progress(0.0, text="Scoring…")
    start = time.perf_counter()
    scores, errors = [], []
    images = [photo.image for photo in photos]
    for number, entry in enumerate(entries):
        name = entry.label

        def progress(done: int, _total: int, number: int = number, name: str = name) -> None:
            overall = number * steps_per_model + done
            bar.progress(
                overall / total,
                text=f"Model {number + 1} of {len(entries)} ({name}): {done} of "
                f"{steps_per_model} steps{_eta(start, overall, total)}",
            )

        try:
            predictor = common.load_predictor(entry)
        except CheckpointError as error:
            errors.append(f"{error} This model is left out.")
            continue
        result = photoset.score(predictor, images, labels, n_worst=N_WORST, progress=progress)
        scores.append(replace(result, title=name))  # the plain name the other pages use
    bar.empty()
    return Scored(key, scores, photos, errors)


# ---- drawing -------------------------------------------------------------------------------


def render_overview(scored: Scored) -> None:
    rows = []
    for result in scored.scores:
        row = {"model": result.title}
        for name, condition in result.conditions.items():
            row[f"balanced · {name}"] = condition.balanced_accuracy * 100
            row[f"top-1 · {name}"] = condition.accuracy * 100
        rows.append(row)
    table = pd.DataFrame(rows)
    percent = {c: st.column_config.NumberColumn(format="%.1f%%") for c in table.columns[1:]}
    st.dataframe(table, hide_index=True, width="stretch", column_config=percent)
    st.caption(
        "clean = as uploaded; sp_upto5 = salt and pepper on up to 5% of the pixels, 3:1, drawn "
        "per photo; blur5 = 5×5 Gaussian blur; both at the model's input, as in the paper and "
        "the Results page. Balanced accuracy averages the recall of the classes you uploaded."
    )


def render_model(result: photoset.ModelScore, photos: list[photoset.Photo], key: str) -> None:
    clean = result.conditions["clean"]
    columns = st.columns(len(result.conditions))
    for column, (name, condition) in zip(columns, result.conditions.items(), strict=True):
        delta = None
        if name != "clean":
            delta = f"{(condition.balanced_accuracy - clean.balanced_accuracy) * 100:+.1f} pts"
        column.metric(
            f"Balanced accuracy · {name}",
            f"{condition.balanced_accuracy:.1%}",
            delta,
            help=f"{condition.description}; top-1 accuracy {condition.accuracy:.1%}.",
        )
    recall_column, confusion_column = st.columns(2, gap="large")
    recall_column.plotly_chart(
        recall_figure(result), key=f"photos_recall_{key}", config={"staticPlot": True}
    )
    with confusion_column:
        chosen = st.segmented_control(
            "Confusion matrix under", list(result.conditions), default="clean",
            required=True, key=f"photos_confusion_condition_{key}",
        )  # fmt: skip
        st.plotly_chart(
            confusion_figure(result.conditions[chosen].confusion, result),
            key=f"photos_confusion_{key}",
        )
    render_worst(result, photos)


def recall_figure(result: photoset.ModelScore) -> go.Figure:
    present = [i for i, name in enumerate(result.classes) if name in result.class_counts()]
    names = [result.classes[i] for i in present]
    figure = go.Figure()
    for name, condition in result.conditions.items():
        figure.add_bar(name=name, x=names, y=condition.recall[present])
    figure.update_layout(
        barmode="group", height=380, title="Recall per class",
        margin={"l": 0, "r": 0, "t": 40, "b": 0},
        yaxis={"range": [0, 1], "tickformat": ".0%"}, legend={"orientation": "h", "y": -0.3},
    )  # fmt: skip
    return figure


def confusion_figure(matrix: np.ndarray, result: photoset.ModelScore) -> go.Figure:
    """Rows: the classes you uploaded; columns: all ten. Colour = share of the row."""
    rows = [i for i, name in enumerate(result.classes) if name in result.class_counts()]
    matrix = matrix[rows]
    shares = row_normalised(matrix)
    text = [[f"{int(n)}" if n else "" for n in row] for row in matrix]
    figure = go.Figure(
        go.Heatmap(
            z=shares, x=list(result.classes), y=[result.classes[i] for i in rows],
            text=text, texttemplate="%{text}",
            colorscale="Blues", showscale=False, zmin=0, zmax=1,
            hovertemplate="true %{y}, predicted %{x}: %{text} photos<extra></extra>",
        )
    )  # fmt: skip
    figure.update_layout(
        height=180 + 36 * len(rows), margin={"l": 0, "r": 0, "t": 10, "b": 0},
        xaxis={"title": "predicted", "tickangle": -40},
        yaxis={"title": "true", "autorange": "reversed"},
    )  # fmt: skip
    return figure


def render_worst(result: photoset.ModelScore, photos: list[photoset.Photo]) -> None:
    if not result.worst:
        return
    st.markdown("**The photos this model got most wrong** · Grad-CAM of the class it predicted")
    columns = st.columns(min(len(result.worst), N_WORST))
    for column, worst in zip(columns, result.worst, strict=False):
        photo = photos[worst.index]
        column.image(
            overlay(worst.input_image, worst.cam, 0.45),
            width="stretch",
            caption=f"{photo.name} · true {result.classes[worst.label]} "
            f"({worst.true_probability:.0%}) · predicted {result.classes[worst.predicted]} "
            f"({worst.predicted_probability:.0%})",
        )


def render_downloads(scored: Scored, mapping: dict[str, str], photo_set: photoset.PhotoSet) -> None:
    record = photoset.summary_record(
        scored.scores, scored.photos, mapping, len(photo_set.failed), len(photo_set.skipped)
    )
    digest = hashlib.sha256("".join(p.sha256 for p in scored.photos).encode()).hexdigest()
    stem = f"derm-lab-your-photos-{digest[:8]}"  # hashes only: file names may name patients
    png_column, json_column, _ = st.columns([1, 1, 2])
    png_column.download_button(
        "Summary figure (PNG)",
        data=lambda: photoset.summary_png(scored.scores, "Your photos: every model"),
        file_name=f"{stem}.png",
        mime="image/png",
        on_click="ignore",
        icon=":material/image:",
        key="photos_download_png",
        help="Accuracy per condition and the clean confusion matrix of every model; no photo.",
    )
    json_column.download_button(
        "Summary (JSON)",
        data=photoset.summary_json(record),
        file_name=f"{stem}.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/data_object:",
        key="photos_download_json",
        help="Every metric, confusion matrix and mapping; photos named by a hash prefix only.",
    )


# ---- page ----------------------------------------------------------------------------------


def main() -> None:
    common.page_header(
        "Your photos",
        "How do the models do on your own labelled photos? Zip a folder of photos per class, "
        "check which of our ten classes each folder is, and score every shipped model: clean, "
        "under the paper's noise and under its blur.",
    )
    entries = [entry for entry in common.available_models() if entry.card is not None]
    if not entries:
        st.error(f"No usable model was found in {common.weights_dir()}.")
        return
    uploaded = upload_controls()
    if uploaded is None:
        return
    upload_id, photo_set = uploaded
    render_problems(photo_set)
    if not photo_set.photos:
        st.error("None of the photos in this zip could be read; the list above says why.")
        return
    mapping = mapping_controls(upload_id, photo_set)
    chosen = [p for p in photo_set.photos if mapping[p.folder] != classmap.LEAVE_OUT]
    if not chosen:
        st.warning("No folder is mapped to a class yet; choose classes in the table above.")
        return
    key = (upload_id, tuple(sorted(mapping.items())))
    if st.button(
        f"Score {len(entries)} models on {len(chosen)} photos",
        key="photos_score",
        type="primary",
        icon=":material/play_arrow:",
    ):
        labels = [mapping[p.folder] for p in chosen]
        st.session_state["photos_scored"] = score_all(entries, chosen, labels, key)
    scored = st.session_state.get("photos_scored")
    if scored is None or scored.key[0] != upload_id:
        return
    if scored.key != key:
        st.info("The mapping changed since the last scoring; score again to update the results.")
    for error in scored.errors:
        st.error(error)
    if not scored.scores:
        return
    render_overview(scored)
    tabs = st.tabs([result.title for result in scored.scores])
    for number, (tab, result) in enumerate(zip(tabs, scored.scores, strict=True)):
        with tab:
            render_model(result, scored.photos, str(number))
    render_downloads(scored, dict(scored.key[1]), photo_set)


main()
