"""Read a legacy-format PyTorch ``.pth`` state dict without torch and without trusting it.

The legacy format (torch < 1.6) is a sequence of pickles followed by raw storage
bytes: magic number, protocol version, system info, the state dict (whose
tensors point at storages through persistent ids), the list of storage keys,
then for each storage an int64 element count and its little-endian data.

Pickle executes whatever globals the file names, so the unpickler here allows
only the handful of names a state dict needs and refuses anything else: a
malicious file fails with ``UnsafePickle`` instead of running code.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import struct
from typing import Any

import numpy as np

from model.errors import BaseModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: torch storage class name -> numpy dtype
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsafePickle(BaseModelError):
    """The pickle names a global outside the allow-list."""


class _StorageType:
    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = STORAGE_DTYPES[name]


class _Storage:
    def __init__(self, key: str, dtype: np.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel
        self.array: np.ndarray | None = None


class _TensorRef:
    """A tensor waiting for its storage's bytes, which come after the pickle."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)

    def materialize(self) -> np.ndarray:
        base = self.storage.array
        assert base is not None
        self.check_bounds(len(base))
        if not self.size:
            return base[self.offset : self.offset + 1].reshape(()).copy()
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.size, strides=[s * item for s in self.stride]
        )
        return np.ascontiguousarray(view)

    def check_bounds(self, numel: int) -> None:
        """Refuse a view that would read outside its storage (as_strided trusts its arguments)."""
        size, stride, offset = self.size, self.stride, self.offset
        ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (*size, *stride, offset))
        if not ints or len(size) != len(stride) or len(size) > 8:
            raise BaseModelError("corrupt torch checkpoint: a tensor has a malformed shape or stride")
        if offset < 0 or any(n < 0 for n in size) or any(s < 0 for s in stride):
            raise BaseModelError("corrupt torch checkpoint: a tensor has a negative offset, size or stride")
        if math.prod(size) > numel:
            # A dense state dict never has more elements than its storage; this would only allocate.
            raise BaseModelError(
                f"corrupt torch checkpoint: a tensor of shape {size} over a storage of {numel}"
            )
        if any(n == 0 for n in size):
            if offset > numel:
                raise BaseModelError("corrupt torch checkpoint: a tensor starts past the end of its storage")
            return
        last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if last >= numel:
            raise BaseModelError(
                f"corrupt torch checkpoint: a tensor of shape {size} reaches element {last} "
                f"of a storage of {numel}"
            )


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: tuple, stride: tuple, *_rest: Any) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise UnsafePickle("tensor rebuilt from something that is not a storage")
    if not isinstance(size, tuple) or not isinstance(stride, tuple) or not isinstance(offset, int):
        raise UnsafePickle("tensor rebuilt with a malformed offset, size or stride")
    return _TensorRef(storage, offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedIOBase, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickle(f"refusing to unpickle global {module}.{name}: not a tensor-rebuild name")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage" and len(pid) >= 5):
            raise UnsafePickle(f"unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid[:5]
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(stype, _StorageType) or view is not None:
            raise UnsafePickle("unsupported storage reference in pickle")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, stype.dtype, int(numel))
        return self._storages[key]


def load_legacy_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """Parse a legacy ``.pth`` state dict into numpy arrays, refusing unsafe pickles."""
    if data[:2] == b"PK":
        raise BaseModelError("zip-format torch checkpoints are not supported; expected the legacy format")
    f = io.BytesIO(data)
    storages: dict[str, _Storage] = {}
    try:
        magic = _RestrictedUnpickler(f, storages).load()
        protocol = _RestrictedUnpickler(f, storages).load()
        if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL:
            raise BaseModelError("not a legacy torch checkpoint (bad magic number or protocol)")
        sys_info = _RestrictedUnpickler(f, storages).load()
        if not (isinstance(sys_info, dict) and sys_info.get("little_endian") is True):
            raise BaseModelError("only little-endian torch checkpoints are supported")
        state = _RestrictedUnpickler(f, storages).load()
        keys = _RestrictedUnpickler(f, storages).load()
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError) as e:
        raise BaseModelError(f"corrupt torch checkpoint: {e}") from None
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise BaseModelError("torch checkpoint does not hold a state dict")
    for key in keys:
        st = storages.get(str(key))
        header = f.read(8)
        if st is None or len(header) != 8:
            raise BaseModelError("corrupt torch checkpoint: storage table does not match the pickle")
        (numel,) = struct.unpack("<q", header)
        raw = f.read(numel * st.dtype.itemsize)
        if numel != st.numel or len(raw) != numel * st.dtype.itemsize:
            raise BaseModelError(f"corrupt torch checkpoint: storage {key} is truncated")
        st.array = np.frombuffer(raw, dtype=st.dtype)
    out: dict[str, np.ndarray] = {}
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise BaseModelError(f"state dict entry {name!r} is not a tensor")
        out[str(name)] = ref.materialize()
    return out
