"""The deploy form of a model: the export switches and the graph wrappers, shared by export and the torch runner.

A registered model becomes deployable in two steps, both decided here so that the ONNX exporter and the PyTorch
reference (the torch runner, validate) build exactly the same module:

* **Export switches** (``EXPORT_SWITCHES``) are ordinary builder options that put a family in its export form
  (SegNeXt's NMF bases frozen, shape-derived pooling for dynamic graphs). An artifact records the ones it used.
* **DeployGraph** wraps the segmentor so the artifact's input and output are what a deployment wants:
  ``preprocess=True`` takes uint8 (N, H, W, 3) BGR images (OpenCV's layout) and normalises them in the graph (the
  resize stays outside: its policy depends on the original image size, so the manifest records it instead);
  ``outputs="mask"`` resizes the logits to the input size and emits the argmax as uint8 labels when the classes fit
  (MMDeploy emits int64 (N, 1, H, W); a quarter of the bytes matters when the output is a whole image).

Both wrappers are written in the op forms TensorRT accepts: it has no UINT8 Transpose and documents uint8 casts
only from and to float32/float16, so the image is cast before its transpose and the argmax goes int64 -> float32 ->
uint8 (exact: class indices are small integers).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from segdeploy import models
from segdeploy.errors import SegdeployError
from segdeploy.models.checkpoints import checkpoint_dataset_meta, state_dict_sha256
from segdeploy.preprocess import UINT8_MASK_MAX_CLASSES

OUTPUT_KINDS = ("logits", "mask")
RECIPE_SEED = 0

# Builder options that put a family in its export form: option -> (value for static graphs, for dynamic graphs,
# the hazard it removes). Applied only to the families whose spec has the option.
EXPORT_SWITCHES = {
    "nmf_bases": ("fixed", "fixed",
                  "SegNeXt NMF: bases drawn once from a fixed seed and frozen (no RandomUniform), computed in float32"),
    "dynamic_shapes": (False, True,
                       "EfficientFormerV2 attention-bias tables resized with an exact bicubic Resize from the runtime "
                       "shape (dynamic) or folded to constants of the traced size (static); pyramid pools as "
                       "averaging matrices from the runtime shape (dynamic)"),
    "dynamic_pooling": (False, True,
                        "LRFormer adaptive pools as exact averaging-matrix MatMuls whose sizes come from the runtime "
                        "shape (dynamic) or are constants of the traced size (static)"),
}


def export_options(spec, dynamic: bool) -> dict:
    """The builder options that make ``spec``'s family exportable (static or dynamic)."""
    return {key: (dynamic_value if dynamic else static_value)
            for key, (static_value, dynamic_value, _) in EXPORT_SWITCHES.items() if key in spec.options}


def export_hazards(spec, options: dict) -> list[str]:
    notes = [note for key, (_, _, note) in EXPORT_SWITCHES.items() if key in options]
    return notes + list(spec.export_notes)


def mask_dtype(num_classes: int) -> torch.dtype:
    return torch.uint8 if num_classes <= UINT8_MASK_MAX_CLASSES else torch.int64


class NormalizeImage(nn.Module):
    """uint8 (N, H, W, 3) BGR -> float32 (N, 3, H, W) normalised, exactly as segdeploy.preprocess.prepare does."""

    def __init__(self, mean, std, channel_order: str = "RGB"):
        super().__init__()
        if channel_order not in ("RGB", "BGR"):
            raise SegdeployError(f"channel order must be RGB or BGR, not {channel_order!r}")
        self.channel_order = channel_order
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(self.mean.dtype).permute(0, 3, 1, 2)  # cast first: TensorRT has no UINT8 Transpose
        if self.channel_order == "RGB":
            x = x.flip(1)  # OpenCV gives BGR
        # subtract then divide (not a folded scale/shift) so the graph matches the NumPy preprocessing bit for bit
        return (x - self.mean) / self.std


class LogitsToMask(nn.Module):
    """(N, K, h, w) logits -> (N, H, W) labels at the input size: bilinear resize, then argmax over classes."""

    def __init__(self, num_classes: int, align_corners: bool = False):
        super().__init__()
        self.dtype = mask_dtype(num_classes)
        self.align_corners = align_corners

    def forward(self, logits: torch.Tensor, size) -> torch.Tensor:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
        labels = logits.argmax(dim=1)
        if self.dtype == torch.uint8:
            labels = labels.float()  # TensorRT casts to uint8 only from float32/float16
        return labels.to(self.dtype)


class DeployGraph(nn.Module):
    """A segmentor with the deployment's input and output around it (see the module docstring)."""

    def __init__(self, model: nn.Module, outputs: str = "logits", preprocess: bool = False):
        super().__init__()
        if outputs not in OUTPUT_KINDS:
            raise SegdeployError(f"--outputs must be one of {', '.join(OUTPUT_KINDS)}, not {outputs!r}")
        spec = model.spec
        self.model = model
        self.output_kind = outputs
        self.normalize = NormalizeImage(spec.mean, spec.std, spec.channel_order) if preprocess else None
        self.to_mask = LogitsToMask(model.num_classes, spec.align_corners) if outputs == "mask" else None

    @property
    def spec(self):
        return self.model.spec

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def input_name(self) -> str:
        return "image" if self.normalize is not None else "input"

    @property
    def output_name(self) -> str:
        return self.output_kind

    @property
    def input_dtype(self) -> str:
        return "uint8" if self.normalize is not None else "float32"

    @property
    def output_dtype(self) -> str:
        return "float32" if self.to_mask is None else str(self.to_mask.dtype).removeprefix("torch.")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            x = self.normalize(x)
        logits = self.model(x)
        if self.to_mask is None:
            return logits
        return self.to_mask(logits, x.shape[-2:])

    def example_input(self, batch: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
        """A deterministic input of the graph's layout and dtype."""
        generator = torch.Generator().manual_seed(seed)
        if self.normalize is not None:
            return torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=generator)
        return torch.randn((batch, 3, height, width), generator=generator)


def build_deploy_graph(model_name: str, *, checkpoint=None, dynamic: bool = False, outputs: str = "logits",
                       preprocess: bool = False, options: dict | None = None) -> tuple[DeployGraph, dict]:
    """The eager module that gets exported (and that the torch runner and validate run as the reference), plus a
    record of its weights: source, sha256, the options used, and the class names and palette a checkpoint carries
    (mmseg's ``meta.dataset_meta``) or None."""
    spec = models.get_spec(model_name)
    options = export_options(spec, dynamic) if options is None else dict(options)
    model = models.create(model_name, checkpoint=checkpoint, **options)
    dataset_meta = None
    if checkpoint is None:
        models.load_recipe_weights(model, seed=RECIPE_SEED)
        source = {"source": "recipe", "seed": RECIPE_SEED, "file": None,
                  "note": "deterministic golden-recipe weights (segdeploy.recipe), not trained weights"}
    else:
        source = {"source": "checkpoint", "file": os.path.basename(os.fspath(checkpoint)), "seed": None, "note": ""}
        dataset_meta = checkpoint_dataset_meta(checkpoint)
    # eval() after loading, as the originals were run (no family keeps a stale cache: see the golden tests)
    model.eval()
    weights = {**source, "sha256": state_dict_sha256(model), "options": options, "dataset_meta": dataset_meta}
    return DeployGraph(model, outputs=outputs, preprocess=preprocess).eval(), weights
