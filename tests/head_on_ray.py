"""Fit the head on shards held by Ray actors and print the weights' sha1 per placement, as JSON.

Run by tests/test_ray_executor.py with the cluster's environment (RAY_ADDRESS, DATA_DIR).
Usage: python tests/head_on_ray.py [kill|corrupt]
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model.config import Settings
from model.errors import ExecutorUnavailable
from model.execution.ray_shards import InRay
from model.head import logistic
from model.head.linear import IntegerFeatures, LinearMap, standardisation
from model.head.products import Integers
from model.head.shards import InMemory, InStore, store_shards
from store import open_store

BOUND, PAIRS = 510, 4096


def problem(n: int = 13_000, dim: int = 32) -> tuple[np.ndarray, np.ndarray, LinearMap]:
    rng = np.random.default_rng(11)
    y = np.arange(n) % 3
    units = np.clip(
        np.rint(rng.gamma(2.0, 14.0, (n, dim)) + rng.gamma(1.5, 12.0, (3, dim))[y] * 0.2), 0, BOUND
    )
    units = units.astype(np.int16)
    features = IntegerFeatures(Integers.of(units, BOUND), np.full(dim, 0.01))
    mean, scale = standardisation(features)
    return units, y, LinearMap.of(features.factor, mean, np.full(dim, scale))


def sha1(cv: logistic.CrossValidation) -> str:
    parts = (cv.final.kernel, cv.final.bias, cv.out_of_fold_logits)
    return hashlib.sha1(b"".join(np.ascontiguousarray(p).tobytes() for p in parts)).hexdigest()


def main() -> None:
    settings = Settings.from_env()
    store = open_store(settings.store_uri or None, settings.data_dir)
    units, y, linear = problem()
    shards = store_shards(store, ((units[a : a + PAIRS], y[a : a + PAIRS]) for a in range(0, len(y), PAIRS)))
    if sys.argv[1:] == ["corrupt"]:  # one shard's bytes changed on disk after it was written
        path = Path(settings.data_dir) / "objects" / shards[1][1][:2] / shards[1][1][2:]
        path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
        try:
            logistic.fit(InRay(settings, shards, BOUND, 2), y, 3, linear, 0.1)
        except Exception as e:  # the worker's own error, as the driver sees it
            print(json.dumps({"error": type(e).__name__, "message": str(e)[:200]}))
            return
        print(json.dumps({"error": None}))
        return
    if sys.argv[1:] == ["kill"]:
        rounds, killed = [], []

        def kill_holders() -> None:
            """Kill a shard-holding worker at rounds 5 and 40 (each time the oldest alive)."""
            rounds.append(1)
            if len(rounds) in (5, 40):
                ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
                pid = min(int(line.split()[0]) for line in ps.splitlines() if "ray::ShardHolder" in line)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        try:
            cv = logistic.cross_validate(
                InRay(settings, shards, BOUND, 2), y, 3, linear, seed=4, tick=kill_holders
            )
        except ExecutorUnavailable as e:
            print(json.dumps({"error": type(e).__name__, "message": str(e)[:200], "rounds": len(rounds)}))
            return
        print(
            json.dumps({"error": None, "rounds": len(rounds), "killed": len(set(killed)), "sha1": sha1(cv)})
        )
        return
    out = {
        "local": sha1(logistic.cross_validate(InMemory(Integers.of(units, BOUND)), y, 3, linear, seed=4)),
        "local shards": sha1(logistic.cross_validate(InStore(store, shards, BOUND), y, 3, linear, seed=4)),
        **{
            f"ray {w}": sha1(logistic.cross_validate(InRay(settings, shards, BOUND, w), y, 3, linear, seed=4))
            for w in (1, 2)
        },
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
