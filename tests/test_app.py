"""AppTest runs of every page of app.py, driving the controls and checking what they change.

Uploads go through AppTest's own file_uploader / camera_input support (Streamlit 1.67), the same
path a browser takes, so no test reaches into session_state to plant a photo.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import plotly.io
import pytest
from conftest import lesion_photo, write_familiar_checkpoint, write_tiny_checkpoints
from PIL import Image
from streamlit.testing.v1 import AppTest

from dermcore.checkpoint import load_checkpoint, save_checkpoint
from dermcore.comparison import (
    Comparison,
    chart_classes,
    comparison_png,
    comparison_record,
    figure_heading,
    flip_callout,
    view_heading,
)
from dermcore.corruptions import CorruptionSpec
from dermcore.explain import Predictor, cam_shift
from dermcore.reports import NO_REPORTS, parse_set_report

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_S = 90  # the first run of a session loads torch and the model


@pytest.fixture
def app(tiny_weights_dir, monkeypatch) -> AppTest:
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.run()
    assert not at.exception
    return at


def upload(at: AppTest, data: bytes, name: str = "lesion.png") -> AppTest:
    """Switch Explore's photo source to Upload (the shipped samples come first) and upload."""
    if at.session_state["explore_source"] != "Upload":
        at.segmented_control(key="explore_source").set_value("Upload").run()
    at.file_uploader(key="explore_upload").set_value((name, data, "image/png"))
    return at.run()


def plotly_figure(at: AppTest, key: str):
    chart = next(e for e in at.get("plotly_chart") if key in e.proto.id)
    return plotly.io.from_json(chart.proto.spec)


def values(data) -> np.ndarray:
    """A trace's x or y as sent to the browser: a list, or a base64 typed array (plotly >= 6)."""
    if isinstance(data, dict) and "bdata" in data:
        return np.frombuffer(base64.b64decode(data["bdata"]), dtype=data["dtype"])
    return np.asarray(data)


def chart_probabilities(at: AppTest) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The Explore page's probability chart as drawn: (class names, clean, corrupted)."""
    clean, corrupted = plotly_figure(at, "explore_probabilities").data
    return list(clean.y), values(clean.x).astype(float), values(corrupted.x).astype(float)


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def answers(at: AppTest) -> tuple[str, str]:
    """Explore's two answers as drawn: (clean class, corrupted class)."""
    text = next(m.value for m in at.markdown if str(m.value).startswith("Clean: **"))
    clean, corrupted = re.findall(r"\*\*(.+?)\*\*", text)
    return clean, corrupted


# ---- every page, no photo yet ------------------------------------------------------------


def test_explore_opens_on_a_shipped_sample(app):
    """No setting needed: the gallery of shipped test-split samples is there, captioned by true
    class and source, and the first one is explained at once, with no corruption yet."""
    select = app.selectbox(key="explore_sample")
    assert len(select.options) >= 12
    captions = list(select.options)  # as drawn, through format_func
    assert all(" · " in caption and "CC BY 4.0" in caption for caption in captions)
    assert not any(len(c.split(" · ")[0]) == 64 for c in captions)  # never a hash
    assert app.session_state["explore_noise"] == 0.0
    assert any("No corruption yet" in t for t in texts(app.caption))
    assert any("not a diagnostic device" in t for t in texts(app.sidebar.info))
    assert [o for o in app.sidebar.selectbox(key="sidebar_model").options] == [
        "tiny-clean (test fixture)",
        "tiny-noise (test fixture)",
    ]


def test_every_sample_in_the_gallery_can_be_picked(app):
    """A selectbox tells its options apart by their captions: two samples of one class and
    source share a caption, so they are numbered, and each pick loads its own photo."""
    select = app.selectbox(key="explore_sample")
    captions = list(select.options)
    assert len(set(captions)) == len(captions)
    assert any(caption.endswith(" · photo 2") for caption in captions)  # the gallery has pairs
    loaded = []
    for index in range(len(captions)):
        app.selectbox(key="explore_sample").select_index(index).run()
        assert not app.exception
        loaded.append(app.session_state["explore_photo_source"])
    assert len(set(loaded)) == len(captions)


def test_upload_source_without_a_file_keeps_the_photo_in_use_and_says_so(app):
    app.segmented_control(key="explore_source").set_value("Upload").run()
    assert not app.exception
    in_use = [t for t in texts(app.caption) if " px" in t]
    assert in_use  # the sample still in use is shown, with its size


def test_robustness_without_photo_points_to_explore(tiny_weights_dir):
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.switch_page("pages/robustness.py").run()  # a first visit that skips Explore
    assert not at.exception
    assert "Choose a photo on the Explore page first." in texts(at.info)


def test_results_without_reports_says_so(app):
    app.switch_page("pages/results.py").run()
    assert not app.exception
    assert NO_REPORTS in texts(app.warning)
    assert any("honest test" in t for t in texts(app.info))


def test_model_and_data_renders_the_card(app):
    app.switch_page("pages/model_data.py").run()
    assert not app.exception
    assert "tiny-clean (test fixture)" in texts(app.subheader)
    assert [m.value for m in app.metric][:3] == ["EfficientNet-Lite0", "10", "64×64 px"]
    assert any("Random weights" in t for t in texts(app.markdown))
    table = app.dataframe[0].value  # plain rows and percentages, never a raw key or None
    assert list(table.index) == ["Held-out test photos (same collections as training)"]
    assert table.iloc[0]["right answers"] == "11.1%"
    shown = " ".join(texts(app.markdown)) + " ".join(str(d.value) for d in app.dataframe)
    assert "None" not in shown and "test_mean" not in shown and "_std" not in shown
    assert any("No dataset card yet" in t for t in texts(app.caption))
    app.sidebar.selectbox(key="sidebar_model").select_index(1).run()
    assert "tiny-noise (test fixture)" in texts(app.subheader)


