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
# A registry download that breaks off (seen in CI: a wheel stopped at 72 of 86 MB six times over) is
# resumed by pip and, failing that, the whole install is tried again; what was fetched stays in pip's cache.
export PIP_RETRIES=${PIP_RETRIES:-10} PIP_RESUME_RETRIES=${PIP_RESUME_RETRIES:-20}
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    if .venv/bin/python -m pip install -q "$@" 2>&1 | { grep -v -e '^WARNING: Location' -e '^\s*$' || true; }; then
      return 0
    fi
    echo "setup: pip install $* failed (attempt $attempt of 3)" >&2
    [ "$attempt" = 3 ] || sleep $((attempt * 15))
  done
  return 1
}

stamp=.venv/.headrep-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing headrep and its dependencies into .venv (about 2 minutes the first time)"
  pip_install --upgrade pip || true   # an older pip still installs; it only resumes less well
  # torch first, pinned to the CPU build this machine carries: an unpinned torch would pull a CUDA build
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    pip_install 'torch==2.13.0' || true
  fi
  pip_install -e '.[dev]' || true
  .venv/bin/python -c 'import headrep, torch, smplx, open3d, mediapipe, numba' || {
    echo "setup: the installation is incomplete (see the pip messages above); run it again to resume" >&2; exit 1; }
  touch "$stamp"
fi
