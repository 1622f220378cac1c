"""Turn a float Keras base network into a full-integer (int8) LiteRT model: a one-off step.

Conversion (this module and ``calibrate``) is the only use of TensorFlow. The int8 model is what every
training and inference runs, and integer accumulation gives the same features
on every CPU, where float kernels (chosen by CPUID, oneDNN, BLAS) do not.

Calibration runs the float network over a fixed representative set: the
real photos that scikit-image ships in its wheel (not any user's data), each
decoded by our own deterministic preprocessing and also mirrored, plus one
synthetic image holding pixel values 0 and 255 so that the input's range, and
so its quantisation, is exactly pixel/128 - 127/128 (scale 1/128, zero point -1).
That lets callers feed raw pixels shifted to int8, losslessly.

TensorFlow's own calibration ranges depend on the CPU's float kernels, so for the packaged bases they are replaced
by ranges computed in float64 (``calibrate``), which do not. The sha1 each packaged base must
convert to is still pinned in ``registry.BASES`` (it also pins TensorFlow's quantiser), and a
machine whose conversion differs is told to import the published file instead.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from model.bases.calibrate import with_exact_ranges
from model.bases.quiet import silenced
from model.data.images import decode_image
from model.errors import BaseModelError

#: skimage/data files used for calibration; colour photos of natural scenes and objects.
CALIBRATION_FILES = (
    "astronaut.png",
    "brick.png",
    "chelsea.png",
    "coffee.png",
    "color.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "retina.jpg",
    "rocket.jpg",
)
INPUT_MEAN = 127.0
INPUT_STD = 128.0


def tensorflow() -> Any:
    """Import TensorFlow quietly for a conversion, or say how to get it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        with silenced(1, 2):
            import tensorflow as tf
    except ImportError:
        raise BaseModelError(
            "converting a base network needs TensorFlow (pip install -r requirements-convert.txt, "
            "x86-64 only); or import the published int8 file with `stl base import FILE --base NAME`"
        ) from None
    return tf


def calibration_images(size: int) -> list[np.ndarray]:
    """The representative set as (size, size, 3) uint8 arrays, in a fixed order."""
    try:
        import skimage.data
    except ImportError:
        raise BaseModelError(
            "calibrating a base network needs scikit-image's sample photos "
            "(pip install -r requirements-convert.txt)"
        ) from None
    root = Path(skimage.data.__file__).parent
    out = []
    for name in CALIBRATION_FILES:
        pixels = decode_image((root / name).read_bytes(), size, 10**8, name)
        out += [pixels, np.ascontiguousarray(pixels[:, ::-1])]
    extremes = np.zeros((size, size, 3), np.uint8)
    extremes[::2] = 255
    return [*out, extremes]


def normalise(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - INPUT_MEAN) / INPUT_STD


def to_int8(
    keras_model: Any,
    size: int,
    exact: bool = False,
    residual: str = "own",
    images: list[np.ndarray] | None = None,
) -> bytes:
    """Full-integer conversion of ``keras_model`` (normalised float input -> pooled features).

    Input and output are int8; the input must come out as scale 1/128, zero point -1.
    ``exact``: calibrate with ``calibrate``'s float64 ranges (the pinned bases, whose graphs it
    runs); otherwise with TensorFlow's own, which vary with the CPU (imported bases, which
    are not pinned: their int8 file is stored once and travels by hash). ``residual``: how
    ``exact`` ranges a residual block's projection (``calibrate.RESIDUAL_RANGES``); ``images``:
    another representative set than ``calibration_images`` (benchmarks of calibration).
    """
    tf = tensorflow()
    images = calibration_images(size) if images is None else images

    def representative() -> Iterator[list[np.ndarray]]:
        for pixels in images:
            yield [normalise(pixels)[None]]

    ranges = exact_calibration if exact else lambda _images, _residual: contextlib.nullcontext()
    with silenced(1, 2), ranges([normalise(pixels)[None] for pixels in images], residual):
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return bytes(converter.convert())