def test_model_and_data_renders_the_dataset_card(tiny_weights_dir, tmp_path, monkeypatch):
    for path in tiny_weights_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    (tmp_path / "DATASET.md").write_text("# Dataset card\n\nSources and licences here.\n")
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/model_data.py").run()
    assert not at.exception
    assert any("Sources and licences here." in t for t in texts(at.markdown))


# ---- Explore --------------------------------------------------------------------------------


def test_noise_changes_the_corrupted_probabilities_only(app, photo_png):
    upload(app, photo_png)
    app.slider(key="explore_noise").set_value(0.0).run()
    assert not app.exception
    _, clean, corrupted = chart_probabilities(app)
    np.testing.assert_allclose(corrupted, clean, atol=1e-6)  # identity spec: the same image

    app.slider(key="explore_noise").set_value(5.0).run()
    assert not app.exception
    names, clean_at_5, corrupted_at_5 = chart_probabilities(app)
    np.testing.assert_allclose(clean_at_5[: len(clean)], clean[: len(clean_at_5)], atol=1e-6)
    assert not np.allclose(corrupted_at_5, clean_at_5, atol=1e-4)
    assert [m.label for m in app.metric] == ["Same focus", "Shared hot spots"]


def image_captions(at: AppTest) -> list[str]:
    """Every st.image caption on the page."""
    return [image.caption for element in at.get("image") for image in element.proto.imgs]


def serve_plain_and_filter_cards(folder: Path, monkeypatch) -> None:
    """Two cards over the same tiny weights, "a-plain" and "b-filter" (the impulse filter in
    its preset), as the app's weights folder."""
    model, card = load_checkpoint(write_tiny_checkpoints(folder / "src")[0])
    for name, impulse_filter in (("a-plain", False), ("b-filter", True)):
        card.name, card.title = name, f"{name} (test fixture)"
        card.preprocessing = {**card.preprocessing, "impulse_filter": impulse_filter}
        save_checkpoint(model, card, folder)
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(folder))
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)


def test_the_impulse_filter_model_says_so_and_shrugs_off_noise(photo_png, tmp_path, monkeypatch):
    """Two cards over the same weights, one with the impulse filter in its preset: noise moves
    the filtered model's probabilities far less, and the page says why."""
    serve_plain_and_filter_cards(tmp_path, monkeypatch)
    at = upload(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), photo_png)
    at.slider(key="explore_noise").set_value(5.0).run()
    shifts, charts = [], []
    for index in (0, 1):
        at.sidebar.selectbox(key="sidebar_model").select_index(index).run()
        assert not at.exception
        names, clean, corrupted = chart_probabilities(at)
        charts.append((names, clean, corrupted))
        shifts.append(np.abs(corrupted - clean).sum())
        noted = any("median" in t for t in texts(at.caption))
        assert noted == (index == 1)
        switches = [t.key for t in at.toggle]
        assert ("explore_impulse_filter" in switches) == (index == 1)
        # the network sees the input after the filter: the caption says these pixels are before
        before_filter = "model input, before its impulse filter" in image_captions(at)
        assert before_filter == (index == 1)
    assert shifts[1] < shifts[0] / 3, shifts

    # The switch off: the same weights without the filter answer exactly as the plain card.
    at.toggle(key="explore_impulse_filter").set_value(False).run()
    assert not at.exception
    names, clean, corrupted = chart_probabilities(at)
    assert names == charts[0][0]
    np.testing.assert_allclose(corrupted, charts[0][2], atol=1e-6)
    assert any("faces the noise alone" in t for t in texts(at.caption))
    assert "what the model sees" in image_captions(at)


def test_the_comparison_runs_a_filter_model_as_shipped_unless_its_own_switch_is_off(
    photo_png, tmp_path, monkeypatch
):
    """The impulse filter switch belongs to the model that has it: with another model chosen,
    the comparison runs the filter model as shipped; switched off, its card says so."""
    serve_plain_and_filter_cards(tmp_path, monkeypatch)
    at = upload(AppTest.from_file(APP, default_timeout=TIMEOUT_S).run(), photo_png)
    at.slider(key="explore_noise").set_value(5.0)
    at.toggle(key="explore_compare").set_value(True).run()
    at.run()  # the switch's callback reran the live panel alone: the whole page again

    def cards() -> dict[str, tuple[str, str]]:
        """Each card's name -> (its heatmap's JPEG, its corrupted answer)."""
        (block,) = [h.value for h in at.html if 'class="derm-models"' in h.value]
        found = re.findall(r'<img src="(.*?)".*?<p><b>(.*?)</b>.*?Corrupted: (.*?)</p>', block)
        return {name: (jpeg, answer) for jpeg, name, answer in found}

    plain_chosen = cards()  # a-plain chosen: its switch is not drawn
    assert "explore_impulse_filter" not in [t.key for t in at.toggle]
    at.sidebar.selectbox(key="sidebar_model").select_index(1).run()
    filter_chosen = cards()
    assert not at.exception
    assert filter_chosen == plain_chosen  # b-filter as shipped either way
    assert filter_chosen["b-filter (test fixture)"] != filter_chosen["a-plain (test fixture)"]

    at.toggle(key="explore_impulse_filter").set_value(False).run()
    switched_off = cards()
    assert list(switched_off) == ["a-plain (test fixture)", "b-filter (test fixture) · filter off"]
    # without its filter, the same weights answer as the plain card
    assert (
        switched_off["b-filter (test fixture) · filter off"]
        == switched_off["a-plain (test fixture)"]
    )


def _flip_cases(tiny_weights_dir) -> tuple[float, float]:
    """A noise level (percent) that changes the tiny model's top class and one that does not,
    found with dermcore itself, the way the page computes them."""
    predictor = Predictor.from_checkpoint(tiny_weights_dir / "tiny-clean.json")
    photo = lesion_photo()
    clean_top = predictor.explain(predictor.prepare(photo)).top_class
    flips, holds = None, None
    for percent in np.round(np.arange(0.1, 5.01, 0.1), 1):
        spec = CorruptionSpec(noise_density=round(percent / 100, 6))
        changed = predictor.explain(predictor.prepare(photo, spec)).top_class != clean_top
        if changed and flips is None:
            flips = float(percent)
        if not changed and holds is None:
            holds = float(percent)
        if flips is not None and holds is not None:
            return flips, holds
    pytest.fail("no noise level in 0.1-5% changes the tiny model's top class; pick another photo")


