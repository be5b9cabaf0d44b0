"""Synthetic clips with known ground truth: the stand-in (or any model) with chosen β, ψ_t, jaw, pose,
D_static and D_dyn,t rendered into MediaPipe-like landmarks and normal/depth targets.

The fitter's tests and benchmarks feed these through the same detector/estimator interfaces as real video,
then compare the fitted dense meshes with the truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from headrep.fitting.config import FitConfig
from headrep.model import NUM_JOINTS, NUM_MP_POINTS, BodyModel, DenseHead, to_camera
from headrep.rep import HeadRep
from headrep.render import get_context
from headrep.render.maps import PinholeCamera, render_maps



@dataclass
class SyntheticTrack:
    """The FaceTrack fields the fitter reads."""

    points: np.ndarray      # [T,478,3] crop pixels (NaN where invalid)
    valid: np.ndarray       # [T] bool
    boxes: np.ndarray       # [T,3] (x0, y0, side) in frame pixels
    resolution: int
    image_size: tuple
    crops: np.ndarray | None = None
    indices: np.ndarray | None = None
    fps: float = 25.0
    source: str = "synthetic"


@dataclass
class SyntheticTargets:
    normal: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    has_depth: bool = True
    source: str = "synthetic ground truth"


@dataclass
class Truth:
    betas: torch.Tensor
    expression: torch.Tensor
    pose: torch.Tensor
    transl: torch.Tensor
    static: torch.Tensor
    dynamic: torch.Tensor         # [T,Nd,3] (zero off the face)
    vertices_cam: torch.Tensor    # [T,Nd,3] dense posed vertices in camera space
    focal: float
    extra: dict = field(default_factory=dict)


def rest_canonical(head: DenseHead, betas: torch.Tensor) -> torch.Tensor:
    """The dense head of shape ``betas`` at rest (no expression, no pose) [Nd,3]: where a clip's offsets are
    laid out, along its normals."""
    body = head.body
    return head(betas.reshape(1, -1).float(), torch.zeros(1, body.num_expression),
                torch.zeros(1, NUM_JOINTS, 3)).canonical[0]


def _smooth_track(T: int, k: int, g: torch.Generator, key_every: float | None = None) -> torch.Tensor:
    """[T,k] standard-normal keyframes, cosine-interpolated: ``key_every`` frames apart (None: T // 4 + 2 keys
    over the clip, ~2.3 frames apart on 8 frames: a few frames that sample a video sparsely)."""
    if key_every is None:
        keys = torch.randn(max(2, T // 4 + 2), k, generator=g)
        x = torch.linspace(0, len(keys) - 1.001, T)
    else:
        keys = torch.randn(int(np.ceil((T - 1) / key_every)) + 2, k, generator=g)
        x = torch.arange(T, dtype=torch.float32) / key_every
    i = x.floor().long()
    w = (1 - torch.cos(np.pi * (x - i)))[:, None] / 2
    return keys[i] * (1 - w) + keys[i + 1] * w


def smooth_field(head: DenseHead, centres: np.ndarray, sigma: float, amplitude: np.ndarray,
                 canonical: torch.Tensor) -> torch.Tensor:
    """Sum of Gaussian bumps along the outward normals of the canonical dense mesh, [Nd,3] metres."""
    from headrep.model.meshops import vertex_normals

    n = vertex_normals(canonical, head.faces_t.long())
    d2 = ((canonical[:, None] - torch.as_tensor(centres, dtype=canonical.dtype)[None]) ** 2).sum(-1)
    bumps = (torch.as_tensor(amplitude, dtype=canonical.dtype)[None] * torch.exp(-0.5 * d2 / sigma ** 2)).sum(1)
    return n * bumps[:, None]


def wrinkles(head: DenseHead, canonical: torch.Tensor, strength: torch.Tensor, below_top: float = 0.035,
             width: float = 0.02, period: float = 0.02, span: float | None = None) -> torch.Tensor:
    """Forehead wrinkles: a sinusoid (``period`` metres) across the forehead along the normals, amplitude per
    frame [T] (metres), in a band ``below_top`` under the top of the face region (Gaussian of sigma ``width``),
    fading towards the temples (Gaussian of sigma ``span`` across; None: the whole width)."""
    from headrep.model.meshops import vertex_normals

    n = vertex_normals(canonical, head.faces_t.long())
    y = canonical[:, 1]
    face = torch.as_tensor(head.face_mask, dtype=canonical.dtype)
    brow = canonical[torch.as_tensor(head.face_mask)][:, 1].max() - below_top
    band = torch.exp(-0.5 * ((y - brow) / width) ** 2) * face
    if span is not None:
        x = canonical[:, 0] - canonical[torch.as_tensor(head.face_mask)][:, 0].mean()
        band = band * torch.exp(-0.5 * (x / span) ** 2)
    pattern = torch.cos(2 * np.pi * (y - brow) / period) * band   # a fold between two creases
    return strength[:, None, None] * (pattern[:, None] * n)[None]


def hair(head: DenseHead, canonical: torch.Tensor, height_mm: float, seed: int = 0) -> torch.Tensor:
    """Hair-like volume on the scalp: a smooth outward bulge over the crown and the back of the head (zero on
    the face and below the ears) with a few lumps, along the normals [Nd,3] metres."""
    from headrep.model.meshops import vertex_normals

    n = vertex_normals(canonical, head.faces_t.long())
    face = torch.as_tensor(head.face_mask)
    brow_top = canonical[face][:, 1].max()
    ear = canonical[face][:, 1].mean()
    y = canonical[:, 1]
    ramp = ((y - ear) / (brow_top - ear)).clamp(0, 1) ** 2          # 0 at ear height, 1 above the brows
    g = torch.Generator().manual_seed(seed)
    phase = 2 * np.pi * torch.rand(2, generator=g)
    lumps = 1 + 0.25 * torch.sin(40 * canonical[:, 0] + phase[0]) * torch.sin(40 * canonical[:, 2] + phase[1])
    h = 1e-3 * height_mm * ramp * lumps * (~face).to(canonical.dtype)
    return n * h[:, None]


def albedo_field(head: DenseHead, canonical: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A skin albedo [Nd,3] in [0,1] with spatial variation (low-frequency tone changes and darker spots), dark
    hair above the ears outside the face."""
    rng = np.random.default_rng(seed)
    c = canonical
    base = torch.tensor([0.78, 0.58, 0.47], dtype=c.dtype)
    tone = 0.06 * torch.sin(30 * c[:, 0:1] + 1.0) * torch.cos(25 * c[:, 1:2])
    alb = base[None] * (1 + tone)
    face_ids = np.nonzero(head.face_mask)[0]
    for i in rng.choice(face_ids, 12, replace=False):            # freckle-like spots
        d2 = ((c - c[int(i)]) ** 2).sum(-1)
        alb = alb * (1 - 0.25 * torch.exp(-0.5 * d2 / 0.004 ** 2))[:, None]
    face = torch.as_tensor(head.face_mask)
    ear = c[face][:, 1].mean()
    scalp = ((~face) & (c[:, 1] > ear)).to(c.dtype)[:, None]
    alb = alb * (1 - scalp) + torch.tensor([0.25, 0.17, 0.12], dtype=c.dtype)[None] * scalp
    return alb.clamp(0, 1)