@contextlib.contextmanager
def exact_calibration(images: list[np.ndarray], residual: str = "own") -> Iterator[None]:
    """Within this block TensorFlow's calibration gives the CPU-independent ranges of
    ``calibrate.with_exact_ranges`` over ``images`` (the same inputs it was fed)."""
    from tensorflow.lite.python.optimize import calibrator

    cls = calibrator.Calibrator
    init, calibrate = cls.__init__, cls.calibrate
    seen: dict[int, bytes] = {}

    def capture(self: Any, model_content: bytes, *args: Any, **kwargs: Any) -> None:
        seen[id(self)] = bytes(model_content)  # the float model, as TensorFlow will calibrate it
        init(self, model_content, *args, **kwargs)

    def exact(self: Any, dataset_gen: Any) -> bytes:
        return with_exact_ranges(calibrate(self, dataset_gen), seen[id(self)], images, residual)

    cls.__init__, cls.calibrate = capture, exact
    try:
        yield
    finally:
        cls.__init__, cls.calibrate = init, calibrate


def fresh_keras() -> Any:
    """Keras with its global name counters reset: layer names end up in the int8 file's tensor
    names, so a second conversion in one process would otherwise give other bytes."""
    tensorflow()  # before Keras picks its backend
    import keras

    keras.backend.clear_session()
    return keras


def normalised_input_model(core: Any, to_native: Any = None) -> Any:
    """Wrap ``core`` so it takes (x - 127) / 128 at any spatial size; ``to_native`` maps that
    to the core's own input convention (a Keras layer), if it differs."""
    import keras

    inputs = keras.Input((None, None, 3), name="image")
    x = to_native(inputs) if to_native is not None else inputs
    return keras.Model(inputs, core(x))


def lite_keras(
    state_dict: dict[str, np.ndarray],
    size: int,
    width: float = 1.0,
    depth: float = 1.0,
    name: str = "lite0",
    tap_stage: int = 0,
    folded: bool = True,
) -> Any:
    """EfficientNet-Lite (from its PyTorch state dict) in Keras, taking (pixel - 127) / 128.

    ``folded``: batch norms folded into the convolutions in float64 (what the int8 conversion
    takes); unfolded, it is the float network as published (what ``fidelity`` compares with)."""
    keras = fresh_keras()
    from model.bases.efficientnet_lite import (
        build_lite,
        convert_lite_state_dict,
        fold_batch_norms,
        load_weights,
    )

    model = build_lite(False, size, width, depth, f"efficientnet_{name}", tap_stage, folded=folded)
    weights = convert_lite_state_dict(state_dict, width, depth)
    load_weights(model, fold_batch_norms(weights) if folded else weights)
    # Our int8 input already is (pixel - 127) / 128: drop the model's own normalisation layer.
    core = keras.Model(model.get_layer("normalize").output, model.output)
    return normalised_input_model(core)


def keras_app_int8(name: str, h5_path: str, size: int) -> bytes:
    """A Keras-applications base (imported .h5 weights) as an int8 feature extractor."""
    keras = fresh_keras()

    if name == "mobilenet-v2":
        # MobileNetV2 expects [-1, 1]: our (p - 127) / 128 is that range to within 0.4%.
        core = keras.applications.MobileNetV2(
            include_top=False, weights=h5_path, input_shape=(None, None, 3), pooling="avg"
        )
        return to_int8(normalised_input_model(core), size)
    if name == "efficientnet-b0":
        # Keras' EfficientNetB0 normalises internally from 0..255.
        core = keras.applications.EfficientNetB0(
            include_top=False, weights=h5_path, input_shape=(None, None, 3), pooling="avg"
        )
        to_pixels = keras.layers.Rescaling(INPUT_STD, offset=INPUT_MEAN)
        return to_int8(normalised_input_model(core, to_pixels), size)
    raise BaseModelError(f"no converter for base {name}")
