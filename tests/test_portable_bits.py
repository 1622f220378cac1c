"""One recipe, the same bytes on every CPU: golden hashes, written here as literals.

Each literal is a deliberate CODE_VERSION decision: if one changes, the
commit says why. They are checked natively (this machine has AVX-512 VNNI),
under CPU-dispatch settings, and under qemu-emulated x86 CPUs without AVX-512
(Haswell: AVX2+FMA; SandyBridge: AVX, no AVX2/FMA; Westmere: no AVX at all).
aarch64 is checked by bench/cross_check_aarch64.sh (`make cross-check`).
Training and inference run with TensorFlow made unimportable, proving they
never touch it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from stl_testing import REPO, run_stl

from model.bases.litert import Int8Base
from model.bases.registry import BASES
from model.config import Settings
from model.fetch import FetchPolicy
from model.pipeline import prepare_recipe
from store import LocalStore

BASE_SHA1 = "f7cc4ef30e82c333a019380c3544deb14b772b9b"
#: `stl train example-data/train.csv --seed 7` (every other setting at its default).
EXAMPLE = {
    "base_sha1": BASE_SHA1,
    "csv_sha1": "31648560fba7a670b2c977b2a93cbfbf9b2bdbf2",
    "model_sha1": "bb70eb7de9b376854c202549d79a316dd9850b10",  # the recipe's sha1
    "weights_sha1": "c7b4a743a525d37d045951129084bd482d8a7eab",
    "manifest_sha1": "136b67122b4e74bd67183b47d4366265ec2537e6",
    "status": "ready",
    "validation_accuracy": 1.0,
}
#: sha1 of `stl infer`'s stdout for the three example-data/infer PNGs and the two JPEGs.
INFER_STDOUT_SHA1 = "37937543e9e24c53b3f2b8bae0cb5a9f1807090c"
INFER_IMAGES = [
    "example-data/infer/checks.png",
    "example-data/infer/dots.png",
    "example-data/infer/stripes.png",
    "tests/data/coffee-progressive.jpg",
    "tests/data/rocket.jpg",
]
#: tests/portable_probe.py: decoded tensors and features of PNGs and JPEGs, and exact softmax.
PROBE = {
    "features:checks-000.png": "3422a6ceb2ae94d3122347ef4270a78c5ff9c55e",
    "features:coffee-progressive.jpg": "1d896a366649e6db48000714c2af83c9343f8505",
    "features:dots.png": "f4c834d8bb6f62f311cb220e8f0ffb4181078cc5",
    "features:rocket.jpg": "eb6c8b0725216a4a09b3707eb90211752b99b3fd",
    "probabilities": "deb218190e8be714d84783c7e887e3e9e19f0406",
    "tensor:checks-000.png": "1969b33b2a2d00adc41f9637276eaf9fa5277446",
    "tensor:coffee-progressive.jpg": "ab2bc3d0fb6722b5ab4558d0555912ac50ceb543",
    "tensor:dots.png": "a777ae6c5ccba49bfc0314ddd4b34aaf683ff58c",
    "tensor:rocket.jpg": "3e13331c930a8fee5040aee3b5bf5a4be9ec2d71",
}
DISPATCH_VARIANTS = {
    "oneDNN SSE4.1": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "oneDNN AVX": {"ONEDNN_MAX_CPU_ISA": "AVX"},
    "oneDNN opts on": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "numpy without x86-64-v3": {"NPY_DISABLE_CPU_FEATURES": "X86_V3"},
    "OpenBLAS Sandybridge": {"OPENBLAS_CORETYPE": "Sandybridge"},
}
EMULATED_CPUS = ["Haswell", "SandyBridge", "Westmere"]


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment in which `import tensorflow` (or keras) fails, for subprocesses."""
    shim = tmp_path_factory.mktemp("no-tf")
    for name in ("tensorflow", "keras"):
        (shim / name).mkdir()
        (shim / name / "__init__.py").write_text(f"raise ImportError('{name} must not be imported here')\n")
    return {"PYTHONPATH": os.pathsep.join([str(shim), str(REPO)])}


def _qemu() -> str:
    path = shutil.which("qemu-x86_64")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(
                "qemu-x86_64 is missing (Debian package qemu-user): CI must run the emulated-CPU checks"
            )
        pytest.skip("qemu-x86_64 not installed (Debian package qemu-user)")
    return path


