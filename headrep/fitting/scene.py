"""What every stage of the fit shares: which model points are fitted to which detected points, how the
unknowns pose the model (smplx pose and translation about the head), and the crop cameras it is projected
and rendered in.

Camera: OpenCV, camera at the origin; model → camera is the fixed flip (x, −y, −z) after the model's global
rotation and translation. One focal length for the video (loaded-frame pixels, principal point at the image
centre); each frame is rendered in its crop's camera.
"""

from __future__ import annotations

import numpy as np
import torch

from headrep.errors import HeadrepError
from headrep.model import (J_HEAD, J_JAW, J_NECK, J_ROOT, MP_EYE_OUTER, MP_TO_IBUG68, NUM_JOINTS, NUM_MP_FACE,
                           BodyModel, DenseHead, axis_angle_to_matrix, to_camera)
from headrep.render import PinholeCamera, render_maps


class LandmarkSpec:
    """Which model points are fitted to which detected MediaPipe points, in S-subset vertex indices.

    Models with the MediaPipe embedding (the stand-in) fit the 468 surface points; others fit iBUG-68
    (51 static + 17 dynamic contour points from the yaw look-up table, down-weighted).
    """

    def __init__(self, body: BodyModel, subset: np.ndarray, contour_weight: float):
        full_to_S = -np.ones(body.num_vertices, np.int64)
        full_to_S[subset] = np.arange(len(subset))
        f = body.faces

        def to_S(face_idx):
            vid = full_to_S[f[np.asarray(face_idx)]]
            if (vid < 0).any():
                raise HeadrepError(f"{body.path}: a landmark lies on a face outside the head-and-shoulders subset")
            return vid

        self.dynamic = None
        if body.mp478 is not None:
            fi, bary = body.mp478
            self.vid = torch.as_tensor(to_S(fi.numpy()[:NUM_MP_FACE]))
            self.bary = bary[:NUM_MP_FACE].clone()
            self.detected = np.arange(NUM_MP_FACE)
            self.weights = torch.ones(NUM_MP_FACE)
            self.kind = "mediapipe468"
        else:
            m = body.smplx
            self.vid = torch.as_tensor(to_S(m.lmk_faces_idx.numpy()))
            self.bary = m.lmk_bary_coords.clone()
            self.detected = MP_TO_IBUG68[17:]
            self.weights = torch.ones(51)
            self.kind = "ibug51"
            if body.has_contour:
                self.dynamic = (torch.as_tensor(to_S(m.dynamic_lmk_faces_idx.numpy())), m.dynamic_lmk_bary_coords.clone())
                self.detected = MP_TO_IBUG68
                self.weights = torch.cat([torch.full((17,), contour_weight), torch.ones(51)])
                self.kind = "ibug68"
        ids = [self.vid.reshape(-1)] + ([self.dynamic[0].reshape(-1)] if self.dynamic is not None else [])
        self.needed = torch.unique(torch.cat(ids))  # S-indices any landmark may use
        self.local = -torch.ones(len(subset), dtype=torch.long)
        self.local[self.needed] = torch.arange(len(self.needed))
        self.neck_chain = body.smplx.neck_kin_chain if self.dynamic is not None else None

    def points(self, verts_S: torch.Tensor, pose: torch.Tensor, local: bool) -> torch.Tensor:
        """Landmarks [B,L,3] from vertices indexed by S (local=False) or by `needed` (local=True)."""
        B = verts_S.shape[0]
        vid, bary = self.vid[None].expand(B, -1, -1), self.bary[None].expand(B, -1, -1)
        if self.dynamic is not None:
            from smplx.lbs import find_dynamic_lmk_idx_and_bcoords

            d_vid, d_bary = self.dynamic
            # the look-up selects rows by neck yaw; pass (row index) tables through the same function
            rows = torch.arange(d_vid.shape[0])[:, None].expand(-1, 17).contiguous()
            sel, _ = find_dynamic_lmk_idx_and_bcoords(verts_S, pose.reshape(B, -1), rows, d_bary, self.neck_chain)
            r = sel[:, 0]
            vid = torch.cat([d_vid[r], vid], 1)
            bary = torch.cat([d_bary[r], bary], 1)
        if local:
            vid = self.local[vid]
        idx = vid.reshape(B, -1)
        p = torch.gather(verts_S, 1, idx[..., None].expand(-1, -1, 3)).view(B, -1, 3, 3)
        return (p * bary[..., None]).sum(2)


