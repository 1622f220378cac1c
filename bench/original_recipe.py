"""The original 2019 project's recipe, reproduced in Keras, for comparison.

A small CNN trained from scratch: 150x150 input rescaled by 1/255,
Conv2D(56,3,relu) -> Conv2D(32,3,relu) -> Flatten -> Dense(64,relu) ->
Dense(n, softmax), Adam, batch 32, 30 epochs. Run as a fresh process by
bench/bench_core.py, which times it from spawn to ``fit_finished_at`` (so
interpreter and TensorFlow start-up count, as they do for ``stl train``).

    python bench/original_recipe.py TRAIN_CSV TEST_CSV [--seed N] [--epochs N]

CSVs are ``<absolute path>,<label>,<sha1>`` with no header. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

# Quiet TF's C++ logging before it is imported; must be set first to take effect.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

SIZE = 150


def read_csv(path: str) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        return [(row[0], row[1]) for row in csv.reader(f) if row]


def load_image(path: str) -> np.ndarray:
    # Keras' load_img(target_size=...) squashes with nearest-neighbour by default,
    # which is what the original's flow_from_directory did.
    with Image.open(path) as img:
        img = img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.NEAREST)
        return np.asarray(img, dtype=np.float32) / 255.0


def build(n_labels: int) -> object:
    import keras
    from keras import layers

    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            layers.Conv2D(56, 3, activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dense(n_labels, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("train_csv")
    p.add_argument("test_csv")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--epochs", type=int, default=30)
    args = p.parse_args()

    import keras

    # Same weights init and batch order on every run of this script.
    keras.utils.set_random_seed(args.seed)

    train, test = read_csv(args.train_csv), read_csv(args.test_csv)
    labels = sorted({label for _, label in train})
    x = np.stack([load_image(path) for path, _ in train])
    y = np.array([labels.index(label) for _, label in train])

    model = build(len(labels))
    t = time.time()
    model.fit(x, y, batch_size=32, epochs=args.epochs, shuffle=True, verbose=0)  # type: ignore[attr-defined]
    fit_finished_at = time.time()
    fit_seconds = fit_finished_at - t

    # Held-out accuracy, batched (no timing here).
    xt = np.stack([load_image(path) for path, _ in test])
    yt = np.array([labels.index(label) for _, label in test])
    predicted = np.asarray(model(xt, training=False)).argmax(axis=1)  # type: ignore[operator]
    accuracy = float((predicted == yt).mean())

    # Latency per image with the model loaded: decode + resize + forward, one image at a time.
    # A direct call, not model.predict(), whose per-call set-up would inflate the number.
    model(load_image(test[0][0])[None], training=False)  # type: ignore[operator]  # warm-up
    latencies = []
    for path, _ in test:
        t = time.perf_counter()
        np.asarray(model(load_image(path)[None], training=False))  # type: ignore[operator]
        latencies.append(time.perf_counter() - t)

    json.dump(
        {
            "accuracy": accuracy,
            "fit_seconds": fit_seconds,
            "fit_finished_at": fit_finished_at,
            "latencies_s": latencies,
            "train_images": len(train),
            "test_images": len(test),
            "params": int(model.count_params()),  # type: ignore[attr-defined]
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
