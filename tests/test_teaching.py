"""dermcore.teaching: the deck's JSON record, missing photos, tally and score, report sentences,
slides. Plain data, no Streamlit; the page itself is covered in tests/test_app.py."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import write_familiar_checkpoint
from PIL import Image
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from dermcore.corruptions import CorruptionSpec
from dermcore.reports import parse_set_report
from dermcore.teaching import (
    PRESETS,
    Case,
    Deck,
    DeckError,
    Guess,
    Outcome,
    deck_json,
    familiarity_sentence,
    missing_photos,
    moves_without,
    read_deck,
    report_sentences,
    slides_pdf,
    slides_zip,
    tally,
)
from ui.common import sample_photos

SHA = [f"{i:x}" * 64 for i in range(1, 4)]


def three_case_deck() -> Deck:
    return Deck(
        (
            Case(SHA[0], PRESETS["Paper noise 3%"], "clean", "w" * 8, sample_file="Acne-1.jpg",
                 true_label="Acne"),
            Case(SHA[1], CorruptionSpec(blur_kernel=5, noise_density=0.0123, seed=987654),
                 "noise-trained", "v" * 8, where="photo"),
            Case(SHA[2], CorruptionSpec(motion_length_px=9, motion_angle_deg=37.5,
                 pepper_fraction=0.25), "clean", "w" * 8, sample_file="Ulcer-2.jpg",
                 true_label=None),
        ),
        cam_method="gradcampp",
    )  # fmt: skip


def test_json_round_trip_is_exact():
    deck = three_case_deck()
    assert read_deck(deck_json(deck)) == deck
    assert read_deck(deck_json(deck).encode()) == deck


def test_json_names_uploaded_photos_by_hash_only():
    record = json.loads(deck_json(three_case_deck()))
    upload = record["cases"][1]
    assert upload["photo"] == {"source": "upload", "sha256": SHA[1]}
    assert upload["corruption"]["seed"] == 987654 and upload["corruption"]["where"] == "photo"
    assert upload["model"] == {"name": "noise-trained", "weights_sha256": "v" * 8}
    assert record["cases"][0]["photo"]["sample_file"] == "Acne-1.jpg"
    assert "not a diagnostic device" in record["notice"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("{nope", "not valid JSON"),
        ('{"format": "something else"}', "not a teaching deck"),
        ('{"format": "derm-lab-teaching-deck", "version": 99, "cases": []}', "version 99"),
        ('{"format": "derm-lab-teaching-deck", "version": 1, "cases": [{"photo": {}}]}', "Case 1"),
    ],
)
def test_a_bad_deck_file_is_one_sentence(text, words):
    with pytest.raises(DeckError, match=words):
        read_deck(text)


def test_a_bad_corruption_in_the_deck_names_the_case():
    record = json.loads(deck_json(three_case_deck()))
    record["cases"][2]["corruption"]["blur_kernel"] = 4
    with pytest.raises(DeckError, match="Case 3.*blur_kernel must be odd"):
        read_deck(json.dumps(record))


def test_missing_photos_are_reported_by_case():
    deck = three_case_deck()
    assert missing_photos(deck, {SHA[0], SHA[2]}) == [1]
    assert missing_photos(deck, []) == [0, 1, 2]
    assert missing_photos(deck, SHA) == []


def test_deck_editing_keeps_the_order():
    deck = three_case_deck()
    assert deck.without(1).cases == (deck.cases[0], deck.cases[2])
    assert deck.without(0).with_case(deck.cases[0]).cases[-1] == deck.cases[0]


def test_moves_without_a_case():
    assert moves_without(3, 1) == {0: 0, 2: 1}
    assert moves_without(3, 0) == {1: 0, 2: 1}
    assert moves_without(1, 0) == {}


def test_tally_and_score_maths():
    outcomes = [
        Outcome("Acne", "Acne", "Acne"),  # survives, model right both times
        Outcome("Tumor", "Ulcer", "Tumor"),  # flips: right clean, wrong corrupted
        Outcome("Wheal", "Wheal", None),  # an upload: no true class
    ]
    guesses = [Guess("Acne", True), Guess("Ulcer", True), Guess(None, False)]
    result = tally(guesses, outcomes)
    assert (result.n_cases, result.n_labelled) == (3, 2)
    assert result.guess_class_right == 1
    assert (result.model_clean_right, result.model_corrupted_right) == (2, 1)
    assert (result.survival_called, result.survival_right, result.survived) == (3, 1, 2)
    assert (result.score, result.max_score) == (2, 5)
    assert [c["class_right"] for c in result.per_case] == [True, False, None]
    assert [c["survival_right"] for c in result.per_case] == [True, False, False]


def test_a_decline_is_no_answer_and_a_clean_answer_turned_into_one_did_not_hold():
    """As the case screen says: "Not sure" under the corruption is not the answer held, and a
    declined view is never counted right, even when its top class is the true one."""
    declined = Outcome("Acne", "Acne", "Acne", corrupted_abstain=True)
    assert not declined.survived
    assert (declined.clean_right, declined.corrupted_right) == (True, False)
    assert (declined.answer(corrupted=False), declined.answer(corrupted=True)) == (
        "Acne",
        "Not sure (Acne)",
    )
    both = Outcome("Acne", "Acne", "Tumor", clean_abstain=True, corrupted_abstain=True)
    assert both.survived  # declined before and after: nothing changed
    result = tally([Guess("Acne", True), Guess("Acne", False)], [declined, both])
    assert [c["survival_right"] for c in result.per_case] == [False, False]
    assert (result.survived, result.model_clean_right, result.model_corrupted_right) == (1, 1, 0)


def test_no_guess_scores_nothing_and_lengths_must_match():
    result = tally([None], [Outcome("Acne", "Ulcer", "Acne")])
    assert (result.score, result.max_score, result.survival_called) == (0, 2, 0)
    with pytest.raises(ValueError, match="2 guesses for 1 cases"):
        tally([None, None], [Outcome("Acne", "Acne")])


def small_report() -> dict:
    def condition(family, severity, description, top1, flip_rate):
        return {"family": family, "severity": severity, "description": description,
                "top1": top1, "flip_rate": flip_rate}  # fmt: skip

    return {
        "n_images": 200,
        "conditions": {
            "clean": condition("clean", 0.0, "no corruption", 0.8, 0.0),
            "sp1": condition("noise", 0.01, "1% salt-and-pepper (3:1)", 0.6, 0.3),
            "sp3": condition("noise", 0.03, "3% salt-and-pepper (3:1)", 0.4, 0.52),
            "sp_upto5": condition("noise", 0.05, "salt-and-pepper, density U[0, 0.05]", 0.5, 0.4),
            "blur5": condition("blur", 5, "5x5 Gaussian blur", 0.78, 0.09),
            "motion15": condition(
                "motion", 15, "15 px motion blur, angle U[0, 180) per image", 0.6, 0.34
            ),
        },
    }


def test_report_sentence_for_the_papers_noise():
    report = parse_set_report(small_report(), "clean", "test")
    sentences = report_sentences(report, PRESETS["Paper noise 3%"])
    assert sentences == [
        "3% salt-and-pepper (3:1) flips 52% of the 200 test photos for this model "
        "(accuracy 80% clean → 40%)."
    ]


def test_report_sentences_per_stage_at_the_nearest_level():
    report = parse_set_report(small_report(), "clean", "test")
    spec = CorruptionSpec(noise_density=0.045, blur_kernel=7, motion_length_px=15)
    noise, blur, motion = report_sentences(report, spec)
    assert noise.startswith("3% salt-and-pepper (3:1) (the nearest level measured) flips 52%")
    assert blur.startswith("5x5 Gaussian blur (the nearest level measured) flips 9%")
    assert motion.startswith("15 px motion blur at a random angle flips 34%")
    assert report_sentences(report, CorruptionSpec()) == []
    assert report_sentences(report, CorruptionSpec(jpeg_quality=30)) == []  # not measured


@pytest.mark.parametrize(
    "attributes, sentence",
    [
        ({}, None),
        ({"familiarity": float("nan"), "abstain": False}, None),  # a model without statistics
        (
            {"familiarity": 0.0, "abstain": True},
            "The model finds this photo less familiar than every one of its validation photos.",
        ),
        (
            {"familiarity": 0.34, "abstain": True},
            "The model finds this photo more familiar than 34% of its validation photos.",
        ),
        (
            {"familiarity": 0.9},
            "The model finds this photo more familiar than 90% of its validation photos.",
        ),
    ],
)
def test_familiarity_where_the_model_reports_it(attributes, sentence):
    assert familiarity_sentence(SimpleNamespace(**attributes)) == sentence


def png(colour: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), colour, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_slides_as_zip_and_pdf():
    slides = {"case-1.png": png(10), "case-2.png": png(200)}
    with zipfile.ZipFile(io.BytesIO(slides_zip(slides))) as archive:
        assert archive.namelist() == ["case-1.png", "case-2.png"]
        assert archive.read("case-2.png") == slides["case-2.png"]
    pdf = slides_pdf(list(slides.values()))
    assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= 2


# ---- the page, under AppTest ----------------------------------------------------------------

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_S = 90


@pytest.fixture
def teaching(tiny_weights_dir, monkeypatch) -> AppTest:
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/teaching.py").run()
    assert not at.exception
    return at


def build_three_case_deck(at: AppTest, photo_png: bytes) -> None:
    """Two shipped samples (noise 3%, 5x5 blur with seed 7) and one uploaded photo."""
    paths = [str(s.path) for s in sample_photos()]
    at.selectbox(key="teaching_sample").set_value(paths[0])
    at.selectbox(key="teaching_preset").set_value("Paper noise 3%").run()
    at.button(key="teaching_add").click().run()
    at.selectbox(key="teaching_sample").set_value(paths[5])
    at.selectbox(key="teaching_preset").set_value("5×5 blur (paper)")
    at.number_input(key="teaching_seed").set_value(7).run()
    at.button(key="teaching_add").click().run()
    at.segmented_control(key="teaching_source").set_value("Upload").run()
    at.file_uploader(key="teaching_upload").set_value(("patient.png", photo_png, "image/png"))
    at.run()
    at.selectbox(key="teaching_preset").set_value(CUSTOM_PRESET).run()
    at.slider(key="teaching_noise").set_value(2.0)
    at.select_slider(key="teaching_blur").set_value(3).run()
    at.button(key="teaching_add").click().run()
    assert not at.exception


CUSTOM_PRESET = "Custom"


def walk(at: AppTest, mode: str, guesses: list[tuple[str, str]]) -> AppTest:
    """Go through the deck in `mode`, entering the guesses and revealing each case."""
    at.segmented_control(key="teaching_mode").set_value(mode).run()
    who = "room" if mode == "Present" else "own"
    for index, (class_name, survives) in enumerate(guesses):
        assert any(f"Case {index + 1} of {len(guesses)}" in m.value for m in at.markdown)
        at.selectbox(key=f"teaching_{who}_{index}_class").set_value(class_name).run()
        at.segmented_control(key=f"teaching_{who}_{index}_survives").set_value(survives).run()
        at.button(key="teaching_reveal").click().run()
        assert any(str(m.value).startswith("Clean: **") for m in at.markdown)
        at.button(key="teaching_next").click().run()
        assert not at.exception
    return at


def test_build_present_reveal_and_tally(teaching, photo_png):
    at = teaching
    build_three_case_deck(at, photo_png)
    deck = at.session_state["teaching_deck"]
    assert len(deck.cases) == 3
    assert deck.cases[1].spec == CorruptionSpec(blur_kernel=5, seed=7)
    assert deck.cases[2].uploaded and deck.cases[2].spec.noise_density == 0.02
    assert "patient" not in " ".join(str(m.value) for m in at.markdown)

    samples = sample_photos()
    first, second = samples[0].label, samples[5].label
    walk(at, "Present", [(first, "Yes"), ("Acne", "No"), ("Wheal", "Yes")])
    assert any(m.value == "## Tally" for m in at.markdown)
    rows = at.dataframe[0].value
    assert list(rows["True class"]) == [first, second, "unknown (uploaded)"]
    assert list(rows["The room: class"]) == [first, "Acne", "Wheal"]
    lines = " ".join(str(m.value) for m in at.markdown)
    assert (first, second) == ("Acne", "Blister")  # the shipped samples' order
    clean_right = sum(a == b for a, b in zip(rows["Model, clean"], [first, second], strict=False))
    assert (
        f"Right class: the room 1 of 2 · the model {clean_right} of 2 on the clean photos" in lines
    )
    held = list(rows["Answer held"])
    calls_right = sum(h == c for h, c in zip(held, ["yes", "no", "yes"], strict=True))
    assert f"Right survival calls: the room {calls_right} of 3 (3 made)" in lines
    # presenter mode hides the sidebar; the notice stays on screen, in the page header
    assert any("[data-testid=stSidebar]" in h.proto.body for h in at.get("html"))
    assert any("not a diagnostic device" in str(m.value) for m in at.markdown)


def test_a_case_the_model_declines_is_tallied_as_not_held(tmp_path, monkeypatch, photo_png):
    """A model with familiarity statistics answers the photo and declines it under 5 % noise:
    the tally says "Not sure" and counts the answer as not held, as the case screen does."""
    write_familiar_checkpoint(tmp_path / "weights")
    shutil.rmtree(tmp_path / "weights" / "source")
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/teaching.py").run()
    at.segmented_control(key="teaching_source").set_value("Upload").run()
    at.file_uploader(key="teaching_upload").set_value(("lesion.png", photo_png, "image/png"))
    at.run()
    at.selectbox(key="teaching_preset").set_value(CUSTOM_PRESET).run()
    at.slider(key="teaching_noise").set_value(5.0).run()
    at.button(key="teaching_add").click().run()
    walk(at, "Present", [("Acne", "Yes")])
    assert not at.exception
    rows = at.dataframe[0].value
    assert not rows["Model, clean"][0].startswith("Not sure")  # answered clean
    assert rows["Model, corrupted"][0].startswith("Not sure (")
    assert list(rows["Answer held"]) == ["no"]
    lines = " ".join(str(m.value) for m in at.markdown)
    assert "Right survival calls: the room 0 of 1 (1 made)" in lines
    assert "the model's answer held in 0 of 1" in lines


def add_samples_and_present(at, paths: list[str]) -> None:
    """A case per shipped sample path, each under the paper's 3 % noise, then Present."""
    for path in paths:
        at.selectbox(key="teaching_sample").set_value(path)
        at.selectbox(key="teaching_preset").set_value("Paper noise 3%").run()
        at.button(key="teaching_add").click().run()
    at.segmented_control(key="teaching_mode").set_value("Present").run()


