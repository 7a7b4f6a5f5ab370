"""A complete, schema-valid manifest built by hand, for tests of code that reads manifests (engines, Triton, lint)
without exporting a model first."""
from __future__ import annotations

from segdeploy.artifact import (
    Axis,
    ExportInfo,
    Manifest,
    ModelInfo,
    Precision,
    Preprocessing,
    Profile,
    Range,
    TensorSpec,
    Weights,
)

SHA = "0" * 64


def sample_manifest(*, dynamic: bool = False, num_classes: int = 4, outputs: str = "logits",
                    preprocess: bool = False, precision: str = "fp32", flavour: str | None = None) -> Manifest:
    b, h, w = (1, 512, 512)
    if preprocess:
        shape = ["batch", "height", "width", 3] if dynamic else [b, h, w, 3]
        tensor_in = TensorSpec("image", "uint8", "NHWC", shape, channel_order="BGR", kind="image")
        spatial = {0: ("batch", 1, 1, 4), 1: ("height", 256, h, 1024), 2: ("width", 256, w, 1024)}
    else:
        shape = ["batch", 3, "height", "width"] if dynamic else [b, 3, h, w]
        tensor_in = TensorSpec("input", "float32", "NCHW", shape, channel_order="RGB", kind="image")
        spatial = {0: ("batch", 1, 1, 4), 2: ("height", 256, h, 1024), 3: ("width", 256, w, 1024)}
    if dynamic:
        tensor_in.dynamic_axes = [Axis(i, *v) for i, v in spatial.items()]
    if outputs == "mask":
        oshape = ["batch", "height", "width"] if dynamic else [b, h, w]
        tensor_out = TensorSpec("mask", "uint8", "NHW", oshape, kind="mask", stride=1)
        if dynamic:
            tensor_out.dynamic_axes = [Axis(0, "batch", 1, 1, 4), Axis(1, "height", 256, h, 1024),
                                       Axis(2, "width", 256, w, 1024)]
    else:
        oshape = ["batch", num_classes, "height/8", "width/8"] if dynamic else [b, num_classes, h // 8, w // 8]
        tensor_out = TensorSpec("logits", "float32", "NCHW", oshape, kind="logits", stride=8)
        if dynamic:
            tensor_out.dynamic_axes = [Axis(0, "batch", 1, 1, 4), Axis(2, "height/8", 32, h // 8, 128),
                                       Axis(3, "width/8", 32, w // 8, 128)]
    profile = Profile(Range(1, 1, 4), Range(256, h, 1024), Range(256, w, 1024), 32) if dynamic else \
        Profile(Range(b, b, b), Range(h, h, h), Range(w, w, w), 32)
    return Manifest(
        model=ModelInfo("cgrseg_t", "cgrseg", "T", num_classes, [f"class_{i}" for i in range(num_classes)],
                        [[i, 2 * i, 3 * i] for i in range(num_classes)]),
        weights=Weights("recipe", SHA, seed=0),
        precision=Precision(precision, flavour),
        inputs=[tensor_in], outputs=[tensor_out], profile=profile,
        preprocessing=Preprocessing(preprocess, [123.675, 116.28, 103.53], [58.395, 57.12, 57.375], "RGB", 32, False),
        export=ExportInfo(20, "torch.onnx TorchScript (dynamo=False)", dynamic, outputs, preprocess, True, "onnxslim",
                          {}, [], [], 10, 12, 5),
        graph_sha256=SHA, tool_versions={"segdeploy": "0.2.0"}, validation={"passed": True})


def embed_hashed(model, manifest: Manifest):
    """``model`` with ``manifest`` embedded, its graph_sha256 set to the graph's own hash (every reader checks it)."""
    from segdeploy.artifact.manifest_store import embed
    from segdeploy.artifact.onnx_file import graph_sha256

    return embed(model, manifest.replace(graph_sha256=graph_sha256(model)))
