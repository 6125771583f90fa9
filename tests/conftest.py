"""Shared fixtures: two tiny seeded checkpoints in a temporary weights folder, and a photo.

The checkpoints are randomly initialised EfficientNet-Lite0s with a 64-pixel input, so a forward
pass takes milliseconds on a CPU. Their metrics are fake and say so; they never touch weights/.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dermcore.checkpoint import ModelCard, save_checkpoint
from dermcore.models import build_model

TINY_MODELS = ("tiny-clean", "tiny-noise")


def write_tiny_checkpoints(directory: Path, input_size: int = 64) -> list[Path]:
    """Save the two fixture models (seeds 0 and 1) into `directory`; returns their card paths."""
    preprocessing = {"input_size": input_size, "resize_size": input_size, "mean": [0.5] * 3, "std": [0.5] * 3}  # fmt: skip
    paths = []
    for seed, name in enumerate(TINY_MODELS):
        torch.manual_seed(seed)
        model = build_model("efficientnet_lite0", pretrained=False)
        card = ModelCard(
            name=name,
            arch="efficientnet_lite0",
            title=f"{name} (test fixture)",
            preprocessing=preprocessing,
            metrics={
                "test": {"accuracy": 0.111 + seed / 10, "balanced_accuracy": 0.101 + seed / 10},
                "note": "FAKE values written by tests/conftest.py",
            },
            limitations=["Random weights: a test fixture, not a trained model."],
        )
        paths.append(save_checkpoint(model, card, directory))
    return paths


@pytest.fixture(scope="session")
def tiny_weights_dir(tmp_path_factory) -> Path:
    """A weights folder holding tiny-clean and tiny-noise; DERM_WEIGHTS_DIR points at it."""
    directory = tmp_path_factory.mktemp("weights")
    write_tiny_checkpoints(directory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DERM_WEIGHTS_DIR", str(directory))
        yield directory


def lesion_photo(seed: int = 0, height: int = 240, width: int = 320) -> np.ndarray:
    """uint8 HxWx3: skin-toned background with a darker, irregular, textured blob."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    angle = np.arctan2(ys - 0.5, xs - 0.5)
    radius = np.hypot((ys - 0.5) * 1.3, xs - 0.5)
    edge = 0.22 + 0.03 * np.sin(5 * angle + rng.uniform(0, 6))
    lesion = np.clip((edge - radius) / 0.03, 0, 1)[..., None]
    skin = np.array([224, 172, 150]) + rng.normal(0, 6, (height, width, 3))
    spot = np.array([120, 60, 55]) + rng.normal(0, 12, (height, width, 3))
    return np.clip(skin * (1 - lesion) + spot * lesion, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def photo_png() -> bytes:
    """The seeded synthetic lesion photo as PNG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(lesion_photo()).save(buffer, format="PNG")
    return buffer.getvalue()


def with_random_batchnorm_statistics(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fresh BatchNorm layers are identities (mean 0, variance 1, weight 1, bias 0), which would
    hide a wrong fold: give them seeded statistics and affine parameters of a trained network."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model.eval()


def write_familiar_checkpoint(directory: Path, name: str = "tiny-aware") -> Path:
    """A tiny model (seed 0, 64 px) with familiarity statistics fitted on seeded synthetic
    lesion photos (40 'training', 30 'validation') and an abstention threshold of 0.05: it
    answers on lesion-like photos and declines on flat colours and noise."""
    from dermcore.checkpoint import load_checkpoint, save_familiarity
    from dermcore.explain import Predictor
    from dermcore.familiarity import FamiliarityStats
    from dermcore.labels import NUM_CLASSES

    directory.mkdir(parents=True, exist_ok=True)
    source = write_tiny_checkpoints(directory / "source")[0]
    model, card = load_checkpoint(source)
    preprocessing = card.get_preprocessing()
    predictor = Predictor(model, card.arch, preprocessing)

    def batch(seeds: range) -> np.ndarray:
        return np.stack(
            [preprocessing.to_input_resolution(lesion_photo(s, 96, 128)) for s in seeds]
        )

    _, *train = predictor.embed(batch(range(40)))
    _, *val = predictor.embed(batch(range(100, 130)))
    val_confidence = predictor.predict(batch(range(100, 130))).max(axis=1)
    stats = FamiliarityStats.fit(
        train, np.arange(40) % NUM_CLASSES, val, val_confidence, NUM_CLASSES, "blocks.2"
    )
    card.name, card.title = name, f"{name} (test fixture with familiarity)"
    card.abstention = {"threshold": 0.05, "confidence_min": 0.0}
    card_path = save_checkpoint(model, card, directory)
    save_familiarity(stats, card, card_path, fitted_on="synthetic test photos")
    return card_path
