"""Soak test: many browser sessions move Explore's sliders for minutes; any error fails the run.

    python -m benchmarks.soak [--sessions 20] [--duration 300]          # starts its own app
    python -m benchmarks.soak --url http://127.0.0.1:8501 [--server-pid PID]   # a running one
    python -m benchmarks.soak --sessions 3 --duration 20                # a quick check

Each session is a page in its own browser context of one headless Chromium (/usr/bin/chromium),
so each is its own Streamlit session. Every session uploads its own synthetic photo, then, until
--duration runs out, moves the noise slider (or, one move in five, the blur slider) one step in
a random direction, waits for the rerun it causes to finish (Streamlit's script_finished message
on the page's websocket) and the page to settle, pauses --think-ms, and moves again. Without
--url the app is started as benchmarks/bench_browser.py starts it, with randomly initialised
EfficientNet-Lite0 checkpoints at 224 px written to a temporary folder.

Errors, each counted: an exception or error box on a page ([data-testid=stException] or an
error alert), an HTTP 5xx response, an uncaught JavaScript error, a closed websocket, a run that
ends with a compile error, a move whose rerun does not finish within --stall-s, and (for an app
it started) a traceback in the server's log. The server's RSS (process tree, MB = 10^6 bytes) is
read at the start and the end of the soak and sampled every 0.2 s for the peak. Exit status 1 on
any error or a peak over --max-rss-mb, else 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from benchmarks.bench_memory import (
    BACKGROUND_ARGS,
    MB,
    TARGET_APP_MB,
    TESTS,
    RssSampler,
    load_app,
    new_session_page,
    server_process,
    tree_rss,
    upload_and_move,
    write_session_photos,
)

sys.path.insert(0, str(TESTS))

from test_browser import (  # noqa: E402
    CHROMIUM,
    FAILURES,
    IDLE,
    NOISE_SLIDER,
    chromium_browser,
    streamlit_server,
)

BLUR_SLIDER = ".st-key-explore_blur input[type=range]"
BLUR_SHARE = 0.2  # share of moves that go to the blur slider
SLIDER_STATE = """(selector) => {
    const slider = document.querySelector(selector);
    return [+slider.value, +slider.min, +slider.max];
}"""


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20, help="simulated sessions (default: 20)")
    parser.add_argument(
        "--duration", type=float, default=300, help="seconds of slider moves (default: 300)"
    )
    parser.add_argument(
        "--think-ms", type=float, default=300, help="pause after each update (default: 300)"
    )
    parser.add_argument(
        "--stall-s", type=float, default=60, help="an update slower than this is an error (60)"
    )
    parser.add_argument(
        "--max-rss-mb",
        type=float,
        default=TARGET_APP_MB,
        help=f"peak server RSS allowed, MB (default: {TARGET_APP_MB}, the 1.5 GB target)",
    )
    parser.add_argument(
        "--photo-side",
        type=int,
        default=4032,
        help="each session's JPEG photo, longer side in px, 4:3 (default: 4032, 12 MP)",
    )
    parser.add_argument("--url", help="a running app to soak instead of starting one")
    parser.add_argument(
        "--server-pid",
        type=int,
        help="with --url: the server's process id (default: the owner of the URL's port)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the moves (default: 0)")
    return parser


@dataclass
class Session:
    """One browser session and what it has seen."""

    index: int
    page: object
    runs_finished: int = 0  # script_finished messages received on its websocket
    pressed_at: float | None = None  # while a move waits for its rerun
    runs_before: int = 0  # runs_finished when the slider was moved
    next_move_at: float = 0.0
    latencies_s: list[float] = field(default_factory=list)


class Errors:
    """Every error seen, counted by kind, with the first few messages of each kind kept."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < 3:
            examples.append(" ".join(message.split())[:200])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def watch(session: Session, errors: Errors, closing: list[bool]) -> None:
    """Count finished runs, and every HTTP 5xx response, uncaught page error, compile error and
    websocket that closes mid-soak."""
    index = session.index

    def on_frame(payload: str | bytes) -> None:
        if isinstance(payload, str):
            return
        message = ForwardMsg.FromString(payload)
        if message.WhichOneof("type") == "script_finished":
            session.runs_finished += 1
            if message.script_finished == ForwardMsg.FINISHED_WITH_COMPILE_ERROR:
                errors.add("compile error", f"session {index}")

    def on_close(websocket) -> None:
        if not closing[0]:
            errors.add("websocket closed", f"session {index}: {websocket.url}")

    def on_websocket(websocket) -> None:
        websocket.on("framereceived", on_frame)
        websocket.on("close", on_close)

    def on_response(response) -> None:
        if response.status >= 500:
            errors.add("HTTP 5xx", f"session {index}: {response.status} {response.url}")

    page = session.page
    page.on("response", on_response)
    page.on("pageerror", lambda error: errors.add("page error", f"session {index}: {error}"))
    page.on("websocket", on_websocket)


def check_failures(session: Session, errors: Errors) -> None:
    failures = session.page.locator(FAILURES)
    if failures.count():
        errors.add("exception on page", f"session {session.index}: {failures.first.inner_text()}")


def move_a_slider(session: Session, rng: random.Random) -> None:
    """One step of the noise (or blur) slider, in a random direction that stays in range."""
    page = session.page
    selector = BLUR_SLIDER if rng.random() < BLUR_SHARE else NOISE_SLIDER
    value, low, high = page.evaluate(SLIDER_STATE, selector)
    step_up = value <= low or (value < high and rng.random() < 0.5)
    page.locator(selector).focus()
    session.runs_before = session.runs_finished
    session.pressed_at = time.monotonic()
    page.keyboard.press("ArrowRight" if step_up else "ArrowLeft")


