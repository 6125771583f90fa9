"""The main flow in a real headless Chromium against `streamlit run app.py`.

Chromium is the system's (Debian's `chromium` package, /usr/bin/chromium); Playwright's own
browser download is never used. Set DERM_SCREENSHOT=path/to/file.png to keep a screenshot.
benchmarks/bench_browser.py reuses the helpers here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NOISE_SLIDER = ".st-key-explore_noise input[type=range]"
PREDICTIONS = ".st-key-explore_predictions"
# Everything a panel shows: its texts, chart labels and bar geometry, and its images. It changes
# as soon as new probabilities are drawn, even when a rounded label does not.
SIGNATURE = """(selector) => {
    const panel = document.querySelector(selector);
    if (!panel) return "";
    const marks = [...panel.querySelectorAll("svg text, svg path")];
    const images = [...panel.querySelectorAll("img")].map(e => e.src.length + e.src.slice(-64));
    return panel.innerText + marks.map(e => e.textContent + (e.getAttribute("d") || "")).join("|")
        + images.join("|");
}"""
PREDICTIONS_SIGNATURE = f"() => ({SIGNATURE})({PREDICTIONS!r})"
IDLE = """() => !document.querySelector("[data-testid=stStatusWidgetRunningIcon]")
    && !document.querySelector("[data-stale=true]")"""
FAILURES = "[data-testid=stException], [data-testid=stAlertContentError]"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(weights_dir: Path, log_path: Path, timeout_s: float = 90) -> Iterator[str]:
    """`streamlit run app.py` on a free local port with DERM_WEIGHTS_DIR set; yields its URL."""
    port = free_port()
    env = {**os.environ, "DERM_WEIGHTS_DIR": str(weights_dir)}
    env.pop("DERM_SAMPLES_DIR", None)
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1"]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, cwd=APP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"streamlit exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"streamlit did not answer within {timeout_s} s:\n{log_path.read_text()}"
                )
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def chromium_browser(extra_args: Sequence[str] = ()):
    """The system's Chromium, headless, driven by Playwright; yields the Browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    with chromium_browser() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(90_000)  # the first run loads torch and the model
        yield page


def wait_idle(page) -> None:
    page.wait_for_function(IDLE, polling="raf")


def open_with_photo(page, url: str, photo_path: Path) -> None:
    """Load the app (it opens on a shipped sample), upload the photo and wait until its
    predictions are drawn."""
    from PIL import Image

    width, height = Image.open(photo_path).size
    page.goto(url)
    page.locator(f"{PREDICTIONS} svg text").first.wait_for()
    wait_idle(page)
    page.locator(".st-key-explore_source button", has_text="Upload").click()
    page.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(photo_path)
    page.get_by_text(f"{width}×{height} px", exact=True).wait_for()
    page.locator(f"{PREDICTIONS} svg text").first.wait_for()
    wait_idle(page)


def press_and_wait_for_update(page, key: str, selector: str = PREDICTIONS) -> float:
    """Press `key` on the focused noise slider; seconds until the panel at `selector` (the
    prediction panel) changes."""
    before = page.evaluate(SIGNATURE, selector)
    started = time.perf_counter()
    page.keyboard.press(key)
    page.wait_for_function(
        f"([selector, old]) => ({SIGNATURE})(selector) !== old",
        arg=[selector, before],
        polling="raf",
    )
    elapsed = time.perf_counter() - started
    wait_idle(page)
    return elapsed


