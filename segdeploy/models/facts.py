"""What an artifact's manifest says about a registered model, checked against the registry: the family and variant,
the preprocessing the model was trained with, the model options and their allowed values. A manifest that names a
registered model but not its facts was written for another model or edited; trusting it would prepare images with
the wrong statistics or build a reference from an option value nobody checked (``nmf_rank=1e8`` asked validate for
102 GB). The manifest is read duck-typed (segdeploy.artifact.Manifest), so this module needs nothing above models.
"""
from __future__ import annotations

from segdeploy.errors import ArtifactError
from segdeploy.models import get_spec, list_models, option_allowed


def check_manifest(manifest, source: str) -> None:
    """Raise ArtifactError when the manifest names a registered model but not that model's facts. A model this
    segdeploy does not know is left alone (an artifact of a newer release can still be run and inspected)."""
    name = manifest.model.name
    if name not in list_models():
        return
    spec = get_spec(name)
    pre = manifest.preprocessing
    facts = (("family", manifest.model.family, spec.family), ("variant", manifest.model.variant, spec.variant),
             ("preprocessing mean", pre.mean, list(spec.mean)), ("preprocessing std", pre.std, list(spec.std)),
             ("preprocessing channel order", pre.channel_order, spec.channel_order),
             ("size multiple", pre.size_multiple, spec.size_multiple),
             ("align_corners", pre.align_corners, spec.align_corners))
    for what, recorded, truth in facts:
        if recorded != truth:
            raise ArtifactError(f"{source}: its manifest's {what} {recorded!r} is not {name}'s {truth!r}: the "
                                "manifest does not describe this model")
    options = manifest.export.model_options
    for key, value in options.items():
        if key not in spec.options:
            raise ArtifactError(f"{source}: its manifest names option {key!r}, which {name} does not have")
        choices = spec.option_choices.get(key, (spec.options[key],))
        if not option_allowed(value, choices):
            raise ArtifactError(f"{source}: its manifest's option {key}={value!r} is not a value {name} takes")
    if manifest.profile.multiple % spec.size_multiple:
        raise ArtifactError(f"{source}: its manifest's profile steps by {manifest.profile.multiple}, but {name} takes "
                            f"multiples of {spec.size_multiple}")

