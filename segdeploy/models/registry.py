"""Model registry: one ModelSpec per variant, holding everything except the weights.

Family modules call :func:`register` at import time with a builder and the variant's metadata; the rest of
segdeploy (export, validate, bench, the CLI) reads models only through :func:`create` and :func:`get_spec`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from torch import nn

from segdeploy.errors import UnknownModelError
from segdeploy.models import ade20k

# mmsegmentation's ADE20K data preprocessor: RGB order, ImageNet statistics on the 0..255 scale.
ADE_MEAN = (123.675, 116.28, 103.53)
ADE_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class PaperFigures:
    params_m: float | None = None
    flops_g_512: float | None = None
    miou_ade: float | None = None
    throughput: tuple[dict, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class FloatModule:
    """A module an INT8 flavour leaves in float, and why (what was measured or what breaks)."""
    module: str  # dotted module path, e.g. "decode_head.freqfusions" (its children included)
    flavours: tuple[str, ...] | None  # the INT8 flavours it applies to (segdeploy.flavours names); None: every one
    reason: str

    def applies_to(self, flavour: str) -> bool:
        return self.flavours is None or flavour in self.flavours


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    variant: str
    builder: Callable[..., nn.Module] = field(repr=False, compare=False)
    num_classes: int = 150
    mean: tuple[float, float, float] = ADE_MEAN
    std: tuple[float, float, float] = ADE_STD
    channel_order: str = "RGB"
    input_size: tuple[int, int] = (512, 512)
    size_multiple: int = 32
    output_stride: int = 8
    align_corners: bool = False
    classifier_key: str = "decode_head.conv_seg.weight"
    source_config: str = ""
    notes: str = ""
    # Export hazards the family's code handles whatever the options; recorded so the artifact says how.
    export_notes: tuple[str, ...] = ()
    # Modules INT8 leaves in float for this family, per flavour (found by profiling the family's graphs).
    int8_float_modules: tuple[FloatModule, ...] = ()
    # Maps a foreign checkpoint layout (e.g. mmseg 1.x) onto this implementation's keys; identity by default.
    checkpoint_filter: Callable[[dict], dict] | None = field(default=None, repr=False, compare=False)
    # Options accepted by the builder, with their defaults, so the CLI can show and pass them.
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    # The values each option may take (anything with ``in``); an option without an entry takes its default only.
    option_choices: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def paper(self) -> PaperFigures:
        return paper_figures(self.name)

    def class_names(self, num_classes: int | None = None) -> tuple[str, ...]:
        return ade20k.class_names(num_classes or self.num_classes)

    def palette(self, num_classes: int | None = None) -> tuple[tuple[int, int, int], ...]:
        return ade20k.palette(num_classes or self.num_classes)


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def list_models(family: str | None = None) -> list[str]:
    return [name for name, spec in _REGISTRY.items() if family is None or spec.family == family]


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(f"unknown model {name!r}; known models: {known}") from None


_PAPER_CACHE: dict[str, Any] = {}


def paper_figures(name: str) -> PaperFigures:
    if not _PAPER_CACHE:
        text = resources.files("segdeploy.models").joinpath("paper_figures.json").read_text()
        _PAPER_CACHE.update(json.loads(text))
    row = _PAPER_CACHE["models"].get(name)
    if row is None:
        return PaperFigures()
    throughput = tuple(t for t in _PAPER_CACHE["throughput"] if t["model"] == name)
    return PaperFigures(params_m=row.get("params_m"), flops_g_512=row.get("flops_g_512"),
                        miou_ade=row.get("miou_ade"), throughput=throughput, source=row.get("source", ""))
