"""Teaching: a deck of cases (a photo, a corruption, a model) shown to a room or to one learner.

Build the deck from the shipped samples or photos uploaded in this session (kept in its memory
only: never on disk, never in a log, never in an exported deck but as a SHA-256). Present it one
case per screen: the room guesses the class and whether the model's answer survives the
corruption, the presenter enters the guesses and reveals both answers and heatmaps; a tally
closes the deck. Self-study runs the same deck for one learner, with a score and, per case, what
the model's test report says about that corruption. dermcore.teaching holds the plain data and
the maths; ui.teaching_view finds photos and models and computes the comparisons.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from dermcore.comparison import Comparison, comparison_png, flip_callout
from dermcore.corruptions import CorruptionSpec
from dermcore.explain import METHODS, overlay
from dermcore.imageio import SUPPORTED_EXTENSIONS, ImageLoadError
from dermcore.labels import CLASSES
from dermcore.reports import parse_set_report
from dermcore.teaching import (
    PRESETS,
    Case,
    Deck,
    DeckError,
    Guess,
    Outcome,
    Tally,
    deck_json,
    familiarity_sentence,
    moves_without,
    read_deck,
    report_sentences,
    slides_pdf,
    slides_zip,
    tally,
)
from ui import common
from ui import teaching_view as view
from ui.views import FAMILIARITY_HELP, answer_markdown

BUILD, PRESENT, STUDY = "Build deck", "Present", "Self-study"
CUSTOM = "Custom"
NO_GUESS = "—"
DECK_KEY, UPLOADS_KEY, RUNS_KEY = "teaching_deck", "teaching_uploads", "teaching_runs"
BLUR_KERNELS = (1, 3, 5, 7, 9, 11)
# Presenter mode: no sidebar, no header bar, the case in type for the back of the room. The
# notice stays in the page header.
PRESENTER_STYLE = (
    "<style>[data-testid=stSidebar], [data-testid=stSidebarCollapsedControl],"
    " [data-testid=stExpandSidebarButton], header[data-testid=stHeader] { display: none; }"
    ".st-key-teaching_stage p, .st-key-teaching_stage label p { font-size: 1.5rem; }"
    ".st-key-teaching_stage h2 { font-size: 2.4rem; }</style>"
)
# The corrupted photo pixel by pixel (single noisy pixels stay sharp), as large as its column
# allows but never taller than about half a 768-px screen.
STAGE_STYLE = (
    "<style>.st-key-teaching_stage img { image-rendering: pixelated; }"
    ".st-key-teaching_photo img { max-height: 58vh; width: auto !important; max-width: 100%; }"
    "</style>"
)
DEFAULTS = {
    "teaching_mode": BUILD,
    "teaching_source": "Samples",
    "teaching_sample": None,
    "teaching_preset": "Paper noise 3%",
    "teaching_noise": 3.0,
    "teaching_ratio": 0.75,
    "teaching_blur": 1,
    "teaching_motion": 0,
    "teaching_angle": 0,
    "teaching_seed": 0,
    "teaching_model": None,
}
PERSISTENT_KEYS = tuple(DEFAULTS)


def init_state(samples: list[common.Sample]) -> None:
    common.restore_widgets(DEFAULTS)
    st.session_state.setdefault(DECK_KEY, Deck())
    st.session_state.setdefault(UPLOADS_KEY, {})
    st.session_state.setdefault(RUNS_KEY, {})
    paths = [str(sample.path) for sample in samples]
    if st.session_state["teaching_sample"] not in paths:
        st.session_state["teaching_sample"] = paths[0] if paths else None
    if not samples:
        st.session_state["teaching_source"] = "Upload"
    models = [e.path for e in common.available_models() if e.card is not None]
    if st.session_state["teaching_model"] not in models:
        chosen = common.selected_model()
        st.session_state["teaching_model"] = chosen.path if chosen else None


def deck() -> Deck:
    return st.session_state[DECK_KEY]


def set_deck(new: Deck, moves: dict[int, int] | None) -> None:
    """The deck changed: each run's (presenter's and self-study's) guesses and reveals follow
    their cases to their new deck indices, `moves` (old index -> new index; a removed case has
    none and takes its own away; added cases start unguessed), and a run on a removed case goes
    on at the next one. moves=None (an imported deck) starts both runs again. The session
    forgets the uploaded photos that neither the deck nor the upload box still uses."""
    old = st.session_state.get(DECK_KEY)
    st.session_state[DECK_KEY] = new
    if old is None or moves is None:
        st.session_state[RUNS_KEY] = {}
    else:
        for run in st.session_state[RUNS_KEY].values():
            follow_cases(run, moves, len(old.cases))
    forget_unused_uploads()


def follow_cases(run: dict, moves: dict[int, int], old_count: int) -> None:
    """A run's guesses, reveals and screen moved to the cases' new deck indices."""
    run["guesses"] = {moves[i]: g for i, g in run["guesses"].items() if i in moves}
    run["revealed"] = {moves[i] for i in run["revealed"] if i in moves}
    at = run.get("at")
    if at is None or at == TALLY:
        return
    later = [moves[i] for i in range(at, old_count) if i in moves]  # this case, else the next
    run["at"] = later[0] if later else TALLY


def forget_unused_uploads() -> None:
    """Drop from this session the uploaded photos that no case and no upload box uses."""
    used = {case.photo_sha256 for case in deck().cases}
    if st.session_state.get("teaching_upload") is not None:
        used.add(st.session_state.get("teaching_upload_sha"))
    uploads = st.session_state[UPLOADS_KEY]
    for sha256 in set(uploads) - used:
        del uploads[sha256]


def run_state(mode: str) -> dict:
    """Where a mode's run is: the case on screen (len = the tally), revealed cases, guesses."""
    return st.session_state[RUNS_KEY].setdefault(mode, {"step": 0, "revealed": set(), "guesses": {}})  # fmt: skip


