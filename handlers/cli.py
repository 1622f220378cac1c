"""``stl``: train, label, verify and inspect models from the command line.

stdout carries only machine-readable JSON; progress bars and errors go to
stderr. Every error the pipeline or store raises becomes one line here, with a
non-zero exit status, in ``main`` and nowhere else.
"""

from __future__ import annotations

import argparse
import logging
import sys

from model.bases.quiet import silence_native_output
from model.config import Settings
from model.errors import InvalidRequest, ModelNotFound, ModelNotReady, PipelineError
from store import StoreError

from .cli_commands import (
    EXIT_ERROR,
    EXIT_USAGE,
    GC_GRACE_S,
    cmd_base,
    cmd_cancel,
    cmd_cat,
    cmd_delete,
    cmd_export,
    cmd_gc,
    cmd_infer,
    cmd_models,
    cmd_serve,
    cmd_show,
    cmd_train,
    cmd_verify,
    store_named,
    version,
)
from .cli_flags import TRAIN_FLAGS


def sha1_arg(value: str) -> str:
    """argparse type for a model or object hash: a bad one is a usage error (exit 2), not a failed lookup."""
    from store.hashing import is_sha1

    if not is_sha1(value):
        raise argparse.ArgumentTypeError(f"must be a sha1 (40 lowercase hex digits), got {value!r}")
    return value


def model_arg(value: str) -> str:
    """argparse type for a model: its sha1 or a prefix of one (``catalog.resolve_model`` finds it)."""
    from model.lifecycle.catalog import MIN_PREFIX, is_model_name

    if not is_model_name(value):
        raise argparse.ArgumentTypeError(
            f"must be a model's sha1 or a prefix of at least {MIN_PREFIX} lowercase hex digits, got {value!r}"
        )
    return value


def _add_train(sub: argparse._SubParsersAction, settings: Settings) -> None:
    t = sub.add_parser(
        "train",
        help="train a model from a CSV of <image_url>,<label>,<sha1> rows, or a folder of photos (or its zip)",
    )
    t.add_argument(
        "csv",
        nargs=None if not settings.default_csv_url else "?",
        default=settings.default_csv_url or None,
        help="CSV path or URL (image paths inside are relative to it; default DEFAULT_INPUT_CSV_URL), "
        "or a folder with one subfolder of images per label, or a .zip of such a folder",
    )
    t.add_argument("--csv-sha1", help="expected sha1 of the CSV (fetch is verified against it)")
    for flag in TRAIN_FLAGS:
        flag.add_to(t)
    t.add_argument("--force", action="store_true", help="train again even if the model is ready")
    t.add_argument(
        "--publish",
        metavar="URI",
        help="also copy the finished model to this store (path, s3://, gs://, ipfs://)",
    )
    t.set_defaults(func=cmd_train)


