"""Silencing native output: off in servers, and never leaves a process mute.

Each case runs in a child process, whose descriptors 1 and 2 are files the
test reads back (pytest's own capture must not be redirected under it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(body: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    script = textwrap.dedent(
        """
        import os, threading
        from model.bases.quiet import silence_native_output, silenced
        """
    ) + textwrap.dedent(body)
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            stderr=f,
            check=True,
            timeout=300,
            env={**os.environ, **(env or {})},
        )
    return err.read_text()


def test_off_by_default_so_other_threads_keep_their_lines(tmp_path: Path) -> None:
    out = _run(
        """
        with silenced(2):
            os.write(2, b"a line from another thread\\n")
        """,
        tmp_path,
    )
    assert out == "a line from another thread\n"


def test_when_on_it_silences_and_restores(tmp_path: Path) -> None:
    out = _run(
        """
        silence_native_output()
        os.write(2, b"before\\n")
        with silenced(1, 2):
            os.write(2, b"native chatter\\n")
        os.write(2, b"after\\n")
        """,
        tmp_path,
    )
    assert out == "before\nafter\n"


def test_concurrent_uses_never_leave_the_process_mute(tmp_path: Path) -> None:
    # Before the fix, a thread entering while another was inside saved /dev/null as the
    # original descriptor and, leaving last, left it there: every later line was lost.
    out = _run(
        """
        silence_native_output()

        def work():
            for _ in range(500):
                with silenced(2):
                    os.write(2, b"x")

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        os.write(2, b"still heard\\n")
        """,
        tmp_path,
    )
    assert out == "still heard\n"


def test_the_delegate_line_is_muted_once_even_where_silencing_is_off(tmp_path: Path) -> None:
    """Issue 41, item 10: LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." reached
    `stl serve`'s log and notebooks (silencing is off there). It is said once per process, at the
    first delegation, which alone is muted: lines after it stay."""
    out = _run(
        """
        from model.bases.litert import Int8Base
        from model.bases.registry import ensure_base_with
        from model.config import Settings
        from store import LocalStore

        store = LocalStore(os.environ["STL_TEST_STORE"])
        spec, sha1 = ensure_base_with(Settings(), store, "efficientnet-lite0")
        base = Int8Base(store.get(sha1))
        base._resize(224)
        os.write(2, b"after the first\\n")
        Int8Base(store.get(sha1))._resize(96)
        os.write(2, b"after the second\\n")
        """,
        tmp_path,
        {"STL_TEST_STORE": str(tmp_path / "store")},
    )
    assert out == "after the first\nafter the second\n"
