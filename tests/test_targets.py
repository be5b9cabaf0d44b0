"""Dense target estimators (headrep.fitting.targets): MediaPipe mesh targets against analytic geometry, the depth and
normal losses, and user networks loaded from TorchScript / ONNX files."""

import math
import sys
import warnings

import numpy as np
import pytest
import torch

from headrep.errors import HeadrepError
from headrep.model.standin import canonical_face
from headrep.fitting.targets import (
    MP_LEFT_EYE_LOOP, MP_LIPS_INNER, MP_RIGHT_EYE_LOOP, MediaPipeMeshTargets, NetworkTargets, TargetEstimator,
    Targets, _mediapipe_triangles, angular_normal_error, make_estimator, normal_loss,
    scale_shift_invariant_depth_error,
)

R = 256


def _rotation(yaw_deg, pitch_deg):
    a, b = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return rx @ ry


def synthetic_points(size=R, yaw=20.0, pitch=10.0):
    """MediaPipe-like points of the posed canonical face, orthographic, in crop pixels (OpenCV axes):
    (points [478,3] float32, the 468 face points [468,3] float64)."""
    v, _ = canonical_face()  # metres, y up, z toward the viewer
    v = (v - v.mean(0)) @ _rotation(yaw, pitch).T
    cam = np.stack([v[:, 0], -v[:, 1], -v[:, 2]], 1)  # OpenCV: y down, z away from the viewer
    p = cam * (0.6 * size / 0.155)  # the same scale on x, y and z
    p[:, :2] += (size - 1) / 2.0
    iris = p[[33, 133, 159, 145, 160, 263, 362, 386, 374, 387]]  # ten stand-in iris points
    return np.concatenate([p, iris], 0).astype(np.float32), p


def _one(points, size=R):
    return np.zeros((1, size, size, 3), np.uint8), points[None], np.ones(1, bool)


def _face_normals(p, tri):
    n = np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]])
    area = np.linalg.norm(n, axis=1) / 2
    return n / np.linalg.norm(n, axis=1, keepdims=True), area


def _inside(p2, q):
    """Barycentric test of the 2D point q in triangle p2 [3,2]."""
    m = np.array([p2[1] - p2[0], p2[2] - p2[0]]).T
    lam = np.linalg.solve(m, q - p2[0])
    return lam.min() >= 0 and lam.sum() <= 1


def _front_z(p, tri, q):
    """Independent reference depth: z of the front-most triangle plane (orthographic, pixels) at 2D points q
    [N,2]; inf where no triangle covers the point."""
    best = np.full(len(q), np.inf)
    for t in tri:
        a, b, c = p[t]
        m = np.array([[b[0] - a[0], c[0] - a[0]], [b[1] - a[1], c[1] - a[1]]])
        if abs(np.linalg.det(m)) < 1e-9:
            continue
        lo = np.minimum(np.minimum(a, b), c)[:2]
        hi = np.maximum(np.maximum(a, b), c)[:2]
        idx = np.nonzero((q[:, 0] >= lo[0]) & (q[:, 0] <= hi[0]) & (q[:, 1] >= lo[1]) & (q[:, 1] <= hi[1]))[0]
        lam = np.linalg.solve(m, (q[idx] - a[:2]).T).T
        inside = (lam >= -1e-9).all(1) & (lam.sum(1) <= 1 + 1e-9)
        z = a[2] + lam[:, 0] * (b[2] - a[2]) + lam[:, 1] * (c[2] - a[2])
        best[idx[inside]] = np.minimum(best[idx[inside]], z[inside])
    return best


def test_protocol_and_factory():
    est = make_estimator()
    assert isinstance(est, MediaPipeMeshTargets) and isinstance(est, TargetEstimator)
    assert Targets.__dataclass_fields__["has_depth"].default is True


def test_triangles_face_the_camera():
    _, p = synthetic_points(yaw=0, pitch=0)
    n, _ = _face_normals(p, _mediapipe_triangles())
    assert (n[:, 2] < 0).mean() > 0.95