def test_adding_a_case_mid_presentation_keeps_the_rooms_guesses(teaching):
    """Cases added at the end of the deck leave the run as it was; the new case is numbered by
    its place in the deck."""
    at = teaching
    paths = [str(s.path) for s in sample_photos()]
    add_samples_and_present(at, paths[:2])
    at.selectbox(key="teaching_room_0_class").set_value("Acne").run()
    at.segmented_control(key="teaching_room_0_survives").set_value("No").run()
    at.button(key="teaching_reveal").click().run()
    at.segmented_control(key="teaching_mode").set_value("Build deck").run()
    at.selectbox(key="teaching_sample").set_value(paths[2])
    at.button(key="teaching_add").click().run()
    at.segmented_control(key="teaching_mode").set_value("Present").run()
    assert not at.exception
    assert any(m.value == "## Case 1 of 3" for m in at.markdown)
    run = at.session_state["teaching_runs"]["Present"]
    assert run["revealed"] == {0} and run["guesses"][0].class_name == "Acne"


def test_removing_a_case_mid_presentation_keeps_the_other_cases_guesses(teaching):
    """A case removed from the deck takes its guesses and reveal with it; the other cases keep
    theirs at their new numbers, and the presenter goes on at the next case."""
    at = teaching
    add_samples_and_present(at, [str(s.path) for s in sample_photos()[:3]])
    for number, class_name in enumerate(("Acne", "Wheal")):
        at.selectbox(key=f"teaching_room_{number}_class").set_value(class_name).run()
        at.button(key="teaching_reveal").click().run()
        at.button(key="teaching_next").click().run()
    assert any(m.value == "## Case 3 of 3" for m in at.markdown)
    at.segmented_control(key="teaching_mode").set_value("Build deck").run()
    at.button(key="teaching_remove_0").click().run()
    at.segmented_control(key="teaching_mode").set_value("Present").run()
    assert not at.exception
    run = at.session_state["teaching_runs"]["Present"]
    assert run["revealed"] == {0} and {i: g.class_name for i, g in run["guesses"].items()} == {
        0: "Wheal"
    }
    assert any(m.value == "## Case 2 of 2" for m in at.markdown)  # still on the same case
    at.segmented_control(key="teaching_mode").set_value("Build deck").run()
    at.button(key="teaching_remove_1").click().run()  # the case on screen: on to the tally
    at.segmented_control(key="teaching_mode").set_value("Present").run()
    assert at.session_state["teaching_runs"]["Present"]["revealed"] == {0}
    assert any("Right class" in str(m.value) for m in at.markdown)


