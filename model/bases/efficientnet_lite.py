"""EfficientNet-Lite0/1/2 in Keras, with weights converted from the PyTorch packages.

Lite variants drop squeeze-and-excitation, use ReLU6 and keep stem and head
fixed, which makes them quick on CPU. Lite1 and Lite2 scale Lite0's stages by a
width multiplier (channels, rounded to multiples of 8) and a depth multiplier
(blocks per stage, rounded up); the first and last stages keep one block. The PyTorch port we load (lukemelas-style
names, ``_blocks.N._expand_conv`` …) pads like TensorFlow's "same", so Keras'
``padding="same"`` reproduces it exactly; its batch norms use epsilon 1e-3.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from model.errors import BaseModelError

if TYPE_CHECKING:
    import keras

#: (kernel, stride, expand ratio, input filters, output filters, repeats) per stage.
LITE0_STAGES = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]
BN_EPSILON = 1e-3
NATIVE_SIZE = 224
FEATURE_DIM = 1280
# Inputs are scaled as the original TensorFlow Lite models expect: (x - 127) / 128.
INPUT_MEAN = 127.0
INPUT_STD = 128.0


def round_filters(filters: int, width: float) -> int:
    """Channels scaled by ``width``, to a multiple of 8, never more than 10% below the product."""
    scaled = filters * width
    rounded = max(8, int(scaled + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * scaled else rounded


def stage_repeats(depth: float = 1.0) -> list[int]:
    """Blocks in each stage: scaled by ``depth`` and rounded up, but the first and last stay."""
    last = len(LITE0_STAGES) - 1
    return [
        math.ceil(depth * repeats) if 0 < stage < last else repeats
        for stage, (*_, repeats) in enumerate(LITE0_STAGES)
    ]


def blocks(width: float = 1.0, depth: float = 1.0) -> list[tuple[int, int, int, int, int]]:
    """One (kernel, stride, expand, in, out) per block: 16 for Lite0, 21 for Lite1 and Lite2."""
    out = []
    for (kernel, stride, expand, fin, fout, _), repeats in zip(
        LITE0_STAGES, stage_repeats(depth), strict=True
    ):
        fin, fout = round_filters(fin, width), round_filters(fout, width)
        for i in range(repeats):
            out.append((kernel, stride if i == 0 else 1, expand, fin if i == 0 else fout, fout))
    return out


def stage_end(stage: int, depth: float = 1.0) -> int:
    """Index of the last block of stage ``stage`` (1-based, as in LITE0_STAGES)."""
    return sum(stage_repeats(depth)[:stage]) - 1


def build_lite(
    include_top: bool,
    image_size: int = NATIVE_SIZE,
    width: float = 1.0,
    depth: float = 1.0,
    name: str = "efficientnet_lite0",
    tap_stage: int = 0,
    folded: bool = False,
) -> keras.Model:
    """The network: ``include_top`` gives 1000 ImageNet logits, else pooled 1280-d features.

    With ``tap_stage``, the pooled output of that stage's last block is appended to
    the features (multi-layer features: the head's, then an earlier, less
    ImageNet-specific layer's). It takes uint8-range RGB (float32, 0..255) and
    normalises inside the graph, so callers never need to know the base's input convention.
    ``folded``: each batch norm is already folded into its convolution's kernel and bias
    (``fold_batch_norms``), so the graph has none.
    """
    import keras
    from keras import layers

    def bn(name: str) -> layers.Layer:
        if folded:
            return layers.Identity(name=name)
        return layers.BatchNormalization(epsilon=BN_EPSILON, name=name)

    relu6 = layers.ReLU(6.0)
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD, name="normalize")(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=folded, name="stem_conv")(x)
    x = relu6(bn("stem_bn")(x))
    tap = stage_end(tap_stage, depth) if tap_stage else -1
    tapped = None
    for i, (kernel, stride, expand, fin, fout) in enumerate(blocks(width, depth)):
        shortcut = x
        p = f"block{i}_"
        if expand != 1:
            x = layers.Conv2D(fin * expand, 1, padding="same", use_bias=folded, name=p + "expand_conv")(x)
            x = relu6(bn(p + "expand_bn")(x))
        x = layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=folded, name=p + "dw_conv"
        )(x)
        x = relu6(bn(p + "dw_bn")(x))
        x = layers.Conv2D(fout, 1, padding="same", use_bias=folded, name=p + "project_conv")(x)
        x = bn(p + "project_bn")(x)
        if stride == 1 and fin == fout:
            x = layers.Add(name=p + "add")([x, shortcut])
        if i == tap:
            tapped = x
    x = layers.Conv2D(FEATURE_DIM, 1, padding="same", use_bias=folded, name="head_conv")(x)
    x = relu6(bn("head_bn")(x))
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if tapped is not None and not include_top:
        pooled = layers.GlobalAveragePooling2D(name="tap_pool")(tapped)
        x = layers.Concatenate(name="multi_layer")([x, pooled])
    if include_top:
        x = layers.Dense(1000, name="classifier")(x)
    return keras.Model(inputs, x, name=name)


def _bn(sd: dict[str, np.ndarray], prefix: str) -> list[np.ndarray]:
    return [
        sd[prefix + ".weight"],
        sd[prefix + ".bias"],
        sd[prefix + ".running_mean"],
        sd[prefix + ".running_var"],
    ]


def _conv(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))  # (out,in,kh,kw) -> (kh,kw,in,out)


def convert_lite_state_dict(
    sd: dict[str, np.ndarray], width: float = 1.0, depth: float = 1.0
) -> dict[str, np.ndarray]:
    """Map the PyTorch state dict to Keras layer weights, named ``<layer>/<index>``.

    The mapping is pure numpy (transposes), so the converted bytes, and so the
    base's sha1, are the same on every machine.
    """
    out: dict[str, np.ndarray] = {}

    def put(layer: str, arrays: list[np.ndarray]) -> None:
        for i, a in enumerate(arrays):
            out[f"{layer}/{i}"] = np.ascontiguousarray(a, dtype=np.float32)

    try:
        put("stem_conv", [_conv(sd["_conv_stem.weight"])])
        put("stem_bn", _bn(sd, "_bn0"))
        for i, (_k, _s, expand, _fin, _fout) in enumerate(blocks(width, depth)):
            t, p = f"_blocks.{i}.", f"block{i}_"
            if expand != 1:
                put(p + "expand_conv", [_conv(sd[t + "_expand_conv.weight"])])
                put(p + "expand_bn", _bn(sd, t + "_bn0"))
            dw = sd[t + "_depthwise_conv.weight"]  # (C,1,kh,kw) -> (kh,kw,C,1)
            put(p + "dw_conv", [dw.transpose(2, 3, 0, 1)])
            put(p + "dw_bn", _bn(sd, t + "_bn1"))
            put(p + "project_conv", [_conv(sd[t + "_project_conv.weight"])])
            put(p + "project_bn", _bn(sd, t + "_bn2"))
        put("head_conv", [_conv(sd["_conv_head.weight"])])
        put("head_bn", _bn(sd, "_bn1"))
        put("classifier", [sd["_fc.weight"].T, sd["_fc.bias"]])
    except KeyError as e:
        raise BaseModelError(f"EfficientNet-Lite checkpoint lacks tensor {e.args[0]}") from None
    extra = {k.split(".")[1] for k in sd if k.startswith("_blocks.")} - {
        str(i) for i in range(len(blocks(width, depth)))
    }
    if extra:
        raise BaseModelError(
            f"EfficientNet-Lite checkpoint has more blocks than width {width}, depth {depth}"
        )
    return out


def fold_batch_norms(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``convert_lite_state_dict`` output with every ``<x>_bn`` folded into its ``<x>_conv``:
    kernel * gamma / sqrt(var + eps), and bias beta - mean * gamma / sqrt(var + eps).

    In float64, rounded to float32 once: TensorFlow's converter folds them itself otherwise,
    with vectorised float32 kernels whose last bit differs between CPUs (an AVX-512 machine
    and an emulated Haswell gave 95 differing tensors), and those bits reach the int8 file."""
    out = {k: v for k, v in weights.items() if not k.split("/")[0].endswith("_bn")}
    for key in [k for k in weights if k.endswith("_conv/0")]:
        layer = key.split("/")[0]
        bn = layer.removesuffix("conv") + "bn"
        gamma, beta, mean, var = (weights[f"{bn}/{i}"].astype(np.float64) for i in range(4))
        scale = gamma / np.sqrt(var + np.float64(np.float32(BN_EPSILON)))
        kernel = weights[key].astype(np.float64)
        # Conv2D kernels are (kh, kw, in, out); depthwise ones (kh, kw, channels, 1).
        kernel = kernel * (scale[:, None] if layer.endswith("dw_conv") else scale)
        out[key] = kernel.astype(np.float32)
        out[f"{layer}/1"] = (beta - mean * scale).astype(np.float32)
    return out


def load_weights(model: keras.Model, weights: dict[str, np.ndarray]) -> None:
    """Set every layer's weights from ``convert_lite_state_dict`` output, checking shapes."""
    for layer in model.layers:
        current = layer.get_weights()
        if not current:
            continue
        new = [weights.get(f"{layer.name}/{i}") for i in range(len(current))]
        if any(w is None for w in new):
            raise BaseModelError(f"base weights lack layer {layer.name}")
        for have, want in zip(current, new, strict=True):
            if have.shape != want.shape:  # type: ignore[union-attr]
                raise BaseModelError(f"base weights for {layer.name}: shape {want.shape} != {have.shape}")  # type: ignore[union-attr]
        layer.set_weights(new)