# ---- build ----------------------------------------------------------------------------------


def _upload_changed() -> None:
    upload = st.session_state.get("teaching_upload")
    st.session_state["teaching_upload_error"] = None
    if upload is None:
        forget_unused_uploads()
        return
    try:
        photo = view.decode_photo(upload.getvalue(), upload.name)
    except ImageLoadError as error:
        st.session_state["teaching_upload_error"] = f"That file cannot be used: {error}"
        return
    st.session_state[UPLOADS_KEY][photo.sha256] = photo
    st.session_state["teaching_upload_sha"] = photo.sha256


def photo_controls(samples: list[common.Sample]) -> common.CurrentPhoto | None:
    sources = (["Samples"] if samples else []) + ["Upload"]
    source = st.segmented_control("Photo from", sources, required=True, key="teaching_source")
    if source == "Samples":
        by_path = {str(sample.path): sample for sample in samples}
        st.selectbox(
            "Sample photo", list(by_path), key="teaching_sample",
            format_func=lambda path: by_path[path].caption,
            help="Test-split photos that ship with the app; each caption names the true class. "
            + common.NO_SAMPLE_NOTE,
        )  # fmt: skip
        return view.load_sample(by_path[st.session_state["teaching_sample"]])
    st.file_uploader(
        "Upload a photo", type=list(SUPPORTED_EXTENSIONS), key="teaching_upload",
        on_change=_upload_changed,
        help="Kept in this browser session's memory only; an exported deck names it by its "
        "SHA-256, never by its pixels or its file name.",
    )  # fmt: skip
    if error := st.session_state.get("teaching_upload_error"):
        st.error(error)
        return None
    if st.session_state.get("teaching_upload") is None:
        return None
    return st.session_state[UPLOADS_KEY].get(st.session_state.get("teaching_upload_sha"))


