"""The silhouette stage: D_static alone, on the person mask above the neck, before the detail epochs.

The coarse model is a bald head; long hair is centimetres away from its scalp, and the silhouette's gradients
live only on the outline (the antialiased edge pixels). A short stage with D_static's own, larger learning rate
grows the scalp, ears and neck into the person's outline under the offset regularisers (magnitude, Laplacian
of D), so the detail epochs start from a head of the right shape.
"""

from __future__ import annotations

import numpy as np
import torch

from headrep.fitting.losses import fold_penalty
from headrep.io import crop_in_frame
from headrep.io import progress as progress_bar
from headrep.model import face_normals, laplacian_penalty, to_camera


def silhouette_frames(fitter, k: int) -> torch.Tensor:
    """Up to ``k`` frames spread over the clip that have a face, a person mask and silhouette rows: the clip cut
    into ``k`` stretches, from each the frame whose crop shows most of its silhouette rows (where the video
    frame's edge cuts the crown on most frames, the few that show it are what keeps the crown's shape: with
    only cut frames the stage grew WolfgangLanger's crown into a point beyond the edge)."""
    obs, sc = fitter.obs, fitter.scene
    ok = np.nonzero(fitter.valid & obs.has_person & (obs.silhouette_rows > 0))[0]
    if len(ok) == 0:
        return torch.zeros(0, dtype=torch.long)
    shown = np.zeros(len(ok))
    for s in range(0, len(ok), 64):  # in chunks: a long clip's masks at once would take gigabytes
        part = ok[s:s + 64]
        inside = crop_in_frame(sc.boxes[part].numpy(), sc.image_size, sc.R)
        rows = np.arange(sc.R)[None, :, None] < obs.silhouette_rows[part][:, None, None]
        shown[s:s + 64] = (inside & rows).sum((1, 2)) / np.maximum(rows.sum((1, 2)) * sc.R, 1)
    pick = [part[np.argmax(shown[part])] for part in np.array_split(np.arange(len(ok)), min(k, len(ok)))]
    return torch.as_tensor(ok[pick], dtype=torch.long)


def _pooled(masks: np.ndarray, k: int) -> torch.Tensor:
    """[B,R,R] masks averaged over k×k blocks -> [B,R/k,R/k] float."""
    x = torch.as_tensor(np.asarray(masks, np.float32))
    return x if k == 1 else torch.nn.functional.avg_pool2d(x[:, None], k)[:, 0]


def run_silhouette(fitter, progress: bool = True) -> dict:
    """Optimise D_static on the silhouette (+ its magnitude and Laplacian penalties), rendered at
    1/``silhouette_downscale`` of the crop (an outline needs no full resolution); returns
    {"frames", "loss_start", "loss_end"}."""
    from headrep.fitting.detail import Step, silhouette_region, term_static_mag

    c, P, scene = fitter.cfg, fitter.params, fitter.scene
    idx = silhouette_frames(fitter, c.silhouette_frames)
    info = {"frames": len(idx), "loss_start": None, "loss_end": None}
    if len(idx) == 0 or c.silhouette_steps <= 0:
        return info
    k = max(1, int(c.silhouette_downscale))
    person = _pooled(fitter.obs.person[idx.numpy()], k)
    region = _pooled(silhouette_region(fitter, idx).numpy(), k)
    field = SmoothField(scene.head.faces, scene.head.num_vertices, c.silhouette_smoothing)
    # the face stays where the landmarks put it: the outline moves the scalp, ears and neck, fading in from the
    # face border over a few rings of vertices instead of a step (the indicator smoothed by a short-range field)
    outside = torch.as_tensor(~scene.head.face_mask, dtype=torch.float32)[:, None]
    ramp = SmoothField(scene.head.faces, scene.head.num_vertices, 2.0).solve(outside)
    weight = (outside * (2 * ramp - 1).clamp(0, 1)).float()
    base = P.static.detach().clone()
    u = torch.zeros_like(P.static).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=c.lr_static_silhouette)
    fixed = {n: v.detach() for n, v in P.view(idx).items()}
    faces = scene.head.faces_t.long()
    with torch.no_grad():  # the pose is fixed in this stage: the head without offsets is one surface
        bare = face_normals(scene.dense(fixed, offsets=False)[0], faces)
    bar = progress_bar(range(c.silhouette_steps), c.silhouette_steps, "silhouette", "step", enabled=progress)
    for _ in bar:
        opt.zero_grad(set_to_none=True)
        p = {**fixed, "static": base + weight * field(u)}
        verts, pose = scene.dense(p, offsets=True)
        cover = scene.render(to_camera(verts), idx, float(p["focal"]), scale=1.0 / k)["mask"]
        sil = (((cover - person) ** 2) * region).sum() / region.sum().clamp_min(1)
        step = Step(fitter, idx, p, verts, pose, fitter.valid_t[idx])
        # the Laplacian over the whole head (the detail stage's weakens the face border's edges): the face is held
        # here, and the hair beside it grows from it instead of stepping away (synthetic face error 0.535 mm
        # with the detail stage's here, 0.521 with this one)
        lap = laplacian_penalty(fitter.L, 1e3 * p["static"])
        loss = (c.w_silhouette_stage * sil + c.w_static_mag * term_static_mag(step) + c.w_static_lap * lap
                + c.w_fold * fold_penalty(face_normals(verts, faces), bare))
        loss.backward()
        opt.step()
        value = float(sil.detach())
        info["loss_start"] = value if info["loss_start"] is None else info["loss_start"]
        info["loss_end"] = value
        bar.set_postfix(silhouette=f"{value:.3e}")
    bar.close()
    with torch.no_grad():
        P.static = (base + weight * field(u)).detach()
    return info


class SmoothField:
    """A per-vertex field parameterised as ``x = (I + λL)⁻¹ u`` (L the mesh's graph Laplacian): a gradient
    step on u moves x smoothly over the surface, so a silhouette that pulls on a few outline vertices grows a
    smooth bulge instead of spikes ("large steps" preconditioning of inverse rendering, Nicolet et al. 2021).
    The matrix is factorised once; forward and backward are one sparse solve each (it is symmetric)."""

    def __init__(self, faces, num_vertices: int, lam: float):
        import scipy.sparse as sp
        from scipy.sparse.linalg import factorized

        from headrep.model import graph_laplacian

        A = (sp.identity(num_vertices, format="csc") + lam * graph_laplacian(faces, num_vertices)).tocsc()
        self._solve = factorized(A)

    def solve(self, b: torch.Tensor) -> torch.Tensor:
        x = np.stack([self._solve(np.ascontiguousarray(b[:, k].detach().cpu().double().numpy()))
                      for k in range(b.shape[1])], 1)
        return torch.as_tensor(x, dtype=b.dtype)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return _Solve.apply(u, self)


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, field):
        ctx.field = field
        return field.solve(u)

    @staticmethod
    def backward(ctx, g):
        return ctx.field.solve(g), None