def test_callout_appears_exactly_when_the_top_class_changes(app, photo_png, tiny_weights_dir):
    flips, holds = _flip_cases(tiny_weights_dir)
    upload(app, photo_png)

    app.slider(key="explore_noise").set_value(holds).run()
    assert not app.exception
    assert not [t for t in texts(app.caption) if "The answer changed" in t]
    assert any("The answer holds" in t for t in texts(app.caption))

    app.slider(key="explore_noise").set_value(flips).run()
    assert not app.exception
    callouts = [t for t in texts(app.caption) if "The answer changed" in t]
    assert len(callouts) == 1
    assert f"at {flips:.3g}% salt-and-pepper (3:1)" in callouts[0]
    clean_class, corrupted_class = answers(app)
    assert clean_class != corrupted_class
    assert f"{clean_class} → {corrupted_class}" in callouts[0]


def test_the_clean_input_can_stand_in_for_the_photo(tiny_weights_dir):
    """Explore corrupts the clean view's model input instead of the full photo when
    where="input" and resize_size == input_size; both must give the same pixels."""
    predictor = Predictor.from_checkpoint(tiny_weights_dir / "tiny-clean.json")
    assert predictor.preprocessing.resize_size == predictor.input_size
    photo = lesion_photo()
    spec = CorruptionSpec(noise_density=0.03, blur_kernel=3, motion_length_px=5, seed=4)
    from_photo = predictor.prepare(photo, spec, "input")
    from_input = predictor.prepare(predictor.prepare(photo), spec, "input")
    np.testing.assert_array_equal(from_input, from_photo)


def test_flip_callout_wording():
    classes = ("Acne", "Ulcer")
    spec = CorruptionSpec(noise_density=0.023)
    assert flip_callout(classes, 1, 1, spec) is None
    assert flip_callout(classes, 1, 0, spec) == "Ulcer → Acne at 2.3% salt-and-pepper (3:1)"


def test_a_bad_upload_is_one_sentence_not_a_traceback(app, photo_png):
    upload(app, b"this is not a photo", name="notes.png")
    assert not app.exception
    assert len(app.error) == 1
    assert app.error[0].value.startswith("notes.png: This file is not an image we can read.")
    assert any(t.startswith("Pick a sample, upload a photo") for t in texts(app.info))

    upload(app, photo_png)  # a good file replaces the bad one, and its error goes with it
    assert not app.exception and not app.error
    assert answers(app)


def test_a_big_photo_is_kept_as_a_working_copy_and_its_size_is_reported(app):
    from dermcore.imageio import WORKING_SIDE_PX, encode_png

    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, size=(1200, 2600, 3), dtype=np.uint8)  # wider than the cap
    upload(app, encode_png(big), name="big.png")
    assert not app.exception
    photo = app.session_state["photo"]
    assert photo.original_shape == (1200, 2600, 3)
    assert photo.image.shape == (709, WORKING_SIDE_PX, 3)  # aspect kept, longer side capped
    assert answers(app)


def test_controls_reroll_blur_motion_and_target(app, photo_png):
    upload(app, photo_png)
    seed_before = app.number_input(key="explore_seed").value
    app.button(key="explore_reroll").click().run()
    assert app.number_input(key="explore_seed").value != seed_before
    app.select_slider(key="explore_blur").set_value(5)
    app.slider(key="explore_motion_length").set_value(9).run()  # enables the direction slider
    app.slider(key="explore_motion_angle").set_value(45)
    app.radio(key="explore_where").set_value("photo")
    app.selectbox(key="explore_target").set_value("Ulcer")
    app.selectbox(key="explore_cam_method").set_value("gradcam++")
    app.run()
    assert not app.exception
    captions = [c for image in app.image for c in image.captions]
    assert captions.count("evidence for Ulcer") == 2  # both heatmaps explain Ulcer
    assert any(
        "Grad-CAM++" in t and "evidence for Ulcer came from" in t for t in texts(app.caption)
    )
    assert len(app.get("download_button")) == 2


def test_camera_photo_is_used(app, photo_png):
    app.segmented_control(key="explore_source").set_value("Camera").run()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo_png)).save(buffer, format="JPEG", quality=95)
    app.camera_input(key="explore_camera").upload("photo.jpg", buffer.getvalue()).run()
    assert not app.exception
    assert answers(app)


