"""Settings from the environment, with the original project's names and defaults.

Settings are read once into an immutable value and passed down explicitly, so
that pure functions never look at the environment themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

DEFAULT_BASE = "efficientnet-lite0"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from None


def _list(name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./data"
    store_uri: str = ""
    base_cache: str = ""  # this machine's cache of pinned int8 base models; "" = ~/.cache/...
    http_timeout: float = 30.0
    download_pool_size: int = 8
    # Recipe defaults (each enters the recipe hash when used).
    random_seed: int = 1234
    base: str = DEFAULT_BASE
    image_size: int = 0  # 0: the base network's native size
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 0.01
    train_percentage: int = 80
    data_limit: int = 0  # images per label, 0: no limit
    l2: float = 0.001  # head L2 penalty; < 0: chosen by cross-validation on the training split
    flip: bool = False  # average features of the image and its mirror
    # Limits.
    max_csv_rows: int = 100_000
    max_download_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    # Service.
    fetch_allow_hosts: tuple[str, ...] = field(default_factory=tuple)
    import_root: str = ""
    api_token: str = ""
    lease_ttl: float = 30.0
    model_cache_size: int = 8

    @staticmethod
    def from_env() -> Settings:
        d = Settings()
        return Settings(
            data_dir=os.environ.get("DATA_DIR") or d.data_dir,
            store_uri=os.environ.get("STORE_URI", ""),
            base_cache=os.environ.get("STL_BASE_CACHE", ""),
            http_timeout=_float("HTTP_TIMEOUT", d.http_timeout),
            download_pool_size=_int("DOWNLOAD_POOL_SIZE", d.download_pool_size),
            random_seed=_int("RANDOM_SEED", d.random_seed),
            base=os.environ.get("BASE_MODEL") or d.base,
            image_size=_int("IMAGE_SIZE", d.image_size),
            epochs=_int("EPOCHS", d.epochs),
            batch_size=_int("BATCH_SIZE", d.batch_size),
            learning_rate=_float("LEARNING_RATE", d.learning_rate),
            train_percentage=_int("TRAIN_PERCENTAGE", d.train_percentage),
            data_limit=_int("DATA_LIMIT", d.data_limit),
            l2=_float("HEAD_L2", d.l2),
            flip=os.environ.get("FLIP_AUGMENT", "0").lower() in ("1", "true", "yes"),
            max_csv_rows=_int("MAX_CSV_ROWS", d.max_csv_rows),
            max_download_bytes=_int("MAX_DOWNLOAD_BYTES", d.max_download_bytes),
            max_image_pixels=_int("MAX_IMAGE_PIXELS", d.max_image_pixels),
            fetch_allow_hosts=_list("FETCH_ALLOW_HOSTS"),
            import_root=os.environ.get("IMPORT_ROOT", ""),
            api_token=os.environ.get("API_TOKEN", ""),
            lease_ttl=_float("LEASE_TTL", d.lease_ttl),
            model_cache_size=_int("MODEL_CACHE_SIZE", d.model_cache_size),
        )
