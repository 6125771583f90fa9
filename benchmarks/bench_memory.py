"""How much memory the app holds: over many explanations, and with many sessions open at once.

    python -m benchmarks.bench_memory [--calls 1000] [--sessions 20] [--photo-side 4032]
    python -m benchmarks.bench_memory --calls 100 --sessions 4       # a quick check

Resident set size (RSS, from psutil; for a process tree, the sum over its processes), in MB of
10^6 bytes, of two processes built from freshly written, randomly initialised EfficientNet-Lite0
checkpoints at 224 px (the shipped model's architecture and input, so activations and weights
take what the real model's take; written to a temporary folder and deleted afterwards):

    explain loop   a fresh Python process (no Streamlit) loads the checkpoint as the app does and
                   calls Predictor.explain --calls times, each on a differently corrupted input,
                   made as Explore makes its corrupted view. Its RSS right after loading the model
                   is the baseline. Growth from after --warmup calls to the end: target <= 5%.
    app            `streamlit run app.py` on localhost: RSS once it answers, after the first page
                   load, after one session's upload and slider move, then with --sessions
                   sessions open at once (headless Chromium, one browser context each), every one
                   with its own synthetic photo uploaded and the noise slider moved: target
                   < 1.5 GB. The peak is sampled every 0.2 s. Needs /usr/bin/chromium.

Every reading is taken after the work is done and idle; the explain loop runs the garbage
collector first, so only memory still referenced, or not returned to the system, counts.
--calls 0 or --sessions 0 skips that part.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

import psutil
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
MB = 1e6
TARGET_GROWTH = 0.05  # explain loop: RSS growth from warm to the end
TARGET_APP_MB = 1500  # 1.5 GB, the app with --sessions sessions
INPUT_SIZE = 224
BLUR_KERNELS = (1, 3, 5)
# Pages in other browser contexts count as hidden: keep Chromium from throttling their timers.
BACKGROUND_ARGS = [
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
UPLOAD_INPUT = "[data-testid=stFileUploaderDropzoneInput]"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--calls", type=int, default=1000, help="explain calls in the loop (default: 1000)"
    )
    parser.add_argument(
        "--warmup", type=int, default=50, help="calls before the warm reading (default: 50)"
    )
    parser.add_argument(
        "--sessions", type=int, default=20, help="browser sessions open at once (default: 20)"
    )
    parser.add_argument(
        "--photo-side",
        type=int,
        default=4032,
        help="each session's JPEG photo, longer side in px, 4:3 (default: 4032, 12 MP)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="DERM_TORCH_THREADS for both processes (default: the environment's, else 1)",
    )
    parser.add_argument("--explain-worker", type=Path, help=argparse.SUPPRESS)
    return parser


# ---- shared with benchmarks/soak.py -------------------------------------------------------


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in `process` and all its descendants (0 once it has exited)."""
    total = 0
    try:
        processes = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += member.memory_info().rss
    return total


class RssSampler:
    """Samples tree_rss(process) every `interval_s` in a thread, keeping the peak."""

    def __init__(self, process: psutil.Process, interval_s: float = 0.2) -> None:
        self.process, self.interval_s, self.peak = process, interval_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.process))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def server_process(url: str) -> psutil.Process | None:
    """The process serving `url` on this machine: a child of ours whose command line names the
    port (as tests/test_browser.streamlit_server starts it), else the owner of the listening
    socket (may need root to see another user's), else None."""
    port = urllib.parse.urlsplit(url).port
    if port is None:
        return None
    for child in psutil.Process().children(recursive=True):
        try:
            if str(port) in child.cmdline():
                return child
        except psutil.Error:
            continue
    try:
        connections = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for connection in connections:
        listening = connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
        if listening and connection.pid:
            return psutil.Process(connection.pid)
    return None


def write_session_photos(folder: Path, count: int, side: int) -> list[Path]:
    """`count` different synthetic 4:3 JPEG photos (quality 90) in `folder`: never real ones."""
    from PIL import Image

    from benchmarks.bench_sweep import synthetic_photo

    paths = []
    for index in range(count):
        path = folder / f"synthetic-{index:02d}.jpg"
        Image.fromarray(synthetic_photo(side, seed=index)).save(path, quality=90)
        paths.append(path)
    return paths


def wait_until(page, expression: str, arg=None, timeout_s: float = 180) -> None:
    """page.wait_for_function polling every 100 ms (rAF polling can stall in pages that do not
    have the focus)."""
    page.wait_for_function(expression, arg=arg, polling=100, timeout=timeout_s * 1000)