@pytest.mark.parametrize("yaw,pitch", [(20.0, 10.0), (-30.0, -5.0)])
def test_mediapipe_normals_match_analytic_face_normals(yaw, pitch):
    points, p = synthetic_points(yaw=yaw, pitch=pitch)
    tri = _mediapipe_triangles()
    tg = MediaPipeMeshTargets().estimate(*_one(points))
    assert tg.normal.shape == (1, R, R, 3) and tg.normal.dtype == np.float32
    assert tg.depth.shape == (1, R, R) and tg.mask.dtype == np.bool_ and tg.has_depth
    assert tg.coarse                                  # MediaPipe's mesh holds no wrinkle (see detail.base_surface)
    fn, area = _face_normals(p, tri)
    # Smooth shading equals the face normal only where the surface is locally flat: pick, from the geometry
    # alone, triangles whose mean (area-weighted) vertex normal - the smooth normal at the centroid - is within
    # 1 deg of the face normal and whose vertex normals all are within 10 deg.
    vn = np.zeros_like(p)
    for k in range(3):
        np.add.at(vn, tri[:, k], fn * area[:, None])
    vn /= np.linalg.norm(vn, axis=1, keepdims=True)
    corner = np.degrees(np.arccos(np.clip(np.einsum("fkc,fc->fk", vn[tri], fn), -1, 1))).max(1)
    smooth = vn[tri].mean(1)
    smooth /= np.linalg.norm(smooth, axis=1, keepdims=True)
    centre = np.degrees(np.arccos(np.clip((smooth * fn).sum(1), -1, 1)))
    flat = (centre < 1.0) & (corner < 10.0) & (area > 8)
    errors = []
    for i in np.nonzero(flat)[0]:
        c = p[tri[i]].mean(0)
        u, v = int(round(c[0])), int(round(c[1]))
        if not tg.mask[0, v, u] or not _inside(p[tri[i], :2], np.array([u, v], float)):
            continue
        n = tg.normal[0, v, u]
        assert abs(np.linalg.norm(n) - 1) < 1e-4
        errors.append(np.degrees(np.arccos(np.clip(n @ fn[i], -1, 1))))
    assert len(errors) >= 8, "too few flat triangles to test"
    assert max(errors) < 3.0, errors
    # every visible normal faces the camera; masked-out pixels are zero
    assert (tg.normal[0][tg.mask[0]][:, 2] < 0).all()
    assert not tg.normal[0][~tg.mask[0]].any() and not tg.depth[0][~tg.mask[0]].any()


def test_mediapipe_depth_is_the_point_z():
    points, p = synthetic_points(yaw=20, pitch=10)
    tri = _mediapipe_triangles()
    tg = MediaPipeMeshTargets(exclude=(), erode=0).estimate(*_one(points))
    # vertices where rounding to the pixel centre moves z by < 0.2 px (local depth slope x rounding offset)
    grad = np.zeros((len(p), 2))
    for t in tri:
        a, b, c = p[t]
        m = np.array([[b[0] - a[0], b[1] - a[1]], [c[0] - a[0], c[1] - a[1]]])
        if abs(np.linalg.det(m)) < 1e-6:
            continue
        g = np.abs(np.linalg.solve(m, [b[2] - a[2], c[2] - a[2]]))  # |dz/dx|, |dz/dy| of the triangle's plane
        grad[t] = np.maximum(grad[t], g)
    px = np.round(p[:, :2])
    bound = (np.abs(px - p[:, :2]) * grad).sum(1)
    visible = np.abs(_front_z(p, tri, px) - p[:, 2]) < 0.2  # not hidden (e.g. behind the nose), not off the edge
    flat = [i for i in np.argsort(bound) if bound[i] < 0.2 and visible[i]][:40]
    assert len(flat) >= 10
    ref = p[flat]
    px = px[flat].astype(int)
    d = tg.depth[0, px[:, 1], px[:, 0]]
    assert tg.mask[0, px[:, 1], px[:, 0]].all()
    # differences between vertices equal their z differences (relative depth, pixel units)
    diff = (d[:, None] - d[None, :]) - (ref[:, None, 2] - ref[None, :, 2])
    assert np.abs(diff).max() < 0.5
    # the nose tip is nearer than the forehead and the cheeks: larger depth = farther
    assert tg.depth[0][tg.mask[0]].min() == pytest.approx(p[:, 2].min(), abs=1.0)


