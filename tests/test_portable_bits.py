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
from dispatch_env import clean_dispatch_env
from stl_testing import REPO, run_stl

from model.bases.litert import Int8Base
from model.bases.registry import BASES
from model.config import Settings
from model.context import Context
from model.data.fetch import FetchPolicy
from model.training.pipeline import prepare_recipe
from store import LocalStore

BASE_SHA1 = "bc49998771f10ee503640d26bd579553c2da8373"  # efficientnet-lite0
DEFAULT_BASE_SHA1 = "141fb4fb6a2da441d31bb0fa934973dfdb03a581"  # efficientnet-lite2, the default
#: `stl train example-data/train.csv --seed 7` (every other setting at its default: Lite2, the
#: mirrored and center views, the logistic head with 5-fold CV and a temperature, every photo).
EXAMPLE = {
    "base_sha1": DEFAULT_BASE_SHA1,
    "csv_sha1": "31648560fba7a670b2c977b2a93cbfbf9b2bdbf2",
    "model_sha1": "ff5e220d10a9d4f89f357c57a38d85740fccbc58",  # the recipe's sha1
    "weights_sha1": "51095d5942c2d70b52eefb4ebbec222f694339c2",
    "manifest_sha1": "2f48109328c75e661c82fee4b70fe736ce524eb0",
    "status": "ready",
    "validation_accuracy": 0.986111,
    "data_limit": "all",  # not part of any hash: the train output says what the recipe used
}
#: sha1 of `stl infer`'s stdout for the three example-data/infer PNGs and the two JPEGs.
INFER_STDOUT_SHA1 = "da4f149a3154e20a2a4531492dca802402e85e5f"
INFER_IMAGES = [
    "example-data/infer/checks.png",
    "example-data/infer/dots.png",
    "example-data/infer/stripes.png",
    "tests/data/coffee-progressive.jpg",
    "tests/data/rocket.jpg",
]
#: Under qemu a whole default training (144 Lite2 runs) takes too long; this recipe takes every
#: code path the default takes (mirror and crop views, CV over the grid in lockstep, temperature)
#: on the cheaper base and size. The default base's own kernels are in the emulated probe.
EMULATED_FLAGS = [
    "--base",
    "efficientnet-lite0",
    "--views",
    "original,mirrored,top-right",
    "--image-size",
    "128",
]
EMULATED_EXAMPLE = {
    "base_sha1": BASE_SHA1,
    "csv_sha1": "31648560fba7a670b2c977b2a93cbfbf9b2bdbf2",
    "model_sha1": "5908a507221d75265ab6dbdd95aadb215bc3bcf6",
    "weights_sha1": "804ca2e022a22f562543f0a2247b65a7845d37a5",
    "manifest_sha1": "53204d72cb8b580cda2ca2aa4466ad13d710c5d2",
    "status": "ready",
    "validation_accuracy": 0.958333,
    "data_limit": "all",
}
EMULATED_INFER_STDOUT_SHA1 = "5b3772c5ac230b7490e4a079c1416424df18f7ef"
#: tests/portable_probe.py: decoded tensors and features of PNGs and JPEGs, and exact softmax.
PROBE = {
    "features:checks-000.png": "0258f544506766d5924b773bd210f27cf9f1defb",
    "features:coffee-progressive.jpg": "aac2ca046890be3b306142cf8e3867fd6201db78",
    "features:dots.png": "c481c4e6057d4c6dfa2c46e0b449cf3b81d0bfd2",
    "features:rocket.jpg": "d48bb61dddfe2eda79feeadff72a1de61d8cc0bd",
    "features:rocket.jpg:crops": "f25572057d59ff514dc5c5134c97e80c0abe98f0",
    "logistic": "55afbf34759ce05ea3530381c01da88e2c8c38ea",
    "probabilities": "74eaaf0f3d454192d327ed9a5984ff8198436ec1",
    "tensor:checks-000.png": "1969b33b2a2d00adc41f9637276eaf9fa5277446",
    "tensor:coffee-progressive.jpg": "ab2bc3d0fb6722b5ab4558d0555912ac50ceb543",
    "tensor:dots.png": "a777ae6c5ccba49bfc0314ddd4b34aaf683ff58c",
    "tensor:rocket.jpg": "3e13331c930a8fee5040aee3b5bf5a4be9ec2d71",
}
PROBE_DEFAULT_BASE = {
    "features:checks-000.png": "eb5927a287a7fc2d4e9c4b1f837d51d6ee271a5c",
    "features:coffee-progressive.jpg": "695faf2263f8a26931eda59b77dd95b39540b08f",
    "features:dots.png": "2ed65264318d7e446b1b2ab45d18509251307913",
    "features:rocket.jpg": "7d22f8c84983a84d99ef1c9caf5b28084db566a6",
    "features:rocket.jpg:crops": "a1367a33a32cf07e1d421cd290a0eee9d4537139",
    "logistic": "065b89b637bf009bead6b091af0a86adf1ebe1a2",
    "probabilities": "89038dcd7112e3031f599e9e5f562596af87e2d1",
    "tensor:checks-000.png": "c600c308e692a9dfa4e3ef60838409a49ee5574f",
    "tensor:coffee-progressive.jpg": "4361252ded5b23ea85cfcffb5dc66b906287d0f1",
    "tensor:dots.png": "d2bb7b5d828e8bcb59a3f94ad31f9650f3f4cd13",
    "tensor:rocket.jpg": "6b7d93ed875d1d51e192c3f2dc13e5f69fafe2bd",
}
#: OpenBLAS kernel families to force (OPENBLAS_CORETYPE); SkylakeX needs AVX-512 on this CPU.
#: The head's products run on numpy's BLAS, exact by construction: these prove that no kernel
#: family changes a bit.
OPENBLAS_CORES = ["Nehalem", "Sandybridge", "Haswell"] + (
    ["SkylakeX"] if "avx512f" in Path("/proc/cpuinfo").read_text().split() else []
)
DISPATCH_VARIANTS = {
    "oneDNN SSE4.1": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "oneDNN AVX": {"ONEDNN_MAX_CPU_ISA": "AVX"},
    "oneDNN opts on": {"TF_ENABLE_ONEDNN_OPTS": "1"},
    "numpy without x86-64-v3": {"NPY_DISABLE_CPU_FEATURES": "X86_V3"},
    **{f"OpenBLAS {core}": {"OPENBLAS_CORETYPE": core} for core in OPENBLAS_CORES},
}
EMULATED_CPUS = ["Haswell", "SandyBridge", "Westmere"]
#: What a caller's shell may export: a kernel forced for the host CPU (AVX2), which none of the
#: emulated CPUs but Haswell can run. Emulated runs must not inherit it (tests/dispatch_env.py).
HOSTILE_EXPORTS = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_VERBOSE": "2"}


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