class Scene:
    """The body model, dense head, landmark spec and crop cameras of one tracked clip."""

    def __init__(self, body: BodyModel, head: DenseHead, track, contour_weight: float, ctx):
        self.body, self.head, self.ctx = body, head, ctx
        self.T = len(track.valid)
        self.R = int(track.resolution)
        self.lmk = LandmarkSpec(body, head.subset, contour_weight)
        self.face_idx = torch.as_tensor(np.nonzero(head.face_mask & head.surface_mask)[0])  # where D_dyn lives
        self.surface = torch.as_tensor(head.surface_mask, dtype=torch.float32)[:, None]  # where D_static lives
        H, W = track.image_size
        self.image_size = (int(H), int(W))
        self.principal = torch.tensor([(W - 1) / 2.0, (H - 1) / 2.0], dtype=torch.float64)
        self.boxes = torch.tensor(np.asarray(track.boxes, np.float64))  # a copy: never the caller's track
        # detected points in loaded-frame pixels, and inter-ocular distances
        pts = torch.as_tensor(np.asarray(track.points, np.float64))
        side = self.boxes[:, 2:3] / self.R
        full = pts[..., :2] * side[:, None] + self.boxes[:, None, :2]
        self.det_full = full[:, self.lmk.detected].float()
        # the detector's relative depth (MediaPipe's z: crop pixels, smaller = closer) in loaded-frame pixels
        self.det_depth = (pts[..., 2] * side)[:, self.lmk.detected].float()
        iod = (full[:, MP_EYE_OUTER[0]] - full[:, MP_EYE_OUTER[1]]).norm(dim=-1)
        self.iod = torch.nan_to_num(iod, nan=1.0).float().clamp_min(1.0)
        with torch.no_grad():
            rest = body.zero_params(1)
            out = body(rest["betas"], rest["expression"], rest["pose"])
            J = out.joints[0]
            self.head_joint = J[J_HEAD].clone()
            self.pivot = (J[J_HEAD] - J[J_ROOT]).clone()  # rotations pivot at the head joint
            S = torch.as_tensor(head.subset)
            self.rest_landmarks = self.lmk.points(out.vertices[:, S], rest["pose"], local=False)[0]

    # --- posing -----------------------------------------------------------------------------------------
    @staticmethod
    def pose(rot, neck, jaw) -> torch.Tensor:
        """smplx pose [B,55,3]: global rotation, neck and jaw; every other joint at rest."""
        pose = torch.zeros(rot.shape[0], NUM_JOINTS, 3)
        pose[:, J_ROOT] = rot
        pose[:, J_NECK] = neck
        pose[:, J_JAW] = jaw
        return pose

    def transl(self, rot, tau):
        """smplx turns the model about its root joint; we turn it about the head (root + pivot) and move it by
        tau: R(v − c) + c + tau = R(v − root) + root + transl  ⇒  transl = tau + pivot − R·pivot."""
        R = axis_angle_to_matrix(rot)
        return tau + self.pivot - torch.einsum("bij,j->bi", R, self.pivot)

    def project(self, pts_model: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
        """Loaded-frame pixel coordinates [...,2] of model-space points."""
        cam = to_camera(pts_model)
        z = cam[..., 2:3].clamp_min(1e-4)
        return focal * cam[..., :2] / z + self.principal.float()

    def depth(self, pts_model: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
        """Camera depth [...] of model-space points in the pixel units of :meth:`project` at their mean depth
        (the scale of a detector's relative z; the loss removes the mean)."""
        z = to_camera(pts_model)[..., 2]
        return focal * z / z.mean(-1, keepdim=True).detach().clamp_min(1e-4)

    def coarse_landmarks(self, p: dict) -> torch.Tensor:
        """Model landmarks [B,L,3] (model space, posed) from the coarse body: only the vertices they need."""
        pose = self.pose(p["rot"], p["neck"], p["jaw"])
        S = torch.as_tensor(self.head.subset)
        out = self.body(p["betas"][None], p["expression"], pose, vertex_ids=S[self.lmk.needed])
        verts = out.vertices + self.transl(p["rot"], p["tau"])[:, None]
        return self.lmk.points(verts, pose, local=True)

    def dense(self, p: dict, offsets: bool = True, base: bool = False):
        """Posed dense vertices [B,Nd,3] (model space) and the pose, with the offsets when ``offsets``;
        ``base``: a third value, the vertices without D_dyn (None without offsets)."""
        pose = self.pose(p["rot"], p["neck"], p["jaw"])
        static = dyn = None
        if offsets:
            static = p["static"] * self.surface
            dyn = torch.zeros(p["dynamic"].shape[0], self.head.num_vertices, 3).index_copy(1, self.face_idx,
                                                                                            p["dynamic"])
        swing = p.get("swing") if offsets and self.head.hair_hangs else None
        out = self.head(p["betas"][None], p["expression"], pose, self.transl(p["rot"], p["tau"]),
                        static_offsets=static, dynamic_offsets=dyn, base=base and offsets, hair_swing=swing)
        return (out.vertices, pose, out.base) if base else (out.vertices, pose)

    def dense_landmarks(self, verts: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        """Model landmarks [B,L,3] (model space, posed) of posed dense vertices (the first |S| dense vertices are
        S), like :meth:`coarse_landmarks`."""
        return self.lmk.points(verts[:, : len(self.head.subset)], pose, local=False)

    # --- cameras and rendering --------------------------------------------------------------------------
    def crop_cameras(self, idx, focal: float, scale: float = 1.0) -> list[PinholeCamera]:
        """Each frame's crop camera; ``scale`` < 1 renders the same crop at ``scale × R`` pixels."""
        R = int(round(self.R * scale))
        k = R / self.R
        cams = []
        for t in idx.tolist():
            x0, y0, side = self.boxes[t].tolist()
            s = self.R / side
            cx, cy = (float(self.principal[0]) - x0) * s, (float(self.principal[1]) - y0) * s
            # small pixel i is the block of full pixels centred at (i + 0.5)/k − 0.5
            cams.append(PinholeCamera(focal * s * k, focal * s * k, (cx + 0.5) * k - 0.5, (cy + 0.5) * k - 0.5,
                                      R, R, near=0.05, far=20.0))
        return cams

    def render(self, verts_cam, idx, focal: float, antialias=True, attributes=None, scale: float = 1.0,
               attributes_fixed_coverage: bool = False, normals=None, surface=None) -> dict:
        """Maps in each frame's crop camera (see render_maps); on a CUDA context the geometry goes to the GPU
        for rasterisation only (autograd carries the gradients back), the fitter's tensors stay on the CPU."""
        dev = getattr(self.ctx, "device", torch.device("cpu"))
        attrs = None if attributes is None else {k: v.to(dev) for k, v in attributes.items()}
        maps = render_maps(self.ctx, verts_cam.to(dev), self.head.faces_t.to(dev),
                           self.crop_cameras(idx, focal, scale), antialias=antialias, attributes=attrs,
                           attributes_fixed_coverage=attributes_fixed_coverage,
                           normals=None if normals is None else normals.to(dev),
                           surface=None if surface is None else surface.to(dev))
        return {k: v.cpu() for k, v in maps.items()}
