"""Differentiable rasterizer with nvdiffrast's API and conventions, on CPU (numba) or CUDA (nvdiffrast).

One code path serves both backends::

    ctx = get_context("auto")                      # CudaContext if a GPU and nvdiffrast are there, else CpuContext
    rast, rast_db = rasterize(ctx, pos, tri, (H, W))   # pos [B, V, 4] clip space, tri [F, 3] int32
    out, _ = interpolate(attr, rast, tri)          # attr [B, V, C] or [V, C] -> [B, H, W, C]
    color = antialias(color, rast, pos, tri)       # analytic silhouette antialiasing (gradients to pos)

Conventions (nvdiffrast's): pixel (row j, column i) has its centre at x_ndc = (2i+1)/W - 1,
y_ndc = (2j+1)/H - 1, so image row 0 is y_ndc = -1. ``rast[..., 0:2]`` are the perspective-correct
barycentrics (u, v) (the weights of tri[:, 0] and tri[:, 1]), ``rast[..., 2]`` is z/w and ``rast[..., 3]``
the triangle index + 1 (0 where no triangle covers the pixel centre). No back-face culling; the smallest z/w
wins. The CPU backend clips per pixel (see :mod:`headrep.render.cpu`) and returns ``rast_db`` as zeros (a
read-only broadcast view of one zero): image-space derivatives are not produced on CPU, and
``interpolate``'s ``out_da`` is always empty (no ``rast_db`` / ``diff_attrs`` support).

Camera-level helpers (OpenCV pinhole camera, normal/depth/mask maps) live in :mod:`headrep.render.maps`
and are re-exported here.
"""

from __future__ import annotations

import warnings

import torch

from headrep.errors import RenderInputError

__all__ = [
    "CpuContext", "get_context", "rasterize", "interpolate", "interpolate_with", "antialias", "check_faces",
    "PinholeCamera", "render_maps", "encode_normals", "encode_depth", "neutral_light", "sh_basis", "shading",
    "surface_normals",
]


class CpuContext:
    """Context of the numba CPU backend (stateless; kept for API symmetry with nvdiffrast)."""

    backend = "cpu"
    device = torch.device("cpu")

    def __repr__(self) -> str:
        return "CpuContext()"


def cuda_available() -> bool:
    """True when torch sees a CUDA GPU and nvdiffrast can be imported."""
    if not torch.cuda.is_available():
        return False
    from headrep.render.cuda import nvdiffrast_available

    return nvdiffrast_available()


def get_context(device="auto"):
    """A rendering context: "auto" (CUDA when a GPU and nvdiffrast are there, else CPU), "cpu", "cuda"
    (or "cuda:N"); "torch" gives the slow pure-torch reference rasterizer used as a test oracle."""
    name = str(device).lower() if device is not None else "auto"
    if name == "auto":
        if cuda_available():
            from headrep.render.cuda import CudaContext

            try:
                return CudaContext()
            except RenderInputError as exc:  # e.g. nvdiffrast's plugin does not compile here
                warnings.warn(f"falling back to the CPU renderer: {exc}", RuntimeWarning, stacklevel=2)
        return CpuContext()
    if name == "cpu":
        return CpuContext()
    if name == "torch":
        from headrep.render.oracle import TorchContext

        return TorchContext()
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RenderInputError(
                f"device={device!r} was asked for, but this machine has no CUDA GPU visible to torch "
                "(torch.cuda.is_available() is False); use device='cpu' or 'auto'"
            )
        from headrep.render.cuda import CudaContext

        return CudaContext(name if ":" in name else None)
    raise RenderInputError(f"unknown render device {device!r}; expected 'auto', 'cpu' or 'cuda'")


# ----------------------------------------------------------------------------------------------------------
# Input checks: malformed input raises RenderInputError with a clear message.


def _check_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise RenderInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def _check_float(x: torch.Tensor, name: str, finite: bool = True) -> None:
    if x.dtype not in (torch.float32, torch.float64):
        raise RenderInputError(f"{name} must be float32 or float64, got {x.dtype}")
    if finite and x.numel() and not bool(torch.isfinite(x.detach()).all()):
        raise RenderInputError(f"{name} contains NaN or infinite values")


def _check_pos(pos) -> torch.Tensor:
    pos = _check_tensor(pos, "pos")
    if pos.dim() != 3 or pos.shape[-1] != 4:
        raise RenderInputError(f"pos must be [B, V, 4] clip-space positions, got shape {tuple(pos.shape)}")
    _check_float(pos, "pos")
    return pos


