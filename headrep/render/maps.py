"""Pinhole camera and normal / depth / mask maps: what the rest of the project renders with.

Image convention (the whole project): OpenCV camera - x right, y down, z forward, camera at the origin
looking down +z. Intrinsics are in pixels; pixel (row r, column c) has its centre at the continuous image
coordinates (u=c, v=r) (OpenCV's integer-centre convention) and image row 0 is the TOP of the image.

Clip-space mapping: nvdiffrast puts pixel column i at x_ndc = (2i+1)/W - 1 and row j at y_ndc = (2j+1)/H - 1
(row 0 at y_ndc = -1, stored first). With u = fx X/Z + cx and v = fy Y/Z + cy we want column u and row v, so
x_ndc = (2u+1)/W - 1 and y_ndc = (2v+1)/H - 1 - no y flip, since row 0 of the returned tensor is the
top of the image (checked by tests/test_render.py). With w = Z:

    x_clip = (2 fx X + (2 cx + 1 - W) Z) / W
    y_clip = (2 fy Y + (2 cy + 1 - H) Z) / H
    z_clip = ((far + near) Z - 2 far near) / (far - near)   (z/w = -1 at Z=near, +1 at Z=far)
    w_clip = Z
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from headrep.errors import RenderInputError
from headrep.model.meshops import vertex_normals


def surface_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals of verts [B,V,3] or [V,3] (meshops.vertex_normals), differentiable:
    on CPU tensors by the CPU backend's fused numba kernels, elsewhere by torch."""
    if verts.device.type == "cpu":
        from headrep.render.cpu import vertex_normals as fused_vertex_normals

        return fused_vertex_normals(verts, faces)
    return vertex_normals(verts, faces)


