"""The dense head: body model restricted to S, upsampled by U, plus offset fields, posed by dense LBS.

    V_t = LBS( U · M_S(β, ψ_t, θ_t) + D_static + D_dyn,t ;  W_dense = U · W_S ;  pose_t ) + transl_t

M_S is the unposed SMPL-X mesh (template + shape + expression + pose correctives) on the subset S; the
offsets live in the canonical (unposed) space so they move with the head. This module composes
`headrep.model.body` and `headrep.model.topology`; it holds no per-video state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headrep.model.body import BodyModel, blend_transforms, skin
from headrep.model.topology import DenseTopology, build_dense_topology, largest_component, submesh


# Model space is SMPL-X's (y up, z toward the viewer); camera space is OpenCV's (y down, z away from the
# viewer). Fitted heads carry their global rotation and translation in model space, so model -> camera is
# this fixed flip for every rep, render and fit.
MODEL_TO_CAMERA = (1.0, -1.0, -1.0)


def to_camera(points_model: torch.Tensor) -> torch.Tensor:
    """Model space (posed, translated) -> OpenCV camera space: multiply by MODEL_TO_CAMERA."""
    return points_model * torch.tensor(MODEL_TO_CAMERA, dtype=points_model.dtype, device=points_model.device)


@dataclass
class DenseOutput:
    vertices: torch.Tensor    # [B, Nd, 3] posed dense vertices
    canonical: torch.Tensor   # [B, Nd, 3] unposed dense vertices with offsets
    body: object              # the coarse BodyOutput (landmarks, joints, transforms)
    base: torch.Tensor | None = None  # [B, Nd, 3] posed without the dynamic offsets (``base=True``)


class DenseHead(torch.nn.Module):
    """Dense head-and-shoulders mesh of a body model at `levels` of midpoint subdivision."""

    def __init__(self, body: BodyModel, levels: int = 1):
        super().__init__()
        if levels not in (0, 1, 2):
            raise ValueError(f"subdivision levels must be 0, 1 or 2, got {levels}")
        self.body = body
        self.levels = levels
        self.subset = body.subset
        self.base_faces, _ = submesh(body.faces, self.subset)   # the base mesh on S, which U subdivides
        self.topology: DenseTopology = build_dense_topology(self.base_faces, len(self.subset), levels)
        self.faces = self.topology.faces
        W_S = body.smplx.lbs_weights.detach()[torch.as_tensor(self.subset)]
        self.register_buffer("weights", self.topology.dense_weights(W_S).to(body.dtype))
        self.register_buffer("subset_t", torch.as_tensor(self.subset, dtype=torch.long))
        self.register_buffer("faces_t", torch.as_tensor(self.faces.astype(np.int32)))
        self.face_mask = self.topology.dense_mask(body.face_mask[self.subset], rule="all")
        # where offsets may live: the skin, not the eyeballs or tongue a model carries as separate pieces (an
        # offset there pushes an eyeball through its lids)
        self.surface_mask = largest_component(self.faces, self.num_vertices)

    @property
    def num_vertices(self) -> int:
        return self.topology.num_dense

    def forward(self, betas: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
                transl: torch.Tensor | None = None, static_offsets: torch.Tensor | None = None,
                dynamic_offsets: torch.Tensor | None = None, base: bool = False) -> DenseOutput:
        """Posed dense vertices. static_offsets [Nd,3] (shared), dynamic_offsets [B,Nd,3] (per frame);
        ``base``: also the vertices posed without the dynamic offsets (same skinning transforms)."""
        out = self.body(betas, expression, pose, transl=transl, vertex_ids=self.subset_t)
        canonical = self.topology.upsample(out.canonical)
        if static_offsets is not None:
            canonical = canonical + static_offsets
        without = canonical
        if dynamic_offsets is not None:
            canonical = canonical + dynamic_offsets
        T = blend_transforms(self.weights, out.transforms)
        verts = skin(canonical, self.weights, out.transforms, blended=T)
        shift = 0.0 if transl is None else transl[:, None]
        rest = None
        if base:
            rest = verts if dynamic_offsets is None else skin(without, self.weights, out.transforms, blended=T)
            rest = rest + shift
        return DenseOutput(verts + shift, canonical, out, rest)