def test_own_samples_folder_adds_to_the_gallery(tiny_weights_dir, photo_png, tmp_path, monkeypatch):
    (tmp_path / "lesion-a.png").write_bytes(photo_png)
    (tmp_path / "broken.png").write_bytes(b"nope")
    monkeypatch.setenv("DERM_SAMPLES_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    options = list(at.selectbox(key="explore_sample").options)
    assert options[-2:] == ["broken · your folder", "lesion-a · your folder"]
    at.selectbox(key="explore_sample").select_index(len(options) - 1).run()
    assert not at.exception and not at.error
    assert answers(at)
    at.selectbox(key="explore_sample").select_index(len(options) - 2).run()
    assert not at.exception
    assert at.error[0].value.startswith("broken.png: This file is not an image we can read.")


def test_tampered_weights_error_names_the_file_and_other_models_still_work(
    tiny_weights_dir, photo_png, tmp_path, monkeypatch
):
    for path in tiny_weights_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    weights = tmp_path / "tiny-clean.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))

    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    assert not at.exception
    assert len(at.error) == 1 and "tiny-clean.safetensors" in at.error[0].value
    assert at.sidebar.selectbox(key="sidebar_model").options[1].startswith("tiny-noise")

    at.sidebar.selectbox(key="sidebar_model").select_index(1).run()
    assert not at.error
    upload(at, photo_png)
    assert not at.exception and not at.error
    assert answers(at)

    at.switch_page("pages/model_data.py").run()
    at.sidebar.selectbox(key="sidebar_model").select_index(0).run()
    assert any("tiny-clean.safetensors" in e.value for e in at.error)  # the card still renders
    assert "tiny-clean (test fixture)" in texts(at.subheader)


# ---- Robustness curve -----------------------------------------------------------------------


def test_robustness_curve_of_the_explore_photo(app, photo_png):
    upload(app, photo_png)
    app.switch_page("pages/robustness.py").run()
    app.slider(key="robustness_seeds").set_value(2).run()
    assert not app.exception
    assert [m.label for m in app.metric] == [
        "Clean prediction",
        "Noise tipping point",
        "Blur tipping point",
    ]
    statement = app.info[0].value
    assert statement.startswith("The top class")
    figure = plotly_figure(app, "robustness_noise_chart")
    lines = [trace for trace in figure.data if trace.name]
    assert len(lines) == 10  # every class
    np.testing.assert_allclose(values(lines[0].x), np.linspace(0, 5, 21))  # percent
    tipping = app.metric[1].value
    assert (tipping == "none") == ("holds at every noise density" in statement)


def _curve_on_screen(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert [m.label for m in at.metric][:1] == ["Clean prediction"]
    assert at.info[0].value.startswith("The top class")


def test_the_same_curve_shown_twice_in_one_session(app, photo_png):
    """A cached curve is replayed without Streamlit calls (CacheReplayClosureError before)."""
    upload(app, photo_png)
    app.switch_page("pages/robustness.py").run()
    _curve_on_screen(app)
    app.switch_page("pages/explore.py").run()
    assert not app.exception
    app.switch_page("pages/robustness.py").run()
    _curve_on_screen(app)
    for seeds in (1, 3):
        app.slider(key="robustness_seeds").set_value(seeds).run()
        _curve_on_screen(app)


def test_the_same_curve_shown_by_two_sessions(tiny_weights_dir, photo_png, monkeypatch):
    """The cache is shared by every session: the second session is served from it."""
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    for _ in range(2):
        at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
        upload(at, photo_png)
        at.switch_page("pages/robustness.py").run()
        _curve_on_screen(at)


# ---- Results with a report ------------------------------------------------------------------


def _fake_set_report(rng: np.random.Generator, model: str, dataset: str) -> dict:
    """A small report in training/evaluate.py's layout, with made-up numbers."""
    from dermcore.labels import CLASSES

    def condition(family: str, severity: float, accuracy: float) -> dict:
        matrix = rng.integers(0, 4, (10, 10)) + np.diag(rng.integers(5, 15, 10))
        return {
            "family": family,
            "severity": severity,
            "description": f"{family} {severity:g}",
            "top1": accuracy,
            "balanced_accuracy": accuracy - 0.02,
            "macro_auroc": 0.8,
            "ece": 0.05,
            "nll": 0.9,
            "flip_rate": 1 - accuracy,
            "confusion_matrix": matrix.tolist(),
            "per_class": {"recall": [0.5] * 10, "auroc": [0.8] * 9 + [None]},
            "roc": [{"fpr": [0, 0.2, 1], "tpr": [0, 0.7, 1]}] * 9 + [None],
            "reliability": {
                "edges": np.linspace(0, 1, 16).tolist(),
                "count": [3] * 15,
                "confidence": [None] + [0.5] * 14,
                "accuracy": [None] + [0.4] * 14,
            },
        }

    conditions = {
        "clean": condition("clean", 0.0, 0.8),
        "sp_upto5": condition("noise", 0.05, 0.6),
        "sp1": condition("noise", 0.01, 0.7),
        "sp5": condition("noise", 0.05, 0.5),
        "blur5": condition("blur", 5, 0.7),
        "jpeg30": condition("jpeg", 30, 0.75),
        "exposure2": condition("exposure", 2.0, 0.7),
    }
    return {
        "model": model,
        "set": dataset,
        "n_images": 120,
        "classes": list(CLASSES),
        "calibration": {"temperature": 1.3, "ece_before": 0.08, "ece_after": 0.03},
        "conditions": conditions,
        "sweeps": {  # as training/evaluate.py writes them
            "noise": [
                {"condition": n, "severity": v}
                for n, v in (("clean", 0), ("sp1", 0.01), ("sp5", 0.05))
            ],
            "blur": [{"condition": "clean", "severity": 1}, {"condition": "blur5", "severity": 5}],
        },
    }


def test_results_page_draws_a_report(tiny_weights_dir, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for model in ("clean", "noise-trained"):
        folder = tmp_path / "reports" / model
        folder.mkdir(parents=True)
        for dataset in ("test", "shift_sd198"):
            report = _fake_set_report(rng, model, dataset)
            if dataset == "shift_sd198" and model == "clean":
                report["clean_by_condition"] = {
                    "Angioma": {"label": "Tumor", "n_images": 32, "recall": 0.0625,
                                "predicted": {"Pigmented Macula": 20, "Acne": 10, "Tumor": 2}},
                    "Keloid": {"label": "Tumor", "n_images": 30, "recall": "bad"},  # skipped
                }  # fmt: skip
            if model == "noise-trained":
                del report["sweeps"]  # derived from families and severities instead
                # a temperature softened by the held-out-source proxy (training/shift_proxy.py)
                report["calibration"] |= {"in_source_temperature": 1.0, "shift_factor": 1.3}
                report["calibration"] |= {"shift_sources": ["web", "atlas"]}
                report["calibration"] |= {"ece_in_source": 0.02}
            (folder / f"{dataset}.json").write_text(json.dumps(report))
        (folder / "table4.json").write_text(
            json.dumps({"pairs": [{"a": "Ulcer", "b": "Tumor", "errors": 7}]})
        )
        (folder / "training_curves.jsonl").write_text(
            '{"epoch": 1, "train_loss": 2.0, "valid_loss": 2.1}\n{"epoch": 2, "train_loss": 1.5, "valid_loss": 1.7}\n'
        )
        (folder / "lr_find.csv").write_text(
            "lr,loss,smoothed_loss\n1e-5,2.3,2.3\n1e-3,1.9,2.0\n1e-1,4.0,3.1\n"
        )
        (folder / "drift.json").write_text(json.dumps({"n_images": 4, "sweeps": {"noise": [{"severity": 0.0, "correlation_mean": 1, "top20_iou_mean": 1}, {"severity": 0.05, "correlation_mean": 0.6, "top20_iou_mean": 0.4}]}}))  # fmt: skip
    (tmp_path / "reports" / "broken").mkdir()
    (tmp_path / "reports" / "broken" / "test.json").write_text("{not json")
    proxy = {"heldout_source": "web", "counts": {"heldout": 40}, "temperature": {
        "val_accuracy": 0.8, "heldout_accuracy": 0.5, "shift_factor": 1.5}}  # fmt: skip
    (tmp_path / "reports" / "shift_proxy.json").write_text(
        json.dumps({"temperature": {"shift_factor": 1.4}, "proxies": [proxy]})
    )
    for path in tiny_weights_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    model, card = load_checkpoint(tiny_weights_dir / "tiny-noise.json")
    card.name, card.preprocessing = "noise-trained", {**card.preprocessing, "impulse_filter": True}
    save_checkpoint(model, card, tmp_path)  # a card with the filter, named like a report
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))

    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/results.py").run()
    assert not at.exception
    assert NO_REPORTS not in texts(at.warning)
    assert any("test.json in broken/" in w for w in texts(at.warning))
    headline = at.dataframe[0].value
    assert list(headline.index) == [
        "Paper: trained clean",
        "Paper: trained with S&P",
        "Ours: Clean",
        "Ours: Noise-trained",
    ]
    assert headline.loc["Ours: Clean", "S&P ≤ 5%"] == "60.0%"  # sp_upto5, the paper's test
    assert headline.loc["Paper: trained clean", "SD-198"] == "32%"  # as the paper prints it
    assert headline.loc["Paper: trained clean", "Blur 5×5"] == "74.85%"

    at.toggle(key="results_normalise").set_value(True).run()
    at.selectbox(key="results_set").set_value("shift_sd198").run()
    assert not at.exception
    charts = [e.proto.id for e in at.get("plotly_chart")]
    assert any("results_confusion_paper" in c for c in charts)  # Figure 19 beside ours
    frames = [d.value for d in at.dataframe]
    (by_condition,) = [f for f in frames if "SD-198 condition" in f.columns]
    assert list(by_condition["SD-198 condition"]) == ["Angioma"]
    assert by_condition["the model answered"][0] == "Pigmented Macula (20), Acne (10), Tumor (2)"
    assert by_condition["recall %"][0] == 6.2
    at.segmented_control(key="results_headline_metric").set_value("balanced_accuracy").run()
    assert "Validation ECE 8.0% before temperature scaling, 3.0% after." in texts(at.caption)
    at.selectbox(key="results_model").set_value("noise-trained").run()
    at.segmented_control(key="results_severity_metric").set_value("flip_rate").run()
    assert not at.exception
    (ece,) = [t for t in texts(at.caption) if t.startswith("Validation ECE")]
    assert "2.0% at validation's own temperature, 3.0% at this one" in ece
    assert "softened for photos from other clinics" in ece
    (temperature,) = [m for m in at.metric if m.label == "Temperature"]
    assert "multiplied by 1.30" in temperature.help
    (proxies,) = [d.value for d in at.dataframe if "source left out" in d.value.columns]
    assert proxies.iloc[0].tolist() == ["web", 40, 80.0, 50.0, 1.5]
    assert any("the factor is 1.40" in t for t in texts(at.caption))
    assert "(2 sources, each left out in turn)" in temperature.help
    assert any("results_severity_jpeg" in c for c in (e.proto.id for e in at.get("plotly_chart")))
    (note,) = [t for t in texts(at.caption) if "impulse filter" in t]
    assert note.startswith("Noise-trained: ")


def test_results_opens_with_the_story(tiny_weights_dir, tmp_path, monkeypatch):
    """The takeaway sentence and the accuracy-vs-severity charts come first; the noise axis is
    linear in density; ROC, calibration and training sit under 'ML details'."""
    rng = np.random.default_rng(1)
    for model in ("clean", "robust"):
        folder = tmp_path / "reports" / model
        folder.mkdir(parents=True)
        for dataset in ("test", "shift_sd198"):
            (folder / f"{dataset}.json").write_text(
                json.dumps(_fake_set_report(rng, model, dataset))
            )
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))
    for path in tiny_weights_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/results.py").run()
    assert not at.exception
    subheaders = texts(at.subheader)
    assert subheaders[0] == "What to take away"
    assert subheaders.index("ML details") > subheaders.index("Ours beside the paper")
    sentence = next(t for t in texts(at.markdown) if t.startswith("Salt-and-pepper noise"))
    assert "Clean 80% → 60%" in sentence and "Robust (impulse filter) 80% → 60%" in sentence
    assert "On SD-198" in sentence
    figure = plotly_figure(at, "results_story_noise")
    assert figure.layout.xaxis.type == "linear"
    np.testing.assert_allclose(values(figure.data[0].x), [0, 1, 5])  # percent, to scale


