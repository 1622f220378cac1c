"""Byte-stable tensor files in the safetensors layout.

We write the format ourselves rather than through the safetensors library so
that the bytes are fixed by construction: header keys sorted, no free-form
metadata (whose map the library writes in arbitrary order), tensors laid out
in name order, header padded with spaces to 8 bytes. Any safetensors reader can
load the result; nothing here can execute code on load, unlike pickle.
"""

from __future__ import annotations

import json
import struct

import numpy as np

_DTYPES = {
    "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"),
    "U8": np.dtype("u1"),
    "I16": np.dtype("<i2"),
    "I64": np.dtype("<i8"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
MAX_HEADER = 100 * 1024 * 1024


class TensorFormatError(ValueError):
    pass


def dump_tensors(tensors: dict[str, np.ndarray]) -> bytes:
    header: dict[str, dict] = {}
    chunks: list[bytes] = []
    offset = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype not in _NAMES:
            raise TensorFormatError(f"unsupported dtype {a.dtype} for tensor {name}")
        raw = a.astype(dtype, copy=False).tobytes()
        header[name] = {
            "dtype": _NAMES[dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def load_tensors(data: bytes) -> dict[str, np.ndarray]:
    if len(data) < 8:
        raise TensorFormatError("tensor file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise TensorFormatError("tensor file header length is invalid")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError:
        raise TensorFormatError("tensor file header is not JSON") from None
    body = memoryview(data)[8 + n :]
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(info.get("dtype"))
        start, end = info.get("data_offsets", [0, -1])
        shape = tuple(info.get("shape", ()))
        if dtype is None or not 0 <= start <= end <= len(body):
            raise TensorFormatError(f"tensor {name} has a bad dtype or offsets")
        count = int(np.prod(shape)) if shape else 1
        if count * dtype.itemsize != end - start:
            raise TensorFormatError(f"tensor {name} size does not match its shape")
        out[name] = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
    return out