def load_app(pages: Sequence, url: str) -> None:
    """Open the app in every page (all requests first, then the waits) until Explore shows its
    first sample's predictions."""
    from test_browser import PREDICTIONS

    for page in pages:
        page.goto(url, wait_until="commit")
    for page in pages:
        page.locator(f"{PREDICTIONS} svg text").first.wait_for()


def upload_and_move(pages: Sequence, photos: Sequence[Path]) -> None:
    """Upload each page's photo, then move each noise slider one step; each stage is started in
    every page before waiting for any, so the server works on them at once. Returns when every
    page shows the moved slider's predictions and is idle."""
    from test_browser import IDLE, NOISE_SLIDER, PREDICTIONS, PREDICTIONS_SIGNATURE

    for page, photo in zip(pages, photos, strict=True):
        page.locator(".st-key-explore_source button", has_text="Upload").click()
        page.locator(UPLOAD_INPUT).set_input_files(photo)
    for page, photo in zip(pages, photos, strict=True):
        width, height = Image.open(photo).size
        page.get_by_text(f"{width}×{height} px", exact=True).wait_for()
    drawn = f"() => !!document.querySelector('{PREDICTIONS} svg text') && ({IDLE})()"
    for page in pages:
        wait_until(page, drawn)
    before = [page.evaluate(PREDICTIONS_SIGNATURE) for page in pages]
    for page in pages:
        page.locator(NOISE_SLIDER).focus()
        page.keyboard.press("ArrowRight")
    changed = f"(old) => ({PREDICTIONS_SIGNATURE})() !== old && ({IDLE})()"
    for page, old in zip(pages, before, strict=True):
        wait_until(page, changed, old)


def new_session_page(browser, timeout_s: float = 180):
    """A page in a browser context of its own: its own cookies, its own Streamlit session."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    return page


# ---- the explain loop (runs in a fresh process) -------------------------------------------


def explain_loop(card_path: Path, calls: int, warmup: int) -> dict:
    """RSS after imports, after loading the model, after `warmup` calls and at every tenth of
    the calls. Each call explains a differently corrupted 224 px view of one photo."""
    import torch

    from benchmarks.bench_sweep import synthetic_photo
    from dermcore.corruptions import CorruptionSpec, apply_corruption
    from dermcore.explain import Predictor

    process = psutil.Process()

    def rss() -> int:
        gc.collect()
        return process.memory_info().rss

    value = os.environ.get("DERM_TORCH_THREADS", "1")  # as ui/common.torch_threads reads it
    torch.set_num_threads(max(1, int(value)) if value.isdigit() else 1)
    readings = {"imported": rss()}
    predictor = Predictor.from_checkpoint(card_path)
    readings["loaded"] = rss()
    clean = predictor.prepare(synthetic_photo(1024, seed=0))
    marks = {max(1, calls * tenth // 10) for tenth in range(1, 11)}
    trajectory = []
    seconds = 0.0  # in the calls only, not in the readings
    for call in range(1, calls + 1):
        spec = CorruptionSpec(
            noise_density=(1 + call % 50) / 1000,
            blur_kernel=BLUR_KERNELS[call % len(BLUR_KERNELS)],
            seed=call,
        )
        started = time.perf_counter()
        predictor.explain(apply_corruption(clean, spec))
        seconds += time.perf_counter() - started
        if call == warmup:
            readings["warm"] = rss()
        if call in marks:
            trajectory.append((call, rss()))
    readings["end"] = rss()
    readings["peak"] = _peak_rss()
    return {
        "readings": readings,
        "trajectory": trajectory,
        "seconds": seconds,
        "threads": torch.get_num_threads(),
    }


def _peak_rss() -> int:
    """The process's peak RSS so far (ru_maxrss is in KiB on Linux)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_explain_loop(card_path: Path, calls: int, warmup: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.bench_memory", "--explain-worker",
               str(card_path), "--calls", str(calls), "--warmup", str(warmup)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the explain loop failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


# ---- the app ------------------------------------------------------------------------------


def measure_app(weights_dir: Path, folder: Path, sessions: int, photo_side: int) -> dict:
    """RSS of a real `streamlit run app.py` process tree at each stage, and its peak."""
    from test_browser import chromium_browser, streamlit_server

    photos = write_session_photos(folder, sessions, photo_side)
    readings = {}
    with streamlit_server(weights_dir, folder / "streamlit.log") as url:
        server = server_process(url)
        readings["started"] = tree_rss(server)
        with RssSampler(server) as sampler, chromium_browser(BACKGROUND_ARGS) as browser:
            pages = [new_session_page(browser) for _ in range(sessions)]
            load_app(pages[:1], url)
            time.sleep(1)  # let the first run's last messages go out
            readings["first page"] = tree_rss(server)
            upload_and_move(pages[:1], photos[:1])
            readings["one session"] = tree_rss(server)
            started = time.perf_counter()
            load_app(pages[1:], url)
            upload_and_move(pages[1:], photos[1:])
            seconds = time.perf_counter() - started
            time.sleep(1)
            readings["sessions"] = tree_rss(server)
        readings["peak"] = sampler.peak
    photo_mb = sum(p.stat().st_size for p in photos) / len(photos) / MB
    return {"readings": readings, "seconds": seconds, "photo_mb": photo_mb}


