"""Predict and explain: one `Predictor` owns a model for inference and answers with plain results.

Fast Grad-CAM. pytorch-grad-cam's `GradCAM` backpropagates from the logit through the whole
network (its parameters require grad), which costs two to three forward passes. Grad-CAM only
needs d logit / d A at the CAM layer A, so here a forward hook replaces A by a detached leaf that
requires grad. With every parameter frozen (`requires_grad_(False)`) nothing below A builds an
autograd graph, and `torch.autograd.grad(logit, A)` walks only the small head (pool + linear).
One forward pass then gives the prediction and the CAM; the post-processing is pytorch-grad-cam's,
so the maps are the same (tests/test_explain.py checks it against `GradCAM`). With the ONNX
graph (`use_graph_runtime`) not even that backward pass is needed: the head is average pooling
and one linear layer, whose gradient is the class's weights over h*w (`_graph_gradcam`).

The other methods (Grad-CAM++, XGrad-CAM, Eigen-CAM, Layer-CAM, Score-CAM) are pytorch-grad-cam's
classes run with the same leaf hook, so their gradients stop at the CAM layer too.

Familiarity and abstention (`assess`, and `explain` for one photo) come from the same forward
pass: a forward pre-hook on the classifier records its input (the pooled penultimate features)
and a forward hook on an early block records its activation statistics; `dermcore.familiarity`
scores both against the training statistics stored with the checkpoint.

A `Predictor` is shared by every Streamlit session: the model is read-only, and a lock guards
every forward pass and every hook on it.
"""

from __future__ import annotations

import copy
import logging
import numbers
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from dermcore.corruptions import CorruptionSpec, corrupt_for_model
from dermcore.familiarity import FamiliarityStats, abstention_score, texture_statistics
from dermcore.graph_runtime import EmbeddingGraph, try_export
from dermcore.imageio import ImageLoadError, load_image, rgb_from_pil
from dermcore.labels import CLASSES
from dermcore.models import fold_batchnorm, get_arch, get_module
from dermcore.preprocessing import Preprocessing

if TYPE_CHECKING:
    from dermcore.checkpoint import ModelCard

log = logging.getLogger(__name__)

# What predict, predict_logits, embed and assess take: one photo, a batch of photos of one size,
# or a list of photos of any sizes (each brought to the input size as the app does); a photo is
# a uint8 (H, W, 3) RGB array or a Pillow image in any mode.
PhotoFile = str | os.PathLike
Images = np.ndarray | Image.Image | PhotoFile | Sequence[np.ndarray | Image.Image | PhotoFile]

# Method key -> display name. "gradcam" is the fast path in this module; the rest are
# pytorch-grad-cam classes (see _LIBRARY_CLASSES).
METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "xgradcam": "XGrad-CAM",
    "eigencam": "Eigen-CAM",
    "layercam": "Layer-CAM",
    "scorecam": "Score-CAM",
}
_LIBRARY_CLASSES = {
    "gradcam++": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "eigencam": "EigenCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
}
# Score-CAM runs one forward pass per CAM-layer channel (1280 for EfficientNet-Lite0), each on the
# input masked by that channel; a small batch bounds the memory of those masked copies.
_SCORECAM_BATCH_SIZE = 8


@dataclass(frozen=True)
class Explanation:
    """What the model said about one input image, and where it looked."""

    probabilities: np.ndarray  # float32 (C,), sums to 1, softmax(logits / temperature)
    logits: np.ndarray  # float32 (C,), raw model outputs
    cam: np.ndarray  # float32 (H, W) in [0, 1], at the model input resolution
    target: int  # the class index the CAM explains
    method: str  # key of METHODS
    input_image: np.ndarray  # uint8 (H, W, 3), the exact model input that was explained
    # validation percentile in [0, 1] (dermcore.familiarity); NaN for a model without statistics
    familiarity: float = float("nan")
    abstain: bool = False  # True: show "Not sure" in place of the answer (see Predictor.assess)

    @property
    def top_class(self) -> int:
        return int(np.argmax(self.probabilities))

    @property
    def top_probability(self) -> float:
        return float(self.probabilities[self.top_class])


