"""What each data term of `headrep fit` buys: real videos and synthetic ground truth.

Real videos (WolfgangLanger_Pexels, single_face; stand-in model unless --models adds "open"): the inputs are
prepared once per video (`headrep.fitting.pipeline.prepare_inputs`: landmarks, MediaPipe-mesh normal targets,
person / skin / hand masks), then fitted with the CLI's defaults and the terms of each row:

    landmarks only | + MediaPipe normals | + silhouette | + photometric (all terms, the default)

Columns (the fitter's `evaluate()` on the valid frames): landmark NME, head-region silhouette IoU (rows above
the chin, person mask > 0.5 vs rendered coverage > 0.5), photometric L1 over visible skin (0-1 colour units;
after each fit the albedo and lights are fitted afresh to the fixed geometry, from the same initial albedo, so
every row's geometry is judged by the best shading explanation it allows, the all-terms row's too), normal
agreement with the MediaPipe mesh (degrees), and s/frame end to end (the shared preparation + that row's fit,
not the appearance refit).

Synthetic (`make_clip(..., rgb=True)`: known albedo, per-frame SH lights, hair volume in D_static, forehead
wrinkles in D_dyn that come and go), fitted from the images, masks and landmarks only, with every default
term: the "normals" are MediaPipe-mesh targets rendered from the clip's 478 landmarks (x, y and MediaPipe's
relative z), as a real fit makes them, never the true normals. Reported: face error after per-frame similarity
alignment, D_dyn correlation with the truth (normal component, face) and where the fit's D_dyn goes
(`synthetic.dyn_parts`: shared by all frames, varying off the wrinkles, on the wrinkles' vertices in the
frames with and without them), the scalp's D_static error with and without the silhouette term (per vertex
over the whole scalp, and as the distance from the true outline a frontal video sees to the fitted surface,
also with the fit scaled about the camera to the face's true depth), albedo error (per-channel gain aligned),
the share of the wrinkles' shading energy that went into the albedo (a second clip without wrinkles, same
seed: the albedo difference projected on the wrinkles' own shading change, on the face; its gain squared, of
either sign), and the first two again without the landmark-mesh targets (images alone) and with the opt-in
penalty on D_dyn's smooth part (`w_dyn_low` 3; a row of the real videos' table too) and with the opt-in
low-rank prior on each window's D_dyn in place of its temporal smoothness (`w_dyn_rank` 0.01, `w_dyn_smooth`
0: the sparse 8-frame clip's wrinkles come and go between neighbouring frames). Where the face error
lives (`synthetic.face_error_by_part`): the head posed by its jaw alone, then with the identity (β, D_static)
or the expression (ψ, jaw, D_dyn) replaced by the truth's.

The real videos' head IoU is also split by head roll: frames whose eye line turns more than TILT_DEG from the
clip's median ("tilted") against the rest ("level"). Long hair hangs while the head tilts, and the static hair
(D_static) turns with the head: on the tilted frames the outline meets a limit of the representation. A second
table splits what each IoU loses into the person's pixels the head leaves bare ("missing": hair the mesh lacks)
and the head's pixels outside the person ("extra"), as shares of the union.

    python benchmarks/fit_terms.py --quick        # 48 frames of each video, short fits; synthetic 8 frames
    python benchmarks/fit_terms.py                # whole videos (tens of minutes on 2 cores)
    python benchmarks/fit_terms.py --no-real      # synthetic only
    python benchmarks/fit_terms.py --from-truth   # the detail stage started at the synthetic truth, per row

`--from-truth` asks what the goals can reach at all: each row's detail stage starts at the true head
(`headrep.fitting.synthetic.start_at_truth`) and the table says how far its losses and steps carry it away.
Two more rows fit D_dyn alone from zero with everything else held at the truth (what the wrinkle estimator
reaches given a perfect identity, pose and appearance), and a last line gives the ceiling of any fit from the
skin pixels (the true wrinkles with the vertices no frame shows on skin set to zero).
"""

from __future__ import annotations

import argparse
import json
import time

from tables import load, table  # benchmarks/ is on sys.path when run as a script

#: a frame whose head roll is further than this from the clip's median counts as tilted (her hair hangs while
#: the static hair turns with the head)
TILT_DEG = 10.0

#: the albedo's Adam step when the appearance is refitted to a finished geometry (appearance_only)
REFIT_LR_ALBEDO = 1e-2

