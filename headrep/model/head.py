"""The dense head: body model restricted to S, upsampled by U, plus offset fields, posed by dense LBS.

    V_t = LBS( U · M_S(β, ψ_t, θ_t) + D_static + D_dyn,t ;  W_dense = U · W_S ;  pose_t ) + transl_t

M_S is the unposed SMPL-X mesh (template + shape + expression + pose correctives) on the subset S; the
offsets live in the canonical (unposed) space so they move with the head. With ``hair_hangs`` the part of
D_static below the ears hangs: there its offset turns with the head's yaw only, not with its roll or pitch
(long hair falls straight while the head tilts; a head whose hair turned with it swung the hair out on one
side and left the other bare), blended in by a weight that grows from 0 to 1 downwards:

    V_t += h · (R_yaw,t · S_t − R_t) · D_static        (R_t the vertex's skinning rotation, h ∈ [0,1])

S_t is the hair's swing (``hair_swing``, a per-frame rotation in the head's yaw frame; identity when not
given): long hair moves on its own, lying forward over a shoulder on one frame and behind it on the next, which
no single D_static can follow (WolfgangLanger: posed on a fit made without it, one rotation shared by all
frames gained nothing, one per frame lifted the head IoU from 0.943 to 0.955; fitted with it, 0.959).

This module composes `headrep.model.body` and `headrep.model.topology`; it holds no per-video state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from headrep.model.body import BodyModel, axis_angle_to_matrix, blend_transforms, skin
from headrep.model.constants import J_HEAD
from headrep.model.topology import DenseTopology, build_dense_topology, largest_component, submesh


# Model space is SMPL-X's (y up, z toward the viewer); camera space is OpenCV's (y down, z away from the
# viewer). Fitted heads carry their global rotation and translation in model space, so model -> camera is
# this fixed flip for every rep, render and fit.
MODEL_TO_CAMERA = (1.0, -1.0, -1.0)

#: hanging hair (rest pose, metres): D_static starts to hang this far above the face region's mean height (the
#: ears' level) and hangs fully this much lower (WolfgangLanger: 0.03 / 0.06 gave head IoU 0.943, level 0.947 /
#: tilted 0.924, against 0.937 / 0.946 / 0.893 turning with the head; 0 / 0.06 and 0 / 0.03 were worse posed
#: on the same fit)
HANG_TOP = 0.03
HANG_SPAN = 0.06


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

    def __init__(self, body: BodyModel, levels: int = 1, hair_hangs: bool = False):
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
        self.hair_hangs = bool(hair_hangs)
        # a rest-pose forward of the body: only for a head whose hair hangs
        self.register_buffer("hang_weights", self._hang_weights() if self.hair_hangs else None)

    def _hang_weights(self) -> torch.Tensor:
        """[Nd] how far each vertex's D_static hangs (see the module docstring): 0 on the face and down to
        HANG_TOP above the face region's mean height, 1 from HANG_SPAN lower, off the separate pieces."""
        with torch.no_grad():
            rest = self.body.zero_params(1)
            out = self.body(rest["betas"], rest["expression"], rest["pose"], vertex_ids=self.subset_t)
            y = self.topology.upsample(out.canonical)[0, :, 1]
        face = torch.as_tensor(self.face_mask)
        top = y[face].mean() + HANG_TOP
        h = ((top - y) / HANG_SPAN).clamp(0, 1)
        return (h * (~face) * torch.as_tensor(self.surface_mask)).to(self.weights.dtype)

    @property
    def num_vertices(self) -> int:
        return self.topology.num_dense

    def forward(self, betas: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
                transl: torch.Tensor | None = None, static_offsets: torch.Tensor | None = None,
                dynamic_offsets: torch.Tensor | None = None, base: bool = False,
                hair_swing: torch.Tensor | None = None) -> DenseOutput:
        """Posed dense vertices. static_offsets [Nd,3] (shared), dynamic_offsets [B,Nd,3] (per frame);
        ``base``: also the vertices posed without the dynamic offsets (same skinning transforms); hair_swing
        [B,3] (axis-angle, radians): the hanging hair's swing S_t (a head whose hair hangs only)."""
        if hair_swing is not None and not self.hair_hangs:
            raise ValueError("hair_swing needs a head whose hair hangs (DenseHead(..., hair_hangs=True))")
        out = self.body(betas, expression, pose, transl=transl, vertex_ids=self.subset_t)
        canonical = self.topology.upsample(out.canonical)
        if static_offsets is not None:
            canonical = canonical + static_offsets
        without = canonical
        if dynamic_offsets is not None:
            canonical = canonical + dynamic_offsets
        T = blend_transforms(self.weights, out.transforms)
        verts = skin(canonical, self.weights, out.transforms, blended=T)
        hang = 0.0
        if self.hair_hangs and static_offsets is not None:
            hang = self._hang(static_offsets, T, out.transforms, hair_swing)
            verts = verts + hang
        shift = 0.0 if transl is None else transl[:, None]
        rest = None
        if base:
            rest = verts if dynamic_offsets is None else (
                skin(without, self.weights, out.transforms, blended=T) + hang)
            rest = rest + shift
        return DenseOutput(verts + shift, canonical, out, rest)

    def _hang(self, static: torch.Tensor, blended: torch.Tensor, transforms: torch.Tensor,
              swing: torch.Tensor | None = None) -> torch.Tensor:
        """h · (R_yaw · S − R) · D_static [B,Nd,3]: R each vertex's skinning rotation, R_yaw the rotation about
        the model's vertical axis that turns the head's forward axis (model z) as the head joint's does, S the
        swing's rotation (identity without one)."""
        fwd = transforms[:, J_HEAD, :3, 2]
        yaw = torch.atan2(fwd[:, 0], fwd[:, 2])
        z = torch.zeros_like(yaw)
        R_hang = axis_angle_to_matrix(torch.stack([z, yaw, z], -1))
        if swing is not None:
            R_hang = R_hang @ axis_angle_to_matrix(swing.to(R_hang.dtype))
        d = static.expand(blended.shape[0], -1, -1)
        turned = torch.einsum("bij,bnj->bni", R_hang, d) - torch.einsum("bnij,bnj->bni", blended[..., :3, :3], d)
        return self.hang_weights[None, :, None] * turned
