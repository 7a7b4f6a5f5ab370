"""How close each precision's outputs must come to the reference's: one :class:`Tolerance` per precision (the INT8
flavours are judged by the one their record in segdeploy.flavours names).
"""
from __future__ import annotations

from dataclasses import dataclass

from segdeploy import flavours
from segdeploy.errors import SegdeployError


@dataclass(frozen=True)
class Tolerance:
    precision: str
    max_rel: float | None  # max abs error <= max_rel * max(1, max |reference|) per case; None: not bounded
    min_agreement: float  # pixel label agreement with the reference's masks, per case
    min_cosine: float | None = None  # cosine of the logits, per case
    max_miou_drop: float | None = None  # mIoU points lost on labelled data (validate --data), when given
    # agreement judged per case, or over all cases together (INT8: a quantized graph is calibrated for images, so
    # its agreement is judged over the real images when there are any, and seeded noise inputs by cosine only)
    agreement_per_case: bool = True

    def describe(self) -> str:
        parts = []
        if self.max_rel is not None:
            parts.append(f"max abs <= {self.max_rel:g} * max(1, max|ref|)")
        if self.min_cosine is not None:
            parts.append(f"cosine >= {self.min_cosine:g}")
        parts.append(f"label agreement >= {self.min_agreement:.1%}" +
                     ("" if self.agreement_per_case else " over all real images (else all inputs)"))
        if self.max_miou_drop is not None:
            parts.append(f"mIoU drop <= {self.max_miou_drop:g} points on labelled data")
        return f"{self.precision}: " + "; ".join(parts)


# FP32: float rounding only; a few pixels sit on near-ties between classes, so exact mask equality is not fair.
# FP16: label agreement >= 99.5 % on every input, and the logits' direction (float16 rounding moves logits by ~1e-3
# relative: cosine 0.9999+ on the trained fixtures). INT8: the logits' direction on every input (0.998-0.9999 on
# the trained T fixtures' images, 0.997 on a seeded noise input), label agreement over all inputs together, and,
# with labelled data, at most 1 mIoU point lost (the budget; mmdeploy's regression tolerance).
TOLERANCES = {
    "fp32": Tolerance("fp32", max_rel=1e-4, min_agreement=0.999),
    "fp16": Tolerance("fp16", max_rel=None, min_agreement=0.995, min_cosine=0.999),
    "int8": Tolerance("int8", max_rel=None, min_agreement=0.95, min_cosine=0.98, max_miou_drop=1.0,
                      agreement_per_case=False),
}


def tolerance_for(precision: str, flavour: str | None = None) -> Tolerance:
    """The tolerance of ``precision``; an INT8 flavour's is the one its record names."""
    key = flavours.get(flavour).tolerance if flavour in flavours.FLAVOURS else precision
    try:
        return TOLERANCES[key]
    except KeyError:
        raise SegdeployError(f"no tolerance for precision {precision!r}; known: {', '.join(TOLERANCES)}") from None
