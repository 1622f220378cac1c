"""What each ``stl`` command does; ``handlers.cli`` parses the command line and maps errors.

stdout carries only machine-readable JSON; progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from model.config import Settings
from model.data.fetch import FetchPolicy
from model.errors import InvalidRequest
from model.identity.refs import base_ref
from store import ObjectStore, StoreError
from store.hashing import sha1_bytes

from .cli_flags import describe_data_limit, hyperparameters

EXIT_ERROR = 1
EXIT_USAGE = 2
#: Default grace period of ``stl gc``: a day, far longer than any training's gap between put and ref.
GC_GRACE_S = 86400.0


def version() -> str:
    """The installed package's version and the code version that names recipes."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    from model.identity.recipe import CODE_VERSION

    try:
        package = installed("static-transfer-learning")
    except PackageNotFoundError:
        package = "unknown"
    return f"{package} (recipes {CODE_VERSION})"


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _tqdm_progress(stage: str, total: int) -> Any:
    from tqdm import tqdm

    units = {"fetch": "img", "features": "img", "head": "step", "copy": "img"}
    return tqdm(
        total=total, desc=stage, unit=units.get(stage, "it"), file=sys.stderr, leave=False, mininterval=0.3
    )


class NoStore(StoreError):
    """A command that only reads was pointed at a local store folder that does not exist."""


def _store_uri(args: argparse.Namespace) -> str:
    return os.fspath(args.store) if args.store else args.settings.store_uri or args.settings.data_dir


def store_named(args: argparse.Namespace) -> str:
    """How an error names the store a command used: a local one by its absolute folder, and how
    it was chosen (a model trained elsewhere is not "gone", it is in another folder)."""
    from store.registry import local_root

    uri = _store_uri(args)
    root = local_root(uri, args.settings.data_dir)
    if root is None:
        return f"the store {uri}"
    chosen = "--store" if args.store else "STORE_URI" if args.settings.store_uri else "DATA_DIR, or ./data"
    return f"the store at {os.path.abspath(root)} ({chosen})"


def _context(args: argparse.Namespace, creates: bool = False) -> tuple[ObjectStore, Settings, FetchPolicy]:
    """The command's store, settings and policy. A command that only reads (``creates`` False)
    never creates a local store: a missing folder is an error naming it, not an empty store. A
    model named by a prefix (``args.model``) becomes its full sha1 here, once for every command."""
    from model.api import Context
    from model.lifecycle.catalog import resolve_model
    from store.registry import local_root

    root = local_root(_store_uri(args), args.settings.data_dir)
    if not creates and root is not None and not os.path.isdir(root):
        raise NoStore(
            f"no store at {os.path.abspath(root)}: nothing was trained there (--store, STORE_URI or DATA_DIR name another)"
        )
    ctx = Context.open(args.store, settings=args.settings)
    if getattr(args, "model", None):
        args.model = resolve_model(ctx.store, args.model)
    return ctx.store, ctx.settings, ctx.policy


