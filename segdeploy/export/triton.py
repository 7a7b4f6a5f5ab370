"""Triton Inference Server model repositories from segdeploy artifacts.

``write_repository`` lays out ``<repo>/<model>/config.pbtxt`` and ``<repo>/<model>/1/model.onnx`` (platform
``onnxruntime_onnx``) or ``1/model.plan`` (``tensorrt_plan``; the engine's bare plan, since Triton deserializes
the file as it is), plus the artifact's manifest beside the config so clients find classes and preprocessing.

Batching follows Triton's rule (model_configuration.md; the backends' CompareDimsSupported): ``max_batch_size > 0``
means every input and output has a variable first (batch) dimension, which the config's ``dims`` then leave out.
So a batch axis that is dynamic from 1 gives ``max_batch_size`` = its maximum and dynamic batching; a fixed batch,
even of 1, gives ``max_batch_size: 0`` with full dims (Triton refuses ``max_batch_size > 0`` for a model whose
first dimension is not variable); a dynamic batch that cannot take 1 also gives 0 (Triton forms batches from 1).
Dynamic dimensions are -1.

A version-compatible plan carries its own lean runtime, which Triton's TensorRT backend runs only when the server
is started with ``--backend-config=tensorrt,version-compatible=true``; otherwise the model fails to load. The
config says so and the export warns (``serving_warnings``).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field

from segdeploy import backends
from segdeploy.artifact.engine_header import read_header
from segdeploy.artifact.formats import ENGINE_FORMATS, ONNX_SUFFIX, sniff
from segdeploy.artifact.reader import read_runnable_manifest, warn_caveats
from segdeploy.errors import ArtifactError, SegdeployError
from segdeploy.files.atomic import folder_holds, write_folder_atomic
from segdeploy.files.locking import os_reason

# --platform -> (Triton's platform, the file it loads): a backend that Triton serves, by what it consumes
_MODEL_FILE = {"onnx": "model" + ONNX_SUFFIX, "engine": "model" + ENGINE_FORMATS["plan"]}
PLATFORMS = {b.name: (b.triton_platform, _MODEL_FILE[b.consumes]) for b in backends.BACKENDS.values()
             if b.triton_platform}


def serves_engine(platform: str) -> bool:
    return platform in PLATFORMS and backends.get(platform).consumes == "engine"
MAX_INSTANCES = 64  # instances of one model on one device; more is a typo, and each holds a copy of the model
# auto: Triton places the instances itself, on the GPUs it finds, else on the CPU (what an artifact exported on a
# machine without a GPU must say); gpu and cpu pin them
INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
TRITON_TYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64"}
MANIFEST_FILE = "segdeploy_manifest.json"
VERSION_COMPATIBLE_FLAG = "--backend-config=tensorrt,version-compatible=true"


def serving_warnings(platform: str, version_compatible: bool) -> list[str]:
    """What the server needs that the repository cannot say by itself."""
    if serves_engine(platform) and version_compatible:
        return [f"this plan is version-compatible: start tritonserver with {VERSION_COMPATIBLE_FLAG}, or Triton "
                "refuses to load it (its embedded lean runtime is host code)"]
    return []


@dataclass
class TensorConfig:
    name: str
    data_type: str
    dims: list[int]


@dataclass
class ModelConfig:
    name: str
    platform: str
    max_batch_size: int
    inputs: list[TensorConfig]
    outputs: list[TensorConfig]
    instance_kind: str = "KIND_AUTO"
    instance_count: int = 1
    max_queue_delay_us: int = 100
    comments: list[str] = field(default_factory=list)

    def text(self) -> str:
        """config.pbtxt (protobuf text format of Triton's ModelConfig)."""
        lines = [f"# {c}" for c in self.comments]
        lines += [f'name: "{self.name}"', f'platform: "{self.platform}"', f"max_batch_size: {self.max_batch_size}"]
        for section, tensors in (("input", self.inputs), ("output", self.outputs)):
            entries = [f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n    dims: [ '
                       f'{", ".join(str(d) for d in t.dims)} ]\n  }}' for t in tensors]
            lines.append(f"{section} [\n" + ",\n".join(entries) + "\n]")
        if self.max_batch_size > 0:
            lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {self.max_queue_delay_us}\n}}")
        lines.append(f"instance_group [\n  {{\n    count: {self.instance_count}\n"
                     f"    kind: {self.instance_kind}\n  }}\n]")
        return "\n".join(lines) + "\n"


def max_batch_size(manifest) -> int:
    """Triton's max_batch_size for an artifact (see the module docstring for the rule)."""
    for tensor in (*manifest.inputs, *manifest.outputs):
        axis = tensor.axis(0)
        if axis is None or axis.min > 1:
            return 0
    return manifest.profile.batch.max


def triton_type(dtype: str, tensor: str) -> str:
    try:
        return TRITON_TYPES[dtype]
    except KeyError:
        raise ArtifactError(f"tensor {tensor!r} is {dtype}, which Triton has no type for") from None


def tensor_config(tensor, batched: bool) -> TensorConfig:
    dims = [d if isinstance(d, int) and tensor.axis(i) is None else -1 for i, d in enumerate(tensor.shape)]
    return TensorConfig(tensor.name, triton_type(tensor.dtype, tensor.name), dims[1:] if batched else dims)


