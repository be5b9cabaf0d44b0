"""The procedural stand-in body model, written in the exact SMPL-X `.npz` layout that `smplx.SMPLX` loads.

The licensed SMPL-X files cannot be had here, so the project generates a model of its own, deterministically:

* the face is MediaPipe's canonical face mesh (468 vertices, 898 triangles, shipped in assets/), so the 478
  MediaPipe points have an exact embedding (vertex i of the stand-in *is* MediaPipe point i; the ten iris
  points are embedded on the closed eyelids);
* the rest of a bust (skull, neck, shoulders, upper chest) is a lathe surface of superellipse cross-sections,
  stitched to the face oval by a few blending rings;
* 14 shape and 14 expression directions are smooth, localised displacement fields that behave like
  SMPL-X's (head size and proportions, nose, jaw, chin; smile, mouth open, pucker, brows, blinks, cheeks);
* skinning weights are smooth partitions of unity over SMPL-X's 55-joint tree (spine3, neck 12, head 15,
  jaw 22, collars, shoulders); the lips are split so the jaw opens the mouth; eyes 23/24 carry no vertices
  (the stand-in has no eyeballs);
* the iBUG-68 embedding: static points 17-67 sit on MediaPipe vertices; the 17 contour points are a
  79-row yaw look-up table of silhouette points, as SMPL-X's `dynamic_lmk_*` arrays are.

Every file written here carries the key `headrep_standin` so that no result made with it can pass for
an SMPL-X result. Nothing here is used silently: `headrep.model.body.load_body_model` records the flag.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from headrep.paths import asset_path, cache_dir

STANDIN_VERSION = 1
STANDIN_FILENAME = f"SMPLX_STANDIN_v{STANDIN_VERSION}.npz"

# MediaPipe canonical (cm, y up, z toward viewer) -> model space (metres, SMPL-X axes: y up, z forward,
# x toward the subject's left). Eye level lands at y = 0.60 m with the lathe axis 3.5 cm behind the face origin.
MP_SCALE = 0.01
MP_OFFSET = np.array([0.0, 0.5734, 0.035])

from headrep.model.constants import (  # noqa: E402  (re-exported: the stand-in's own tables)
    J_HEAD, J_JAW, J_LCOLLAR, J_LSHOULDER, J_NECK, J_RCOLLAR, J_RSHOULDER, J_SPINE2, J_SPINE3,
    MP_LEFT_EYE, MP_RIGHT_EYE, MP_TO_IBUG68, NUM_JOINTS, SMPLX_PARENTS)

# The 21 vertex-joints smplx adds, in VertexJointSelector's order of keys.
VERTEX_JOINT_KEYS = ["nose", "reye", "leye", "rear", "lear", "LBigToe", "LSmallToe", "LHeel", "RBigToe",
                     "RSmallToe", "RHeel", "lthumb", "lindex", "lmiddle", "lring", "lpinky", "rthumb",
                     "rindex", "rmiddle", "rring", "rpinky"]

SHAPE_NAMES = ["size", "head_width", "head_depth", "face_height", "neck_thickness", "shoulder_width", "nose",
               "jaw_width", "forehead", "cheek_fullness", "chin", "eye_depth", "lip_fullness", "body_weight"]
EXPRESSION_NAMES = ["smile", "mouth_open", "pucker", "brow_raise", "brow_furrow", "blink", "mouth_stretch",
                    "upper_lip_raise", "lower_lip_depress", "cheek_puff", "mouth_left", "nose_wrinkle",
                    "frown", "squint"]
SHAPE_SPACE, EXPRESSION_SPACE = 300, 100  # SMPL-X 2020 layout: shapedirs[..., :300] betas, [300:400] expression

# Lathe profile key frames: height y, half-width a (x), front depth bf, back depth bb, centre z, superellipse n.
_PROFILE = np.array([
    # y      a      bf     bb     zc      n
    [0.200, 0.150, 0.100, 0.085, 0.000, 2.6],
    [0.300, 0.165, 0.105, 0.090, 0.000, 2.6],
    [0.360, 0.185, 0.095, 0.085, -0.005, 3.0],
    [0.400, 0.170, 0.080, 0.075, -0.010, 3.0],
    [0.425, 0.110, 0.065, 0.070, -0.015, 2.4],
    [0.450, 0.060, 0.055, 0.058, -0.015, 2.1],
    [0.480, 0.056, 0.058, 0.056, -0.015, 2.0],
    [0.510, 0.064, 0.075, 0.075, -0.015, 2.0],
    [0.550, 0.076, 0.090, 0.098, -0.010, 2.2],
    [0.600, 0.079, 0.095, 0.105, 0.000, 2.2],
    [0.645, 0.075, 0.090, 0.100, 0.000, 2.2],
    [0.678, 0.063, 0.074, 0.087, -0.005, 2.1],
    [0.700, 0.042, 0.050, 0.060, -0.010, 2.0],
    [0.712, 0.012, 0.014, 0.016, -0.010, 2.0],
])
_Y_BOTTOM, _Y_TOP = 0.200, 0.716
_COLUMNS = 88
_ROW_SPACING_BODY, _ROW_SPACING_HEAD = 0.015, 0.0055
_FACE_MARGIN_COLS, _FACE_MARGIN_Y, _BLEND_RINGS = 3, 0.012, 3


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def _profile(y):
    """Cross-section parameters (a, bf, bb, zc, n) at heights y, by monotone cubic interpolation."""
    from scipy.interpolate import PchipInterpolator

    y = np.clip(np.asarray(y, dtype=np.float64), _PROFILE[0, 0], _PROFILE[-1, 0])
    return [PchipInterpolator(_PROFILE[:, 0], _PROFILE[:, k])(y) for k in range(1, 6)]


def _lathe_radius(phi, y):
    """Polar radius of the superellipse cross-section at angle phi (0 = +z, +pi/2 = +x) and height y."""
    a, bf, bb, zc, n = _profile(y)
    b = np.where(np.cos(phi) >= 0, bf, bb)
    r = (np.abs(np.sin(phi) / a) ** n + np.abs(np.cos(phi) / b) ** n) ** (-1.0 / n)
    return r, zc


def _lathe_point(phi, y):
    r, zc = _lathe_radius(phi, y)
    return np.stack([r * np.sin(phi), np.asarray(y, dtype=np.float64) * np.ones_like(r), zc + r * np.cos(phi)], -1)


def _to_cylindrical(p):
    """(phi, y, r) of model-space points about the lathe axis at their height."""
    zc = _profile(p[..., 1])[3]
    return np.arctan2(p[..., 0], p[..., 2] - zc), p[..., 1], np.hypot(p[..., 0], p[..., 2] - zc)


def _from_cylindrical(phi, y, r):
    zc = _profile(y)[3]
    return np.stack([r * np.sin(phi), y, zc + r * np.cos(phi)], -1)


def _row_heights():
    """Lathe row heights: dense on the head and neck, sparse on the chest, spaced along the side meridian."""
    ys = np.linspace(_Y_BOTTOM, _Y_TOP - 0.006, 4000)
    a = _profile(ys)[0]
    ds = np.hypot(np.diff(ys), np.diff(a))
    spacing = np.where(ys[1:] < 0.42, _ROW_SPACING_BODY, _ROW_SPACING_HEAD)
    u = np.concatenate([[0.0], np.cumsum(ds / spacing)])
    rows = int(np.round(u[-1]))
    return np.interp(np.linspace(0.0, u[-1], rows + 1), u, ys)


def canonical_face():
    """MediaPipe canonical face in model space: (vertices [468,3] metres, triangles [898,3])."""
    data = np.load(asset_path("mediapipe_face", "canonical_face.npz"))
    return data["vertices_cm"].astype(np.float64) * MP_SCALE + MP_OFFSET, data["triangles"].astype(np.int64)


def _boundary_loop(tri):
    """The single boundary loop of a disk mesh, ordered along its boundary edges."""
    edges = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]])
    key = {tuple(e) for e in edges.tolist()}
    boundary = [e for e in edges.tolist() if (e[1], e[0]) not in key]
    nxt = {a: b for a, b in boundary}
    start = boundary[0][0]
    loop = [start]
    while nxt[loop[-1]] != start:
        loop.append(nxt[loop[-1]])
    if len(loop) != len(boundary):
        raise RuntimeError("face mesh boundary is not a single loop")
    return np.array(loop)


def _zipper(a_idx, a_ang, b_idx, b_ang):
    """Triangulate the band between two closed loops sorted by increasing polar angle (both star-shaped)."""
    tris = []
    na, nb = len(a_idx), len(b_idx)
    i = j = 0
    # unwrap angles so both loops start near the same angle and increase by one full turn
    a_u = np.concatenate([a_ang, a_ang[:1] + 2 * np.pi])
    b_u = np.concatenate([b_ang, b_ang[:1] + 2 * np.pi])
    while i < na or j < nb:
        if j >= nb or (i < na and a_u[i + 1] <= b_u[j + 1]):
            tris.append((a_idx[i % na], a_idx[(i + 1) % na], b_idx[j % nb]))
            i += 1
        else:
            tris.append((a_idx[i % na], b_idx[(j + 1) % nb], b_idx[j % nb]))
            j += 1
    return tris


def _sort_loop_by_angle(ang):
    order = np.argsort(ang)
    return order, ang[order]


def build_mesh():
    """The stand-in's template mesh. Returns (vertices [V,3] metres, faces [F,3], info dict).

    Vertex order: 0..467 are MediaPipe's canonical face points (so MediaPipe point i is vertex i), then the
    blending rings, then the lathe grid, then the two pole vertices.
    """
    face_v, face_t = canonical_face()
    loop = _boundary_loop(face_t)
    rows_y = _row_heights()
    n_rows, n_cols = len(rows_y), _COLUMNS
    phis = 2 * np.pi * np.arange(n_cols) / n_cols - np.pi  # column n_cols//2 is phi = 0, the front

    # Rectangle of grid cells (in row/column index space) replaced by the face and its blending rings.
    fphi, fy, _ = _to_cylindrical(face_v[loop])
    half = int(np.ceil(np.abs(fphi).max() / (2 * np.pi / n_cols))) + _FACE_MARGIN_COLS
    j0, j1 = n_cols // 2 - half, n_cols // 2 + half
    i0 = int(np.searchsorted(rows_y, fy.min() - _FACE_MARGIN_Y)) - 1
    i1 = int(np.searchsorted(rows_y, fy.max() + _FACE_MARGIN_Y))

    grid = _lathe_point(phis[None, :].repeat(n_rows, 0), rows_y[:, None].repeat(n_cols, 1))  # [rows, cols, 3]
    inside = np.zeros((n_rows, n_cols), bool)
    inside[i0 + 1:i1, j0 + 1:j1] = True

    verts = [face_v]
    faces = [face_t]
    n_face = len(face_v)

    # Param plane for the blend: s = phi * R0 (metres of arc), t = y; polar angles about the face centre.
    r0 = 0.08
    centre = np.array([0.0, 0.5 * (fy.min() + fy.max())])

    def polar(s, t):
        return np.arctan2(t - centre[1], s - centre[0])

    # Rectangle boundary (grid vertices), counter-clockwise in (s, t).
    rect = ([(i0, j) for j in range(j0, j1)] + [(i, j1) for i in range(i0, i1)]
            + [(i1, j) for j in range(j1, j0, -1)] + [(i, j0) for i in range(i1, i0, -1)])
    rect = np.array(rect)
    rect_st = np.stack([phis[rect[:, 1]] * r0, rows_y[rect[:, 0]]], -1)
    rect_ang = polar(rect_st[:, 0], rect_st[:, 1])

    oval_st = np.stack([fphi * r0, fy], -1)
    oval_ang = polar(oval_st[:, 0], oval_st[:, 1])
    o_order, o_ang = _sort_loop_by_angle(oval_ang)
    oval_idx = loop[o_order]
    oval_st, oval_cyl = oval_st[o_order], np.stack(_to_cylindrical(face_v[oval_idx]), -1)

    def along(ang_sorted, values, query):
        """Interpolate per-vertex values of an angle-sorted loop at query angles (periodic)."""
        a = np.concatenate([ang_sorted[-1:] - 2 * np.pi, ang_sorted, ang_sorted[:1] + 2 * np.pi])
        v = np.concatenate([values[-1:], values, values[:1]])
        return np.stack([np.interp(query, a, v[:, k]) for k in range(v.shape[1])], -1)

    def rect_at(query):
        """Point of the rectangle boundary (in s,t) along rays from the centre."""
        d = np.stack([np.cos(query), np.sin(query)], -1)
        lo = np.array([phis[j0] * r0, rows_y[i0]]) - centre
        hi = np.array([phis[j1] * r0, rows_y[i1]]) - centre
        with np.errstate(divide="ignore"):
            tx = np.where(d[:, 0] > 0, hi[0] / d[:, 0], lo[0] / d[:, 0])
            ty = np.where(d[:, 1] > 0, hi[1] / d[:, 1], lo[1] / d[:, 1])
        return centre + d * np.minimum(tx, ty)[:, None]

    # Blending rings between the face oval and the rectangle: counts grow geometrically, positions lerp in
    # cylindrical coordinates from the face's exact boundary to the lathe surface.
    n_rect = len(rect)
    counts = np.round(np.geomspace(len(loop), n_rect, _BLEND_RINGS + 2)[1:-1]).astype(int)
    prev_idx, prev_ang = oval_idx, o_ang
    next_index = n_face
    ring_ids = []
    for k, count in enumerate(counts, start=1):
        alpha = k / (_BLEND_RINGS + 1)
        ang = np.sort(np.linspace(-np.pi, np.pi, count, endpoint=False) + np.pi / count)
        o_cyl = along(o_ang, oval_cyl, ang)                   # (phi, y, r) on the face boundary
        r_st = rect_at(ang)
        r_phi, r_y = r_st[:, 0] / r0, r_st[:, 1]
        r_r = _lathe_radius(r_phi, r_y)[0]
        phi = (1 - alpha) * o_cyl[:, 0] + alpha * r_phi
        yy = (1 - alpha) * o_cyl[:, 1] + alpha * r_y
        # the radius follows the lathe at the blended (phi, y) plus a fading share of the face's own offset
        o_r_lathe = _lathe_radius(o_cyl[:, 0], o_cyl[:, 1])[0]
        rr = _lathe_radius(phi, yy)[0] + (1 - alpha) ** 2 * (o_cyl[:, 2] - o_r_lathe) \
            + alpha * (1 - alpha) * 0.0 * r_r
        pts = _from_cylindrical(phi, yy, rr)
        idx = np.arange(next_index, next_index + count)
        next_index += count
        verts.append(pts)
        ring_ids.append(idx)
        faces.append(np.array(_zipper(prev_idx, prev_ang, idx, ang)))
        prev_idx, prev_ang = idx, ang

    # Lathe grid vertices (all but those strictly inside the rectangle), then the poles.
    keep = ~inside
    grid_index = -np.ones((n_rows, n_cols), np.int64)
    grid_index[keep] = np.arange(next_index, next_index + keep.sum())
    next_index += keep.sum()
    verts.append(grid[keep])
    r_order, r_ang = _sort_loop_by_angle(rect_ang)
    rect_idx = grid_index[rect[:, 0], rect[:, 1]][r_order]
    faces.append(np.array(_zipper(prev_idx, prev_ang, rect_idx, r_ang)))

    quads = []
    for i in range(n_rows - 1):
        for j in range(n_cols):
            jn = (j + 1) % n_cols
            if i0 <= i < i1 and j0 <= j < j1:
                continue
            a, b, c, d = grid_index[i, j], grid_index[i, jn], grid_index[i + 1, jn], grid_index[i + 1, j]
            quads += [(a, b, c), (a, c, d)]
    faces.append(np.array(quads))
    top = next_index
    bottom = next_index + 1
    a_t, _, _, zc_t, _ = _profile(_Y_TOP)
    verts.append(np.array([[0.0, _Y_TOP, float(zc_t)], [0.0, _Y_BOTTOM, float(_profile(_Y_BOTTOM)[3])]]))
    faces.append(np.array([(grid_index[-1, j], grid_index[-1, (j + 1) % n_cols], top) for j in range(n_cols)]))
    faces.append(np.array([(grid_index[0, (j + 1) % n_cols], grid_index[0, j], bottom) for j in range(n_cols)]))

    v = np.concatenate(verts).astype(np.float64)
    f = np.concatenate(faces).astype(np.int64)
    f = _orient_outward(v, f, n_face_tris=len(face_t), top=top, bottom=bottom)
    info = {"n_face_vertices": n_face, "rings": [r.tolist() for r in ring_ids], "top": int(top),
            "bottom": int(bottom), "grid_index": grid_index, "rows_y": rows_y}
    return v, f, info


def _orient_outward(v, f, n_face_tris, top, bottom):
    """Wind the generated triangles so normals point away from the lathe axis (caps: up/down).

    The MediaPipe triangles (the first n_face_tris) keep their own consistent, outward winding.
    """
    tri = v[f]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    c = tri.mean(1)
    zc = _profile(c[:, 1])[3]
    out = np.stack([c[:, 0], np.zeros(len(c)), c[:, 2] - zc], -1)
    is_top = (f == top).any(1)
    is_bottom = (f == bottom).any(1)
    out[is_top] = [0, 1, 0]
    out[is_bottom] = [0, -1, 0]
    flip = (np.einsum("ij,ij->i", n, out) < 0)
    flip[:n_face_tris] = False
    f = f.copy()
    f[flip] = f[flip][:, [0, 2, 1]]
    return f


# ----------------------------------------------------------------------------------------------------------
# Fields on the template: regions, skinning weights, joints, shape and expression directions.


def _mp(index):
    """Model-space position of MediaPipe canonical point(s) `index`."""
    return canonical_face()[0][index]


class _Frame:
    """Landmark positions and soft regions of the template, computed once and shared by every field."""

    def __init__(self, v):
        self.v = v
        face = canonical_face()[0]
        self.face = face
        self.eye_r = face[MP_RIGHT_EYE].mean(0)
        self.eye_l = face[MP_LEFT_EYE].mean(0)
        self.y_eye = 0.5 * (self.eye_r[1] + self.eye_l[1])
        self.mouth_y = 0.5 * (face[13, 1] + face[14, 1])
        self.mouth_c = 0.5 * (face[13] + face[14])
        self.corner_r, self.corner_l = face[61], face[291]
        x, y, z = v[:, 0], v[:, 1], v[:, 2]
        zc = _profile(y)[3]
        self.zc = zc
        # head vs neck: a plane tilted so that the under-chin belongs to the head and the nape to the neck
        self.head = _smoothstep((y + 0.46 * (z - zc) - 0.4875) / 0.06 + 0.5)
        self.neck_top = _smoothstep((y - 0.418) / 0.03 + 0.5)
        self.front = _smoothstep((z - zc + 0.005) / 0.03 + 0.5)
        # jaw: below the mouth line, a line that rises toward the jaw hinges; sharp across the lips
        ax = np.abs(x)
        lateral = _smoothstep((ax - 0.022) / 0.05)
        y_line = self.mouth_y + (0.566 - self.mouth_y) * lateral
        width = 0.0018 + 0.045 * _smoothstep((ax - 0.02) / 0.03)
        self.jaw = _smoothstep((y_line - y) / width + 0.5) * _smoothstep((z - zc - 0.0) / 0.03 + 0.5)
        self.lower_lip = _sigmoid((self.mouth_y - y) / 0.0012)  # 1 below the lip line, 0 above

    def bump(self, centre, sigma):
        d2 = ((self.v - centre) ** 2).sum(-1)
        return np.exp(-0.5 * d2 / sigma ** 2)

    def mirror(self, p):
        return p * np.array([-1.0, 1.0, 1.0])


def skinning_weights(fr: _Frame) -> np.ndarray:
    v = fr.v
    x, y = v[:, 0], v[:, 1]
    w = np.zeros((len(v), NUM_JOINTS))
    head = fr.head
    body = 1.0 - head
    neck = body * fr.neck_top
    torso = body * (1.0 - fr.neck_top)
    lower = _smoothstep((0.29 - y) / 0.06 + 0.5)  # bottom of the bust follows spine2
    ax = np.abs(x)
    shoulder = _smoothstep((ax - 0.125) / 0.08 + 0.5)
    collar = _smoothstep((ax - 0.05) / 0.08 + 0.5) * (1.0 - shoulder)
    upper = torso * (1.0 - lower)
    left = x > 0
    w[:, J_SPINE2] = torso * lower
    w[:, J_SPINE3] = upper * (1.0 - shoulder - collar)
    w[:, J_LCOLLAR] = np.where(left, upper * collar, 0.0)
    w[:, J_RCOLLAR] = np.where(~left, upper * collar, 0.0)
    w[:, J_LSHOULDER] = np.where(left, upper * shoulder, 0.0)
    w[:, J_RSHOULDER] = np.where(~left, upper * shoulder, 0.0)
    w[:, J_NECK] = neck
    w[:, J_JAW] = head * fr.jaw
    w[:, J_HEAD] = head * (1.0 - fr.jaw)
    return w / w.sum(1, keepdims=True)


# T-pose joint targets (model space, metres) for the joints the bust does not surround.
def _joint_targets(fr: _Frame) -> np.ndarray:
    J = np.zeros((NUM_JOINTS, 3))
    J[0] = [0, 0.0, 0.0]
    J[1], J[2] = [0.09, -0.08, 0.0], [-0.09, -0.08, 0.0]
    J[3] = [0, 0.10, -0.01]
    J[4], J[5] = [0.10, -0.48, 0.0], [-0.10, -0.48, 0.0]
    J[6] = [0, 0.22, 0.0]
    J[7], J[8] = [0.10, -0.88, -0.03], [-0.10, -0.88, -0.03]
    J[9] = [0, 0.30, 0.01]
    J[10], J[11] = [0.11, -0.93, 0.08], [-0.11, -0.93, 0.08]
    J[12] = [0, 0.440, -0.015]
    J[13], J[14] = [0.075, 0.395, -0.01], [-0.075, 0.395, -0.01]
    J[15] = [0, 0.505, -0.012]
    J[16], J[17] = [0.165, 0.370, -0.012], [-0.165, 0.370, -0.012]
    J[18], J[19] = [0.43, 0.370, -0.02], [-0.43, 0.370, -0.02]
    J[20], J[21] = [0.68, 0.370, -0.02], [-0.68, 0.370, -0.02]
    J[22] = [0, 0.558, 0.008]
    J[23] = 0.8 * fr.eye_l + 0.2 * np.array([0.032, fr.eye_l[1], 0.0])
    J[24] = 0.8 * fr.eye_r + 0.2 * np.array([-0.032, fr.eye_r[1], 0.0])
    # fingers: three joints per finger along the arm direction from the wrist, spread in z
    for side, wrist, base in ((1, 20, 25), (-1, 21, 40)):
        for f_i, dz in enumerate([0.03, 0.01, -0.03, -0.01, 0.045]):  # index, middle, pinky, ring, thumb
            for k in range(3):
                J[base + 3 * f_i + k] = J[wrist] + [side * (0.09 + 0.025 * k), 0.0, dz]
    return J


def joint_regressor(fr: _Frame, rows_y: np.ndarray) -> np.ndarray:
    """J_regressor [55, V]: each joint an affine combination (weights sum to 1) of template vertices.

    Anchors are the vertices in horizontal slabs around the joint's height (clamped into the bust) plus a
    second slab 8 cm toward the chest, so the least-norm weights are well conditioned; a joint off the mesh
    (legs, arms, fingers) then moves with the bust as shape changes.
    """
    v = fr.v
    targets = _joint_targets(fr)
    R = np.zeros((NUM_JOINTS, len(v)))
    for j, t in enumerate(targets):
        yc = np.clip(t[1], _Y_BOTTOM + 0.01, _Y_TOP - 0.03)
        y2 = yc + (0.08 if yc < 0.45 else -0.08)
        sel = np.nonzero((np.abs(v[:, 1] - yc) < 0.012) | (np.abs(v[:, 1] - y2) < 0.012))[0]
        A = np.concatenate([v[sel].T, np.ones((1, len(sel)))])  # [4, k]
        b = np.concatenate([t, [1.0]])
        w = A.T @ np.linalg.solve(A @ A.T + 1e-12 * np.eye(4), b)
        R[j, sel] = w
    return R


def shape_directions(fr: _Frame) -> np.ndarray:
    """[V, 3, len(SHAPE_NAMES)] displacement per unit beta, metres."""
    v = fr.v
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    zc = fr.zc
    head, front = fr.head, fr.front
    neck_band = _smoothstep((y - 0.41) / 0.03 + 0.5) * (1 - _smoothstep((y - 0.53) / 0.03 + 0.5))
    torso = 1 - _smoothstep((y - 0.41) / 0.03 + 0.5)
    lower_face = _smoothstep((fr.y_eye - y) / 0.02) * front * head
    cheek_r, cheek_l = np.array([-0.048, 0.560, 0.070]), np.array([0.048, 0.560, 0.070])
    outward = np.stack([x, np.zeros_like(x), z - zc], -1)
    outward /= np.linalg.norm(outward, axis=1, keepdims=True) + 1e-9
    nose_tip, chin, forehead = _mp(4), _mp(152), np.array([0.0, 0.640, 0.080])
    D = np.zeros((len(v), 3, len(SHAPE_NAMES)))

    def put(name, field):
        D[:, :, SHAPE_NAMES.index(name)] = field

    put("size", 0.03 * (v - np.array([0.0, 0.20, 0.0])))
    put("head_width", head[:, None] * np.stack([0.05 * x, 0 * x, 0 * x], -1))
    put("head_depth", head[:, None] * np.stack([0 * x, 0 * x, 0.045 * np.minimum(z - zc, 0.0)], -1))
    put("face_height", np.stack([0 * x, -0.07 * np.maximum(fr.y_eye - y, 0) * lower_face, 0 * x], -1))
    put("neck_thickness", 0.10 * neck_band[:, None] * np.stack([x, 0 * x, z - zc], -1))
    put("shoulder_width", torso[:, None] * np.stack([0.06 * x * _smoothstep(np.abs(x) / 0.18), 0 * x, 0 * x], -1))
    nb = fr.bump(nose_tip, 0.014)
    put("nose", np.stack([0.10 * x * nb, 0 * x, 0.003 * nb], -1))
    put("jaw_width", np.stack([0.07 * x * lower_face * _smoothstep((fr.mouth_y + 0.01 - y) / 0.03), 0 * x, 0 * x], -1))
    put("forehead", np.stack([0 * x, 0 * x, 0.004 * fr.bump(forehead, 0.03) * front], -1))
    cb = fr.bump(cheek_r, 0.022) + fr.bump(cheek_l, 0.022)
    put("cheek_fullness", 0.003 * cb[:, None] * outward)
    chb = fr.bump(chin, 0.018)
    put("chin", np.stack([0 * x, -0.002 * chb, 0.003 * chb], -1))
    eb = fr.bump(fr.eye_r, 0.012) + fr.bump(fr.eye_l, 0.012)
    put("eye_depth", np.stack([0 * x, 0 * x, -0.003 * eb], -1))
    lb = fr.bump(fr.mouth_c, 0.011)
    put("lip_fullness", np.stack([0 * x, 0.0015 * lb * (1 - 2 * fr.lower_lip), 0.002 * lb], -1))
    put("body_weight", 0.08 * (torso * (1 - head))[:, None] * np.stack([x, 0 * x, z - zc], -1))
    return D


def expression_directions(fr: _Frame) -> np.ndarray:
    """[V, 3, len(EXPRESSION_NAMES)] displacement per unit expression coefficient, metres."""
    v = fr.v
    x = v[:, 0]
    zero = np.zeros_like(x)
    sgn = np.sign(x)
    front = fr.front
    lower, upper = fr.lower_lip, 1.0 - fr.lower_lip
    corners = fr.bump(fr.corner_r, 0.012) + fr.bump(fr.corner_l, 0.012)
    cheeks = fr.bump(np.array([-0.040, 0.553, 0.072]), 0.018) + fr.bump(np.array([0.040, 0.553, 0.072]), 0.018)
    mouth = fr.bump(fr.mouth_c, 0.016) * front
    lower_lip = fr.bump(_mp(17), 0.015) * lower * front
    upper_lip = fr.bump(_mp(0), 0.014) * upper * front
    brows = fr.bump(_mp(105), 0.020) + fr.bump(_mp(334), 0.020)
    inner_brows = fr.bump(_mp(107), 0.011) + fr.bump(_mp(336), 0.011)
    eye_r_up = fr.bump(fr.eye_r + [0, 0.003, 0], 0.009) * _sigmoid((v[:, 1] - fr.eye_r[1]) / 0.001)
    eye_l_up = fr.bump(fr.eye_l + [0, 0.003, 0], 0.009) * _sigmoid((v[:, 1] - fr.eye_l[1]) / 0.001)
    eye_r_lo = fr.bump(fr.eye_r - [0, 0.003, 0], 0.008) * _sigmoid((fr.eye_r[1] - v[:, 1]) / 0.001)
    eye_l_lo = fr.bump(fr.eye_l - [0, 0.003, 0], 0.008) * _sigmoid((fr.eye_l[1] - v[:, 1]) / 0.001)
    puff = fr.bump(np.array([-0.045, 0.533, 0.060]), 0.022) + fr.bump(np.array([0.045, 0.533, 0.060]), 0.022)
    nose_sides = fr.bump(np.array([-0.014, 0.563, 0.095]), 0.011) + fr.bump(np.array([0.014, 0.563, 0.095]), 0.011)
    E = np.zeros((len(v), 3, len(EXPRESSION_NAMES)))

    def put(name, dx, dy, dz):
        E[:, :, EXPRESSION_NAMES.index(name)] = np.stack([dx + zero, dy + zero, dz + zero], -1)

    put("smile", 0.003 * sgn * corners, 0.004 * corners + 0.002 * cheeks, -0.002 * corners + 0.0015 * cheeks)
    put("mouth_open", zero, -0.004 * lower_lip + 0.0015 * upper_lip, 0.0)
    put("pucker", -0.004 * sgn * corners, zero, 0.005 * mouth)
    put("brow_raise", zero, 0.005 * brows, 0.0005 * brows)
    put("brow_furrow", -0.003 * sgn * inner_brows, -0.003 * inner_brows, 0.001 * inner_brows)
    put("blink", zero, -0.007 * (eye_r_up + eye_l_up), 0.001 * (eye_r_up + eye_l_up))
    put("mouth_stretch", 0.005 * sgn * corners, -0.001 * corners, -0.001 * mouth)
    put("upper_lip_raise", zero, 0.003 * upper_lip + 0.001 * nose_sides, 0.0005 * upper_lip)
    put("lower_lip_depress", zero, -0.003 * lower_lip, 0.001 * lower_lip)
    put("cheek_puff", 0.005 * sgn * puff * 0.7, zero, 0.005 * puff * 0.7)
    put("mouth_left", 0.004 * mouth, zero, zero)
    put("nose_wrinkle", zero, 0.003 * nose_sides - 0.001 * inner_brows, zero)
    put("frown", zero, -0.004 * corners + 0.001 * fr.bump(_mp(152), 0.015), zero)
    put("squint", zero, 0.0025 * (eye_r_lo + eye_l_lo), zero)
    return E


def _nearest_vertex(v, p):
    return int(np.argmin(((v - p) ** 2).sum(1)))


def _embed_on_mesh(v, f, points, candidate_faces=None):
    """Closest-point embedding: (face index, barycentric weights) of each point on the mesh."""
    faces = np.arange(len(f)) if candidate_faces is None else np.asarray(candidate_faces)
    tri = v[f[faces]]
    out_f, out_b = [], []
    for p in points:
        # barycentrics of p projected on each candidate triangle's plane, clamped, and the closest wins
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        v0, v1, v2 = b - a, c - a, p - a
        d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
        d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
        den = d00 * d11 - d01 * d01
        den = np.where(np.abs(den) < 1e-20, 1e-20, den)
        bv = (d11 * d20 - d01 * d21) / den
        bw = (d00 * d21 - d01 * d20) / den
        bary = np.clip(np.stack([1 - bv - bw, bv, bw], 1), 0, None)
        bary /= bary.sum(1, keepdims=True)
        q = (bary[:, :, None] * tri).sum(1)
        k = int(np.argmin(((q - p) ** 2).sum(1)))
        out_f.append(faces[k])
        out_b.append(bary[k])
    return np.array(out_f, np.int64), np.array(out_b)


def _vertex_embedding(f, vertex_ids):
    """Embed mesh vertices exactly: a face that contains each vertex, with a one-hot barycentric."""
    faces_idx, bary = [], []
    for vid in vertex_ids:
        k = int(np.nonzero((f == vid).any(1))[0][0])
        b = (f[k] == vid).astype(np.float64)
        faces_idx.append(k)
        bary.append(b)
    return np.array(faces_idx, np.int64), np.array(bary)


def mediapipe_embedding(v, f):
    """Faces and barycentrics of the 478 MediaPipe points (468 vertices + 10 iris points on the eyelids)."""
    fi, b = _vertex_embedding(f, range(468))
    iris = []
    for centre_idx, contour in ((468, MP_RIGHT_EYE), (473, MP_LEFT_EYE)):
        c = v[contour].mean(0)
        r = 0.0058  # iris radius
        # MediaPipe's ring order around each iris centre: +x, +y (up), -x, -y in the subject's frame
        iris += [c, c + [r, 0, 0], c + [0, r, 0], c + [-r, 0, 0], c + [0, -r, 0]]
    face_tris = np.arange(898)  # the canonical face's own triangles come first
    ifi, ib = _embed_on_mesh(v, f, np.array(iris), candidate_faces=face_tris)
    return np.concatenate([fi, ifi]), np.concatenate([b, ib])


def dynamic_contour(v, f, fr: _Frame):
    """Yaw look-up table of the 17 iBUG contour points: faces [79,17] and barycentrics [79,17,3].

    Row r holds the silhouette points for a neck yaw of -r degrees (r < 40) or (r - 39) degrees (r >= 40),
    matching smplx's `find_dynamic_lmk_idx_and_bcoords`. For each contour point a fixed curve on the surface
    is sampled (the mesh cut by the plane through the face centre that contains the view axis and the
    point's image direction); at each yaw the candidate that projects farthest along that image direction
    is the silhouette point.
    """
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))
    contour = v[MP_TO_IBUG68[:17]]
    centre = np.array([0.0, _mp(4)[1], 0.0])  # on the lathe axis at nose height: inside the head
    angles = np.deg2rad(np.linspace(-15, 100, 231))  # front half: the jaw, not the nape
    faces_tab = np.zeros((79, 17), np.int64)
    bary_tab = np.zeros((79, 17, 3))
    cand = []
    for k in range(17):
        d = contour[k, :2] - centre[:2]
        d = d / np.linalg.norm(d)
        dirs = np.cos(angles)[:, None] * [0, 0, 1] + np.sin(angles)[:, None] * [d[0], d[1], 0]
        rays = np.concatenate([np.repeat(centre[None], len(dirs), 0), dirs], 1).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        t = hit["t_hit"].numpy()
        # keep hits on the face and jaw: near the centre and not below the chin (rays that leave through
        # the neck would otherwise find the shoulders)
        ok = np.isfinite(t) & (t < 0.13)
        ok &= centre[1] + t * dirs[:, 1] > v[152, 1] - 0.012
        prim = hit["primitive_ids"].numpy()[ok].astype(np.int64)
        uv = hit["primitive_uvs"].numpy()[ok].astype(np.float64)
        bary = np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)
        pts = (v[f[prim]] * bary[:, :, None]).sum(1)
        cand.append((d, prim, bary, pts))
    for row in range(79):
        yaw = np.deg2rad(-row if row < 40 else row - 39)
        c, s = np.cos(yaw), np.sin(yaw)
        for k, (d, prim, bary, pts) in enumerate(cand):
            rx = c * pts[:, 0] + s * pts[:, 2]  # rotation about +y
            score = rx * d[0] + pts[:, 1] * d[1]
            i = int(np.argmax(score))
            faces_tab[row, k], bary_tab[row, k] = prim[i], bary[i]
    return faces_tab, bary_tab


def _vertex_joint_ids(v, fr: _Frame):
    ids = {
        "nose": 4,
        "reye": _nearest_vertex(v[:468], fr.eye_r),
        "leye": _nearest_vertex(v[:468], fr.eye_l),
        "rear": _nearest_vertex(v, np.array([-0.080, 0.585, 0.0])),
        "lear": _nearest_vertex(v, np.array([0.080, 0.585, 0.0])),
    }
    bottom = int(np.argmin(v[:, 1]))
    for k in ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"):
        ids[k] = bottom  # the bust has no feet: every foot keypoint is the bottom pole
    l_tip = _nearest_vertex(v, np.array([0.2, 0.37, 0.0]))
    r_tip = _nearest_vertex(v, np.array([-0.2, 0.37, 0.0]))
    for finger in ("thumb", "index", "middle", "ring", "pinky"):
        ids["l" + finger], ids["r" + finger] = l_tip, r_tip  # no hands: fingertips at the shoulder tips
    return np.array([ids[k] for k in VERTEX_JOINT_KEYS], np.int64)


def build_standin_arrays() -> dict[str, np.ndarray]:
    """All arrays of the stand-in model file (SMPL-X keys plus `headrep_*`/`mp478_*` extras)."""
    v, f, info = build_mesh()
    fr = _Frame(v)
    n = len(v)
    shapedirs = np.zeros((n, 3, SHAPE_SPACE + EXPRESSION_SPACE), np.float32)
    shapedirs[:, :, :len(SHAPE_NAMES)] = shape_directions(fr)
    shapedirs[:, :, SHAPE_SPACE:SHAPE_SPACE + len(EXPRESSION_NAMES)] = expression_directions(fr)
    weights = skinning_weights(fr)
    lmk_faces, lmk_bary = _vertex_embedding(f, MP_TO_IBUG68[17:])
    dyn_faces, dyn_bary = dynamic_contour(v, f, fr)
    mp_faces, mp_bary = mediapipe_embedding(v, f)
    face_mask = np.zeros(n, bool)
    face_mask[:468] = True
    meta = {
        "name": "headrep procedural stand-in (NOT SMPL-X)",
        "version": STANDIN_VERSION,
        "shape_names": SHAPE_NAMES,
        "expression_names": EXPRESSION_NAMES,
        "face_source": "MediaPipe canonical face mesh (Apache-2.0), vertices 0..467",
        "units": "metres; y up, z forward, x toward the subject's left",
    }
    kintree = np.stack([SMPLX_PARENTS, np.arange(NUM_JOINTS)]).astype(np.int64)
    hands = np.eye(45, dtype=np.float32)
    return {
        "v_template": v.astype(np.float32),
        "f": f.astype(np.int64),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((n, 3, 486), np.float32),
        "J_regressor": joint_regressor(fr, info["rows_y"]).astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "hands_componentsl": hands, "hands_componentsr": hands,
        "hands_meanl": np.zeros(45, np.float32), "hands_meanr": np.zeros(45, np.float32),
        "lmk_faces_idx": lmk_faces, "lmk_bary_coords": lmk_bary.astype(np.float32),
        "dynamic_lmk_faces_idx": dyn_faces, "dynamic_lmk_bary_coords": dyn_bary.astype(np.float32),
        "mp478_faces_idx": mp_faces, "mp478_bary_coords": mp_bary.astype(np.float32),
        "headrep_face_mask": face_mask,
        "headrep_vertex_joint_ids": _vertex_joint_ids(v, fr),
        "headrep_standin": np.array(json.dumps(meta)),
    }


def write_standin(path: Path) -> Path:
    """Generate the stand-in and write it atomically to `path`."""
    from headrep.io import write_npz

    return write_npz(path, **build_standin_arrays())


def _source_digest() -> str:
    """Hash of this generator's source and the face asset: a changed generator regenerates the cache."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(asset_path("mediapipe_face", "canonical_face.npz").read_bytes())
    return h.hexdigest()[:16]


def standin_path() -> Path:
    """The cached stand-in model file, generated on first use (a few seconds)."""
    folder = cache_dir() / "models"
    path = folder / f"SMPLX_STANDIN_v{STANDIN_VERSION}_{_source_digest()}.npz"
    if not path.exists():
        write_standin(path)
    return path


def is_standin(model_data) -> bool:
    return "headrep_standin" in getattr(model_data, "files", model_data)