def cmd_train(args: argparse.Namespace) -> int:
    from model.api import Context, store_photo_source, train_job
    from model.data.photo_csv import describe_skipped

    ctx = Context.open(args.store, settings=args.settings)
    store, settings = ctx.store, ctx.settings
    owner = f"cli-{os.getpid()}"
    params = hyperparameters(args)  # before the photos are read: a bad flag costs nothing
    photos = store_photo_source(ctx, args.csv) if args.csv and args.csv_sha1 is None else None
    if photos is not None:
        listing = photos.listing
        skipped = f"; skipped {describe_skipped(listing.skipped)}" if listing.skipped else ""
        print(
            f"stl: {args.csv}: {len(listing.rows)} images in {len(listing.labels)} labels "
            f"({', '.join(listing.labels)}){skipped}; stored as CSV {photos.csv_sha1}",
            file=sys.stderr,
        )
    recipe, status = train_job(
        ctx,
        None if photos else args.csv,
        params,
        photos.csv_sha1 if photos else args.csv_sha1,
        _tqdm_progress,
        force=args.force,
        owner=owner,
        on_wait=lambda sha1: print(
            f"stl: {sha1} is being trained by another process; waiting", file=sys.stderr
        ),
    )
    model_sha1 = recipe.sha1
    assert status is not None
    published = (
        _publish(store, model_sha1, args.publish, owner, settings) if status["status"] == "ready" else None
    )
    _emit(
        {
            "model_sha1": model_sha1,
            "status": status["status"],
            "csv_sha1": recipe.csv_sha1,
            "base_sha1": recipe.base_sha1,
            "data_limit": describe_data_limit(recipe.data_limit),  # the effective one, DATA_LIMIT included
            **{
                k: status[k]
                for k in ("manifest_sha1", "weights_sha1", "validation_accuracy", "message", "error_kind")
                if k in status
            },
            **({"published": published} if published else {}),
            **({"photos": photos.summary()} if photos else {}),
        }
    )
    if status["status"] in ("error", "cancelled"):  # no model was built: say why, exit non-zero
        print(f"stl: error: {status['message']}", file=sys.stderr)
        return EXIT_ERROR
    if published and published["status"] != "ready":
        print(
            f"stl: error: trained, but publishing to {args.publish} failed: {published.get('message')}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return 0


def _publish(
    store: ObjectStore, model_sha1: str, uri: str | None, owner: str, settings: Settings
) -> dict[str, Any] | None:
    """Publish a trained model to ``uri`` now (the operator asked: no allow list, no back-off wait)."""
    from model.jobs import publications
    from model.lifecycle.publish import publish_model

    if not uri:
        return None
    publications.request(store, model_sha1, uri)
    record = publications.run(
        store,
        model_sha1,
        uri,
        owner,
        settings.lease_ttl,
        lambda target: publish_model(store, model_sha1, target, settings.data_dir),
        retry_now=True,
    )
    record = record or publications.read(store, model_sha1, uri) or {"uri": uri, "status": "pending"}
    if record["status"] == "ready":
        return {k: v for k, v in record.items() if k in ("uri", "manifest_sha1", "model_uri", "status")}
    return publications.public(record)


def cmd_infer(args: argparse.Namespace) -> int:
    from model.data.fetch import fetch_bytes
    from model.inference.predictor import Predictor, top_label
    from model.lifecycle.publish import ensure_model

    if args.csv and args.images:
        raise InvalidRequest("give images or --csv, not both")
    if args.out and not args.csv:
        raise InvalidRequest("--out goes with --csv")
    default_image = args.settings.default_test_image_url
    images = args.images or ([default_image] if default_image else [])
    if not args.csv and not images:  # a usage error before any store is looked for
        raise InvalidRequest("give one or more images, or --csv")
    store, settings, policy = _context(args, creates=bool(args.model_uri))
    ensure_model(
        store, args.model, args.model_uri, settings.data_dir
    )  # fetched by hash and verified if absent
    predictor = Predictor(store, settings)
    predictor.load(args.model)  # unknown model: fail before touching any image
    if args.csv:
        return _infer_csv(args, store, settings, policy, predictor)
    for source in images:
        data = fetch_bytes(source, policy, store)
        probabilities = predictor.predict(args.model, [data], [source])[0]
        _emit({"image": source, "label": top_label(probabilities), "probabilities": probabilities})
    return 0


def _infer_csv(
    args: argparse.Namespace, store: ObjectStore, settings: Settings, policy: FetchPolicy, predictor: Any
) -> int:
    """Label every image a CSV lists; JSON lines to --out (written whole, then renamed) or stdout."""
    import tempfile

    from tqdm import tqdm

    from model.execution.choice import executor_for, on_cluster
    from model.inference.batch import label_csv

    # EXECUTOR=ray: each chunk of rows is a task on the cluster; the lines still come in CSV order.
    executor = executor_for(settings, store) if on_cluster(settings) else None
    results = label_csv(predictor, args.model, args.csv, policy, store, settings, executor)
    total = failed = expected = agreed = 0
    out = sys.stdout
    if args.out:
        directory = os.path.dirname(os.path.abspath(args.out))
        out = tempfile.NamedTemporaryFile(
            "w", dir=directory, prefix=".stl-infer-", suffix=".tmp", delete=False
        )
    try:
        # A bar on stderr: rows labelled of the CSV's total.
        bar = tqdm(
            results,
            total=results.total,
            desc="label",
            unit="img",
            file=sys.stderr,
            leave=False,
            mininterval=0.3,
        )
        for record in bar:
            out.write(json.dumps(record, sort_keys=True) + "\n")
            total += 1
            failed += "error" in record
            if "expected" in record and "label" in record:
                expected += 1
                agreed += record["label"] == record["expected"]
        out.flush()
        if args.out:
            out.close()
            os.replace(out.name, args.out)  # the results appear whole or not at all
    finally:
        if args.out and not out.closed:
            out.close()
            os.unlink(out.name)
    if expected:
        print(
            f"stl: {agreed} of {expected} labelled as the CSV says ({100 * agreed / expected:.1f}%)",
            file=sys.stderr,
        )
    if failed:
        print(
            f"stl: error: {failed} of {total} images could not be labelled; see their error lines",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from model.errors import ModelNotFound
    from model.identity.manifest import load_manifest
    from model.lifecycle.catalog import STALLED_MESSAGE, model_state

    store, _settings, _policy = _context(args)
    try:
        sys.stdout.write(json.dumps(load_manifest(store, args.model), sort_keys=True, indent=2) + "\n")
        return 0
    except ModelNotFound:
        # The catalog's reading, as `stl models`, the API and the page give it: a job whose process
        # stopped (Ctrl-C) is stalled, not the in_progress its record still says.
        found = model_state(store, args.model)
        if found.status is None:
            raise
        status = {**(found.job or {}), "status": found.state}
        if found.stalled:
            status["message"] = STALLED_MESSAGE
        _emit(status)
        return 0 if status["status"] != "error" else EXIT_ERROR


def cmd_verify(args: argparse.Namespace) -> int:
    from model.lifecycle.verify import verify_model

    store, _settings, _policy = _context(args)
    report = verify_model(store, args.model, _tqdm_progress)
    _emit(report)
    if not report["identical"]:
        print(f"stl: error: {report['message']}", file=sys.stderr)
        return EXIT_ERROR
    return 0


def cmd_base(args: argparse.Namespace) -> int:
    from model.bases.registry import (
        BASES,
        ensure_base_with,
        export_base,
        identify_base,
        import_base,
        read_base_file,
    )

    if args.base_command == "list":
        try:
            store, settings, _policy = _context(args)
        except NoStore:  # nothing is in a store that is not there; it is not made to say so
            store = None
        for name in sorted(BASES):
            raw = store.get_ref(base_ref(name)) if store else None
            _emit({"base": name, "in_store": raw is not None, **(json.loads(raw) if raw else {})})
        return 0
    # export converts the base into the store when it is not there yet: it writes too
    store, settings, _policy = _context(args, creates=True)
    if args.base_command == "import":
        name = args.base or identify_base(read_base_file(args.file))
        _emit({"base": name, "weights_sha1": import_base(store, name, args.file, args.sha256)})
    elif args.base_command == "export":
        if not args.out and sys.stdout.isatty():
            raise InvalidRequest("stdout is a terminal: redirect it (> FILE) or name a file with --out")
        data = export_base(store, args.name, settings)
        if args.out:
            import io

            from store.files import write_atomically

            write_atomically(io.BytesIO(data), args.out, mode=0o644)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        print(f"stl: {args.name}: {len(data):,} bytes, sha1 {sha1_bytes(data)}", file=sys.stderr)
    elif args.base_command == "ensure":
        names = sorted(n for n, spec in BASES.items() if spec.packaged) if args.all else [args.base]
        for name in names:
            _spec, sha1 = ensure_base_with(settings, store, name)
            _emit({"base": name, "weights_sha1": sha1})
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    store, _settings, _policy = _context(args)
    for chunk in store.iter_chunks(args.sha1):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from model.lifecycle.catalog import model_rows

    store, _settings, _policy = _context(args)
    for row in model_rows(store, limit=args.limit):
        _emit({k: _iso(v) if k.endswith("_at") else v for k, v in row.items()})
    return 0


def _iso(ts: float | None) -> str | None:
    """Seconds since the epoch as people read them: ISO 8601, UTC, to the second."""
    from datetime import datetime, timezone

    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_cancel(args: argparse.Namespace) -> int:
    from model.jobs import state as jobs

    store, _settings, _policy = _context(args)
    record = jobs.cancel(store, args.model)
    _emit({"model_sha1": args.model, "status": record["status"], "cancel_requested": True})
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from model.jobs import state as jobs

    store, _settings, _policy = _context(args)
    record = jobs.delete(store, args.model)
    _emit({"model_sha1": args.model, "status": record["status"], "deleted": True})
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from model.lifecycle.gc import MIN_GRACE_S, collect

    if args.delete and args.grace < MIN_GRACE_S and not args.force:
        raise InvalidRequest(
            f"--grace {args.grace:g} is below {MIN_GRACE_S:g} s: uploads not yet named by a training "
            "would be deleted; add --force if nothing is uploading"
        )
    store, _settings, _policy = _context(args)
    now = time.time()
    report = collect(store, grace_s=args.grace, delete=args.delete, keep_caches=args.keep_caches, now=now)
    if not args.delete:  # what it would do, object by object, before the counts
        for sha1, size, modified in report.unreached:
            if modified is None:
                _emit({"object": sha1, "action": "keep", "why": "this store cannot tell its age"})
            elif modified > now - args.grace:
                _emit({"object": sha1, "bytes": size, "modified": _iso(modified), "action": "keep",
                       "until": _iso(modified + args.grace)})  # fmt: skip
            else:
                _emit({"object": sha1, "bytes": size, "modified": _iso(modified), "action": "delete"})
    _emit(report.summary())
    if not args.delete and report.unreferenced:
        print(
            f"stl: dry run: {len(report.unreferenced)} object(s), {report.unreferenced_bytes} bytes "
            "would be deleted; run `stl gc --delete` to delete them",
            file=sys.stderr,
        )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from model.lifecycle.export import export_model

    store, _settings, _policy = _context(args)
    out = args.out or f"{args.model[:12]}.{args.format}"
    sha1 = export_model(store, args.model, out, args.format)
    _emit({"model_sha1": args.model, "format": args.format, "path": out, "sha1": sha1})
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from handlers.serve import serve

    return serve(args.gunicorn_args) or 0
