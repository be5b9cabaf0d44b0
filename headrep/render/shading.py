"""Lambertian shading with second-order spherical-harmonics lighting: a static per-vertex albedo times a
per-frame light of the rendered camera-space normals.

SH basis (the one DECA, metrical-tracker and VHAP use), for a unit normal n = (x, y, z):
``[1, x, y, z, xy, xz, yz, x² − y², 3z² − 1] · [c0 … c8]`` with c = (1/√(4π), (2π/3)√(3/4π) ×3,
(3π/4)√(5/12π) ×3, (3π/8)√(5/12π), (π/8)√(5/4π)). A light is [9, C] (C colour channels); the shading of a
pixel is ``Σ_k basis_k(n) · light[k, c]``; a light of ``[1/c0, 0, …]`` shades every normal by exactly 1.
"""

from __future__ import annotations

import math

import torch

SH_CONST = torch.tensor([
    1 / math.sqrt(4 * math.pi),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (2 * math.pi / 3) * math.sqrt(3 / (4 * math.pi)),
    (3 * math.pi / 4) * math.sqrt(5 / (12 * math.pi)),
    (3 * math.pi / 4) * math.sqrt(5 / (12 * math.pi)),
    (3 * math.pi / 4) * math.sqrt(5 / (12 * math.pi)),
    (3 * math.pi / 8) * math.sqrt(5 / (12 * math.pi)),
    (math.pi / 8) * math.sqrt(5 / (4 * math.pi)),
])


def sh_basis(n: torch.Tensor) -> torch.Tensor:
    """[..., 9] second-order SH basis (with the constants) of unit normals [..., 3]."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    one = torch.ones_like(x)
    b = torch.stack([one, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], -1)
    return b * SH_CONST.to(n.dtype).to(n.device)


def shading(normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Shading [B,H,W,C] of normals [B,H,W,3] under per-frame lights [B,9,C]: Σ_k basis_k(n)·light[k], written
    out term by term (a [B,H,W,9] basis tensor and an einsum cost several times more per frame)."""
    L = (light * SH_CONST.to(light)[None, :, None])[:, None, None]      # [B,1,1,9,C], constants folded in
    x, y, z = normal[..., 0:1], normal[..., 1:2], normal[..., 2:3]     # [B,H,W,1] broadcast over C
    return (L[..., 0, :] + x * L[..., 1, :] + y * L[..., 2, :] + z * L[..., 3, :] + x * y * L[..., 4, :]
            + x * z * L[..., 5, :] + y * z * L[..., 6, :] + (x * x - y * y) * L[..., 7, :]
            + (3 * z * z - 1) * L[..., 8, :])


def neutral_light(T: int, channels: int) -> torch.Tensor:
    """Lights [T,9,C] that shade every normal by exactly 1."""
    light = torch.zeros(T, 9, channels)
    light[:, 0] = 1.0 / float(SH_CONST[0])
    return light


