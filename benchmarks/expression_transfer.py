"""Benchmark of the expression-transfer model: self-reenactment on real fits, held-out frames.

For each sample video (WolfgangLanger_Pexels.mp4 and single_face.mp4) a HeadRep is fitted once with `headrep
fit` (CLI defaults; cached under ``--work``, default ~/.cache/headrep/bench/transfer). The last ``--holdout``
fraction of each rep's frames (a contiguous block, so no neighbouring frame leaks into training) is held out; one
transfer model is trained on the other valid frames of both reps together (`transfer train`'s defaults). On the
held-out frames each rep then drives itself, and the benchmark compares the resulting D_dyn,t with the fitted one:

* ``mlp``     G evaluated on the rep's own neutral geometry with the frame's ψ_t and jaw (what `transfer drive
              --mode mlp` computes),
* ``nearest`` the fitted D_dyn of the training frame of the same rep with the nearest (ψ, 5·jaw) — a retrieval
              baseline that, unlike `direct`, needs no source offsets at test time,
* ``none``    no dynamic offsets (SMPL-X expression only),
* ``direct``  A's fitted offsets copied by vertex index; in SELF-reenactment A is the rep itself, so this is the
              fitted D_dyn and its error is 0 by construction (an oracle row, shown for completeness: `direct`'s
              weakness — another face's offsets on the wrong vertices — only shows across identities, which
              the synthetic test in tests/test_transfer_model.py measures against a known truth).

Metrics per held-out frame, averaged: the mean per-vertex Euclidean error of D_dyn on the face vertices (mm), and
the angular error (degrees) between the normal map rendered with that D_dyn and the one rendered with the fitted
D_dyn, on the pixels where the face region is visible (crop camera of the fit, ``--resolution``). Also: training
seconds, and G's inference time per frame (milliseconds; all face vertices, batch of 32 frames, after warm-up).

All results are for the procedural STAND-IN model (no SMPL-X file here), not SMPL-X results.

    python benchmarks/expression_transfer.py                   # fits both videos if needed (~5-10 min), then ~3 min
    python benchmarks/expression_transfer.py --quick           # 96 / 72 frames, shorter fits and training
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from transfer.train import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")


def ensure_fit(video: str, work: Path, quick: bool) -> Path:
    from headrep.samples import sample_path

    out = work / (Path(video).stem + ("-quick" if quick else ""))
    if (out / "rep.json").is_file():
        return out
    cmd = [sys.executable, "-m", "headrep", "fit", str(sample_path(video)), "-o", str(out), "--overwrite",
           "--model", "standin"]  # the stand-in, as the docstring says
    if quick:
        cmd += ["--frames", "0:96", "--coarse-steps", "150", "--detail-epochs", "6"]
    print(f"fitting {video} -> {out} ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def split(rep, holdout: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) frame positions: the last ``holdout`` of the frames are the test block; valid frames only."""
    T = rep.num_frames
    cut = int(round((1 - holdout) * T))
    valid = rep.valid.astype(bool)
    pos = np.arange(T)
    return pos[(pos < cut) & valid], pos[(pos >= cut) & valid]


def subset(sample: dict, rep, frames: np.ndarray) -> dict:
    t = rep.tensors
    idx = torch.as_tensor(frames)
    return {"neutral": sample["neutral"], "normals": sample["normals"],
            "expression": t["expression"][idx].float(), "jaw": t["pose"][idx, 22].float(),
            "target": t["dynamic_offsets"][idx].float()}


def face_triangles(rep) -> torch.Tensor:
    fv = np.zeros(rep.head.num_vertices, bool)
    fv[rep.face_vertices] = True
    faces = np.asarray(rep.head.faces)
    return torch.as_tensor(faces[fv[faces].all(1)], dtype=torch.int32)


def render_normals(rep, dyn: torch.Tensor, frames: np.ndarray, resolution: int, faces: torch.Tensor):
    """Normal maps [T,R,R,3] and masks of the rep's frames with D_dyn replaced by ``dyn`` [T,Nf,3]."""
    from headrep.model.head import to_camera
    from headrep.render import get_context
    from headrep.render.maps import render_maps

    ctx = get_context("cpu")
    t = rep.tensors
    idx = torch.as_tensor(frames)
    dense = dyn.new_zeros(len(frames), rep.head.num_vertices, 3)
    dense[:, torch.as_tensor(rep.face_vertices)] = dyn.to(dense.dtype)
    normals, masks = [], []
    with torch.no_grad():
        for k in range(0, len(frames), 16):
            i = idx[k:k + 16]
            v = rep.head(t["betas"][None], t["expression"][i], t["pose"][i], transl=t["transl"][i],
                         static_offsets=t["static_offsets"], dynamic_offsets=dense[k:k + 16]).vertices
            cams = [rep.crop_camera(int(j), resolution) for j in i]
            m = render_maps(ctx, to_camera(v).float(), faces, cams, antialias=False)
            normals.append(m["normal"])
            masks.append(m["mask"])
    return torch.cat(normals), torch.cat(masks)


