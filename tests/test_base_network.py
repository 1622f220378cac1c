"""The int8 EfficientNet-Lite bases are the real ImageNet networks, converted to their pinned bytes."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from model.bases.litert import Int8Base
from model.bases.registry import BASES, ensure_base, import_base
from model.bases.torch_legacy import load_legacy_state_dict
from model.errors import BaseModelError
from store import LocalStore

LITE0 = BASES["efficientnet-lite0"]
#: Every packaged base, with the int8 sha1 its conversion gives (written here, not read from BASES,
#: so that changing a pin without the bytes fails) and its output quantisation.
PINNED = {
    "efficientnet-lite0": ("bc49998771f10ee503640d26bd579553c2da8373", 0.02046866901218891),
    "efficientnet-lite1": ("3d022d0d321755b6f7d7d3702c10a13c8f2160e6", None),
    "efficientnet-lite2": ("141fb4fb6a2da441d31bb0fa934973dfdb03a581", None),
    "efficientnet-lite2-multilayer": ("0abc6a2af126bb9be824d5eb7350aafc6f9e9389", None),
}


def test_every_packaged_base_is_pinned_here() -> None:
    assert {name for name, spec in BASES.items() if spec.packaged} == set(PINNED)


@pytest.fixture(scope="module", params=sorted(PINNED))
def converted(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Int8Base]:
    """A fresh conversion (empty cache, TensorFlow) of one packaged base, checked against its pin."""
    tmp = tmp_path_factory.mktemp("convert")
    store = LocalStore(tmp / "store")
    spec, sha1 = ensure_base(store, request.param, str(tmp / "empty-cache"))
    assert sha1 == PINNED[request.param][0] == spec.int8_sha1
    return request.param, Int8Base(store.get(sha1), request.param)


def _classifier(name: str) -> tuple[np.ndarray, np.ndarray]:
    """ImageNet's float classifier layer from the base's own PyTorch checkpoint."""
    module = importlib.import_module(BASES[name].module)
    model_file = next(v for k, v in vars(module).items() if k.endswith("ModelFile"))
    sd = load_legacy_state_dict(Path(model_file.get_model_file_path()).read_bytes())
    return sd["_fc.weight"].T.astype(np.float64), sd["_fc.bias"].astype(np.float64)


def _top5(name: str, base: Int8Base, photo: np.ndarray) -> list[int]:
    w, b = _classifier(name)
    size = BASES[name].native_size
    x = np.asarray(Image.fromarray(photo).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    logits = base.features(x[None])[0, :1280].astype(np.float64) @ w + b  # the head's features first
    return [int(i) for i in np.argsort(-logits)[:5]]


def test_conversion_gives_the_pinned_bytes(converted: tuple[str, Int8Base]) -> None:
    name, model = converted
    assert model.dim == BASES[name].feature_dim == (1400 if BASES[name].tap_stage else 1280)
    scale = PINNED[name][1]
    if scale is not None:
        assert (model.scale, model.zero_point) == (np.float32(scale), -128)


def test_chelsea_is_a_cat(converted: tuple[str, Int8Base]) -> None:
    top5 = _top5(*converted, skimage.data.chelsea())
    assert top5[0] in range(281, 286), top5  # tabby / tiger cat / Persian / Siamese / Egyptian cat


def test_coffee_is_espresso_or_cup(converted: tuple[str, Int8Base]) -> None:
    top5 = _top5(*converted, skimage.data.coffee())
    assert {967, 968} & set(top5), top5


def test_rocket_is_a_missile_projectile_or_shuttle(converted: tuple[str, Int8Base]) -> None:
    top5 = _top5(*converted, skimage.data.rocket())
    assert {657, 744, 812} & set(top5), top5


#: Mean cosine similarity to the float network over ``fidelity.held_out_images`` (84 views of 12
#: photos and scans that calibration never sees), per packaged base: TensorFlow's own calibration
#: of the same float network (measured at e9b5b3e on an AMD EPYC, where it gave int8 files
#: f7cc4ef3…, 7d311cd6…, 1157fddd…, 2f74fa0d…), and the pinned file's (same run). Issue 39: the
#: CPU-independent ranges must never be less faithful than TensorFlow's; 5-fold CV could not see it.
FIDELITY = {
    "efficientnet-lite0": (0.96954, 0.97106),
    "efficientnet-lite1": (0.96343, 0.96346),
    "efficientnet-lite2": (0.96249, 0.96500),
    "efficientnet-lite2-multilayer": (0.97835, 0.97958),
}


def test_every_pinned_base_is_at_least_as_faithful_as_tensorflows_calibration(
    converted: tuple[str, Int8Base],
) -> None:
    from model.bases.fidelity import cosines, float_features, float_network, held_out_images

    name, model = converted
    spec = BASES[name]
    pixels = held_out_images(spec.native_size)
    assert pixels.shape == (84, spec.native_size, spec.native_size, 3)
    reference = float_features(float_network(spec), pixels)
    assert reference.shape == (84, spec.feature_dim)
    mean = float(cosines(model, pixels, reference).mean())
    tensorflows, pinned = FIDELITY[name]
    # The float network's last bits vary by CPU; the mean moves by far less than 1e-5.
    assert abs(mean - pinned) < 2e-5, mean
    assert mean >= tensorflows


def test_published_file_imports_by_hash_and_a_wrong_one_is_refused(tmp_path: Path, base_cache: Path) -> None:
    published = tmp_path / "lite0.tflite"
    published.write_bytes(LocalStore(base_cache).get(LITE0.int8_sha1))
    store = LocalStore(tmp_path / "store")
    assert import_base(store, "efficientnet-lite0", published) == LITE0.int8_sha1
    assert ensure_base(store, "efficientnet-lite0", str(tmp_path / "no-cache"))[1] == LITE0.int8_sha1
    tampered = tmp_path / "tampered.tflite"
    tampered.write_bytes(published.read_bytes()[:-1] + b"\0")
    with pytest.raises(BaseModelError, match=f"but efficientnet-lite0 is pinned to {LITE0.int8_sha1}"):
        import_base(LocalStore(tmp_path / "other"), "efficientnet-lite0", tampered)


def test_imported_base_must_be_present(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="base mobilenet-v2 is not in the store; import its weight file"):
        ensure_base(LocalStore(tmp_path), "mobilenet-v2")


def test_a_float_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="is not a LiteRT model"):
        Int8Base(b"not a flatbuffer at all", "junk")


def test_batch_norms_fold_in_float64_and_round_once() -> None:
    from model.bases.efficientnet_lite import fold_batch_norms

    eps = float(np.float32(1e-3))
    # var + eps is 4 and 0.25 (to float32's precision): scales 3/2 and 1/0.5 = 2.
    gamma, beta, mean = np.float32([3.0, 1.0]), np.float32([0.5, -1.0]), np.float32([1.0, 2.0])
    var = np.float32([4.0 - eps, 0.25 - eps])
    kernel = np.float32([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, in=2, out=2): scaled per column
    weights = {"x_conv/0": kernel, "x_dw_conv/0": np.float32([[[[1.0], [1.0]]]])}  # (1, 1, 2, 1)
    for layer in ("x_", "x_dw_"):
        weights |= {f"{layer}bn/{i}": a for i, a in enumerate([gamma, beta, mean, var])}
    folded = fold_batch_norms(weights)
    assert sorted(folded) == ["x_conv/0", "x_conv/1", "x_dw_conv/0", "x_dw_conv/1"]
    scale = np.float64(gamma) / np.sqrt(np.float64(var) + eps)  # float64 throughout
    assert np.array_equal(folded["x_conv/0"], (np.float64(kernel) * scale).astype(np.float32))
    assert np.allclose(folded["x_conv/0"][0, 0], [[1.5, 4.0], [4.5, 8.0]], rtol=1e-6)
    assert np.array_equal(folded["x_dw_conv/0"][0, 0, :, 0], scale.astype(np.float32))
    assert np.array_equal(
        folded["x_conv/1"], (np.float64(beta) - np.float64(mean) * scale).astype(np.float32)
    )
    assert all(a.dtype == np.float32 for a in folded.values())


def test_calibration_ranges_are_each_tensors_own(tmp_path: Path) -> None:
    """A residual block's projection gets its own range, not the ADD's (TensorFlow's calibrator
    reads the ADD's input after the ADD overwrote it in place), and the ranges are float64's."""
    from model.bases.calibrate import exact_ranges
    from model.bases.quantize import fresh_keras

    keras = fresh_keras()
    import tensorflow as tf

    inputs = keras.Input((4, 4, 2))
    project = keras.layers.Conv2D(2, 1, use_bias=False, name="project")(inputs)
    added = keras.layers.Add()([project, inputs])
    model = keras.Model(inputs, added)
    model.get_layer("project").set_weights([np.float32([[[[-3.0, 0.0], [0.0, 0.5]]]])])
    float_model = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    image = np.arange(32, dtype=np.float32).reshape(1, 4, 4, 2) / 8  # 0 .. 3.875
    ranges = sorted(exact_ranges(float_model, [image]).values())
    x0, x1 = image[..., 0], image[..., 1]
    projected = (float(min((-3 * x0).min(), (0.5 * x1).min())), float(max((-3 * x0).max(), (0.5 * x1).max())))
    summed = (float(min((-2 * x0).min(), (1.5 * x1).min())), float(max((-2 * x0).max(), (1.5 * x1).max())))
    assert ranges == sorted([(0.0, 3.875), projected, summed])
    # TensorFlow's semantics, reproduced for issue 39's bench: the projection spans the ADD's range too.
    union = (min(projected[0], summed[0]), max(projected[1], summed[1]))
    assert union != projected
    shared = sorted(exact_ranges(float_model, [image], residual="add").values())
    assert shared == sorted([(0.0, 3.875), union, summed])
