"""Calibration ranges that do not depend on the CPU that converts: a float64 forward pass.

TensorFlow calibrates an int8 conversion by running the float network with its own float32
kernels and recording each activation's min and max. Those kernels pick their summation order
by CPU (instruction set and cache sizes), so the ranges, and so the int8 scales and the
converted file's bytes, came out different on an Intel AVX-512 machine, an AMD one and an
emulated Haswell. Here the same graph (the float LiteRT model TensorFlow is about to
calibrate) runs in float64 over the same images; each range is rounded to float32 once, at the
end. The sums still go through BLAS, in whatever order it picks, but a float64 sum is ~1e-16
off, far inside float32's rounding step (6e-8), so the float32 range is the same everywhere
(a tie closer than that is the one way left to differ, at odds of about 1e-8 per range).

Each tensor's range is its own values' range. (TensorFlow's calibrator reads a residual ADD's
inputs after the ADD has run in place over one of them, so it gave a block's projection the
ADD's wider range.)

Only the ops EfficientNet-Lite's float graph holds are implemented; any other is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from model.errors import BaseModelError

#: LiteRT's fused activations, by their schema numbers.
_ACTIVATIONS = {0: None, 1: (0.0, np.inf), 2: (-1.0, 1.0), 3: (0.0, 6.0)}


def _schema() -> Any:
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _op_name(model: Any, op: Any) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(_schema().BuiltinOperator).items() if not k.startswith("_")}
    return names[number]


def _activate(x: np.ndarray, fused: int) -> np.ndarray:
    if fused not in _ACTIVATIONS:
        raise BaseModelError(f"exact calibration: fused activation {fused} is not supported")
    bounds = _ACTIVATIONS[fused]
    return x if bounds is None else np.clip(x, *bounds)


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int, int]:
    """(output size, padding before, padding after) as LiteRT computes SAME padding."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return out, total // 2, total - total // 2


def _windows(
    x: np.ndarray, kh: int, kw: int, options: Any
) -> tuple[np.ndarray, int, int, list[tuple[int, int]]]:
    """The padded input, output height/width and the (row, column) offset of each kernel tap."""
    sh, sw = options.strideH, options.strideW
    dh, dw = options.dilationHFactor, options.dilationWFactor
    if options.padding == _schema().Padding.SAME:
        oh, top, bottom = _same_padding(x.shape[1], kh, sh, dh)
        ow, left, right = _same_padding(x.shape[2], kw, sw, dw)
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    else:
        oh = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
        ow = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    taps = [(i * dh, j * dw) for i in range(kh) for j in range(kw)]
    return x, oh, ow, taps


def _tap(x: np.ndarray, row: int, col: int, oh: int, ow: int, options: Any) -> np.ndarray:
    sh, sw = options.strideH, options.strideW
    return x[:, row : row + (oh - 1) * sh + 1 : sh, col : col + (ow - 1) * sw + 1 : sw, :]


def _conv(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, options: Any) -> np.ndarray:
    """CONV_2D; ``weights`` is LiteRT's (out, kh, kw, in)."""
    _, kh, kw, _ = weights.shape
    x, oh, ow, taps = _windows(x, kh, kw, options)
    patches = np.concatenate([_tap(x, r, c, oh, ow, options) for r, c in taps], axis=-1)
    out = patches.reshape(-1, patches.shape[-1]) @ weights.reshape(weights.shape[0], -1).T
    out = out.reshape(x.shape[0], oh, ow, weights.shape[0])
    return out if bias is None else out + bias


