"""CPU backend of the differentiable rasterizer: numba kernels behind torch autograd Functions.

Design
------
* Visibility: a numba z-buffer decides which triangle covers each pixel centre. It carries no gradient
  (exactly as in nvdiffrast, where visibility is piecewise constant). A parallel pass computes conservative
  per-triangle pixel boxes; the image is then cut into row bands, each band (one thread) scans the boxes in
  triangle order and z-tests its pixels in float64, then writes its rows of ``rast``.
* Differentiable part: for every covered pixel, the perspective-correct barycentrics and z/w are recomputed
  from the clip-space positions with nvdiffrast's formula, in fused numba forward/backward kernels wrapped
  in ``torch.autograd.Function`` s:

  - rasterize backward maps d rast[u, v, z/w] -> d pos,
  - interpolate backward maps d out -> d attr and d rast[u, v],
  - antialias (Laine et al. 2020, nvdiffrast's algorithm) maps d color -> d color and d pos at silhouettes.

* Image-space derivatives (``rast_db``) are not produced on CPU: a zeros tensor is returned in their place.

Clipping
--------
Instead of clipping triangles geometrically, the z-buffer uses homogeneous (2D-homogeneous, Olano & Greer)
edge functions evaluated at every pixel centre of a conservative pixel bounding box. With clip positions
q_i = (x_i, y_i, w_i) and the pixel ray p = (fx, fy, 1), a_i = det[q_j, q_k, p] and D = det[q0, q1, q2].
A pixel is covered iff all a_i have the sign of D (then the ray meets the triangle at a point with w > 0, so
vertices behind the camera are handled exactly) and its depth z/w lies in [-1, 1] (near/far clipping per
pixel). This is equivalent to clipping against the near/far planes and w > 0; triangles with D == 0 (zero
area, or seen exactly edge-on) are never drawn. There is no back-face culling; the depth test keeps the
smallest z/w, ties go to the lower triangle index.

Numba's cold compilation takes seconds, so all kernels are compiled with ``cache=True``; the cache lives in
``headrep.paths.cache_dir()/numba`` unless ``NUMBA_CACHE_DIR`` is already set.
"""

from __future__ import annotations

import os
import sys

from headrep.paths import cache_dir


def _configure_numba_cache() -> None:
    if not os.environ.get("NUMBA_CACHE_DIR"):
        folder = cache_dir() / "numba"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.environ["NUMBA_CACHE_DIR"] = str(folder)
        except OSError:  # read-only home: numba falls back to __pycache__ next to this file
            return
    if "numba" in sys.modules:  # imported before us: its config was read already
        from numba.core import config

        if not config.CACHE_DIR:
            config.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


_configure_numba_cache()

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from numba import njit, prange  # noqa: E402

_INF = np.inf


def _launch_numba_threads() -> None:
    """Start numba's thread pool now and keep torch's thread count: numba's OpenMP layer sets the process's
    OpenMP thread count to NUMBA_NUM_THREADS when its pool starts, and torch, on the same OpenMP runtime,
    follows it. A process held to one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1), a corpus worker's
    share) ran torch on every core after its first CPU render, and its float sums changed with it."""
    n = torch.get_num_threads()
    try:
        from numba.np.ufunc.parallel import _launch_threads
    except ImportError:  # another numba layout: its pool starts with the first kernel instead
        return
    _launch_threads()
    torch.set_num_threads(n)


_launch_numba_threads()


# ----------------------------------------------------------------------------------------------------------
# Visibility: triangle setup, binning into row bands, z-buffer.


@njit(cache=True, parallel=True)
def _tri_setup(pos, tri, H, W, bbox):
    """Conservative inclusive pixel bbox (x0, x1, y0, y1) per (batch, triangle); x1 < x0 when culled."""
    B = pos.shape[0]
    F = tri.shape[0]
    for job in prange(B * F):
        b = job // F
        t = job - b * F
        bbox[b, t, 0] = 0
        bbox[b, t, 1] = -1
        bbox[b, t, 2] = 0
        bbox[b, t, 3] = -1
        i0 = tri[t, 0]
        i1 = tri[t, 1]
        i2 = tri[t, 2]
        x0 = np.float64(pos[b, i0, 0]); y0 = np.float64(pos[b, i0, 1])
        z0 = np.float64(pos[b, i0, 2]); w0 = np.float64(pos[b, i0, 3])
        x1 = np.float64(pos[b, i1, 0]); y1 = np.float64(pos[b, i1, 1])
        z1 = np.float64(pos[b, i1, 2]); w1 = np.float64(pos[b, i1, 3])
        x2 = np.float64(pos[b, i2, 0]); y2 = np.float64(pos[b, i2, 1])
        z2 = np.float64(pos[b, i2, 2]); w2 = np.float64(pos[b, i2, 3])
        # Trivial frustum rejection (valid for any sign of w).
        if w0 <= 0.0 and w1 <= 0.0 and w2 <= 0.0:
            continue
        if x0 > w0 and x1 > w1 and x2 > w2:
            continue
        if x0 < -w0 and x1 < -w1 and x2 < -w2:
            continue
        if y0 > w0 and y1 > w1 and y2 > w2:
            continue
        if y0 < -w0 and y1 < -w1 and y2 < -w2:
            continue
        if z0 > w0 and z1 > w1 and z2 > w2:
            continue
        if z0 < -w0 and z1 < -w1 and z2 < -w2:
            continue
        # D = det[q0, q1, q2] over (x, y, w): zero for zero-area or exactly edge-on triangles (never drawn)
        D = x0 * (y1 * w2 - w1 * y2) + y0 * (w1 * x2 - x1 * w2) + w0 * (x1 * y2 - y1 * x2)
        if not (D != 0.0) or not np.isfinite(D):
            continue
        if w0 > 0.0 and w1 > 0.0 and w2 > 0.0:
            nx0 = x0 / w0; nx1 = x1 / w1; nx2 = x2 / w2
            ny0 = y0 / w0; ny1 = y1 / w1; ny2 = y2 / w2
            xmin = min(nx0, min(nx1, nx2)); xmax = max(nx0, max(nx1, nx2))
            ymin = min(ny0, min(ny1, ny2)); ymax = max(ny0, max(ny1, ny2))
            # pixel i has its centre at (2i+1)/W - 1; 1e-3 pixel of slack, the per-pixel test is exact
            fx0 = (xmin + 1.0) * 0.5 * W - 0.5
            fx1 = (xmax + 1.0) * 0.5 * W - 0.5
            fy0 = (ymin + 1.0) * 0.5 * H - 0.5
            fy1 = (ymax + 1.0) * 0.5 * H - 0.5
            fx0 = min(max(fx0, -2.0), W + 1.0); fx1 = min(max(fx1, -2.0), W + 1.0)
            fy0 = min(max(fy0, -2.0), H + 1.0); fy1 = min(max(fy1, -2.0), H + 1.0)
            px0 = max(int(np.ceil(fx0 - 1e-3)), 0); px1 = min(int(np.floor(fx1 + 1e-3)), W - 1)
            py0 = max(int(np.ceil(fy0 - 1e-3)), 0); py1 = min(int(np.floor(fy1 + 1e-3)), H - 1)
        else:  # straddles the camera plane: scan the whole image, the homogeneous test clips exactly
            px0 = 0; px1 = W - 1; py0 = 0; py1 = H - 1
        if px1 < px0 or py1 < py0:
            continue
        bbox[b, t, 0] = px0
        bbox[b, t, 1] = px1
        bbox[b, t, 2] = py0
        bbox[b, t, 3] = py1


