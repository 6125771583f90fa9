"""dermcore.classmap and dermcore.photoset: the folder mapping, reading a zip within its limits,
and scoring a model on a small labelled set, on tiny seeded checkpoints."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from conftest import lesion_photo
from photo_zips import encode, labelled_photos, lying_zip, zip_bytes
from streamlit.testing.v1 import AppTest

from dermcore import classmap, photoset
from dermcore.explain import Predictor
from dermcore.labels import CLASSES
from dermcore.preprocessing import Preprocessing

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---- the mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, label",
    [
        ("Acne", "Acne"),
        ("WHEAL", "Wheal"),
        ("pigmented_macula", "Pigmented Macula"),
        ("Ulcers", "Ulcer"),
        ("Acne_Vulgaris", "Acne"),  # SD-198's folder style
        ("Halo Naevus", "Leukoderma"),  # British spelling
        ("Becker’s nevus", "Pigmented Macula"),  # curly apostrophe
        ("erythema-multiforme", "Erythema"),
        ("Herpes_Simplex_Virus", "Blister"),  # grouping.csv's SD-198 name
        ("hives", "Wheal"),  # our training pool's name
        ("Syringoma", "Tumor"),  # Table 2 says Ulcer; grouping.csv and histology say Tumor
        ("Stasis Edema", "Wheal"),
        ("Hailey–Hailey disease", "Blister"),  # en dash
        ("Melanocytic naevi", "Pigmented Macula"),  # British spelling, plural
        ("Pressure ulcers", "Ulcer"),  # plural last word
        ("Lipomas", "Tumor"),
        ("Herpes", classmap.LEAVE_OUT),  # not a plural of a known name
        ("psoriasis", classmap.LEAVE_OUT),
        ("misc", classmap.LEAVE_OUT),
    ],
)
def test_default_label(name, label):
    assert classmap.default_label(name) == label


def test_every_table2_name_maps_to_its_row_and_every_class_to_itself():
    for label, names in classmap.TABLE2.items():
        assert label in CLASSES
        for name in names:
            assert classmap.default_label(name) == label, name
    for label in CLASSES:
        assert classmap.default_label(label.upper()) == label


def test_default_mapping_and_checks():
    assert classmap.default_mapping(["Acne", "x", "Acne"]) == {
        "Acne": "Acne",
        "x": classmap.LEAVE_OUT,
    }
    with pytest.raises(ValueError, match="'Rash'"):
        classmap.check_mapping({"a": "Rash"})
    text = "name,label\nRashes,erythema\nOther,\n"
    assert classmap.read_mapping_csv(text) == {"Rashes": "Erythema", "Other": classmap.LEAVE_OUT}
    with pytest.raises(ValueError, match="columns"):
        classmap.read_mapping_csv("folder,class\na,Acne\n")


# ---- reading a zip -------------------------------------------------------------------------


def test_read_photoset_decodes_every_photo_and_lists_the_rest():
    files = labelled_photos({"Acne": 2, "nested/Urticaria": 2})
    files["Acne/notes.txt"] = b"patient list"
    files["loose.png"] = files["Acne/photo-000.png"]
    files["Acne/.DS_Store"] = b"\0"
    files["__MACOSX/Acne/._photo-000.png"] = b"\0"
    files["Acne/broken.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
    seen = []
    result = photoset.read_photoset(
        zip_bytes(files), short_side_px=64, progress=lambda d, t: seen.append((d, t))
    )
    assert result.folder_counts() == {"Acne": 2, "Urticaria": 2}
    assert [p.name for p in result.failed] == ["Acne/broken.jpg"]
    assert "damaged" in result.failed[0].message or "not an image" in result.failed[0].message
    assert {p.name for p in result.skipped} == {"Acne/notes.txt", "loose.png"}
    assert seen[-1] == (5, 5)
    for photo in result.photos:
        assert photo.image.dtype == np.uint8 and min(photo.image.shape[:2]) == 64


def test_the_same_file_twice_is_counted_once_and_said():
    """A photo copied into two folders would be scored twice, under two labels."""
    files = labelled_photos({"Acne": 2, "Urticaria": 1})
    files["Urticaria/copy.png"] = files["Acne/photo-000.png"]
    result = photoset.read_photoset(zip_bytes(files), short_side_px=64)
    assert result.folder_counts() == {"Acne": 2, "Urticaria": 1}
    (repeat,) = result.skipped
    assert repeat.name == "Urticaria/copy.png" and "Acne/photo-000.png" in repeat.message


@pytest.mark.parametrize(
    "path, folder",
    [
        ("Acne/x.jpg", "Acne"),
        ("clinic 2024/Urticaria/x.jpg", "Urticaria"),
        ("Acne/visit 2/x.jpg", "Acne"),  # a patient or visit folder below the class
        ("Tumor/Keloid/x.jpg", "Keloid"),  # the nearest known name
        ("export/Psoriasis/x.jpg", "export/Psoriasis"),  # none known: the whole folder path
        ("Psoriasis/images/x.jpg", "Psoriasis/images"),  # not one "images" row for every disease
    ],
)
def test_the_folder_that_labels_a_photo(path, folder):
    assert photoset.label_folder(PurePosixPath(path)) == folder


def test_shrinking_keeps_the_model_input_exact():
    """The stored copy gives a model the same input as the full working copy would."""
    image = lesion_photo(3, height=300, width=451)
    prep = Preprocessing(input_size=224, resize_size=224)
    small = photoset.shrink_to_short_side(image, 224)
    assert min(small.shape[:2]) == 224
    np.testing.assert_array_equal(prep.to_input_resolution(small), prep.to_input_resolution(image))


@pytest.mark.parametrize(
    "limits, files, message",
    [
        (photoset.PhotoSetLimits(max_photos=3), labelled_photos({"Acne": 4}), "4 photos; the limit is 3 photos, 200 MB zipped"),
        (photoset.PhotoSetLimits(max_zip_bytes=1000), labelled_photos({"Acne": 2}), "the limit is 500 photos, 0.001 MB zipped"),
        (photoset.PhotoSetLimits(max_unpacked_bytes=1000), labelled_photos({"Acne": 2}), "unpack to"),
        (photoset.DEFAULT_LIMITS, {"readme.txt": b"x"}, "holds no photos in folders"),
    ],
)  # fmt: skip
def test_a_zip_over_the_limits_is_refused_with_the_limit_stated(limits, files, message):
    with pytest.raises(photoset.PhotoSetError, match=message):
        photoset.read_photoset(zip_bytes(files), limits)


def test_not_a_zip_is_one_sentence():
    with pytest.raises(photoset.PhotoSetError, match="not a zip archive"):
        photoset.read_photoset(encode(lesion_photo()))


def test_a_bomb_declaring_a_huge_size_is_refused_before_decompressing(monkeypatch):
    """Declared sizes over the limit stop the upload before any member is read."""
    photo = encode(lesion_photo(), "PNG")
    data = lying_zip("Acne/bomb.png", photo, 3_000_000_000)

    def no_reading(*args, **kwargs):
        raise AssertionError("a member was opened")

    monkeypatch.setattr(zipfile.ZipFile, "open", no_reading)
    with pytest.raises(photoset.PhotoSetError, match="unpack to 3000.0 MB"):
        photoset.read_photoset(data)


def test_a_member_larger_than_it_declares_is_not_read_past_its_size():
    """A bomb that understates its size: reading stops at the declared size and the photo
    is listed as failed, the others go on."""
    photo = encode(lesion_photo(), "PNG")
    data = lying_zip("Acne/liar.png", photo, 100)
    result = photoset.read_photoset(data)
    assert result.photos == []
    assert len(result.failed) == 1
    assert (
        "damaged" in result.failed[0].message
        or "more than the zip says" in result.failed[0].message
    )


def test_a_photo_over_the_per_photo_limit_fails_alone():
    files = labelled_photos({"Acne": 2})
    limits = photoset.PhotoSetLimits(max_photo_bytes=min(len(v) for v in files.values()) - 1)
    result = photoset.read_photoset(zip_bytes(files), limits)
    assert len(result.failed) == 2 and "too large" in result.failed[0].message


# ---- conditions match training/evaluate.py -------------------------------------------------


def test_conditions_and_seeding_are_the_reports():
    from training import conditions

    for condition in photoset.PAPER_CONDITIONS:
        theirs = conditions.CONDITIONS[condition.name]
        assert condition.spec == theirs.spec
        assert condition.max_density == theirs.max_density
        ours = photoset.image_rng(7, condition.name, 3).random(4)
        reference = conditions.image_rng(7, theirs, photoset.SET_NAME, 3).random(4)
        np.testing.assert_array_equal(ours, reference)


# ---- scoring -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_predictor(tiny_weights_dir) -> Predictor:
    return Predictor.from_checkpoint(sorted(tiny_weights_dir.glob("*.json"))[0])


def test_condition_score_metrics():
    labels = np.array([0, 0, 1, 1, 1, 2])
    probabilities = np.eye(4, dtype=np.float32)[[0, 1, 1, 1, 0, 2]]
    result = photoset.condition_score(photoset.PAPER_CONDITIONS[0], labels, probabilities)
    assert result.accuracy == pytest.approx(4 / 6)
    np.testing.assert_allclose(result.recall[:3], [0.5, 2 / 3, 1.0])
    assert np.isnan(result.recall[3])
    assert result.balanced_accuracy == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert result.confusion.sum() == 6 and result.confusion[1, 0] == 1


def test_score_every_condition_and_the_worst_photos(tiny_predictor):
    images = [lesion_photo(seed, 80, 90) for seed in range(7)]
    labels = ["Acne", "Acne", "Wheal", "Wheal", "Ulcer", "Ulcer", "Ulcer"]
    copies = [image.copy() for image in images]
    steps = []
    result = photoset.score(
        tiny_predictor, images, labels, n_worst=3, batch_size=4,
        progress=lambda done, total: steps.append((done, total)),
    )  # fmt: skip
    assert all(np.array_equal(a, b) for a, b in zip(images, copies, strict=True))  # not mutated
    assert list(result.conditions) == ["clean", "sp_upto5", "blur5"]
    assert steps[-1] == (7 * 3 + 3, 7 * 3 + 3)
    assert result.class_counts() == {"Acne": 2, "Ulcer": 3, "Wheal": 2}
    clean = result.conditions["clean"]
    probabilities = tiny_predictor.predict(np.stack([tiny_predictor.prepare(i) for i in images]))
    np.testing.assert_array_equal(clean.predictions, probabilities.argmax(1))
    assert clean.confusion.sum() == 7
    true_p = probabilities[np.arange(7), result.labels]
    wrong = [
        i for i in np.argsort(true_p, kind="stable") if clean.predictions[i] != result.labels[i]
    ]
    assert 0 < len(wrong) < 7  # the fixture has right and wrong answers
    assert [w.index for w in result.worst] == wrong[:3]  # only photos it gets wrong
    for worst in result.worst:
        assert worst.input_image.shape == (64, 64, 3) and worst.cam.shape == (64, 64)
        assert worst.cam.min() >= 0 and worst.cam.max() <= 1
    again = photoset.score(tiny_predictor, images, labels, n_worst=0)
    for name in result.conditions:  # the noise draws are seeded: the same result twice
        np.testing.assert_array_equal(
            result.conditions[name].predictions, again.conditions[name].predictions
        )


def test_score_refuses_a_label_the_model_lacks(tiny_predictor):
    with pytest.raises(ValueError, match="'Rash'"):
        photoset.score(tiny_predictor, [lesion_photo()], ["Rash"])


def test_summaries_hold_no_photo_and_no_file_name(tiny_predictor):
    files = labelled_photos({"Acne": 2, "Wheal": 2})
    files = {name.replace("photo-", "jane-doe-"): data for name, data in files.items()}
    read = photoset.read_photoset(zip_bytes(files))
    labels = [classmap.default_label(p.folder) for p in read.photos]
    result = photoset.score(tiny_predictor, [p.image for p in read.photos], labels, n_worst=2)
    mapping = {"Acne": "Acne", "Wheal": "Wheal", "Smith, John 1961": "leave out"}
    mapping["clinic/images"] = "Ulcer"
    record = photoset.summary_record([result], read.photos, mapping)
    text = photoset.summary_json(record)
    # folder names that are not disease names could name a patient: numbered instead
    assert record["folder_mapping"] == {
        "Acne": "Acne", "Wheal": "Wheal", "folder 1": "leave out", "folder 2": "Ulcer",
    }  # fmt: skip
    assert "Smith" not in text and "clinic" not in text
    assert json.loads(text)["models"][0]["conditions"]["blur5"]["confusion_matrix"]
    assert "jane-doe" not in text and PNG_SIGNATURE.decode("latin-1") not in text
    assert record["n_photos_per_class"] == {"Acne": 2, "Wheal": 2}
    png = photoset.summary_png([result])
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    for data in files.values():
        assert data[100:140] not in png


# ---- the page ------------------------------------------------------------------------------

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_S = 90


@pytest.fixture
def photos_page(tiny_weights_dir, monkeypatch) -> AppTest:
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/your_photos.py").run()
    assert not at.exception
    return at


def upload_zip(at: AppTest, data: bytes, name: str = "clinic.zip") -> AppTest:
    at.file_uploader(key="photos_upload").set_value((name, data, "application/zip"))
    return at.run()


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def test_the_page_states_the_limit_that_holds(photos_page):
    """200 MB, or less where the server takes smaller uploads (.streamlit/config.toml)."""
    import streamlit

    zip_mb = min(200, streamlit.get_option("server.maxUploadSize"))
    assert any(f"The limit is 500 photos, {zip_mb} MB zipped" in t for t in texts(photos_page.info))
    assert photos_page.file_uploader(key="photos_upload").proto.max_upload_size_mb == zip_mb


def test_the_page_scores_every_model_on_a_zip(photos_page, tiny_weights_dir):
    files = labelled_photos({"Acne": 3, "Urticaria": 2, "Psoriasis": 2})
    files["Acne/broken.jpg"] = b"\xff\xd8\xff\xe0 cut off"
    at = upload_zip(photos_page, zip_bytes(files))
    assert not at.exception and not at.error
    warnings = texts(at.warning)
    assert any("1 photo could not be read and is left out" in t for t in warnings)
    assert any(
        "Folder “Psoriasis” (2 photos) matches none of our ten classes" in t for t in warnings
    )
    at.button(key="photos_score").click().run()
    assert not at.exception and not at.error
    assert [t.label for t in at.tabs] == ["tiny-clean (test fixture)", "tiny-noise (test fixture)"]
    labels = [m.label for m in at.metric]
    assert labels[:3] == [f"Balanced accuracy · {n}" for n in ("clean", "sp_upto5", "blur5")]
    # the page shows what dermcore computes for the five mapped photos
    read = photoset.read_photoset(zip_bytes(files))
    mapped = [p for p in read.photos if p.folder != "Psoriasis"]
    labels = ["Acne" if p.folder == "Acne" else "Wheal" for p in mapped]
    predictor = Predictor.from_checkpoint(sorted(tiny_weights_dir.glob("*.json"))[0])
    expected = photoset.score(predictor, [p.image for p in mapped], labels, n_worst=0)
    clean = expected.conditions["clean"].balanced_accuracy
    assert at.metric[0].value == f"{clean:.1%}"
    wrong = []  # per model, the photos it gets wrong: the only ones "most wrong" may show
    for card in sorted(tiny_weights_dir.glob("*.json")):
        score = photoset.score(
            Predictor.from_checkpoint(card), [p.image for p in mapped], labels, n_worst=0
        )
        wrong.append(int(np.sum(score.conditions["clean"].predictions != score.labels)))
    assert len(at.get("image")) == sum(min(n, 6) for n in wrong)  # each model's wrong photos
    assert {b.proto.label for b in at.get("download_button")} == {
        "Summary figure (PNG)",
        "Summary (JSON)",
    }


def test_the_page_names_each_model_as_the_other_pages_do(tiny_weights_dir, tmp_path, monkeypatch):
    """Older cards end their title with a test score; beside the accuracy on the user's own
    photos the tabs use the model's plain name, not that."""
    from dermcore.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(tiny_weights_dir / "tiny-clean.json")
    card.title = "tiny-clean (test fixture) (test balanced accuracy 0.79)"
    save_checkpoint(model, card, tmp_path)
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/your_photos.py").run()
    upload_zip(at, zip_bytes(labelled_photos({"Acne": 2, "Urticaria": 2})))
    at.button(key="photos_score").click().run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["tiny-clean (test fixture)"]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"PK\x03\x04 not a zip", "not a zip archive"),
        (zip_bytes({f"Acne/p{i}.png": b"x" for i in range(501)}), "501 photos; the limit is"),
        (zip_bytes({"readme.txt": b"hello"}), "holds no photos in folders"),
        (zip_bytes({"Acne/a.png": b"broken"}), "None of the photos in this zip could be read"),
    ],
)
def test_a_refused_zip_is_one_sentence_not_a_traceback(photos_page, data, message):
    at = upload_zip(photos_page, data)
    assert not at.exception
    (error,) = texts(at.error)
    assert message in error and error.count(". ") <= 2