def corruption_controls() -> tuple[CorruptionSpec, str]:
    """The case's corruption (a preset or custom settings) with its seed, and where it applies."""
    preset = st.selectbox("Corruption", [*PRESETS, CUSTOM], key="teaching_preset")
    if preset == CUSTOM:
        first, second = st.columns(2)
        density_pct = first.slider("Noisy pixels", 0.0, 5.0, step=0.1, format="%.1f%%", key="teaching_noise")  # fmt: skip
        ratio = first.select_slider(
            "Black : white", list(common.PEPPER_FRACTIONS), key="teaching_ratio",
            format_func=common.PEPPER_FRACTIONS.get,
        )  # fmt: skip
        kernel = second.select_slider(
            "Gaussian blur kernel", BLUR_KERNELS, key="teaching_blur",
            format_func=lambda k: "off" if k == 1 else f"{k}×{k}",
        )  # fmt: skip
        motion = second.slider("Motion blur length", 0, 25, format="%d px", key="teaching_motion")  # fmt: skip
        angle = second.slider("Motion direction", 0, 175, step=5, format="%d°", key="teaching_angle")  # fmt: skip
        spec = CorruptionSpec(
            noise_density=round(density_pct / 100, 6), pepper_fraction=ratio, blur_kernel=kernel,
            motion_length_px=motion, motion_angle_deg=float(angle),
        )  # fmt: skip
    else:
        spec = PRESETS[preset]
    seed = st.number_input(
        "Noise seed", 0, 2**31 - 1, step=1, key="teaching_seed",
        help="The same seed gives exactly the same noisy pixels; the deck records it.",
    )  # fmt: skip
    return replace(spec, seed=int(seed)), "input"


def model_control() -> common.ModelEntry | None:
    entries = {e.path: e for e in common.available_models() if e.card is not None}
    if not entries:
        return None
    st.selectbox(
        "Model", list(entries), key="teaching_model", format_func=lambda p: entries[p].label,
        help="The sidebar's model to begin with; each case may have its own.",
    )  # fmt: skip
    return entries[st.session_state["teaching_model"]]


def add_case(photo: common.CurrentPhoto, sample: common.Sample | None, spec, where, entry) -> None:
    case = Case(
        photo_sha256=photo.sha256,
        spec=spec,
        model_name=entry.card.name,
        weights_sha256=entry.card.weights_sha256,
        where=where,
        sample_file=sample.path.name if sample else None,
        true_label=sample.label if sample else None,
    )
    count = len(deck().cases)
    set_deck(deck().with_case(case), {i: i for i in range(count)})


def builder(samples: list[common.Sample]) -> None:
    """Pick a photo, a corruption and a model; add the case; then the deck so far."""
    photo_column, corruption_column, model_column = st.columns([1.3, 1.3, 1], gap="medium")
    with photo_column:
        photo = photo_controls(samples)
        if photo is not None:
            st.image(photo.preview_png, width=160)
    with corruption_column:
        spec, where = corruption_controls()
    with model_column:
        entry = model_control()
        sample = None
        if st.session_state["teaching_source"] == "Samples" and samples:
            sample = {str(s.path): s for s in samples}[st.session_state["teaching_sample"]]
        st.button(
            "Add case", key="teaching_add", icon=":material/add:", type="primary",
            disabled=photo is None or entry is None,
            on_click=add_case, args=(photo, sample, spec, where, entry),
        )  # fmt: skip
    common.remember_widgets(PERSISTENT_KEYS)
    ready, problems = view.deck_status(deck(), st.session_state[UPLOADS_KEY])
    render_deck_list(problems)
    render_import()
    render_exports(ready)