def test_removing_one_of_two_equal_cases_keeps_the_other_ones_guess(teaching):
    """The same case added twice: removing the first copy leaves the second copy's guess with
    it, and the presenter on it stays on it."""
    at = teaching
    add_samples_and_present(at, [str(sample_photos()[0].path)] * 2)
    at.selectbox(key="teaching_room_0_class").set_value("Acne").run()
    at.button(key="teaching_reveal").click().run()
    at.button(key="teaching_next").click().run()
    at.selectbox(key="teaching_room_1_class").set_value("Wheal").run()
    at.segmented_control(key="teaching_mode").set_value("Build deck").run()
    at.button(key="teaching_remove_0").click().run()
    at.segmented_control(key="teaching_mode").set_value("Present").run()
    run = at.session_state["teaching_runs"]["Present"]
    assert run["revealed"] == set()
    assert {i: g.class_name for i, g in run["guesses"].items()} == {0: "Wheal"}
    assert any(m.value == "## Case 1 of 1" for m in at.markdown)


def test_self_study_scores_and_explains_from_the_report(
    tiny_weights_dir, tmp_path, monkeypatch, photo_png
):
    """A copy of the tiny weights with a hand-made test report for tiny-clean."""
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    (weights / "reports" / "tiny-clean").mkdir(parents=True)
    (weights / "reports" / "tiny-clean" / "test.json").write_text(json.dumps(small_report()))
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(weights))
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/teaching.py").run()
    build_three_case_deck(at, photo_png)
    walk(at, "Self-study", [(sample_photos()[0].label, "Yes"), ("Acne", "No"), ("Wheal", "No")])
    assert any(m.value == "## Your score" for m in at.markdown)
    (score,) = at.metric
    rows = at.dataframe[0].value
    classes_right = sum(rows["You: class"][:2] == rows["True class"][:2])
    calls_right = sum(rows["You: survives?"] == rows["Answer held"])
    assert score.value == f"{classes_right + calls_right} of 5"  # 2 labelled cases + 3 calls


