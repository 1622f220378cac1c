"""A model trained before integer features (code version stl-3) stays servable, bit for bit.

tests/fixtures/stl3-model holds the manifest, row table and weights that `stl train
example-data/train.csv --seed 7` wrote at stl-3 (commit 6d29c2b); that code's `stl infer` on the
five probe images printed output with sha1 ``STL3_INFER_STDOUT_SHA1``. Today's code must print
the same bytes: a float-feature head is served on float features, through the same arithmetic.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from stl_testing import REPO, run_stl
from test_portable_bits import INFER_IMAGES

from store import LocalStore

FIXTURE = REPO / "tests/fixtures/stl3-model"
STL3_MODEL = "59850a5786090bed4a0a5eef7503c029d9fd421c"
STL3_MANIFEST = "eba66de2e55ec725a377379315709d463fb3d2ff"
#: `stl infer` at 6d29c2b (stl-3) on INFER_IMAGES with that model (its INFER_STDOUT_SHA1 then).
STL3_INFER_STDOUT_SHA1 = "f34aaf91a0e0772fbaef21d8170a784f4c455938"


def test_an_stl3_model_labels_as_it_did(tmp_path: Path, base_cache: Path) -> None:
    data = tmp_path / "data"
    store = LocalStore(data)
    for path in sorted(FIXTURE.iterdir()):
        assert store.put(path.read_bytes()) == path.name  # the fixture is what it says it is
    store.set_ref(f"models/{STL3_MODEL}/manifest", STL3_MANIFEST.encode())
    manifest = json.loads(store.get(STL3_MANIFEST))
    assert manifest["recipe"]["code_version"] == "stl-3"
    base = manifest["recipe"]["base_sha1"]
    store.put(LocalStore(base_cache).get(base))  # the pinned base, as the session converted it
    infer = run_stl(["infer", "--model", STL3_MODEL, *INFER_IMAGES], data)
    assert infer.code == 0, infer.err[-2000:]
    assert hashlib.sha1(infer.out.encode()).hexdigest() == STL3_INFER_STDOUT_SHA1
