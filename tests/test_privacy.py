"""An uploaded photo is patient data: the whole flow must leave it on no disk and in no log.

The flow runs app.py under AppTest: upload a photo, change noise and blur, generate both
downloads (the PNG figure as a click on the button would generate it, the JSON record), and draw
the Robustness page. Around it the test watches three ways a photo could leak:

- files: every file (path, size, mtime) under the repository and the app's temporary folder,
  before and after. The app under test gets a temporary folder of its own (TMPDIR and
  tempfile.tempdir), so the check sees the app and nothing that other processes on the machine
  write to /tmp. Skipped: tool caches (.venv, .git, __pycache__, ...), runs/ (training output,
  written by training jobs that may run beside the tests) and pytest's own temporary folders.
- writes: Python's audit hook reports every file this process opens for writing, anywhere.
- text: every log record of every logger at every level (caplog alone would miss Streamlit's
  loggers, which do not propagate to the root and log at INFO), stdout and stderr at the file
  descriptor level, and warnings. None may hold a trace of the photo's bytes (raw, as Python's
  bytes repr, as hex or as base64) or of any PNG.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")
TIMEOUT_S = 90
CACHE_DIRS = {".venv", ".git", ".pytest_cache", "__pycache__", ".ruff_cache", ".hypothesis"}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# ---- files ----------------------------------------------------------------------------------


def snapshot(roots: list[Path], skipped: set[Path]) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under `roots`, not following links, outside cache
    folders and `skipped` folders."""
    files = {}
    for root in roots:
        for folder, subfolders, names in os.walk(root):
            subfolders[:] = [
                name
                for name in subfolders
                if name not in CACHE_DIRS and Path(folder, name) not in skipped
            ]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    stat = os.lstat(path)
                except FileNotFoundError:  # removed while we walked
                    continue
                files[path] = (stat.st_size, stat.st_mtime_ns)
    return files


def new_or_changed(before: dict, after: dict) -> list[str]:
    return sorted(path for path, stamp in after.items() if before.get(path) != stamp)


def watched_folders(basetemp: Path, app_temp: Path) -> tuple[list[Path], set[Path]]:
    """The folders to snapshot (the repository, the working folder and the app's own temporary
    folder), and those to skip below them: runs/ and pytest's temporary folders (all of this
    user's pytest runs when they share a pytest-of-<user> parent)."""
    pytest_temp = basetemp.parent if basetemp.parent.name.startswith("pytest-of-") else basetemp
    roots = {REPO.resolve(), Path.cwd().resolve(), app_temp.resolve()}
    return sorted(roots), {(REPO / "runs").resolve(), pytest_temp.resolve()}


@pytest.fixture
def app_temp(tmp_path_factory, monkeypatch) -> Path:
    """A temporary folder for the app under test alone: TMPDIR and tempfile's cached default
    point at it for the test."""
    folder = tmp_path_factory.mktemp("app-tmp")
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    assert Path(tempfile.gettempdir()) == folder
    return folder


_opened_for_writing: list[str] | None = None  # a list only while a test records


def _audit(event: str, args: tuple) -> None:
    if _opened_for_writing is None or event != "open":
        return
    path, mode, flags = args
    if isinstance(path, int):
        return  # an already open descriptor
    writing = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE_FLAGS)
    path = os.fsdecode(path)
    if writing and not CACHE_DIRS.intersection(Path(path).parts) and not path.startswith("/dev/"):
        _opened_for_writing.append(path)


@contextmanager
def files_opened_for_writing() -> Iterator[list[str]]:
    """Every path this process opens for writing meanwhile (Python's `open` audit event: the
    open() builtin, io and os.open), except in cache folders and /dev."""
    global _opened_for_writing
    if not getattr(_audit, "installed", False):
        sys.addaudithook(_audit)  # cannot be removed; inert while _opened_for_writing is None
        _audit.installed = True
    _opened_for_writing = []
    try:
        yield _opened_for_writing
    finally:
        _opened_for_writing = None


# ---- text -----------------------------------------------------------------------------------


