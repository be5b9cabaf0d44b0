"""Stage 2 (detail): the upsampled dense mesh with D_static (shared; initialised non-zero outside the face)
and per-frame D_dyn,t (face only), on rendered maps against what the video gives plus landmarks; magnitude and
Laplacian penalties on the offsets (L·D, never L·V) and the minimal-magnitude penalty on D_dyn that pushes
what all frames share into D_static. Frames go in windows of consecutive frames; per-frame unknowns have their
own Adam state (`RowAdam`) so a frame is only updated when its window is optimised.

The loss is a sum of named terms (:data:`TERMS`): each is one function of a :class:`Step` and one weight in
FitConfig (``w_<name>``). Adding a term is adding one function and one weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from headrep.fitting import losses
from headrep.fitting.coarse import landmark_terms, priors, smoothness
from headrep.fitting.params import RowAdam
from headrep.io import progress as progress_bar
from headrep.model import laplacian_penalty, to_camera


@dataclass
class Step:
    """One detail step over frames ``idx``: the unknowns' view ``p``, the posed dense mesh and its renders."""

    fitter: object
    idx: torch.Tensor
    p: dict
    verts: torch.Tensor          # [B,Nd,3] model space
    pose: torch.Tensor
    valid: torch.Tensor          # [B] bool
    maps: dict = field(default_factory=dict)

    @property
    def cfg(self):
        return self.fitter.cfg


# --- data terms -------------------------------------------------------------------------------------------
def term_normal(s: Step) -> torch.Tensor:
    """1 − cos to the dense normal targets (outliers rejected), on the target ∩ render mask."""
    from headrep.fitting.targets import normal_loss

    tg, i = s.fitter.targets, s.idx.numpy()
    tmask = torch.as_tensor(tg.mask[i]) & (s.maps["mask"] > 0.5) & s.valid[:, None, None]
    return normal_loss(s.maps["normal"], torch.as_tensor(tg.normal[i]), tmask).mean()


def term_depth(s: Step) -> torch.Tensor:
    """Scale-and-shift-invariant depth error to the dense depth targets."""
    from headrep.fitting.targets import scale_shift_invariant_depth_error

    tg, i = s.fitter.targets, s.idx.numpy()
    if not getattr(tg, "has_depth", True):
        return torch.zeros(())
    tmask = torch.as_tensor(tg.mask[i]) & (s.maps["mask"] > 0.5) & s.valid[:, None, None]
    per_frame, _ = scale_shift_invariant_depth_error(s.maps["depth"], torch.as_tensor(tg.depth[i]), tmask)
    return per_frame[s.valid].sum() / max(int(s.valid.sum()), 1)


def term_landmarks_detail(s: Step) -> torch.Tensor:
    sc = s.fitter.scene
    return landmark_terms(s.cfg, sc, sc.dense_landmarks(s.verts, s.pose), s.p["focal"], s.idx, s.valid)


# --- offset regularisers (offsets in mm so the weights are O(1) numbers) ----------------------------------
def term_static_mag(s: Step) -> torch.Tensor:
    return losses.offset_magnitude(1e3 * s.p["static"], s.fitter.static_weight)


def term_static_lap(s: Step) -> torch.Tensor:
    return laplacian_penalty(s.fitter.L_static, 1e3 * s.p["static"])


def term_dyn_mag(s: Step) -> torch.Tensor:
    d = 1e3 * s.p["dynamic"]
    return losses.offset_magnitude(d) if s.cfg.dyn_penalty == "l2" else losses.offset_norm(d)


def term_dyn_lap(s: Step) -> torch.Tensor:
    return laplacian_penalty(s.fitter.L_face, 1e3 * s.p["dynamic"])


def term_dyn_low(s: Step) -> torch.Tensor:
    R, A = s.fitter.face_smoother
    return losses.offset_low_frequency(R, A, 1e3 * s.p["dynamic"], s.cfg.dyn_low_iterations)


def term_dyn_smooth(s: Step) -> torch.Tensor:
    return losses.temporal_smoothness(1e3 * s.p["dynamic"])


def term_dyn_rank(s: Step) -> torch.Tensor:
    """The window's D_dyn as few patterns: a wrinkle that deepens and fades is one pattern whose depth
    changes, the photometric noise a fit turns into D_dyn differs on every frame (losses.nuclear_norm)."""
    return losses.nuclear_norm(1e3 * s.p["dynamic"])


