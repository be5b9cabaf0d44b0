"""Loss terms and metrics of the fitter that are not about dense targets (those live in `headrep.fitting.targets`).

Offsets enter the regularisers in millimetres so the weights are O(1) numbers; the Laplacian terms penalise
`L·D` (the offset field), never `L·V` (which would flatten the head).
"""

from __future__ import annotations

import torch

from headrep.model import sparse_matmul


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor,
                  valid: torch.Tensor) -> torch.Tensor:
    """Mean squared 2D landmark error in units of each frame's inter-ocular distance.

    pred, target [B,L,2] pixels; scale [B] pixels; weights [L]; valid [B] bool (and NaN targets are skipped).
    """
    ok = valid[:, None] & torch.isfinite(target).all(-1)
    r = (pred - torch.nan_to_num(target)) / scale[:, None, None]
    w = weights[None] * ok
    return (w * (r ** 2).sum(-1)).sum() / w.sum().clamp_min(1.0)


def landmark_depth_loss(pred_z: torch.Tensor, target_z: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor,
                        valid: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the landmarks' relative depth (each frame's mean over its detected points
    removed: a monocular detector knows depth up to a shift), in inter-ocular distances.

    pred_z, target_z [B,L] pixels (target NaN where not detected); scale [B] pixels; weights [L]; valid [B].
    """
    ok = valid[:, None] & torch.isfinite(target_z)
    n = ok.sum(1, keepdim=True).clamp_min(1)
    t = torch.nan_to_num(target_z)
    r = (pred_z - (pred_z * ok).sum(1, keepdim=True) / n) - (t - (t * ok).sum(1, keepdim=True) / n)
    w = weights[None] * ok
    return (w * (r / scale[:, None]) ** 2).sum() / w.sum().clamp_min(1.0)


def landmark_nme(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, valid: torch.Tensor) -> float:
    """Mean landmark error over valid frames, normalised by the inter-ocular distance (NME)."""
    ok = valid[:, None] & torch.isfinite(target).all(-1)
    err = (pred - torch.nan_to_num(target)).norm(dim=-1) / scale[:, None]
    return float(err[ok].mean()) if ok.any() else float("nan")


def temporal_smoothness(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of consecutive frames of x [T,...] (0 for a single frame)."""
    if x.shape[0] < 2:
        return x.sum() * 0.0
    return ((x[1:] - x[:-1]) ** 2).mean()


def offset_magnitude(offsets_mm: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared offset length (mm²), optionally weighted per vertex (weights [N])."""
    sq = (offsets_mm ** 2).sum(-1)
    if weights is None:
        return sq.mean()
    return (sq * weights).sum(-1).mean() / weights.sum().clamp_min(1e-12)


def offset_norm(offsets_mm: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean offset length (mm), smoothed at 0: a group-L1 penalty that prefers offsets absent in most frames
    over small offsets everywhere."""
    return ((offsets_mm ** 2).sum(-1) + eps ** 2).sqrt().mean()


def nuclear_norm(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Sum of the singular values of x [B,...] as a B × (rest) matrix, over sqrt(x.numel()) (one pattern of rms
    r in every frame counts r; B patterns that differ on each frame, each of rms r, count r·sqrt(B)), smoothed
    at 0 (sqrt(σ² + eps²) − eps: a defined gradient where a window holds no offsets yet). Cheap for a few
    patterns whose depth changes over the frames, dear for what differs on every frame: a low-rank prior, as
    in robust PCA."""
    M = x.reshape(x.shape[0], -1)
    s = torch.linalg.svdvals(M) / M.numel() ** 0.5
    return ((s ** 2 + eps ** 2).sqrt() - eps).sum()


def offset_low_frequency(R, A, offsets_mm: torch.Tensor, iterations: int) -> torch.Tensor:
    """Mean squared norm (mm²) of what is left of offsets [B,n,3] after R and ``iterations`` steps of A (see
    headrep.model.base_smoother): the smooth part of a field. A wrinkle a few vertices across averages away; a
    broad bulge stays and pays."""
    x = sparse_matmul(R, offsets_mm)
    for _ in range(iterations):
        x = sparse_matmul(A, x)
    return (x ** 2).sum() / (x.shape[1] * x.shape[0])


def fold_penalty(normals: torch.Tensor, reference: torch.Tensor, margin: float = 0.5) -> torch.Tensor:
    """Mean of relu(margin − cos)² between unit face normals [B,F,3] and those of a reference surface: faces
    that turn by more than acos(margin) (60°) against it — an offset field folding over itself — pay."""
    cos = (normals * reference).sum(-1)
    return (torch.relu(margin - cos) ** 2).mean()