@contextmanager
def every_log_record() -> Iterator[list[str]]:
    """The text of every record any logger creates meanwhile, at any level, whatever its
    logger's level, propagation and handlers. Handlers still get what they would have got."""
    texts: list[str] = []
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    handle = logging.Logger.handle

    def recording_handle(self: logging.Logger, record: logging.LogRecord) -> None:
        try:
            texts.append(formatter.format(record))
        except Exception:  # a malformed record still counts, as its raw parts
            texts.append(f"{record.name} {record.msg!r} {record.args!r}")
        if record.levelno >= self.getEffectiveLevel():
            handle(self, record)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logging.Logger, "isEnabledFor", lambda self, level: True)
        patch.setattr(logging.Logger, "handle", recording_handle)
        yield texts


def _repr_forms(window: bytes) -> set[bytes]:
    """`window` as it shows inside the repr of any bytes holding it: quote characters may or
    may not be escaped, depending on the quotes the whole repr uses."""
    escaped = repr(window + b"\"'")[2:-4]  # holding both quotes, the repr escapes the single ones
    return {escaped.encode(), escaped.replace("\\'", "'").encode()}


def traces(data: bytes, windows: int = 4, width: int = 32) -> dict[str, bytes]:
    """Byte strings that text or a stream holding `data` (most of it, in a common encoding)
    would contain: slices from its middle, raw, as bytes repr and as hex, and slices of its
    base64 encodings at each of the three alignments (standard and URL-safe alphabets)."""
    found = {}
    for number in range(windows):
        start = len(data) * (3 + number) // (windows + 6)
        window = data[start : start + width]
        found[f"raw@{start}"] = window
        for index, form in enumerate(_repr_forms(window)):
            found[f"repr{index}@{start}"] = form
        found[f"hex@{start}"] = window.hex().encode()
        found[f"HEX@{start}"] = window.hex().upper().encode()
    for offset in range(3):
        encoded = base64.b64encode(data[offset:])
        middle = len(encoded) // 2
        found[f"base64+{offset}"] = encoded[middle : middle + 40]
        found[f"base64url+{offset}"] = base64.urlsafe_b64encode(data[offset:])[middle : middle + 40]
    return found


def png_traces(png: bytes, name: str) -> dict[str, bytes]:
    """A PNG's signature and IHDR chunk (its first 33 bytes: the size of the image), raw, as
    bytes repr, as hex and as base64."""
    head = png[:33]
    assert head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR"
    found = {f"{name} head raw": head, f"{name} head hex": head.hex().encode()}
    found[f"{name} head base64"] = base64.b64encode(head)
    for index, form in enumerate(_repr_forms(head)):
        found[f"{name} head repr{index}"] = form
    return found


ANY_PNG = {
    "PNG signature raw": PNG_SIGNATURE,
    "PNG signature repr": b"\\x89PNG\\r\\n\\x1a\\n",
    "PNG signature hex": PNG_SIGNATURE.hex().encode(),
    "PNG signature base64": base64.b64encode(PNG_SIGNATURE)[:11],  # iVBORw0KGgo
}


def leaked(needles: dict[str, bytes], texts: list[str], streams: bytes) -> list[str]:
    """The names of the needles found in the texts (as UTF-8 and as Latin-1, which maps bytes
    decoded as Latin-1 back to themselves) or in the raw stream bytes."""
    text = "\n".join(texts)
    haystack = b"\n".join(
        [text.encode("utf-8", "backslashreplace"), text.encode("latin-1", "backslashreplace"),
         streams]
    )  # fmt: skip
    return [name for name, needle in needles.items() if needle in haystack]


# ---- the flow -------------------------------------------------------------------------------


@pytest.fixture
def media_managers(monkeypatch) -> list[tuple[MediaFileManager, object]]:
    """(manager, its in-memory storage) of every AppTest run, newest last. Downloads and
    images live there; AppTest drops its runtime after each run, this keeps them."""
    recorded = []
    init = MediaFileManager.__init__

    def recording_init(self: MediaFileManager, storage) -> None:
        recorded.append((self, storage))
        init(self, storage)

    monkeypatch.setattr(MediaFileManager, "__init__", recording_init)
    return recorded


def downloads(at: AppTest, manager: MediaFileManager, storage) -> dict[str, bytes]:
    """The bytes of every download button, by file name; a deferred one (data=callable) is
    generated as Streamlit generates it when the button is clicked."""
    files = {}
    for button in at.get("download_button"):
        proto = button.proto
        url = proto.url
        if proto.deferred_file_id:
            url = manager.execute_deferred(proto.deferred_file_id)
        stored = storage.get_file(url.rsplit("/", 1)[-1])
        files[stored.filename] = stored.content
    return files


PHOTO_NAME = "jane-doe-1957-03-14.png"  # a file name can name the patient too


