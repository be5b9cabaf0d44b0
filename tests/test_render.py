"""Tests of the differentiable rasterizer (headrep.render): conventions, gradients, oracle agreement, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from headrep.errors import RenderInputError
from headrep.model.meshops import icosphere, vertex_normals
from headrep.render import (PinholeCamera, antialias, encode_depth, encode_normals, get_context, interpolate,
                            rasterize, render_maps)
from headrep.render import oracle

CPU = get_context("cpu")


def _pixel_centres(H, W, dtype=torch.float64):
    fy = (2 * torch.arange(H, dtype=dtype) + 1) / H - 1
    fx = (2 * torch.arange(W, dtype=dtype) + 1) / W - 1
    return fx, fy


def _edge_margin(pos, tri, H, W):
    """Smallest distance (pixels) from any pixel centre to any triangle edge line segment (w > 0 only)."""
    fx, fy = _pixel_centres(H, W)
    py, px = torch.meshgrid((fy + 1) * H / 2, (fx + 1) * W / 2, indexing="ij")
    pts = torch.stack([px.reshape(-1), py.reshape(-1)], -1)
    best = math.inf
    for b in range(pos.shape[0]):
        ndc = pos[b, :, :2] / pos[b, :, 3:4]
        scr = torch.stack([(ndc[:, 0] + 1) * W / 2, (ndc[:, 1] + 1) * H / 2], -1)
        for t in tri.long():
            for k in range(3):
                a, c = scr[t[k]], scr[t[(k + 1) % 3]]
                d = c - a
                s = ((pts - a) @ d / (d @ d)).clamp(0, 1)
                dist = (pts - (a + s[:, None] * d)).norm(dim=-1).min()
                best = min(best, float(dist))
    return best


def _small_scene(dtype=torch.float64):
    """Three triangles (two overlapping at different depths, one sticking out of the image) in clip space
    with perspective (varying w), no pixel centre within 0.02 px of an edge."""
    pos = torch.tensor([[
        [-0.819, -0.693, 0.20, 1.0], [0.731, -0.591, 0.30, 1.2], [-0.102, 0.857, 0.25, 1.1],   # big, behind
        [-0.359, -0.943, -0.30, 0.9], [0.909, 0.108, -0.20, 1.0], [-0.394, 0.536, -0.10, 1.3],  # front
        [0.507, 0.512, 0.10, 1.0], [1.618, 0.707, 0.10, 1.0], [0.698, 1.419, 0.10, 1.0],        # partly out
    ]], dtype=dtype)
    tri = torch.tensor([[0, 1, 2], [3, 5, 4], [6, 7, 8]], dtype=torch.int32)  # one clockwise: no culling
    return pos, tri


# ----------------------------------------------------------------------------------------------------------
# Conventions.


def test_barycentrics_follow_nvdiffrast_conventions():
    pos, tri = _small_scene()
    H, W = 16, 16
    assert _edge_margin(pos, tri, H, W) > 0.02
    rast, rast_db = rasterize(CPU, pos, tri, (H, W))
    assert rast.shape == (1, H, W, 4) and rast_db.shape == rast.shape and float(rast_db.abs().max()) == 0
    fx, fy = _pixel_centres(H, W)
    tid = rast[0, ..., 3].long() - 1
    assert set(tid.unique().tolist()) == {-1, 0, 1, 2}
    for j in range(H):
        for i in range(W):
            t = int(tid[j, i])
            if t < 0:
                assert rast[0, j, i].abs().max() == 0
                continue
            u, v = rast[0, j, i, 0], rast[0, j, i, 1]
            b = torch.stack([u, v, 1 - u - v])
            assert bool((b > -1e-9).all())
            q = (b[:, None] * pos[0, tri[t].long()]).sum(0)  # perspective-correct: clip-space combination
            # the interpolated clip position projects exactly onto the pixel centre
            assert float(q[0] / q[3]) == pytest.approx(float(fx[i]), abs=1e-9)
            assert float(q[1] / q[3]) == pytest.approx(float(fy[j]), abs=1e-9)
            assert float(rast[0, j, i, 2]) == pytest.approx(float(q[2] / q[3]), abs=1e-9)
    # the front triangle (smaller z/w) wins where the two overlap, whatever the triangle order
    both = oracle.visibility(pos, tri[[1, 0, 2]], H, W)
    assert torch.equal(torch.where(both >= 0, torch.tensor([1, 0, 2])[both.clamp_min(0)], both), tid[None])


def test_interpolate_weights_are_u_v_and_rest():
    pos, tri = _small_scene()
    rast, _ = rasterize(CPU, pos, tri, (16, 16))
    attr = torch.zeros(9, 3, dtype=torch.float64)
    for t in tri.long():  # one-hot of the corner index
        attr[t[0], 0] = attr[t[1], 1] = attr[t[2], 2] = 1
    out, out_da = interpolate(attr, rast, tri)
    assert out.shape == (1, 16, 16, 3) and out_da.numel() == 0
    cov = rast[..., 3] > 0
    torch.testing.assert_close(out[..., 0][cov], rast[..., 0][cov])
    torch.testing.assert_close(out[..., 1][cov], rast[..., 1][cov])
    torch.testing.assert_close(out[..., 2][cov], 1 - rast[..., 0][cov] - rast[..., 1][cov])
    assert float(out[~cov].abs().max()) == 0


def test_projection_lands_on_the_hand_computed_pixel():
    # deliberately non-square, off-centre intrinsics so that swapped axes / flips cannot pass
    cam = PinholeCamera(fx=50.0, fy=55.0, cx=20.3, cy=30.7, width=64, height=48)
    P = torch.tensor([-0.3, -0.2, 2.0], dtype=torch.float64)
    # by hand: u = 50 * -0.3 / 2 + 20.3 = 12.8, v = 55 * -0.2 / 2 + 30.7 = 25.2
    uv, depth = cam.project(P)
    assert uv.tolist() == pytest.approx([12.8, 25.2]) and float(depth) == 2.0
    s = 0.08  # ~2 px triangle around P, wound either way (no culling)
    verts = torch.stack([P + torch.tensor([-s, -s, 0.0]), P + torch.tensor([s, -s, 0.0]),
                         P + torch.tensor([0.0, s, 0.0]), ], 0).double()[None]
    faces = torch.tensor([[0, 1, 2]])
    maps = render_maps(CPU, verts, faces, cam, antialias=False)
    mask = maps["mask"][0]
    assert mask.shape == (48, 64)
    assert float(mask[25, 13]) == 1.0  # row = round(v) = 25, column = round(u) = 13
    rows, cols = torch.nonzero(mask > 0, as_tuple=True)
    assert float(rows.double().mean()) == pytest.approx(25.2, abs=1.0)
    assert float(cols.double().mean()) == pytest.approx(12.8, abs=1.0)
    assert float(maps["depth"][0, 25, 13]) == pytest.approx(2.0, abs=1e-9)


def test_image_row_zero_is_the_top_and_column_zero_the_left():
    cam = PinholeCamera.from_fov(60.0, 40, 30)
    # a point in the upper half of the camera (negative y) must appear in the top rows,
    # a point on the left (negative x) in the left columns
    for (x, y), in_top, in_left in [((-0.4, -0.3), True, True), ((0.4, 0.3), False, False),
                                    ((0.4, -0.3), True, False)]:
        c = torch.tensor([x, y, 2.0])
        verts = torch.stack([c + torch.tensor([-0.1, -0.1, 0]), c + torch.tensor([0.1, -0.1, 0]),
                             c + torch.tensor([0.0, 0.1, 0])])[None]
        mask = render_maps(CPU, verts, torch.tensor([[0, 1, 2]]), cam, antialias=False)["mask"][0]
        rows, cols = torch.nonzero(mask > 0, as_tuple=True)
        assert rows.numel() > 0
        assert bool((rows < 15).all()) == in_top and bool((rows >= 15).all()) == (not in_top)
        assert bool((cols < 20).all()) == in_left and bool((cols >= 20).all()) == (not in_left)


def _camera_facing_quad(z=2.0, half=0.5):
    # outward normal (v1 - v0) x (v2 - v0) = (0, 0, -1): towards the camera
    verts = torch.tensor([[-half, -half, z], [-half, half, z], [half, half, z], [half, -half, z]],
                         dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return verts, faces


def test_plane_facing_camera_normals_and_depth():
    verts, faces = _camera_facing_quad()
    cam = PinholeCamera.from_fov(50.0, 32, 32)
    maps = render_maps(CPU, verts[None], faces, cam)
    hard = maps["depth"][0] > 0
    assert int(hard.sum()) > 100
    n = maps["normal"][0][hard]
    torch.testing.assert_close(n, torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand_as(n))
    torch.testing.assert_close(maps["depth"][0][hard], torch.full((int(hard.sum()),), 2.0, dtype=torch.float64))
    assert float(maps["normal"][0][~hard].abs().max()) == 0 and float(maps["depth"][0][~hard].abs().max()) == 0
    # the interior of the mask is 1, the antialiased border is in [0, 1]
    m = maps["mask"][0]
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    assert float(m[10:22, 10:22].min()) == 1.0
    rgb = encode_normals(maps["normal"], maps["mask"])
    grey = encode_depth(maps["depth"], maps["mask"])
    assert rgb.dtype == torch.uint8 and rgb.shape == (1, 32, 32, 3) and grey.shape == (1, 32, 32)
    assert rgb[0, 16, 16].tolist() == [128, 128, 0] and int(grey[0, 16, 16]) == 255 and int(grey[0, 0, 0]) == 0


def test_sphere_normals_point_at_the_camera_and_depth_is_perspective_correct():
    v, f = icosphere(3, dtype=torch.float64)
    centre = torch.tensor([0.1, -0.05, 3.0], dtype=torch.float64)
    cam = PinholeCamera.from_fov(30.0, 64, 64)
    maps = render_maps(CPU, (v * 0.6 + centre)[None], f, cam)
    hard = maps["depth"][0] > 0
    n = maps["normal"][0][hard]
    assert float(n[:, 2].max()) < 0  # every visible point of a convex mesh faces the camera
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(n.shape[0], dtype=torch.float64))
    # depth = exact distance along the pixel ray to the (faceted) sphere: within the faceting error
    d = maps["depth"][0][hard]
    assert float(d.min()) > 3.0 - 0.6 - 1e-6 and float(d.max()) < 3.0
    # perspective correctness on a tilted plane: depth of a pixel = z where its ray meets the plane
    verts = torch.tensor([[-1.0, -1.0, 2.0], [-1.0, 1.0, 4.0], [1.0, 1.0, 4.0], [1.0, -1.0, 2.0]],
                         dtype=torch.float64)
    maps = render_maps(CPU, verts[None], torch.tensor([[0, 1, 2], [0, 2, 3]]), cam, antialias=False)
    rows, cols = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    ray_y = (rows.double() - cam.cy) / cam.fy  # plane: z = 3 + y, ray (x, y, 1) * z  =>  z = 3 / (1 - ray_y)
    expect = 3.0 / (1.0 - ray_y)
    hard = maps["depth"][0] > 0
    torch.testing.assert_close(maps["depth"][0][hard], expect[hard], rtol=1e-9, atol=1e-9)


def test_given_vertex_normals_give_the_same_maps_and_gradients():
    """render_maps(normals=vertex_normals(v)) is render_maps(v) (the fitter passes the normals its shading
    needs anyway); a wrongly shaped array is refused."""
    v, f = icosphere(2, dtype=torch.float64)
    cam = PinholeCamera.from_fov(30.0, 32, 32)
    verts = (v * 0.6 + torch.tensor([0.1, -0.05, 3.0], dtype=torch.float64))[None].requires_grad_(True)
    a = render_maps(CPU, verts, f, cam)
    b = render_maps(CPU, verts, f, cam, normals=vertex_normals(verts, f))
    for k in ("normal", "depth", "mask"):
        torch.testing.assert_close(a[k], b[k])
    ga, = torch.autograd.grad(a["normal"][..., 0].sum(), verts)
    gb, = torch.autograd.grad(b["normal"][..., 0].sum(), verts)
    torch.testing.assert_close(ga, gb)
    assert float(ga.abs().max()) > 0
    with pytest.raises(RenderInputError):
        render_maps(CPU, verts, f, cam, normals=vertex_normals(verts, f)[:, :-1])


# ----------------------------------------------------------------------------------------------------------
# Gradients.


def test_gradcheck_rasterize_interpolate_float64():
    pos, tri = _small_scene()
    H, W = 16, 16
    assert _edge_margin(pos, tri, H, W) > 0.02
    g = torch.Generator().manual_seed(0)
    attr = torch.randn(9, 3, dtype=torch.float64, generator=g)
    pos = pos.clone().requires_grad_()
    attr = attr.requires_grad_()

    def fn(p, a):
        rast, _ = rasterize(CPU, p, tri, (H, W))
        out, _ = interpolate(a, rast, tri)
        return out, rast[..., :3]

    assert torch.autograd.gradcheck(fn, (pos, attr), eps=1e-6, atol=1e-6, rtol=1e-5)


def _aa_scene():
    """A screen-filling-ish triangle pair with silhouettes whose crossings are away from the clamp ends."""
    pos = torch.tensor([[
        [-0.61, -0.73, 0.2, 1.0], [0.58, -0.52, 0.3, 1.3], [-0.07, 0.69, 0.25, 1.1],
        [-0.20, -0.31, -0.2, 0.9], [0.33, 0.07, -0.1, 1.0], [-0.28, 0.22, -0.1, 1.2],
    ]], dtype=torch.float64)
    tri = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    return pos, tri


def test_gradcheck_antialias_float64():
    pos, tri = _aa_scene()
    H, W = 16, 16
    assert _edge_margin(pos, tri, H, W) > 0.02
    rast, _ = rasterize(CPU, pos, tri, (H, W))
    g = torch.Generator().manual_seed(1)
    color = torch.rand(1, H, W, 3, dtype=torch.float64, generator=g).requires_grad_()
    pos = pos.clone().requires_grad_()
    out = antialias(color, rast, pos, tri)
    assert float((out - color).detach().abs().max()) > 0.05  # something was antialiased
    out.sum().backward()
    assert float(pos.grad.abs().max()) > 0  # silhouette gradients reach the vertices

    def fn(c, p):
        return antialias(c, rast, p, tri)

    assert torch.autograd.gradcheck(fn, (color, pos), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_antialias_blends_only_at_silhouettes():
    # inside a closed mesh the triangle ids change across every edge, but no edge is a silhouette there
    v, f = icosphere(3)
    verts = (v * 0.6 + torch.tensor([0.0, 0.0, 2.5]))[None]
    cam = PinholeCamera.from_fov(40.0, 64, 64)
    pos = cam.to_clip(verts)
    tri = f.int()
    rast, _ = rasterize(CPU, pos, tri, (64, 64))
    color = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    out = antialias(color, rast, pos, tri)
    cov = (rast[0, ..., 3] > 0).double()
    interior = -torch.nn.functional.max_pool2d(-cov[None, None], 3, 1, 1)[0, 0] > 0
    edge = (cov > 0) & ~interior
    assert int(edge.sum()) > 50
    assert int(interior.sum()) > 500
    assert torch.equal(out[0][interior], color[0][interior])  # no blending across internal edges
    changed = (out[0] != color[0]).any(-1)
    near_edge = torch.nn.functional.max_pool2d(edge.double()[None, None], 3, 1, 1)[0, 0] > 0
    assert int(changed.sum()) > 10 and bool(near_edge[changed].all())  # blends happen at the silhouette only
    # (like nvdiffrast, only silhouette edges of the triangle covering one of the two pixels count: on a
    # coarse sphere many contour triangles are slivers that cover no pixel centre)
    with pytest.raises(RenderInputError, match="triangle ids"):
        antialias(color, rast, pos, tri[:10])


def _directional_fd(loss_fn, x, direction, eps):
    with torch.no_grad():
        return (loss_fn(x + eps * direction) - loss_fn(x - eps * direction)) / (2 * eps)


def test_finite_differences_with_rerendering_depth_and_normals():
    v, f = icosphere(2, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    verts = (v * 0.5 * (1 + 0.1 * torch.rand(v.shape[0], 1, dtype=torch.float64, generator=g))
             + torch.tensor([0.05, 0.02, 2.0], dtype=torch.float64))[None]
    cam = PinholeCamera.from_fov(40.0, 48, 48)
    base = render_maps(CPU, verts, f, cam, antialias=False)
    cov = (base["depth"][0] > 0).double()
    # keep away from the silhouette: pixels whose 5x5 neighbourhood is covered
    interior = -torch.nn.functional.max_pool2d(-cov[None, None], 5, 1, 2)[0, 0]
    assert int(interior.sum()) > 300
    wd = torch.rand(48, 48, dtype=torch.float64, generator=g) * interior
    wn = torch.rand(48, 48, 3, dtype=torch.float64, generator=g) * interior[..., None]

    def loss(x):
        m = render_maps(CPU, x, f, cam, antialias=False)
        return (m["depth"][0] * wd).sum() + (m["normal"][0] * wn).sum()

    x = verts.clone().requires_grad_()
    loss(x).backward()
    for seed in range(3):
        d = torch.randn(verts.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + seed))
        fd = float(_directional_fd(loss, verts, d, 1e-6))
        an = float((x.grad * d).sum())
        assert an == pytest.approx(fd, rel=1e-4, abs=1e-6)


def test_finite_differences_with_rerendering_antialiased_silhouette():
    # a quad with tilted edges: the antialiased coverage moves continuously with its vertices
    verts = torch.tensor([[-0.43, -0.37, 2.0], [-0.51, 0.41, 2.1], [0.47, 0.36, 2.2], [0.39, -0.44, 1.9]],
                         dtype=torch.float64)[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    cam = PinholeCamera.from_fov(45.0, 32, 32)
    w = torch.rand(32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def loss(x):
        return (render_maps(CPU, x, faces, cam, antialias=True)["mask"][0] * w).sum()

    # antialiased coverage approximates the exact projected area better than the hard mask
    maps = render_maps(CPU, verts, faces, cam)
    uv, _ = cam.project(verts[0])
    area = 0.5 * abs(float((uv[:, 0] * uv[:, 1].roll(-1) - uv[:, 0].roll(-1) * uv[:, 1]).sum()))
    aa, hard = float(maps["mask"].sum()), float((maps["depth"] > 0).sum())
    assert abs(aa - area) < abs(hard - area) and abs(aa - area) < 0.01 * area
    x = verts.clone().requires_grad_()
    loss(x).backward()
    assert float(x.grad.abs().max()) > 1.0  # silhouette gradients exist
    for k in range(4):  # move each corner sideways and up/down in turn
        for axis in (0, 1):
            d = torch.zeros_like(verts)
            d[0, k, axis] = 1.0
            fd = float(_directional_fd(loss, verts, d, 1e-5))
            an = float(x.grad[0, k, axis])
            assert an == pytest.approx(fd, rel=2e-3, abs=1e-3), (k, axis)


# ----------------------------------------------------------------------------------------------------------
# CPU backend vs the pure-torch oracle on a real-sized mesh.


def test_cpu_matches_torch_oracle_on_20k_triangles():
    v, f = icosphere(5)  # 20,480 triangles
    assert f.shape[0] == 20480
    g = torch.Generator().manual_seed(4)
    verts = (v * 0.55 * (1 + 0.05 * torch.rand(v.shape[0], 1, generator=g)) + torch.tensor([0.0, 0.0, 1.6]))[None]
    cam = PinholeCamera.from_fov(45.0, 256, 256)
    pos = cam.to_clip(verts)
    tri = f.int()
    r_cpu, _ = rasterize(CPU, pos, tri, (256, 256))
    r_ref, _ = oracle.rasterize(None, pos, tri, (256, 256))
    cov = r_ref[..., 3] > 0
    assert float(cov.double().mean()) > 0.3
    same = (r_cpu[..., 3] == r_ref[..., 3]).double().mean()
    assert float(same) >= 0.999
    attr = torch.cat([vertex_normals(verts, f), verts[..., 2:]], -1)
    o_cpu, _ = interpolate(attr, r_cpu, tri)
    o_ref, _ = oracle.interpolate(attr, r_ref, tri)
    both = cov & (r_cpu[..., 3] == r_ref[..., 3])
    rel = ((o_cpu[..., 3] - o_ref[..., 3]).abs() / o_ref[..., 3].abs().clamp_min(1e-6))[both]
    assert float(rel.max()) < 1e-4
    # gradients of an L1 loss agree too (same formula, autograd vs fused numba kernels)
    grads = []
    for ctx in (CPU, get_context("torch")):
        x = verts.clone().requires_grad_()
        m = render_maps(ctx, x, f, cam, antialias=False)
        (m["normal"].abs().sum() + m["depth"].abs().sum()).backward()
        grads.append(x.grad)
    err = (grads[0] - grads[1]).norm() / grads[1].norm()
    assert float(err) < 1e-2


def test_oracle_chunking_does_not_change_the_result(monkeypatch):
    v, f = icosphere(3)
    pos = PinholeCamera.from_fov(40.0, 48, 48).to_clip((v * 0.6 + torch.tensor([0.0, 0.0, 2.0]))[None])
    whole = oracle.visibility(pos, f.int(), 48, 48)
    monkeypatch.setattr(oracle, "_CHUNK", 97)
    assert torch.equal(oracle.visibility(pos, f.int(), 48, 48), whole)
    assert torch.equal(whole.int(), rasterize(CPU, pos, f.int(), (48, 48))[0][..., 3].int() - 1)


# ----------------------------------------------------------------------------------------------------------
# Clipping, batches, degenerate and empty input.


def test_triangle_through_the_camera_plane_is_clipped_not_garbage():
    # one vertex behind the camera: only the part in front of the near plane may be drawn
    verts = torch.tensor([[-0.5, -0.3, 1.0], [0.6, -0.2, 1.5], [0.1, 0.4, -1.0]], dtype=torch.float64)[None]
    cam = PinholeCamera.from_fov(60.0, 32, 32, near=0.1, far=10.0)
    pos = cam.to_clip(verts)
    rast, _ = rasterize(CPU, pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (32, 32))
    cov = rast[..., 3] > 0
    assert int(cov.sum()) > 50
    zw = rast[..., 2][cov]
    assert bool(torch.isfinite(rast).all()) and float(zw.min()) >= -1 and float(zw.max()) <= 1
    maps = render_maps(CPU, verts, torch.tensor([[0, 1, 2]]), cam)
    d = maps["depth"][0][maps["depth"][0] > 0]
    assert float(d.min()) >= 0.1 - 1e-9 and bool(torch.isfinite(maps["normal"]).all())
    ref, _ = oracle.rasterize(None, pos, torch.tensor([[0, 1, 2]], dtype=torch.int32), (32, 32))
    assert torch.equal(ref[..., 3], rast[..., 3])
    # beyond the far plane is not drawn either
    far = render_maps(CPU, verts + torch.tensor([0.0, 0.0, 20.0], dtype=torch.float64), torch.tensor([[0, 1, 2]]),
                      cam)
    assert float(far["mask"].abs().max()) == 0


def test_batch_and_shared_attributes():
    verts, faces = _camera_facing_quad()
    cam = PinholeCamera.from_fov(50.0, 24, 24)
    batch = torch.stack([verts, verts + torch.tensor([0.3, 0.0, 1.0], dtype=torch.float64)])
    maps = render_maps(CPU, batch, faces, cam)
    for b in range(2):
        single = render_maps(CPU, batch[b:b + 1], faces, cam)
        for k in ("normal", "depth", "mask"):
            torch.testing.assert_close(maps[k][b:b + 1], single[k])
    # one camera per batch element (same image size)
    cams = [cam, PinholeCamera(30.0, 33.0, 10.0, 13.5, 24, 24)]
    per_cam = render_maps(CPU, batch, faces, cams)
    for b in range(2):
        single = render_maps(CPU, batch[b:b + 1], faces, cams[b])
        for k in ("normal", "depth", "mask"):
            torch.testing.assert_close(per_cam[k][b:b + 1], single[k])
    with pytest.raises(RenderInputError, match="image size"):
        render_maps(CPU, batch, faces, [cam, PinholeCamera.from_fov(50.0, 24, 20)])
    with pytest.raises(RenderInputError, match="3 cameras"):
        render_maps(CPU, batch, faces, [cam, cam, cam])
    pos = cam.to_clip(batch)
    rast, _ = rasterize(CPU, pos, faces.int(), (24, 24))
    attr = torch.randn(4, 2, dtype=torch.float64)
    out_shared, _ = interpolate(attr, rast, faces.int())
    out_batched, _ = interpolate(attr[None].expand(2, 4, 2), rast, faces.int())
    torch.testing.assert_close(out_shared, out_batched)


def test_degenerate_triangles_are_never_drawn():
    verts, faces = _camera_facing_quad()
    verts = torch.cat([verts, torch.tensor([[0.0, 0.0, 1.5], [0.2, 0.2, 1.5], [0.4, 0.4, 1.5]],
                                           dtype=torch.float64)])
    faces = torch.cat([faces, torch.tensor([[4, 5, 6], [4, 4, 5]])])  # collinear, repeated vertex
    cam = PinholeCamera.from_fov(50.0, 32, 32)
    pos = cam.to_clip(verts[None])
    rast, _ = rasterize(CPU, pos, faces.int(), (32, 32))
    assert set(rast[..., 3].unique().long().tolist()) <= {0, 1, 2}
    maps = render_maps(CPU, verts[None].requires_grad_(), faces, cam)
    assert bool(torch.isfinite(maps["normal"]).all())


@pytest.mark.parametrize("where", ["behind", "outside", "no_faces"])
def test_empty_render_is_all_zeros_and_differentiable(where):
    verts, faces = _camera_facing_quad()
    if where == "behind":
        verts = verts * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    elif where == "outside":
        verts = verts + torch.tensor([100.0, 0.0, 0.0], dtype=torch.float64)
    else:
        faces = torch.zeros(0, 3, dtype=torch.int64)
    x = verts[None].clone().requires_grad_()
    maps = render_maps(CPU, x, faces, PinholeCamera.from_fov(50.0, 16, 16))
    for k, shape in (("normal", (1, 16, 16, 3)), ("depth", (1, 16, 16)), ("mask", (1, 16, 16))):
        assert maps[k].shape == shape and float(maps[k].detach().abs().max()) == 0
    (maps["normal"].sum() + maps["depth"].sum() + maps["mask"].sum()).backward()
    assert x.grad is None or float(x.grad.abs().max()) == 0


def test_bad_input_raises_render_input_error():
    verts, faces = _camera_facing_quad()
    cam = PinholeCamera.from_fov(50.0, 16, 16)
    pos = cam.to_clip(verts[None]).float()
    tri = faces.int()
    nan = verts.clone()
    nan[1, 0] = float("nan")
    with pytest.raises(RenderInputError, match="NaN"):
        render_maps(CPU, nan[None], faces, cam)
    with pytest.raises(RenderInputError, match="NaN"):
        rasterize(CPU, torch.where(torch.isfinite(cam.to_clip(nan[None])), pos, pos * float("nan")), tri, (16, 16))
    with pytest.raises(RenderInputError, match="only 4 vertices"):
        rasterize(CPU, pos, tri + 1, (16, 16))
    with pytest.raises(RenderInputError, match="only 4 vertices"):
        render_maps(CPU, verts[None], faces - 1, cam)
    with pytest.raises(RenderInputError, match="integer"):
        rasterize(CPU, pos, tri.float(), (16, 16))
    with pytest.raises(RenderInputError, match=r"\[B, V, 4\]"):
        rasterize(CPU, pos[0], tri, (16, 16))
    with pytest.raises(RenderInputError, match=r"\[F, 3\]"):
        rasterize(CPU, pos, tri.reshape(-1), (16, 16))
    with pytest.raises(RenderInputError, match="resolution"):
        rasterize(CPU, pos, tri, (16, 0))
    with pytest.raises(RenderInputError, match=r"\[B, V, 3\]"):
        render_maps(CPU, verts[None, :, :2], faces, cam)
    rast, _ = rasterize(CPU, pos, tri, (16, 16))
    with pytest.raises(RenderInputError, match="triangle ids"):
        interpolate(torch.zeros(4, 2), rast, tri[:1])
    with pytest.raises(RenderInputError, match="unknown render device"):
        get_context("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_request_without_gpu_is_a_clear_error_and_auto_falls_back():
    with pytest.raises(RenderInputError, match="no CUDA GPU"):
        get_context("cuda")
    assert get_context("auto").backend == "cpu"


# ----------------------------------------------------------------------------------------------------------
# CUDA (nvdiffrast) against the CPU backend: runs only where there is a GPU.


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_backend_matches_cpu():
    cuda = get_context("cuda")
    v, f = icosphere(5)
    # off-centre and squashed, on a non-square image: a flipped or transposed axis cannot match
    verts = (v * torch.tensor([0.45, 0.3, 0.4]) + torch.tensor([0.25, -0.2, 1.6]))[None]
    cam = PinholeCamera(fx=230.0, fy=250.0, cx=150.5, cy=100.25, width=320, height=224)
    ref = render_maps(CPU, verts, f, cam)
    got = render_maps(cuda, verts.cuda(), f.cuda(), cam)
    same = ((ref["depth"] > 0) == (got["depth"].cpu() > 0)).double().mean()
    assert float(same) > 0.999
    both = (ref["depth"] > 0) & (got["depth"].cpu() > 0)
    assert float((ref["depth"] - got["depth"].cpu()).abs()[both].max()) < 1e-3
    x = verts.cuda().requires_grad_()
    m = render_maps(cuda, x, f.cuda(), cam)
    (m["normal"].abs().sum() + m["depth"].sum() + m["mask"].sum()).backward()
    assert bool(torch.isfinite(x.grad).all())
    np.testing.assert_array_equal(encode_normals(got["normal"], got["mask"]).shape, (1, 224, 320, 3))


def test_fused_vertex_normals_match_meshops():
    """headrep.render.cpu.vertex_normals (render_maps' and the fitter's on CPU) computes meshops.vertex_normals
    up to float rounding (torch's CPU cross product fuses a multiply-add, ours rounds the product first), and
    its own backward kernel gives torch autograd's gradient of meshops' version and passes gradcheck's finite
    differences in float64, a degenerate face and unused vertices included."""
    from headrep.render.cpu import vertex_normals as fused

    v, f = icosphere(3)
    rng = np.random.default_rng(0)
    verts = (v[None] * torch.from_numpy(rng.uniform(0.8, 1.2, (3, 1, 3))).float()
             + 0.02 * torch.from_numpy(rng.standard_normal((3, v.shape[0], 3))).float())
    verts = torch.cat([verts, torch.zeros(3, 2, 3)], 1)      # two vertices used by no face: zero normals
    faces = torch.cat([f, torch.tensor([[0, 0, 1]])], 0)    # a zero-area face adds nothing
    g = torch.from_numpy(rng.standard_normal(verts.shape))
    for dtype in (torch.float64, torch.float32):
        for fi in (faces.int(), faces.long()):
            x = verts.to(dtype).requires_grad_(True)
            want = vertex_normals(x, fi)
            got = fused(x, fi)
            assert got.dtype == dtype and got.shape == want.shape
            assert torch.allclose(got, want, rtol=0, atol=2e-6 if dtype == torch.float32 else 1e-14)
            assert (got[:, -2:] == 0).all() and torch.allclose(got[:, :-2].norm(dim=-1), torch.ones(()).to(dtype))
            gw, = torch.autograd.grad((want * g.to(dtype)).sum(), x)
            gg, = torch.autograd.grad((got * g.to(dtype)).sum(), x)
            tol = 2e-4 * float(gw.abs().max()) if dtype == torch.float32 else 1e-10
            assert float((gg - gw).abs().max()) <= tol
    v1, f1 = icosphere(1)                                     # a small noisy sphere, and a [V,3] input too
    small = (v1.double() + 0.05 * torch.from_numpy(rng.standard_normal(v1.shape)))[None].requires_grad_(True)
    f1 = torch.cat([f1, torch.tensor([[0, 0, 1]])], 0)
    assert torch.autograd.gradcheck(lambda x: fused(x, f1), (small,))
    assert torch.autograd.gradcheck(lambda x: fused(x, f1), (small[0].detach().requires_grad_(True),))
    # render_maps with and without gradients: the same maps
    ctx = get_context("cpu")
    cam = PinholeCamera.from_fov(40, 48, 48)
    pos = (v * 0.3 + torch.tensor([0.0, 0.0, 1.5]))[None].double()
    with torch.no_grad():
        a = render_maps(ctx, pos, f, cam)
    b = render_maps(ctx, pos.clone().requires_grad_(True), f, cam)
    assert torch.allclose(a["normal"], b["normal"].detach(), rtol=0, atol=1e-12) and (a["mask"] > 0).any()
    assert torch.equal(a["depth"], b["depth"].detach())


def test_cpu_render_keeps_the_process_thread_count():
    """numba's OpenMP pool, when it starts, sets the process's OpenMP thread count to NUMBA_NUM_THREADS, and
    torch followed it: a process held to one thread ran torch on two after its first CPU render (and a fixed
    seed's float sums changed with it). A fresh process, so that no pool has started yet."""
    import os
    import subprocess
    import sys

    code = ("import torch\n"
            "from headrep.model.meshops import icosphere\n"
            "from headrep.render import PinholeCamera, get_context, render_maps\n"
            "before = torch.get_num_threads()\n"
            "v, f = icosphere(2)\n"
            "v = torch.as_tensor(v, dtype=torch.float32)[None] * 0.1 + torch.tensor([0.0, 0.0, 1.0])\n"
            "m = render_maps(get_context('cpu'), v, torch.as_tensor(f, dtype=torch.int32),\n"
            "                [PinholeCamera(100.0, 100.0, 31.5, 31.5, 64, 64)])\n"
            "assert float(m['mask'].sum()) > 100\n"
            "print(before, torch.get_num_threads())\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]
