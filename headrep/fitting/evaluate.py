"""How well a fit explains the clip: landmark NME, normal and depth agreement with the dense targets, the
head-region silhouette IoU against the person mask, the photometric error over skin."""

from __future__ import annotations

import numpy as np
import torch

from headrep.fitting import losses
from headrep.model import MP_EYE_OUTER


def head_region(obs, track, idx: np.ndarray, R: int) -> np.ndarray:
    """[B,R,R] bool: rows above the chin (detected MediaPipe point 152), not occluded, inside the video frame
    — where the head-region IoU compares the person mask with the rendered coverage."""
    from headrep.fitting.observe import MP_CHIN
    from headrep.io import crop_in_frame

    chin = np.asarray(track.points)[idx, MP_CHIN, 1]
    rows = np.arange(R)[None, :, None] < np.nan_to_num(chin, nan=-1.0)[:, None, None]
    inside = crop_in_frame(np.asarray(track.boxes)[idx], track.image_size, R)
    return rows & ~np.asarray(obs.occluded[idx]) & inside


def head_roll_deg(track) -> np.ndarray:
    """[T] each frame's head roll in its crop (degrees): the angle of the line through the outer eye corners
    (MP_EYE_OUTER, the points the NME's inter-ocular distance uses); NaN where no face was found."""
    p = np.asarray(track.points, dtype=np.float64)
    d = p[:, MP_EYE_OUTER[1], :2] - p[:, MP_EYE_OUTER[0], :2]
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


@torch.no_grad()
def evaluate(fitter, offsets: bool = True, batch: int = 16, per_frame: bool = False) -> dict:
    """Over the valid frames: NME (landmarks / inter-ocular distance); with dense targets the normal angular
    error (degrees) and scale-shift-invariant depth error on the target mask; with observations the
    head-region silhouette IoU (person mask > 0.5 vs coverage > 0.5 above the chin) and, with the photometric
    term, the mean L1 colour error over visible skin (0-1 units). ``per_frame``: also "silhouette_counts", each
    frame's (intersection, union, missing, extra) pixel counts [T,4] (zero where the IoU does not count the
    frame): missing, the person's pixels the head does not cover (hair the mesh lacks); extra, the head's
    pixels outside the person (union − intersection = missing + extra)."""
    from headrep.fitting.detail import photometric_residual, render_step
    from headrep.fitting.targets import angular_normal_error, scale_shift_invariant_depth_error

    scene, P, tg, obs = fitter.scene, fitter.params, fitter.targets, fitter.obs
    sums = {"nme": 0.0, "ang": 0.0, "dep": 0.0, "pho": 0.0, "pho_n": 0.0}
    n_frames = 0
    counts = np.zeros((scene.T, 4))
    for s in range(0, scene.T, batch):
        idx = torch.arange(s, min(s + batch, scene.T))
        valid = fitter.valid_t[idx]
        if not valid.any():
            continue
        p = P.view(idx)
        verts, pose = scene.dense(p, offsets=offsets and fitter.cfg.offsets)
        lmk = scene.project(scene.dense_landmarks(verts, pose), p["focal"])
        sums["nme"] += losses.landmark_nme(lmk, scene.det_full[idx], scene.iod[idx], valid) * int(valid.sum())
        maps = render_step(fitter, verts, idx, p)
        i = idx.numpy()
        if tg is not None:
            tmask = torch.as_tensor(tg.mask[i]) & (maps["mask"] > 0.5) & valid[:, None, None]
            a = angular_normal_error(maps["normal"], torch.as_tensor(tg.normal[i]), tmask)
            sums["ang"] += float(torch.nan_to_num(a[valid]).sum())
            if getattr(tg, "has_depth", True):
                d, _ = scale_shift_invariant_depth_error(maps["depth"], torch.as_tensor(tg.depth[i]), tmask)
                sums["dep"] += float(torch.nan_to_num(d[valid]).sum())
        if obs is not None:
            keep = i[valid.numpy() & np.asarray(obs.has_person[i])]
            if len(keep):
                region = head_region(obs, fitter.track, keep, scene.R)
                pos = np.searchsorted(i, keep)
                person = np.asarray(obs.person[keep]) > 0.5
                cover = maps["mask"][pos].numpy() > 0.5
                counts[keep, 0] = (person & cover & region).sum((1, 2))
                counts[keep, 1] = ((person | cover) & region).sum((1, 2))
                counts[keep, 2] = (person & ~cover & region).sum((1, 2))
                counts[keep, 3] = (~person & cover & region).sum((1, 2))
            if "photometric" in fitter.terms and fitter.appearance_ready:  # albedo and lights fitted
                res, w = photometric_residual(fitter, idx, maps, p["light"])
                sums["pho"] += float((res.abs().mean(-1) * w).sum())
                sums["pho_n"] += float(w.sum())
        n_frames += int(valid.sum())
    nan = float("nan")
    inter, union = counts.sum(0)[:2]
    out = {"landmark_nme": sums["nme"] / n_frames,
           "normal_deg": sums["ang"] / n_frames if tg is not None else nan,
           "depth_ssi": sums["dep"] / n_frames if tg is not None and getattr(tg, "has_depth", True) else nan,
           "silhouette_iou": float(inter / union) if union else nan,
           "photometric_l1": sums["pho"] / sums["pho_n"] if sums["pho_n"] else nan,
           "frames": n_frames}
    if per_frame:
        out["silhouette_counts"] = counts
    return out
