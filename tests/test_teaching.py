"""dermcore.teaching: the deck's JSON record, missing photos, tally and score, report sentences,
slides. Plain data, no Streamlit; the page itself is covered in tests/test_app.py."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

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
    missing_photos,
    read_deck,
    report_sentences,
    slides_pdf,
    slides_zip,
    tally,
)

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
            "motion15": condition("motion", 15, "15 px motion blur, angle U[0, 180)", 0.6, 0.34),
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
    assert motion.startswith("15 px motion blur, angle U[0, 180) flips 34%")
    assert report_sentences(report, CorruptionSpec()) == []
    assert report_sentences(report, CorruptionSpec(jpeg_quality=30)) == []  # not measured


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