@dataclass(frozen=True)
class Assessment:
    """What the model said about N images and whether it should have answered."""

    probabilities: np.ndarray  # float32 (N, C), softmax(logits / temperature), rows sum to 1
    familiarity: np.ndarray  # float64 (N,) in [0, 1], validation percentile; NaN without stats
    abstain: np.ndarray  # bool (N,): True where the model declines to answer
    # float64 (N,) in [0, 1]: min(familiarity, confidence percentile), higher = answer more
    # readily; abstain = score < the card's threshold. NaN for a model without statistics.
    score: np.ndarray

    @property
    def top_classes(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """float32 (N,) calibrated top probability."""
        return self.probabilities.max(axis=1)


class Predictor:
    """A model owned for inference: eval mode, every parameter frozen, every PyTorch use under a
    lock (ONNX Runtime sessions are thread-safe: `use_graph_runtime`).

    The model passed in is changed in place (eval, requires_grad False, channels-last weights)
    and must not be trained or hooked by anyone else afterwards. `cam_layer` and `head_layer` override the
    architecture's CAM layer and classifier (dotted module paths); they exist for custom models.

    Abstention: with `familiarity` statistics the model abstains where min(familiarity,
    confidence percentile) < `abstain_below`; without them, where the calibrated top
    probability < `confidence_min`; with neither threshold it never abstains.
    """

    def __init__(
        self,
        model: nn.Module,
        arch: str,
        preprocessing: Preprocessing | None = None,
        temperature: float = 1.0,
        classes: Sequence[str] = CLASSES,
        card: ModelCard | None = None,
        cam_layer: str | None = None,
        familiarity: FamiliarityStats | None = None,
        abstain_below: float | None = None,
        confidence_min: float | None = None,
        head_layer: str | None = None,
    ) -> None:
        spec = get_arch(arch)
        if not (isinstance(temperature, numbers.Real) and 0 < temperature < float("inf")):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        if len(classes) < 2:
            raise ValueError(f"need at least two class names, got {list(classes)}")
        # Channels-last weights: convolutions ~1.2x faster at batch 1 and ~1.8x at batch 64 on
        # this CPU (EfficientNet-Lite0, 224 px; benchmarks/bench_explain.py), same answers.
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.model.requires_grad_(False)
        self.arch = arch
        self.temperature = float(temperature)
        self.classes = tuple(classes)
        self.card = card
        self.cam_layer = cam_layer or spec.cam_layer
        try:
            self._cam_module = get_module(model, self.cam_layer)
        except (AttributeError, IndexError):
            raise ValueError(f"the model has no layer {self.cam_layer!r} to explain") from None
        self._head_module = _find_module(model, head_layer or spec.head)
        texture_layer = familiarity.texture_layer if familiarity else spec.texture_layer
        self._texture_module = _find_module(model, texture_layer) if texture_layer else None
        if familiarity is not None and (self._head_module is None or self._texture_module is None):
            raise ValueError(
                f"the model lacks the classifier {head_layer or spec.head!r} or the texture "
                f"layer {texture_layer!r} that its familiarity statistics read"
            )
        self.familiarity_stats = familiarity
        self.abstain_below = None if abstain_below is None else float(abstain_below)
        self.confidence_min = None if confidence_min is None else float(confidence_min)
        self._preprocessing = preprocessing or spec.preprocessing
        self._lock = threading.Lock()
        self._graph: EmbeddingGraph | None = None  # use_graph_runtime
        self._graph_explains = False  # explain's Grad-CAM reads the CAM layer from the graph

    def use_graph_runtime(self, threads: int = 1) -> bool:
        """Run `embed`, `assess`, `predict` and `predict_logits` as an ONNX graph in ONNX
        Runtime (dermcore/graph_runtime.py): the same outputs to ~1e-5, about twice as fast on
        a CPU at batch 1. `explain`'s Grad-CAM then comes from the graph alone (_graph_gradcam)
        where the classifier is a linear layer on the average-pooled CAM layer and a probe
        photo gives the same logits and CAM as PyTorch; the other CAM methods stay in PyTorch.
        Call it after the model is final (after `fold_batchnorm`); False, with PyTorch kept,
        where ONNX Runtime is missing or the export fails."""
        if self._head_module is None or self._texture_module is None:
            return False
        with self._lock:
            self._graph = try_export(
                self.model,
                self._head_module,
                self._texture_module,
                self._cam_module,
                self.input_size,
                threads,
            )
        self._graph_explains = self._graph is not None and self._graph_gradcam_agrees()
        return self._graph is not None

    def _graph_gradcam_agrees(self) -> bool:
        """Grad-CAM from the graph's CAM-layer output against PyTorch's, on a seeded probe."""
        if not isinstance(self._head_module, nn.Linear):
            return False
        probe = np.random.default_rng(0).integers(
            0, 256, (self.input_size, self.input_size, 3), dtype=np.uint8
        )
        x = self._preprocessing.to_tensor(probe)
        try:
            ours, theirs = self._graph_gradcam(x, None), self._fast_gradcam(x, None)
        except (RuntimeError, ValueError) as error:  # the graph or the head could not run it
            log.warning("Grad-CAM stays in PyTorch: %s", error)
            return False
        agree = (
            ours[2] == theirs[2]
            and torch.allclose(ours[0], theirs[0], rtol=0, atol=1e-4)
            and np.allclose(ours[1], theirs[1], rtol=0, atol=1e-4)
        )
        if not agree:
            log.warning("Grad-CAM stays in PyTorch: the graph's CAM layer output disagrees")
        return agree

    @property
    def runtime(self) -> str:
        """'onnxruntime' when use_graph_runtime took, else 'torch' (what embed runs on)."""
        return "torch" if self._graph is None else "onnxruntime"

    @classmethod
    def from_checkpoint(
        cls, card_path: str | Path, graph_runtime: bool = False, threads: int = 1
    ) -> Predictor:
        """A predictor for a verified checkpoint, with its card's preprocessing and temperature.
        Its BatchNorm layers are folded into their convolutions (`fold_batchnorm`): the same
        answers to float rounding, ~1.3x faster on a CPU. With `graph_runtime`, the forward pass
        runs in ONNX Runtime with `threads` intra-op threads, and Grad-CAM reads its layer from
        it (`use_graph_runtime`)."""
        from dermcore.checkpoint import load_checkpoint, load_familiarity

        model, card = load_checkpoint(card_path)
        fold_batchnorm(model, probe_size=card.get_preprocessing().input_size)
        predictor = cls(
            model,
            card.arch,
            card.get_preprocessing(),
            temperature=card.temperature,
            classes=card.classes,
            card=card,
            familiarity=load_familiarity(card, Path(card_path).parent),
            abstain_below=card.abstention.get("threshold"),
            confidence_min=card.abstention.get("confidence_min"),
        )
        if graph_runtime:
            predictor.use_graph_runtime(threads)
        return predictor

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    def with_preprocessing(self, preprocessing: Preprocessing) -> Predictor:
        """The same model, card and lock under another preprocessing (the app's impulse-filter
        switch). The two share one lock, so they never run the model at the same time."""
        if not isinstance(preprocessing, Preprocessing):
            raise ValueError(
                f"preprocessing must be a Preprocessing, got {type(preprocessing).__name__}"
            )
        twin = copy.copy(self)
        twin._preprocessing = preprocessing
        return twin

    @property
    def input_size(self) -> int:
        return self._preprocessing.input_size

    def prepare(
        self, photo: np.ndarray, spec: CorruptionSpec | None = None, where: str = "input"
    ) -> np.ndarray:
        """uint8 HxWx3 photo -> uint8 (input_size, input_size, 3) model input, corrupted by spec
        (at the input resolution or on the full photo, see `corrupt_for_model`)."""
        if spec is None or spec.is_identity:
            return self._preprocessing.to_input_resolution(photo)
        return corrupt_for_model(photo, spec, self._preprocessing, where)

    def predict_logits(self, images: Images, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, H, W, 3), (H, W, 3), or a list of photos (uint8 (H, W, 3) arrays or Pillow
        images) of any sizes -> float32 (N, C) logits.

        Images not at input_size x input_size go through `to_input_resolution` first. The lock is
        taken per batch, so other sessions get a turn during a long sweep.
        """
        batch = self._input_batch(images)
        _check_batch_size(batch_size)
        logits = np.empty((len(batch), len(self.classes)), dtype=np.float32)
        for start in range(0, len(batch), batch_size):
            x = self._preprocessing.to_tensor(batch[start : start + batch_size])
            if self._graph is not None:  # thread-safe: no lock
                out = self._checked(torch.from_numpy(self._graph(x)[0]))
                logits[start : start + len(x)] = out.numpy()
                continue
            with self._lock, torch.inference_mode():
                logits[start : start + len(x)] = self._checked(self.model(x)).numpy()
        return logits

    def predict(self, images: Images, batch_size: int = 64) -> np.ndarray:
        """uint8 (N, H, W, 3), (H, W, 3), or a list of photos (uint8 (H, W, 3) arrays or Pillow
        images) of any sizes -> float32 (N, C) probabilities, softmax(logits / T)."""
        return self._softmax(torch.from_numpy(self.predict_logits(images, batch_size))).numpy()

    def embed(
        self, images: Images, batch_size: int = 64
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images as for `predict` -> float32 logits (N, C), penultimate features
        (N, D) (the classifier's input) and texture statistics (N, E) (of the texture layer, see
        dermcore.familiarity), from one forward pass per batch."""
        if self._head_module is None or self._texture_module is None:
            raise ValueError("the model has no classifier or texture layer to read features from")
        batch = self._input_batch(images)
        _check_batch_size(batch_size)
        logits, features, texture = [], [], []
        for start in range(0, len(batch), batch_size):
            x = self._preprocessing.to_tensor(batch[start : start + batch_size])
            if self._graph is not None:  # thread-safe: no lock
                for out, part in zip((logits, features, texture), self._graph(x), strict=True):
                    out.append(part)
                continue
            with self._lock, torch.inference_mode(), self._recording(True) as (content, textures):
                logits.append(self._checked(self.model(x)).numpy())
            features.append(content[0].float().numpy())
            texture.append(textures[0].numpy())
        return np.concatenate(logits), np.concatenate(features), np.concatenate(texture)

    def assess(self, images: Images, batch_size: int = 64) -> Assessment:
        """Images as for `predict` -> probabilities, familiarity and abstention, from
        one forward pass per batch (see the class docstring for the abstention rule)."""
        if self.familiarity_stats is None:
            logits = torch.from_numpy(self.predict_logits(images, batch_size))
            return self._assessment(logits, None)
        return self.assessment_from(*self.embed(images, batch_size))

    def assessment_from(
        self, logits: np.ndarray, features: np.ndarray | None, texture: np.ndarray | None
    ) -> Assessment:
        """What `assess` returns, from outputs already computed by `embed` (raw logits (N, C),
        features (N, D), texture (N, E); features and texture may be None without stats).
        Reports use it on cached features; the rule stays here, in one place."""
        views = None
        if features is not None and texture is not None:
            views = (torch.from_numpy(features), torch.from_numpy(texture))
        return self._assessment(torch.from_numpy(np.asarray(logits)), views)

    def _assessment(
        self, logits: torch.Tensor, views: tuple[torch.Tensor, torch.Tensor] | None
    ) -> Assessment:
        """views = (penultimate features (N, D), texture statistics (N, E)) or None."""
        probabilities = self._softmax(logits).numpy()
        confidence = probabilities.max(axis=1)
        stats = self.familiarity_stats
        if stats is None or views is None:
            nan = np.full(len(probabilities), np.nan)
            threshold = -np.inf if self.confidence_min is None else self.confidence_min
            return Assessment(probabilities, nan, confidence < threshold, nan.copy())
        familiarity = stats.familiarity(*views)
        threshold = -np.inf if self.abstain_below is None else self.abstain_below
        score = abstention_score(familiarity, stats.confidence_percentile(confidence), threshold)
        return Assessment(probabilities, familiarity, score < threshold, score)

    def explain(
        self, image: np.ndarray, target: int | str | None = None, method: str = "gradcam"
    ) -> Explanation:
        """Predict one uint8 HxWx3 image and explain `target` (None = the predicted class; a
        class index or name) with `method` (a key of METHODS). The image goes through
        `to_input_resolution` unless it is already input_size x input_size."""
        if method not in METHODS:
            raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
        if not isinstance(image, np.ndarray) or image.ndim != 3:
            raise ValueError(
                f"expected one uint8 HxWx3 image, got {getattr(image, 'shape', image)!r}"
            )
        target_index = None if target is None else self._target_index(target)
        image = np.array(self._input_batch(image)[0])  # a private copy: the caller keeps theirs
        x = self._preprocessing.to_tensor(image)  # (1, 3, H, W)
        if method == "gradcam" and self._graph_explains:
            logits, cam, target_index, views = self._graph_gradcam(x, target_index)
        elif method == "gradcam":
            logits, cam, target_index, views = self._fast_gradcam(x, target_index)
        else:
            logits, cam, target_index, views = self._library_cam(x, target_index, method)
        assessment = self._assessment(logits[None], views)
        return Explanation(
            probabilities=assessment.probabilities[0],
            logits=logits.numpy(),
            cam=cam,
            target=target_index,
            method=method,
            input_image=image,
            familiarity=float(assessment.familiarity[0]),
            abstain=bool(assessment.abstain[0]),
        )

    def _fast_gradcam(
        self, x: torch.Tensor, target: int | None
    ) -> tuple[torch.Tensor, np.ndarray, int, tuple | None]:
        """(logits (C,), CAM (H, W), target, familiarity views of _first_views)."""
        with (
            self._lock,
            _graph_starts_at(self._cam_module) as leaves,
            self._recording(self.familiarity_stats is not None) as recorded,
            torch.inference_mode(False),
            torch.enable_grad(),
        ):
            logits = self._checked(self.model(x))  # (1, C); graph only from the CAM layer up
            target = int(logits[0].argmax()) if target is None else target
            (activation,) = leaves  # (1, K, h, w)
            (gradient,) = torch.autograd.grad(logits[0, target], activation)
        # The rest is BaseCAM.compute_cam_per_layer with GradCAM.get_cam_weights, in numpy as
        # there, so the result matches pytorch-grad-cam to float rounding.
        activations = activation.detach().numpy()
        weights = np.mean(gradient.numpy(), axis=(2, 3))  # (1, K): pooled gradients
        cam = (weights[:, :, None, None] * activations).sum(axis=1)[0]  # (h, w)
        cam = _scale_like_grad_cam(cam, x.shape[-2:])
        return logits.detach()[0], cam, target, _first_views(recorded)

    def _graph_gradcam(
        self, x: torch.Tensor, target: int | None
    ) -> tuple[torch.Tensor, np.ndarray, int, tuple | None]:
        """_fast_gradcam from one graph run, no autograd. With a linear classifier on the
        average-pooled CAM layer (logits = W mean(A) + b), the gradient of logit c with respect
        to A is W[c] / (h w) at every position, so Grad-CAM's pooled gradients are W[c] / (h w).
        use_graph_runtime checks this holds for the model (_graph_gradcam_agrees). About 2 ms
        sooner per explanation than running the classifier and its gradient in PyTorch."""
        logits, features, texture, activation = self._graph.run(x)
        logits = self._checked(torch.from_numpy(logits))[0]
        target = int(logits.argmax()) if target is None else target
        height, width = activation.shape[-2:]
        weights = self._head_module.weight[target].numpy() / (height * width)  # (K,)
        cam = np.tensordot(weights, activation[0], axes=1)  # (h, w)
        cam = _scale_like_grad_cam(cam, x.shape[-2:])
        views = None
        if self.familiarity_stats is not None:
            views = (torch.from_numpy(features), torch.from_numpy(texture))
        return logits, cam, target, views

    def _library_cam(
        self, x: torch.Tensor, target: int | None, method: str
    ) -> tuple[torch.Tensor, np.ndarray, int, tuple | None]:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam_class = getattr(pytorch_grad_cam, _LIBRARY_CLASSES[method])
        targets = None if target is None else [ClassifierOutputTarget(target)]
        # Our leaf hook is registered before the library's hooks, so they record the leaf and
        # its gradient, and their backward pass also stops at the CAM layer.
        with (
            self._lock,
            _graph_starts_at(self._cam_module),
            # [0]: the library's first forward, on x
            self._recording(self.familiarity_stats is not None) as recorded,
            torch.inference_mode(False),
            torch.enable_grad(),
        ):
            cam_method = cam_class(self.model, [self._cam_module])
            try:
                cam_method.batch_size = _SCORECAM_BATCH_SIZE  # read by ScoreCAM only
                cam = cam_method(x, targets=targets)[0]  # float32 (H, W) in [0, 1]
                logits = self._checked(cam_method.outputs.detach())[0]
            finally:
                # not their __exit__: it swallows IndexError and prints it
                cam_method.activations_and_grads.release()
        target = int(logits.argmax()) if target is None else target  # what the library used
        cam = np.asarray(cam, dtype=np.float32)
        return logits, cam, target, _first_views(recorded)

    @contextmanager
    def _recording(self, needed: bool) -> Iterator[tuple[list[torch.Tensor], list[torch.Tensor]]]:
        """While active, every forward call appends the classifier's input (N, D) and the
        texture statistics (N, E) to the two yielded lists (they stay empty without those
        layers, or when not `needed`: no hook then). Take the lock first: the hooks see every
        caller's forward passes."""
        head, texture = (self._head_module, self._texture_module) if needed else (None, None)
        with _inputs_of(head) as content, _texture_of(texture) as textures:
            yield content, textures

    def _target_index(self, target: int | str) -> int:
        if isinstance(target, str):
            if target not in self.classes:
                raise ValueError(
                    f"unknown class {target!r}; expected one of {', '.join(self.classes)}"
                )
            return self.classes.index(target)
        if isinstance(target, bool) or not isinstance(target, numbers.Integral):
            raise ValueError(f"target must be a class index or name, got {target!r}")
        if not 0 <= target < len(self.classes):
            raise ValueError(f"target {target} is out of range for {len(self.classes)} classes")
        return int(target)

    def _input_batch(self, images: Images) -> np.ndarray:
        """uint8 (H, W, 3), uint8 (N, H, W, 3), a Pillow image, an image file's path, or a list
        or tuple of uint8 (H, W, 3) RGB photos, Pillow images (any mode, upright by EXIF) or
        paths (read as the app reads an upload: dermcore.imageio.load_image) of any sizes ->
        uint8 (N, S, S, 3) at the input size S. Errors name the shape and dtype, never the
        pixels."""
        if isinstance(images, Image.Image | str | os.PathLike):
            images = [images]
        if isinstance(images, list | tuple):
            if not images:
                raise ValueError("expected at least one image, got an empty sequence")
            inputs = []
            for k, image in enumerate(images):  # one at a time: a list of 12 MP photos is large
                if isinstance(image, str | os.PathLike):
                    photo = _read_photo(image, k)
                else:
                    photo = rgb_from_pil(image) if isinstance(image, Image.Image) else image
                if not _is_photo(photo):
                    raise ValueError(
                        f"image {k}: expected a uint8 (H, W, 3) RGB array, a Pillow image or a "
                        f"file path, got {_describe(photo)}"
                    )
                inputs.append(self._at_input_size(photo))
            return np.stack(inputs)
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images, got {_describe(images)}")
        if images.ndim not in (3, 4) or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3) or (H, W, 3), got {images.shape}")
        if images.ndim == 3:
            images = images[None]
        if min(images.shape[:3]) == 0:
            raise ValueError(f"expected at least one image with pixels, got {images.shape}")
        size = self.input_size
        if images.shape[1:3] == (size, size):
            return images
        return np.stack([self._preprocessing.to_input_resolution(i) for i in images])

    def _at_input_size(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == (self.input_size, self.input_size):
            return image
        return self._preprocessing.to_input_resolution(image)

    def _checked(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[1] != len(self.classes):
            raise ValueError(
                f"the model returned shape {tuple(logits.shape)} but there are "
                f"{len(self.classes)} class names"
            )
        return logits

    def _softmax(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float() / self.temperature, dim=-1)


def _check_batch_size(batch_size: object) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def _read_photo(path: str | os.PathLike, k: int) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) RGB, upright, as the app reads an upload."""
    try:
        return load_image(Path(path).read_bytes())
    except (OSError, ImageLoadError) as error:
        raise ValueError(f"image {k}: cannot be read: {error}") from error


def _is_photo(image: object) -> bool:
    return (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[-1] == 3
        and min(image.shape[:2]) > 0
    )


def _describe(value: object) -> str:
    """'uint16 array of shape (4, 4, 3)' or 'str': enough to fix the call, no pixel values."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


@contextmanager
def _graph_starts_at(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While active, `layer`'s output is swapped for a detached copy that requires grad, so the
    autograd graph begins there. Yields the list of those leaves, one per forward call; the hook
    is removed on exit, also on an exception."""
    leaves: list[torch.Tensor] = []

    def make_leaf(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    handle = layer.register_forward_hook(make_leaf)
    try:
        yield leaves
    finally:
        handle.remove()


def _first_views(
    recorded: tuple[list[torch.Tensor], list[torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor] | None:
    content, texture = recorded
    return (content[0], texture[0]) if content and texture else None


@contextmanager
def _texture_of(layer: nn.Module | None) -> Iterator[list[torch.Tensor]]:
    """While active, records texture_statistics of every output of `layer` (none when None)."""
    captured: list[torch.Tensor] = []
    if layer is None:
        yield captured
        return

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        captured.append(texture_statistics(output))

    handle = layer.register_forward_hook(record)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def _inputs_of(layer: nn.Module | None) -> Iterator[list[torch.Tensor]]:
    """While active, records the (detached) first input of every forward call of `layer`; yields
    that list. No hook when layer is None. The hook is removed on exit, also on an exception."""
    captured: list[torch.Tensor] = []
    if layer is None:
        yield captured
        return

    def record(module: nn.Module, inputs: tuple) -> None:
        captured.append(inputs[0].detach())

    handle = layer.register_forward_pre_hook(record)
    try:
        yield captured
    finally:
        handle.remove()


def _find_module(model: nn.Module, dotted: str) -> nn.Module | None:
    try:
        return get_module(model, dotted)
    except (AttributeError, IndexError):
        return None


def _scale_like_grad_cam(cam: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """float (h, w) weighted activations -> float32 (H, W) in [0, 1], size = (H, W).

    pytorch-grad-cam's exact order: relu, min-max normalise, bilinear resize (compute_cam_per_layer
    -> scale_cam_image), then relu and min-max normalise again (aggregate_multi_layers).
    """
    height, width = size
    cam = cv2.resize(np.float32(_min_max(np.maximum(cam, 0))), (width, height))
    return np.float32(_min_max(np.maximum(cam, 0)))


def _min_max(cam: np.ndarray) -> np.ndarray:
    cam = cam - np.min(cam)
    return cam / (1e-7 + np.max(cam))  # the epsilon of scale_cam_image: a flat map stays 0


def overlay(
    image: np.ndarray, cam: np.ndarray, alpha: float = 0.5, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """uint8 HxWx3 RGB image + CAM in [0, 1] -> new uint8 HxWx3 RGB, (1 - alpha) * image +
    alpha * colour-mapped CAM. The CAM is resized (bilinear) to the image when shapes differ and
    clipped to [0, 1]; alpha in [0, 1]."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"image must be uint8 HxWx3, got {getattr(image, 'shape', image)!r}")
    if image.shape[2] != 3:
        raise ValueError(f"image must be uint8 HxWx3, got shape {image.shape}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2 or not np.isfinite(cam).all():
        raise ValueError(f"cam must be a finite 2-D map, got shape {cam.shape}")
    height, width = image.shape[:2]
    if cam.shape != (height, width):
        cam = cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR)
    levels = np.rint(np.clip(cam, 0, 1) * 255).astype(np.uint8)
    heatmap = cv2.cvtColor(cv2.applyColorMap(levels, colormap), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - float(alpha), heatmap, float(alpha), 0.0)


@dataclass(frozen=True)
class CamShift:
    """How far a CAM moved between two views of an image (clean vs corrupted, say)."""

    correlation: float  # Pearson r over pixels, in [-1, 1]; 1 = same map up to scale and offset
    top_iou: float  # IoU of the two top-`top_fraction` regions, in [0, 1]; 1 = same hot spot
    shift: float  # 1 - correlation clipped to [0, 1]: 0 = unchanged, 1 = unrelated or inverted


def cam_shift(cam_a: np.ndarray, cam_b: np.ndarray, top_fraction: float = 0.2) -> CamShift:
    """Compare two CAMs of the same shape (float, any range; usually in [0, 1]).

    A flat map has no defined correlation: two flat maps count as r = 1 (neither points
    anywhere, nothing moved), one flat map against a non-flat one as r = 0. The top region of a
    map is every pixel at or above its (1 - top_fraction) quantile; ties can make it larger.
    """
    a = np.asarray(cam_a, dtype=np.float64)
    b = np.asarray(cam_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two 2-D maps of one shape, got {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the CAMs must be finite")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
    a_centred, b_centred = a - a.mean(), b - b.mean()
    norm = np.sqrt(np.sum(a_centred**2) * np.sum(b_centred**2))
    if norm > 0:
        correlation = float(np.clip(np.sum(a_centred * b_centred) / norm, -1.0, 1.0))
    else:
        correlation = 1.0 if np.ptp(a) == 0 and np.ptp(b) == 0 else 0.0
    top_a = a >= np.quantile(a, 1 - top_fraction)
    top_b = b >= np.quantile(b, 1 - top_fraction)
    top_iou = float(np.sum(top_a & top_b) / np.sum(top_a | top_b))
    return CamShift(correlation, top_iou, float(1.0 - np.clip(correlation, 0.0, 1.0)))