def test_self_study_case_shows_the_report_sentence(tiny_weights_dir, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    (weights / "reports" / "tiny-clean").mkdir(parents=True)
    (weights / "reports" / "tiny-clean" / "test.json").write_text(json.dumps(small_report()))
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(weights))
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/teaching.py").run()
    at.selectbox(key="teaching_preset").set_value("Paper noise 3%").run()
    at.button(key="teaching_add").click().run()
    at.segmented_control(key="teaching_mode").set_value("Self-study").run()
    at.button(key="teaching_reveal").click().run()
    text = " ".join(str(m.value) for m in at.markdown)
    assert "From the test report: 3% salt-and-pepper (3:1) flips 52% of the 200 test photos" in text


@pytest.fixture
def media_managers(monkeypatch) -> list:
    """(manager, storage) of every AppTest run: downloads live there (as in test_privacy.py)."""
    recorded = []
    init = MediaFileManager.__init__

    def recording_init(self, storage) -> None:
        recorded.append((self, storage))
        init(self, storage)

    monkeypatch.setattr(MediaFileManager, "__init__", recording_init)
    return recorded


def served(at: AppTest, manager, storage) -> dict[str, bytes]:
    """Each download button's bytes by file name, deferred ones generated as on a click."""
    files = {}
    for button in at.get("download_button"):
        url = button.proto.url
        if button.proto.deferred_file_id:
            url = manager.execute_deferred(button.proto.deferred_file_id)
        stored = storage.get_file(url.rsplit("/", 1)[-1])
        files[stored.filename] = stored.content
    return files