def test_the_whole_flow_leaves_no_trace_of_the_photo(
    tiny_weights_dir,
    photo_png,
    tmp_path_factory,
    app_temp,
    media_managers,
    capfdbinary,
    recwarn,
    monkeypatch,
):
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    import matplotlib.font_manager  # noqa: F401  (matplotlib's font cache is built here, if at all)

    roots, skipped = watched_folders(tmp_path_factory.getbasetemp(), app_temp)
    before = snapshot(roots, skipped)
    with files_opened_for_writing() as written, every_log_record() as logs:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
        at.segmented_control(key="explore_source").set_value("Upload").run()
        at.file_uploader(key="explore_upload").set_value((PHOTO_NAME, photo_png, "image/png"))
        at.run()
        at.slider(key="explore_noise").set_value(3.0)
        at.select_slider(key="explore_blur").set_value(5)
        at.run()
        assert not at.exception and not at.error
        assert [m.label for m in at.metric] == ["Same focus", "Shared hot spots"]
        files = downloads(at, *media_managers[-1])
        preview = at.session_state["photo"].preview_png
        at.switch_page("pages/robustness.py").run()
        at.slider(key="robustness_seeds").set_value(1).run()
        assert not at.exception
        assert [m.label for m in at.metric][0] == "Clean prediction"
    after = snapshot(roots, skipped)
    out, err = capfdbinary.readouterr()

    assert sorted(Path(name).suffix for name in files) == [".json", ".png"]
    (png,) = (data for name, data in files.items() if name.endswith(".png"))
    (record,) = (data for name, data in files.items() if name.endswith(".json"))
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert not any(PHOTO_NAME in name for name in files)
    photo = traces(photo_png) | {"file name": PHOTO_NAME.encode()}
    assert leaked(photo | ANY_PNG, [record.decode()], b"") == []

    assert new_or_changed(before, after) == []
    assert written == []
    assert logs, "no log record was seen: the log capture is broken"
    needles = photo | ANY_PNG | png_traces(png, "download") | png_traces(preview, "preview")
    texts = logs + [str(warning.message) for warning in recwarn]
    assert leaked(needles, texts, out + err) == []


def test_the_teaching_flow_leaves_no_trace_of_the_photo(
    tiny_weights_dir,
    photo_png,
    tmp_path_factory,
    app_temp,
    media_managers,
    capfdbinary,
    recwarn,
    monkeypatch,
):
    """Teaching: an uploaded photo in a deck, presented to the tally, and the deck exported as
    JSON, PNG slides and PDF. The JSON names the photo by its hash only."""
    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    import matplotlib.font_manager  # noqa: F401  (as above)

    roots, skipped = watched_folders(tmp_path_factory.getbasetemp(), app_temp)
    before = snapshot(roots, skipped)
    with files_opened_for_writing() as written, every_log_record() as logs:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
        at.switch_page("pages/teaching.py").run()
        at.segmented_control(key="teaching_source").set_value("Upload").run()
        at.file_uploader(key="teaching_upload").set_value((PHOTO_NAME, photo_png, "image/png"))
        at.run()
        at.button(key="teaching_add").click().run()
        files = downloads(at, *media_managers[-1])
        at.segmented_control(key="teaching_mode").set_value("Present").run()
        at.button(key="teaching_reveal").click().run()
        at.button(key="teaching_next").click().run()
        assert not at.exception and not at.error
        assert any(m.value == "## Tally" for m in at.markdown)
    after = snapshot(roots, skipped)
    out, err = capfdbinary.readouterr()

    assert sorted(files) == ["teaching-deck.json", "teaching-slides.pdf", "teaching-slides.zip"]
    record = files["teaching-deck.json"]
    photo = traces(photo_png) | {"file name": PHOTO_NAME.encode()}
    assert leaked(photo | ANY_PNG, [record.decode()], b"") == []
    assert not any(PHOTO_NAME in name for name in files)
    assert files["teaching-slides.pdf"].startswith(b"%PDF")

    assert new_or_changed(before, after) == []
    assert written == []
    assert logs, "no log record was seen: the log capture is broken"
    texts = logs + [str(warning.message) for warning in recwarn]
    assert leaked(photo | ANY_PNG, texts, out + err) == []