@njit(cache=True)
def _rast_rows(pos, tri, ids, rast, b, r0, r1):
    """rast = (u, v, z/w, id + 1) of rows r0..r1-1 of image b, from the clip positions (nvdiffrast formula)."""
    H = ids.shape[1]
    W = ids.shape[2]
    for j in range(r0, r1):
        fy = (2.0 * j + 1.0) / H - 1.0
        for i in range(W):
            t = ids[b, j, i]
            if t < 0:
                rast[b, j, i, 0] = 0.0
                rast[b, j, i, 1] = 0.0
                rast[b, j, i, 2] = 0.0
                rast[b, j, i, 3] = 0.0
                continue
            fx = (2.0 * i + 1.0) / W - 1.0
            v0 = tri[t, 0]; v1 = tri[t, 1]; v2 = tri[t, 2]
            w0 = pos[b, v0, 3]; w1 = pos[b, v1, 3]; w2 = pos[b, v2, 3]
            X0 = pos[b, v0, 0] - fx * w0; Y0 = pos[b, v0, 1] - fy * w0
            X1 = pos[b, v1, 0] - fx * w1; Y1 = pos[b, v1, 1] - fy * w1
            X2 = pos[b, v2, 0] - fx * w2; Y2 = pos[b, v2, 1] - fy * w2
            a0 = X1 * Y2 - Y1 * X2
            a1 = X2 * Y0 - Y2 * X0
            a2 = X0 * Y1 - Y0 * X1
            S = a0 + a1 + a2
            N = a0 * pos[b, v0, 2] + a1 * pos[b, v1, 2] + a2 * pos[b, v2, 2]
            M = a0 * w0 + a1 * w1 + a2 * w2
            rast[b, j, i, 0] = a0 / S
            rast[b, j, i, 1] = a1 / S
            rast[b, j, i, 2] = N / M
            rast[b, j, i, 3] = t + 1.0


@njit(cache=True, parallel=True)
def _raster(pos, tri, bbox, nbands, ids, rast):
    """Z-buffer: ids[b, y, x] = nearest triangle covering the pixel centre (-1 if none), then rast.

    The image is cut into row bands processed in parallel; each band scans the triangle bboxes, so every
    pixel is written by one thread and triangles are visited in index order (ties keep the lower index).
    Edge functions are a_i = c_i . (fx, fy, 1) with c_i = s (q_j x q_k) over (x, y, w), s = sign(D), and
    z/w = sum_i z_i a_i / D; all in float64 whatever the input precision.
    """
    B = ids.shape[0]
    H = ids.shape[1]
    W = ids.shape[2]
    F = tri.shape[0]
    bh = (H + nbands - 1) // nbands
    for job in prange(B * nbands):
        b = job // nbands
        k = job - b * nbands
        r0 = k * bh
        r1 = min(H, r0 + bh)
        if r0 >= r1:
            continue
        zb = np.full((r1 - r0, W), _INF)
        fxs = np.empty(W)
        for i in range(W):
            fxs[i] = (2.0 * i + 1.0) / W - 1.0
        for j in range(r0, r1):
            for i in range(W):
                ids[b, j, i] = -1
        for t in range(F):
            ya = bbox[b, t, 2]
            yb = bbox[b, t, 3]
            if yb < r0 or ya >= r1:
                continue
            xa = bbox[b, t, 0]
            xb = bbox[b, t, 1]
            if xb < xa:
                continue
            ya = max(ya, r0)
            yb = min(yb, r1 - 1)
            i0 = tri[t, 0]
            i1 = tri[t, 1]
            i2 = tri[t, 2]
            x0 = np.float64(pos[b, i0, 0]); y0 = np.float64(pos[b, i0, 1])
            z0 = np.float64(pos[b, i0, 2]); w0 = np.float64(pos[b, i0, 3])
            x1 = np.float64(pos[b, i1, 0]); y1 = np.float64(pos[b, i1, 1])
            z1 = np.float64(pos[b, i1, 2]); w1 = np.float64(pos[b, i1, 3])
            x2 = np.float64(pos[b, i2, 0]); y2 = np.float64(pos[b, i2, 1])
            z2 = np.float64(pos[b, i2, 2]); w2 = np.float64(pos[b, i2, 3])
            c0x = y1 * w2 - w1 * y2; c0y = w1 * x2 - x1 * w2; c0w = x1 * y2 - y1 * x2
            c1x = y2 * w0 - w2 * y0; c1y = w2 * x0 - x2 * w0; c1w = x2 * y0 - y2 * x0
            c2x = y0 * w1 - w0 * y1; c2y = w0 * x1 - x0 * w1; c2w = x0 * y1 - y0 * x1
            D = x0 * c0x + y0 * c0y + w0 * c0w
            iD = 1.0 / D
            kx = (z0 * c0x + z1 * c1x + z2 * c2x) * iD
            ky = (z0 * c0y + z1 * c1y + z2 * c2y) * iD
            kw = (z0 * c0w + z1 * c1w + z2 * c2w) * iD
            if D < 0.0:
                c0x = -c0x; c0y = -c0y; c0w = -c0w
                c1x = -c1x; c1y = -c1y; c1w = -c1w
                c2x = -c2x; c2y = -c2y; c2w = -c2w
            for j in range(ya, yb + 1):
                fy = (2.0 * j + 1.0) / H - 1.0
                r_0 = c0y * fy + c0w
                r_1 = c1y * fy + c1w
                r_2 = c2y * fy + c2w
                r_z = ky * fy + kw
                zrow = zb[j - r0]
                irow = ids[b, j]
                for i in range(xa, xb + 1):  # branch-free: tiny triangles make branches unpredictable
                    fx = fxs[i]
                    a0 = c0x * fx + r_0
                    a1 = c1x * fx + r_1
                    a2 = c2x * fx + r_2
                    zw = kx * fx + r_z
                    zo = zrow[i]
                    hit = ((a0 >= 0.0) & (a1 >= 0.0) & (a2 >= 0.0) & (a0 + a1 + a2 > 0.0)
                           & (zw >= -1.0) & (zw <= 1.0) & (zw < zo))
                    zrow[i] = zw if hit else zo
                    irow[i] = t if hit else irow[i]
        _rast_rows(pos, tri, ids, rast, b, r0, r1)