def test_export_and_import_rebuild_the_deck(teaching, photo_png, media_managers):
    at = teaching
    build_three_case_deck(at, photo_png)
    built = at.session_state["teaching_deck"]
    files = served(at, *media_managers[-1])
    assert sorted(files) == ["teaching-deck.json", "teaching-slides.pdf", "teaching-slides.zip"]
    exported = files["teaching-deck.json"]
    assert read_deck(exported) == built
    assert b"patient" not in exported and photo_png[100:140] not in exported
    with zipfile.ZipFile(io.BytesIO(files["teaching-slides.zip"])) as archive:
        assert archive.namelist() == ["case-01.png", "case-02.png", "case-03.png"]
        assert archive.read("case-03.png").startswith(b"\x89PNG")
    assert files["teaching-slides.pdf"].startswith(b"%PDF")

    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    fresh.switch_page("pages/teaching.py").run()
    fresh.file_uploader(key="teaching_import").set_value(("deck.json", exported, "application/json"))  # fmt: skip
    fresh.run()
    assert fresh.session_state["teaching_deck"] == built
    assert [str(s.value) for s in fresh.success] == ["Imported a deck of 3 cases."]
    warnings = [str(w.value) for w in fresh.warning]
    assert len(warnings) == 1 and warnings[0].startswith("Case 3: upload the photo")
    assert built.cases[2].photo_sha256[:12] in warnings[0]
    # presented without it: cases keep their numbers in the deck, and the tally says one is out
    fresh.segmented_control(key="teaching_mode").set_value("Present").run()
    assert any(m.value == "## Case 1 of 3" for m in fresh.markdown)
    for _ in range(2):
        fresh.button(key="teaching_next").click().run()
    assert any(m.value == "## Tally" for m in fresh.markdown)
    assert any("Case 3: upload the photo" in str(c.value) for c in fresh.caption)
    fresh.segmented_control(key="teaching_mode").set_value("Build deck").run()
    fresh.segmented_control(key="teaching_source").set_value("Upload").run()
    fresh.file_uploader(key="teaching_upload").set_value(("again.png", photo_png, "image/png"))
    fresh.run()
    assert [str(w.value) for w in fresh.warning] == []
    # the photo back, the presenter is still where they were (the tally), not moved to a case
    fresh.segmented_control(key="teaching_mode").set_value("Present").run()
    assert any(m.value == "## Tally" for m in fresh.markdown)
    fresh.segmented_control(key="teaching_mode").set_value("Build deck").run()
    fresh.file_uploader(key="teaching_import").set_value(("bad.json", b"{nope", "application/json"))  # fmt: skip
    fresh.run()
    assert any("not valid JSON" in str(e.value) for e in fresh.error)
    assert fresh.session_state["teaching_deck"] == built