def test_the_checks_see_a_leak(photo_png, tmp_path_factory, app_temp, capfdbinary):
    """The watchers above, shown a photo written to the app's temporary folder, logged as base64
    at DEBUG by a logger that does not propagate, and written raw to stderr."""
    roots, skipped = watched_folders(tmp_path_factory.getbasetemp(), app_temp)
    leak = Path(tempfile.gettempdir(), f"derm-privacy-check-{os.getpid()}.png")
    quiet = logging.getLogger("streamlit.privacy_check")  # INFO and no propagation, as Streamlit's
    quiet.setLevel(logging.INFO)
    quiet.propagate = False
    before = snapshot(roots, skipped)
    try:
        with files_opened_for_writing() as written, every_log_record() as logs:
            leak.write_bytes(photo_png)
            quiet.debug("upload %s", base64.b64encode(photo_png).decode())
            os.write(2, photo_png)
        after = snapshot(roots, skipped)
    finally:
        leak.unlink(missing_ok=True)
    assert str(leak.resolve()) in new_or_changed(before, after)
    assert written == [str(leak)]
    needles = traces(photo_png) | ANY_PNG
    found = set(leaked(needles, logs, capfdbinary.readouterr().err))
    assert {"base64+0", "PNG signature base64"} <= found  # the log
    assert {name for name in needles if name.startswith("raw@")} <= found  # stderr
    assert "PNG signature raw" in found


def test_the_photo_zip_flow_leaves_no_trace_of_the_photos(
    tiny_weights_dir, tmp_path_factory, app_temp, media_managers, capfdbinary, recwarn, monkeypatch
):
    """Your photos: upload a zip of patient-named photos, score every model, generate both
    summaries. Watched as the flow above."""
    from photo_zips import labelled_photos, zip_bytes

    monkeypatch.delenv("DERM_SAMPLES_DIR", raising=False)
    import matplotlib.font_manager  # noqa: F401

    photos = {
        name.replace("photo-", "jane-doe-1957-"): data
        for name, data in labelled_photos({"Acne": 3, "Urticaria": 2}, seed=5).items()
    }
    archive = zip_bytes(photos)
    roots, skipped = watched_folders(tmp_path_factory.getbasetemp(), app_temp)
    before = snapshot(roots, skipped)
    with files_opened_for_writing() as written, every_log_record() as logs:
        at = AppTest.from_file(APP, default_timeout=TIMEOUT_S).run()
        at.switch_page("pages/your_photos.py").run()
        at.file_uploader(key="photos_upload").set_value(
            ("jane-doe-clinic.zip", archive, "application/zip")
        )
        at.run()
        at.button(key="photos_score").click().run()
        assert not at.exception and not at.error
        assert len(at.tabs) == 2
        files = downloads(at, *media_managers[-1])
    after = snapshot(roots, skipped)
    out, err = capfdbinary.readouterr()

    assert sorted(Path(name).suffix for name in files) == [".json", ".png"]
    (png,) = (data for name, data in files.items() if name.endswith(".png"))
    (record,) = (data for name, data in files.items() if name.endswith(".json"))
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000
    assert not any("jane-doe" in name for name in files)
    needles = traces(archive) | {"file name": b"jane-doe"}
    for name, data in photos.items():
        needles |= {f"{name} {key}": value for key, value in traces(data, windows=2).items()}
    assert leaked(needles | ANY_PNG, [record.decode()], b"") == []
    for data in photos.values():  # the summary figure draws no photo
        assert leaked(traces(data, windows=2), [], png) == []

    assert new_or_changed(before, after) == []
    assert written == []
    assert logs, "no log record was seen: the log capture is broken"
    texts = logs + [str(warning.message) for warning in recwarn]
    assert leaked(needles | ANY_PNG | png_traces(png, "download"), texts, out + err) == []


def test_onnx_runtime_starts_no_telemetry(tmp_path):
    """ONNX Runtime (the app's graph runtime) starts telemetry when imported: with the pinned
    1.32 on Linux, a device identifier (.ses) in the temporary folder, then lookups of
    Microsoft's collector (both seen with strace; without the switch in dermcore/__init__.py
    this test fails). Imported after dermcore, as everything in the project imports it, it
    starts none of it. No control run without the switch: that would send the lookups."""
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    command = [sys.executable, "-c", "import dermcore.graph_runtime, onnxruntime"]
    subprocess.run(command, env={**env, "TMPDIR": str(tmp_path)}, cwd=REPO, check=True)
    assert sorted(path.name for path in tmp_path.iterdir()) == []