# ----------------------------------------------------------------------------------------------------------
# Rasterize: differentiable (u, v, z/w) from the clip positions of the visible triangle.


@njit(cache=True, parallel=True)
def _rast_bwd(pos, tri, ids, grast, gbuf):
    """gbuf[c, b, v, :] accumulates d pos for the pixel rows of chunk c (summed by the caller)."""
    B, H, W = ids.shape
    nchunks = gbuf.shape[0]
    nrows = B * H
    for c in prange(nchunks):
        g = gbuf[c]
        g[:] = 0.0
        for row in range(c * nrows // nchunks, (c + 1) * nrows // nchunks):
            b = row // H
            j = row - b * H
            fy = (2.0 * j + 1.0) / H - 1.0
            for i in range(W):
                t = ids[b, j, i]
                if t < 0:
                    continue
                gu = grast[b, j, i, 0]
                gv = grast[b, j, i, 1]
                gz = grast[b, j, i, 2]
                if gu == 0.0 and gv == 0.0 and gz == 0.0:
                    continue
                fx = (2.0 * i + 1.0) / W - 1.0
                v0 = tri[t, 0]; v1 = tri[t, 1]; v2 = tri[t, 2]
                z0 = pos[b, v0, 2]; z1 = pos[b, v1, 2]; z2 = pos[b, v2, 2]
                w0 = pos[b, v0, 3]; w1 = pos[b, v1, 3]; w2 = pos[b, v2, 3]
                X0 = pos[b, v0, 0] - fx * w0; Y0 = pos[b, v0, 1] - fy * w0
                X1 = pos[b, v1, 0] - fx * w1; Y1 = pos[b, v1, 1] - fy * w1
                X2 = pos[b, v2, 0] - fx * w2; Y2 = pos[b, v2, 1] - fy * w2
                a0 = X1 * Y2 - Y1 * X2
                a1 = X2 * Y0 - Y2 * X0
                a2 = X0 * Y1 - Y0 * X1
                iS = 1.0 / (a0 + a1 + a2)
                M = a0 * w0 + a1 * w1 + a2 * w2
                iM = 1.0 / M
                u = a0 * iS
                v = a1 * iS
                zw = (a0 * z0 + a1 * z1 + a2 * z2) * iM
                # d loss / d a_i
                base = -(gu * u + gv * v) * iS
                gzm = gz * iM
                ga0 = base + gu * iS + gzm * (z0 - zw * w0)
                ga1 = base + gv * iS + gzm * (z1 - zw * w1)
                ga2 = base + gzm * (z2 - zw * w2)
                gX0 = ga1 * (-Y2) + ga2 * Y1
                gY0 = ga1 * X2 + ga2 * (-X1)
                gX1 = ga0 * Y2 + ga2 * (-Y0)
                gY1 = ga0 * (-X2) + ga2 * X0
                gX2 = ga0 * (-Y1) + ga1 * Y0
                gY2 = ga0 * X1 + ga1 * (-X0)
                g[b, v0, 0] += gX0
                g[b, v0, 1] += gY0
                g[b, v0, 2] += gzm * a0
                g[b, v0, 3] += -fx * gX0 - fy * gY0 - gzm * zw * a0
                g[b, v1, 0] += gX1
                g[b, v1, 1] += gY1
                g[b, v1, 2] += gzm * a1
                g[b, v1, 3] += -fx * gX1 - fy * gY1 - gzm * zw * a1
                g[b, v2, 0] += gX2
                g[b, v2, 1] += gY2
                g[b, v2, 2] += gzm * a2
                g[b, v2, 3] += -fx * gX2 - fy * gY2 - gzm * zw * a2


# ----------------------------------------------------------------------------------------------------------
# Interpolate.


@njit(cache=True, parallel=True)
def _interp_fwd(attr, tri, rast, out):
    B, H, W, C = out.shape
    Ba = attr.shape[0]
    for row in prange(B * H):
        b = row // H
        j = row - b * H
        ba = b if Ba > 1 else 0
        for i in range(W):
            t = int(rast[b, j, i, 3]) - 1
            if t < 0:
                for ch in range(C):
                    out[b, j, i, ch] = 0.0
                continue
            u = rast[b, j, i, 0]
            v = rast[b, j, i, 1]
            s = 1.0 - u - v
            v0 = tri[t, 0]; v1 = tri[t, 1]; v2 = tri[t, 2]
            for ch in range(C):
                out[b, j, i, ch] = u * attr[ba, v0, ch] + v * attr[ba, v1, ch] + s * attr[ba, v2, ch]


@njit(cache=True, parallel=True)
def _interp_bwd(attr, tri, rast, gout, gbuf, grast):
    B, H, W, C = gout.shape
    Ba = attr.shape[0]
    nchunks = gbuf.shape[0]
    nrows = B * H
    for c in prange(nchunks):
        g = gbuf[c]
        g[:] = 0.0
        for row in range(c * nrows // nchunks, (c + 1) * nrows // nchunks):
            b = row // H
            j = row - b * H
            ba = b if Ba > 1 else 0
            for i in range(W):
                grast[b, j, i, 0] = 0.0
                grast[b, j, i, 1] = 0.0
                grast[b, j, i, 2] = 0.0
                grast[b, j, i, 3] = 0.0
                t = int(rast[b, j, i, 3]) - 1
                if t < 0:
                    continue
                u = rast[b, j, i, 0]
                v = rast[b, j, i, 1]
                s = 1.0 - u - v
                v0 = tri[t, 0]; v1 = tri[t, 1]; v2 = tri[t, 2]
                gu = 0.0
                gv = 0.0
                for ch in range(C):
                    go = gout[b, j, i, ch]
                    a2 = attr[ba, v2, ch]
                    gu += go * (attr[ba, v0, ch] - a2)
                    gv += go * (attr[ba, v1, ch] - a2)
                    g[ba, v0, ch] += u * go
                    g[ba, v1, ch] += v * go
                    g[ba, v2, ch] += s * go
                grast[b, j, i, 0] = gu
                grast[b, j, i, 1] = gv


# ----------------------------------------------------------------------------------------------------------
# Antialias (nvdiffrast's analytic silhouette antialiasing, Laine et al. 2020).


def edge_opposites(tri: np.ndarray) -> np.ndarray:
    """opp[t, i]: the vertex opposite edge i = (tri[t, i+1], tri[t, i+2]) in the other triangle sharing that
    edge, or -1 where the edge is a boundary or non-manifold edge (then always treated as a silhouette)."""
    tri = np.asarray(tri, dtype=np.int64)
    F = tri.shape[0]
    opp = np.full((F, 3), -1, np.int32)
    if F == 0:
        return opp
    ea = np.stack([tri[:, 1], tri[:, 2], tri[:, 0]], 1).reshape(-1)
    eb = np.stack([tri[:, 2], tri[:, 0], tri[:, 1]], 1).reshape(-1)
    third = tri.reshape(-1)
    lo = np.minimum(ea, eb)
    hi = np.maximum(ea, eb)
    key = lo * (int(tri.max()) + 1) + hi
    valid = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 2] != tri[:, 0])
    valid = np.repeat(valid, 3)
    key = np.where(valid, key, -1 - np.arange(3 * F))  # degenerate triangles join no edge
    order = np.argsort(key, kind="stable")
    sk = key[order]
    n = sk.shape[0]
    start = np.ones(n, bool)
    start[1:] = sk[1:] != sk[:-1]
    starts = np.flatnonzero(start)
    sizes = np.diff(np.append(starts, n))
    pairs = starts[sizes == 2]
    h1 = order[pairs]
    h2 = order[pairs + 1]
    flat = opp.reshape(-1)
    flat[h1] = third[h2]
    flat[h2] = third[h1]
    return opp


