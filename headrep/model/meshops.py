"""Small differentiable mesh operations in torch (batched over leading vertex dimension)."""

from __future__ import annotations

import torch


def _gather_corners(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """[B, F, 3, 3] corner positions of verts [B, V, 3]; one flat index_select (fast backward)."""
    B, V, _ = verts.shape
    F = faces.shape[0]
    gi = (faces.long().reshape(1, -1) + (torch.arange(B, device=verts.device) * V).view(B, 1)).reshape(-1)
    return verts.reshape(B * V, 3).index_select(0, gi).view(B, F, 3, 3)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Face normals (v1 - v0) x (v2 - v0) of verts [B, V, 3] (or [V, 3]) and faces [F, 3] -> [B, F, 3].

    Counter-clockwise faces (seen from outside) give outward normals. Unnormalised, the length is twice the
    face area; normalised, zero-area faces give zero vectors.
    """
    squeeze = verts.dim() == 2
    v = verts[None] if squeeze else verts
    # unbind, not three selects: each select's backward fills a zero [B, F, 3, 3] tensor of its own
    c0, c1, c2 = _gather_corners(v, faces).unbind(2)
    n = torch.linalg.cross(c1 - c0, c2 - c0, dim=-1)
    if normalize:
        n = n * torch.rsqrt((n * n).sum(-1, keepdim=True).clamp_min(1e-30))
    return n[0] if squeeze else n


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals of verts [B, V, 3] (or [V, 3]) and faces [F, 3] (via index_add).

    Vertices used by no face (or only by zero-area faces) get zero normals.
    """
    squeeze = verts.dim() == 2
    v = verts[None] if squeeze else verts
    B, V, _ = v.shape
    F = faces.shape[0]
    fn = face_normals(v, faces, normalize=False).reshape(B * F, 3)  # length = 2 * area: area weighting
    off = (torch.arange(B, device=v.device) * V).view(B, 1)
    f = faces.long()
    vn = v.new_zeros(B * V, 3)
    for k in range(3):  # flat index_add over the B*V rows, one per face corner
        vn = vn.index_add(0, (f[:, k].view(1, -1) + off).reshape(-1), fn)
    vn = vn.view(B, V, 3)
    vn = vn * torch.rsqrt((vn * vn).sum(-1, keepdim=True).clamp_min(1e-30))
    return vn[0] if squeeze else vn


def icosphere(subdivisions: int = 0, radius: float = 1.0, dtype=torch.float32):
    """Unit icosphere (vertices [V, 3], faces [F, 3] int64) with 20 * 4**subdivisions counter-clockwise
    (outward) faces; 5 -> 20,480, 6 -> 81,920, 7 -> 327,680 triangles."""
    import numpy as np

    t = (1.0 + 5 ** 0.5) / 2.0
    v = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], np.float64)
    f = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
                  [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
                  [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]], np.int64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    for _ in range(int(subdivisions)):
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], 0)
        e.sort(1)
        uniq, inv = np.unique(e, axis=0, return_inverse=True)
        inv = inv.reshape(-1)
        mid = v[uniq[:, 0]] + v[uniq[:, 1]]
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = len(v) + inv.reshape(3, -1)  # midpoints of edges (0,1), (1,2), (2,0) per face
        a, b, c = f[:, 0], f[:, 1], f[:, 2]
        # the four children of a face are consecutive: index order stays spatially coherent (cache-friendly)
        f = np.stack([np.stack([a, m[0], m[2]], 1), np.stack([b, m[1], m[0]], 1),
                      np.stack([c, m[2], m[1]], 1), np.stack([m[0], m[1], m[2]], 1)], 1).reshape(-1, 3)
        v = np.concatenate([v, mid], 0)
    # orient outward (the base table may be wound either way): flip if the first face points inward
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    if (n * v[f].mean(1)).sum() < 0:
        f = f[:, [0, 2, 1]]
    return torch.tensor(v * radius, dtype=dtype), torch.from_numpy(np.ascontiguousarray(f))