ALL = "landmarks,normals,silhouette,photometric"
#: (label, terms, FitConfig overrides): the default rows, then the opt-in penalty on D_dyn's smooth part
SMOOTH_DYN = {"w_dyn_low": 3.0}
LOW_RANK_DYN = {"w_dyn_rank": 0.01, "w_dyn_smooth": 0.0}
ROWS = (("landmarks only", "landmarks", {}), ("+ MediaPipe normals", "landmarks,normals", {}),
        ("+ silhouette", "landmarks,normals,silhouette", {}), ("+ photometric (all)", ALL, {}),
        ("all + w_dyn_low 3", ALL, SMOOTH_DYN))


def appearance_only(fitter, epochs: int = 6) -> None:
    """Fit albedo and lights afresh to a finished geometry (every row, the photometric one included, so the
    column compares geometries, each by the best shading explanation it allows)."""
    import torch

    from headrep.fitting.appearance import init_albedo, to_channels
    from headrep.fitting.detail import TERMS, Step, render_step, windows
    from headrep.fitting.params import RowAdam

    fitter.terms = list(dict.fromkeys(list(fitter.terms) + ["photometric"]))
    fitter.images = to_channels(fitter.track.crops, fitter.obs.grayscale)
    init_albedo(fitter)
    fitter.appearance_ready = True
    c, P = fitter.cfg, fitter.params
    P.requires_grad(["albedo", "light"])
    # the fit's own albedo step is slow so that the geometry explains shading first (FitConfig.lr_albedo); on
    # a fixed geometry nothing competes, and the refit must settle within its few epochs
    opt, rows = torch.optim.Adam([P.albedo], lr=REFIT_LR_ALBEDO), RowAdam(P.light, c.lr_light)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in windows(fitter.scene.T, c.window, gen):
            P.albedo.grad = P.light.grad = None
            p = P.view(idx)
            with torch.no_grad():
                verts, pose = fitter.scene.dense(p, offsets=c.offsets)
            step = Step(fitter, idx, p, verts, pose, fitter.valid_t[idx], render_step(fitter, verts, idx, p))
            loss = sum(getattr(c, TERMS[n][1]) * TERMS[n][0](step)
                       for n in ("photometric", "albedo_lap", "light_smooth", "light_white"))
            loss.backward()
            opt.step()
            rows.step(idx)
    P.requires_grad(["albedo", "light"], False)


def real_video(name: str, model: str | None, args) -> list[dict]:
    import numpy as np

    from headrep.fitting import FitConfig, Fitter
    from headrep.fitting.evaluate import evaluate, head_roll_deg
    from headrep.fitting.pipeline import prepare_inputs
    from headrep.model import BodyModel
    from headrep.samples import sample_path

    kw = {"coarse_steps": 100, "detail_epochs": 4} if args.quick else {}
    frames = slice(0, 48) if args.quick else None
    t0 = time.perf_counter()
    track, targets, obs = prepare_inputs(sample_path(name), FitConfig(), frames, 1, None, None, False, False)
    prep = time.perf_counter() - t0
    body = BodyModel(model)
    T = len(track.valid)
    roll = head_roll_deg(track)
    tilted = np.abs(roll - np.nanmedian(roll)) > TILT_DEG
    out = []
    for label, terms, over in ROWS:
        t1 = time.perf_counter()
        f = Fitter(body, track, targets if "normals" in terms else None, FitConfig(terms=terms, **kw, **over),
                   observations=obs)
        res = f.run(progress=False)
        secs = time.perf_counter() - t1
        f.targets = targets
        appearance_only(f)
        m = evaluate(f, offsets=True, per_frame=True)
        level, tilt = m["silhouette_counts"][~tilted].sum(0), m["silhouette_counts"][tilted].sum(0)
        # what the IoU loses, as shares of the union: the person's pixels the head leaves bare (hair the mesh
        # lacks), the head's pixels outside the person
        lost = {f"{k}_{part}": float(c[j] / max(c[1], 1))
                for k, c in (("level", level), ("tilted", tilt)) for j, part in ((2, "missing"), (3, "extra"))}
        out.append({"video": name, "model": body.kind, "row": label, "terms": terms, "frames": T,
                    "valid": int(np.asarray(f.valid).sum()), "nme": m["landmark_nme"], "iou": m["silhouette_iou"],
                    "iou_level": float(level[0] / max(level[1], 1)),
                    "iou_tilted": float(tilt[0] / tilt[1]) if tilt[1] else None, "tilted_frames": int(tilted.sum()),
                    **lost,
                    "photometric_l1": m["photometric_l1"], "normal_deg": m["normal_deg"],
                    "s_per_frame": (prep + secs) / T, "fit_stats": res.stats["detail"] if "detail" in res.stats else None})
        print(json.dumps({k: v for k, v in out[-1].items() if k != "fit_stats"}), flush=True)
    return out


