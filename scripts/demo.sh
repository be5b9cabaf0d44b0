#!/usr/bin/env bash
# First real job: fetch the sample videos and render the stand-in model's dense head.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
headrep samples
headrep render-model -o out/render-model --overwrite
echo
echo "Done. Look at out/render-model/: neutral_normal.png, expressive_normal.png, *_depth.png, turntable.mp4"
echo "(made with the procedural stand-in model; pass --model /path/to/SMPLX_NEUTRAL.npz for SMPL-X)"
