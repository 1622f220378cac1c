"""Reproduce a model from its stored inputs in a fresh process and compare every stage.

The inputs named by the manifest (CSV, images, base weights) are copied,
verified, into a scratch store with no caches; the recipe is rebuilt there by
a new Python process, so nothing computed or memoised by this one can leak in.
The comparison walks the pipeline in order — base conversion, tensors,
features, weights — and names the first stage whose hash differs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from model.bases.registry import ensure_base_with
from model.config import Settings
from model.data.fetch import FetchPolicy
from model.identity.manifest import load_manifest, manifest_rows, manifest_sha1, missing_objects
from model.identity.recipe import Recipe
from model.identity.refs import base_ref
from store import LocalStore, ObjectStore

if TYPE_CHECKING:  # the pipeline itself is imported only where a rebuild runs
    from model.training.pipeline import Progress


def copy_inputs(
    src: ObjectStore, dst: ObjectStore, manifest: dict[str, Any], tick: Callable[[], Any]
) -> None:
    """Copy the CSV, the images and the int8 base (each verified on read) into ``dst``; ``tick``
    after each image.

    The base is an input like the images, named by its sha1: a verifier on a
    machine without TensorFlow (aarch64) rebuilds from the same int8 bytes.
    """
    recipe = Recipe.from_dict(manifest["recipe"])
    for sha1 in [
        recipe.csv_sha1,
        *(sha1 for _name, sha1 in recipe.bases()),
    ]:
        dst.put(src.get(sha1))
    copied = set()
    for row in manifest_rows(src, manifest):
        if row["image_sha1"] not in copied:
            dst.put(src.get(row["image_sha1"]))
            copied.add(row["image_sha1"])
            tick()
    for name, _sha1 in recipe.bases():
        raw = src.get_ref(base_ref(name))
        if raw is not None:
            dst.set_ref(base_ref(name), raw)


def rebuild_in_store(
    scratch: str, recipe_dict: dict[str, Any], progress: Progress | None = None
) -> dict[str, Any]:
    """Train ``recipe`` from the inputs in the scratch store; report every stage's hashes."""
    from model.context import Context
    from model.training.pipeline import train_model

    store = LocalStore(scratch)
    recipe = Recipe.from_dict(recipe_dict)
    settings = Settings.from_env()
    for name, want in recipe.bases():
        _spec, base_sha1 = ensure_base_with(settings, store, name)
        if base_sha1 != want:
            return {"base_sha1": base_sha1}
    base_sha1 = recipe.base_sha1
    out = train_model(Context(settings, store, FetchPolicy(allow_paths=False)), recipe, None, progress)
    return {
        "base_sha1": base_sha1,
        "weights_sha1": out["weights_sha1"],
        "manifest_sha1": out["manifest_sha1"],
    }


def _first_difference(
    store: ObjectStore, manifest: dict[str, Any], scratch: ObjectStore, rebuilt: dict[str, Any]
) -> tuple[str, str] | None:
    recipe = manifest["recipe"]
    if rebuilt["base_sha1"] != recipe["base_sha1"]:
        return "base", f"base weights rebuilt as {rebuilt['base_sha1']}, manifest has {recipe['base_sha1']}"
    again = load_manifest(scratch, manifest["model_sha1"])
    for stage, field in (("tensor", "tensor_sha1"), ("features", "features_sha1")):
        for want, got in zip(manifest_rows(store, manifest), manifest_rows(scratch, again), strict=True):
            if want[field] != got[field]:
                return stage, f"{stage} of CSV line {want['line']} differs: {got[field]} != {want[field]}"
    want_w = manifest["outputs"]["weights"]["sha1"]
    if rebuilt["weights_sha1"] != want_w:
        return "weights", f"weights rebuilt as {rebuilt['weights_sha1']}, manifest has {want_w}"
    return None


#: Missing objects named one by one in a report's message; the rest are counted.
MAX_NAMED_MISSING = 5


def missing_report(model_sha1: str, missing: list[tuple[str, str]]) -> dict[str, Any]:
    """A failed verification that names what the store lacks (a rebuild would hide it)."""
    named = "; ".join(f"{what} ({sha1})" for sha1, what in missing[:MAX_NAMED_MISSING])
    more = f"; and {len(missing) - MAX_NAMED_MISSING} more" if len(missing) > MAX_NAMED_MISSING else ""
    return {
        "model_sha1": model_sha1,
        "identical": False,
        "stage": "missing",
        "missing": [{"sha1": sha1, "what": what} for sha1, what in missing],
        "message": f"{len(missing)} object(s) the manifest names are not in the store: {named}{more}; "
        "train the recipe again to repair them",
    }


def verify_model(store: ObjectStore, model_sha1: str, progress: Progress | None = None) -> dict[str, Any]:
    """Rebuild the model in a fresh process and compare. With ``progress`` (the CLI's bars), the
    copy of its inputs is a stage of its own, and the rebuilding process draws the training's
    stages on this process's stderr (44 s in silence on 300 photos, before)."""
    manifest = load_manifest(store, model_sha1)
    missing = missing_objects(store, manifest)
    if missing:
        return missing_report(model_sha1, missing)
    with tempfile.TemporaryDirectory(prefix="stl-verify-") as scratch:
        scratch_store = LocalStore(scratch)
        bar = progress("copy", manifest["inputs"].get("rows", {}).get("images", 0)) if progress else None
        try:
            copy_inputs(store, scratch_store, manifest, bar.update if bar else lambda: None)
        finally:
            if bar:
                bar.close()
        proc = subprocess.run(
            [sys.executable, "-m", "model.lifecycle.verify", scratch, json.dumps(manifest["recipe"])]
            + (["--progress"] if progress else []),
            stdout=subprocess.PIPE,
            stderr=None if progress else subprocess.PIPE,  # the bars go straight to the user
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            said = [line for line in proc.stdout.strip().splitlines() if line.startswith('{"error"')]
            tail = (
                json.loads(said[-1])["error"]
                if said
                else (((proc.stderr or "").strip().splitlines() or ["no output"])[-1])
            )
            return {
                "model_sha1": model_sha1,
                "identical": False,
                "stage": "rebuild",
                "message": f"rebuild failed: {tail}",
            }
        rebuilt = json.loads(proc.stdout.strip().splitlines()[-1])
        diff = (
            _first_difference(store, manifest, scratch_store, rebuilt)
            if "weights_sha1" in rebuilt
            else ("base", "base weights differ")
        )
    report: dict[str, Any] = {
        "model_sha1": model_sha1,
        "identical": diff is None,
        "weights_sha1": rebuilt.get("weights_sha1"),
        "manifest_identical": rebuilt.get("manifest_sha1") == manifest_sha1(store, model_sha1),
    }
    if diff is None:
        report["message"] = "model bytes are identical"
    else:
        report["stage"], report["message"] = diff
    return report


def _bars(stage: str, total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=f"rebuild: {stage}", file=sys.stderr, leave=False, mininterval=0.3)


if __name__ == "__main__":
    try:
        rebuilt = rebuild_in_store(
            sys.argv[1], json.loads(sys.argv[2]), _bars if "--progress" in sys.argv else None
        )
    except Exception as e:  # said on stdout: with --progress, stderr is the user's terminal
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        sys.exit(1)
    print(json.dumps(rebuilt, sort_keys=True))
