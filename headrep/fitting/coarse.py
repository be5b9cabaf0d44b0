"""Stage 1 (coarse): shape β and focal (shared), and per frame head rotation/translation, neck, jaw and
expression ψ_t, on 2D landmarks, with L2 priors on β and ψ (Eq. 7) and temporal smoothness."""

from __future__ import annotations

import torch

from headrep.fitting import losses
from headrep.fitting.params import POSE_AND_EXPRESSION
from headrep.io import progress as progress_bar


def priors(cfg, p: dict) -> torch.Tensor:
    """L2 priors on β, ψ and neck; the jaw may open (x > 0) but not close past rest or twist."""
    jaw = p["jaw"]
    return (cfg.w_beta * (p["betas"] ** 2).mean() + cfg.w_expression * (p["expression"] ** 2).mean()
            + cfg.w_jaw * ((jaw[:, 1:] ** 2).mean() * 100 + (jaw[:, 0].clamp_max(0) ** 2).mean() * 100)
            + cfg.w_neck * (p["neck"] ** 2).mean())


def smoothness(cfg, p: dict) -> torch.Tensor:
    """Temporal smoothness of the per-frame pose and expression (translation in metres weighs ×100)."""
    return cfg.w_smooth * sum(losses.temporal_smoothness(p[k]) * s for k, s in
                              (("rot", 1.0), ("tau", 100.0), ("neck", 1.0), ("jaw", 1.0), ("expression", 0.01)))


def landmark_terms(cfg, scene, pts: torch.Tensor, focal: torch.Tensor, idx: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
    """The landmark loss of frames ``idx`` from model-space landmarks [B,L,3]: the 2D error plus
    ``w_landmarks_depth`` × the relative-depth error against the detector's z."""
    loss = losses.landmark_loss(scene.project(pts, focal), scene.det_full[idx], scene.iod[idx], scene.lmk.weights,
                                valid)
    if cfg.w_landmarks_depth:
        loss = loss + cfg.w_landmarks_depth * losses.landmark_depth_loss(
            scene.depth(pts, focal), scene.det_depth[idx], scene.iod[idx], scene.lmk.weights, valid)
    return loss


def run_coarse(fitter, progress: bool = True, start_step: int = 0, checkpoint: dict | None = None) -> None:
    """Adam over all frames at once on the landmark loss; invalid frames are interpolated at the end."""
    c, P, scene = fitter.cfg, fitter.params, fitter.scene
    P.requires_grad(("betas", "log_focal") + POSE_AND_EXPRESSION)
    opt = torch.optim.Adam([{"params": [P.betas], "lr": c.lr_coarse},
                            {"params": [P.log_focal], "lr": c.lr_coarse * 0.1},
                            {"params": [P.expression, P.jaw, P.neck, P.rot], "lr": c.lr_coarse},
                            {"params": [P.tau], "lr": c.lr_coarse * 0.05}])
    if checkpoint is not None and "coarse_opt" in checkpoint:
        opt.load_state_dict(checkpoint["coarse_opt"])
    idx = torch.arange(scene.T)
    bar = progress_bar(range(start_step, c.coarse_steps), c.coarse_steps - start_step, "stage 1 coarse", "step",
                       enabled=progress)
    for step in bar:
        opt.zero_grad(set_to_none=True)
        p = P.view(idx)
        l_lmk = c.w_landmarks * landmark_terms(c, scene, scene.coarse_landmarks(p), p["focal"], idx,
                                               fitter.valid_t)
        loss = l_lmk + priors(c, p) + smoothness(c, p)
        loss.backward()
        opt.step()
        if step % 10 == 0 or step == c.coarse_steps - 1:
            bar.set_postfix(lmk=f"{l_lmk.item():.2e}", total=f"{loss.item():.2e}")
        if fitter.checkpoints.due(step):
            fitter.checkpoints.save(fitter, "coarse", step + 1, coarse_opt=opt.state_dict())
    bar.close()
    P.requires_grad(("betas", "log_focal") + POSE_AND_EXPRESSION, False)
    P.fill_invalid(POSE_AND_EXPRESSION, fitter.valid)
    fitter.checkpoints.save(fitter, "detail", 0)