_TRI_CACHE: dict = {}


def check_faces(tri, num_vertices: int, device: torch.device) -> torch.Tensor:
    """Validated contiguous int32 copy of ``tri`` (cached per tensor: meshes are rendered many times)."""
    tri = _check_tensor(tri, "tri")
    key = (tri.data_ptr(), tri._version, tuple(tri.shape), tri.dtype, str(tri.device), int(num_vertices), str(device))
    hit = _TRI_CACHE.get(key)
    if hit is not None and hit[0] is tri:
        return hit[1]
    checked = _check_tri_uncached(tri, num_vertices, device)
    if len(_TRI_CACHE) >= 16:
        _TRI_CACHE.clear()
    _TRI_CACHE[key] = (tri, checked)
    return checked


def _check_tri_uncached(tri: torch.Tensor, num_vertices: int, device: torch.device) -> torch.Tensor:
    if tri.dtype not in (torch.int32, torch.int64):
        raise RenderInputError(f"tri must hold integer vertex indices (int32), got {tri.dtype}")
    if tri.dim() != 2 or tri.shape[1] != 3:
        raise RenderInputError(f"tri must be [F, 3], got shape {tuple(tri.shape)}")
    if tri.numel():
        lo, hi = int(tri.min()), int(tri.max())
        if lo < 0 or hi >= num_vertices:
            raise RenderInputError(
                f"tri indexes vertices {lo}..{hi} but there are only {num_vertices} vertices "
                f"(valid: 0..{num_vertices - 1})"
            )
    if tri.device != device:
        raise RenderInputError(f"tri is on {tri.device} but the positions are on {device}")
    return tri.to(torch.int32).contiguous()


def _check_resolution(resolution) -> tuple[int, int]:
    try:
        H, W = (int(r) for r in resolution)
    except (TypeError, ValueError):
        raise RenderInputError(f"resolution must be (height, width), got {resolution!r}") from None
    if H <= 0 or W <= 0:
        raise RenderInputError(f"resolution must be positive, got {(H, W)}")
    return H, W


def _check_rast(rast) -> torch.Tensor:
    rast = _check_tensor(rast, "rast")
    if rast.dim() != 4 or rast.shape[-1] != 4:
        raise RenderInputError(f"rast must be [B, H, W, 4] (the output of rasterize), got {tuple(rast.shape)}")
    _check_float(rast, "rast", finite=False)
    return rast


def _check_ids(rast: torch.Tensor, num_triangles: int) -> None:
    """Triangle ids in rast must index ``tri`` (rast from another mesh would read out of bounds)."""
    if rast.numel():
        hi = float(rast[..., 3].detach().max())
        lo = float(rast[..., 3].detach().min())
        if not (lo >= 0 and hi <= num_triangles):
            raise RenderInputError(
                f"rast holds triangle ids up to {hi:g} but tri has {num_triangles} triangles; "
                "pass the tri that was rasterized"
            )


def _cpu_only(*tensors: torch.Tensor) -> None:
    for t in tensors:
        if t.device.type != "cpu":
            raise RenderInputError(
                f"the CPU renderer got a tensor on {t.device}; move it to the CPU or use the CUDA context"
            )


# ----------------------------------------------------------------------------------------------------------
# Public API.


def rasterize(ctx, pos: torch.Tensor, tri: torch.Tensor, resolution):
    """Rasterize clip-space triangles: ``(rast [B, H, W, 4], rast_db [B, H, W, 4])`` (see module docs).

    Differentiable w.r.t. ``pos`` through rast's (u, v, z/w). On CPU, ``rast_db`` is a zeros tensor.
    """
    pos = _check_pos(pos)
    tri = check_faces(tri, pos.shape[1], pos.device)
    H, W = _check_resolution(resolution)
    backend = getattr(ctx, "backend", None)
    if backend == "cpu":
        _cpu_only(pos)
        from headrep.render import cpu

        rast = cpu.rasterize(pos.contiguous(), tri, (H, W))
        return rast, torch.zeros((), dtype=rast.dtype).expand(rast.shape)
    if backend == "torch":
        from headrep.render import oracle

        return oracle.rasterize(ctx, pos, tri, (H, W))
    if backend == "cuda":
        from headrep.render import cuda

        if pos.dtype != torch.float32:
            raise RenderInputError("the CUDA renderer (nvdiffrast) needs float32 positions")
        return cuda.rasterize(ctx, pos, tri, (H, W))
    raise RenderInputError(f"ctx must come from get_context(), got {ctx!r}")