def lights(T: int, g: torch.Generator, key_every: float | None = None) -> torch.Tensor:
    """Per-frame SH lights [T,9,3]: a slightly warm ambient term and a key light that moves over the clip."""
    from headrep.render import neutral_light

    L = neutral_light(T, 3) * torch.tensor([0.75, 0.71, 0.69])[None, None]
    d = 0.12 * _smooth_track(T, 3, g, key_every)
    L[:, 1:4] = (d + torch.tensor([0.15, -0.3, -0.25])[None]) [:, :, None] * torch.tensor([1.0, 0.97, 0.95])[None, None]
    L[:, 4:] = 0.05 * _smooth_track(T, 5, g, key_every)[:, :, None]
    return L


def make_clip(body: BodyModel, T: int = 6, resolution: int = 160, levels: int = 1, seed: int = 0,
              expressive: bool = True, static_mm: float = 2.0, wrinkle_mm: float = 2.5, wrinkles_signed: bool = True,
              image_size=(360, 640), ctx=None, rgb: bool = False, hair_mm: float = 15.0,
              expression_amplitude: float = 1.0, key_every: float | None = None, hair_hangs: bool | None = None,
              hair_swing_deg: float = 0.0):
    """A synthetic clip: (track, targets, truth, head).

    ``rgb=True`` also renders what a camera would see, so a fit can use the silhouette and photometric terms
    without any normal targets: hair-like volume ``hair_mm`` on the scalp (in D_static), a spatially varying
    albedo and per-frame SH lights; ``track.crops`` are the shaded images (uint8, on a grey background),
    ``truth.extra["observations"]`` the masks a real video gives (person = the true coverage; skin from the
    landmarks as for a video), and ``truth.extra`` the true albedo [Nd,3] and lights [T,9,3]. ``key_every``:
    frames between the keyframes of the expression, pose, wrinkles and lights (None: ~2.3 on 8 frames, a video
    sampled sparsely; 6 on 24 frames moves more like a video). ``hair_hangs``: how the true head poses D_static
    below the ears (None: as a fit does by default, FitConfig.hair_hangs); ``hair_swing_deg``: the hanging hair
    also swings frame by frame about the viewing axis (keyframes of this standard deviation, degrees) and half as
    much about the ear-to-ear axis (``truth.extra["hair_swing"]`` [T,3]; 0: it hangs straight, as in the
    benchmark clip)."""
    g = torch.Generator().manual_seed(seed)
    head = DenseHead(body, levels=levels, hair_hangs=FitConfig.hair_hangs if hair_hangs is None else hair_hangs)
    ctx = ctx or get_context("cpu")
    H, W = image_size
    focal = 1.5 * max(H, W)
    betas = 0.8 * torch.randn(1, body.num_betas, generator=g)
    expression = torch.zeros(T, body.num_expression)
    pose = torch.zeros(T, 55, 3)
    if expressive:
        k = min(6, body.num_expression)
        expression[:, :k] = expression_amplitude * _smooth_track(T, k, g, key_every)
        pose[:, 22, 0] = 0.08 * (1 + _smooth_track(T, 1, g, key_every)[:, 0]).clamp(0, 2)
    pose[:, 12] = 0.08 * _smooth_track(T, 3, g, key_every)
    pose[:, 0] = 0.05 * _smooth_track(T, 3, g, key_every)
    with torch.no_grad():
        canonical = rest_canonical(head, betas)
        face = torch.as_tensor(head.face_mask)
        centre = canonical[face].mean(0)
        # identity detail: bumps all over (hair/ears-like outside the face, small ones on it)
        rng = np.random.default_rng(seed)
        face_ids, other_ids = np.nonzero(head.face_mask)[0], np.nonzero(~head.face_mask)[0]
        pick = np.concatenate([rng.choice(face_ids, 10, replace=False), rng.choice(other_ids, 14, replace=False)])
        amp = 1e-3 * static_mm * rng.choice([-1.0, 1.0], 24) * rng.uniform(0.6, 1.0, 24)
        static = smooth_field(head, canonical[pick].numpy(), 0.012, amp, canonical)
        if rgb:
            static = static + hair(head, canonical, hair_mm, seed)
        # expression detail: forehead wrinkles whose depth follows brow raising (expression 3 on the stand-in)
        # signed and zero-mean over the clip, like a corrective that follows an expression coefficient: what
        # every frame shares is identity (D_static), what varies is expression (D_dyn)
        s = _smooth_track(T, 1, g, key_every)[:, 0]
        if not expressive:
            s = torch.zeros(T)
        elif wrinkles_signed:
            s = (s - s.mean()) / (s - s.mean()).abs().max().clamp_min(1e-6)
        else:  # wrinkles appear when the brows go up and are absent otherwise (non-negative, not zero-mean)
            s = (s - s.median()).clamp_min(0)
            s = s / s.max().clamp_min(1e-6)
        strength = 1e-3 * wrinkle_mm * s
        # with images: the band on the mid-forehead, between the face oval's top (MediaPipe point 10, 28 mm
        # under the face region's top on the stand-in) and the brows (60 mm), fading before the temples: where
        # a video's skin mask sees the skin (lower or wider, most of it fell in the brows' cut-outs or outside
        # the face oval, where no image term can see it)
        dynamic = wrinkles(head, canonical, strength, *((0.040, 0.008, 0.024, 0.025) if rgb else ()))
        # place the head ~0.7 m in front of the camera, its face centre on the optical axis (model → camera flip)
        transl = torch.zeros(T, 3)
        transl[:, 2] = -0.7 - centre[2]
        transl[:, 1] = -centre[1]
        transl[:, :2] += 0.01 * torch.randn(T, 2, generator=g)
        swing = None
        if hair_swing_deg:   # its own generator: the clip's other draws stay those of a clip without a swing
            sway = np.radians(hair_swing_deg) * _smooth_track(T, 2, torch.Generator().manual_seed(seed + 1000),
                                                               key_every)
            swing = torch.stack([0.5 * sway[:, 0], torch.zeros(T), sway[:, 1]], -1)
        out = head(betas, expression, pose, transl, static_offsets=static, dynamic_offsets=dynamic,
                   hair_swing=swing)
        verts_cam = to_camera(out.vertices)
        # crop boxes: square around the projected face, like the tracker's
        cam_full = PinholeCamera(focal, focal, (W - 1) / 2, (H - 1) / 2, W, H)
        uv, _ = cam_full.project(verts_cam[:, face])
        lo, hi = uv.min(1).values, uv.max(1).values
        side = 1.6 * (hi - lo).max(-1).values
        c = 0.5 * (lo + hi)
        boxes = torch.stack([c[:, 0] - side / 2, c[:, 1] - side / 2, side], -1).double()
        cams = []
        for t in range(T):
            x0, y0, s_ = boxes[t].tolist()
            s = resolution / s_
            cams.append(PinholeCamera(focal * s, focal * s, ((W - 1) / 2 - x0) * s, ((H - 1) / 2 - y0) * s,
                                      resolution, resolution, near=0.05, far=20.0))
        maps = render_maps(ctx, verts_cam, head.faces_t, cams, antialias=False)
        # targets only on the face (like the MediaPipe-mesh estimator)
        from headrep import render as R

        pos = torch.stack([cams[t].to_clip(verts_cam[t]) for t in range(T)])
        rast, _ = R.rasterize(ctx, pos, head.faces_t, (resolution, resolution))
        face_attr, _ = R.interpolate(face.float()[:, None].contiguous(), rast, head.faces_t)
        mask = (face_attr[..., 0] > 0.99) & (maps["mask"] > 0.5)
        # MediaPipe-like points: the 478 embedded points projected into the crop (z in the same pixel units)
        lmk = body.landmarks_mp478(_coarse_full(body, head, out.vertices))
        pts = np.zeros((T, 478, 3), np.float32)
        for t in range(T):
            p = to_camera(lmk[t])
            uv, z = cams[t].project(p)
            pts[t, :, :2] = uv.numpy()
            pts[t, :, 2] = ((z - z.mean()) * cams[t].fx / z.mean()).numpy()
    track = SyntheticTrack(points=pts, valid=np.ones(T, bool), boxes=boxes.numpy(), resolution=resolution,
                           image_size=(H, W), indices=np.arange(T))
    targets = SyntheticTargets(normal=maps["normal"].numpy().astype(np.float32),
                               depth=maps["depth"].numpy().astype(np.float32), mask=mask.numpy())
    truth = Truth(betas[0], expression, pose, transl, static, dynamic, verts_cam, focal)
    if swing is not None:
        truth.extra["hair_swing"] = swing
    if rgb:
        _render_rgb(track, truth, head, canonical, cams, ctx, seed, g, key_every)
    return track, targets, truth, head