def test_reports_in_the_briefs_layout_are_read_too():
    """Per-class and ROC keyed by class name, "accuracy" and bin_* keys: the layout the app was
    first specified against, before training/evaluate.py settled on lists."""
    from dermcore.labels import CLASSES

    raw = {
        "conditions": {
            "clean": {
                "family": "clean",
                "severity": 0,
                "accuracy": 0.9,
                "per_class": {c: {"recall": 0.5, "auroc": 0.75} for c in CLASSES},
                "roc": {"Acne": {"fpr": [0, 1], "tpr": [0, 1]}},
                "reliability": {"bin_confidence": [0.5], "bin_accuracy": [0.4], "bin_count": [3]},
                "confusion_matrix": np.eye(10, dtype=int).tolist(),
            },
            "sp2": {"family": "noise", "severity": 0.02, "accuracy": 0.7},
            "sp5": {"family": "noise", "severity": 0.05, "accuracy": float("nan")},
            "exposure2": {"family": "exposure", "severity": 2.0, "accuracy": 0.8},
            "exposure0.5": {"family": "exposure", "severity": 0.5, "accuracy": 0.8},
        }
    }
    report = parse_set_report(raw, "clean", "test")
    clean = report.conditions["clean"]
    assert clean.accuracy == 0.9 and clean.per_class["auroc"] == [0.75] * 10
    assert clean.roc[0] == ([0, 1], [0, 1]) and clean.roc[1] is None
    assert clean.reliability == {"confidence": [0.5], "accuracy": [0.4], "count": [3.0]}
    assert report.conditions["sp5"].accuracy is None  # NaN reads as missing
    assert report.sweeps == {
        "noise": ["clean", "sp2", "sp5"],
        "exposure": ["exposure0.5", "clean", "exposure2"],
    }


