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
    "efficientnet-lite0": ("f7cc4ef30e82c333a019380c3544deb14b772b9b", 0.020468657836318016),
    "efficientnet-lite1": ("7d311cd68482e1457066190dd57bdbf7af8a1ce1", None),
    "efficientnet-lite2": ("1157fdddd48e2b881de64100a3fef8d03c6a7e99", None),
    "efficientnet-lite2-multilayer": ("2f74fa0d1bc48dbd88f92e150b052bab39be27f6", None),
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
