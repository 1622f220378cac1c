"""The house's structure, read from the code's imports with ``ast``: no circles, nothing upward.

Function-local imports count: a circle held open by an import inside a function is
still a circle a reader has to keep in their head.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("store", "model", "handlers")
#: Longest module a reader should have to hold at once (the layout issue's bound).
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules that ``name`` imports, anywhere in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # "from pkg import mod" names a module; "from mod import name" names the module.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    found = sources()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def room(module: str) -> str:
    """A module's room: its subpackage of model/ (model.jobs.state -> model.jobs) or, at model/'s
    top, the module itself (model.config); else its package."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "model" else parts[0]


def test_no_module_imports_one_that_imports_it_back() -> None:
    # A package's __init__ re-exporting its modules is not a circle a reader follows.
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph().items()}
    assert find_cycle(edges) is None


def test_no_two_rooms_of_model_import_each_other() -> None:
    rooms: dict[str, set[str]] = {}
    for module, targets in graph().items():
        if module.startswith("model."):
            rooms.setdefault(room(module), set()).update(
                room(t) for t in targets if t.startswith("model.") and room(t) != room(module)
            )
    assert find_cycle(rooms) is None


@pytest.mark.parametrize(("low", "high"), [("store", "model"), ("store", "handlers"), ("model", "handlers")])
def test_data_flows_one_way(low: str, high: str) -> None:
    upward = sorted(
        f"{m} -> {t}"
        for m, ts in graph().items()
        if m.split(".")[0] == low
        for t in ts
        if t.split(".")[0] == high
    )
    assert upward == []


def test_the_checker_sees_a_circle_and_an_upward_import() -> None:
    """The checks above would pass on an empty graph: show that they can fail."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    edges = graph()
    assert "model.training.pipeline" in edges["model.run.runner"]
    assert "model.execution.local" in edges["model.execution.choice"]
    assert "model.execution.ray_tasks" in edges["model.execution.choice"]  # a function-local import


def test_no_module_is_longer_than_a_reader_holds_at_once() -> None:
    long = {m: n for m, p in sources().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


#: The ref namespaces the project writes; their names are spelled in model/identity/refs.py only.
REF_ROOTS = ("models/", "cache/", "bases/", "gc/")


def _string_starts(path: Path) -> list[str]:
    """Every string literal and f-string head in a file that starts like a ref name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        value = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
        elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
            value = str(node.values[0].value)
        if value is not None and value.startswith(REF_ROOTS) and "\n" not in value:
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: {value!r}")
    return found


def test_ref_names_are_spelled_in_one_module() -> None:
    """The store's ref names are the project's schema: gc, the catalog and the jobs read them
    from model.identity.refs, so that they cannot drift apart."""
    schema = REPO / "model/identity/refs.py"
    spelled = [
        s
        for p in sources().values()
        if p != schema and p.parts[-3:-1] != ("store",)
        for s in _string_starts(p)
    ]
    assert spelled == []
    assert len(_string_starts(schema)) >= 10  # the check reads what it should


def test_the_face_resolves_every_name_and_imports_nothing_heavy() -> None:
    import json
    import subprocess
    import sys

    code = (
        "import json, sys, model\n"
        "heavy = [m for m in ('ray', 'ai_edge_litert', 'numpy', 'flask') if m in sys.modules]\n"
        "missing = [n for n in model.__all__ if getattr(model, n, None) is None]\n"
        "print(json.dumps({'heavy': heavy, 'missing': missing, 'listed': 'train' in dir(model)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    # `import model` loads nothing heavy (resolving the names afterwards is what may).
    assert json.loads(out.stdout) == {"heavy": [], "missing": [], "listed": True}
