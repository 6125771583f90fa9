"""glibc malloc settings for the two kinds of process this project runs (no-ops elsewhere).

The app (many sessions, one thread each, small batch-1 activations) wants freed photo buffers
returned to the system; the batch jobs (training, evaluation: one thread of work, activations of
tens to hundreds of MB per batch) want them kept. glibc does neither by default:

* App, `fix_mmap_threshold()`: glibc raises its mmap threshold (up to 32 MB) each time a big
  buffer is freed, after which decoded photos, resized copies and PNGs of one upload are carved
  from the heap of the session thread's arena and kept there once freed; twenty sessions kept
  ~37 MB each that no one referenced (benchmarks/bench_memory.py). A fixed 8 MB threshold sends
  every buffer of 8 MB or more (a decoded 12 MP photo is 36 MB, the 2048 px working copy 12 MB)
  straight to mmap and back to the system on free. The model's batch-1 activations stay below
  it (the largest, Lite0's expanded first stage, is 4.8 MB at 224 px; Lite2's 6.5 MB at 260 px),
  and a 32 MB trim threshold keeps one forward pass's worth of freed activations in the arena:
  with glibc's default 128 KB, every explanation (run on a fresh script thread, as Streamlit
  does) gave its memory back and faulted it in again, ~12,800 page faults and ~19 ms of system
  time per call, 1.7x slower (benchmarks/bench_explain.py, `fresh-thread` rows).
* Batch jobs, `keep_freed_memory()`: an activation over the threshold (the first convolution's
  output for 32 images at 192 px is 37 MB) is mapped fresh and unmapped on free, so every step
  page-faults and zeroes gigabytes and the training shows ~100% system time in `top`. With mmap
  off and trimming off, freed memory is reused: a training step is 1.65x (full network) to
  2.04x (head only) faster on the 2-core CPU (benchmarks/bench_train_step.py, README there). The heap then stays at
  the job's peak, which is the point.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, <malloc.h>
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
APP_MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024
APP_TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024


def mallopt(param: int, value: int) -> bool:
    """glibc's mallopt; False where the C library is not glibc (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    function.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(function(param, value))


def fix_mmap_threshold(
    threshold: int = APP_MMAP_THRESHOLD_BYTES, trim: int = APP_TRIM_THRESHOLD_BYTES
) -> bool:
    """For the app: buffers of `threshold` bytes or more go to mmap and back on free; up to
    `trim` bytes of freed memory stay at the top of each arena for the next forward pass."""
    return mallopt(M_MMAP_THRESHOLD, threshold) and mallopt(M_TRIM_THRESHOLD, trim)


def keep_freed_memory() -> bool:
    """For training and evaluation: no mmap, no trimming; freed memory is reused."""
    return mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)


def trim_freed_memory() -> bool:
    """glibc's malloc_trim(0): give every arena's free pages back to the system now. For one-off
    work that frees much more than a forward pass, like exporting a model to ONNX (~30 MB kept
    otherwise); False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):
        return False
    function.argtypes = [ctypes.c_size_t]
    return bool(function(0))