def _depthwise(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, options: Any) -> np.ndarray:
    """DEPTHWISE_CONV_2D; ``weights`` is LiteRT's (1, kh, kw, channels)."""
    if options.depthMultiplier not in (0, 1) or weights.shape[3] != x.shape[3]:
        raise BaseModelError("exact calibration: depthwise convolutions with a multiplier are not supported")
    _, kh, kw, _ = weights.shape
    x, oh, ow, taps = _windows(x, kh, kw, options)
    out = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for r, c in taps:  # a fixed order of taps
        out += (
            _tap(x, r, c, oh, ow, options)
            * weights[0, r // options.dilationHFactor, c // options.dilationWFactor]
        )
    return out if bias is None else out + bias


class _Graph:
    """A float LiteRT model read once: its operators, constant tensors and options."""

    def __init__(self, model_bytes: bytes) -> None:
        from tensorflow.lite.tools import flatbuffer_utils

        self.model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
        self.graph = self.model.subgraphs[0]
        self.constants: dict[int, np.ndarray] = {}
        for index, tensor in enumerate(self.graph.tensors):
            data = self.model.buffers[tensor.buffer].data
            if data is not None and len(data):
                if tensor.type != _schema().TensorType.FLOAT32 and tensor.type != _schema().TensorType.INT32:
                    raise BaseModelError("exact calibration: the float model holds a non-float constant")
                dtype = np.float32 if tensor.type == _schema().TensorType.FLOAT32 else np.int32
                array = np.frombuffer(bytes(bytearray(data)), dtype).reshape(tensor.shape)
                self.constants[index] = array.astype(np.float64) if dtype == np.float32 else array

    def projections(self) -> list[tuple[int, int]]:
        """(projection, ADD output) tensor pairs: each ADD input that a CONV_2D computed."""
        made_by = {op.outputs[0]: _op_name(self.model, op) for op in self.graph.operators}
        return [
            (i, op.outputs[0])
            for op in self.graph.operators
            if _op_name(self.model, op) == "ADD"
            for i in op.inputs
            if made_by.get(i) == "CONV_2D"
        ]

    def run(self, image: np.ndarray) -> dict[int, np.ndarray]:
        """Every activation tensor's value for one (1, h, w, 3) float input."""
        values: dict[int, np.ndarray] = {self.graph.inputs[0]: image.astype(np.float64)}

        def arg(index: int) -> np.ndarray | None:
            if index < 0:
                return None
            return values[index] if index in values else self.constants[index]

        for op in self.graph.operators:
            name, options = _op_name(self.model, op), op.builtinOptions
            inputs = [arg(i) for i in op.inputs]
            if name == "CONV_2D":
                out = _activate(
                    _conv(inputs[0], inputs[1], inputs[2], options), options.fusedActivationFunction
                )
            elif name == "DEPTHWISE_CONV_2D":
                raw = _depthwise(inputs[0], inputs[1], inputs[2], options)
                out = _activate(raw, options.fusedActivationFunction)
            elif name == "ADD":
                out = _activate(inputs[0] + inputs[1], options.fusedActivationFunction)
            elif name == "MEAN":
                axes = tuple(int(a) for a in np.atleast_1d(inputs[1]))
                out = inputs[0].mean(axis=axes, keepdims=bool(options.keepDims))
            elif name == "CONCATENATION":
                out = _activate(np.concatenate(inputs, axis=options.axis), options.fusedActivationFunction)
            else:
                raise BaseModelError(f"exact calibration: operator {name} is not supported")
            values[op.outputs[0]] = out
        return values


#: How a residual block's projection (the convolution an ADD adds to its shortcut) is ranged:
#: "own", its own values' range; "add", the union of that and the ADD's output range, as
#: TensorFlow's calibrator gave it (issue 39 measures both).
RESIDUAL_RANGES = ("own", "add")


def exact_ranges(
    model_bytes: bytes, images: Iterable[np.ndarray], residual: str = "own"
) -> dict[int, tuple[float, float]]:
    """Each activation tensor's (min, max) over ``images``, computed in float64, rounded to float32."""
    if residual not in RESIDUAL_RANGES:
        raise BaseModelError(f"exact calibration: residual ranges must be one of {RESIDUAL_RANGES}")
    graph = _Graph(model_bytes)
    low: dict[int, float] = {}
    high: dict[int, float] = {}
    for image in images:
        for index, value in graph.run(image).items():
            low[index] = min(low.get(index, np.inf), float(value.min()))
            high[index] = max(high.get(index, -np.inf), float(value.max()))
    if residual == "add":
        for projection, added in graph.projections():
            low[projection] = min(low[projection], low[added])
            high[projection] = max(high[projection], high[added])
    return {i: (float(np.float32(low[i])), float(np.float32(high[i]))) for i in low}


def with_exact_ranges(
    calibrated: bytes, float_model: bytes, images: Iterable[np.ndarray], residual: str = "own"
) -> bytes:
    """``calibrated`` (TensorFlow's calibration of ``float_model``) with every recorded range
    replaced by the exact one; a tensor TensorFlow recorded that the float64 pass did not
    compute is refused."""
    from tensorflow.lite.tools import flatbuffer_utils

    ranges = exact_ranges(float_model, images, residual)
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        q = tensor.quantization
        if q is None or q.min is None or not len(q.min):
            continue
        if index not in ranges:
            raise BaseModelError(f"exact calibration: no range computed for tensor {tensor.name!r}")
        q.min, q.max = [ranges[index][0]], [ranges[index][1]]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
