"""Appearance for the photometric term: the crops as colour tensors, the albedo's initial value from the
frames' projected colours, and the shading model's lights (SH shading itself lives in
:mod:`headrep.render.shading`, beside the other maps)."""

from __future__ import annotations

import numpy as np
import torch

from headrep.render.shading import neutral_light

def to_channels(crops_uint8: np.ndarray, grayscale: bool) -> torch.Tensor:
    """Crops [T,R,R,3] uint8 -> float [T,R,R,C] in [0,1]; C = 1 (luminance, Rec. 601) for a grey video."""
    x = torch.as_tensor(np.asarray(crops_uint8), dtype=torch.float32) / 255.0
    if grayscale:
        return (x * torch.tensor([0.299, 0.587, 0.114])).sum(-1, keepdim=True)
    return x


@torch.no_grad()
def project_colours(rast: torch.Tensor, faces: torch.Tensor, images: torch.Tensor, weight: torch.Tensor,
                    num_vertices: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour sums [Nd,C] and weight sums [Nd] of the pixels each vertex covers (barycentric weights × pixel
    weight): the mean projected colour of a vertex is sums / weights. rast [B,H,W,4], images [B,H,W,C],
    weight [B,H,W] (e.g. the visible skin)."""
    C = images.shape[-1]
    tri = rast[..., 3].long() - 1
    u, v = rast[..., 0], rast[..., 1]
    keep = (tri >= 0) & (weight > 0)
    t = tri[keep]
    bary = torch.stack([u[keep], v[keep], 1 - u[keep] - v[keep]], -1).clamp_min(0) * weight[keep][:, None]
    vid = faces.long()[t]                                     # [P,3]
    sums = torch.zeros(num_vertices, C, dtype=images.dtype)
    wsum = torch.zeros(num_vertices, dtype=images.dtype)
    col = images[keep]                                        # [P,C]
    for k in range(3):
        sums.index_add_(0, vid[:, k], bary[:, k:k + 1] * col)
        wsum.index_add_(0, vid[:, k], bary[:, k])
    return sums, wsum


@torch.no_grad()
def init_albedo(fitter, batch: int = 16) -> dict:
    """Albedo [Nd,C] = each vertex's mean projected colour over the valid frames (every visible, unoccluded
    pixel of the person, so hair and clothes get their colour too); vertices never seen get the mean skin
    colour. Lights start neutral (shading 1), which is what a mean colour already contains."""
    from headrep.model import to_camera

    scene, P, obs = fitter.scene, fitter.params, fitter.obs
    C = fitter.images.shape[-1]
    sums = torch.zeros(scene.head.num_vertices, C)
    wsum = torch.zeros(scene.head.num_vertices)
    skin_sum, skin_n = torch.zeros(C), 0
    for s in range(0, scene.T, batch):
        idx = torch.arange(s, min(s + batch, scene.T))
        idx = idx[fitter.valid_t[idx]]
        if len(idx) == 0:
            continue
        p = P.view(idx)
        verts, _ = scene.dense(p, offsets=fitter.cfg.offsets)
        maps = scene.render(to_camera(verts), idx, float(p["focal"]), antialias=False)
        i = idx.numpy()
        weight = (torch.as_tensor(obs.person[i]) > 0.5) & ~torch.as_tensor(obs.occluded[i])
        img = fitter.images[idx]
        a, w = project_colours(maps["rast"], scene.head.faces_t, img, weight.float(), scene.head.num_vertices)
        sums += a
        wsum += w
        skin = torch.as_tensor(obs.skin[i])
        skin_sum += img[skin].sum(0)
        skin_n += int(skin.sum())
    fallback = skin_sum / max(skin_n, 1) if skin_n else torch.full((C,), 0.5)
    seen = wsum > 1e-6
    albedo = torch.where(seen[:, None], sums / wsum.clamp_min(1e-6)[:, None], fallback[None])
    P.albedo = albedo.clamp(0.0, 1.0)
    P.light = neutral_light(scene.T, C)
    return {"seen_vertices": float(seen.float().mean()), "skin_colour": fallback.tolist()}