@njit(cache=True, parallel=True)
def _aa_analyse(rast, pos, tri, opp, alpha, info):
    """alpha[b, y, x, d]: blend factor of the pixel pair (x, y)-(x+1, y) (d=0) or (x, y)-(x, y+1) (d=1),
    0 if none; info = tri * 8 + edge * 2 + (1 if the triangle is the neighbour's)."""
    B, H, W, _ = rast.shape
    xh = 0.5 * W
    yh = 0.5 * H
    for row in prange(B * H):
        b = row // H
        py_ = row - b * H
        for px_ in range(W):
            for d in range(2):
                alpha[b, py_, px_, d] = 0.0
                info[b, py_, px_, d] = -1
                if d == 0:
                    if px_ >= W - 1:
                        continue
                    qx = px_ + 1
                    qy = py_
                else:
                    if py_ >= H - 1:
                        continue
                    qx = px_
                    qy = py_ + 1
                t0 = int(rast[b, py_, px_, 3]) - 1
                t1 = int(rast[b, qy, qx, 3]) - 1
                if t0 == t1:
                    continue
                t = t0 if t0 >= 0 else t1
                if t0 >= 0 and t1 >= 0:
                    t = t0 if rast[b, py_, px_, 2] < rast[b, qy, qx, 2] else t1
                flag = 0
                px = px_
                py = py_
                if t == t1:
                    flag = 1
                    px = qx
                    py = qy
                vi0 = tri[t, 0]; vi1 = tri[t, 1]; vi2 = tri[t, 2]
                p0w = pos[b, vi0, 3]; p1w = pos[b, vi1, 3]; p2w = pos[b, vi2, 3]
                if not (p0w > 0.0 and p1w > 0.0 and p2w > 0.0):
                    continue
                fx = px + 0.5 - xh
                fy = py + 0.5 - yh
                x0 = pos[b, vi0, 0] / p0w * xh - fx; y0 = pos[b, vi0, 1] / p0w * yh - fy
                x1 = pos[b, vi1, 0] / p1w * xh - fx; y1 = pos[b, vi1, 1] / p1w * yh - fy
                x2 = pos[b, vi2, 0] / p2w * xh - fx; y2 = pos[b, vi2, 1] / p2w * yh - fy
                # opposite ("wing") vertices; the vertex itself when there is none: always a silhouette
                ox0 = x0; oy0 = y0; ox1 = x1; oy1 = y1; ox2 = x2; oy2 = y2
                o = opp[t, 0]
                if o >= 0 and pos[b, o, 3] > 0.0:
                    ox0 = pos[b, o, 0] / pos[b, o, 3] * xh - fx; oy0 = pos[b, o, 1] / pos[b, o, 3] * yh - fy
                o = opp[t, 1]
                if o >= 0 and pos[b, o, 3] > 0.0:
                    ox1 = pos[b, o, 0] / pos[b, o, 3] * xh - fx; oy1 = pos[b, o, 1] / pos[b, o, 3] * yh - fy
                o = opp[t, 2]
                if o >= 0 and pos[b, o, 3] > 0.0:
                    ox2 = pos[b, o, 0] / pos[b, o, 3] * xh - fx; oy2 = pos[b, o, 1] / pos[b, o, 3] * yh - fy
                bb = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
                s0 = (x1 - ox0) * (y2 - oy0) - (x2 - ox0) * (y1 - oy0)
                s1 = (x2 - ox1) * (y0 - oy1) - (x0 - ox1) * (y2 - oy1)
                s2 = (x0 - ox2) * (y1 - oy2) - (x1 - ox2) * (y0 - oy2)
                sil0 = (s0 < 0.0) == (bb < 0.0)
                sil1 = (s1 < 0.0) == (bb < 0.0)
                sil2 = (s2 < 0.0) == (bb < 0.0)
                if not (sil0 or sil1 or sil2):
                    continue
                if d == 1:  # swap axes: the crossing is then always along x
                    x0, y0 = y0, x0
                    x1, y1 = y1, x1
                    x2, y2 = y2, x2
                ds = 1.0 if flag == 0 else -1.0
                # edge i joins vertices i+1 and i+2; crossing of y = 0 at x = (xa*yb - xb*ya) / (yb - ya)
                best = -_INF
                di = -1
                if (y1 < 0.0) != (y2 < 0.0):
                    c = ds * (x1 * y2 - x2 * y1) / (y2 - y1)
                    if c > best:
                        best = c; di = 0
                if (y2 < 0.0) != (y0 < 0.0):
                    c = ds * (x2 * y0 - x0 * y2) / (y0 - y2)
                    if c > best:
                        best = c; di = 1
                if (y0 < 0.0) != (y1 < 0.0):
                    c = ds * (x0 * y1 - x1 * y0) / (y1 - y0)
                    if c > best:
                        best = c; di = 2
                if di < 0:
                    continue
                if di == 0:
                    ok = sil0 and abs(y2 - y1) >= abs(x2 - x1)
                elif di == 1:
                    ok = sil1 and abs(y0 - y2) >= abs(x0 - x2)
                else:
                    ok = sil2 and abs(y1 - y0) >= abs(x1 - x0)
                eps = 0.0625
                if not ok or not (best > -eps and best < 1.0 + eps):
                    continue
                dc = min(max(best, 0.0), 1.0)
                alpha[b, py_, px_, d] = ds * (0.5 - dc)
                info[b, py_, px_, d] = t * 8 + di * 2 + flag


