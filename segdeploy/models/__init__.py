"""Model zoo: ``create(name)`` builds a registered variant, optionally with the authors' checkpoint."""
from __future__ import annotations

import importlib
import os

from torch import nn

from segdeploy.errors import CheckpointError, SegdeployError
from segdeploy.models.checkpoints import infer_num_classes, load_into, read_state_dict
from segdeploy.models.registry import ModelSpec, PaperFigures, get_spec, list_models, register
from segdeploy.recipe import seeded_state_dict

# One module per family; importing it registers its variants.
_FAMILIES = ("segnext", "lrformer", "cgrseg", "offseg")
for _family in _FAMILIES:
    importlib.import_module(f"segdeploy.models.{_family}")

__all__ = ["ModelSpec", "PaperFigures", "create", "get_spec", "list_models", "load_recipe_weights", "option_allowed",
           "register"]


def create(name: str, num_classes: int | None = None, checkpoint: str | os.PathLike | None = None,
           **options) -> nn.Module:
    """Build model ``name`` in eval mode; with ``checkpoint``, load the authors' weights strictly.

    ``num_classes`` defaults to the checkpoint's classifier width, else to the spec's (150, ADE20K). ``options``
    are family-specific (e.g. SegNeXt's ``nmf_bases="fixed"``); unknown ones are an error.
    """
    spec = get_spec(name)
    state = None
    if checkpoint is not None:
        state = read_state_dict(checkpoint)
        if spec.checkpoint_filter is not None:
            state = spec.checkpoint_filter(state)
        found = infer_num_classes(state, spec.classifier_key)
        if num_classes is None:
            num_classes = found
        elif found is not None and found != num_classes:
            raise CheckpointError(f"checkpoint {checkpoint} has {found} classes but num_classes={num_classes} "
                                  "was asked for")
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "none"
        raise SegdeployError(f"{name} has no option {unknown[0]!r}; options: {allowed}")
    for key, value in options.items():
        choices = spec.option_choices.get(key, (spec.options[key],))
        if not option_allowed(value, choices):
            raise SegdeployError(f"{name}: option {key}={value!r} is not one of its values ({_describe(choices)})")
    model = spec.builder(num_classes=num_classes or spec.num_classes, **{**spec.options, **options})
    model.spec = spec
    model.num_classes = num_classes or spec.num_classes
    if state is not None:
        load_into(model, state, origin=f"checkpoint {os.fspath(checkpoint)}")
    return model.eval()


def option_allowed(value, choices) -> bool:
    """``value`` is one of ``choices``, type included (True == 1 in Python, but an int is no switch)."""
    if isinstance(choices, range):
        return type(value) is int and value in choices
    return any(type(value) is type(c) and value == c for c in choices)


def _describe(choices) -> str:
    if isinstance(choices, range):
        return f"integers {choices.start}-{choices.stop - 1}"
    return ", ".join(repr(c) for c in choices)


def load_recipe_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill ``model`` with the deterministic golden-recipe weights (see segdeploy.recipe)."""
    load_into(model, seeded_state_dict(model, seed), origin="recipe weights")
    return model
