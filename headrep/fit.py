"""Staged fitting of the dense head to a tracked face clip (ExpPortrait §3.1).

Stage 1 (coarse): shape β (shared), focal (shared), and per frame head rotation/translation, neck, jaw and
expression ψ_t, on 2D landmarks, with L2 priors on β and ψ (Eq. 7) and temporal smoothness. Rigid pose is
initialised per frame by PnP on the neutral model's landmarks.

Stage 2 (detail): the upsampled dense mesh with a static offset field D_static (shared; initialised non-zero
outside the face) and per-frame dynamic offsets D_dyn,t (face only), on rendered normal and depth maps
against the targets plus landmarks; magnitude and Laplacian penalties on the offsets (L·D, never L·V) and
the minimal-magnitude penalty on D_dyn that pushes what all frames share into D_static. Frames go in windows
of consecutive frames; per-frame parameters have their own Adam state (`RowAdam`) so a frame is only
updated when its window is optimised.

Camera: OpenCV, camera at the origin; model → camera is the fixed flip (x, −y, −z) after the model's global
rotation and translation. One focal length for the video (loaded-frame pixels, principal point at the image
centre); each frame is rendered in its crop's camera. The fitter does no I/O beyond its checkpoint folder.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import losses
from .body import BodyModel, axis_angle_to_matrix
from .errors import HeadrepError
from .head import MODEL_TO_CAMERA, DenseHead, to_camera
from .render.maps import PinholeCamera, render_maps
from .standin import MP_TO_IBUG68

MP_EYE_OUTER = (33, 263)  # MediaPipe outer eye corners: inter-ocular distance for NME
MP_FACE_POINTS = 468      # the 10 iris points follow gaze, not the surface: not fitted


@dataclass
class FitConfig:
    resolution: int = 256
    subdiv: int = 1
    seed: int = 0
    offsets: bool = True            # False: the SMPL-X-only ablation (no D_static, no D_dyn)
    coarse_steps: int = 300
    detail_epochs: int = 12
    window: int = 8                 # consecutive frames per detail step
    lr_coarse: float = 2e-2
    lr_detail: float = 3e-3
    lr_offsets: float = 2e-4        # metres
    w_landmarks: float = 1.0
    w_landmarks_detail: float = 5.0  # stage 2: keeps the landmarks where stage 1 put them (measured: NME
                                     # 0.023 -> 0.013 on 48 frames of WolfgangLanger, normals unchanged)
    contour_weight: float = 0.3     # iBUG jaw contour points slide with the view: down-weighted
    w_beta: float = 1e-4
    w_expression: float = 2e-5
    w_jaw: float = 1e-3
    w_neck: float = 1e-2
    w_smooth: float = 2e-2
    w_normal: float = 0.3
    w_depth: float = 0.3
    w_static_mag: float = 1e-4      # per mm², face vertices (outside the face ×0.1)
    w_static_lap: float = 3e-2
    w_dyn_mag: float = 1e-3         # the minimal-magnitude penalty on D_dyn
    dyn_penalty: str = "l2"         # "l2": mean |d|² (mm²); "l1": mean |d| (mm), sparse in time
    w_dyn_lap: float = 3e-2
    w_dyn_smooth: float = 1e-3
    w_dyn_mean: float = 1e-2        # the window's mean D_dyn is shared geometry: it belongs in D_static
    static_init_mm: float = 0.5     # initial outward D_static outside the face
    checkpoint_every: int = 200

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    tensors: dict                    # for HeadRep.create
    stats: dict                      # per-stage metrics and timings
    config: FitConfig
    head: DenseHead


class RowAdam:
    """Adam over the rows (frames) of a tensor: only the rows in a step's batch are updated.

    torch's Adam would keep moving rows that got no gradient on their stale momentum.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps = param, lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = torch.zeros(param.shape[0], dtype=torch.float64)

    @torch.no_grad()
    def step(self, rows: torch.Tensor) -> None:
        g = self.p.grad
        if g is None:
            return
        g = g[rows]
        self.t[rows] += 1
        t = self.t[rows].to(g.dtype).view(-1, *([1] * (g.dim() - 1)))
        self.m[rows] = self.b1 * self.m[rows] + (1 - self.b1) * g
        self.v[rows] = self.b2 * self.v[rows] + (1 - self.b2) * g * g
        mh = self.m[rows] / (1 - self.b1 ** t)
        vh = self.v[rows] / (1 - self.b2 ** t)
        self.p[rows] -= self.lr * mh / (vh.sqrt() + self.eps)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, d: dict) -> None:
        self.m.copy_(d["m"]), self.v.copy_(d["v"]), self.t.copy_(d["t"])