# ---- downloads --------------------------------------------------------------------------------


def _comparison(tiny_weights_dir) -> Comparison:
    predictor = Predictor.from_checkpoint(tiny_weights_dir / "tiny-clean.json")
    photo = lesion_photo()
    spec = CorruptionSpec(noise_density=0.04, seed=7)
    clean = predictor.explain(predictor.prepare(photo))
    corrupted = predictor.explain(predictor.prepare(photo, spec))
    return Comparison(
        predictor.classes, clean, corrupted, spec, "input", cam_shift(clean.cam, corrupted.cam)
    )


def test_record_reproduces_the_view_without_the_image(tiny_weights_dir):
    comparison = _comparison(tiny_weights_dir)
    record = comparison_record(
        comparison, model_name="tiny-clean", weights_sha256="ab" * 32, image_sha256="cd" * 32, image_shape=(240, 320, 3),
        original_shape=(2400, 3200, 3),
    )  # fmt: skip
    text = json.dumps(record)
    assert len(text) < 4000  # settings and numbers, no pixels
    assert record["corruption"]["seed"] == 7 and record["corruption"]["where"] == "input"
    assert (
        CorruptionSpec.from_dict({k: v for k, v in record["corruption"].items() if k != "where"})
        == comparison.spec
    )
    image = record["image"]
    assert (image["sha256"], image["height"], image["width"]) == ("cd" * 32, 240, 320)
    assert (image["original_height"], image["original_width"]) == (2400, 3200)
    assert sum(record["clean"]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert "impulse_filter" not in record["model"]  # the model has none
    switched_off = dataclasses.replace(comparison, impulse_filter=False)
    record = comparison_record(
        switched_off, model_name="x", weights_sha256="ab" * 32, image_sha256="cd" * 32,
        image_shape=(240, 320, 3), original_shape=(240, 320, 3),
    )  # fmt: skip
    assert record["model"]["impulse_filter"] is False


def test_comparison_png_is_a_png(tiny_weights_dir):
    png = comparison_png(_comparison(tiny_weights_dir), 0.5, "tiny-clean · lesion.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(png)).size[0] > 800


def test_the_figure_and_the_record_say_not_sure_where_the_app_does(tiny_weights_dir):
    comparison = _comparison(tiny_weights_dir)
    classes, corrupted = comparison.classes, comparison.corrupted
    top = f"{classes[corrupted.top_class]} {corrupted.top_probability:.1%}"
    assert view_heading(classes, "Corrupted", corrupted) == f"Corrupted: {top}"
    declined = dataclasses.replace(
        comparison, corrupted=dataclasses.replace(corrupted, abstain=True, familiarity=0.0)
    )
    assert view_heading(classes, "Corrupted", declined.corrupted) == f"Corrupted: Not sure ({top})"
    heading = figure_heading(declined, "Robust · filter off")
    assert heading.startswith("Robust · filter off\nNot sure under 4% salt-and-pepper")
    assert "Not sure" not in figure_heading(comparison, "t")
    record = comparison_record(
        declined, model_name="x", weights_sha256="ab" * 32, image_sha256="cd" * 32,
        image_shape=(240, 320, 3), original_shape=(240, 320, 3),
    )  # fmt: skip
    assert (record["corrupted"]["abstain"], record["corrupted"]["familiarity"]) == (True, 0.0)
    assert (record["clean"]["abstain"], record["clean"]["familiarity"]) == (False, None)


def test_chart_classes_always_shows_the_new_winner():
    clean = np.array([0.3, 0.25, 0.2, 0.1, 0.08, 0.07])
    assert chart_classes(clean, clean) == [0, 1, 2, 3, 4]
    assert chart_classes(clean, np.array([0, 0, 0, 0, 0, 1.0])) == [0, 1, 2, 3, 4, 5]


def test_picker_label_drops_the_score_older_cards_carry_in_their_title(tiny_weights_dir):
    from dermcore.checkpoint import read_card
    from ui.common import ModelEntry

    path = sorted(tiny_weights_dir.glob("*.json"))[0]
    card = read_card(path)
    title = "efficientnet_lite0, trained on clean photos"
    old = dataclasses.replace(card, title=f"{title} (test balanced accuracy 0.79)")
    assert ModelEntry(str(path), old).label == title
    assert ModelEntry(str(path), dataclasses.replace(card, title=title)).label == title
    assert ModelEntry(str(path), dataclasses.replace(card, title="")).label == card.name


def test_explore_keeps_its_settings_and_photo_across_pages(app, photo_png):
    upload(app, photo_png, name="mine.png")
    app.slider(key="explore_noise").set_value(3.0)
    app.select_slider(key="explore_blur").set_value(5)
    app.selectbox(key="explore_target").set_value("Ulcer").run()
    photo = app.session_state["photo"]
    for page in ("pages/robustness.py", "pages/results.py", "pages/explore.py"):
        app.switch_page(page).run()
        assert not app.exception
    assert app.slider(key="explore_noise").value == 3.0
    assert app.select_slider(key="explore_blur").value == 5
    assert app.selectbox(key="explore_target").value == "Ulcer"
    assert app.segmented_control(key="explore_source").value == "Upload"
    assert app.session_state["photo"].sha256 == photo.sha256  # the photo shown is the one used
    assert "320×240 px" in texts(app.caption)
    assert any("evidence for Ulcer" in c for image in app.image for c in image.captions)


def test_removing_the_upload_stops_using_it(app, photo_png):
    upload(app, photo_png)
    app.file_uploader(key="explore_upload").clear().run()
    assert not app.exception
    assert app.session_state["photo"] is None
    assert any(t.startswith("Pick a sample, upload a photo") for t in texts(app.info))


def test_explore_reads_the_photos_own_quality(app, photo_png):
    """Before any slider: the uploaded photo's noise, blur, blocking and exposure, in one line
    and in sentences; a photo that already carries 3% salt-and-pepper at the resolution where
    it is measured (224 px) says so."""
    from dermcore.corruptions import salt_and_pepper
    from dermcore.imageio import encode_png

    (expander,) = [e for e in app.expander if "This photo as it came" in e.label]
    assert "no noise" in expander.label
    noisy = salt_and_pepper(lesion_photo(height=224, width=224), 0.03, rng=np.random.default_rng(0))
    upload(app, encode_png(noisy), name="noisy.png")
    assert not app.exception
    (expander,) = [e for e in app.expander if "This photo as it came" in e.label]
    assert "no noise" not in expander.label
    sentences = " ".join(texts(expander.markdown))
    assert "salt-and-pepper" in sentences and "%" in sentences


def test_compare_all_models_on_one_photo(app, photo_png, tiny_weights_dir):
    """Every model on the same photo and corruption, each with its answers and heatmap, and one
    line saying which held their clean answer."""
    flips, _ = _flip_cases(tiny_weights_dir)
    upload(app, photo_png)
    app.toggle(key="explore_compare").set_value(True)
    app.slider(key="explore_noise").set_value(flips).run()
    assert not app.exception
    (block,) = [h.value for h in app.html if 'class="derm-models"' in h.value]
    assert re.findall(r"<p><b>(.*?)</b>", block) == [
        "tiny-clean (test fixture)",
        "tiny-noise (test fixture)",
    ]
    assert block.count('<img src="data:image/jpeg;base64,') == 2  # each model's heatmap
    assert block.count("Clean: <b>") == block.count("Corrupted: <b>") == 2
    clean_card, noise_card = re.findall(r'<div class="derm-model">(.*?)</p></div>', block)
    assert "changed" in clean_card  # tiny-clean flips at this density
    for card in (clean_card, noise_card):
        # its top classes as bars, clean over corrupted, the corrupted answer's class among them
        names = re.findall(r'<span class="derm-name">(.*?)</span>', card)
        assert 3 <= len(names) <= 4 and len(set(names)) == len(names)
        for view in ("clean", "corrupted"):
            percents = re.findall(rf'title="{view}: ([0-9.]+)%"', card)
            assert len(percents) == len(names)
            assert all(0 <= float(p) <= 100 for p in percents)
        (corrupted_answer,) = re.findall(r"Corrupted: <b>(.*?)</b>", card)
        assert corrupted_answer in names
        # the heatmap drift, unless the two heatmaps explain different classes
        (clean_answer,) = re.findall(r"Clean: <b>(.*?)</b>", card)
        comparable = "same focus" in card and "shared hot spots" in card
        assert comparable == (clean_answer == corrupted_answer)
        assert comparable != ("not comparable" in card)
    assert ["same focus" in card for card in (clean_card, noise_card)] == [False, True]
    (line,) = [t for t in texts(app.markdown) if "Changed it:" in t]
    assert "salt-and-pepper" in line
    assert "tiny-clean (test fixture)" in line.split("Changed it:")[1]  # flips at this density
    assert not [t for t in texts(app.markdown) if t.startswith("Clean: **")]  # replaces the views
    # every model's numbers are in its card: no chart of one model under the row, and what is
    # under the row says whose it is
    assert not app.get("plotly_chart") and not app.metric
    assert "**tiny-clean (test fixture)**, the model chosen in the sidebar:" in texts(app.markdown)


def test_a_file_over_the_limit_says_what_happened_and_the_limit(app):
    """Files up to the server's 200 MB reach the app, which refuses those over 50 MB with a
    sentence naming the limit (the uploader's own check would only mark the file red)."""
    import tomllib

    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] > 50
    upload(app, b"\xff\xd8" + bytes(50_000_100), name="huge.jpg")
    assert not app.exception
    (error,) = texts(app.error)
    assert error.startswith("huge.jpg: This file is too large") and "the limit is 50 MB" in error
    assert "up to 50 MB" in app.file_uploader(key="explore_upload").help


# ---- familiarity and "Not sure" -------------------------------------------------------------


@pytest.fixture(scope="module")
def familiar_weights_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("familiar-weights")
    write_familiar_checkpoint(directory)
    shutil.rmtree(directory / "source")
    return directory


def test_a_familiar_photo_is_answered_with_a_badge_and_noise_makes_the_model_not_sure(
    familiar_weights_dir, photo_png, monkeypatch
):
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(familiar_weights_dir))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    upload(at, photo_png)
    assert not at.exception
    (answers_text,) = [t for t in texts(at.markdown) if t.startswith("Clean: ")]
    assert answers_text.count(":green-badge[familiar]") == 2  # no corruption yet
    assert "Not sure" not in answers_text
    at.slider(key="explore_noise").set_value(5.0).run()
    (answers_text,) = [t for t in texts(at.markdown) if t.startswith("Clean: ")]
    clean_line, corrupted_line = answers_text.split("  \n")
    assert "Not sure" not in clean_line
    assert corrupted_line.startswith("Corrupted: **Not sure** (")  # the top class still shown
    assert "unlike anything in training" in corrupted_line or "unusual" in corrupted_line
    assert any("declines to answer instead of guessing" in t for t in texts(at.caption))
    assert plotly_figure(at, "explore_probabilities").data  # the top classes stay inspectable

    at.switch_page("pages/robustness.py").run()
    assert not at.exception
    assert 'It says "Not sure" (shaded)' in at.info[0].value
    shapes = plotly_figure(at, "robustness_noise_chart").layout.shapes
    assert any(shape.type == "rect" for shape in shapes)  # the shaded "Not sure" range

    at.switch_page("pages/model_data.py").run()
    (not_sure,) = [t for t in texts(at.markdown) if "When it says 'Not sure'" in t]
    assert "noisy and non-skin images well. It does not catch a familiar-looking" in not_sure