def angular_error_deg(n: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> float:
    cos = (n * ref).sum(-1).clamp(-1, 1)
    ang = torch.rad2deg(torch.acos(cos))
    m = mask > 0.5
    per_frame = [(ang[i][m[i]]).mean() for i in range(ang.shape[0]) if m[i].any()]
    return float(torch.stack(per_frame).mean()) if per_frame else float("nan")


def nearest_offsets(train: dict, test: dict) -> torch.Tensor:
    key = lambda d: torch.cat([d["expression"], 5.0 * d["jaw"]], -1)  # noqa: E731  (jaw_scale of the encoder)
    nn_idx = torch.cdist(key(test), key(train)).argmin(1)
    return train["target"][nn_idx]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("HEADREP_CACHE", Path.home() / ".cache/headrep"))
                    / "bench" / "transfer", help="where the fitted reps are cached")
    ap.add_argument("--holdout", type=float, default=0.2, help="fraction of each rep's frames held out (the end)")
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="training epochs (`transfer train`'s default)")
    ap.add_argument("--resolution", type=int, default=256, help="normal-map size for the angular error")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="short fits (first 96 frames) and at most 10 epochs")
    args = ap.parse_args()
    if args.quick:
        args.epochs = min(args.epochs, 10)
    from headrep.rep import HeadRep
    from transfer.dataset import samples_from_rep
    from transfer.train import offset_error_mm, predict, train

    reps = [HeadRep.load(ensure_fit(v, args.work, args.quick)) for v in VIDEOS]
    parts = []
    for rep in reps:
        tr, te = split(rep, args.holdout)
        s = samples_from_rep(rep)
        parts.append((subset(s, rep, tr), subset(s, rep, te), tr, te))
    t0 = time.perf_counter()
    model, hist = train([p[0] for p in parts], epochs=args.epochs, vertices_per_step=2048, threads=args.threads,
                        progress=None)
    train_s = time.perf_counter() - t0

    rows = []
    for rep, (trs, tes, tr, te), video in zip(reps, parts, VIDEOS):
        predict(model, {**tes, "expression": tes["expression"][:4], "jaw": tes["jaw"][:4]})   # warm-up
        t1 = time.perf_counter()
        mlp = predict(model, tes, batch=32)
        ms = 1e3 * (time.perf_counter() - t1) / max(1, len(te))
        fitted = tes["target"]
        preds = {"mlp": mlp, "nearest": nearest_offsets(trs, tes), "none": torch.zeros_like(fitted),
                 "direct (= fitted; oracle)": fitted}
        faces_face = face_triangles(rep)
        ref_n, _ = render_normals(rep, fitted, te, args.resolution, rep.head.faces_t)
        _, face_mask = render_normals(rep, fitted, te, args.resolution, faces_face)
        for name, d in preds.items():
            n, _ = render_normals(rep, d, te, args.resolution, rep.head.faces_t)
            rows.append((video, name, offset_error_mm(d, fitted), angular_error_deg(n, ref_n, face_mask),
                         len(tr), len(te), ms if name == "mlp" else None))
        rows.append((video, "(fitted |D_dyn| mean)", float(fitted.norm(dim=-1).mean() * 1e3), None, len(tr),
                     len(te), None))

    print(f"\nTransfer self-reenactment on held-out frames (last {args.holdout:.0%} of each rep; STAND-IN model, "
          f"not SMPL-X). One model trained on both reps' other frames: {args.epochs} epochs, {train_s:.1f} s "
          f"({torch.get_num_threads()} threads; load {os.getloadavg()[0]:.1f}).\n")
    print("| video | D_dyn from | D_dyn error (mm/vertex) | normal error on the face (deg) | train / test frames "
          "| G ms/frame |")
    print("|---|---|---|---|---|---|")
    for v, name, e, a, ntr, nte, ms in rows:
        print(f"| {v} | {name} | {e:.4f} | {'' if a is None else f'{a:.3f}'} | {ntr} / {nte} | "
              f"{'' if ms is None else f'{ms:.2f}'} |")
    if hist["val_mean_mm"]:
        print(f"\nvalidation (random 10% of the training frames): {hist['val_mean_mm'][-1]:.4f} mm/vertex")
    return 0


if __name__ == "__main__":
    sys.exit(main())
