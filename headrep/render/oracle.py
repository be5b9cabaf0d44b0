"""Pure-torch reference rasterizer: the test oracle for the numba and CUDA backends.

Same conventions and outputs as :func:`headrep.render.rasterize` / :func:`headrep.render.interpolate`
(nvdiffrast's), differentiable by plain autograd. Visibility is found by enumerating candidate
(triangle, pixel) pairs from per-triangle pixel bounding boxes (``repeat_interleave``), testing them with the
homogeneous edge functions and the [-1, 1] depth range, and keeping the smallest z/w per pixel with
``scatter_reduce(amin)`` (ties: lowest triangle index). Work is chunked to bound memory.
"""

from __future__ import annotations

import torch


class TorchContext:
    """Context of the pure-torch reference backend (``get_context("torch")``)."""

    backend = "torch"
    device = torch.device("cpu")

    def __repr__(self) -> str:
        return "TorchContext()"


_CHUNK = 1 << 22  # candidate pairs per chunk


def _bboxes(q: torch.Tensor, H: int, W: int):
    """Conservative inclusive pixel boxes [F] x4 and a keep mask, q = [F, 3, 4] float64 clip positions."""
    x, y, z, w = q.unbind(-1)
    keep = ~((w <= 0).all(1) | (x > w).all(1) | (x < -w).all(1) | (y > w).all(1) | (y < -w).all(1)
             | (z > w).all(1) | (z < -w).all(1))
    front = (w > 0).all(1)
    ws = torch.where(w > 0, w, torch.ones_like(w))
    nx, ny = x / ws, y / ws
    fx0 = (((nx.amin(1) + 1) * 0.5 * W - 0.5).clamp(-2, W + 1) - 1e-3).ceil()
    fx1 = (((nx.amax(1) + 1) * 0.5 * W - 0.5).clamp(-2, W + 1) + 1e-3).floor()
    fy0 = (((ny.amin(1) + 1) * 0.5 * H - 0.5).clamp(-2, H + 1) - 1e-3).ceil()
    fy1 = (((ny.amax(1) + 1) * 0.5 * H - 0.5).clamp(-2, H + 1) + 1e-3).floor()
    x0 = torch.where(front, fx0, torch.zeros_like(fx0)).clamp_min(0).long()
    x1 = torch.where(front, fx1, torch.full_like(fx1, W - 1)).clamp_max(W - 1).long()
    y0 = torch.where(front, fy0, torch.zeros_like(fy0)).clamp_min(0).long()
    y1 = torch.where(front, fy1, torch.full_like(fy1, H - 1)).clamp_max(H - 1).long()
    keep = keep & (x1 >= x0) & (y1 >= y0)
    return x0, x1, y0, y1, keep