def _add_infer(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("infer", help="label images with a trained model")
    i.add_argument(
        "--model", required=True, type=model_arg, help="model sha1 (or a unique prefix, 7+ digits)"
    )
    i.add_argument(
        "--model-uri", metavar="URI", help="store to fetch the model from (by hash) if it is not local"
    )
    i.add_argument(
        "--csv",
        metavar="CSV",
        help="label every image this CSV lists (<image_url>[,<label>][,<sha1>] per row; the training "
        "CSV works): one JSON line per row, in order, fetched and labelled in parallel",
    )
    i.add_argument("--out", metavar="FILE", help="with --csv: write the JSON lines here (default stdout)")
    i.add_argument(
        "images",
        nargs="*",
        help="image paths, URLs or sha1:<hex> store references (default DEFAULT_TEST_IMG_URL)",
    )
    i.set_defaults(func=cmd_infer)


def _add_base(sub: argparse._SubParsersAction, settings: Settings) -> None:
    b = sub.add_parser("base", help="manage base networks")
    bsub = b.add_subparsers(dest="base_command", required=True)
    bi = bsub.add_parser(
        "import",
        help="put a base into the store: an int8 file from `stl base export`, or a Keras .h5 weight file",
    )
    bi.add_argument("file")
    bi.add_argument("--base", help="the base's name (needed for a .h5 file; an int8 file names itself)")
    bi.add_argument("--sha256", help="pin the file's sha256 (required where Keras publishes no hash)")
    be = bsub.add_parser("ensure", help="convert the default base into the store (no download)")
    be.add_argument("--base", default=settings.base)
    be.add_argument(
        "--all", action="store_true", help="every packaged base (efficientnet-lite0, -lite1, -lite2)"
    )
    bx = bsub.add_parser(
        "export", help="write a base's int8 file (for `stl base import` on a machine without TensorFlow)"
    )
    bx.add_argument("name", nargs="?", default=settings.base, help=f"the base (default {settings.base})")
    bx.add_argument("--out", "-o", help="write to this file (default: stdout, which must not be a terminal)")
    bsub.add_parser("list", help="list known bases and whether the store holds them")
    b.set_defaults(func=cmd_base)


def _add_gc(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("gc", help="find (and with --delete, remove) objects nothing references")
    g.add_argument("--delete", action="store_true", help="delete them (default: a dry run that lists them)")
    g.add_argument(
        "--grace",
        type=float,
        default=GC_GRACE_S,
        help=f"keep objects and cache entries younger than this many seconds (default {GC_GRACE_S:g})",
    )
    g.add_argument(
        "--force",
        action="store_true",
        help="allow --delete with a grace period under an hour (uploads in flight may be lost)",
    )
    g.add_argument(
        "--keep-caches",
        action="store_true",
        help="keep every cached tensor and feature vector, not only those a remaining model uses",
    )
    g.set_defaults(func=cmd_gc)


#: Commands whose one argument is a model's sha1.
_ON_ONE_MODEL = (
    ("verify", "rebuild a model from its stored inputs in a fresh process and compare bytes", cmd_verify),
    ("show", "print a model's manifest (or its status while training)", cmd_show),
    ("cancel", "ask a running training job to stop", cmd_cancel),
    ("delete", "forget a model (its refs); `stl gc` then reclaims its objects", cmd_delete),
)


def build_parser(settings: Settings | None = None) -> argparse.ArgumentParser:
    settings = settings or Settings()
    p = argparse.ArgumentParser(prog="stl", description="Reproducible, content-addressed transfer learning.")
    p.add_argument("--store", help="store URI or path (default: STORE_URI, then DATA_DIR, then ./data)")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    _add_train(sub, settings)
    _add_infer(sub)
    for name, text, func in _ON_ONE_MODEL:
        command = sub.add_parser(name, help=text)
        command.add_argument("model", type=model_arg, help="model sha1 (or a unique prefix, 7+ digits)")
        command.set_defaults(func=func)
    _add_base(sub, settings)
    c = sub.add_parser("cat", help="write a stored object to stdout (verified)")
    c.add_argument("sha1", type=sha1_arg)
    c.set_defaults(func=cmd_cat)
    m = sub.add_parser("models", help="list the models the store knows (JSON lines, newest first)")
    m.add_argument("--limit", type=int, default=None, help="at most this many")
    m.set_defaults(func=cmd_models)
    _add_gc(sub)
    e = sub.add_parser("export", help="write a model as one self-contained file (tflite: base + head)")
    e.add_argument("model", type=model_arg, help="model sha1 (or a unique prefix, 7+ digits)")
    e.add_argument("--format", choices=["tflite"], default="tflite")
    e.add_argument("--out", "-o", help="output path (default <sha1 prefix>.<format>)")
    e.set_defaults(func=cmd_export)
    sub.add_parser(
        "serve",
        help="run the HTTP API under gunicorn; every further argument is a gunicorn option (e.g. --bind)",
        add_help=False,
    ).set_defaults(func=cmd_serve)
    return p


def _tell_the_user() -> None:
    """The project's notices (logger ``stl``: a setting nothing reads, a one-off conversion) as
    ``stl: ...`` lines on stderr, once however often ``main`` runs in this process."""
    notices = logging.getLogger("stl")
    if not any(getattr(h, "stl_cli", False) for h in notices.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("stl: %(message)s"))
        handler.stl_cli = True  # type: ignore[attr-defined]
        notices.addHandler(handler)
        notices.setLevel(logging.INFO)
        notices.propagate = False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _tell_the_user()
    try:
        settings = Settings.from_env()
    except ValueError as e:
        print(f"stl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser(settings)
    args, extra = parser.parse_known_args(argv)
    args.settings = settings  # read once, here: every command takes them from args
    if args.command == "serve":
        # gunicorn's options pass through as given ("--" before them is optional).
        args.gunicorn_args = extra[1:] if extra[:1] == ["--"] else extra
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    if args.command != "serve":
        # One user at a terminal: native libraries' chatter would break the JSON and the
        # progress bars. Never in the server, whose forked workers would inherit it.
        silence_native_output()
    try:
        return args.func(args)
    except ModelNotFound as e:
        # Where it looked: a model trained with another DATA_DIR (or from another folder) is not "gone".
        where = "" if isinstance(e, ModelNotReady) else f" in {store_named(args)}"
        print(f"stl: error: {e}{where}", file=sys.stderr)
        return EXIT_ERROR
    except InvalidRequest as e:
        print(f"stl: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (PipelineError, StoreError, ValueError, OSError) as e:
        print(f"stl: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("stl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