@torch.no_grad()
def _render_rgb(track, truth, head, canonical, cams, ctx, seed: int, g: torch.Generator,
                key_every: float | None = None) -> None:
    """Shade the true mesh with a true albedo and lights into ``track.crops``; the masks into truth.extra."""
    from headrep.fitting.observe import Observations, silhouette_rows, skin_mask
    from headrep.render import shading

    T, R = truth.vertices_cam.shape[0], track.resolution
    albedo = albedo_field(head, canonical, seed)
    light = lights(T, g, key_every)
    m = render_maps(ctx, truth.vertices_cam, head.faces_t, cams, attributes={"albedo": albedo})
    rgb = (m["albedo"] * shading(m["normal"], light)).clamp(0, 1)
    cover = m["mask"].clamp(0, 1)[..., None]
    background = torch.tensor([0.55, 0.57, 0.6])
    img = rgb * cover + background * (1 - cover)
    track.crops = (img * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    person = m["mask"].clamp(0, 1).numpy().astype(np.float32)
    skin = np.stack([skin_mask(track.points[t], R) for t in range(T)])
    rows = np.array([silhouette_rows(track.points[t], R) for t in range(T)])
    truth.extra.update({"albedo": albedo, "light": light,
                        "observations": Observations(person, skin, np.zeros((T, R, R), bool), rows,
                                                     np.ones(T, bool), np.zeros(T, np.float32), False,
                                                     "synthetic: the true coverage")})


def _coarse_full(body: BodyModel, head: DenseHead, dense_vertices: torch.Tensor) -> torch.Tensor:
    """Full coarse vertex array [B,V,3] with the S rows taken from the dense mesh (offsets included)."""
    B = dense_vertices.shape[0]
    full = torch.zeros(B, body.num_vertices, 3, dtype=dense_vertices.dtype)
    full[:, head.subset_t] = dense_vertices[:, : len(head.subset)]
    return full


def similarity_align(pred: torch.Tensor, truth: torch.Tensor, apply_to: torch.Tensor | None = None) -> torch.Tensor:
    """pred [B,N,3] aligned onto truth [B,N,3] per frame by a similarity (Umeyama: rotation, translation,
    scale) - monocular fits recover a head only up to its size/distance trade-off. ``apply_to`` [B,M,3]: other
    points moved by the same similarity (e.g. the whole head placed by its face) instead of ``pred``."""
    mp, mt = pred.mean(1, keepdim=True), truth.mean(1, keepdim=True)
    P, Q = pred - mp, truth - mt
    H = P.transpose(1, 2) @ Q
    U, S, Vt = torch.linalg.svd(H)
    d = torch.sign(torch.det(Vt.transpose(1, 2) @ U.transpose(1, 2)))
    D = torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1)
    R = Vt.transpose(1, 2) @ torch.diag_embed(D) @ U.transpose(1, 2)
    scale = (S * D).sum(-1) / (P ** 2).sum((1, 2))
    X = P if apply_to is None else apply_to - mp
    return scale[:, None, None] * X @ R.transpose(1, 2) + mt