def outline_points(truth, head, scalp, cams) -> list:
    """Per frame, the true scalp's points on the outline the video sees: normal perpendicular to the view ray
    (within ~12°) and projected onto the person mask's edge - what the silhouette can constrain (the back of
    the head is never seen; the scalp seen face-on shows no outline)."""
    import cv2
    import numpy as np
    import torch

    from headrep.model import vertex_normals

    v = truth.vertices_cam
    n = vertex_normals(v, head.faces_t.long())
    grazing = (n * v / v.norm(dim=-1, keepdim=True)).sum(-1).abs() < 0.2
    out = []
    for t, cam in enumerate(cams):
        mask = (truth.extra["observations"].person[t] > 0.5).astype(np.uint8)
        edge = torch.as_tensor(cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0)
        uv, _ = cam.project(v[t])
        u = uv.round().long().clamp(0, mask.shape[0] - 1)
        out.append(v[t][scalp & grazing[t] & edge[u[:, 1], u[:, 0]]])
    return out


def outline_distance(verts_cam, outline: list, faces) -> float:
    """Mean distance (mm) of the true outline points to the fitted surface ``verts_cam`` [T,Nd,3] in camera
    space (no alignment: the outline is where the images put it)."""
    import numpy as np
    import open3d as o3d

    v = verts_cam
    d = []
    for t, pts in enumerate(outline):
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(v[t].float().numpy()), o3d.core.Tensor(np.asarray(faces, np.uint32)))
        d.append(scene.compute_distance(o3d.core.Tensor(pts.float().numpy())).numpy())
    return float(np.concatenate(d).mean() * 1e3)


#: the synthetic clip: 8 frames at 192² (stand-in model), forehead wrinkles present on some frames only
SYNTHETIC = dict(T=8, resolution=192, levels=1, seed=3, expressive=True, rgb=True, wrinkles_signed=False)


def mediapipe_targets(track):
    """MediaPipe-mesh targets from a synthetic clip's own landmarks, as a real fit makes them."""
    from headrep.fitting.targets import MediaPipeMeshTargets

    return MediaPipeMeshTargets().estimate(track.crops, track.points, track.valid)


def camera_vertices(f):
    """A fit's posed dense head in camera space, every frame [T,Nd,3]."""
    import torch

    from headrep.model import to_camera

    with torch.no_grad():
        return to_camera(f.dense(torch.arange(f.scene.T))[0])


def aligned_face_error(f, truth, head, verts_cam=None) -> float:
    """Face error (mm) after per-frame similarity alignment; ``verts_cam``: the fit's camera_vertices, if
    already computed."""
    import torch

    from headrep.fitting.synthetic import face_errors_mm

    v = camera_vertices(f) if verts_cam is None else verts_cam
    return face_errors_mm(v, truth.vertices_cam, torch.as_tensor(head.face_mask))["aligned_mm"]


def skin_seen(fitter, truth, head):
    """[Nd] whether a visible skin pixel of some frame takes a share of each vertex of the true head (its
    barycentric weight there, as the albedo's initial colours are gathered): the vertices an image term
    reaches."""
    import torch

    from headrep.fitting.appearance import project_colours
    from headrep.render.maps import render_maps

    cams = fitter.scene.crop_cameras(torch.arange(fitter.scene.T), float(truth.focal))
    rast = render_maps(fitter.scene.ctx, truth.vertices_cam.float(), head.faces_t, cams, antialias=False)["rast"]
    skin = torch.as_tensor(fitter.obs.skin).float()
    _, weight = project_colours(rast, head.faces_t, skin[..., None], skin, head.num_vertices)
    return weight > 0


