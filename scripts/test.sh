#!/usr/bin/env bash
# The test suite (fast tests; set HEADREP_SLOW=1 to include tests marked slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
if [ "${HEADREP_SLOW:-0}" = 1 ]; then
  exec python -m pytest -q "$@"
else
  exec python -m pytest -q -m "not slow" "$@"
fi