def visibility(pos: torch.Tensor, tri: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """[B, H, W] int64 index of the visible triangle, -1 where empty (no gradient)."""
    B = pos.shape[0]
    t64 = tri.long()
    ids = torch.full((B, H * W), -1, dtype=torch.long)
    for b in range(B):
        q = pos[b].detach().double()[t64]  # [F, 3, 4]
        # c_i = q_j x q_k over (x, y, w); a_i = c_i . (fx, fy, 1); D = q_0 . c_0
        qxyw = q[..., [0, 1, 3]]
        c = torch.stack([torch.linalg.cross(qxyw[:, 1], qxyw[:, 2]),
                         torch.linalg.cross(qxyw[:, 2], qxyw[:, 0]),
                         torch.linalg.cross(qxyw[:, 0], qxyw[:, 1])], 1)  # [F, 3(i), 3(xyw)]
        D = (qxyw[:, 0] * c[:, 0]).sum(-1)
        x0, x1, y0, y1, keep = _bboxes(q, H, W)
        keep &= (D != 0) & torch.isfinite(D)
        tids = torch.nonzero(keep).squeeze(1)
        if tids.numel() == 0:
            continue
        s = torch.sign(D[tids])
        cs = c[tids] * s[:, None, None]
        kz = (q[tids, :, 2, None] * c[tids]).sum(1) / D[tids, None]  # [F', 3]
        bw = (x1 - x0 + 1)[tids]
        cnt = bw * (y1 - y0 + 1)[tids]
        ends = torch.cumsum(cnt, 0)
        zbest = torch.full((H * W,), float("inf"), dtype=torch.float64)
        cand_pix, cand_t, cand_z = [], [], []
        # chunk over triangles so that each chunk holds at most ~_CHUNK candidate pairs
        lo = 0
        while lo < tids.numel():
            base = int(ends[lo - 1]) if lo else 0
            hi = int(torch.searchsorted(ends, base + _CHUNK, right=True))
            hi = max(hi, lo + 1)
            n = cnt[lo:hi]
            k = torch.repeat_interleave(torch.arange(lo, hi), n)
            off = torch.arange(int(n.sum())) - torch.repeat_interleave(ends[lo:hi] - n - base, n)
            pxi = x0[tids[k]] + off % bw[k]
            pyi = y0[tids[k]] + off // bw[k]
            fx = (2.0 * pxi + 1.0) / W - 1.0
            fy = (2.0 * pyi + 1.0) / H - 1.0
            ck = cs[k]
            a = ck[..., 0] * fx[:, None] + ck[..., 1] * fy[:, None] + ck[..., 2]  # [N, 3]
            zw = kz[k, 0] * fx + kz[k, 1] * fy + kz[k, 2]
            inside = (a >= 0).all(1) & (a.sum(1) > 0) & (zw >= -1) & (zw <= 1)
            pix = (pyi * W + pxi)[inside]
            cand_pix.append(pix)
            cand_t.append(tids[k][inside])
            cand_z.append(zw[inside])
            zbest.scatter_reduce_(0, pix, zw[inside], reduce="amin")
            lo = hi
        pix = torch.cat(cand_pix)
        tt = torch.cat(cand_t)
        zz = torch.cat(cand_z)
        win = zz == zbest[pix]
        best = torch.full((H * W,), tri.shape[0], dtype=torch.long)
        best.scatter_reduce_(0, pix[win], tt[win], reduce="amin")
        ids[b] = torch.where(best < tri.shape[0], best, torch.full_like(best, -1))
    return ids.view(B, H, W)


def rasterize(ctx, pos: torch.Tensor, tri: torch.Tensor, resolution):
    """nvdiffrast-compatible ``(rast, rast_db)``; rast_db is all zeros (no image-space derivatives)."""
    H, W = int(resolution[0]), int(resolution[1])
    B = pos.shape[0]
    ids = visibility(pos, tri, H, W).view(B, H * W)
    rast = pos.new_zeros(B, H * W, 4)
    t64 = tri.long()
    j = torch.arange(H * W)
    fx_all = (2.0 * (j % W) + 1.0) / W - 1.0
    fy_all = (2.0 * (j // W) + 1.0) / H - 1.0
    rows = []
    for b in range(B):
        pix = torch.nonzero(ids[b] >= 0).squeeze(1)
        t = ids[b, pix]
        q = pos[b][t64[t]]  # [N, 3, 4] differentiable
        fx = fx_all[pix].to(pos.dtype)[:, None]
        fy = fy_all[pix].to(pos.dtype)[:, None]
        X = q[..., 0] - fx * q[..., 3]
        Y = q[..., 1] - fy * q[..., 3]
        a0 = X[:, 1] * Y[:, 2] - Y[:, 1] * X[:, 2]
        a1 = X[:, 2] * Y[:, 0] - Y[:, 2] * X[:, 0]
        a2 = X[:, 0] * Y[:, 1] - Y[:, 0] * X[:, 1]
        S = a0 + a1 + a2
        zw = (a0 * q[:, 0, 2] + a1 * q[:, 1, 2] + a2 * q[:, 2, 2]) / (
            a0 * q[:, 0, 3] + a1 * q[:, 1, 3] + a2 * q[:, 2, 3])
        vals = torch.stack([a0 / S, a1 / S, zw, (t + 1).to(pos.dtype)], -1)
        rows.append(rast[b].index_put((pix,), vals))
    rast = torch.stack(rows, 0).view(B, H, W, 4)
    return rast, torch.zeros_like(rast)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor):
    """nvdiffrast-compatible ``(out, out_da)`` in plain torch; attr [B, V, C] or [V, C]."""
    if attr.dim() == 2:
        attr = attr[None]
    B, H, W, _ = rast.shape
    C = attr.shape[-1]
    tid = rast[..., 3].detach().round().long() - 1  # [B, H, W]
    covered = tid >= 0
    out = attr.new_zeros(B, H, W, C)
    outs = []
    for b in range(B):
        m = covered[b]
        vidx = tri.long()[tid[b][m]]  # [N, 3]
        a = attr[b if attr.shape[0] > 1 else 0]
        u = rast[b][..., 0][m].to(attr.dtype)[:, None]
        v = rast[b][..., 1][m].to(attr.dtype)[:, None]
        val = u * a[vidx[:, 0]] + v * a[vidx[:, 1]] + (1 - u - v) * a[vidx[:, 2]]
        outs.append(out[b].index_put((m,), val))
    return torch.stack(outs, 0), attr.new_empty(0)