def test_mediapipe_depth_matches_the_mesh_planes_everywhere():
    """Independent reference: at every pixel centre, the z of the front-most triangle plane covering it."""
    points, p = synthetic_points(size=96, yaw=25, pitch=-10)
    tri = _mediapipe_triangles()
    tg = MediaPipeMeshTargets(exclude=(), erode=0).estimate(*_one(points, 96))
    yy, xx = np.mgrid[0:96, 0:96]
    best = _front_z(p, tri, np.stack([xx.ravel(), yy.ravel()], 1).astype(float)).reshape(96, 96)
    covered = np.isfinite(best)
    # coverage agrees except possibly on pixel centres exactly on the silhouette
    assert (tg.mask[0] != covered).sum() <= 2
    both = tg.mask[0] & covered
    assert np.abs(tg.depth[0][both] - best[both]).max() < 0.05


def test_mediapipe_projection_is_exact():
    est = MediaPipeMeshTargets()
    for size in (256, 512):
        points, _ = synthetic_points(size=size, yaw=35)
        points[:, 2] *= 2.0  # exaggerated depth: the worst case for perspective
        verts = est.mesh_vertices(points[None], size)
        uv, _ = est.camera(size).project(verts)
        assert (uv[0].numpy() - points[:468, :2]).__abs__().max() < 0.01  # << 0.1 px


def test_mediapipe_excludes_eyes_and_mouth_and_erodes():
    points, p = synthetic_points(yaw=10, pitch=5)
    full = MediaPipeMeshTargets(exclude=(), erode=0).estimate(*_one(points)).mask[0]
    tg = MediaPipeMeshTargets().estimate(*_one(points))
    m = tg.mask[0]
    assert m.sum() > 0.2 * R * R
    for loop in (MP_RIGHT_EYE_LOOP, MP_LEFT_EYE_LOOP, MP_LIPS_INNER):
        c = p[list(loop), :2].mean(0)
        u, v = int(round(c[0])), int(round(c[1]))
        assert full[v, u] and not m[v, u]
        assert not tg.normal[0, v, u].any()
    # the mask is inside the coverage eroded by 2 px
    pad = np.pad(full, 2)
    eroded = np.ones_like(full)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            eroded &= pad[2 + dy:2 + dy + R, 2 + dx:2 + dx + R]
    assert not (m & ~eroded).any()
    assert m.sum() > 0.8 * eroded.sum()
    # exclude=True is the default pair; unknown names fail clearly
    assert MediaPipeMeshTargets(exclude=True).exclude == ("eyes", "mouth")
    with pytest.raises(HeadrepError, match="exclude"):
        MediaPipeMeshTargets(exclude=("nose",))