def face_errors_mm(pred_cam: torch.Tensor, truth_cam: torch.Tensor, face_mask) -> dict:
    """Mean per-vertex error on the face region: absolute (camera space) and after per-frame similarity
    alignment."""
    m = torch.as_tensor(face_mask)
    p, t = pred_cam[:, m].double(), truth_cam[:, m].double()
    return {"absolute_mm": float((p - t).norm(dim=-1).mean() * 1e3),
            "aligned_mm": float((similarity_align(p, t) - t).norm(dim=-1).mean() * 1e3)}


@torch.no_grad()
def dyn_along_normals(fitter, truth: Truth) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, truth) D_dyn along the true head's rest normals, face vertices, every frame [T,F] (metres)."""
    from headrep.model.meshops import vertex_normals

    head = fitter.scene.head
    face = torch.as_tensor(head.face_mask)
    n = vertex_normals(rest_canonical(head, truth.betas), head.faces_t.long())[face][None]
    true = truth.dynamic[:, face].float()
    dyn = torch.zeros(true.shape[0], head.num_vertices, 3).index_copy(1, fitter.scene.face_idx,
                                                                        fitter.params.dynamic)[:, face]
    return (dyn * n).sum(-1), (true * n).sum(-1)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.reshape(-1), b.reshape(-1)]))[0, 1])


