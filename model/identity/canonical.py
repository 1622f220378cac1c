"""The two facts every hash in the project rests on: the code version and canonical JSON.

A leaf: recipes, cache keys and manifests all hash ``canonical_json`` of their fields,
and each names ``CODE_VERSION`` so that a change to the code that shapes bytes can
never reuse an old name.
"""

from __future__ import annotations

import json
from typing import Any

#: Version of the code paths that shape a model's bytes (decode, resize, features, head).
#: stl-2: int8 base on LiteRT/XNNPACK and a float64 exact-arithmetic head, portable across CPUs.
#: stl-3: views (mirror, crops), the converged logistic head, temperature; contiguous exact matmul.
#: stl-4: integer features (int8 view sums) and the head's products exact on BLAS, fits in lockstep.
CODE_VERSION = "stl-4"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII: the same value always gives the same bytes."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode()
