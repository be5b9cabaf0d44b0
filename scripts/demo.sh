#!/usr/bin/env bash
# First real job: fetch the sample videos, render the model's dense head, fit the talking-woman sample and
# render the fit (a few minutes on a 2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
headrep samples
headrep render-model -o out/render-model --overwrite
video="$(headrep samples | awk '/^WolfgangLanger_Pexels.mp4/ {print $2}')"
headrep fit "$video" -o out/wolfgang --overwrite
headrep render out/wolfgang --overwrite
headrep info out/wolfgang
cat <<MSG

Done. Results:
  out/render-model/            the model's dense head: normal/depth PNGs, turntable.mp4
  out/wolfgang/                the fitted HeadRep (rep.safetensors + rep.json)
  out/wolfgang/renders/        normal.mp4, depth.mp4 (+ depth.npz), overlay.mp4  <- look at overlay.mp4 first
  notebooks/explore_headrep.ipynb   explores out/wolfgang (meshes, offset heat maps, expression curves)
(made with the procedural stand-in model, not SMPL-X; pass --model /path/to/SMPLX_NEUTRAL.npz for SMPL-X)
MSG