# ---- report -------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def print_table(rows: list[tuple[str, float | None, str, str]]) -> None:
    print(f"{'measurement':<60}{'RSS MB':>9}  {'target':<16}{'verdict':<7}")
    for name, value, target, outcome in rows:
        shown = "-" if value is None else f"{value / MB:.0f}"
        print(f"{name:<60}{shown:>9}  {target:<16}{outcome:<7}")


def main(args: argparse.Namespace) -> int:
    if args.explain_worker is not None:
        print(json.dumps(explain_loop(args.explain_worker, args.calls, args.warmup)))
        return 0
    sys.path.insert(0, str(TESTS))
    from conftest import write_tiny_checkpoints
    from test_browser import CHROMIUM

    if args.sessions and not CHROMIUM.exists():
        print(f"needs Chromium at {CHROMIUM} (apt-get install chromium), or --sessions 0")
        return 2
    if args.calls and not 0 < args.warmup < args.calls:
        print("--warmup must be at least 1 and below --calls")
        return 2
    if args.torch_threads is not None:
        os.environ["DERM_TORCH_THREADS"] = str(args.torch_threads)  # read by both processes
    rows: list[tuple[str, float | None, str, str]] = []
    notes = []
    with tempfile.TemporaryDirectory(prefix="derm-bench-memory-") as folder:
        folder = Path(folder)
        card_path = write_tiny_checkpoints(folder / "weights", input_size=INPUT_SIZE)[0]
        if args.calls:
            loop = run_explain_loop(card_path, args.calls, args.warmup)
            r = loop["readings"]
            growth = (r["end"] - r["warm"]) / r["warm"]
            rows += [
                ("bare process: python + torch + dermcore imported", r["imported"], "", ""),
                ("bare process after model load (baseline)", r["loaded"], "", ""),
                (f"explain loop: after {args.warmup} warm-up calls", r["warm"], "", ""),
                (f"explain loop: after {args.calls} calls", r["end"], "growth <= 5%",
                 verdict(growth <= TARGET_GROWTH)),
                ("explain process: peak RSS (ru_maxrss, model load included)", r["peak"], "", ""),
            ]  # fmt: skip
            steps = ", ".join(f"{call}: {rss / MB:.0f}" for call, rss in loop["trajectory"])
            notes += [
                f"explain loop: growth {growth:+.2%} from call {args.warmup} to {args.calls}, "
                f"{1000 * loop['seconds'] / args.calls:.0f} ms per call, "
                f"torch threads {loop['threads']}",
                f"explain loop RSS MB by call: {steps}",
            ]
        if args.sessions:
            app = measure_app(folder / "weights", folder, args.sessions, args.photo_side)
            r = app["readings"]
            per_session = (
                (r["sessions"] - r["one session"]) / (args.sessions - 1)
                if args.sessions > 1
                else None
            )
            rows += [
                ("app: streamlit run app.py answering, no page yet", r["started"], "", ""),
                ("app: after the first page load (model loaded)", r["first page"], "", ""),
                ("app: one session, photo uploaded + slider moved", r["one session"], "", ""),
                (f"app: {args.sessions} sessions, each photo + slider", r["sessions"],
                 f"< {TARGET_APP_MB / 1000:g} GB", verdict(r["sessions"] < TARGET_APP_MB * MB)),
                (f"app: peak while opening the {args.sessions} sessions", r["peak"], "", ""),
            ]  # fmt: skip
            notes.append(
                f"app: photos {args.photo_side}x{args.photo_side * 3 // 4} px JPEG, "
                f"{app['photo_mb']:.1f} MB each; {args.sessions - 1} sessions opened together in "
                f"{app['seconds']:.0f} s"
                + (f"; about {per_session / MB:.0f} MB per extra session" if per_session else "")
            )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"memory (RSS, MB = 10^6 bytes): efficientnet_lite0 at {INPUT_SIZE} px, random weights; "
        f"CPUs {os.cpu_count()}, load average {load:.1f}"
    )
    print_table(rows)
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    status = main(get_args_parser().parse_args())
    if "--explain-worker" not in sys.argv:
        print(f"(benchmark took {time.perf_counter() - started:.0f} s)")
    sys.exit(status)