def test_mediapipe_window_matches_full_render_and_off_crop_faces():
    points, _ = synthetic_points(size=128, yaw=15)
    est = MediaPipeMeshTargets()
    tg = est.estimate(*_one(points, 128)).validate(1, 128)
    n, d, m = est.render(points[None], 128)  # the whole crop, no window
    np.testing.assert_array_equal(tg.mask[0], m[0].numpy())
    np.testing.assert_allclose(tg.normal[0], n[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(tg.depth[0], d[0].numpy(), atol=1e-4)
    # a face half off the crop, and one entirely off it
    shifted = points.copy()
    shifted[:, 0] += 64
    gone = points.copy()
    gone[:, 0] += 1000
    tg = est.estimate(np.zeros((2, 128, 128, 3), np.uint8), np.stack([shifted, gone]), np.ones(2, bool))
    assert tg.mask[0].any() and not tg.mask[1].any()
    assert not tg.mask[0, :, :40].any()


def test_invalid_frames_and_nan_points():
    points, _ = synthetic_points()
    pts = np.repeat(points[None], 4, 0)
    pts[1] = np.nan  # invalid frame, NaN points
    pts[2, 5] = np.nan  # marked valid but a face point is NaN: treated as invalid
    valid = np.array([True, False, True, True])
    threads = torch.get_num_threads()
    tg = MediaPipeMeshTargets(batch_size=2, progress=True).estimate(np.zeros((4, R, R, 3), np.uint8), pts, valid)
    assert torch.get_num_threads() == threads  # restored after rendering single-threaded
    assert tg.mask[0].any() and tg.mask[3].any()
    assert not tg.mask[1].any() and not tg.mask[2].any()
    assert not tg.normal[1].any() and not tg.depth[2].any()
    np.testing.assert_array_equal(tg.mask[0], tg.mask[3])
    allnan = MediaPipeMeshTargets().estimate(np.zeros((2, 64, 64, 3), np.uint8),
                                             np.full((2, 478, 3), np.nan, np.float32), np.zeros(2, bool))
    assert allnan.mask.shape == (2, 64, 64) and not allnan.mask.any()
    with pytest.raises(HeadrepError, match="points"):
        MediaPipeMeshTargets().estimate(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((3, 478, 3)), np.ones(2, bool))


# ------------------------------------------------------------------------------------------------------------
# Depth and normal losses.


def test_ssi_depth_error_is_scale_shift_invariant():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(3, 16, 16, generator=g, dtype=torch.float64) + 1.0
    mask = torch.rand(3, 16, 16, generator=g) > 0.3
    target = 3.0 * pred + 2.0
    target[~mask] = float("nan")  # ignored outside the mask
    loss, aligned = scale_shift_invariant_depth_error(pred, target, mask)
    assert loss.shape == (3,) and float(loss.abs().max()) < 1e-9
    assert torch.allclose(aligned[mask], target[mask])
    assert not aligned[~mask].any()
    rnd = torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    loss_rnd, _ = scale_shift_invariant_depth_error(pred, rnd, mask)
    assert float(loss_rnd.min()) > 0.5
    # unit-free: scaling the target (or the prediction) leaves the loss unchanged
    l1, _ = scale_shift_invariant_depth_error(pred, rnd * 100 - 7, mask)
    l2, _ = scale_shift_invariant_depth_error(pred * 1e-3, rnd, mask)
    assert torch.allclose(l1, loss_rnd) and torch.allclose(l2, loss_rnd)
    # a depth-inverted prediction is not fitted with a negative scale (unless asked)
    inv, _ = scale_shift_invariant_depth_error(pred, -target, mask)
    assert float(inv.min()) > 0.5
    inv, _ = scale_shift_invariant_depth_error(pred, -target, mask, positive_scale=False)
    assert float(inv.abs().max()) < 1e-9
    # float32 metric depth against a pixel-unit target
    p32 = (0.5 + 0.05 * pred).float()
    l32, _ = scale_shift_invariant_depth_error(p32, 400 * p32 - 120, mask)
    assert float(l32.max()) < 1e-3
    # an empty mask gives 0, not NaN
    l0, _ = scale_shift_invariant_depth_error(pred, rnd, torch.zeros_like(mask))
    assert torch.equal(l0, torch.zeros(3, dtype=l0.dtype))


def test_ssi_depth_error_gradcheck():
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 6, 7, generator=g, dtype=torch.float64).requires_grad_()
    target = torch.rand(2, 6, 7, generator=g, dtype=torch.float64) + 0.5 * pred.detach()
    mask = torch.rand(2, 6, 7, generator=g) > 0.2
    assert torch.autograd.gradcheck(lambda p: scale_shift_invariant_depth_error(p, target, mask)[0], (pred,))
    assert torch.autograd.gradcheck(lambda p: scale_shift_invariant_depth_error(p, target, mask)[1], (pred,))


def _random_normals(shape, seed):
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(*shape, 3, generator=g, dtype=torch.float64)
    n[..., 2] = -n[..., 2].abs() - 0.2
    return n / n.norm(dim=-1, keepdim=True)


def _tilt(n, deg, seed):
    """Each normal rotated by exactly ``deg`` degrees (in the plane of n and a random perpendicular)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n.shape, generator=g, dtype=n.dtype)
    u = r - (r * n).sum(-1, keepdim=True) * n
    u = u / u.norm(dim=-1, keepdim=True)
    t = math.radians(deg)
    return math.cos(t) * n + math.sin(t) * u


def test_angular_normal_error():
    n = _random_normals((2, 20, 20), 0)
    mask = torch.ones(2, 20, 20, dtype=torch.bool)
    err = angular_normal_error(n, _tilt(n, 10.0, 1), mask)
    assert torch.allclose(err, torch.full((2,), 10.0, dtype=err.dtype), atol=1e-6)
    # a rigid rotation about an axis perpendicular to every normal: normals in the x-z plane, rotated about y
    a = torch.rand(1, 8, 8, dtype=torch.float64) * 2 - 1
    flat = torch.stack([torch.sin(a), torch.zeros_like(a), -torch.cos(a)], -1)
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float64)
    assert float(angular_normal_error(flat, flat @ rot.T, torch.ones(1, 8, 8, dtype=torch.bool))) == \
        pytest.approx(10.0, abs=1e-6)
    assert float(angular_normal_error(n, n, mask).max()) < 1e-5
    # outlier_deg leaves the far-off pixels out; an empty mask gives NaN
    t = n.clone()
    t[:, :2] = -t[:, :2]
    assert float(angular_normal_error(n, t, mask, outlier_deg=30).max()) < 1e-5
    assert torch.isnan(angular_normal_error(n, t, torch.zeros_like(mask))).all()


def test_normal_loss_rejects_outliers():
    n = _random_normals((2, 40, 40), 2)
    mask = torch.ones(2, 40, 40, dtype=torch.bool)
    target = _tilt(n, 1.0, 3) + 0.05 * torch.randn(n.shape, generator=torch.Generator().manual_seed(4),
                                                   dtype=n.dtype)
    target = target / target.norm(dim=-1, keepdim=True)
    corrupt = target.clone()
    bad = torch.rand(2, 40, 40, generator=torch.Generator().manual_seed(5)) < 0.05
    corrupt[bad] = _random_normals((int(bad.sum()),), 6) * torch.tensor([1.0, 1.0, -1.0], dtype=n.dtype)
    clean = normal_loss(n, target, mask)
    dirty = normal_loss(n, corrupt, mask)
    plain_clean = normal_loss(n, target, mask, outlier_quantile=None)
    plain_dirty = normal_loss(n, corrupt, mask, outlier_quantile=None)
    assert ((dirty - clean).abs() / clean).max() < 0.2
    assert (plain_dirty / plain_clean).min() > 5.0
    # differentiable w.r.t. pred; gradients only from kept pixels
    pred = n.clone().requires_grad_()
    normal_loss(pred, corrupt, mask).sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert pred.grad[bad].abs().sum() == 0
    assert float(normal_loss(n, n, mask).abs().max()) < 1e-12


# ------------------------------------------------------------------------------------------------------------
# User networks.


class _ConstNet(torch.nn.Module):
    """OpenGL-convention normal (0, 0, 1) everywhere and a depth ramp along x, as a dict."""

    def forward(self, x):
        b, _, h, w = x.shape
        n = torch.zeros(b, 3, h, w)
        n[:, 2] = 2.0  # not unit: renormalised by the loader
        ramp = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(b, 1, h, w)
        return {"normal": n, "depth": ramp}


class _TupleNet(torch.nn.Module):
    """(normal, depth, mask) tuple, checking the input contract; the mask is 0 on the left half."""

    def forward(self, x):
        assert x.dtype == torch.float32 and x.shape[1] == 3 and x.min() >= 0 and x.max() <= 1
        b, _, h, w = x.shape
        n = torch.zeros(b, 3, h, w)
        n[:, 0] = 1.0
        m = (torch.arange(w) >= w // 2).float().view(1, 1, 1, w).expand(b, 1, h, w)
        return n, x.mean(1, keepdim=True), m


class _NormalsOnly(torch.nn.Module):
    def forward(self, x):
        return torch.cat([x[:, :1] * 0 + 0.6, x[:, :1] * 0 + 0.8, x[:, :1] * 0], 1)


class _Strict(torch.nn.Module):
    def forward(self, x):
        if x.shape[2] != 16:
            raise RuntimeError("this network needs 16 x 16 inputs")
        return torch.ones(1, 3, 16, 16)


class _Bad(torch.nn.Module):
    def forward(self, x):
        return x[:, :2]


def _save(module, path):
    with warnings.catch_warnings():  # torch.jit.script is deprecated in recent torch, but still what users have
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return path


def _clip(t=3, size=32):
    g = np.random.default_rng(0)
    crops = g.integers(0, 256, (t, size, size, 3), dtype=np.uint8)
    return crops, np.zeros((t, 478, 3), np.float32), np.array([True, False, True][:t])


def test_network_targets_torchscript_opengl(tmp_path):
    path = _save(_ConstNet(), tmp_path / "normals.pt")
    est = NetworkTargets(path, normal_convention="opengl")
    assert isinstance(est, TargetEstimator)
    crops, points, valid = _clip()
    tg = est.estimate(crops, points, valid)
    assert tg.has_depth and "normals.pt" in tg.source and not tg.coarse
    assert tg.mask[0].all() and tg.mask[2].all() and not tg.mask[1].any()
    np.testing.assert_allclose(tg.normal[0], np.broadcast_to([0, 0, -1], (32, 32, 3)), atol=1e-6)
    np.testing.assert_allclose(tg.depth[2], np.broadcast_to(np.arange(32.0), (32, 32)), atol=1e-5)
    assert not tg.normal[1].any() and not tg.depth[1].any()
    tg.validate(3, 32)
    # a chunk with no valid frame still reports the network's depth
    assert est.estimate(crops[1:2], points[1:2], valid[1:2]).has_depth
    assert NetworkTargets(path).estimate(crops[1:2], points[1:2], valid[1:2]).has_depth
    # the same network read as OpenCV keeps (0, 0, 1)
    tg2 = NetworkTargets(path).estimate(crops, points, valid)
    np.testing.assert_allclose(tg2.normal[0], np.broadcast_to([0, 0, 1], (32, 32, 3)), atol=1e-6)


def test_network_targets_input_size_tuple_and_mask(tmp_path):
    est = NetworkTargets(_save(_TupleNet(), tmp_path / "tuple.ts"), input_size=64)
    crops, points, valid = _clip(2, 32)
    tg = est.estimate(crops, points, valid[:2])
    assert tg.normal.shape == (2, 32, 32, 3) and tg.has_depth
    assert not tg.mask[0, :, :15].any() and tg.mask[0, :, 17:].all()
    np.testing.assert_allclose(tg.normal[0, 0, 20], [1, 0, 0], atol=1e-6)
    assert 0 <= tg.depth[0].min() and tg.depth[0].max() <= 1
    # a normals-only single tensor: no depth, depth loss off
    tg = NetworkTargets(_save(_NormalsOnly(), tmp_path / "n.pt")).estimate(crops, points, valid[:2])
    assert not tg.has_depth and not tg.depth.any()
    np.testing.assert_allclose(tg.normal[0, 3, 3], [0.6, 0.8, 0], atol=1e-6)
    # the face_mask option intersects with the MediaPipe mesh mask (points all outside -> empty)
    pts, _ = synthetic_points(size=32)
    tg = NetworkTargets(tmp_path / "n.pt", face_mask=True).estimate(crops[:1], pts[None], np.ones(1, bool))
    assert 0 < tg.mask[0].sum() < 32 * 32


def test_network_targets_errors(tmp_path):
    with pytest.raises(HeadrepError, match="does not exist"):
        NetworkTargets(tmp_path / "missing.pt")
    bad_ext = tmp_path / "model.h5"
    bad_ext.write_bytes(b"x")
    with pytest.raises(HeadrepError, match="unknown extension"):
        NetworkTargets(bad_ext)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torchscript file")
    with pytest.raises(HeadrepError, match="junk.pt"):
        NetworkTargets(junk)
    est = NetworkTargets(_save(_Bad(), tmp_path / "bad.pt"))
    with pytest.raises(HeadrepError, match=r"bad\.pt.*\[1,3,H,W\]"):
        est.estimate(*_clip(1))
    est = NetworkTargets(_save(_Strict(), tmp_path / "strict.pt"))
    with pytest.raises(HeadrepError, match="strict.pt.*failed"):  # the network raises on a wrong input size
        est.estimate(*_clip(1))
    assert NetworkTargets(tmp_path / "strict.pt", input_size=16).estimate(*_clip(1)).mask[0].all()
    with pytest.raises(HeadrepError, match="normal_convention"):
        NetworkTargets(tmp_path / "bad.pt", normal_convention="directx")
    assert isinstance(make_estimator(str(tmp_path / "bad.pt")), NetworkTargets)


def test_network_targets_torch_export(tmp_path):
    program = torch.export.export(_ConstNet(), (torch.rand(1, 3, 24, 24),))
    path = tmp_path / "const.pt2"
    torch.export.save(program, str(path))
    est = NetworkTargets(path, normal_convention="opengl")
    assert est.input_size == (24, 24) and est.kind == "torch.export"
    tg = est.estimate(*_clip(3, 32))
    np.testing.assert_allclose(tg.normal[0], np.broadcast_to([0, 0, -1], (32, 32, 3)), atol=1e-6)
    assert tg.has_depth and tg.depth[0, 5, 31] > tg.depth[0, 5, 0]  # the ramp, resized from 24 to 32 pixels


def test_network_targets_onnx_needs_onnxruntime(tmp_path, monkeypatch):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(HeadrepError, match="pip install onnxruntime"):
        NetworkTargets(path)


def test_network_targets_onnx(tmp_path):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx onnxruntime)")
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime)")
    from onnx import TensorProto, helper

    # normal = (0, 0, 1) OpenGL everywhere (input * 0 + const), depth = the mean of the RGB channels
    const = helper.make_tensor("c", TensorProto.FLOAT, [1, 3, 1, 1], [0.0, 0.0, 1.0])
    zero = helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Mul", ["image", "z"], ["zeroed"]),
        helper.make_node("Add", ["zeroed", "c"], ["normal"]),
        helper.make_node("ReduceMean", ["image"], ["depth"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 48, 48])],
        [helper.make_tensor_value_info("normal", TensorProto.FLOAT, [1, 3, 48, 48]),
         helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, 1, 48, 48])],
        initializer=[const, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "tiny.onnx"
    onnx.save(model, str(path))
    est = NetworkTargets(path, normal_convention="opengl")
    assert est.input_size == (48, 48)  # read from the model's fixed input shape
    crops, points, valid = _clip(3, 32)
    tg = est.estimate(crops, points, valid)
    assert tg.has_depth and not tg.mask[1].any() and tg.mask[0].all()
    np.testing.assert_allclose(tg.normal[2], np.broadcast_to([0, 0, -1], (32, 32, 3)), atol=1e-6)
    assert 0 <= tg.depth[0].min() and tg.depth[0].max() <= 1 and tg.depth[0].std() > 0.01
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"garbage")
    with pytest.raises(HeadrepError, match="junk.onnx"):
        NetworkTargets(junk)
