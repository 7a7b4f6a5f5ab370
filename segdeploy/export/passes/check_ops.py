"""``check_standard_ops``: every node in the default ONNX domain and the opset at least 17 (LayerNormalization). A
custom domain would tie the artifact to one runtime's plugins; it is an error, not a warning."""
from __future__ import annotations

from segdeploy.errors import ArtifactError
from segdeploy.export.passes import STANDARD_DOMAINS, PassReport, default_opset, op_counts

MIN_OPSET = 17


def check_standard_ops(model, min_opset: int = MIN_OPSET):
    foreign = sorted({f"{node.domain}::{node.op_type}" for node in model.graph.node
                      if node.domain not in STANDARD_DOMAINS})
    if foreign:
        raise ArtifactError(f"graph uses non-standard ops ({', '.join(foreign[:5])}); only the default ONNX domain "
                            "is allowed")
    extra_domains = sorted(e.domain for e in model.opset_import if e.domain not in STANDARD_DOMAINS)
    opset = default_opset(model)
    if opset < min_opset:
        raise ArtifactError(f"graph has opset {opset}; at least {min_opset} is needed (LayerNormalization)")
    n = len(model.graph.node)
    notes = [f"opset {opset}; all {n} nodes in the default domain"]
    if extra_domains:
        notes.append(f"unused opset imports: {', '.join(extra_domains)}")
    return model, PassReport("check_standard_ops", n, n, "segdeploy", notes, op_counts(model))
