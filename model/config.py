"""Settings from the environment, with the original project's names and defaults.

Settings are read once into an immutable value and passed down explicitly, so
that pure functions never look at the environment themselves.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

DEFAULT_BASE = "efficientnet-lite2"
#: The default views, chosen by bench/bench_models.py: the most accurate recipe whose inference
#: stays within 25 ms per image (all seven views score higher but take twice as long).
DEFAULT_VIEWS = ("mirrored", "center")


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def _positive(name: str, default: int) -> int:
    value = _int(name, default)
    if value < 1:
        raise ValueError(f"environment variable {name} must be a positive integer, got {value}")
    return value


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be a number, got {raw!r}") from None


def _seconds(name: str, default: float) -> float:
    value = _float(name, default)
    if not 0 < value < float("inf"):
        raise ValueError(f"environment variable {name} must be a positive number of seconds, got {value}")
    return value


def _train_percentage(default: int) -> int:
    """TRAIN_PERCENTAGE as a percentage (80) or, the 2019 form, a fraction (0.8)."""
    raw = os.environ.get("TRAIN_PERCENTAGE", "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if 0 < value < 1:
        value *= 100
    if not (1 <= value <= 100) or abs(value - round(value)) > 1e-9:
        raise ValueError(
            f"TRAIN_PERCENTAGE must be a whole percentage from 1 to 100 or a fraction such as 0.8, got {raw!r}"
        )
    return round(value)


#: ``data_limit`` as recipes, request bodies and CLI flags write it.
NO_LIMIT = 0
BALANCED = -1  # every label down to the smallest label's count


def _data_limit() -> int:
    """DATA_LIMIT in its 2019 meaning: 0 balances the labels; unset, "none" or -1 means no limit."""
    raw = os.environ.get("DATA_LIMIT", "").strip().lower()
    if raw in ("", "none", "-1"):
        return NO_LIMIT
    if raw == "0":
        return BALANCED
    if raw.isascii() and raw.isdigit():
        return int(raw)
    raise ValueError(f"DATA_LIMIT must be 0 (balance labels), a positive count, or none, got {raw!r}")


def _refuse_unsupported() -> None:
    """2019 settings with no meaning here: refused loudly rather than ignored."""
    if os.environ.get("DEFAULT_MODEL_FILENAME"):
        raise ValueError(
            "DEFAULT_MODEL_FILENAME is not supported: a model is named by its hash (model_sha1), "
            "not a file name; unset it"
        )
    if os.environ.get("TENSORBOARD_LOGS_ENABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        raise ValueError(
            "TENSORBOARD_LOGS_ENABLED is not supported: TensorFlow is not used for training; "
            "the head's per-epoch loss is in the run record (stl show); unset it"
        )


#: The 2019 variables that only the Adam head reads; old deployments still set them.
ADAM_ONLY_VARIABLES = ("EPOCHS", "BATCH_SIZE", "LEARNING_RATE")
_warned: set[str] = set()


def _warn_unread(settings: Settings) -> None:
    """Once per process: the environment sets what the default head will not read."""
    unread = [v for v in ADAM_ONLY_VARIABLES if os.environ.get(v, "").strip()]
    if settings.head != "logistic" or not unread or "adam-only" in _warned:
        return
    _warned.add("adam-only")
    logging.getLogger("stl").warning(
        "%s %s only the adam head; the default head (HEAD=logistic) trains to convergence and ignores %s",
        ", ".join(unread),
        "set" if len(unread) > 1 else "sets",
        "them" if len(unread) > 1 else "it",
    )


def _list(name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in os.environ.get(name, "").split(",") if p.strip())


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise ValueError(f"environment variable {name} must be true or false, got {raw!r}")


def _views(default: tuple[str, ...]) -> tuple[str, ...]:
    views = _list("VIEWS") or default
    if _bool("FLIP_AUGMENT", False) and "mirrored" not in views:
        views = (*views, "mirrored")
    return views


def _log_format() -> str:
    raw = os.environ.get("LOG_FORMAT", "").strip().lower() or "text"
    if raw not in ("text", "json"):
        raise ValueError(f"LOG_FORMAT must be text or json, got {raw!r}")
    return raw


#: The executors EXECUTOR may name (``model.execution.local``).
EXECUTORS = ("local", "ray")


def _executor() -> str:
    raw = os.environ.get("EXECUTOR", "").strip().lower() or "local"
    if raw not in EXECUTORS:
        raise ValueError(f"EXECUTOR must be local or ray, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    data_dir: str = "./data"
    store_uri: str = ""
    base_cache: str = ""  # this machine's cache of pinned int8 base models; "" = ~/.cache/...
    #: Another store (any store URI) to take int8 bases from before converting (no TensorFlow).
    base_store: str = ""
    http_timeout: float = 30.0
    download_pool_size: int = 8
    # Recipe defaults (each enters the recipe hash when used).
    random_seed: int = 1234
    base: str = DEFAULT_BASE
    image_size: int = 0  # 0: the base network's native size
    epochs: int = 60
    batch_size: int = 32
    learning_rate: float = 0.01
    train_percentage: int = 100
    data_limit: int = NO_LIMIT  # images per label; NO_LIMIT (0) or BALANCED (-1)
    l2: float = -1.0  # head L2 penalty; < 0: chosen by cross-validation on the training split
    views: tuple[str, ...] = DEFAULT_VIEWS  # averaged per image (FLIP_AUGMENT=1 adds "mirrored")
    extra_base: str = ""  # a second base to concatenate features with; "" for none
    head: str = "logistic"  # "logistic": converged softmax regression; "adam": the mini-batch head
    calibrate: bool = True  # fit a temperature on the cross-validation folds (logistic head)
    #: Train a CSV that lists one image under two labels (refused by default: a contradiction).
    allow_conflicting_labels: bool = False
    # Limits.
    max_csv_rows: int = 100_000
    #: Labels a training CSV may have: the head's memory grows with labels x features x folds.
    max_labels: int = 1000
    max_download_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    #: Pixels one /infer request may have decoded in all (its images together).
    max_request_pixels: int = 400_000_000
    #: What a zip of photos may unpack to in all (each file is also within max_download_bytes).
    max_unzipped_bytes: int = 4 * 1024**3
    #: Files a zip or folder of photos may hold, images or not (twice the row limit: a sidecar each).
    max_folder_entries: int = 200_000
    #: Free bytes the store's disk must keep for the service to be ready and to start jobs.
    min_free_bytes: int = 100 * 1024**2
    #: Pairs per shard of the head's rows (rounded up to whole 4,096-row sum blocks): bounds the
    #: head's temporaries; never part of a recipe, since it cannot change a bit.
    head_shard_pairs: int = 65_536
    # Service.
    fetch_allow_hosts: tuple[str, ...] = field(default_factory=tuple)
    import_root: str = ""
    api_token: str = ""
    #: The address `stl serve` binds (API_HOST); with loopback and this machine's name, the hosts
    #: a request may name unless ALLOWED_HOSTS lists them ("*": any; see handlers.web_guard).
    api_host: str = "0.0.0.0"
    allowed_hosts: tuple[str, ...] = field(default_factory=tuple)
    #: Other sites' origins whose pages may change state here (besides this service's own).
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    #: Proxies whose X-Forwarded-Proto/-For are believed (gunicorn's own setting and default).
    forwarded_allow_ips: tuple[str, ...] = ("127.0.0.1", "::1")
    #: Wrong tokens one client address may offer within the window before it is locked out.
    signin_max_failures: int = 5
    signin_window_s: float = 60.0
    #: `stl serve`: seconds a request's head may take from the connection's start, and a body may
    #: pause between two reads, before the connection is closed with 408 (handlers.http_worker).
    request_head_timeout_s: float = 10.0
    request_body_timeout_s: float = 30.0
    lease_ttl: float = 30.0
    retry_backoff: float = 5.0  # seconds before a transient job error may retry; doubles per attempt
    #: URI prefixes a client may name as model.uri (the server's own store is always allowed).
    model_uri_allow: tuple[str, ...] = field(default_factory=tuple)
    model_cache_size: int = 8
    preload_base: bool = True  # load the default base when a worker starts; /readyz waits for it
    log_format: str = "text"  # "json": one JSON object per log line
    #: Where jobs run: "local" (in the process that took the job) or "ray" (a Ray cluster).
    executor: str = "local"
    #: The cluster EXECUTOR=ray joins: "host:6379" from a Ray node, "ray://host:10001" (Ray Client)
    #: from anywhere else; "" starts a cluster inside the process.
    ray_address: str = ""
    # CLI defaults (the 2019 names).
    default_csv_url: str = ""
    default_test_image_url: str = ""

    @staticmethod
    def from_env() -> Settings:
        """Read every setting once; a value that cannot be honoured is a ValueError naming it."""
        _refuse_unsupported()
        d = Settings()
        settings = Settings(
            data_dir=os.environ.get("DATA_DIR") or d.data_dir,
            store_uri=os.environ.get("STORE_URI", ""),
            base_cache=os.environ.get("STL_BASE_CACHE", ""),
            base_store=os.environ.get("BASE_STORE", ""),
            http_timeout=_float("HTTP_TIMEOUT", d.http_timeout),
            download_pool_size=_int("DOWNLOAD_POOL_SIZE", d.download_pool_size),
            random_seed=_int("RANDOM_SEED", d.random_seed),
            base=os.environ.get("BASE_MODEL") or d.base,
            image_size=_int("IMAGE_SIZE", d.image_size),
            epochs=_int("EPOCHS", d.epochs),
            batch_size=_int("BATCH_SIZE", d.batch_size),
            learning_rate=_float("LEARNING_RATE", d.learning_rate),
            train_percentage=_train_percentage(d.train_percentage),
            data_limit=_data_limit(),
            l2=_float("HEAD_L2", d.l2),
            views=_views(d.views),
            extra_base=os.environ.get("EXTRA_BASE_MODEL", ""),
            head=os.environ.get("HEAD") or d.head,
            calibrate=_bool("CALIBRATE", d.calibrate),
            allow_conflicting_labels=_bool("ALLOW_CONFLICTING_LABELS", d.allow_conflicting_labels),
            max_csv_rows=_int("MAX_CSV_ROWS", d.max_csv_rows),
            max_labels=_positive("MAX_LABELS", d.max_labels),
            max_download_bytes=_int("MAX_DOWNLOAD_BYTES", d.max_download_bytes),
            max_image_pixels=_int("MAX_IMAGE_PIXELS", d.max_image_pixels),
            max_request_pixels=_positive("MAX_REQUEST_PIXELS", d.max_request_pixels),
            max_unzipped_bytes=_int("MAX_UNZIPPED_BYTES", d.max_unzipped_bytes),
            max_folder_entries=_positive("MAX_FOLDER_ENTRIES", d.max_folder_entries),
            min_free_bytes=_int("MIN_FREE_BYTES", d.min_free_bytes),
            head_shard_pairs=_positive("HEAD_SHARD_PAIRS", d.head_shard_pairs),
            fetch_allow_hosts=_list("FETCH_ALLOW_HOSTS"),
            import_root=os.environ.get("IMPORT_ROOT", ""),
            api_token=os.environ.get("API_TOKEN", ""),
            api_host=os.environ.get("API_HOST") or d.api_host,
            allowed_hosts=_list("ALLOWED_HOSTS"),
            allowed_origins=_list("ALLOWED_ORIGINS"),
            forwarded_allow_ips=_list("FORWARDED_ALLOW_IPS") or d.forwarded_allow_ips,
            signin_max_failures=_int("SIGNIN_MAX_FAILURES", d.signin_max_failures),
            signin_window_s=_float("SIGNIN_WINDOW_S", d.signin_window_s),
            request_head_timeout_s=_seconds("REQUEST_HEAD_TIMEOUT_S", d.request_head_timeout_s),
            request_body_timeout_s=_seconds("REQUEST_BODY_TIMEOUT_S", d.request_body_timeout_s),
            lease_ttl=_float("LEASE_TTL", d.lease_ttl),
            retry_backoff=_float("RETRY_BACKOFF", d.retry_backoff),
            model_uri_allow=_list("MODEL_URI_ALLOW"),
            model_cache_size=_int("MODEL_CACHE_SIZE", d.model_cache_size),
            preload_base=_bool("PRELOAD_BASE", d.preload_base),
            log_format=_log_format(),
            executor=_executor(),
            ray_address=os.environ.get("RAY_ADDRESS", ""),
            default_csv_url=os.environ.get("DEFAULT_INPUT_CSV_URL", ""),
            default_test_image_url=os.environ.get("DEFAULT_TEST_IMG_URL", ""),
        )
        _warn_unread(settings)
        return settings