def render_deck_list(problems: list[str]) -> None:
    """Each case on one line with its remove button; then what keeps a case from showing."""
    cases = deck().cases
    st.markdown(f"**The deck: {len(cases)} case{'s' if len(cases) != 1 else ''}**")
    if not cases:
        st.caption("Add cases above, or import a deck exported earlier.")
        return
    by_file = view.samples_by_file()
    models = view.models_by_name()
    for index, case in enumerate(cases):
        text_column, button_column = st.columns([6, 1], vertical_alignment="center")
        model = models.get(case.model_name)
        text_column.markdown(
            f"{index + 1}. {view.photo_label(case, by_file)} · {case.spec.describe()} "
            f"(seed {case.spec.seed}) · {model.label if model else case.model_name}"
        )
        button_column.button(
            "Remove", key=f"teaching_remove_{index}", icon=":material/delete:",
            on_click=lambda i=index: set_deck(
                deck().without(i), moves_without(len(deck().cases), i)
            ),
        )  # fmt: skip
    for problem in problems:
        st.warning(problem, icon=":material/photo_library:")


def _import_changed() -> None:
    upload = st.session_state.get("teaching_import")
    if upload is None:
        return
    try:
        imported = read_deck(upload.getvalue())
    except DeckError as error:
        st.session_state["teaching_import_message"] = ("error", str(error))
        return
    set_deck(imported, None)  # another deck: both runs start again
    count = len(imported.cases)
    st.session_state["teaching_import_message"] = (
        "success",
        f"Imported a deck of {count} case{'s' if count != 1 else ''}.",
    )


def render_import() -> None:
    with st.expander("Import a deck", icon=":material/upload_file:"):
        st.file_uploader(
            "Deck (JSON, as exported here)", type=["json"], key="teaching_import",
            on_change=_import_changed,
            help="Rebuilds the deck exactly. Uploaded photos are not in the file: upload each "
            "again above (Upload); they are matched by SHA-256.",
        )  # fmt: skip
        if message := st.session_state.get("teaching_import_message"):
            kind, text = message
            (st.error if kind == "error" else st.success)(text)


def render_exports(ready: list[view.ReadyCase]) -> None:
    """The deck as JSON; its slides as a zip of PNGs or a PDF once every case can be shown."""
    if not deck().cases:
        return
    json_column, zip_column, pdf_column = st.columns(3)
    json_column.download_button(
        "Deck (JSON)", data=deck_json(deck()), file_name="teaching-deck.json",
        mime="application/json", on_click="ignore", icon=":material/data_object:",
        key="teaching_download_json", width="stretch",
        help="Settings, seeds, model names and weights hashes, photo hashes and sample file "
        "names: importing it rebuilds the deck exactly. Contains no image.",
    )  # fmt: skip
    slides_ready = len(ready) == len(deck().cases)
    # The comparisons now (cached, and needed to present anyway); the PNGs only on a click. A
    # deferred download runs outside this script run, so it gets plain values, not session_state.
    slides = slide_specs(deck(), ready) if slides_ready else []
    zip_column.download_button(
        "Slides (PNG, zip)", data=lambda: slides_zip(render_slides(slides)),
        file_name="teaching-slides.zip", mime="application/zip", on_click="ignore",
        icon=":material/photo_library:", key="teaching_download_zip", width="stretch",
        disabled=not slides_ready,
    )  # fmt: skip
    pdf_column.download_button(
        "Slides (PDF)", data=lambda: slides_pdf(list(render_slides(slides).values())),
        file_name="teaching-slides.pdf", mime="application/pdf", on_click="ignore",
        icon=":material/picture_as_pdf:", key="teaching_download_pdf", width="stretch",
        disabled=not slides_ready,
    )  # fmt: skip


def slide_specs(current: Deck, ready: list[view.ReadyCase]) -> list[tuple[str, Comparison, str]]:
    """(file name, comparison, title) per case that can be shown, in deck order."""
    by_file = view.samples_by_file()
    return [
        (
            f"case-{item.index + 1:02d}.png",
            view.case_comparison(item, current.cam_method),
            f"Case {item.index + 1} of {len(current.cases)} · {item.entry.label} · "
            f"{view.photo_label(item.case, by_file)}",
        )
        for item in ready
    ]


