"""The staged fitter of the dense head to a tracked clip (ExpPortrait §3.1), assembled from its parts:

* :mod:`~headrep.fitting.params` — the unknowns (`FitParams`) and the per-row optimiser (`RowAdam`);
* :mod:`~headrep.fitting.scene` — landmarks spec, posing, crop cameras, rendering;
* :mod:`~headrep.fitting.init` — PnP initialisation, initial D_static;
* :mod:`~headrep.fitting.coarse` — stage 1 on landmarks;
* :mod:`~headrep.fitting.detail` — stage 2, the loss as named terms;
* :mod:`~headrep.fitting.checkpoint`, :mod:`~headrep.fitting.evaluate`.

The fitter does no I/O beyond its checkpoint folder; :func:`headrep.fitting.fit_video` goes from a video to a
HeadRep around it.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from headrep.errors import HeadrepError
from headrep.fitting.checkpoint import Checkpoints
from headrep.fitting.coarse import run_coarse
from headrep.fitting.config import FitConfig
from headrep.fitting.detail import run_detail
from headrep.fitting.evaluate import evaluate
from headrep.fitting.appearance import init_albedo
from headrep.fitting.init import init_rigid_pnp, init_static_offsets
from headrep.fitting.params import FitParams
from headrep.fitting.scene import Scene
from headrep.fitting.silhouette import run_silhouette
from headrep.model import BodyModel, DenseHead, SparseOperator, base_smoother, uniform_laplacian


@dataclass
class FitResult:
    tensors: dict                    # for HeadRep.create
    stats: dict                      # per-stage metrics and timings
    config: FitConfig
    head: DenseHead


class Fitter:
    """Fits β, per-frame pose/expression and the offset fields to a FaceTrack and its Targets."""

    def __init__(self, body: BodyModel, track, targets=None, config: FitConfig | None = None, ctx=None,
                 observations=None):
        """``targets``: dense normal/depth targets (None: no normal term); ``observations``: the person / skin /
        occluder masks of :mod:`headrep.fitting.observe` (None: no silhouette or photometric term)."""
        from headrep.render import get_context

        self.cfg = config or FitConfig()
        self.track, self.targets, self.obs = track, targets, observations
        self.valid = np.asarray(track.valid, bool).copy()
        if not self.valid.any():
            raise HeadrepError("no frame of the clip has a face: nothing to fit")
        self.terms = self._terms()
        self.occluded_frames = np.zeros_like(self.valid)
        if observations is not None:
            # a face mostly hidden (a hand over it) is treated like a face-less frame: interpolated, not fitted
            self.occluded_frames = self.valid & (np.asarray(observations.occluded_fraction) > self.cfg.occluded_frame)
            self.valid &= ~self.occluded_frames
            if not self.valid.any():
                raise HeadrepError("every frame with a face is mostly occluded: nothing to fit")
        self.valid_t = torch.as_tensor(self.valid)
        self.images = None
        self.appearance_ready = False  # the albedo / lights hold fitted values (set by init_albedo)
        if "photometric" in self.terms:
            from headrep.fitting.appearance import to_channels

            self.images = to_channels(track.crops, observations.grayscale)
        torch.manual_seed(self.cfg.seed)
        head = DenseHead(body, levels=self.cfg.subdiv, hair_hangs=self.cfg.hair_hangs)
        self.scene = Scene(body, head, track, self.cfg.contour_weight, ctx or get_context("cpu"))
        H, W = self.scene.image_size
        self.params = FitParams(self.scene.T, body.num_betas, body.num_expression, head.num_vertices,
                                len(self.scene.face_idx), focal=1.5 * max(H, W),
                                channels=1 if (observations is not None and observations.grayscale) else 3)
        init_rigid_pnp(self.scene, self.params, self.valid)
        if self.cfg.offsets:
            self.params.static = init_static_offsets(head, body, self.cfg.static_init_mm)
        self.static_weight = torch.where(torch.as_tensor(head.face_mask), 1.0, self.cfg.static_mag_outside)
        L = uniform_laplacian(head.faces, head.num_vertices, normalized=True).coalesce()
        self.L = SparseOperator(L)
        self.L_face = SparseOperator(torch.index_select(L, 1, self.scene.face_idx))
        # D_static's smoothness: the skin and the hair / scalp around it only loosely tied (see FitConfig)
        self.L_static = SparseOperator(uniform_laplacian(head.faces, head.num_vertices, normalized=True,
                                                         regions=head.face_mask, across=self.cfg.static_lap_across))
        self.stats: dict = {}
        self.checkpoints = Checkpoints(None, self.cfg.checkpoint_every)

    def _terms(self) -> list[str]:
        """The chosen data terms that this fit has data for (normals need targets, silhouette and photometric
        need observations)."""
        have = {"landmarks": True, "normals": self.targets is not None, "silhouette": self.obs is not None,
                "photometric": self.obs is not None}
        return [t for t in self.cfg.term_list() if have[t]]

    @property
    def fits_swing(self) -> bool:
        """Whether the detail epochs fit the hanging hair's swing (the silhouette is what sees it)."""
        c = self.cfg
        return c.offsets and c.hair_hangs and c.lr_swing > 0 and "silhouette" in self.terms

    @cached_property
    def face_smoother(self) -> tuple[SparseOperator, SparseOperator]:
        """(R, A) of base_smoother on the face rows: built when w_dyn_low first asks for D_dyn's smooth part."""
        R, A = base_smoother(self.head.topology, self.head.base_faces, self.scene.face_idx.numpy())
        return SparseOperator(R), SparseOperator(A)

    # conveniences for callers that look inside a fit (tests, notebooks)
    @property
    def head(self) -> DenseHead:
        return self.scene.head

    @property
    def face_idx(self) -> torch.Tensor:
        return self.scene.face_idx

    @property
    def lmk(self):
        return self.scene.lmk

    def dense(self, idx: torch.Tensor, offsets: bool = True):
        """Posed dense vertices [B,Nd,3] (model space) of frames ``idx`` and their pose."""
        return self.scene.dense(self.params.view(idx), offsets=offsets and self.cfg.offsets)

    # the stages (methods, so a test can interrupt one)
    def stage_coarse(self, progress=True, start_step=0, checkpoint=None):
        run_coarse(self, progress, start_step, checkpoint)

    def stage_detail(self, progress=True, start_epoch=0, checkpoint=None):
        if start_epoch == 0:
            if "silhouette" in self.terms and self.cfg.offsets:
                self.stats["silhouette_stage"] = run_silhouette(self, progress)
            if "photometric" in self.terms:
                self.stats["albedo_init"] = init_albedo(self)
        self.appearance_ready = "photometric" in self.terms  # initialised above, or restored from the checkpoint
        run_detail(self, progress, start_epoch, checkpoint)

    def run(self, checkpoint_dir: Path | None = None, resume: bool = False, progress: bool = True) -> FitResult:
        self.checkpoints = Checkpoints(checkpoint_dir, self.cfg.checkpoint_every)
        ck = self.checkpoints.load(self) if resume else None
        t0 = time.perf_counter()
        if ck is None or ck["stage"] == "coarse":
            self.stage_coarse(progress, start_step=ck["progress"] if ck else 0, checkpoint=ck)
            ck = None
        t1 = time.perf_counter()
        self.stats["coarse"] = {**evaluate(self, offsets=False), "seconds": t1 - t0}
        if self.cfg.detail_epochs > 0:
            self.stage_detail(progress, start_epoch=ck["progress"] if ck else 0, checkpoint=ck)
            t2 = time.perf_counter()
            self.stats["detail"] = {**evaluate(self, offsets=True), "seconds": t2 - t1}
        else:
            t2 = t1
        self.stats["seconds_per_frame"] = (t2 - t0) / self.scene.T
        self.stats["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.stats["landmarks"] = self.lmk.kind
        self.stats["terms"] = self.terms
        if self.obs is not None:
            self.stats["observations"] = {
                "frames_without_person": int((~np.asarray(self.obs.has_person) & np.asarray(self.track.valid)).sum()),
                "occluded_frames": [int(t) for t in np.nonzero(self.occluded_frames)[0]],
                "grayscale": bool(self.obs.grayscale)}
        return FitResult(self.tensors(), self.stats, self.cfg, self.head)

    @torch.no_grad()
    def tensors(self) -> dict:
        """Fitted parameters in the HeadRep layout (smplx pose and translation)."""
        P, sc = self.params, self.scene
        return {
            "betas": P.betas.clone(), "expression": P.expression.clone(), "pose": sc.pose(P.rot, P.neck, P.jaw),
            "transl": sc.transl(P.rot, P.tau), "focal": P.log_focal.exp().reshape(1),
            "principal": sc.principal.float(), "boxes": sc.boxes.clone(), "static_offsets": P.static * sc.surface,
            "dynamic_offsets": P.dynamic.clone(), "face_vertices": sc.face_idx.clone(),
            "valid": torch.as_tensor(self.valid.astype(np.uint8)),
            **({"albedo": P.albedo.clone(), "light": P.light.clone()} if "photometric" in self.terms else {}),
            **({"hair_swing": P.swing.clone()} if self.fits_swing else {}),
        }


def fit(body: BodyModel, track, targets=None, config: FitConfig | None = None, checkpoint_dir=None, resume=False,
        progress=True, ctx=None, observations=None) -> FitResult:
    """Fit a tracked clip; see the module docstring."""
    return Fitter(body, track, targets, config, ctx, observations).run(checkpoint_dir, resume, progress)