def save_screenshot(page, path: Path) -> None:
    """The whole page: Streamlit scrolls inside its main block, so grow the viewport to fit."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": page.viewport_size["width"], "height": max(1000, height)})
    wait_idle(page)
    page.screenshot(path=path)


def test_upload_move_noise_slider_and_see_predictions_update(tiny_weights_dir, photo_png, tmp_path):
    photo_path = tmp_path / "lesion.png"
    photo_path.write_bytes(photo_png)
    with (
        streamlit_server(tiny_weights_dir, tmp_path / "streamlit.log") as url,
        chromium_page() as page,
    ):
        open_with_photo(page, url, photo_path)
        assert page.locator(FAILURES).count() == 0
        slider = page.locator(NOISE_SLIDER)
        assert slider.get_attribute("aria-valuetext") == "0.0%"
        at_zero = page.evaluate(PREDICTIONS_SIGNATURE)

        slider.focus()
        assert press_and_wait_for_update(page, "ArrowRight") < 30
        for _ in range(19):
            page.keyboard.press("ArrowRight")
        assert slider.get_attribute("aria-valuetext") == "2.0%"
        page.get_by_text("2% salt-and-pepper (3:1)").first.wait_for()  # the answer line
        wait_idle(page)

        assert page.evaluate(PREDICTIONS_SIGNATURE) != at_zero
        assert "Corrupted:" in page.locator(".st-key-explore_answers").inner_text()
        assert page.locator(FAILURES).count() == 0
        save_screenshot(page, tmp_path / "explore.png")
        if target := os.environ.get("DERM_SCREENSHOT"):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            save_screenshot(page, Path(target))
    assert (tmp_path / "explore.png").stat().st_size > 10_000


# ---- a presenter's session ------------------------------------------------------------------

APP_HOSTS = {"127.0.0.1", "localhost"}
ONE_SCREEN = (  # what must be visible together, without scrolling, on a 1366x768 screen
    ".st-key-explore_noise",
    ".st-key-explore_blur",
    ".st-key-explore_views img",
    ".st-key-explore_answers",
)


def bottoms(page, selector: str) -> list[float]:
    """The bottom edge (px from the top of the viewport) of every element matching selector."""
    return page.evaluate(
        "(s) => [...document.querySelectorAll(s)].map(e => e.getBoundingClientRect().bottom)",
        selector,
    )


def clipped_texts(page, selector: str) -> list[str]:
    """Texts under selector whose box is narrower than their text (cut off with an ellipsis)."""
    return page.evaluate(
        """(s) => [...document.querySelectorAll(s)]
            .filter(e => e.offsetWidth > 0 && e.scrollWidth > e.clientWidth + 1)
            .map(e => e.innerText)""",
        selector,
    )


def test_a_presenters_session(tiny_weights_dir, tmp_path):
    """Samples out of the box; photo, controls, heatmaps and answers on one 1366x768 screen;
    the robustness curve shown twice; settings kept across pages; readable at 800 px; and no
    request to any host but the app's own."""
    requests = []
    with (
        streamlit_server(tiny_weights_dir, tmp_path / "streamlit.log") as url,
        chromium_page(width=1366, height=680) as page,  # 768 less the browser's bars
    ):
        page.on("request", lambda request: requests.append(request.url))
        page.goto(url)
        page.locator(f"{PREDICTIONS} svg text").first.wait_for()  # a shipped sample, explained
        wait_idle(page)
        sample = page.locator(".st-key-explore_sample input").input_value()
        assert sample.startswith("Acne · Roboflow")  # the first sample: true class and source
        for selector in ONE_SCREEN:
            edges = bottoms(page, selector)
            assert edges, selector
            assert max(edges) <= 680, (selector, edges)

        page.locator(NOISE_SLIDER).focus()
        for _ in range(30):
            page.keyboard.press("ArrowRight")
        page.get_by_text("3% salt-and-pepper (3:1)").first.wait_for()
        wait_idle(page)
        # the heatmap controls sit outside the live panel and rerun it alone (rerun_live)
        choose(page, "explore_target", "Blister (why not?)")
        page.get_by_text("evidence for Blister").first.wait_for()
        page.get_by_text("Compare all models").click()
        page.locator(".st-key-explore_models").get_by_text("evidence for Blister").first.wait_for()
        page.get_by_text("Compare all models").click()
        page.locator(".st-key-explore_models").wait_for(state="detached")
        wait_idle(page)
        for _ in range(2):  # the same curve twice: the second comes from the cache
            page.get_by_role("link", name="Robustness curve").click()
            page.get_by_text("Against Gaussian blur").wait_for()
            wait_idle(page)
            assert page.locator(FAILURES).count() == 0
            page.get_by_role("link", name="Explore").click()
            page.locator(f"{PREDICTIONS} svg text").first.wait_for()
            wait_idle(page)
            assert page.locator(NOISE_SLIDER).get_attribute("aria-valuetext") == "3.0%"

        page.set_viewport_size({"width": 800, "height": 900})
        wait_idle(page)
        page.wait_for_timeout(500)
        assert (
            clipped_texts(page, ".st-key-explore_answers p, [data-testid=stDownloadButton] p") == []
        )
        assert page.locator(FAILURES).count() == 0
        if target := os.environ.get("DERM_SCREENSHOT_800"):
            page.screenshot(path=target)

    hosts = {urllib.parse.urlsplit(u).hostname for u in requests if u.startswith("http")}
    assert requests and hosts <= APP_HOSTS, hosts - APP_HOSTS


# ---- a teaching session ---------------------------------------------------------------------


def choose(page, key: str, option: str) -> None:
    """Pick `option` in the selectbox keyed `key`."""
    page.locator(f".st-key-{key} input").click()
    page.get_by_role("option", name=option, exact=True).click()
    wait_idle(page)