def dyn_correlation(fitter, truth: Truth) -> float:
    """Correlation of a fit's D_dyn with the truth's along the true head's rest normals (the direction the
    clip's wrinkles take, and the component an image shows), over the face region and every frame: the fit's
    D_dyn away from the wrinkles and on the frames without them counts too. (Until this round the direction
    was each frame's true offset's, zero wherever and whenever the truth had none, and so was the fit's
    counted D_dyn there: the benchmark clip's fit read 0.58 that way and reads 0.25 this way.)"""
    return _corr(*dyn_along_normals(fitter, truth))


def dyn_parts(fitter, truth: Truth) -> dict:
    """Where a fit's D_dyn (along the true rest normals, face) goes, in mm rms, against the truth's wrinkles:
    "shared", its per-vertex mean over the frames (what every frame shares, which the design puts in D_static);
    the rest ("varying") off the wrinkles' vertices ("varying_off"), and the whole of it on them (where the
    truth reaches 5 % of its deepest) in the frames with and without wrinkles ("on_with", "on_without"; the
    truth's: "true_on_with"); "varying_correlation", the correlation of the two varying parts (the split into
    D_static and D_dyn of what all frames share is a convention; this part is not)."""
    fit, true = dyn_along_normals(fitter, truth)
    on = true.abs().amax(0) > 0.05 * true.abs().max()   # the vertices the wrinkles reach
    with_ = true.abs().amax(1) > 0           # the frames that have them
    vf, vt = fit - fit.mean(0), true - true.mean(0)
    rms = lambda x: float(x.pow(2).mean().sqrt() * 1e3) if x.numel() else float("nan")  # noqa: E731
    return {"shared": rms(fit.mean(0)), "varying_off": rms(vf[:, ~on]), "on_with": rms(fit[with_][:, on]),
            "on_without": rms(fit[~with_][:, on]), "true_on_with": rms(true[with_][:, on]),
            "varying_correlation": _corr(vf, vt)}


