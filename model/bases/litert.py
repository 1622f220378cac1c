"""Run an int8 base network with LiteRT's XNNPACK kernels: the same feature bytes on every CPU.

Why these bits are portable: every convolution accumulates int8 x int8
products in int32, which is exact and so independent of summation order,
SIMD width and thread split; each output is requantised by itself. The
remaining risk is the requantisation step, which XNNPACK implements per
instruction set (SSE, AVX, AVX2, AVX-512, NEON): that is verified by the
golden-hash tests natively and under emulated CPUs, not assumed. LiteRT's
builtin int8 kernels round differently from XNNPACK's (twice where XNNPACK
rounds once), so a model that XNNPACK does not run entirely is refused
rather than run partly by other kernels.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from model.bases.quiet import silenced, silenced_first
from model.errors import BaseModelError

#: Recorded in manifests and feature-cache keys: which numeric path made the features.
RUNTIME = "litert-xnnpack-int8"
#: The input quantisation every base is converted to: value = (q + 1) / 128 = (pixel - 127) / 128.
INPUT_SCALE, INPUT_ZERO_POINT = 1.0 / 128.0, -1
THREADS = 2


class Int8Base:
    """One LiteRT interpreter over an int8 feature model; thread-safe, resized per image size."""

    def __init__(self, model: bytes, name: str = "base") -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.name = name
        try:
            with silenced(2):  # nothing said here today; the CLI keeps any chatter off its bars
                self._interpreter = Interpreter(model_content=model, num_threads=THREADS)
        except ValueError as e:
            raise BaseModelError(f"{name} is not a LiteRT model: {e}") from None
        (inp,), (out,) = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if inp["dtype"] != np.int8 or out["dtype"] != np.int8:
            raise BaseModelError(f"{name} is not a full-integer model (input/output must be int8)")
        if tuple(inp["quantization"]) != (INPUT_SCALE, INPUT_ZERO_POINT):
            raise BaseModelError(f"{name} expects input quantisation {inp['quantization']}, not (1/128, -1)")
        self._in, self._out = inp["index"], out["index"]
        scale, self.zero_point = out["quantization"]
        self.scale = np.float32(scale)
        self.dim = int(out["shape_signature"][-1])
        self._size = 0
        self._lock = threading.Lock()

    def _resize(self, size: int) -> None:
        self._interpreter.resize_tensor_input(self._in, [1, size, size, 3], strict=False)
        # LiteRT announces its XNNPACK delegate once per process, at the first delegation: muted
        # even in a server or a notebook, for those few milliseconds (``quiet.silenced_first``).
        with silenced_first(2):
            self._interpreter.allocate_tensors()
        self._check_fully_delegated()
        self._size = size

    def _check_fully_delegated(self) -> None:
        """Refuse a graph that XNNPACK does not run whole (see the module docstring).

        If XNNPACK took every node, there is one delegate node that reads the
        graph's input (besides constants) and writes exactly the graph's output.
        """
        it = self._interpreter
        ops = it._get_ops_details()
        delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
        produced = {int(t) for op in ops for t in op["outputs"]}
        if len(delegates) == 1:
            node = delegates[0]
            fed = {int(t) for t in node["inputs"] if int(t) in produced or int(t) == self._in}
            if fed == {self._in} and [int(t) for t in node["outputs"]] == [self._out]:
                return
        raise BaseModelError(f"{self.name} is not run entirely by XNNPACK, so its features are not portable")

    def units(self, images: np.ndarray, each: Callable[[], None] | None = None) -> np.ndarray:
        """(n, s, s, 3) uint8 pixels -> (n, dim) int16 ``q - zero point``, one image per invocation.

        Each image runs alone, so its features never depend on its batch-mates. The float
        features are ``units * scale`` (``dequantise``); the head works on the integers.
        ``each`` is called after every image (a job's cancel check).
        """
        n, size = len(images), images.shape[1]
        raw = np.empty((n, self.dim), np.int8)
        shifted = (images.astype(np.int16) - 128).astype(np.int8)  # pixel p -> q = p - 128
        with self._lock:
            if size != self._size:
                self._resize(size)
            for i in range(n):
                self._interpreter.set_tensor(self._in, shifted[i : i + 1])
                self._interpreter.invoke()
                raw[i] = self._interpreter.get_tensor(self._out)[0]
                if each is not None:
                    each()
        return raw.astype(np.int16) - np.int16(self.zero_point)

    def features(self, images: np.ndarray, each: Callable[[], None] | None = None) -> np.ndarray:
        """(n, dim) float32 features: ``dequantise(units, scale)``."""
        return dequantise(self.units(images, each), self.scale)


#: |q - zero point| of an int8 output is at most 255.
UNIT_BOUND = 255


def dequantise(units: np.ndarray, scale: np.float32) -> np.ndarray:
    """float32 features from integer units: one correctly rounded float32 multiply per value
    (the same bits as (q - zero point) * scale, since the integers convert exactly)."""
    return np.multiply(np.asarray(units).astype(np.float32), np.float32(scale))