def test_guesses_are_kept_when_going_back(teaching):
    at = teaching
    at.button(key="teaching_add").click().run()
    at.button(key="teaching_add").click().run()
    at.segmented_control(key="teaching_mode").set_value("Present").run()
    at.selectbox(key="teaching_room_0_class").set_value("Tumor").run()
    at.segmented_control(key="teaching_room_0_survives").set_value("No").run()
    at.button(key="teaching_next").click().run()
    assert any("Case 2 of 2" in m.value for m in at.markdown)
    at.button(key="teaching_previous").click().run()
    assert at.selectbox(key="teaching_room_0_class").value == "Tumor"
    assert at.segmented_control(key="teaching_room_0_survives").value == "No"
    at.button(key="teaching_reveal").click().run()
    assert any("guess: **Tumor** · survives: **no**" in m.value for m in at.markdown)


def test_an_upload_no_case_uses_is_forgotten(teaching, photo_png):
    at = teaching
    at.segmented_control(key="teaching_source").set_value("Upload").run()
    at.file_uploader(key="teaching_upload").set_value(("a.png", photo_png, "image/png")).run()
    at.button(key="teaching_add").click().run()
    at.file_uploader(key="teaching_upload").clear().run()
    assert len(at.session_state["teaching_uploads"]) == 1  # the deck still uses it
    at.button(key="teaching_remove_0").click().run()
    assert at.session_state["teaching_uploads"] == {}
    assert not at.exception