@torch.no_grad()
def face_error_by_part(fitter, truth: Truth) -> dict:
    """Where a fit's face error lives: the face error (mm, per-frame similarity alignment) of the fitted head
    posed by its jaw alone (the head's rigid pose drops out in the alignment), then again with one part of the
    fit replaced by the truth's: "identity" (β and D_static) or "expression" (ψ, jaw and D_dyn). What a
    replacement removes is that part's share."""
    from headrep.model import J_JAW

    sc, P = fitter.scene, fitter.params
    head, T = sc.head, truth.dynamic.shape[0]
    fit = {"betas": P.betas[None], "static": P.static * sc.surface, "expression": P.expression, "jaw": P.jaw,
           "dynamic": torch.zeros(T, head.num_vertices, 3).index_copy(1, sc.face_idx, P.dynamic)}
    true = {"betas": truth.betas.reshape(1, -1).float(), "static": truth.static.float(),
            "expression": truth.expression.float(), "jaw": truth.pose[:, J_JAW].float(),
            "dynamic": truth.dynamic.float()}
    face = torch.as_tensor(head.face_mask)

    def posed(q):
        pose = torch.zeros(T, truth.pose.shape[1], 3)
        pose[:, J_JAW] = q["jaw"]
        return head(q["betas"], q["expression"], pose, static_offsets=q["static"],
                    dynamic_offsets=q["dynamic"]).vertices[:, face].double()

    target = posed(true)
    parts = {"fit": (), "identity": ("betas", "static"), "expression": ("expression", "jaw", "dynamic")}
    out = {}
    for name, keys in parts.items():
        v = posed({k: true[k] if k in keys else fit[k] for k in fit})
        out[name] = float((similarity_align(v, target) - target).norm(dim=-1).mean() * 1e3)
    return out