@njit(cache=True, parallel=True)
def _aa_apply(color, alpha, out):
    B, H, W, C = color.shape
    for row in prange(B * H):
        b = row // H
        y = row - b * H
        for x in range(W):
            for ch in range(C):
                out[b, y, x, ch] = color[b, y, x, ch]
            a = alpha[b, y, x, 0]  # pair (x, y)-(x+1, y), we are pixel 0
            if a > 0.0:
                for ch in range(C):
                    out[b, y, x, ch] += a * (color[b, y, x + 1, ch] - color[b, y, x, ch])
            a = alpha[b, y, x, 1]  # pair (x, y)-(x, y+1), we are pixel 0
            if a > 0.0:
                for ch in range(C):
                    out[b, y, x, ch] += a * (color[b, y + 1, x, ch] - color[b, y, x, ch])
            if x > 0:
                a = alpha[b, y, x - 1, 0]  # we are pixel 1
                if a < 0.0:
                    for ch in range(C):
                        out[b, y, x, ch] += a * (color[b, y, x, ch] - color[b, y, x - 1, ch])
            if y > 0:
                a = alpha[b, y - 1, x, 1]
                if a < 0.0:
                    for ch in range(C):
                        out[b, y, x, ch] += a * (color[b, y, x, ch] - color[b, y - 1, x, ch])


@njit(cache=True, parallel=True)
def _aa_bwd_color(gout, alpha, gcolor):
    B, H, W, C = gout.shape
    for row in prange(B * H):
        b = row // H
        y = row - b * H
        for x in range(W):
            for ch in range(C):
                gcolor[b, y, x, ch] = gout[b, y, x, ch]
            a = alpha[b, y, x, 0]
            if a != 0.0:
                tx = x if a > 0.0 else x + 1
                for ch in range(C):
                    gcolor[b, y, x, ch] -= a * gout[b, y, tx, ch]
            a = alpha[b, y, x, 1]
            if a != 0.0:
                ty = y if a > 0.0 else y + 1
                for ch in range(C):
                    gcolor[b, y, x, ch] -= a * gout[b, ty, x, ch]
            if x > 0:
                a = alpha[b, y, x - 1, 0]
                if a != 0.0:
                    tx = x - 1 if a > 0.0 else x
                    for ch in range(C):
                        gcolor[b, y, x, ch] += a * gout[b, y, tx, ch]
            if y > 0:
                a = alpha[b, y - 1, x, 1]
                if a != 0.0:
                    ty = y - 1 if a > 0.0 else y
                    for ch in range(C):
                        gcolor[b, y, x, ch] += a * gout[b, ty, x, ch]


