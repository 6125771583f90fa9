"""The forward pass of `Predictor.embed` as an ONNX graph run by ONNX Runtime.

    graph = EmbeddingGraph.export(model, head, texture, cam, input_size, threads=1)
    logits, features, texture = graph(x)        # x: float32 (N, 3, S, S), normalised
    logits, activation = graph.run(x, ("logits", "activation"))

One graph gives what `Predictor.embed` reads from one forward pass: the logits, the classifier's
input (the penultimate features) and the texture statistics of the texture layer, and also the
CAM layer's output. On this 2-core CPU it runs EfficientNet-Lite0 at 224 px in about half the
time of PyTorch's eager forward pass with folded BatchNorm and channels-last weights, with the
same outputs to ~1e-5 (benchmarks/bench_sweep.py; tests/test_graph_runtime.py). The robustness
curve, photo sets and reports use it whole, and so does `Predictor.explain`'s Grad-CAM: above
the CAM layer the shipped models only average-pool and apply one linear layer, so Grad-CAM's
pooled gradients are that layer's weights for the class (Predictor._graph_gradcam), and the
CAM comes from the graph's CAM-layer output without autograd.

The graph is exported in memory from the model as loaded (after `fold_batchnorm`), so it can
never disagree with the weights file. Export takes about a second. The export uses torch's
TorchScript exporter: torch.export-based export would add onnxscript and takes longer.
"""

from __future__ import annotations

import io
import logging
import warnings

import numpy as np
import torch
from torch import nn

from dermcore.familiarity import texture_statistics
from dermcore.malloc import trim_freed_memory

log = logging.getLogger(__name__)
OUTPUTS = ("logits", "features", "texture", "activation")


class _Embedding(nn.Module):
    """model(x) -> (logits, the head's input, texture statistics of the texture layer, the CAM
    layer's output)."""

    def __init__(self, model: nn.Module, head: nn.Module, texture: nn.Module, cam: nn.Module):
        super().__init__()
        self.model, self.head, self.texture, self.cam = model, head, texture, cam

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        content: list[torch.Tensor] = []
        textures: list[torch.Tensor] = []
        activations: list[torch.Tensor] = []
        hooks = [
            self.head.register_forward_pre_hook(lambda module, inputs: content.append(inputs[0])),
            self.texture.register_forward_hook(
                lambda module, inputs, output: textures.append(texture_statistics(output))
            ),
            self.cam.register_forward_hook(
                lambda module, inputs, output: activations.append(output)
            ),
        ]
        try:
            logits = self.model(x)
        finally:
            for hook in hooks:
                hook.remove()
        return logits, content[0], textures[0], activations[0]


class EmbeddingGraph:
    """An ONNX Runtime session of `_Embedding`; thread-safe, like InferenceSession.run."""

    def __init__(self, onnx_model: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(onnx_model, options, providers=["CPUExecutionProvider"])
        self.threads = threads

    @classmethod
    def export(
        cls,
        model: nn.Module,
        head: nn.Module,
        texture: nn.Module,
        cam: nn.Module,
        input_size: int,
        threads: int = 1,
    ) -> EmbeddingGraph:
        """Export the model as it is now (eval mode, any batch size) and open a session."""
        buffer = io.BytesIO()
        probe = torch.zeros(2, 3, input_size, input_size)
        with warnings.catch_warnings(), torch.no_grad():
            # the TorchScript exporter warns that it is deprecated and that traced shapes are
            # constants; the batch dimension is declared dynamic below
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Embedding(model, head, texture, cam).eval(),
                (probe,),
                buffer,
                dynamo=False,
                input_names=["x"],
                output_names=list(OUTPUTS),
                dynamic_axes={name: {0: "batch"} for name in ("x", *OUTPUTS)},
                opset_version=17,
            )
        return cls(buffer.getvalue(), threads)

    def __call__(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 (N, 3, S, S) -> float32 logits (N, C), features (N, D), texture (N, E)."""
        logits, features, texture = self.run(x, OUTPUTS[:3])
        return logits, features, texture

    def run(self, x: torch.Tensor, outputs: tuple[str, ...] = OUTPUTS) -> list[np.ndarray]:
        """The named OUTPUTS of one run; only what they need is computed."""
        feed = {"x": np.ascontiguousarray(x.detach().float().numpy())}
        return self.session.run(list(outputs), feed)


def try_export(
    model: nn.Module,
    head: nn.Module,
    texture: nn.Module,
    cam: nn.Module,
    input_size: int,
    threads: int = 1,
) -> EmbeddingGraph | None:
    """EmbeddingGraph.export, or None (logged) where ONNX Runtime is missing or the export
    fails: the caller keeps PyTorch's forward pass, which gives the same answers."""
    try:
        graph = EmbeddingGraph.export(model, head, texture, cam, input_size, threads)
        trim_freed_memory()  # the exporter's scratch memory: ~30 MB that glibc would keep
        return graph
    except ImportError as error:
        log.info("ONNX Runtime is not installed (%s); using PyTorch for embed", error)
    except Exception as error:  # an exporter or runtime failure must not stop the app
        log.warning("could not export the model to ONNX (%s); using PyTorch for embed", error)
    return None