@torch.no_grad()
def start_at_truth(fitter, truth: Truth) -> None:
    """Set a fitter's unknowns to a synthetic clip's truth (shape, expression, pose, focal, both offset fields,
    the hair's swing, and with an RGB clip the albedo and lights): the fitted head then equals
    ``truth.vertices_cam``. Running the detail stage from there shows where its losses pull away from the truth
    (each term's bias and noise)."""
    from headrep.model import J_JAW, J_NECK, J_ROOT, axis_angle_to_matrix

    P, sc = fitter.params, fitter.scene
    P.betas = truth.betas.reshape(-1).float().clone()
    P.expression = truth.expression.float().clone()
    P.rot, P.neck, P.jaw = (truth.pose[:, j].float().clone() for j in (J_ROOT, J_NECK, J_JAW))
    # Scene.transl's inverse: transl = tau + pivot − R·pivot
    P.tau = truth.transl.float() - sc.pivot + torch.einsum("bij,j->bi", axis_angle_to_matrix(P.rot), sc.pivot)
    P.log_focal = torch.tensor(float(truth.focal)).log()
    P.static = truth.static.float().clone()
    P.dynamic = truth.dynamic[:, sc.face_idx].float().clone()
    P.swing = truth.extra.get("hair_swing", torch.zeros_like(P.swing)).float().clone()
    if "albedo" in truth.extra:
        P.albedo = truth.extra["albedo"].float().clone()
        P.light = truth.extra["light"].float().clone()
        fitter.appearance_ready = True


# ----------------------------------------------------------------------------------------------------------
# synthetic reps (tests, notebooks): plausible parameters without fitting