def test_a_model_without_statistics_shows_no_badge(app, photo_png):
    upload(app, photo_png)
    (answers_text,) = [t for t in texts(app.markdown) if t.startswith("Clean: ")]
    assert "badge" not in answers_text and "Not sure" not in answers_text


def test_results_draws_risk_coverage_and_flip_catch(tiny_weights_dir, tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    folder = tmp_path / "reports" / "clean"
    folder.mkdir(parents=True)
    (folder / "test.json").write_text(json.dumps(_fake_set_report(rng, "clean", "test")))

    def condition(family: str, severity: float, flip_catch: float | None) -> dict:
        return {"family": family, "severity": severity, "coverage": 0.9, "top1_answered": 0.85,
                "top1_all": 0.8, "flip_catch": flip_catch,
                "risk_coverage": {"coverage": [0.1, 0.5, 0.9], "risk": [0.0, 0.1, 0.15]}}  # fmt: skip

    sets = {
        "test": {"clean": condition("clean", 0, None), "sp1": condition("noise", 0.01, 0.4),
                 "sp5": condition("noise", 0.05, 0.9), "blur11": condition("blur", 11, 0.7)},
        "non_skin": {"clean": {**condition("clean", 0, None), "coverage": 0.0}},
    }  # fmt: skip
    (folder / "abstention.json").write_text(json.dumps({"model": "clean", "sets": sets}))
    for path in tiny_weights_dir.iterdir():
        shutil.copy(path, tmp_path / path.name)
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/results.py").run()
    assert not at.exception
    assert "Knowing when not to answer" in texts(at.subheader)
    table = next(d.value for d in at.dataframe if "test photos: answered" in d.value.columns)
    assert table.loc["Clean", "test photos: answered"] == "90.0%"
    assert table.loc["Clean", "non-skin images: answered"] == "0.0%"
    risk = plotly_figure(at, "results_risk_test")
    np.testing.assert_allclose(values(risk.data[0].x), [0.1, 0.5, 0.9])
    flips = plotly_figure(at, "results_flip_catch_noise")
    np.testing.assert_allclose(values(flips.data[0].x), [1, 5])
    np.testing.assert_allclose(values(flips.data[0].y), [0.4, 0.9])


def test_what_the_familiarity_check_catches_depends_on_how_the_model_meets_noise(
    tiny_weights_dir,
):
    """Noise is caught only by a model that meets it bare: not one trained on it, not one whose
    impulse filter removes it first."""
    from dermcore.checkpoint import read_card
    from ui.common import familiarity_catches

    card = read_card(tiny_weights_dir / "tiny-clean.json")
    plain = dataclasses.replace(card, familiarity={"fitted_corruption": "none"})
    filtered = dataclasses.replace(
        plain, preprocessing={**card.preprocessing, "impulse_filter": True}
    )
    trained = dataclasses.replace(card, familiarity={"fitted_corruption": "sp"})
    assert "blurred, noisy and non-skin" in familiarity_catches(plain)
    assert "impulse filter removes" in familiarity_catches(filtered)
    assert "noisy" not in familiarity_catches(filtered).split(".")[0]
    assert "was trained on" in familiarity_catches(trained)


def test_model_card_names_every_data_collection(tiny_weights_dir, tmp_path, monkeypatch):
    model, card = load_checkpoint(tiny_weights_dir / "tiny-clean.json")
    card.data = {"split_counts": {"train": 12}, "roots": [
        {"path": "../shared/data/train", "rows": 2401, "tiers": {"A": 10}},
        {"path": "/home/me/clinic-photos", "rows": 120, "tiers": {"unrecorded": 120}},
    ]}  # fmt: skip
    save_checkpoint(model, card, tmp_path)
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/model_data.py").run()
    assert not at.exception
    assert any(
        "2 collections: train (2401 photos); clinic-photos (120 photos)" in t
        for t in texts(at.markdown)
    )


def test_model_card_says_how_its_confidence_was_softened(tiny_weights_dir, tmp_path, monkeypatch):
    """A temperature carrying the held-out-source proxies' factor is explained in words; the
    count of left-out sources comes from the card."""
    model, card = load_checkpoint(tiny_weights_dir / "tiny-clean.json")
    card.calibration = {"temperature": 1.3, "shift_factor": 1.3, "shift_sources": ["a", "b", "c"]}
    save_checkpoint(model, card, tmp_path)
    monkeypatch.setenv("DERM_WEIGHTS_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
    at.switch_page("pages/model_data.py").run()
    assert not at.exception
    (confidence,) = [t for t in texts(at.markdown) if t.startswith("**Confidence.**")]
    assert "repeated three times with one photo source left out each time" in confidence
    assert "set for photos from clinics it never saw" in confidence