def term_dyn_mean(s: Step) -> torch.Tensor:
    """The window's mean D_dyn is shared geometry: it belongs in D_static."""
    return ((1e3 * s.p["dynamic"]).mean(0) ** 2).sum(-1).mean()


def term_swing_mag(s: Step) -> torch.Tensor:
    return (s.p["swing"] ** 2).sum(-1).mean()


def term_swing_smooth(s: Step) -> torch.Tensor:
    return losses.temporal_smoothness(s.p["swing"])


# --- silhouette and photometric terms ----------------------------------------------------------------------
def silhouette_region(fitter, idx: torch.Tensor) -> torch.Tensor:
    """[B,R,R] where the silhouette counts: rows above the neck, not occluded, inside the video frame (a head
    cut by the frame's edge must not be pulled inside it), frames with a person found."""
    from headrep.io import crop_in_frame

    obs, i = fitter.obs, idx.numpy()
    R = fitter.scene.R
    rows = torch.arange(R)[None, :, None] < torch.as_tensor(obs.silhouette_rows[i])[:, None, None]
    ok = torch.as_tensor(obs.has_person[i]) & fitter.valid_t[idx]
    inside = torch.as_tensor(crop_in_frame(fitter.scene.boxes[idx].numpy(), fitter.scene.image_size, R))
    return rows & ~torch.as_tensor(obs.occluded[i]) & inside & ok[:, None, None]


def term_silhouette(s: Step) -> torch.Tensor:
    """Mean squared difference of the antialiased coverage and the person mask over the silhouette region (the
    antialiasing gives the vertices gradients at the mesh's outline)."""
    region = silhouette_region(s.fitter, s.idx)
    person = torch.as_tensor(s.fitter.obs.person[s.idx.numpy()])
    return (((s.maps["mask"] - person) ** 2) * region).sum() / region.sum().clamp_min(1)


def photometric_residual(fitter, idx, maps: dict, light: torch.Tensor):
    """(residual [P,C], keep [P] bool) at the P pixels of visible, unoccluded skin in the valid frames, frame
    by frame in row-major order: albedo × SH(normal) against the crop. ``keep`` leaves out the pixels whose
    residual is an outlier of their frame (a hand, hair across the face: more than photometric_outlier × the
    frame's median). Shaded on those pixels alone: skin is a sixth of the crop, and shading every pixel, with
    its gradient, took 14 % of a detail step."""
    from headrep.render import shading

    i = idx.numpy()
    sel = torch.as_tensor(fitter.obs.skin[i]) & (maps["rast"][..., 3] > 0) & fitter.valid_t[idx][:, None, None]
    at = sel.reshape(-1).nonzero()[:, 0]
    C = maps["albedo"].shape[-1]
    n = maps.get("shading_normal", maps["normal"]).reshape(-1, 3).index_select(0, at)
    n = n * torch.rsqrt((n * n).sum(-1, keepdim=True).clamp_min(1e-20))
    counts = sel.sum((1, 2)).tolist()
    shade = torch.cat([shading(nb[None, None], light[b:b + 1])[0, 0]
                       for b, nb in enumerate(torch.split(n, counts))])
    # a camera clips at white: a highlight brighter than 1 is seen as 1, and must not pull the geometry, albedo
    # or lights toward explaining more than that (5 % of the synthetic clip's skin pixels are clipped)
    shaded = (maps["albedo"].reshape(-1, C).index_select(0, at) * shade).clamp(max=1.0)
    res = shaded - fitter.images[idx].reshape(-1, C).index_select(0, at)
    with torch.no_grad():
        a = res.abs().mean(-1)
        med = torch.cat([x.median().expand(len(x)) for x in torch.split(a, counts) if len(x)])
        keep = a <= fitter.cfg.photometric_outlier * med.clamp_min(0.02)
    return res, keep


def term_photometric(s: Step) -> torch.Tensor:
    """Charbonnier colour error of albedo × SH shading over visible skin (normals not detached: shading that
    comes and goes moves D_dyn, what all frames share goes to D_static and the albedo)."""
    res, keep = photometric_residual(s.fitter, s.idx, s.maps, s.p["light"])
    eps = s.cfg.photometric_eps
    r = (res ** 2 + eps ** 2).sqrt() - eps
    return (r.mean(-1) * keep).sum() / keep.sum().clamp_min(1)