def _check_interp(attr, rast, tri):
    attr = _check_tensor(attr, "attr")
    rast = _check_rast(rast)
    if attr.dim() == 2:
        attr = attr[None]
    if attr.dim() != 3:
        raise RenderInputError(f"attr must be [B, V, C] or [V, C], got shape {tuple(attr.shape)}")
    if attr.shape[0] not in (1, rast.shape[0]):
        raise RenderInputError(f"attr has batch {attr.shape[0]} but rast has batch {rast.shape[0]}")
    _check_float(attr, "attr")
    tri = check_faces(tri, attr.shape[1], attr.device)
    if rast.device != attr.device:
        raise RenderInputError(f"attr is on {attr.device} but rast is on {rast.device}")
    if attr.device.type == "cpu":
        _check_ids(rast, tri.shape[0])
    return attr, rast, tri


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, rast_db=None, diff_attrs=None):
    """Interpolate vertex attributes: ``(out [B, H, W, C], out_da)``; zeros where no triangle; out_da empty.

    Differentiable w.r.t. ``attr`` and, through rast's (u, v), w.r.t. the vertex positions. ``rast_db`` and
    ``diff_attrs`` (attribute image-space derivatives) are passed to nvdiffrast on CUDA; on CPU
    ``diff_attrs`` is not supported.
    """
    attr, rast, tri = _check_interp(attr, rast, tri)
    if attr.device.type == "cuda":
        from headrep.render import cuda

        return cuda.interpolate(attr, rast, tri, rast_db=rast_db, diff_attrs=diff_attrs)
    if diff_attrs is not None:
        raise RenderInputError("attribute image-space derivatives (diff_attrs) are only available on CUDA")
    from headrep.render import cpu

    return cpu.interpolate(attr.contiguous(), rast, tri), attr.new_empty(0)


def interpolate_with(ctx, attr, rast, tri):
    """interpolate() through a context: the pure-torch path for the torch reference context, else the same as
    interpolate() (which picks the backend from the tensors' device)."""
    if getattr(ctx, "backend", None) == "torch":
        from headrep.render import oracle

        attr, rast, tri = _check_interp(attr, rast, tri)
        return oracle.interpolate(attr, rast, tri)
    return interpolate(attr, rast, tri)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology_hash=None, pos_gradient_boost: float = 1.0) -> torch.Tensor:
    """nvdiffrast-style analytic antialiasing of ``color`` [B, H, W, C] at silhouette edges.

    Where horizontally or vertically adjacent pixels show different triangles, a silhouette edge of the
    front triangle that crosses the segment between the pixel centres blends the two colours by the crossing
    position; gradients flow to ``color`` and to the edge's endpoints in ``pos`` (scaled by
    ``pos_gradient_boost``). The mesh topology (edge -> opposite vertices) is cached per ``tri`` tensor on
    both backends; ``topology_hash`` is passed to nvdiffrast on CUDA and ignored on CPU.
    """
    color = _check_tensor(color, "color")
    rast = _check_rast(rast)
    pos = _check_pos(pos)
    tri = check_faces(tri, pos.shape[1], pos.device)
    if color.dim() != 4 or tuple(color.shape[:3]) != tuple(rast.shape[:3]):
        raise RenderInputError(f"color must be [B, H, W, C] matching rast {tuple(rast.shape[:3])}, "
                               f"got {tuple(color.shape)}")
    if pos.shape[0] != rast.shape[0]:
        raise RenderInputError(f"pos has batch {pos.shape[0]} but rast has batch {rast.shape[0]}")
    _check_float(color, "color", finite=False)
    if color.device.type == "cuda":
        from headrep.render import cuda

        return cuda.antialias(color, rast, pos, tri, topology_hash, pos_gradient_boost)
    _cpu_only(color, rast, pos)
    _check_ids(rast, tri.shape[0])
    from headrep.render import cpu

    return cpu.antialias(color, rast, pos, tri, float(pos_gradient_boost))


from headrep.render.maps import (PinholeCamera, encode_depth, encode_normals, render_maps,  # noqa: E402
                                 surface_normals)
from headrep.render.shading import neutral_light, sh_basis, shading  # noqa: E402