def _train_and_infer(
    tmp: Path,
    env: dict[str, str],
    prefix: list[str] | None = None,
    flags: tuple[str, ...] = (),
    base_env: dict[str, str] | None = None,
) -> tuple[dict, str]:
    data = tmp / "data"
    train = run_stl(["train", "example-data/train.csv", "--seed", "7", *flags], data, env, prefix, base_env)
    assert train.code == 0, train.err[-2000:]
    infer = run_stl(
        ["infer", "--model", train.json["model_sha1"], *INFER_IMAGES], data, env, prefix, base_env
    )
    assert infer.code == 0, infer.err[-2000:]
    return train.json, hashlib.sha1(infer.out.encode()).hexdigest()


def test_example_recipe_hash_is_golden(tmp_path: Path, base_cache: Path) -> None:
    store = LocalStore(tmp_path / "data")
    settings = Settings(base_cache=str(base_cache))  # the session's cache, never the user's own
    ctx = Context(settings, store, FetchPolicy())
    recipe = prepare_recipe(ctx, {"random_seed": 7}, str(REPO / "example-data/train.csv"), None)
    assert recipe.base_sha1 == DEFAULT_BASE_SHA1 == BASES["efficientnet-lite2"].int8_sha1
    assert recipe.sha1 == EXAMPLE["model_sha1"]


def test_tensors_features_and_probabilities_are_golden(base_cache: Path) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from portable_probe import probe

    assert probe(LocalStore(base_cache).get(BASE_SHA1)) == PROBE
    assert probe(LocalStore(base_cache).get(DEFAULT_BASE_SHA1), 260) == PROBE_DEFAULT_BASE


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
    # Each variant alone, on a clean environment: what the caller exports does not mix in.
    env = {**no_tensorflow, **DISPATCH_VARIANTS[variant]}
    trained, infer_sha1 = _train_and_infer(tmp_path, env, base_env=clean_dispatch_env())
    assert (trained, infer_sha1) == (EXAMPLE, INFER_STDOUT_SHA1)