def term_albedo_lap(s: Step) -> torch.Tensor:
    La = s.fitter.L @ s.p["albedo"]
    return (La ** 2).sum(-1).mean()


def term_light_smooth(s: Step) -> torch.Tensor:
    return losses.temporal_smoothness(s.p["light"])


def term_light_white(s: Step) -> torch.Tensor:
    light = s.p["light"]
    return ((light - light.mean(-1, keepdim=True)) ** 2).mean()


#: name -> (function, FitConfig weight field, needs a render, the data term it belongs to — or "offsets" for
#: the offset regularisers, None for always)
TERMS = {
    "normal": (term_normal, "w_normal", True, "normals"),
    "depth": (term_depth, "w_depth", True, "normals"),
    "landmarks": (term_landmarks_detail, "w_landmarks_detail", False, None),
    "silhouette": (term_silhouette, "w_silhouette", True, "silhouette"),
    "photometric": (term_photometric, "w_photometric", True, "photometric"),
    "albedo_lap": (term_albedo_lap, "w_albedo_lap", False, "photometric"),
    "light_smooth": (term_light_smooth, "w_light_smooth", False, "photometric"),
    "light_white": (term_light_white, "w_light_white", False, "photometric"),
    "static_mag": (term_static_mag, "w_static_mag", False, "offsets"),
    "static_lap": (term_static_lap, "w_static_lap", False, "offsets"),
    "dyn_mag": (term_dyn_mag, "w_dyn_mag", False, "offsets"),
    "dyn_lap": (term_dyn_lap, "w_dyn_lap", False, "offsets"),
    "dyn_low": (term_dyn_low, "w_dyn_low", False, "offsets"),
    "dyn_smooth": (term_dyn_smooth, "w_dyn_smooth", False, "offsets"),
    "dyn_rank": (term_dyn_rank, "w_dyn_rank", False, "offsets"),
    "dyn_mean": (term_dyn_mean, "w_dyn_mean", False, "offsets"),
    "swing_mag": (term_swing_mag, "w_swing_mag", False, "swing"),
    "swing_smooth": (term_swing_smooth, "w_swing_smooth", False, "swing"),
}


def active_terms(fitter) -> list[str]:
    """The loss terms with a non-zero weight whose data this fit has (fitter.terms: the data terms in use;
    offset regularisers only when the offsets are fitted, the swing's when it is)."""
    c = fitter.cfg
    groups = set(fitter.terms) | ({"offsets"} if c.offsets else set()) | ({"swing"} if fitter.fits_swing else set())
    return [n for n, (_, w, _, g) in TERMS.items() if getattr(c, w) and (g is None or g in groups)]


def base_surface(fitter) -> bool:
    """Whether the normal and depth maps show the geometry without D_dyn: when the dense targets are a coarse
    mesh's (MediaPipe's, which holds no wrinkle or fold) and the photometric term is on, the image alone
    supervises D_dyn; the coarse mesh's flat normals would otherwise iron every wrinkle out (synthetic clip,
    100 epochs: D_dyn correlation with the true wrinkles -0.03 -> 0.5)."""
    tg = fitter.targets
    return (fitter.cfg.offsets and "photometric" in fitter.terms and "normals" in fitter.terms
            and bool(getattr(tg, "coarse", False)))


def render_step(fitter, verts: torch.Tensor, idx: torch.Tensor, p: dict, base: torch.Tensor | None = None) -> dict:
    """The maps a step needs. With the photometric term also the albedo and the shading normals, interpolated
    over a fixed coverage: shading moves the geometry through its normals (wrinkles), not by sliding the
    albedo over the image (which the landmarks and the silhouette already place). ``base``: the vertices
    without D_dyn, whose normals and depth the normal and depth maps then show (see base_surface)."""
    cam = to_camera(verts)
    if "photometric" not in fitter.terms:
        return fitter.scene.render(cam, idx, float(p["focal"]))
    from headrep.render import surface_normals

    vn = surface_normals(cam, fitter.scene.head.faces_t)
    attrs = {"albedo": p["albedo"], "shading_normal": vn}
    # the normal maps share the shading's normals, unless they show the surface without D_dyn (render_maps
    # computes that one's)
    surface = None if base is None else to_camera(base)
    # (the shading normals are interpolated, not renormalised: photometric_residual does that on skin alone)
    return fitter.scene.render(cam, idx, float(p["focal"]), attributes=attrs, attributes_fixed_coverage=True,
                               normals=vn if surface is None else None, surface=surface)