def _interpolate_invalid(x: torch.Tensor, valid: np.ndarray) -> torch.Tensor:
    """Linear interpolation of per-frame rows x [T,...] at invalid frames from the valid ones."""
    if valid.all() or not valid.any():
        return x
    t = np.arange(len(valid))
    flat = x.detach().reshape(len(valid), -1).cpu().numpy()
    out = flat.copy()
    for c in range(flat.shape[1]):
        out[~valid, c] = np.interp(t[~valid], t[valid], flat[valid, c])
    return torch.as_tensor(out, dtype=x.dtype).view_as(x)


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
            self.vid = torch.as_tensor(to_S(fi.numpy()[:MP_FACE_POINTS]))
            self.bary = bary[:MP_FACE_POINTS].clone()
            self.detected = np.arange(MP_FACE_POINTS)
            self.weights = torch.ones(MP_FACE_POINTS)
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


class Fitter:
    """Fits β, per-frame pose/expression and the offset fields to a FaceTrack and its Targets."""

    def __init__(self, body: BodyModel, track, targets, config: FitConfig | None = None, ctx=None):
        from .render import get_context

        self.cfg = config or FitConfig()
        self.body = body
        self.track = track
        self.targets = targets
        self.ctx = ctx or get_context("cpu")
        torch.manual_seed(self.cfg.seed)
        self.head = DenseHead(body, levels=self.cfg.subdiv)
        self.T = len(track.valid)
        self.R = int(track.resolution)
        self.valid = np.asarray(track.valid, bool)
        if not self.valid.any():
            raise HeadrepError("no frame of the clip has a face: nothing to fit")
        self.valid_t = torch.as_tensor(self.valid)
        self.lmk = LandmarkSpec(body, self.head.subset, self.cfg.contour_weight)
        H, W = track.image_size
        self.image_size = (int(H), int(W))
        self.principal = torch.tensor([(W - 1) / 2.0, (H - 1) / 2.0], dtype=torch.float64)
        self.boxes = torch.as_tensor(np.asarray(track.boxes, np.float64))
        # detected points in loaded-frame pixels, and inter-ocular distances
        pts = torch.as_tensor(np.asarray(track.points, np.float64))
        side = self.boxes[:, 2:3] / self.R
        full = pts[..., :2] * side[:, None] + self.boxes[:, None, :2]
        self.det_full = full[:, self.lmk.detected].float()
        iod = (full[:, MP_EYE_OUTER[0]] - full[:, MP_EYE_OUTER[1]]).norm(dim=-1)
        self.iod = torch.nan_to_num(iod, nan=1.0).float().clamp_min(1.0)
        self._init_params()
        self.stats: dict = {}
        self.checkpoint_dir: Path | None = None  # set by run(); None: no checkpoints

    # --- parameters -------------------------------------------------------------------------------------
    def _init_params(self):
        b, T = self.body, self.T
        H, W = self.image_size
        self.log_focal = torch.tensor(math.log(1.5 * max(H, W)), dtype=torch.float32)
        self.betas = torch.zeros(b.num_betas)
        self.expression = torch.zeros(T, b.num_expression)
        self.jaw = torch.zeros(T, 3)
        self.neck = torch.zeros(T, 3)
        self.rot = torch.zeros(T, 3)
        self.tau = torch.zeros(T, 3)
        with torch.no_grad():
            rest = b.zero_params(1)
            out = b(rest["betas"], rest["expression"], rest["pose"])
            J = out.joints[0]
            self.pivot = (J[15] - J[0]).clone()  # head joint relative to the root: rotations pivot at the head
            rest_lmk = self.lmk.points(out.vertices[:, torch.as_tensor(self.head.subset)], rest["pose"], local=False)[0]
        self._init_rigid_pnp(rest_lmk.numpy().astype(np.float64), J[15].numpy())
        Nd = self.head.num_vertices
        self.face_idx = torch.as_tensor(np.nonzero(self.head.face_mask)[0])
        self.static = torch.zeros(Nd, 3)
        self.dynamic = torch.zeros(T, len(self.face_idx), 3)
        if self.cfg.offsets and self.cfg.static_init_mm > 0:
            from .meshops import vertex_normals

            with torch.no_grad():
                v = self.head(rest["betas"], rest["expression"], rest["pose"]).canonical[0]
                n = vertex_normals(v, self.head.faces_t.long())
            outside = torch.as_tensor(~self.head.face_mask, dtype=torch.float32)[:, None]
            self.static = 1e-3 * self.cfg.static_init_mm * n * outside
        self.face_weight = torch.where(torch.as_tensor(self.head.face_mask), 1.0, 0.1)
        L = self._laplacian()
        self.L = L
        self.L_face = torch.index_select(L, 1, self.face_idx).coalesce()

    def _laplacian(self):
        from .topology import uniform_laplacian

        return uniform_laplacian(self.head.faces, self.head.num_vertices, normalized=True).coalesce()

    def _init_rigid_pnp(self, model_pts: np.ndarray, head_joint: np.ndarray):
        """Per-frame rotation/translation from PnP of the neutral landmarks (model → camera incl. the flip)."""
        import cv2

        f = float(self.log_focal.exp())
        K = np.array([[f, 0, float(self.principal[0])], [0, f, float(self.principal[1])], [0, 0, 1]])
        F = np.diag(MODEL_TO_CAMERA)
        obj = model_pts @ F  # the flip first: PnP then finds the camera from the model's camera-facing copy
        pivot = self.pivot.numpy().astype(np.float64)
        root = head_joint - pivot
        rot, tau = np.zeros((self.T, 3)), np.zeros((self.T, 3))
        det = self.det_full.numpy().astype(np.float64)
        for t in np.nonzero(self.valid)[0]:
            ok, rvec, tvec = cv2.solvePnP(obj, det[t], K, None, flags=cv2.SOLVEPNP_EPNP)
            if not ok:
                continue
            ok, rvec, tvec = cv2.solvePnP(obj, det[t], K, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
            Rc, _ = cv2.Rodrigues(rvec)
            # camera = Rc·F·x + t  and  camera = F·(Rm·(x − root − pivot) + root + pivot + tau')  with Rm = F·Rc·F
            Rm = F @ Rc @ F
            rot[t] = cv2.Rodrigues(Rm)[0][:, 0]
            c = root + pivot
            tau[t] = F @ tvec[:, 0] - c + Rm @ c
        self.rot = _interpolate_invalid(torch.as_tensor(rot, dtype=torch.float32), self.valid)
        self.tau = _interpolate_invalid(torch.as_tensor(tau, dtype=torch.float32), self.valid)

    def _pose(self, idx, rot, neck, jaw):
        pose = torch.zeros(len(idx), 55, 3)
        pose[:, 0] = rot
        pose[:, 12] = neck
        pose[:, 22] = jaw
        return pose

    def _transl(self, rot, tau):
        """smplx turns the model about its root joint; we turn it about the head (root + pivot) and move it by
        tau: R(v − c) + c + tau = R(v − root) + root + transl  ⇒  transl = tau + pivot − R·pivot."""
        R = axis_angle_to_matrix(rot)
        return tau + self.pivot - torch.einsum("bij,j->bi", R, self.pivot)

    def _project(self, pts_model: torch.Tensor, focal: torch.Tensor) -> torch.Tensor:
        cam = to_camera(pts_model)
        z = cam[..., 2:3].clamp_min(1e-4)
        return focal * cam[..., :2] / z + self.principal.float()

    def crop_cameras(self, idx) -> list[PinholeCamera]:
        f = float(self.log_focal.exp())
        cams = []
        for t in idx.tolist():
            x0, y0, side = self.boxes[t].tolist()
            s = self.R / side
            cams.append(PinholeCamera(f * s, f * s, (float(self.principal[0]) - x0) * s,
                                      (float(self.principal[1]) - y0) * s, self.R, self.R, near=0.05, far=20.0))
        return cams

    def _render(self, verts_cam, idx, antialias=True) -> dict:
        """Normal/depth/mask maps in each frame's crop camera; on a CUDA context the geometry goes to the GPU
        for rasterisation only (autograd carries the gradients back), the fitter's tensors stay on the CPU."""
        dev = getattr(self.ctx, "device", torch.device("cpu"))
        maps = render_maps(self.ctx, verts_cam.to(dev), self.head.faces_t.to(dev), self.crop_cameras(idx),
                           antialias=antialias)
        return {k: v.cpu() for k, v in maps.items()}

    # --- model evaluation -------------------------------------------------------------------------------
    def coarse_landmarks(self, idx, params=None):
        p = params or self._params(idx)
        pose = self._pose(idx, p["rot"], p["neck"], p["jaw"])
        S = torch.as_tensor(self.head.subset)
        out = self.body(p["betas"][None], p["expression"], pose, vertex_ids=S[self.lmk.needed])
        transl = self._transl(p["rot"], p["tau"])
        verts = out.vertices + transl[:, None]
        return self.lmk.points(verts, pose, local=True)

    def dense(self, idx, p=None, offsets=True):
        p = p or self._params(idx)
        pose = self._pose(idx, p["rot"], p["neck"], p["jaw"])
        transl = self._transl(p["rot"], p["tau"])
        static = dyn = None
        if offsets and self.cfg.offsets:
            static = p["static"]
            dyn = torch.zeros(len(idx), self.head.num_vertices, 3).index_copy(1, self.face_idx, p["dynamic"])
        out = self.head(p["betas"][None], p["expression"], pose, transl, static_offsets=static, dynamic_offsets=dyn)
        return out.vertices, pose

    def _params(self, idx):
        return {"betas": self.betas, "expression": self.expression[idx], "jaw": self.jaw[idx],
                "neck": self.neck[idx], "rot": self.rot[idx], "tau": self.tau[idx], "static": self.static,
                "dynamic": self.dynamic[idx], "focal": self.log_focal.exp()}

    # --- stage 1 ----------------------------------------------------------------------------------------
    def _priors(self, p):
        c = self.cfg
        jaw = p["jaw"]
        return (c.w_beta * (p["betas"] ** 2).mean() + c.w_expression * (p["expression"] ** 2).mean()
                + c.w_jaw * ((jaw[:, 1:] ** 2).mean() * 100 + (jaw[:, 0].clamp_max(0) ** 2).mean() * 100)
                + c.w_neck * (p["neck"] ** 2).mean())

    def _smooth(self, p):
        return self.cfg.w_smooth * sum(losses.temporal_smoothness(p[k]) * s for k, s in
                                       (("rot", 1.0), ("tau", 100.0), ("neck", 1.0), ("jaw", 1.0),
                                        ("expression", 0.01)))

    def stage_coarse(self, progress=True, start_step=0, checkpoint=None):
        from tqdm import tqdm

        c = self.cfg
        shared = [self.betas, self.log_focal]
        per_frame = [self.expression, self.jaw, self.neck, self.rot, self.tau]
        for x in shared + per_frame:
            x.requires_grad_(True)
        opt = torch.optim.Adam([{"params": [self.betas], "lr": c.lr_coarse},
                                {"params": [self.log_focal], "lr": c.lr_coarse * 0.1},
                                {"params": [self.expression, self.jaw, self.neck, self.rot], "lr": c.lr_coarse},
                                {"params": [self.tau], "lr": c.lr_coarse * 0.05}])
        if checkpoint is not None and "coarse_opt" in checkpoint:
            opt.load_state_dict(checkpoint["coarse_opt"])
        idx = torch.arange(self.T)
        bar = tqdm(range(start_step, c.coarse_steps), desc="stage 1 coarse", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        for step in bar:
            opt.zero_grad(set_to_none=True)
            p = self._params(idx)
            lmk = self._project(self.coarse_landmarks(idx, p), p["focal"])
            l_lmk = c.w_landmarks * losses.landmark_loss(lmk, self.det_full, self.iod, self.lmk.weights, self.valid_t)
            loss = l_lmk + self._priors(p) + self._smooth(p)
            loss.backward()
            opt.step()
            if step % 10 == 0 or step == c.coarse_steps - 1:
                bar.set_postfix(lmk=f"{l_lmk.item():.2e}", total=f"{loss.item():.2e}")
            if self._ckpt_due(step):
                self.save_checkpoint("coarse", step + 1, coarse_opt=opt.state_dict())
        for x in shared + per_frame:
            x.requires_grad_(False)
        with torch.no_grad():
            for name in ("expression", "jaw", "neck", "rot", "tau"):
                setattr(self, name, _interpolate_invalid(getattr(self, name), self.valid))
        self.save_checkpoint("detail", 0)

    # --- stage 2 ----------------------------------------------------------------------------------------
    def _windows(self, gen):
        w = max(1, min(self.cfg.window, self.T))
        starts = list(range(0, max(self.T - w, 0) + 1, w))
        if starts[-1] + w < self.T:
            starts.append(self.T - w)
        order = torch.randperm(len(starts), generator=gen).tolist()
        return [torch.arange(starts[i], starts[i] + w) for i in order]

    def _detail_loss(self, idx, p, with_terms=False):
        c = self.cfg
        from .targets import normal_loss, scale_shift_invariant_depth_error

        verts, pose = self.dense(idx, p)
        valid = self.valid_t[idx]
        verts_cam = to_camera(verts)
        maps = self._render(verts_cam, idx)
        tmask = torch.as_tensor(self.targets.mask[idx.numpy()]) & (maps["mask"] > 0.5) & valid[:, None, None]
        tn = torch.as_tensor(self.targets.normal[idx.numpy()])
        l_normal = c.w_normal * normal_loss(maps["normal"], tn, tmask).mean()
        l_depth = torch.zeros(())
        if getattr(self.targets, "has_depth", True) and c.w_depth > 0:
            td = torch.as_tensor(self.targets.depth[idx.numpy()])
            per_frame, _ = scale_shift_invariant_depth_error(maps["depth"], td, tmask)
            l_depth = c.w_depth * per_frame[valid].sum() / max(int(valid.sum()), 1)
        S_verts = verts[:, : len(self.head.subset)]
        lmk = self._project(self.lmk.points(S_verts, pose, local=False), p["focal"])
        l_lmk = c.w_landmarks_detail * losses.landmark_loss(lmk, self.det_full[idx], self.iod[idx], self.lmk.weights,
                                                            valid)
        loss = l_normal + l_depth + l_lmk + self._priors(p) + self._smooth(p)
        if self.cfg.offsets:
            s_mm, d_mm = 1e3 * p["static"], 1e3 * p["dynamic"]
            loss = loss + c.w_static_mag * losses.offset_magnitude(s_mm, self.face_weight) \
                + c.w_static_lap * losses.offset_laplacian(self.L, s_mm) \
                + c.w_dyn_mag * (losses.offset_magnitude(d_mm) if c.dyn_penalty == "l2"
                                 else losses.offset_norm(d_mm)) \
                + c.w_dyn_lap * losses.offset_laplacian(self.L_face, d_mm) \
                + c.w_dyn_smooth * losses.temporal_smoothness(d_mm) \
                + c.w_dyn_mean * (d_mm.mean(0) ** 2).sum(-1).mean()
        if with_terms:
            return loss, {"normal": l_normal.item(), "depth": l_depth.item(), "lmk": l_lmk.item()}
        return loss

    def stage_detail(self, progress=True, start_epoch=0, checkpoint=None):
        from tqdm import tqdm

        c = self.cfg
        frame_params = {"expression": c.lr_detail, "jaw": c.lr_detail, "neck": c.lr_detail,
                        "rot": c.lr_detail, "tau": c.lr_detail * 0.05}
        if c.offsets:
            frame_params["dynamic"] = c.lr_offsets
        shared = [self.betas] + ([self.static] if c.offsets else [])
        for name in frame_params:
            getattr(self, name).requires_grad_(True)
        for x in shared:
            x.requires_grad_(True)
        row_opts = {n: RowAdam(getattr(self, n), lr) for n, lr in frame_params.items()}
        opt = torch.optim.Adam([{"params": [self.betas], "lr": c.lr_detail}]
                               + ([{"params": [self.static], "lr": c.lr_offsets}] if c.offsets else []))
        if checkpoint is not None and "detail_opt" in checkpoint:
            opt.load_state_dict(checkpoint["detail_opt"])
            for n, o in row_opts.items():
                o.load_state_dict(checkpoint["row_opts"][n])
        gen = torch.Generator().manual_seed(c.seed + 1)
        windows_per_epoch = len(self._windows(torch.Generator().manual_seed(0)))
        total = c.detail_epochs * windows_per_epoch
        bar = tqdm(total=total, initial=start_epoch * windows_per_epoch, desc="stage 2 detail", file=sys.stderr,
                   disable=not progress, dynamic_ncols=True)
        step = start_epoch * windows_per_epoch
        for epoch in range(c.detail_epochs):
            windows = self._windows(gen)  # drawn every epoch so a resumed run sees the same order
            if epoch < start_epoch:
                continue
            for idx in windows:
                for x in shared + [getattr(self, n) for n in frame_params]:
                    x.grad = None
                loss, terms = self._detail_loss(idx, self._params(idx), with_terms=True)
                loss.backward()
                opt.step()
                for o in row_opts.values():
                    o.step(idx)
                step += 1
                bar.update(1)
                if step % 5 == 0:
                    bar.set_postfix(normal=f"{terms['normal']:.3f}", depth=f"{terms['depth']:.3f}",
                                    lmk=f"{terms['lmk']:.1e}")
            if c.checkpoint_every and (epoch + 1) % max(1, c.checkpoint_every // windows_per_epoch) == 0:
                self.save_checkpoint("detail", epoch + 1, detail_opt=opt.state_dict(),
                                     row_opts={n: o.state_dict() for n, o in row_opts.items()})
        bar.close()
        for x in shared + [getattr(self, n) for n in frame_params]:
            x.requires_grad_(False)
        with torch.no_grad():
            for name in frame_params:
                setattr(self, name, _interpolate_invalid(getattr(self, name), self.valid))

    # --- checkpoints ------------------------------------------------------------------------------------
    def _ckpt_due(self, step):
        return self.checkpoint_dir is not None and self.cfg.checkpoint_every and (step + 1) % self.cfg.checkpoint_every == 0

    def state(self) -> dict:
        return {k: getattr(self, k).detach().clone() for k in
                ("log_focal", "betas", "expression", "jaw", "neck", "rot", "tau", "static", "dynamic")}

    def save_checkpoint(self, stage: str, progress: int, **extra) -> None:
        if self.checkpoint_dir is None:
            return
        from .io import atomic_write

        payload = {"stage": stage, "progress": progress, "params": self.state(), "config": self.cfg.to_dict(),
                   "stats": self.stats, **extra}
        with atomic_write(self.checkpoint_dir / "fit.pt") as tmp:
            torch.save(payload, tmp)

    def load_checkpoint(self) -> dict | None:
        path = None if self.checkpoint_dir is None else self.checkpoint_dir / "fit.pt"
        if path is None or not path.exists():
            return None
        ck = torch.load(path, weights_only=False)
        if ck["config"] != self.cfg.to_dict():
            raise HeadrepError(f"checkpoint {path} was made with another configuration; "
                               "rerun with the same options or use --overwrite to start afresh")
        for k, v in ck["params"].items():
            setattr(self, k, v.clone())
        self.stats = ck.get("stats", {})
        return ck

    # --- metrics ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, offsets=True, batch=16) -> dict:
        """NME (landmarks / inter-ocular distance), normal angular error (degrees) and scale-shift-invariant
        depth error over the valid frames, on the target mask."""
        from .targets import angular_normal_error, scale_shift_invariant_depth_error

        nme, ang, dep, n_frames = [], [], [], 0
        for s in range(0, self.T, batch):
            idx = torch.arange(s, min(s + batch, self.T))
            valid = self.valid_t[idx]
            if not valid.any():
                continue
            verts, pose = self.dense(idx, offsets=offsets)
            p = self._params(idx)
            lmk = self._project(self.lmk.points(verts[:, : len(self.head.subset)], pose, local=False), p["focal"])
            nme.append(losses.landmark_nme(lmk, self.det_full[idx], self.iod[idx], valid) * int(valid.sum()))
            maps = self._render(to_camera(verts), idx, antialias=False)
            tmask = torch.as_tensor(self.targets.mask[idx.numpy()]) & (maps["mask"] > 0.5) & valid[:, None, None]
            a = angular_normal_error(maps["normal"], torch.as_tensor(self.targets.normal[idx.numpy()]), tmask)
            ang.append(float(torch.nan_to_num(a[valid]).sum()))
            if getattr(self.targets, "has_depth", True):
                d, _ = scale_shift_invariant_depth_error(maps["depth"], torch.as_tensor(self.targets.depth[idx.numpy()]), tmask)
                dep.append(float(torch.nan_to_num(d[valid]).sum()))
            n_frames += int(valid.sum())
        return {"landmark_nme": sum(nme) / n_frames, "normal_deg": sum(ang) / n_frames,
                "depth_ssi": (sum(dep) / n_frames) if dep else float("nan"), "frames": n_frames}

    # --- driver -----------------------------------------------------------------------------------------
    def run(self, checkpoint_dir: Path | None = None, resume: bool = False, progress: bool = True) -> FitResult:
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        ck = self.load_checkpoint() if resume else None
        t0 = time.perf_counter()
        if ck is None or ck["stage"] == "coarse":
            self.stage_coarse(progress, start_step=ck["progress"] if ck else 0, checkpoint=ck)
            ck = None
        t1 = time.perf_counter()
        self.stats["coarse"] = {**self.evaluate(offsets=False), "seconds": t1 - t0}
        self.stage_detail(progress, start_epoch=ck["progress"] if ck else 0, checkpoint=ck)
        t2 = time.perf_counter()
        self.stats["detail"] = {**self.evaluate(offsets=True), "seconds": t2 - t1}
        self.stats["seconds_per_frame"] = (t2 - t0) / self.T
        self.stats["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.stats["landmarks"] = self.lmk.kind
        return FitResult(self.tensors(), self.stats, self.cfg, self.head)

    @torch.no_grad()
    def tensors(self) -> dict:
        """Fitted parameters in the HeadRep layout (smplx pose and translation)."""
        idx = torch.arange(self.T)
        pose = self._pose(idx, self.rot, self.neck, self.jaw)
        transl = self._transl(self.rot, self.tau)
        return {
            "betas": self.betas.clone(), "expression": self.expression.clone(), "pose": pose,
            "transl": transl, "focal": self.log_focal.exp().reshape(1), "principal": self.principal.float(),
            "boxes": self.boxes.clone(), "static_offsets": self.static.clone(),
            "dynamic_offsets": self.dynamic.clone(), "face_vertices": self.face_idx.clone(),
            "valid": torch.as_tensor(self.valid.astype(np.uint8)),
        }


def fit(body: BodyModel, track, targets, config: FitConfig | None = None, checkpoint_dir=None, resume=False,
        progress=True, ctx=None) -> FitResult:
    """Fit a tracked clip; see the module docstring."""
    return Fitter(body, track, targets, config, ctx).run(checkpoint_dir, resume, progress)