def render_slides(slides: list[tuple[str, Comparison, str]]) -> dict[str, bytes]:
    return {name: comparison_png(c, view.HEATMAP_ALPHA, title) for name, c, title in slides}


# ---- present and self-study -----------------------------------------------------------------


def guess_controls(mode: str, item: view.ReadyCase, revealed: bool) -> None:
    """The room's (or learner's) class and survival call for this case, kept in the run."""
    run = run_state(mode)
    key = f"teaching_{'room' if mode == PRESENT else 'own'}_{item.index}"
    kept = run["guesses"].get(item.index, Guess())
    if not revealed:
        st.session_state.setdefault(f"{key}_class", kept.class_name or NO_GUESS)
        survives = {True: "Yes", False: "No", None: None}[kept.survives]
        st.session_state.setdefault(f"{key}_survives", survives)

    def keep() -> None:
        chosen = st.session_state[f"{key}_class"]
        answer = st.session_state[f"{key}_survives"]
        run["guesses"][item.index] = Guess(
            None if chosen == NO_GUESS else chosen, None if answer is None else answer == "Yes"
        )

    who = "The room's" if mode == PRESENT else "Your"
    if revealed:  # the guesses as one line, so the answers below them fit on the screen
        st.markdown(
            f"{who} guess: **{kept.class_name or NO_GUESS}** · survives: **{_yes_no(kept.survives)}**"
        )
        return
    st.selectbox(f"{who} class", [NO_GUESS, *CLASSES], key=f"{key}_class", on_change=keep)
    st.segmented_control(
        "Will the model's answer survive the corruption?", ["Yes", "No"],
        key=f"{key}_survives", on_change=keep,
    )  # fmt: skip


def render_answers(mode: str, item: view.ReadyCase, comparison: Comparison) -> None:
    """Both answers, whether the first held, the truth, the familiarity; in self-study also
    whether the learner was right and what the test report says."""
    classes = comparison.classes
    clean, corrupted = comparison.clean, comparison.corrupted
    flipped = flip_callout(classes, clean.top_class, corrupted.top_class, comparison.spec)
    with st.container(key="teaching_answers"):
        st.markdown(
            f"Clean: {answer_markdown(classes, clean)}  \n"
            f"Corrupted: {answer_markdown(classes, corrupted)}",
            help=FAMILIARITY_HELP,
        )
        if comparison.declined:
            st.markdown(":violet[Not sure: the model declines to answer the corrupted photo.]")
        else:
            st.markdown(
                f":orange[The answer changed: {flipped}.]"
                if flipped
                else ":green[The answer held.]"
            )
        if item.case.true_label:
            st.markdown(f"True class: **{item.case.true_label}**")
        if line := familiarity_sentence(corrupted):
            st.caption(f"Corrupted: {line}")
        if mode == STUDY:
            render_study_feedback(item, comparison)


def render_heatmaps(comparison: Comparison) -> None:
    """Clean and corrupted model inputs, each beside its heatmap, in one row."""
    classes = comparison.classes
    views = (("Clean", comparison.clean), ("Corrupted", comparison.corrupted))
    columns = iter(st.columns(4, gap="small"))
    for name, explanation in views:
        caption = f"{name}: {common.input_caption(comparison.impulse_filter)}"
        next(columns).image(explanation.input_image, caption=caption, width="stretch")
        next(columns).image(
            overlay(explanation.input_image, explanation.cam, view.HEATMAP_ALPHA),
            caption=f"{METHODS[explanation.method]}: evidence for {classes[explanation.target]}",
            width="stretch",
        )