def _train_and_infer(tmp: Path, env: dict[str, str], prefix: list[str] | None = None) -> tuple[dict, str]:
    data = tmp / "data"
    train = run_stl(["train", "example-data/train.csv", "--seed", "7"], data, env=env, prefix=prefix)
    assert train.code == 0, train.err[-2000:]
    infer = run_stl(["infer", "--model", EXAMPLE["model_sha1"], *INFER_IMAGES], data, env=env, prefix=prefix)
    assert infer.code == 0, infer.err[-2000:]
    return train.json, hashlib.sha1(infer.out.encode()).hexdigest()


def test_example_recipe_hash_is_golden(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    recipe = prepare_recipe(
        store, Settings(), {"random_seed": 7}, str(REPO / "example-data/train.csv"), None, FetchPolicy()
    )
    assert recipe.base_sha1 == BASE_SHA1 == BASES["efficientnet-lite0"].int8_sha1
    assert recipe.sha1 == EXAMPLE["model_sha1"]


def test_tensors_features_and_probabilities_are_golden(base_cache: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from portable_probe import probe

    assert probe(LocalStore(base_cache).get(BASE_SHA1)) == PROBE


def test_example_training_and_inference_are_golden_without_tensorflow(
    tmp_path: Path, no_tensorflow: dict[str, str]
) -> None:
    trained, infer_sha1 = _train_and_infer(tmp_path, no_tensorflow)
    assert trained == EXAMPLE
    assert infer_sha1 == INFER_STDOUT_SHA1
    manifest = json.loads(LocalStore(tmp_path / "data").get(EXAMPLE["manifest_sha1"]))
    assert manifest["numeric_path"]["base_runtime"] == "litert-xnnpack-int8"
    assert "environment" not in manifest and "cpu_flags" not in json.dumps(manifest)


@pytest.mark.parametrize("variant", sorted(DISPATCH_VARIANTS))
def test_example_training_is_golden_under_cpu_dispatch_settings(
    tmp_path: Path, variant: str, no_tensorflow: dict[str, str]
) -> None:
    trained, infer_sha1 = _train_and_infer(tmp_path, {**no_tensorflow, **DISPATCH_VARIANTS[variant]})
    assert (trained, infer_sha1) == (EXAMPLE, INFER_STDOUT_SHA1)


@pytest.mark.parametrize("cpu", EMULATED_CPUS)
def test_probe_is_golden_on_emulated_cpus(cpu: str, base_cache: Path) -> None:
    qemu = _qemu()
    base = LocalStore(base_cache).object_path(BASE_SHA1)
    proc = subprocess.run(
        [qemu, "-cpu", cpu, sys.executable, str(REPO / "tests/portable_probe.py"), str(base)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == PROBE


@pytest.mark.parametrize("cpu", ["SandyBridge", "Haswell"])
def test_full_example_training_is_golden_on_emulated_cpus(
    tmp_path: Path, cpu: str, no_tensorflow: dict[str, str]
) -> None:
    """A whole `stl train` and `stl infer` of the example request under qemu."""
    trained, infer_sha1 = _train_and_infer(tmp_path, no_tensorflow, prefix=[_qemu(), "-cpu", cpu])
    assert (trained, infer_sha1) == (EXAMPLE, INFER_STDOUT_SHA1)


def test_features_of_a_batch_equal_features_of_each_image_alone(base_cache: Path) -> None:
    from model.images import decode_image

    base = Int8Base(LocalStore(base_cache).get(BASE_SHA1))
    paths = sorted((REPO / "example-data/images").glob("*/00[0-2].png")) + sorted(
        (REPO / "tests/data").glob("*")
    )
    pixels = np.stack([decode_image(p.read_bytes(), 160, 10**8) for p in paths if p.suffix != ".md"])
    batch = base.features(pixels)
    alone = np.concatenate([base.features(pixels[i : i + 1]) for i in range(len(pixels))])
    reversed_batch = base.features(pixels[::-1])[::-1]
    assert len(pixels) == 11
    assert batch.tobytes() == alone.tobytes() == reversed_batch.tobytes()
