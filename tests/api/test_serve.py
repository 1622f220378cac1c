"""The gunicorn command line that ``stl serve`` builds (the servers in these tests run it for real)."""

from __future__ import annotations

from pathlib import Path

from stl_testing import run_stl

from handlers.serve import APP, gunicorn_argv


def option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == name]


def test_defaults() -> None:
    argv = gunicorn_argv([], env={})
    assert argv[-1] == APP
    assert option(argv, "--bind") == ["0.0.0.0:8080"]
    assert option(argv, "--workers") == ["2"]
    assert option(argv, "--worker-class") == ["handlers.http_worker.RequestReadingWorker"]
    assert option(argv, "--timeout") == ["120"]
    assert "--preload" not in argv


def test_environment() -> None:
    argv = gunicorn_argv([], env={"PORT": "9000", "WEB_CONCURRENCY": "4", "THREADS": "8"})
    assert option(argv, "--bind") == ["0.0.0.0:9000"]
    assert option(argv, "--workers") == ["4"]
    assert option(argv, "--threads") == ["8"]


def test_given_bind_replaces_the_default() -> None:
    # gunicorn appends binds, so a default would listen on a second address.
    for given in (["--bind", "127.0.0.1:1234"], ["-b", "127.0.0.1:1234"], ["--bind=127.0.0.1:1234"]):
        argv = gunicorn_argv(given, env={})
        assert "0.0.0.0:8080" not in argv
        assert argv[-1] == APP


def test_arguments_come_after_defaults() -> None:
    argv = gunicorn_argv(["--workers", "3"], env={})
    assert option(argv, "--workers") == ["2", "3"]  # argparse keeps the last


def test_the_2019_host_and_port_settings() -> None:
    assert option(gunicorn_argv([], env={"API_HOST": "127.0.0.1", "API_PORT": "8701"}), "--bind") == [
        "127.0.0.1:8701"
    ]
    assert option(gunicorn_argv([], env={"API_PORT": "8701", "PORT": "9000"}), "--bind") == ["0.0.0.0:8701"]
    assert option(gunicorn_argv([], env={"API_HOST": "::1", "PORT": "9000"}), "--bind") == ["[::1]:9000"]


def test_help_shows_the_options_stl_serve_uses(tmp_path: Path) -> None:
    """Not gunicorn's own help, whose defaults (127.0.0.1:8000, one worker) never apply here."""
    run = run_stl(["serve", "--help"], tmp_path, env={"WEB_CONCURRENCY": "3"})
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == "usage: stl serve [GUNICORN OPTION...]"
    for option in (
        "--bind 0.0.0.0:8080",
        "--workers 3",
        "--worker-class handlers.http_worker.RequestReadingWorker",
        "--threads 4",
        "--timeout 120",
    ):
        assert f"  {option}" in lines
    assert "127.0.0.1:8000" not in run.out