def model_config(manifest, *, name: str, platform: str = backends.ONNXRUNTIME, instance_kind: str = "auto",
                 instances: int = 1, max_queue_delay_us: int = 100) -> ModelConfig:
    if platform not in PLATFORMS:
        raise SegdeployError(f"unknown Triton platform {platform!r}; one of {', '.join(PLATFORMS)}")
    if instance_kind not in INSTANCE_KINDS:
        raise SegdeployError(f"unknown instance kind {instance_kind!r}; one of {', '.join(INSTANCE_KINDS)}")
    if serves_engine(platform) and instance_kind == "cpu":
        raise SegdeployError("a TensorRT plan runs on the GPU only: use --instance-kind gpu (or auto)")
    if not (isinstance(instances, int) and 1 <= instances <= MAX_INSTANCES):
        raise SegdeployError(f"--instances must be 1-{MAX_INSTANCES}, not {instances}")
    mbs = max_batch_size(manifest)
    comments = [f"{manifest.model.name} ({manifest.precision.mode}) exported by segdeploy; classes and "
                f"preprocessing: {MANIFEST_FILE}"]
    if manifest.engine is not None:
        e = manifest.engine
        comments.append(f"TensorRT {e.tensorrt_version} plan for {e.gpu_name} (compute capability "
                        f"{e.compute_capability}): Triton's TensorRT must be the same release unless the engine is "
                        "version-compatible")
        comments += serving_warnings(platform, e.version_compatible)
    return ModelConfig(name, PLATFORMS[platform][0], mbs,
                       [tensor_config(t, mbs > 0) for t in manifest.inputs],
                       [tensor_config(t, mbs > 0) for t in manifest.outputs],
                       INSTANCE_KINDS[instance_kind], instances, max_queue_delay_us, comments)


def _model_bytes(artifact: str, platform: str):
    """(manifest, bytes of the file Triton loads) for an ONNX artifact or a segdeploy engine, checked as every
    runner checks them (graph hash, plan hash, the registry's facts): a repository serves what it is given."""
    from segdeploy.models.facts import check_manifest

    kind = sniff(artifact)
    if serves_engine(platform):
        if kind != "engine":
            raise SegdeployError(f"the tensorrt platform serves an engine; {artifact} is not one (build it with "
                                 "export --fmt trt on the serving machine, or use --platform onnxruntime)")

        manifest, offset = read_header(artifact)
        if manifest is None:
            raise ArtifactError(f"{artifact} has no segdeploy header, so its I/O table is unknown; build it with "
                                "segdeploy build-engine")
        check_manifest(manifest, artifact)

        warn_caveats(manifest, artifact)
        try:
            with open(artifact, "rb") as f:
                f.seek(offset)
                return manifest, f.read()
        except OSError as exc:
            raise ArtifactError(f"cannot read {artifact}: {os_reason(exc)}") from None
    if kind != "onnx":
        raise SegdeployError(f"the onnxruntime platform serves an ONNX artifact; {artifact} is not one")
    manifest = read_runnable_manifest(artifact)
    check_manifest(manifest, artifact)
    try:
        with open(artifact, "rb") as f:
            return manifest, f.read()
    except OSError as exc:
        raise ArtifactError(f"cannot read {artifact}: {os_reason(exc)}") from None


# Triton takes model names as folder names; a hidden or odd name would be skipped, or collide with staging folders.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def write_repository(artifact, repository, *, model_name: str | None = None, platform: str = backends.ONNXRUNTIME,
                     instance_kind: str = "auto", instances: int = 1, max_queue_delay_us: int = 100,
                     force: bool = False) -> str:
    """Write ``<repository>/<model>`` for ``artifact`` as one unit (files.atomic.write_folder_atomic): staged beside
    the repository, never inside it (Triton loads every folder of a repository, a half-written one included), and
    swapped into place in one step. An existing model folder is kept when it already holds exactly these files;
    otherwise it is replaced only with ``force``, and then only segdeploy's files in it (config.pbtxt, the manifest,
    version 1's model): other version folders and the user's files are kept. Returns the model folder."""
    artifact = os.fspath(artifact)
    manifest, data = _model_bytes(artifact, platform)
    name = model_name or manifest.model.name
    if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
        raise SegdeployError(f"invalid Triton model name {name!r}: letters, digits, '_', '.' and '-', starting with "
                             "a letter or digit")
    config = model_config(manifest, name=name, platform=platform, instance_kind=instance_kind, instances=instances,
                          max_queue_delay_us=max_queue_delay_us)
    repository = os.path.abspath(os.fspath(repository))
    if os.path.exists(repository) and not os.path.isdir(repository):
        raise ArtifactError(f"the Triton repository {repository} is a file, not a folder")
    target = os.path.join(repository, name)
    files = {f"1/{PLATFORMS[platform][1]}": data, "config.pbtxt": config.text().encode("utf-8"),
             MANIFEST_FILE: manifest.to_json().encode("utf-8")}
    if not force and folder_holds(target, files):
        return target
    others = sorted(v for v in (os.listdir(target) if os.path.isdir(target) else ())
                    if v.isdigit() and v != "1" and os.path.isdir(os.path.join(target, v)))
    folder = write_folder_atomic(target, files, force=force, stage_in=os.path.dirname(repository), keep_others=True)
    if others and max(int(v) for v in others) > 1:
        warnings.warn(f"{target} also holds version(s) {', '.join(others)}, kept as they were; Triton serves the "
                      "latest version by default, not the version 1 written now", stacklevel=2)
    return folder
