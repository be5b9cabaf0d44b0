"""How well a fit explains the clip: landmark NME, normal and depth agreement with the dense targets."""

from __future__ import annotations

import torch

from headrep.fitting import losses
from headrep.model import to_camera


@torch.no_grad()
def evaluate(fitter, offsets: bool = True, batch: int = 16) -> dict:
    """NME (landmarks / inter-ocular distance), normal angular error (degrees) and scale-shift-invariant depth
    error over the valid frames, on the target mask."""
    from headrep.fitting.targets import angular_normal_error, scale_shift_invariant_depth_error

    scene, P, tg = fitter.scene, fitter.params, fitter.targets
    nme, ang, dep, n_frames = [], [], [], 0
    for s in range(0, scene.T, batch):
        idx = torch.arange(s, min(s + batch, scene.T))
        valid = fitter.valid_t[idx]
        if not valid.any():
            continue
        p = P.view(idx)
        verts, pose = scene.dense(p, offsets=offsets and fitter.cfg.offsets)
        lmk = scene.dense_landmarks(verts, pose, p["focal"])
        nme.append(losses.landmark_nme(lmk, scene.det_full[idx], scene.iod[idx], valid) * int(valid.sum()))
        maps = scene.render(to_camera(verts), idx, float(p["focal"]), antialias=False)
        i = idx.numpy()
        tmask = torch.as_tensor(tg.mask[i]) & (maps["mask"] > 0.5) & valid[:, None, None]
        a = angular_normal_error(maps["normal"], torch.as_tensor(tg.normal[i]), tmask)
        ang.append(float(torch.nan_to_num(a[valid]).sum()))
        if getattr(tg, "has_depth", True):
            d, _ = scale_shift_invariant_depth_error(maps["depth"], torch.as_tensor(tg.depth[i]), tmask)
            dep.append(float(torch.nan_to_num(d[valid]).sum()))
        n_frames += int(valid.sum())
    return {"landmark_nme": sum(nme) / n_frames, "normal_deg": sum(ang) / n_frames,
            "depth_ssi": (sum(dep) / n_frames) if dep else float("nan"), "frames": n_frames}