def from_truth(args) -> tuple[list[dict], dict]:
    """Each row's detail stage started at the synthetic truth (shape, expression, pose, offsets, albedo,
    lights): how far its losses and optimiser carry the head away from it. A loss whose minimum is the truth
    and an optimiser that stops there give 0 mm and correlation 1; the rest is each term's bias (MediaPipe's
    coarse mesh is not the true surface) and the noise the steps add.

    Then what the wrinkle goal can reach on this clip: D_dyn alone fitted from zero with every other unknown
    held at the truth (the defaults' D_dyn estimator given a perfect identity, pose, albedo and lights), and the
    ceiling of any fit that learns D_dyn from the skin pixels alone: the truth itself with the vertices no
    frame's skin pixel takes a share of set to zero (no image term reaches them)."""
    import torch

    from headrep.fitting import FitConfig, Fitter
    from headrep.fitting.detail import run_detail
    from headrep.fitting.synthetic import (dyn_along_normals, dyn_correlation, dyn_parts, make_clip,
                                           start_at_truth)
    from headrep.model import BodyModel

    body = BodyModel("standin")
    track, _, truth, head = make_clip(body, **{**SYNTHETIC, "seed": args.seed, "T": args.frames,
                                                   "key_every": args.key_every})
    targets = mediapipe_targets(track)
    epochs = 20 if args.quick else 40
    rows = []
    unregularised = {"w_static_mag": 0.0, "w_static_lap": 0.0}  # D_static's prior pulls the true bumps down
    held = {"lr_detail": 0.0, "lr_offsets": 0.0, "lr_albedo": 0.0, "lr_light": 0.0, "lr_swing": 0.0}
    runs = [(label, terms, over, False) for label, terms, over in ROWS]
    runs += [("all, without D_static's penalties", ALL, unregularised, False),
             ("all; D_dyn alone, from zero, the rest held at the truth", ALL, held, True),
             ("images only; D_dyn alone, from zero, the rest held", "landmarks,silhouette,photometric", held, True)]
    f = None
    for label, terms, over, from_zero in runs:
        n = 100 if from_zero and not args.quick else epochs  # from zero D_dyn needs the full fit's updates
        cfg = FitConfig(resolution=SYNTHETIC["resolution"], detail_epochs=n, window=8, terms=terms, **over)
        f = Fitter(body, track, targets if "normals" in terms else None, cfg, observations=truth.extra["observations"])
        start_at_truth(f, truth)
        if from_zero:
            f.params.dynamic = torch.zeros_like(f.params.dynamic)
        run_detail(f, progress=False)
        parts = dyn_parts(f, truth)
        rows.append({"row": label, "epochs": n, "face_error_mm": aligned_face_error(f, truth, head),
                     "dyn_correlation": dyn_correlation(f, truth), "on_with": parts["on_with"],
                     "on_without": parts["on_without"], "true_on_with": parts["true_on_with"],
                     "varying_off": parts["varying_off"]})
        print(json.dumps(rows[-1]), flush=True)
    # the ceiling: along the true rest normals like dyn_correlation, the vertices no skin pixel reaches zeroed
    _, true = dyn_along_normals(f, truth)
    seen = skin_seen(f, truth, head)[torch.as_tensor(head.face_mask)]
    on = true.abs().amax(0) > 0.05 * true.abs().max()
    ceiling = {"ceiling_correlation": float(torch.corrcoef(torch.stack([(true * seen).reshape(-1),
                                                                       true.reshape(-1)]))[0, 1]),
               "wrinkle_vertices_seen": float(seen[on].float().mean())}
    print(json.dumps(ceiling), flush=True)
    return rows, ceiling


