#!/usr/bin/env bash
# Train the example request on emulated aarch64 and compare its bytes with this machine's.
#
# Builds (once, cached in $CROSS_ROOT) an arm64 Debian root with debootstrap and
# qemu-user-static, installs requirements.txt there from aarch64 wheels
# (pip download --platform manylinux*_aarch64: this also proves every pinned
# runtime wheel exists for aarch64), imports the published int8 base by its
# sha1 (TensorFlow has no aarch64 wheel and is not needed), trains
# example-data/train.csv --seed 7 and compares the JSON hashes with the host's
# and with the golden literals of tests/test_portable_bits.py. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${CROSS_ROOT:-/var/tmp/stl-arm64-root}
PY=${PYTHON:-.venv/bin/python}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
command -v qemu-aarch64-static >/dev/null || apt-get install -y -qq qemu-user-static binfmt-support debootstrap >/dev/null
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

if [ ! -e "$ROOT/.stl-root-ready" ]; then
  echo "== debootstrap arm64 root in $ROOT (slow under emulation)" >&2
  rm -rf "$ROOT"
  debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip \
    bookworm "$ROOT" "$MIRROR" >/dev/null
  touch "$ROOT/.stl-root-ready"
fi

if ! cmp -s requirements.txt "$ROOT/.stl-venv-ready"; then
  echo "== aarch64 wheels for requirements.txt, installed into $ROOT/venv" >&2
  rm -rf "$ROOT/wheels" "$ROOT/venv"
  "$PY" -m pip download --quiet --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 \
    -r requirements.txt -d "$ROOT/wheels"
  cp requirements.txt "$ROOT/requirements.txt"
  chroot "$ROOT" python3 -m venv /venv
  chroot "$ROOT" /venv/bin/pip install --quiet --no-index --find-links /wheels -r /requirements.txt
  cp requirements.txt "$ROOT/.stl-venv-ready"
fi

echo "== host (x86-64) run" >&2
host_data=$(mktemp -d)
DATA_DIR="$host_data" "$PY" -m handlers.cli base ensure >/dev/null
base=$("$PY" -c 'from model.config import Settings; print(Settings().base)')
base_sha1=$(DATA_DIR="$host_data" "$PY" -m handlers.cli base list | BASE=$base "$PY" -c \
  'import json,os,sys; print([r for r in map(json.loads, sys.stdin) if r["base"]==os.environ["BASE"]][0]["weights_sha1"])')
host=$(DATA_DIR="$host_data" "$PY" -m handlers.cli train example-data/train.csv --seed 7 2>/dev/null)

echo "== emulated aarch64 run" >&2
rm -rf "$ROOT/src" "$ROOT/data"
mkdir -p "$ROOT/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 tar -c | tar -x -C "$ROOT/src"
DATA_DIR="$host_data" "$PY" -m handlers.cli cat "$base_sha1" > "$ROOT/base.tflite"
# XNNPACK reads the CPU list from /sys and /proc; without them it does not start (and stl refuses).
for fs in proc sys; do mountpoint -q "$ROOT/$fs" || mount --bind "/$fs" "$ROOT/$fs"; done
trap 'umount "$ROOT/proc" "$ROOT/sys" 2>/dev/null || true' EXIT
start=$(date +%s)
# The emulated CPU gets no kernel forced for the host's (OPENBLAS_CORETYPE=Haswell and the like).
"$PY" tests/dispatch_env.py chroot "$ROOT" /bin/sh -c "cd /src && uname -m && DATA_DIR=/data /venv/bin/python -m handlers.cli \
  base import /base.tflite --base $base >/dev/null && \
  DATA_DIR=/data /venv/bin/python -m handlers.cli train example-data/train.csv --seed 7 2>/dev/null" > "$ROOT/out.txt"
arm=$(tail -1 "$ROOT/out.txt")
echo "aarch64 train took $(( $(date +%s) - start )) s on $(head -1 "$ROOT/out.txt")" >&2
echo "host:    $host"
echo "aarch64: $arm"
rm -rf "$host_data"
[ "$host" = "$arm" ] && echo "IDENTICAL" || { echo "DIFFERENT"; exit 1; }