def make_synthetic_rep(body, head, T: int = 5, seed: int = 0, resolution: int = 256,
                       image_size: tuple[int, int] = (480, 640), focal: float | None = None,
                       source_path: str | Path | None = None, fps: float = 25.0, invalid: Iterable[int] = (),
                       frame_indices: Iterable[int] | None = None, landmarks: bool = True) -> HeadRep:
    """A plausible HeadRep without fitting: random small expression / jaw / neck / global rotation, the head
    ~0.8 m in front of the camera (wandering a few cm), each crop box framing the face, smooth small static
    and dynamic offsets (≤ ~2 mm), and "detected" landmarks = the model's MediaPipe points projected into the
    crop plus ~1 px noise (NaN on ``invalid`` positions, which are also marked invalid).

    ``source_path``: a video to record as the source (its frames should be ``image_size`` = [H, W]); default
    a placeholder "synthetic" path that does not exist.
    """
    g = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    dt = body.dtype
    H, W = (int(v) for v in image_size)
    focal = float(focal) if focal is not None else 1.1 * max(H, W)
    principal = np.array([(W - 1) / 2.0, (H - 1) / 2.0])
    p = body.zero_params(T)
    betas = 0.5 * torch.randn(body.num_betas, generator=g, dtype=dt)
    expr = 0.4 * torch.randn(T, body.num_expression, generator=g, dtype=dt)
    pose = p["pose"]
    pose[:, 0] = 0.04 * torch.randn(T, 3, generator=g, dtype=dt)                   # global orientation
    pose[:, 12] = 0.06 * torch.randn(T, 3, generator=g, dtype=dt)                  # neck
    pose[:, 15] = 0.06 * torch.randn(T, 3, generator=g, dtype=dt)                  # head
    pose[:, 22, 0] = 0.2 * torch.rand(T, generator=g, dtype=dt)                    # jaw open
    Nd = head.num_vertices
    fv = np.nonzero(np.asarray(head.face_mask))[0]
    fm = torch.as_tensor(fv)
    with torch.no_grad():
        rest = head(betas[None], expr[:1] * 0, pose[:1] * 0).vertices[0]
    # smooth offset fields from the rest positions
    ph = torch.as_tensor(rng.uniform(0, 2 * np.pi, size=(3, 3)), dtype=dt)
    static = 0.0015 * torch.sin(40.0 * rest[:, [1, 2, 0]] + ph[0])
    static = static.to(dt)
    tt = torch.arange(T, dtype=dt)[:, None, None]
    dyn = 0.001 * torch.sin(60.0 * rest[fm][None, :, [2, 0, 1]] + ph[1] + 0.7 * tt)
    with torch.no_grad():
        out = head(betas[None], expr, pose, static_offsets=static, dynamic_offsets=_scatter(dyn, fm, Nd))
    centre = out.vertices[:, fm].mean(1)                                              # [T,3] face centre
    wander = torch.as_tensor(rng.normal(0, 0.02, size=(T, 3)), dtype=dt)
    target = torch.tensor([0.0, 0.0, -0.8], dtype=dt) + wander                        # model axes
    transl = target - centre
    verts_cam = to_camera(out.vertices + transl[:, None])
    face_cam = verts_cam[:, fm].double().numpy()
    u = focal * face_cam[..., 0] / face_cam[..., 2] + principal[0]
    v = focal * face_cam[..., 1] / face_cam[..., 2] + principal[1]
    cx, cy = 0.5 * (u.min(1) + u.max(1)), 0.5 * (v.min(1) + v.max(1))
    side = 1.6 * np.maximum(u.max(1) - u.min(1), v.max(1) - v.min(1))
    boxes = np.stack([cx - side / 2, cy - side / 2, side], 1)
    invalid = sorted(int(i) % T for i in invalid) if T else []
    valid = np.ones(T, np.uint8)
    valid[invalid] = 0
    tensors = {"betas": betas, "expression": expr, "pose": pose, "transl": transl, "focal": [focal],
               "principal": principal, "boxes": boxes, "static_offsets": static, "dynamic_offsets": dyn,
               "face_vertices": fv, "valid": valid,
               "frame_indices": np.arange(T) if frame_indices is None else np.asarray(list(frame_indices))}
    if landmarks and body.mp478 is not None:
        with torch.no_grad():
            posed = body(betas[None], expr, pose, transl=transl).vertices
            # one frame at a time: BodyModel.landmarks_mp478 fails for batches > 1 (expand + view in smplx)
            mp = torch.cat([body.landmarks_mp478(posed[i:i + 1]) for i in range(T)], 0)
            mp = to_camera(mp).double().numpy()
        s = resolution / side
        lu = (focal * mp[..., 0] / mp[..., 2] + principal[0] - boxes[:, None, 0]) * s[:, None]
        lv = (focal * mp[..., 1] / mp[..., 2] + principal[1] - boxes[:, None, 1]) * s[:, None]
        lz = (mp[..., 2] - mp[..., 2].mean(1, keepdims=True)) * focal * s[:, None]
        lm = np.stack([lu, lv, lz], -1) + rng.normal(0, 1.0, size=(T, NUM_MP_POINTS, 3)) * np.array([1, 1, 0])
        lm[invalid] = np.nan
        tensors["landmarks"] = lm.astype(np.float32)
    source = {"path": str(source_path) if source_path is not None else "synthetic (no source video)",
              "kind": "video" if source_path is not None else "synthetic", "fps": float(fps),
              "image_size": [H, W], "scale": 1.0,
              "num_frames": int(tensors["frame_indices"][-1]) + 1 if T else 0}
    fit = {"synthetic": True, "seed": int(seed), "stats": {"note": "synthetic rep, not fitted"}}
    return HeadRep.create(body, head, tensors, source, resolution, fit)


def _scatter(compact: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    out = compact.new_zeros(compact.shape[0], n, 3)
    out[:, idx] = compact
    return out