def synthetic(args) -> dict:
    import torch

    from headrep.fitting import FitConfig, Fitter
    from headrep.fitting.synthetic import (dyn_correlation, dyn_parts, face_error_by_part, make_clip,
                                           similarity_align)
    from headrep.model import BodyModel, vertex_normals
    from headrep.render import sh_basis

    body = BodyModel("standin")  # the synthetic ground truth is made with the stand-in
    kw = {**SYNTHETIC, "seed": args.seed, "T": args.frames, "key_every": args.key_every}
    T = kw["T"]
    clip = make_clip(body, **kw)
    plain = make_clip(body, **{**kw, "wrinkle_mm": 0.0})
    # one detail step per epoch on an 8-frame clip: D_dyn needs ~100 updates to settle (correlation 0.37 after
    # 40, 0.55 after 100 and 300)
    epochs = 40 if args.quick else 100

    def fit(c, terms, **over):
        track, _, truth, head = c
        targets = mediapipe_targets(track) if "normals" in terms else None
        cfg = FitConfig(resolution=kw["resolution"], detail_epochs=epochs, window=8, terms=terms, **over)
        f = Fitter(body, track, targets, cfg, observations=truth.extra["observations"])
        return f, f.run(progress=False)

    track, _, truth, head = clip
    face = torch.as_tensor(head.face_mask)

    def face_and_dyn(f, verts_cam=None):
        return aligned_face_error(f, truth, head, verts_cam), dyn_correlation(f, truth)

    res = {}
    f_all, r_all = fit(clip, ALL)
    f_nosil, _ = fit(clip, "landmarks,normals,photometric")
    f_plain, _ = fit(plain, ALL)
    f_images, _ = fit(clip, "landmarks,silhouette,photometric")
    f_smooth, _ = fit(clip, ALL, **SMOOTH_DYN)
    f_rank, _ = fit(clip, ALL, **LOW_RANK_DYN)
    cams = {"with": camera_vertices(f_all), "without": camera_vertices(f_nosil)}  # each computed once
    res["face_error_mm"], res["dyn_correlation"] = face_and_dyn(f_all, cams["with"])
    # where the fit's D_dyn goes against the truth's wrinkles (what the correlation loses, mm rms)
    res.update({f"dyn_{k}": v for k, v in dyn_parts(f_all, truth).items()})
    parts = face_error_by_part(f_all, truth)  # the head posed by its jaw alone, then with a part made true
    res["face_error_mm_jaw_posed"] = parts["fit"]
    res["face_error_mm_true_identity"], res["face_error_mm_true_expression"] = parts["identity"], parts["expression"]
    res["face_error_mm_images_only"], res["dyn_correlation_images_only"] = face_and_dyn(f_images)
    res["face_error_mm_w_dyn_low"], res["dyn_correlation_w_dyn_low"] = face_and_dyn(f_smooth)
    res["face_error_mm_w_dyn_rank"], res["dyn_correlation_w_dyn_rank"] = face_and_dyn(f_rank)
    scalp = (~face) & (truth.static.norm(dim=-1) > 3e-3)
    outline = outline_points(truth, head, scalp, f_all.scene.crop_cameras(torch.arange(T), float(truth.focal)))
    for k, f in (("with", f_all), ("without", f_nosil)):
        e = (f.params.static - truth.static).norm(dim=-1) * 1e3
        res[f"scalp_error_mm_{k}_silhouette"] = float(e[scalp].mean())
        # the surface itself: each frame's head placed on the truth by the similarity that aligns the faces
        # (D_static alone also differs by whatever the fitted β shape differs), then the scalp's distance
        v = cams[k].double()
        tv = truth.vertices_cam.double()
        surf = similarity_align(v[:, face], tv[:, face], apply_to=v)
        d = (surf - tv).norm(dim=-1).mean(0) * 1e3
        res[f"scalp_surface_error_mm_{k}_silhouette"] = float(d[scalp].mean())
        res[f"scalp_outline_to_surface_mm_{k}_silhouette"] = outline_distance(v, outline, head.faces)
        # one view leaves the head's distance open (a head twice as far and twice as large looks the same): the
        # fit scaled about the camera centre so that its face's mean depth is the truth's, frame by frame, has
        # the same images (seed 1's fit sits 56 mm off in depth, which hid the silhouette's effect: 29 mm both)
        k_depth = (tv[:, face, 2].mean(1) / v[:, face, 2].mean(1))[:, None, None]
        res[f"scalp_outline_to_surface_mm_{k}_silhouette_same_depth"] = outline_distance(v * k_depth, outline,
                                                                                          head.faces)
    res["scalp_hair_mm"] = float(truth.static[scalp].norm(dim=-1).mean() * 1e3)
    a, ta = f_all.params.albedo[face], truth.extra["albedo"][face]
    gain = (a * ta).sum(0) / (a * a).sum(0)
    res["albedo_error"] = float((a * gain - ta).abs().mean())
    # wrinkle energy in the albedo: the albedo change a wrinkled clip causes, against the wrinkles' own shading.
    # Two separate fits' albedos differ by more than the wrinkles (noise, the unobservable albedo/light gain),
    # so only the part of that change along the wrinkles' shading counts: its gain c on the wrinkle pattern
    # (1: the albedo took the wrinkles whole), and c² the share of the wrinkles' shading energy. Either sign
    # counts: c < 0 is the albedo holding the wrinkles' shading reversed, cancelling wrinkles the geometry
    # keeps on frames that have none (the benchmark clip reads c = -1.14; until this round c² was counted
    # only for c > 0, and the table read 0 %)
    with torch.no_grad():
        lights = truth.extra["light"]
        n_with = vertex_normals(truth.vertices_cam, head.faces_t.long())
        n_without = vertex_normals(plain[2].vertices_cam, head.faces_t.long())
        shade = lambda nn: torch.einsum("tvk,tkc->tvc", sh_basis(nn), lights)  # noqa: E731
        wrinkle = (truth.extra["albedo"][None] * (shade(n_with) - shade(n_without)))[:, face]
        leak = ((f_all.params.albedo - f_plain.params.albedo)[None] * shade(n_without))[:, face]
    c = float((leak * wrinkle).sum() / (wrinkle ** 2).sum().clamp_min(1e-12))
    res["albedo_gain_on_wrinkles"] = c
    res["wrinkle_energy_in_albedo"] = c ** 2
    res["photometric_l1"] = r_all.stats["detail"]["photometric_l1"]
    res["silhouette_iou"] = r_all.stats["detail"]["silhouette_iou"]
    print(json.dumps(res), flush=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--no-synthetic", action="store_true")
    ap.add_argument("--videos", default="WolfgangLanger_Pexels.mp4,single_face.mp4")
    ap.add_argument("--models", default="standin", help="comma-separated: standin, open (or .npz paths)")
    ap.add_argument("--from-truth", action="store_true",
                    help="only the detail stage started at the synthetic truth, per row of terms")
    ap.add_argument("--seed", type=int, default=SYNTHETIC["seed"],
                    help="the synthetic clip's seed (3, the reported one; 1 and 2 are the other clips quoted)")
    ap.add_argument("--frames", type=int, default=SYNTHETIC["T"], help="the synthetic clip's length")
    ap.add_argument("--key-every", type=float, default=None,
                    help="frames between the synthetic clip's keyframes (expression, pose, wrinkles, lights); "
                         "default: the 8-frame clip's ~2.3, a video sampled sparsely (24 and 6: a clip that "
                         "moves more like a video, for the temporal penalties)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    print(load(), flush=True)
    if args.from_truth:
        drift, ceiling = from_truth(args)
        print(f"\n{load()}\n")
        print(table(("synthetic, started at the truth", "detail epochs", "face error (mm)", "D_dyn correlation",
                     "on the wrinkles, frames with / without (mm)", "varying, off them (mm)"),
                    [(r["row"], r["epochs"], f"{r['face_error_mm']:.3f}", f"{r['dyn_correlation']:.3f}",
                      f"{r['on_with']:.3f} / {r['on_without']:.3f} (truth {r['true_on_with']:.3f} / 0)",
                      f"{r['varying_off']:.3f}") for r in drift]))
        print(f"\nThe wrinkle band's vertices some frame's skin pixels reach: {ceiling['wrinkle_vertices_seen']:.0%}; "
              f"a fit exact on every reached vertex and zero elsewhere would read a correlation of "
              f"{ceiling['ceiling_correlation']:.3f}.")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({"from_truth": drift, **ceiling}, fh, indent=2)
        return 0
    rows = []
    if not args.no_real:
        for model in args.models.split(","):
            for v in args.videos.split(","):
                rows += real_video(v, model, args)
    syn = None if args.no_synthetic else synthetic(args)
    print(f"\n{load()}\n")
    if rows:
        print(table(("video", "model", "terms", "NME", "head IoU", f"IoU level / tilted > {TILT_DEG:g}° (frames)",
                     "photometric L1", "normal err (deg)", "s/frame"),
                    [(f"{r['video']} ({r['frames']} frames)", r["model"], r["row"], f"{r['nme']:.4f}",
                      f"{r['iou']:.3f}", f"{r['iou_level']:.3f} / " + (f"{r['iou_tilted']:.3f} ({r['tilted_frames']})"
                                                                       if r["tilted_frames"] else "-"),
                      f"{r['photometric_l1']:.4f}", f"{r['normal_deg']:.2f}", f"{r['s_per_frame']:.2f}")
                     for r in rows]))
        print()
        print(table(("video", "model", "terms", "level: missing / extra", "tilted: missing / extra"),
                    [(r["video"], r["model"], r["row"], f"{r['level_missing']:.3f} / {r['level_extra']:.3f}",
                      f"{r['tilted_missing']:.3f} / {r['tilted_extra']:.3f}" if r["tilted_frames"] else "-")
                     for r in rows]))
    if syn:
        print()
        print(table(("synthetic (images, masks, landmarks only)", "value"), [(k, f"{v:.4f}") for k, v in syn.items()]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"real": rows, "synthetic": syn}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
