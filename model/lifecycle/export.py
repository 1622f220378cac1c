"""Export a trained model as one self-contained LiteRT (``.tflite``) file.

The file holds the whole model: the int8 base network(s), byte for byte the ones
the recipe names, plus the preprocessing and the head, as one graph:

    image (uint8, S x S x 3)                 the photo squashed to S (the recipe's size)
    [crop_image (uint8, C x C x 3)]          squashed to C = S / 0.875, if a view is a crop
      -> QUANTIZE to int8 (pixel - 128, the base's input encoding)
      -> the recipe's views: as is, mirrored (REVERSE_V2), crops (SLICE), stacked as a batch
      -> base network -> DEQUANTIZE -> MEAN over the views     (per base, concatenated)
      -> FULLY_CONNECTED (standardisation, weights, bias and temperature folded in)
      -> SOFTMAX -> probabilities (float32, one per label, in the manifest's label order)

The model's hash, its labels and the exact input encoding are in the file's metadata
(``stl`` entry, JSON), so a phone app or a Raspberry Pi needs nothing else. The head
runs in float32 on the target's kernels, so probabilities agree with the service to
about 1e-5, and labels match; the service's own float64 head stays the reference.

The graph is written with the flatbuffer schema that LiteRT ships, without
TensorFlow; the same model always exports to the same bytes.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from model.errors import InvalidRequest
from model.head.linear import Head
from model.identity.manifest import load_manifest
from model.identity.recipe import Recipe
from model.identity.tensors import load_tensors
from model.identity.views import crop_offset, tensor_sizes
from store import ObjectStore
from store.files import write_atomically

FORMATS = ("tflite",)
EXPORT_FORMAT = "stl-export/1"


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


class GraphBuilder:
    """One LiteRT subgraph built op by op; constant tensors each get a buffer of their own."""

    def __init__(self) -> None:
        s = self.s = _schema()
        self.model = s.ModelT()
        self.model.version = 3
        self.model.buffers = [s.BufferT()]  # buffer 0: the empty sentinel every tensor without data uses
        self.model.operatorCodes = []
        self.graph = s.SubGraphT()
        self.graph.tensors, self.graph.operators = [], []
        self._codes: dict[tuple[int, int], int] = {}

    def opcode(self, builtin: int, version: int = 1) -> int:
        key = (builtin, version)
        if key not in self._codes:
            code = self.s.OperatorCodeT()
            code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), version
            self.model.operatorCodes.append(code)
            self._codes[key] = len(self.model.operatorCodes) - 1
        return self._codes[key]

    def buffer(self, data: bytes) -> int:
        buf = self.s.BufferT()
        buf.data = np.frombuffer(data, np.uint8)
        self.model.buffers.append(buf)
        return len(self.model.buffers) - 1

    def tensor(
        self,
        name: str,
        shape: list[int],
        dtype: int,
        buffer: int = 0,
        quant: tuple[list[float], list[int]] | None = None,
    ) -> int:
        t = self.s.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), np.array(shape, np.int32), dtype, buffer
        if quant is not None:
            q = self.s.QuantizationParametersT()
            q.scale, q.zeroPoint = np.array(quant[0], np.float32), np.array(quant[1], np.int64)
            t.quantization = q
        self.graph.tensors.append(t)
        return len(self.graph.tensors) - 1

    def const(self, name: str, array: np.ndarray) -> int:
        dtypes = {
            np.dtype(np.float32): self.s.TensorType.FLOAT32,
            np.dtype(np.int32): self.s.TensorType.INT32,
        }
        array = np.ascontiguousarray(array)
        return self.tensor(name, list(array.shape), dtypes[array.dtype], self.buffer(array.tobytes()))

    def op(
        self, builtin: int, inputs: list[int], outputs: list[int], options: Any = None, version: int = 1
    ) -> None:
        o = self.s.OperatorT()
        o.opcodeIndex = self.opcode(builtin, version)
        o.inputs, o.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        if options is not None:
            o.builtinOptionsType = getattr(self.s.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        self.graph.operators.append(o)

    def import_graph(self, other: Any, source: int, prefix: str) -> int:
        """Append a one-subgraph model's (a parsed ``ModelT``) operators, fed by tensor ``source``;
        its output tensor. ``other`` is consumed: its tensors and operators move into this graph."""
        if len(other.subgraphs) != 1:
            raise InvalidRequest("a base network for export must have exactly one subgraph")
        sub = other.subgraphs[0]
        buffers: dict[int, int] = {0: 0}
        tensors: dict[int, int] = {int(sub.inputs[0]): source}
        for i, t in enumerate(sub.tensors):
            if i in tensors:
                continue
            data = other.buffers[t.buffer].data if t.buffer else None
            if data is not None and len(data):
                if t.buffer not in buffers:
                    buffers[t.buffer] = self.buffer(bytes(np.asarray(data, np.uint8)))
                buf = buffers[t.buffer]
            else:
                buf = 0
            t.buffer, t.name = buf, prefix.encode() + b"/" + (t.name or b"")
            if data is None or not len(data):
                t.shapeSignature = None  # activations: sized by the interpreter from the input
            self.graph.tensors.append(t)
            tensors[i] = len(self.graph.tensors) - 1
        for op in sub.operators:
            code = other.operatorCodes[op.opcodeIndex]
            op.opcodeIndex = self.opcode(max(code.builtinCode, code.deprecatedBuiltinCode), code.version)
            op.inputs = np.array([tensors[int(i)] if i >= 0 else -1 for i in op.inputs], np.int32)
            op.outputs = np.array([tensors[int(i)] for i in op.outputs], np.int32)
            self.graph.operators.append(op)
        return tensors[int(sub.outputs[0])]

    def finish(
        self, inputs: list[int], outputs: list[int], metadata: dict[str, Any], description: str
    ) -> bytes:
        import flatbuffers

        self.graph.inputs, self.graph.outputs = np.array(inputs, np.int32), np.array(outputs, np.int32)
        self.graph.name = b"main"
        self.model.subgraphs = [self.graph]
        self.model.description = description.encode()
        entry = self.s.MetadataT()
        entry.name = b"stl"
        entry.buffer = self.buffer(json.dumps(metadata, sort_keys=True).encode())
        self.model.metadata = [entry]
        builder = flatbuffers.Builder(1024)
        builder.Finish(self.model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def folded_head(head: Head) -> tuple[np.ndarray, np.ndarray]:
    """(labels, dim) weights and (labels,) bias with standardisation and temperature folded in.

    logits = ((f - mean) * scale) @ K + b, divided by T: all linear in f, so one
    FULLY_CONNECTED computes it. Folded in float64, rounded once to float32.
    """
    scale = np.broadcast_to(np.asarray(head.scale, np.float64), np.shape(head.mean))
    kernel = scale[:, None] * head.kernel
    bias = head.bias - (head.mean * scale) @ head.kernel
    t = head.temperature or 1.0
    return (kernel / t).T.astype(np.float32), (bias / t).astype(np.float32)


def build_tflite(manifest: dict[str, Any], head: Head, base_models: list[bytes]) -> bytes:
    """The export graph (see the module doc) for a manifest, its head and its int8 bases."""
    s = _schema()
    ops, types = s.BuiltinOperator, s.TensorType
    recipe = Recipe.from_dict(manifest["recipe"])
    size, views = recipe.image_size, list(recipe.views)
    bases = [s.ModelT.InitFromPackedBuf(data, 0) for data in base_models]  # each parsed once
    input_quant = input_quantization(bases[0])
    g = GraphBuilder()
    uint8_quant = ([input_quant[0]], [input_quant[1] + 128])  # the same reals as the base's int8
    int8_quant = ([input_quant[0]], [input_quant[1]])
    inputs, int8_inputs = [], []
    sizes = tensor_sizes(size, views)
    for name, side in zip(("image", "crop_image"), sizes, strict=False):
        raw = g.tensor(name, [1, side, side, 3], types.UINT8, quant=uint8_quant)
        shifted = g.tensor(f"{name}/int8", [1, side, side, 3], types.INT8, quant=int8_quant)
        g.op(ops.QUANTIZE, [raw], [shifted], s.QuantizeOptionsT())
        inputs.append(raw)
        int8_inputs.append(shifted)
    batch = []
    for view in views:
        if view == "original":
            batch.append(int8_inputs[0])
            continue
        out = g.tensor(f"view/{view}", [1, size, size, 3], types.INT8, quant=int8_quant)
        if view == "mirrored":
            g.op(
                ops.REVERSE_V2,
                [int8_inputs[0], g.const("axis/width", np.array([2], np.int32))],
                [out],
                version=3,
            )
        else:
            top, left = crop_offset(view, sizes[1], size)
            begin = g.const(f"begin/{view}", np.array([0, top, left, 0], np.int32))
            extent = g.const(f"size/{view}", np.array([1, size, size, 3], np.int32))
            g.op(ops.SLICE, [int8_inputs[1], begin, extent], [out], s.SliceOptionsT(), version=2)
        batch.append(out)
    stacked = g.tensor("views", [len(views), size, size, 3], types.INT8, quant=int8_quant)
    concat = s.ConcatenationOptionsT()
    concat.axis = 0
    g.op(ops.CONCATENATION, batch, [stacked], concat, version=2)
    per_base = []
    for (name, _sha1), base in zip(recipe.bases(), bases, strict=True):
        out_q = g.import_graph(base, stacked, name)
        dim = int(g.graph.tensors[out_q].shape[-1])
        floats = g.tensor(f"{name}/features/views", [len(views), dim], types.FLOAT32)
        g.op(ops.DEQUANTIZE, [out_q], [floats], s.DequantizeOptionsT(), version=2)
        mean = g.tensor(f"{name}/features", [1, dim], types.FLOAT32)
        reducer = s.ReducerOptionsT()
        reducer.keepDims = True
        g.op(ops.MEAN, [floats, g.const(f"{name}/axis", np.array([0], np.int32))], [mean], reducer)
        per_base.append((mean, dim))
    if len(per_base) == 1:
        features = per_base[0][0]
    else:
        total = sum(d for _t, d in per_base)
        features = g.tensor("features", [1, total], types.FLOAT32)
        concat_features = s.ConcatenationOptionsT()
        concat_features.axis = 1
        g.op(ops.CONCATENATION, [t for t, _d in per_base], [features], concat_features)
    weights, bias = folded_head(head)
    logits = g.tensor("logits", [1, len(bias)], types.FLOAT32)
    g.op(
        ops.FULLY_CONNECTED,
        [features, g.const("head/weights", weights), g.const("head/bias", bias)],
        [logits],
        s.FullyConnectedOptionsT(),
    )
    probabilities = g.tensor("probabilities", [1, len(bias)], types.FLOAT32)
    softmax = s.SoftmaxOptionsT()
    softmax.beta = 1.0
    g.op(ops.SOFTMAX, [logits], [probabilities], softmax)
    metadata = {
        "format": EXPORT_FORMAT,
        "model_sha1": manifest["model_sha1"],
        "labels": manifest["labels"],
        "bases": [{"name": n, "int8_sha1": sha} for n, sha in recipe.bases()],
        "views": views,
        "inputs": [
            {
                "name": name,
                "shape": [1, side, side, 3],
                "dtype": "uint8",
                "encoding": f"RGB pixels of the whole image squashed (no crop, no padding) to {side}x{side}",
            }
            for name, side in zip(("image", "crop_image"), sizes, strict=False)
        ],
        "output": {"name": "probabilities", "labels": manifest["labels"]},
    }
    return g.finish(
        inputs, [probabilities], metadata, f"static-transfer-learning model {manifest['model_sha1']}"
    )


def export_bytes(store: ObjectStore, model_sha1: str, fmt: str = "tflite") -> bytes:
    """The exported file's bytes for a trained model (ModelNotFound if it has no manifest)."""
    if fmt not in FORMATS:
        raise InvalidRequest(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    manifest = load_manifest(store, model_sha1)
    recipe = Recipe.from_dict(manifest["recipe"])
    weights = load_tensors(store.get(manifest["outputs"]["weights"]["sha1"]))
    head = Head.from_tensors(weights, manifest["metrics"].get("l2", 0.0))
    bases = [store.get(sha1) for _name, sha1 in recipe.bases()]
    return build_tflite(manifest, head, bases)


def input_quantization(model: Any) -> tuple[float, int]:
    """(scale, zero point) of a parsed int8 model's input: how pixels must be shifted into it."""
    sub = model.subgraphs[0]
    q = sub.tensors[int(sub.inputs[0])].quantization
    return float(q.scale[0]), int(q.zeroPoint[0])


def export_model(
    store: ObjectStore, model_sha1: str, path: str | os.PathLike[str], fmt: str = "tflite"
) -> str:
    """Write the export to ``path`` atomically; the file's sha1."""
    from store.hashing import sha1_bytes

    data = export_bytes(store, model_sha1, fmt)
    write_atomically(io.BytesIO(data), path, mode=0o644)  # a file to hand on, not a private one
    return sha1_bytes(data)