@njit(cache=True)
def _aa_bwd_pos(gout, color, alpha, info, pos, tri, gpos):
    B, H, W, C = color.shape
    xh = 0.5 * W
    yh = 0.5 * H
    for b in range(B):
        for y in range(H):
            for x in range(W):
                for d in range(2):
                    a = alpha[b, y, x, d]
                    if a == 0.0 or abs(a) >= 0.5:
                        continue
                    qx = x + 1 - d
                    qy = y + d
                    tx = x if a > 0.0 else qx
                    ty = y if a > 0.0 else qy
                    dd = 0.0
                    for ch in range(C):
                        dd += gout[b, ty, tx, ch] * (color[b, qy, qx, ch] - color[b, y, x, ch])
                    if dd == 0.0:
                        continue
                    code = info[b, y, x, d]
                    t = code // 8
                    di = (code // 2) % 4
                    flag = code % 2
                    px = qx if flag else x
                    py = qy if flag else y
                    va = tri[t, (di + 1) % 3]
                    vb = tri[t, (di + 2) % 3]
                    # along-axis ("x") and across-axis ("y") components after the axis swap for d = 1
                    ax = d
                    ay = 1 - d
                    hx = xh if d == 0 else yh
                    hy = yh if d == 0 else xh
                    fx = (px + 0.5 - xh) if d == 0 else (py + 0.5 - yh)
                    fy = (py + 0.5 - yh) if d == 0 else (px + 0.5 - xh)
                    iwa = 1.0 / pos[b, va, 3]
                    iwb = 1.0 / pos[b, vb, 3]
                    Xa = pos[b, va, ax]; Ya = pos[b, va, ay]
                    Xb = pos[b, vb, ax]; Yb = pos[b, vb, ay]
                    xa = Xa * iwa * hx - fx; ya = Ya * iwa * hy - fy
                    xb = Xb * iwb * hx - fx; yb = Yb * iwb * hy - fy
                    iD = 1.0 / (yb - ya)
                    # crossing c = (xa*yb - xb*ya) / (yb - ya); alpha = ds/2 - c, so dL/dc = -dd
                    gc = -dd
                    gxa = gc * yb * iD
                    gxb = -gc * ya * iD
                    gya = gc * yb * (xa - xb) * iD * iD
                    gyb = gc * ya * (xb - xa) * iD * iD
                    gXa = gxa * hx * iwa; gYa = gya * hy * iwa
                    gXb = gxb * hx * iwb; gYb = gyb * hy * iwb
                    gpos[b, va, ax] += gXa
                    gpos[b, va, ay] += gYa
                    gpos[b, va, 3] += -(Xa * gXa + Ya * gYa) * iwa
                    gpos[b, vb, ax] += gXb
                    gpos[b, vb, ay] += gYb
                    gpos[b, vb, 3] += -(Xb * gXb + Yb * gYb) * iwb


# ----------------------------------------------------------------------------------------------------------
# Normalisation of interpolated normals (fused; same maths as n * rsqrt(max(|n|^2, eps))).


@njit(cache=True, parallel=True)
def _normalize_fwd(x, eps, out):
    for p in prange(x.shape[0]):
        s = 0.0
        for c in range(x.shape[1]):
            s += x[p, c] * x[p, c]
        r = 1.0 / np.sqrt(max(s, eps))
        for c in range(x.shape[1]):
            out[p, c] = x[p, c] * r


@njit(cache=True, parallel=True)
def _normalize_bwd(x, g, eps, gx):
    for p in prange(x.shape[0]):
        s = 0.0
        d = 0.0
        for c in range(x.shape[1]):
            s += x[p, c] * x[p, c]
            d += x[p, c] * g[p, c]
        r = 1.0 / np.sqrt(max(s, eps))
        k = r * r * r * d if s > eps else 0.0
        for c in range(x.shape[1]):
            gx[p, c] = g[p, c] * r - x[p, c] * k



# ----------------------------------------------------------------------------------------------------------
# Vertex normals (what headrep.model.meshops.vertex_normals computes, in the same order), with gradients.


@njit(cache=True, inline="always")
def _edges(v, b, a, c1, c2):
    """A face's two edges from its first corner, v[c1] − v[a] and v[c2] − v[a] (six scalars)."""
    return (v[b, c1, 0] - v[b, a, 0], v[b, c1, 1] - v[b, a, 1], v[b, c1, 2] - v[b, a, 2],
            v[b, c2, 0] - v[b, a, 0], v[b, c2, 1] - v[b, a, 1], v[b, c2, 2] - v[b, a, 2])


@njit(cache=True)
def _normal_sums(v, f, b, o):
    """Adds image b's face normals (v1 − v0) × (v2 − v0) (length: twice the area) to their corners' rows of
    o [V,3], corner slot by corner slot (slot 0 of every face, then 1, then 2)."""
    F = f.shape[0]
    fn = np.empty((F, 3), v.dtype)
    for i in range(F):
        ex, ey, ez, gx, gy, gz = _edges(v, b, f[i, 0], f[i, 1], f[i, 2])
        fn[i, 0] = ey * gz - ez * gy
        fn[i, 1] = ez * gx - ex * gz
        fn[i, 2] = ex * gy - ey * gx
    for k in range(3):
        for i in range(F):
            j = f[i, k]
            o[j, 0] += fn[i, 0]
            o[j, 1] += fn[i, 1]
            o[j, 2] += fn[i, 2]


@njit(cache=True, parallel=True)
def _vertex_normals(v, f, consts, out):
    """Area-weighted unit vertex normals of v [B,V,3] and faces f [F,3] into out [B,V,3] (zeros on entry).

    The arithmetic of meshops.vertex_normals in the same order and precision: face normal (v1 - v0) x (v2 - v0);
    added to its corners' vertices corner slot by corner slot (slot 0 of every face, then slot 1, then slot 2,
    as its three index_adds do); scaled by rsqrt(max(|n|^2, 1e-30)). Equal to it up to float rounding only:
    torch's CPU cross product fuses a multiply-add (one rounding), this kernel rounds the product first (an
    output pixel's 8-bit normal changes by 1 in a few of millions). One image per thread; no scatter and no
    [B,F,3,3] corner tensor. ``consts`` = [1e-30, 1] in v's dtype keeps float32 arithmetic in float32 (a
    Python float would promote it to float64)."""
    eps, one = consts[0], consts[1]
    for b in prange(v.shape[0]):
        o = out[b]
        _normal_sums(v, f, b, o)
        for j in range(o.shape[0]):
            s = o[j, 0] * o[j, 0] + o[j, 1] * o[j, 1] + o[j, 2] * o[j, 2]
            r = one / np.sqrt(max(s, eps))
            o[j, 0] *= r
            o[j, 1] *= r
            o[j, 2] *= r


@njit(cache=True, parallel=True)
def _vertex_normals_bwd(v, f, g, consts, gv):
    """Gradient gv [B,V,3] (zeros on entry) of the unit vertex normals of _vertex_normals, given their
    gradient g [B,V,3]: through the normalisation (as _normalize_bwd), then to each face normal as the sum
    over its corners, then through the cross product e1 × e2 (d/de1 = e2 × g_f, d/de2 = g_f × e1) to its
    vertices. One image per thread."""
    F, V = f.shape[0], v.shape[1]
    eps, one = consts[0], consts[1]
    for b in prange(v.shape[0]):
        s = np.zeros((V, 3), v.dtype)
        _normal_sums(v, f, b, s)
        gs = np.empty((V, 3), v.dtype)
        for j in range(V):
            q = s[j, 0] * s[j, 0] + s[j, 1] * s[j, 1] + s[j, 2] * s[j, 2]
            d = s[j, 0] * g[b, j, 0] + s[j, 1] * g[b, j, 1] + s[j, 2] * g[b, j, 2]
            r = one / np.sqrt(max(q, eps))
            k3 = r * r * r * d if q > eps else 0 * r
            for c in range(3):
                gs[j, c] = g[b, j, c] * r - s[j, c] * k3
        o = gv[b]
        for i in range(F):
            a, c1, c2 = f[i, 0], f[i, 1], f[i, 2]
            px = gs[a, 0] + gs[c1, 0] + gs[c2, 0]
            py = gs[a, 1] + gs[c1, 1] + gs[c2, 1]
            pz = gs[a, 2] + gs[c1, 2] + gs[c2, 2]
            ex, ey, ez, hx, hy, hz = _edges(v, b, a, c1, c2)
            # e2 × g_f and g_f × e1
            ax, ay, az = hy * pz - hz * py, hz * px - hx * pz, hx * py - hy * px
            bx, by, bz = py * ez - pz * ey, pz * ex - px * ez, px * ey - py * ex
            o[c1, 0] += ax
            o[c1, 1] += ay
            o[c1, 2] += az
            o[c2, 0] += bx
            o[c2, 1] += by
            o[c2, 2] += bz
            o[a, 0] -= ax + bx
            o[a, 1] -= ay + by
            o[a, 2] -= az + bz


class VertexNormalsFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, verts, faces):
        v = verts.detach().contiguous()
        f = faces.contiguous()
        out = torch.zeros(v.shape, dtype=v.dtype)
        consts = np.array([1e-30, 1.0], v.numpy().dtype)
        _vertex_normals(v.numpy(), f.numpy(), consts, out.numpy())
        ctx.save_for_backward(v, f)
        return out

    @staticmethod
    def backward(ctx, g):
        v, f = ctx.saved_tensors
        gv = torch.zeros(v.shape, dtype=v.dtype)
        consts = np.array([1e-30, 1.0], v.numpy().dtype)
        _vertex_normals_bwd(v.numpy(), f.numpy(), g.to(v.dtype).contiguous().numpy(), consts, gv.numpy())
        return gv, None


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """meshops.vertex_normals of verts [B,V,3] (float32/64, CPU) and faces [F,3]: one fused numba pass each
    way (its torch cross products, gathers and index_adds cost ~15 % of a fitter's detail step), differentiable
    w.r.t. ``verts``."""
    squeeze = verts.dim() == 2
    out = VertexNormalsFn.apply(verts[None] if squeeze else verts, faces.long())
    return out[0] if squeeze else out


