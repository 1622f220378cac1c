"""The WSGI entry point: ``gunicorn handlers.wsgi:app``.

Settings are read from the environment when a worker imports this module; with
preload off (the default) that is once per worker, after the fork.
"""

from __future__ import annotations

from .app import create_app

app = create_app()
