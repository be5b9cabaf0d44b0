#!/usr/bin/env bash
# Create or reuse .venv and install the project into it (idempotent; fast when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# open3d needs the Debian package libusb-1.0-0
if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing libusb-1.0-0 (needed by open3d)"
    (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) >/dev/null
  else
    echo "setup: open3d needs the Debian package libusb-1.0-0; run: sudo apt-get install -y libusb-1.0-0" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.headrep-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing headrep and its dependencies into .venv (about 2 minutes the first time)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  # torch first, pinned to the CPU build this machine carries: an unpinned torch would pull a CUDA build
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    .venv/bin/python -m pip install -q 'torch==2.13.0' 2>&1 | grep -v '^WARNING: Location' || true
  fi
  .venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' | grep -v '^\s*$' || true
  .venv/bin/python -c 'import headrep, torch, smplx, open3d, mediapipe, numba' || {
    echo "setup: the installation is incomplete (see the pip messages above)" >&2; exit 1; }
  touch "$stamp"
fi
