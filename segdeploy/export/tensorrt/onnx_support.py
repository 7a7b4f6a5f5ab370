"""What TensorRT's ONNX parser accepts, per release, as data for the lint.

Operator tables follow the parser's operator matrix (onnx-tensorrt ``docs/operators.md`` for TensorRT 10.0/10.1,
which JetPack 6's 10.3 shares) and the importer's own checks (``onnxOpImporters.cpp``); the 11.x differences come
from the TensorRT 11 release notes (DFT through a cuFFT plugin from 11.2, Swish from 11.0, opset 25 from 11.5).
"""
from __future__ import annotations

# (first TensorRT release, (lowest opset, highest opset)): the last entry at or below a release applies. NVIDIA's
# support matrix gives opsets 9-20 (ONNX 1.16) for TensorRT 10.0-10.8 (JetPack 6's 10.3 among them) and ONNX 1.17
# (opset 22) from 10.9; the 11.x parser reads up to opset 24, and 11.5 added 25 (its release notes).
OPSET_RANGES = (
    ((10, 0), (9, 20)),
    ((10, 9), (9, 22)),
    ((11, 0), (9, 24)),
    ((11, 5), (9, 25)),
)

SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow CenterCropPad Col2Im Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear HammingWindow HannWindow ImageDecoder MatMulInteger
MaxRoiPool MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch STFT SequenceAt SequenceConstruct SequenceEmpty
SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence StringConcat
StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())

# Operators a later release added: op -> first TensorRT release that parses it.
ADDED_IN = {"Swish": (11, 0), "DFT": (11, 2)}

# Resize: the importer accepts these coordinate transformation modes and only the "stretch" aspect policy; linear
# resizing changes at most the three innermost axes, cubic at most the two innermost.
RESIZE_COORDINATE_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                     "align_corners"})
RESIZE_INNERMOST_AXES = {"linear": 3, "cubic": 2}

# QuantizeLinear/DequantizeLinear take float16 (and bfloat16) scales from opset 19.
QDQ_FLOAT16_OPSET = 19


def opset_range(version: tuple[int, ...]) -> tuple[int, int]:
    chosen = OPSET_RANGES[0][1]
    for since, span in OPSET_RANGES:
        if _minor(version) >= since:
            chosen = span
    return chosen


def op_status(op_type: str, version: tuple[int, ...]) -> str:
    """"supported", "unsupported" or "unknown" (not in the parser's table: newer than the table, or a typo)."""
    if op_type in ADDED_IN:
        return "supported" if _minor(version) >= ADDED_IN[op_type] else "unsupported"
    if op_type in SUPPORTED_OPS:
        return "supported"
    if op_type in UNSUPPORTED_OPS:
        return "unsupported"
    return "unknown"


def _minor(version: tuple[int, ...]) -> tuple[int, int]:
    return (tuple(version) + (0, 0))[:2]