def detail_loss(fitter, idx: torch.Tensor, p: dict) -> tuple[torch.Tensor, dict]:
    """Total loss of a window and its weighted terms (floats, for progress and tests)."""
    c, scene = fitter.cfg, fitter.scene
    names = active_terms(fitter)
    if base_surface(fitter):
        verts, pose, base = scene.dense(p, offsets=c.offsets, base=True)
    else:
        (verts, pose), base = scene.dense(p, offsets=c.offsets), None
    step = Step(fitter, idx, p, verts, pose, fitter.valid_t[idx])
    if any(TERMS[n][2] for n in names):
        step.maps = render_step(fitter, verts, idx, p, base)
    loss = priors(c, p) + smoothness(c, p)
    terms = {}
    for n in names:
        fn, w, _, _ = TERMS[n]
        value = getattr(c, w) * fn(step)
        terms[n] = float(value.detach())
        loss = loss + value
    return loss, terms


def windows(T: int, w: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Windows of ``w`` consecutive frames covering 0..T-1 (the last one shifted back), in a random order."""
    w = max(1, min(w, T))
    starts = list(range(0, max(T - w, 0) + 1, w))
    if starts[-1] + w < T:
        starts.append(T - w)
    order = torch.randperm(len(starts), generator=gen).tolist()
    return [torch.arange(starts[i], starts[i] + w) for i in order]


def run_detail(fitter, progress: bool = True, start_epoch: int = 0, checkpoint: dict | None = None) -> None:
    c, P, T = fitter.cfg, fitter.params, fitter.scene.T
    frame_lr = {"expression": c.lr_detail, "jaw": c.lr_detail, "neck": c.lr_detail, "rot": c.lr_detail,
                "tau": c.lr_detail * 0.05}
    if c.offsets:
        frame_lr["dynamic"] = c.lr_dynamic
    photometric = "photometric" in fitter.terms
    if photometric:
        frame_lr["light"] = c.lr_light
    if fitter.fits_swing:
        frame_lr["swing"] = c.lr_swing
    shared = ["betas"] + (["static"] if c.offsets else []) + (["albedo"] if photometric else [])
    P.requires_grad(list(frame_lr) + shared)
    row_opts = {n: RowAdam(P[n], lr, eps=c.dyn_adam_eps if n == "dynamic" else 1e-8)
                for n, lr in frame_lr.items()}
    opt = torch.optim.Adam([{"params": [P.betas], "lr": c.lr_detail}]
                           + ([{"params": [P.static], "lr": c.lr_offsets, "eps": c.static_adam_eps}]
                              if c.offsets else [])
                           + ([{"params": [P.albedo], "lr": c.lr_albedo}] if photometric else []))
    if checkpoint is not None and "detail_opt" in checkpoint:
        opt.load_state_dict(checkpoint["detail_opt"])
        for n, o in row_opts.items():
            o.load_state_dict(checkpoint["row_opts"][n])
    gen = torch.Generator().manual_seed(c.seed + 1)
    per_epoch = len(windows(T, c.window, torch.Generator().manual_seed(0)))
    total = c.detail_epochs * per_epoch
    bar = progress_bar(None, total, "stage 2 detail", "step", enabled=progress, initial=start_epoch * per_epoch)
    step = start_epoch * per_epoch
    every = max(1, c.checkpoint_every // per_epoch) if c.checkpoint_every else 0
    for epoch in range(c.detail_epochs):
        order = windows(T, c.window, gen)  # drawn every epoch so a resumed run sees the same order
        if epoch < start_epoch:
            continue
        for idx in order:
            for n in list(frame_lr) + shared:
                P[n].grad = None
            loss, terms = detail_loss(fitter, idx, P.view(idx))
            loss.backward()
            opt.step()
            for o in row_opts.values():
                o.step(idx)
            step += 1
            bar.update(1)
            if step % 5 == 0:
                bar.set_postfix({k: f"{v:.2e}" for k, v in terms.items()
                                 if k in ("normal", "depth", "landmarks", "silhouette", "photometric")})
        if every and (epoch + 1) % every == 0:
            fitter.checkpoints.save(fitter, "detail", epoch + 1, detail_opt=opt.state_dict(),
                                    row_opts={n: o.state_dict() for n, o in row_opts.items()})
    bar.close()
    P.requires_grad(list(frame_lr) + shared, False)
    P.fill_invalid(list(frame_lr), fitter.valid)
