"""Resumable state of a seed's run: `last.pt` (written atomically after every epoch), every RNG
state it needs for a bit-identical continuation, and `metrics.jsonl` rewritten from it.

    save_state(run_dir / "last.pt", state)   state = load_state(run_dir / "last.pt")
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_FORMAT = 1


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous last.pt intact."""
    tmp = path.with_suffix(".pt.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    # weights_only=False: our own file, and it holds numpy and Python RNG states.
    return torch.load(path, map_location="cpu", weights_only=False)


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl, one line per finished epoch, rewritten from the checkpoint's history so it
    always matches last.pt (a kill between the two writes cannot duplicate or drop a line)."""
    tmp = run_dir / "metrics.jsonl.tmp"
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    os.replace(tmp, run_dir / "metrics.jsonl")
