"""Requests that ask a worker for far more than they send: its memory stays bounded, and comes
back down (`stl serve` as it runs by default; one worker of its own, on the session's store)."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from api_testing import EXAMPLE, Api, error_of, run_api
from PIL import Image

from store import LocalStore

MIB = 2**20


def _memory(server: Api) -> tuple[int, int]:
    """(resident, peak resident) bytes of the server's one worker."""
    [pid] = server.worker_pids()
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _warm(server: Api, model: str) -> None:
    """First labels load the model and the base network, in each of the worker's threads
    (eight at once reach all four): not what is measured."""
    small = (EXAMPLE / "infer" / "dots.png").read_bytes()

    def label(_: int) -> int:
        files = {"image": ("dots.png", small)}
        return server.post("/infer", data={"model_sha1": model}, files=files).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(label, range(8))) == [200] * 8


def test_64_references_to_a_large_non_image_read_one(api: Api, trained_model: str, tmp_path: Path) -> None:
    """One 3 KB request naming a stored 40 MiB non-image 64 times read all 64 first (2.6 GB)."""
    blob = LocalStore(api.data_dir).put(bytes(range(256)) * (40 * MIB // 256))
    with run_api(tmp_path, {"DATA_DIR": str(api.data_dir)}, workers=1) as server:
        _warm(server, trained_model)
        _rss, peak = _memory(server)
        body = {"model": {"sha1": trained_model}, "images": [{"sha1": blob}] * 64}
        assert error_of(server.post("/infer", json=body), 422) == "images[0] is not a decodable image"
        assert _memory(server)[1] - peak < 200 * MIB


def test_a_burst_of_pixel_bombs_under_the_limit_leaves_memory_as_it_was(
    api: Api, trained_model: str, tmp_path: Path
) -> None:
    """Eight 39.9-megapixel PNGs of 155 KB at once held 2.7 GB, still resident after they ended."""
    out = io.BytesIO()
    Image.new("RGBA", (6320, 6320)).save(out, "PNG")
    bomb = out.getvalue()
    assert len(bomb) < 1_000_000  # under the upload limit of these tests
    with run_api(tmp_path, {"DATA_DIR": str(api.data_dir)}, workers=1) as server:
        _warm(server, trained_model)
        before, _ = _memory(server)

        def label(_: int) -> int:
            files = {"image": ("bomb.png", bomb)}
            return server.post("/infer", data={"model_sha1": trained_model}, files=files).status_code

        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(label, range(8))) == [200] * 8
        after, peak = _memory(server)
        assert after < 1.3 * before, (after / MIB, before / MIB)
        assert peak - before < 1000 * MIB, (peak / MIB, before / MIB)


def test_a_request_may_decode_only_so_many_pixels(api: Api, trained_model: str, tmp_path: Path) -> None:
    image = (EXAMPLE / "infer" / "dots.png").read_bytes()
    width, height = Image.open(io.BytesIO(image)).size
    limit = 2 * width * height + 1
    env = {"DATA_DIR": str(api.data_dir), "MAX_REQUEST_PIXELS": str(limit)}
    with run_api(tmp_path, env, workers=1) as server:
        files = [("images", (f"{i}.png", image)) for i in range(3)]
        r = server.post("/infer", data={"model_sha1": trained_model}, files=files)
        assert error_of(r, 422) == (
            f"2.png brings the request to {3 * width * height:,} pixels, over MAX_REQUEST_PIXELS ({limit:,})"
        )
