"""Screenshots of the app with the shipped models and a shipped sample photo, for docs/ and for
looking at the app as a room would see it.

    .venv/bin/python scripts/screenshots.py --out docs            # 1366x680 (a 1366x768 screen) and 800x900
    .venv/bin/python scripts/screenshots.py --out /tmp/shots --full-page

Starts `streamlit run app.py` on a free local port with the shipped weights (tests/test_browser.py's
helpers, Debian's Chromium), opens each page, and writes <page>-<width>.png. A viewport shot shows
exactly what fits on the screen without scrolling; --full-page grows the viewport to the page.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_browser import (  # noqa: E402
    choose,
    chromium_page,
    save_screenshot,
    streamlit_server,
    wait_idle,
)

PAGES = {  # file stem -> (url path, text that shows the page has drawn)
    "explore": ("explore-photo", "evidence for"),
    "compare": ("explore-photo", "Compare all models"),  # Explore with that switch on
    "robustness": ("robustness-curve", "Against Gaussian blur"),
    "results": ("evaluation-results", "What to take away"),
    "model": ("model-and-data", "What it is"),
    "teaching": ("teaching-mode", "The deck:"),
}
# 1366x768 leaves about 680 px of page below a browser's bars; 800 px wide is a small window.
SIZES = ((1366, 680), (800, 900))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder (default: docs/)")
    parser.add_argument("--pages", nargs="+", default=list(PAGES), choices=list(PAGES))
    parser.add_argument(
        "--noise", type=int, default=20, help="noise slider steps of 0.1%% (default 20 = 2%%)"
    )
    parser.add_argument("--full-page", action="store_true", help="the whole page, not the viewport")  # fmt: skip
    return parser


def main(args: argparse.Namespace) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as scratch,
        streamlit_server(REPO / "weights", Path(scratch) / "streamlit.log") as url,
    ):
        for width, height in SIZES:
            with chromium_page(width, height) as page:
                page.goto(url)  # Explore is the default page
                page.get_by_text("evidence for").first.wait_for()
                wait_idle(page)
                if args.noise:
                    page.locator(".st-key-explore_noise input[type=range]").focus()
                    for _ in range(args.noise):
                        page.keyboard.press("ArrowRight")
                    wait_idle(page)
                    page.wait_for_timeout(1500)
                    wait_idle(page)
                # Teaching last: its presenter mode hides the sidebar and its links.
                for name in sorted(args.pages, key=lambda name: name == "teaching"):
                    path, ready = PAGES[name]
                    if name == "compare":
                        page.get_by_role("link", name="Explore").first.click()
                        page.get_by_text("Compare all models").click()
                        page.locator(".st-key-explore_models").wait_for()
                    elif name != "explore":
                        page.get_by_role("link", name=_link_name(name)).first.click()
                        page.get_by_text(ready).first.wait_for()
                    if name == "teaching":
                        present_a_revealed_case(page)
                    wait_idle(page)
                    page.wait_for_timeout(800)
                    target = args.out / f"{name}-{width}.png"
                    if args.full_page:
                        save_screenshot(page, target)
                        page.set_viewport_size({"width": width, "height": height})
                    else:
                        page.screenshot(path=target)
                    print(target)
                    if name == "compare":
                        page.get_by_text("Compare all models").click()
                        wait_idle(page)


def present_a_revealed_case(page) -> None:
    """Teaching in presenter mode: a two-case deck (the paper's 3% noise, its 5x5 blur) on the
    sample in use, the first case revealed."""
    wait_idle(page)
    for preset in ("Paper noise 3%", "5×5 blur (paper)"):
        choose(page, "teaching_preset", preset)
        page.locator(".st-key-teaching_add button").click()
        wait_idle(page)
    page.locator(".st-key-teaching_mode button", has_text="Present").click()
    page.get_by_text("Case 1 of 2").wait_for()
    wait_idle(page)
    page.locator(".st-key-teaching_reveal button").click()
    page.locator(".st-key-teaching_answers", has_text="Corrupted:").wait_for()


def _link_name(name: str) -> str:
    return {
        "robustness": "Robustness curve",
        "results": "Results",
        "model": "Model & data",
        "teaching": "Teaching",
    }[name]


if __name__ == "__main__":
    main(get_args_parser().parse_args())