def render_study_feedback(item: view.ReadyCase, comparison: Comparison) -> None:
    outcome = outcome_of(item, comparison)
    guess = run_state(STUDY)["guesses"].get(item.index, Guess())
    result = tally([guess], [outcome]).per_case[0]
    lines = []
    if result["class_right"] is not None:
        lines.append("Your class: " + ("right." if result["class_right"] else "not this time."))
    if result["survival_right"] is not None:
        lines.append("Your survival call: " + ("right." if result["survival_right"] else "wrong."))
    lines += report_lines(item)
    st.markdown("  \n".join(lines))


@st.cache_data(max_entries=16, show_spinner=False)
def _report(path: str, stamp: tuple[int, int]):
    import json

    with open(path) as f:
        raw = json.load(f)
    return parse_set_report(raw, path, "test")


def report_lines(item: view.ReadyCase) -> list[str]:
    """What the model's test report says about this case's corruption, one sentence per stage."""
    path = common.weights_dir() / "reports" / item.case.model_name / "test.json"
    if not path.is_file():
        return []
    try:
        report = _report(str(path), (path.stat().st_size, path.stat().st_mtime_ns))
    except (OSError, ValueError):
        return ["This model's test report cannot be read."]
    sentences = report_sentences(report, item.case.spec)
    lines = [f"From the test report: {s}" for s in sentences]
    if len(sentences) > 1:
        lines.append("(The report measures each corruption on its own, not combined.)")
    return lines


def outcome_of(item: view.ReadyCase, comparison: Comparison) -> Outcome:
    classes, clean, corrupted = comparison.classes, comparison.clean, comparison.corrupted
    return Outcome(
        classes[clean.top_class],
        classes[corrupted.top_class],
        item.case.true_label,
        clean_abstain=bool(clean.abstain),
        corrupted_abstain=bool(corrupted.abstain),
    )


TALLY = -1  # run["at"] on the tally screen


def go_to(mode: str, step: int) -> None:
    run = run_state(mode)
    run["step"] = step
    run.pop("at", None)  # the screen to show is the step, until it is drawn


def current_step(run: dict, ready: list[view.ReadyCase]) -> int:
    """The position in `ready` of the screen the run was on (run["at"]: a deck index, or TALLY),
    so that a case becoming showable (its photo uploaded again) does not move the presenter to
    another case; else the run's step."""
    at = run.get("at")
    if at == TALLY:
        return len(ready)
    positions = [i for i, item in enumerate(ready) if item.index == at]
    return positions[0] if positions else min(run["step"], len(ready))


def reveal(mode: str, index: int) -> None:
    run_state(mode)["revealed"].add(index)


def restart(mode: str) -> None:
    st.session_state[RUNS_KEY].pop(mode, None)
    for key in [k for k in st.session_state if str(k).startswith(("teaching_room_", "teaching_own_"))]:  # fmt: skip
        if (mode == PRESENT) == str(key).startswith("teaching_room_"):
            del st.session_state[key]


def stage(mode: str) -> None:
    """One case per screen, then the tally."""
    current = deck()
    ready, problems = view.deck_status(current, st.session_state[UPLOADS_KEY])
    if not ready:
        st.info("Build a deck first (Build deck), or import one.", icon=":material/school:")
        for problem in problems:
            st.warning(problem)
        return
    run = run_state(mode)
    step = current_step(run, ready)
    run["step"], run["at"] = step, TALLY if step == len(ready) else ready[step].index
    with st.container(key="teaching_stage"):
        if step == len(ready):
            render_tally(mode, ready, current.cam_method)
            if problems:  # the cases left out of the tally, and why
                st.caption(" ".join(problems))
            return
        item = ready[step]
        revealed = item.index in run["revealed"]
        comparison = view.case_comparison(item, current.cam_method)
        # numbered by place in the deck, as the slides and the notes on missing photos are
        st.markdown(f"## Case {item.index + 1} of {len(current.cases)}")
        image_column, question_column = st.container(key="wrap_teaching_case").columns(
            [1, 1], gap="medium"
        )
        with image_column, st.container(key="teaching_photo"):
            st.image(
                comparison.corrupted.input_image, width="stretch",
                caption=f"{comparison.spec.describe()} · seed {comparison.spec.seed}",
            )  # fmt: skip
        with question_column:
            guess_controls(mode, item, revealed)
            if revealed:
                render_answers(mode, item, comparison)
            else:
                label = "Reveal" if mode == PRESENT else "Check my answers"
                st.button(label, key="teaching_reveal", type="primary", icon=":material/visibility:",
                          on_click=reveal, args=(mode, item.index))  # fmt: skip
            back, forward = st.columns(2)
            back.button("Previous", key="teaching_previous", disabled=step == 0,
                        icon=":material/arrow_back:", on_click=go_to, args=(mode, step - 1))  # fmt: skip
            last = step == len(ready) - 1
            forward.button("Tally" if last else "Next", key="teaching_next",
                           icon=":material/arrow_forward:", on_click=go_to, args=(mode, step + 1))  # fmt: skip
        if revealed:
            render_heatmaps(comparison)
    if problems:
        st.caption(" ".join(problems))