def test_a_three_case_deck_from_start_to_tally(tiny_weights_dir, tmp_path):
    """Build a deck of three shipped samples, present it with the sidebar hidden and the notice
    in view, enter the room's guesses, reveal each case and end on the tally."""
    with (
        streamlit_server(tiny_weights_dir, tmp_path / "streamlit.log") as url,
        chromium_page(width=1366, height=680) as page,
    ):
        page.goto(url)
        page.locator(f"{PREDICTIONS} svg text").first.wait_for()
        wait_idle(page)
        page.get_by_role("link", name="Teaching").click()
        page.locator(".st-key-teaching_add button").wait_for()
        wait_idle(page)
        for preset in ("Paper noise 3%", "5×5 blur (paper)", "Noise 3% + 5×5 blur"):
            choose(page, "teaching_preset", preset)
            page.locator(".st-key-teaching_add button").click()
            wait_idle(page)
        page.get_by_text("The deck: 3 cases").wait_for()

        page.locator(".st-key-teaching_mode button", has_text="Present").click()
        page.get_by_text("Case 1 of 3").wait_for()
        wait_idle(page)
        assert not page.locator("[data-testid=stSidebar]").is_visible()
        assert (
            page.locator("[data-testid=stMain]").get_by_text("not a diagnostic device").is_visible()
        )
        for index, (guess, survives) in enumerate(
            (("Acne", "Yes"), ("Blister", "No"), ("Tumor", "Yes"))
        ):
            page.get_by_text(f"Case {index + 1} of 3").wait_for()
            choose(page, f"teaching_room_{index}_class", guess)
            page.locator(f".st-key-teaching_room_{index}_survives button", has_text=survives).click()  # fmt: skip
            wait_idle(page)
            page.locator(".st-key-teaching_reveal button").click()
            page.locator(".st-key-teaching_answers", has_text="Corrupted:").wait_for()
            wait_idle(page)
            assert page.locator(FAILURES).count() == 0
            page.locator(".st-key-teaching_next button").click()
            wait_idle(page)
        tally_panel = page.locator(".st-key-teaching_tally")
        tally_panel.get_by_text("Right survival calls: the room").wait_for()
        assert "Right class: the room" in tally_panel.inner_text()
        assert page.locator(FAILURES).count() == 0
        if target := os.environ.get("DERM_SCREENSHOT_TEACHING"):
            wait_idle(page)
            page.screenshot(path=target)


def test_your_photos_scores_an_uploaded_zip(tiny_weights_dir, tmp_path):
    """Your photos: open the page from the sidebar, drop a small zip, score, see every model."""
    from photo_zips import labelled_photos, zip_bytes

    archive = tmp_path / "clinic.zip"
    archive.write_bytes(zip_bytes(labelled_photos({"Acne": 3, "Urticaria": 2, "Psoriasis": 1})))
    with (
        streamlit_server(tiny_weights_dir, tmp_path / "streamlit.log") as url,
        chromium_page() as page,
    ):
        page.goto(url)
        # app.py's navigation (titles, not the legacy file-name list a fresh server shows first)
        page.locator(f"{PREDICTIONS} svg text").first.wait_for()  # the Explore page's sample
        page.locator("[data-testid=stSidebarNav]").get_by_text("Your photos", exact=True).click()
        page.get_by_text("Drop a zip with a folder of photos per class").wait_for()
        assert page.locator("[data-testid=stSidebar]").get_by_text("Model", exact=True).count()
        page.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(archive)
        page.get_by_text("Folder “Psoriasis” (1 photo) matches none of our ten classes").wait_for()
        page.locator(".st-key-photos_score button").click()
        page.get_by_role("tab", name="tiny-noise (test fixture)").wait_for()
        page.get_by_text("Balanced accuracy · sp_upto5").first.wait_for()
        page.get_by_role("button", name="Summary (JSON)").wait_for()  # the last thing drawn
        wait_idle(page)
        assert page.locator(FAILURES).count() == 0
        save_screenshot(page, tmp_path / "your-photos.png")
        if target := os.environ.get("DERM_SCREENSHOT_PHOTOS"):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            save_screenshot(page, Path(target))
    assert (tmp_path / "your-photos.png").stat().st_size > 10_000


def test_the_familiarity_badge_and_not_sure_in_the_browser(photo_png, tmp_path):
    """A model with familiarity statistics: its answer carries a badge, and under heavy noise
    'Not sure' takes the answer's place while the chart still shows the top classes."""
    from conftest import write_familiar_checkpoint

    weights = tmp_path / "weights"
    write_familiar_checkpoint(weights)
    photo_path = tmp_path / "lesion.png"
    photo_path.write_bytes(photo_png)
    with (
        streamlit_server(weights, tmp_path / "streamlit.log") as url,
        chromium_page(width=1366, height=680) as page,
    ):
        open_with_photo(page, url, photo_path)
        answers = page.locator(".st-key-explore_answers")
        assert answers.inner_text().count("familiar") >= 2
        slider = page.locator(NOISE_SLIDER)
        slider.focus()
        for _ in range(50):
            page.keyboard.press("ArrowRight")
        page.get_by_text("declines to answer instead of guessing").wait_for()
        page.wait_for_function(
            "(s) => document.querySelector(s)?.getAttribute('aria-valuetext') === '5.0%'",
            arg=NOISE_SLIDER,
        )
        wait_idle(page)
        assert "Corrupted: Not sure" in answers.inner_text()
        # plotly redraws its svg after Streamlit reports the run finished: wait for the bars
        page.locator(f"{PREDICTIONS} svg text").first.wait_for()
        assert page.locator(FAILURES).count() == 0