@pytest.mark.parametrize("core", OPENBLAS_CORES)
def test_openblas_variants_load_the_kernels_they_name(core: str) -> None:
    """A variant that OpenBLAS ignored would prove nothing: it says which core it loaded."""
    env = {**clean_dispatch_env(), "OPENBLAS_CORETYPE": core, "OPENBLAS_VERBOSE": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", "import numpy"], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert f"Core: {core}" in (proc.stdout + proc.stderr).splitlines()


def test_clean_dispatch_env_drops_forcing_variables_only() -> None:
    caller = {
        "PATH": "/usr/bin",
        "OPENBLAS_NUM_THREADS": "1",  # a thread count forces no kernel: kept
        "STL_BASE_CACHE": "/x",
        **HOSTILE_EXPORTS,
        "OPENBLAS_L2_SIZE": "1048576",
        "NPY_DISABLE_CPU_FEATURES": "X86_V3",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "DNNL_MAX_CPU_ISA": "AVX2",
        "TF_ENABLE_ONEDNN_OPTS": "1",
        "QEMU_CPU": "max",
    }
    assert clean_dispatch_env(caller) == {
        "PATH": "/usr/bin",
        "OPENBLAS_NUM_THREADS": "1",
        "STL_BASE_CACHE": "/x",
    }


@pytest.mark.emulated
@pytest.mark.parametrize("cpu", EMULATED_CPUS)
@pytest.mark.parametrize("base", ["lite0", "lite2"])
def test_probe_is_golden_on_emulated_cpus(
    cpu: str, base: str, base_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a host-only OpenBLAS kernel exported, as a user's shell may have it."""
    for name, value in HOSTILE_EXPORTS.items():
        monkeypatch.setenv(name, value)
    qemu = _qemu()
    sha1, size, golden = (
        (BASE_SHA1, 224, PROBE) if base == "lite0" else (DEFAULT_BASE_SHA1, 260, PROBE_DEFAULT_BASE)
    )
    path = LocalStore(base_cache).object_path(sha1)
    proc = subprocess.run(
        [qemu, "-cpu", cpu, sys.executable, str(REPO / "tests/portable_probe.py"), str(path), str(size)],
        capture_output=True,
        text=True,
        env=clean_dispatch_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == golden


#: The default recipe's fields besides the CSV (checked against the example manifest).
EXAMPLE_RECIPE = {
    "random_seed": 7,
    "base": "efficientnet-lite2",
    "base_sha1": DEFAULT_BASE_SHA1,
    "image_size": 260,
    "views": ["mirrored", "center"],
    "head": "logistic",
    "calibrate": True,
    "train_percentage": 100,
    "l2": -1.0,
    "epochs": 0,
    "batch_size": 0,
    "learning_rate": 0,
    "data_limit": 0,
}


def test_example_manifest_is_the_default_recipe(tmp_path: Path, no_tensorflow: dict[str, str]) -> None:
    trained, _ = _train_and_infer(tmp_path, no_tensorflow)
    manifest = json.loads(LocalStore(tmp_path / "data").get(trained["manifest_sha1"]))
    assert {k: manifest["recipe"][k] for k in EXAMPLE_RECIPE} == EXAMPLE_RECIPE
    assert manifest["training"]["head"] == "logistic" and manifest["training"]["converged"]
    assert manifest["metrics"]["validation_source"] == "5-fold cross-validation on the training photos"


@pytest.mark.emulated
@pytest.mark.parametrize("cpu", ["SandyBridge", "Haswell"])
def test_full_example_training_is_golden_on_emulated_cpus(
    tmp_path: Path, cpu: str, no_tensorflow: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole `stl train` and `stl infer` of the example request under qemu, with a host-only
    kernel exported by the caller (SandyBridge has no AVX2)."""
    for name, value in HOSTILE_EXPORTS.items():
        monkeypatch.setenv(name, value)
    prefix = [_qemu(), "-cpu", cpu]
    trained, infer_sha1 = _train_and_infer(
        tmp_path, no_tensorflow, prefix, tuple(EMULATED_FLAGS), clean_dispatch_env()
    )
    assert (trained, infer_sha1) == (EMULATED_EXAMPLE, EMULATED_INFER_STDOUT_SHA1)


def test_emulated_recipe_is_golden_natively(tmp_path: Path, no_tensorflow: dict[str, str]) -> None:
    trained, infer_sha1 = _train_and_infer(tmp_path, no_tensorflow, flags=tuple(EMULATED_FLAGS))
    assert (trained, infer_sha1) == (EMULATED_EXAMPLE, EMULATED_INFER_STDOUT_SHA1)
    recipe = json.loads(LocalStore(tmp_path / "data").get(trained["manifest_sha1"]))["recipe"]
    defaults = {
        k: v for k, v in EXAMPLE_RECIPE.items() if k not in ("base", "base_sha1", "views", "image_size")
    }
    assert {k: recipe[k] for k in defaults} == defaults  # the same head settings as the default


def test_features_of_a_batch_equal_features_of_each_image_alone(base_cache: Path) -> None:
    from model.data.images import decode_image

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