def render_tally(mode: str, ready: list[view.ReadyCase], cam_method: str) -> None:
    run = run_state(mode)
    outcomes = [outcome_of(item, view.case_comparison(item, cam_method)) for item in ready]
    guesses = [run["guesses"].get(item.index) for item in ready]
    result = tally(guesses, outcomes)
    who = "the room" if mode == PRESENT else "you"
    st.markdown("## " + ("Tally" if mode == PRESENT else "Your score"))
    with st.container(key="teaching_tally"):
        st.markdown("  \n".join(tally_lines(result, who)))
        if mode == STUDY:
            st.metric("Score", f"{result.score} of {result.max_score}")
        guesses = [guess or Guess() for guess in guesses]
        rows = [
            {
                "Case": number,
                f"{who.capitalize()}: class": guess.class_name or NO_GUESS,
                "True class": outcome.true_label or "unknown (uploaded)",
                "Model, clean": outcome.answer(corrupted=False),
                "Model, corrupted": outcome.answer(corrupted=True),
                f"{who.capitalize()}: survives?": _yes_no(guess.survives),
                "Answer held": _yes_no(outcome.survived),
            }
            for number, (guess, outcome) in enumerate(zip(guesses, outcomes, strict=True), 1)
        ]
        st.dataframe(rows, hide_index=True)
    st.button("Start again", key="teaching_restart", icon=":material/replay:", on_click=restart, args=(mode,))  # fmt: skip


def tally_lines(result: Tally, who: str) -> list[str]:
    """The room (or you) against the model, in two lines."""
    n, labelled = result.n_cases, result.n_labelled
    lines = []
    if labelled:
        lines.append(
            f"Right class: {who} {result.guess_class_right} of {labelled} · the model "
            f"{result.model_clean_right} of {labelled} on the clean photos, "
            f"{result.model_corrupted_right} of {labelled} on the corrupted ones."
        )
    lines.append(
        f"Right survival calls: {who} {result.survival_right} of {n} "
        f"({result.survival_called} made) · the model's answer held in {result.survived} of {n}."
    )
    return lines


def _yes_no(value: bool | None) -> str:
    return {True: "yes", False: "no", None: NO_GUESS}[value]


# ---- page -----------------------------------------------------------------------------------


samples = common.sample_photos()
init_state(samples)
mode = st.session_state["teaching_mode"]
if mode == PRESENT:
    st.html(PRESENTER_STYLE)
st.html(STAGE_STYLE)
common.page_header(
    "Teaching", "Will the model's answer survive the corruption? Guess, then reveal."
)
st.segmented_control(
    "Mode", [BUILD, PRESENT, STUDY], key="teaching_mode", required=True,
    label_visibility="collapsed",
)  # fmt: skip
if mode == BUILD:
    builder(samples)
else:
    stage(mode)
common.remember_widgets(("teaching_mode",))