def rerun_done(session: Session) -> bool:
    """The move's rerun has finished and the page has drawn it."""
    return session.runs_finished > session.runs_before and session.page.evaluate(IDLE)


def soak(sessions: list[Session], args: argparse.Namespace, errors: Errors) -> int:
    """Move sliders in every session until the time is up; returns the number of moves."""
    rng = random.Random(args.seed)
    moves = 0
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        for session in sessions:
            now = time.monotonic()
            if session.pressed_at is not None:
                if rerun_done(session):
                    session.latencies_s.append(now - session.pressed_at)
                    session.pressed_at = None
                    session.next_move_at = now + args.think_ms / 1000
                    check_failures(session, errors)
                elif now - session.pressed_at > args.stall_s:
                    errors.add("stalled", f"session {session.index}: no rerun in {args.stall_s} s")
                    session.pressed_at = None
                    check_failures(session, errors)
            elif now >= session.next_move_at:
                move_a_slider(session, rng)
                moves += 1
        sessions[0].page.wait_for_timeout(20)  # also delivers the websocket events
    finish = time.monotonic() + args.stall_s  # let the last moves finish, then look once more
    while any(s.pressed_at is not None for s in sessions) and time.monotonic() < finish:
        for session in sessions:
            if session.pressed_at is not None and rerun_done(session):
                session.latencies_s.append(time.monotonic() - session.pressed_at)
                session.pressed_at = None
        sessions[0].page.wait_for_timeout(50)
    for session in sessions:
        if session.pressed_at is not None:
            errors.add("stalled", f"session {session.index}: no rerun in {args.stall_s} s")
        check_failures(session, errors)
    return moves


def count_log_tracebacks(log_path: Path, errors: Errors) -> None:
    lines = log_path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines):
        if line.startswith("Traceback"):
            detail = next((x for x in lines[number + 1 :] if not x.startswith(" ")), "")
            errors.add("server traceback", detail)


def run(args: argparse.Namespace, url: str, server, folder: Path, errors: Errors) -> dict:
    photos = write_session_photos(folder, args.sessions, args.photo_side)
    closing = [False]
    sampler = RssSampler(server) if server is not None else contextlib.nullcontext()
    with chromium_browser(BACKGROUND_ARGS) as browser, sampler:
        sessions = [Session(index, new_session_page(browser)) for index in range(args.sessions)]
        for session in sessions:
            watch(session, errors, closing)
        pages = [session.page for session in sessions]
        load_app(pages, url)
        upload_and_move(pages, photos)
        for session in sessions:
            check_failures(session, errors)
        rss_start = tree_rss(server) if server is not None else None
        started = time.monotonic()
        moves = soak(sessions, args, errors)
        elapsed = time.monotonic() - started
        rss_end = tree_rss(server) if server is not None else None
        closing[0] = True
    latencies = [s for session in sessions for s in session.latencies_s]
    return {
        "moves": moves,
        "updates": len(latencies),
        "latencies": latencies,
        "elapsed": elapsed,
        "rss": (rss_start, rss_end, sampler.peak if server is not None else None),
    }


def main(args: argparse.Namespace) -> int:
    if not CHROMIUM.exists():
        print(f"needs Chromium at {CHROMIUM} (apt-get install chromium)")
        return 2
    errors = Errors()
    with tempfile.TemporaryDirectory(prefix="derm-soak-") as folder:
        folder = Path(folder)
        if args.url:
            server = (
                psutil.Process(args.server_pid) if args.server_pid else server_process(args.url)
            )
            result = run(args, args.url, server, folder, errors)
        else:
            from conftest import write_tiny_checkpoints

            write_tiny_checkpoints(folder / "weights", input_size=224)
            log_path = folder / "streamlit.log"
            with streamlit_server(folder / "weights", log_path) as url:
                server = server_process(url)
                result = run(args, url, server, folder, errors)
            count_log_tracebacks(log_path, errors)
    print_summary(args, result, errors, server is not None)
    rss_start, rss_end, peak = result["rss"]
    over = peak is not None and peak > args.max_rss_mb * MB
    return 1 if errors.total or over else 0


def print_summary(args: argparse.Namespace, result: dict, errors: Errors, measured: bool) -> None:
    latencies = sorted(result["latencies"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"soak: {args.sessions} sessions for {result['elapsed']:.0f} s, photos "
        f"{args.photo_side}x{args.photo_side * 3 // 4} px, think {args.think_ms:g} ms; "
        f"CPUs {os.cpu_count()}, load average {load:.1f}"
    )
    print(f"slider moves {result['moves']}, updates seen {result['updates']}", end="")
    if latencies:
        median_ms = statistics.median(latencies) * 1000
        p95_ms = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000
        print(
            f"; move -> rerun finished and drawn: median {median_ms:.0f} ms, "
            f"p95 {p95_ms:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
    else:
        print()
    rss_start, rss_end, peak = result["rss"]
    if measured:
        over = peak > args.max_rss_mb * MB
        print(
            f"server RSS MB: start {rss_start / MB:.0f}, end {rss_end / MB:.0f}, "
            f"peak {peak / MB:.0f} (target < {args.max_rss_mb:.0f}: {'MISS' if over else 'PASS'})"
        )
    else:
        print("server RSS: not measured (no process found for the URL; pass --server-pid)")
    print(f"errors: {errors.total}" + ("" if errors.total else " (PASS)"))
    for kind, count in errors.counts.items():
        print(f"  {kind}: {count}")
        for example in errors.examples[kind]:
            print(f"    {example}")


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