@dataclass
class PinholeCamera:
    """OpenCV pinhole camera with intrinsics in pixels and an image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    near: float = 0.01
    far: float = 100.0

    def __post_init__(self):
        if not (self.width > 0 and self.height > 0):
            raise RenderInputError(f"camera image size must be positive, got {self.width}x{self.height}")
        if not (0 < self.near < self.far):
            raise RenderInputError(f"camera needs 0 < near < far, got near={self.near}, far={self.far}")
        if not (self.fx != 0 and self.fy != 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise RenderInputError(f"camera focal lengths must be finite and non-zero, got {self.fx}, {self.fy}")

    @classmethod
    def from_fov(cls, fov_deg: float, width: int, height: int, near: float = 0.01, far: float = 100.0,
                 axis: str = "y") -> "PinholeCamera":
        """Square-pixel camera centred on the image with ``fov_deg`` the full field of view along ``axis``
        ("y": vertical, the default; "x": horizontal)."""
        if not 0 < fov_deg < 180:
            raise RenderInputError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
        span = height if axis == "y" else width
        f = 0.5 * span / math.tan(math.radians(fov_deg) / 2)
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height), near, far)

    @property
    def resolution(self) -> tuple[int, int]:
        return int(self.height), int(self.width)

    def project(self, points_cam: torch.Tensor):
        """Pixel coordinates ``uv`` [..., 2] (u = column, v = row) and depth [...] (camera z) of points [..., 3]."""
        p = torch.as_tensor(points_cam)
        X, Y, Z = p[..., 0], p[..., 1], p[..., 2]
        uv = torch.stack([self.fx * X / Z + self.cx, self.fy * Y / Z + self.cy], -1)
        return uv, Z

    def to_clip(self, points_cam: torch.Tensor) -> torch.Tensor:
        """Clip-space positions [B, V, 4] for nvdiffrast-style rasterisation of camera points [B, V, 3]."""
        p = torch.as_tensor(points_cam)
        X, Y, Z = p[..., 0], p[..., 1], p[..., 2]
        W, H = float(self.width), float(self.height)
        n, f = float(self.near), float(self.far)
        xc = (2 * self.fx * X + (2 * self.cx + 1 - W) * Z) / W
        yc = (2 * self.fy * Y + (2 * self.cy + 1 - H) * Z) / H
        zc = ((f + n) * Z - 2 * f * n) / (f - n)
        return torch.stack([xc, yc, zc, Z], -1)


def _clip_positions(verts_cam: torch.Tensor, camera) -> tuple[torch.Tensor, tuple[int, int]]:
    """Clip positions [B, V, 4] for one camera or a sequence of B cameras (same image size)."""
    cams = list(camera) if isinstance(camera, (list, tuple)) else [camera]
    for c in cams:
        if not isinstance(c, PinholeCamera):
            raise RenderInputError(f"camera must be a PinholeCamera or a list of them, got {type(c).__name__}")
    if not cams:
        raise RenderInputError("camera list is empty")
    sizes = {c.resolution for c in cams}
    if len(sizes) != 1:
        raise RenderInputError(f"all cameras of a batch must share one image size, got {sorted(sizes)}")
    if len(cams) == 1:
        return cams[0].to_clip(verts_cam), cams[0].resolution
    if len(cams) != verts_cam.shape[0]:
        raise RenderInputError(f"got {len(cams)} cameras for a batch of {verts_cam.shape[0]} meshes")
    pos = torch.cat([c.to_clip(verts_cam[i:i + 1]) for i, c in enumerate(cams)], 0)
    return pos, cams[0].resolution


def render_maps(ctx, verts_cam: torch.Tensor, faces: torch.Tensor, camera, antialias: bool = True,
                attributes: dict[str, torch.Tensor] | None = None, attributes_fixed_coverage: bool = False,
                normals: torch.Tensor | None = None, surface: torch.Tensor | None = None) -> dict:
    """Normal, depth and mask maps of a mesh in OpenCV camera space, differentiable w.r.t. ``verts_cam``.

    verts_cam [B, V, 3] (or [V, 3]) metres, faces [F, 3] wound counter-clockwise seen from outside;
    ``camera`` is one PinholeCamera, or a list of B of them (one per batch element, same image size).
    Returns ``normal`` [B, H, W, 3] (camera-space unit normals, area-weighted vertex normals interpolated
    and renormalised; a surface facing the camera has n_z < 0), ``depth`` [B, H, W] (camera z in metres,
    perspective-correct; 0 where empty) and ``mask`` [B, H, W] (coverage in [0, 1]; antialiased at the
    silhouette when ``antialias``, which also gives the silhouette gradients w.r.t. the vertices). Normals
    and depth are not antialiased (blending them with the empty background would corrupt them).

    ``attributes``: extra per-vertex values {name: [V, C] or [B, V, C]} (a region mask, an albedo) are
    interpolated in the same pass and returned under their names as [B, H, W, C] (0 where empty). The
    rasterisation is returned too, as ``rast`` [B, H, W, 4], for callers that look up triangles.
    ``attributes_fixed_coverage=True``: the attributes are interpolated with the rasterisation detached, so
    their gradients reach the attribute values only, not the vertex positions through the barycentrics (a
    shading term then moves geometry through the normals it is given, not by sliding the image).
    ``normals``: the vertex normals [B, V, 3] of ``verts_cam`` when the caller has them already (the fitter's
    shading needs them too), so they are not computed twice.
    ``surface``: other vertex positions [B, V, 3] of the same mesh whose normals and depth the ``normal`` and
    ``depth`` maps show, over the coverage of ``verts_cam`` (``normals`` are then the surface's): the fitter
    compares MediaPipe's coarse mesh with its geometry without D_dyn while the image sees all of it. The maps'
    gradients through the rasterisation (the barycentrics, the antialiased outline) then reach ``surface``,
    not ``verts_cam − surface``: a target for the surface cannot move what the surface leaves out.
    """
    from headrep.render import antialias as _antialias
    from headrep.render import check_faces, interpolate_with, rasterize

    if not isinstance(verts_cam, torch.Tensor):
        raise RenderInputError(f"verts_cam must be a torch.Tensor, got {type(verts_cam).__name__}")
    if verts_cam.dim() == 2:
        verts_cam = verts_cam[None]
    if verts_cam.dim() != 3 or verts_cam.shape[-1] != 3:
        raise RenderInputError(f"verts_cam must be [B, V, 3], got shape {tuple(verts_cam.shape)}")
    if verts_cam.dtype not in (torch.float32, torch.float64):
        raise RenderInputError(f"verts_cam must be float32 or float64, got {verts_cam.dtype}")
    if verts_cam.numel() and not bool(torch.isfinite(verts_cam.detach()).all()):
        raise RenderInputError("verts_cam contains NaN or infinite values")
    faces = check_faces(faces, verts_cam.shape[1], verts_cam.device)
    pos, resolution = _clip_positions(verts_cam, camera)
    geometry = verts_cam
    if surface is not None:
        geometry = surface[None] if surface.dim() == 2 else surface
        if geometry.shape[1:] != verts_cam.shape[1:] or geometry.shape[0] not in (1, verts_cam.shape[0]):
            raise RenderInputError(f"surface must be shaped like verts_cam {tuple(verts_cam.shape)}, "
                                   f"got {tuple(surface.shape)}")
        geometry = geometry.expand_as(verts_cam)
        # the coverage is verts_cam's, its gradients the surface's: where a pixel's barycentrics would move
        # with verts_cam − surface (the fitter's D_dyn), the depth and normal targets pulled on D_dyn by
        # sliding the surface under the pixels (synthetic wrinkles, D_dyn fitted alone with all else at the
        # truth: correlation 0.61 before, 0.76 now)
        pos_surface, _ = _clip_positions(geometry, camera)
        pos = pos_surface + (pos - pos_surface).detach()
    rast, _ = rasterize(ctx, pos, faces, resolution)
    B, V = verts_cam.shape[:2]
    extra = []
    for name, a in (attributes or {}).items():
        a = torch.as_tensor(a, device=verts_cam.device).to(verts_cam.dtype)
        a = a[None] if a.dim() == 2 else a
        if a.dim() != 3 or a.shape[1] != V:
            raise RenderInputError(f"attribute {name!r} must be [V, C] or [B, V, C] with V={V}, got {tuple(a.shape)}")
        extra.append((name, a.expand(B, -1, -1)))
    if normals is not None:
        vn = normals[None] if normals.dim() == 2 else normals
        if vn.shape != verts_cam.shape:
            raise RenderInputError(f"normals must be shaped like verts_cam {tuple(verts_cam.shape)}, "
                                   f"got {tuple(vn.shape)}")
    elif getattr(ctx, "backend", None) == "cpu":
        vn = surface_normals(geometry, faces)  # fused numba passes instead of torch's cross and index_adds
    else:  # the torch reference rasteriser (a test oracle) keeps torch's own
        vn = vertex_normals(geometry, faces)
    attr = torch.cat([vn, geometry[..., 2:3]]
                     + ([] if attributes_fixed_coverage else [a for _, a in extra]), -1)
    out, _ = interpolate_with(ctx, attr, rast, faces)
    # split, not sliced: a slice's backward fills a zero tensor of the whole [B,H,W,C] per slice (4 of them
    # per fitter step, ~10 % of its time at 256²); split's backward concatenates the pieces' gradients once
    pieces = list(torch.split(out, [3, 1] + ([] if attributes_fixed_coverage else [a.shape[-1] for _, a in extra]),
                              -1))
    if attributes_fixed_coverage and extra:
        fixed, _ = interpolate_with(ctx, torch.cat([a for _, a in extra], -1), rast.detach(), faces)
        pieces += list(torch.split(fixed, [a.shape[-1] for _, a in extra], -1))
    hard = (rast[..., 3:4] > 0).to(verts_cam.dtype)
    n = pieces[0]
    if n.device.type == "cpu" and getattr(ctx, "backend", None) == "cpu":
        from headrep.render.cpu import normalize

        n = normalize(n, 1e-20)  # fused numba kernels, same maths as below
    else:
        n = n * torch.rsqrt((n * n).sum(-1, keepdim=True).clamp_min(1e-20))  # empty pixels stay 0
    depth = pieces[1][..., 0]
    if antialias:
        mask = _antialias(hard, rast, pos, faces)[..., 0]
    else:
        mask = hard[..., 0]
    maps = {"normal": n, "depth": depth, "mask": mask, "rast": rast}
    for (name, _), piece in zip(extra, pieces[2:]):
        maps[name] = piece
    return maps


def encode_normals(normal: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 RGB [..., 3] = (n + 1) / 2 * 255, weighted by ``mask`` (black background) - for PNGs / video."""
    rgb = (normal.detach().float().clamp(-1, 1) + 1) * 0.5 * 255
    if mask is not None:
        rgb = rgb * mask.detach().float().clamp(0, 1)[..., None]
    return rgb.round().clamp(0, 255).to(torch.uint8).cpu()


def encode_depth(depth: torch.Tensor, mask: torch.Tensor | None = None, near: float | None = None,
                 far: float | None = None) -> torch.Tensor:
    """uint8 grey [...]: near -> 255, far -> 32, background (mask 0) -> 0.

    The range defaults to the min / max depth of the covered pixels (over the whole tensor, so frames of a
    video share it only when ``near`` / ``far`` are given)."""
    d = depth.detach().float()
    m = (d > 0) if mask is None else (mask.detach().float() > 0) & (d > 0)
    if not bool(m.any()):
        return torch.zeros(d.shape, dtype=torch.uint8)
    lo = float(d[m].min()) if near is None else float(near)
    hi = float(d[m].max()) if far is None else float(far)
    t = ((d - lo) / max(hi - lo, 1e-12)).clamp(0, 1)
    grey = 255.0 - 223.0 * t
    cover = m.float() if mask is None else mask.detach().float().clamp(0, 1) * (d > 0).float()
    return (grey * cover).round().clamp(0, 255).to(torch.uint8).cpu()