# ----------------------------------------------------------------------------------------------------------
# Shaded colour of drawn pixels (what render.shading gives, fused; for outputs, no gradients).


@njit(cache=True, parallel=True)
def _shaded_colour(normal, albedo, cover, drawn, L, consts, out):
    """out[b,h,w,:] = clamp(albedo · Σ_k basis_k(n) L[b,k], 0, 1) · cover on drawn pixels (out is zero on entry).

    The operations and their order are render.shading's (L0 + x L1 + y L2 + z L3 + (x y) L4 + (x z) L5 + (y z) L6
    + (x x − y y) L7 + ((3 z) z − 1) L8, left to right, each rounded in the arrays' precision; ``L`` = light ×
    SH_CONST computed by the caller as shading does), so the result is the same to the bit. ``consts`` = [0, 1, 3]
    in the arrays' dtype (Python numbers would promote float32 to float64)."""
    zero, one, three = consts[0], consts[1], consts[2]
    B, H, W, C = out.shape
    for r in prange(B * H):
        b = r // H
        h = r - b * H
        for w in range(W):
            if not drawn[b, h, w]:
                continue
            x, y, z = normal[b, h, w, 0], normal[b, h, w, 1], normal[b, h, w, 2]
            xy, xz, yz = x * y, x * z, y * z
            xx_yy = x * x - y * y
            zz = three * z * z - one
            a = min(max(cover[b, h, w], zero), one)
            for c in range(C):
                s = (L[b, 0, c] + x * L[b, 1, c] + y * L[b, 2, c] + z * L[b, 3, c] + xy * L[b, 4, c]
                     + xz * L[b, 5, c] + yz * L[b, 6, c] + xx_yy * L[b, 7, c] + zz * L[b, 8, c])
                out[b, h, w, c] = min(max(albedo[b, h, w, c] * s, zero), one) * a


def shaded_colour(normal: torch.Tensor, albedo: torch.Tensor, cover: torch.Tensor, drawn: torch.Tensor,
                  light: torch.Tensor) -> torch.Tensor:
    """[B,H,W,C] = (albedo · shading(normal, light)).clamp(0, 1) · cover.clamp(0, 1) where ``drawn`` [B,H,W]
    (bool), 0 elsewhere: render.shading's arithmetic fused into one pass over the drawn pixels (no gradients).
    normal [B,H,W,3], albedo [B,H,W,C], cover [B,H,W], light [B,9,C]; one floating dtype."""
    from headrep.render.shading import SH_CONST

    dt = normal.dtype
    L = (light.to(dt) * SH_CONST.to(dt)[None, :, None]).contiguous()
    out = torch.zeros(albedo.shape, dtype=dt)
    consts = np.array([0.0, 1.0, 3.0], normal.detach().numpy().dtype)
    _shaded_colour(normal.detach().contiguous().numpy(), albedo.detach().to(dt).contiguous().numpy(),
                   cover.detach().to(dt).contiguous().numpy(), drawn.contiguous().numpy(), L.numpy(), consts,
                   out.numpy())
    return out


@njit(cache=True)
def _clay_over(img, normal, cover, rgb, consts):
    """In place on uint8 img [H,W,3]: where cover [H,W] > 0, the headlight Lambert "clay" colour
    rgb · (0.25 + 0.75 · clamp(−n_z, 0, 1)) alpha-blended over the pixel with alpha · clamp(cover, 0, 1).

    The float operations and their order are those of the numpy expression it replaces in headrep.rep.outputs
    (base · (1 − a) + clay · a, then · 255, round half to even, clip, uint8; each step rounded in the arrays'
    precision), so the image is the same to the bit. consts = [0, 1, 0.25, 0.75, 255, alpha] in the arrays'
    dtype."""
    zero, one, q, tq, full, alpha = consts[0], consts[1], consts[2], consts[3], consts[4], consts[5]
    H, W = cover.shape
    for h in range(H):
        for w in range(W):
            m = min(max(cover[h, w], zero), one)
            if not m > zero:
                continue
            lam = min(max(-normal[h, w, 2], zero), one)
            light = q + tq * lam
            a = alpha * m
            for c in range(3):
                base = img[h, w, c] / full
                v = np.rint((base * (one - a) + light * rgb[c] * a) * full)
                img[h, w, c] = np.uint8(min(max(v, zero), full))


def clay_over(img: np.ndarray, normal: np.ndarray, cover: np.ndarray, rgb: np.ndarray, alpha: float) -> None:
    """In place on ``img`` (uint8 [H,W,3]): the camera-lit clay colour ``rgb`` [3] of the camera-space normals
    [H,W,3] alpha-blended over it by ``alpha`` × coverage [H,W] (where the coverage is > 0); see _clay_over."""
    dt = normal.dtype
    consts = np.array([0.0, 1.0, 0.25, 0.75, 255.0, alpha], dt)
    _clay_over(img, np.ascontiguousarray(normal), np.ascontiguousarray(cover, dt),
               np.ascontiguousarray(rgb, dt), consts)


# ----------------------------------------------------------------------------------------------------------
# Torch glue.


