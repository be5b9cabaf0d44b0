"""CUDA backend: a thin wrapper over ``nvdiffrast.torch``.

nvdiffrast is shipped by the registry package ``diffrp-nvdiffrast`` (``pip install 'headrep[cuda]'``); its
CUDA extension is compiled with nvcc on first use. Everything here is imported lazily so that CPU-only
machines never touch it.
"""

from __future__ import annotations

import torch

from headrep.errors import RenderInputError


def nvdiffrast_available() -> bool:
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:  # ImportError, or a broken build
        return False
    return True


def _dr():
    try:
        import nvdiffrast.torch as dr
    except Exception as exc:
        raise RenderInputError(
            "the CUDA renderer needs nvdiffrast: install it with `pip install 'headrep[cuda]'` "
            f"(package diffrp-nvdiffrast; needs nvcc at first use) - import failed: {exc}"
        ) from exc
    return dr


class CudaContext:
    """Holds an ``nvdiffrast.torch.RasterizeCudaContext`` on one CUDA device."""

    backend = "cuda"

    def __init__(self, device: torch.device | str | None = None):
        if not torch.cuda.is_available():
            raise RenderInputError("device='cuda' was asked for, but torch sees no CUDA GPU on this machine; "
                                   "use device='cpu' or 'auto'")
        dr = _dr()
        self.device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        try:  # the first context compiles nvdiffrast's CUDA plugin (nvcc + ninja), which can fail
            self.glctx = dr.RasterizeCudaContext(device=self.device)
        except Exception as exc:
            raise RenderInputError(
                f"could not start nvdiffrast on {self.device} (its CUDA plugin is compiled on first use and "
                f"needs nvcc and ninja): {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"CudaContext(device={self.device})"



_TOPOLOGY_HASHES: dict = {}


def _topology_hash(tri: torch.Tensor):
    """nvdiffrast's edge hash of ``tri``, cached per tensor (the mesh topology rarely changes)."""
    key = (tri.data_ptr(), tri._version, tuple(tri.shape), str(tri.device))
    hit = _TOPOLOGY_HASHES.get(key)
    if hit is None or hit[0] is not tri:
        if len(_TOPOLOGY_HASHES) > 8:
            _TOPOLOGY_HASHES.clear()
        hit = (tri, _dr().antialias_construct_topology_hash(tri))
        _TOPOLOGY_HASHES[key] = hit
    return hit[1]


def rasterize(ctx: CudaContext, pos: torch.Tensor, tri: torch.Tensor, resolution):
    dr = _dr()
    return dr.rasterize(ctx.glctx, pos.contiguous(), tri.contiguous(),
                        resolution=[int(resolution[0]), int(resolution[1])])


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor, rast_db=None, diff_attrs=None):
    dr = _dr()
    return dr.interpolate(attr.contiguous(), rast, tri.contiguous(), rast_db=rast_db, diff_attrs=diff_attrs)


def antialias(color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor, tri: torch.Tensor,
              topology_hash=None, pos_gradient_boost: float = 1.0):
    dr = _dr()
    tri = tri.contiguous()
    if topology_hash is None:
        topology_hash = _topology_hash(tri)
    return dr.antialias(color.contiguous(), rast, pos.contiguous(), tri, topology_hash=topology_hash,
                        pos_gradient_boost=pos_gradient_boost)