def _nbands(H: int, B: int) -> int:
    """Row bands per image: a few per thread, handed out dynamically (chunk size 1) for load balance."""
    return max(1, min(H, -(-4 * numba.get_num_threads() // max(B, 1))))


def raster(pos: torch.Tensor, tri: torch.Tensor, H: int, W: int):
    """Visible triangle per pixel ([B, H, W] int32, -1 where empty; no gradient) and rast [B, H, W, 4]."""
    p = pos.detach().contiguous()
    pn = p.numpy()
    t = tri.contiguous().numpy()
    B, F = pn.shape[0], t.shape[0]
    bbox = np.empty((B, F, 4), np.int32)
    if F:
        _tri_setup(pn, t, H, W, bbox)
    ids = np.empty((B, H, W), np.int32)
    rast = torch.empty(B, H, W, 4, dtype=p.dtype)
    with numba.parallel_chunksize(1):
        _raster(pn, t, bbox, _nbands(H, B), ids, rast.numpy())
    return torch.from_numpy(ids), rast


def visibility(pos: torch.Tensor, tri: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Index of the visible triangle per pixel, [B, H, W] int32, -1 where empty. No gradient."""
    return raster(pos, tri, H, W)[0]


def _chunks(rows: int) -> int:
    return max(1, min(numba.get_num_threads(), rows))


class RasterizeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pos, tri, H, W):
        ids, rast = raster(pos, tri, H, W)
        ctx.save_for_backward(pos.detach().contiguous(), tri, ids)
        return rast

    @staticmethod
    def backward(ctx, grast):
        p, tri, ids = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        g = grast.contiguous().to(p.dtype)
        B, V = p.shape[0], p.shape[1]
        buf = np.empty((_chunks(B * ids.shape[1]), B, V, 4), p.numpy().dtype)
        _rast_bwd(p.numpy(), tri.numpy(), ids.numpy(), g.numpy(), buf)
        return torch.from_numpy(buf.sum(0) if buf.shape[0] > 1 else buf[0]), None, None, None


class InterpolateFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, attr, rast, tri):
        a = attr.detach().contiguous()
        r = rast.detach().contiguous().to(a.dtype)
        B, H, W, _ = r.shape
        out = torch.empty(B, H, W, a.shape[2], dtype=a.dtype)
        _interp_fwd(a.numpy(), tri.numpy(), r.numpy(), out.numpy())
        ctx.save_for_backward(a, r, tri)
        ctx.rast_dtype = rast.dtype
        return out

    @staticmethod
    def backward(ctx, gout):
        a, r, tri = ctx.saved_tensors
        g = gout.contiguous().to(a.dtype)
        B, H, W, _ = r.shape
        buf = np.empty((_chunks(B * H),) + tuple(a.shape), a.numpy().dtype)
        grast = torch.empty(B, H, W, 4, dtype=a.dtype)
        _interp_bwd(a.numpy(), tri.numpy(), r.numpy(), g.numpy(), buf, grast.numpy())
        gattr = torch.from_numpy(buf.sum(0) if buf.shape[0] > 1 else buf[0]) if ctx.needs_input_grad[0] else None
        grast = grast.to(ctx.rast_dtype) if ctx.needs_input_grad[1] else None
        return gattr, grast, None


_TOPO_CACHE: dict = {}


def _opposites(tri: torch.Tensor) -> np.ndarray:
    key = (tri.data_ptr(), tri._version, tuple(tri.shape))
    hit = _TOPO_CACHE.get(key)
    if hit is not None and hit[0] is tri:
        return hit[1]
    opp = edge_opposites(tri.numpy())
    if len(_TOPO_CACHE) > 8:
        _TOPO_CACHE.clear()
    _TOPO_CACHE[key] = (tri, opp)
    return opp


class AntialiasFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, color, rast, pos, tri, boost):
        c = color.detach().contiguous()
        r = rast.detach().contiguous()
        p = pos.detach().contiguous()
        B, H, W, _ = c.shape
        opp = _opposites(tri)
        alpha = np.empty((B, H, W, 2), p.numpy().dtype)
        info = np.empty((B, H, W, 2), np.int32)
        _aa_analyse(r.numpy(), p.numpy(), tri.numpy(), opp, alpha, info)
        alpha_c = alpha.astype(c.numpy().dtype, copy=False)
        out = torch.empty_like(c)
        _aa_apply(c.numpy(), alpha_c, out.numpy())
        ctx.save_for_backward(c, p, tri, torch.from_numpy(alpha), torch.from_numpy(info))
        ctx.boost = boost
        return out

    @staticmethod
    def backward(ctx, gout):
        c, p, tri, alpha, info = ctx.saved_tensors
        g = gout.contiguous().to(c.dtype)
        gcolor = gpos = None
        if ctx.needs_input_grad[0]:
            gcolor = torch.empty_like(c)
            _aa_bwd_color(g.numpy(), alpha.numpy().astype(c.numpy().dtype, copy=False), gcolor.numpy())
        if ctx.needs_input_grad[2]:
            gp = np.zeros(tuple(p.shape), p.numpy().dtype)
            _aa_bwd_pos(g.numpy(), c.numpy(), alpha.numpy(), info.numpy(), p.numpy(), tri.numpy(), gp)
            gpos = torch.from_numpy(gp)
            if ctx.boost != 1.0:
                gpos = gpos * ctx.boost
        return gcolor, None, gpos, None, None


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution) -> torch.Tensor:
    H, W = resolution
    return RasterizeFn.apply(pos, tri, int(H), int(W))


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    return InterpolateFn.apply(attr, rast, tri)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              pos_gradient_boost: float = 1.0) -> torch.Tensor:
    return AntialiasFn.apply(color, rast, pos, tri, float(pos_gradient_boost))


class NormalizeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps):
        shape = x.shape
        x2 = x.detach().reshape(-1, shape[-1])
        out = torch.empty(x2.shape, dtype=x.dtype)
        _normalize_fwd(x2.numpy(), eps, out.numpy())
        ctx.save_for_backward(x2)
        ctx.eps = eps
        return out.view(shape)

    @staticmethod
    def backward(ctx, g):
        (x2,) = ctx.saved_tensors
        g2 = g.reshape(x2.shape).to(x2.dtype)
        gx = torch.empty(x2.shape, dtype=x2.dtype)
        _normalize_bwd(x2.numpy(), g2.numpy(), ctx.eps, gx.numpy())
        return gx.view(g.shape), None


def normalize(x: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """x / |x| over the last dimension (x * rsqrt(max(|x|^2, eps))), fused forward and backward."""
    return NormalizeFn.apply(x, float(eps))
