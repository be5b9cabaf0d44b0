"""What `headrep render` and `headrep export` write from a HeadRep folder (library functions; the commands
only parse arguments).

* render: per-frame normal / depth maps in each frame's crop camera as videos (normal.mp4, depth.mp4), the
  lossless depth (depth.npz) and overlay.mp4 (the shaded mesh over the input crop, detected landmarks in
  green, the model's projected iBUG-68 landmarks in red, invalid frames framed in red).
* export: per-frame meshes (PLY / OBJ) in camera or model space, optionally the neutral head.

Every output folder is written into a temporary sibling and moved into place at the end (headrep.io.atomic_dir),
so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import collections
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from headrep.errors import HeadrepError
from headrep.io import progress
from headrep.rep.sources import source_crops

OVERLAY_ALPHA = 0.6
SHADE_RGB = np.array([0.80, 0.85, 0.95], dtype=np.float32)   # light blue-grey clay
DETECTED_RGB = (0, 255, 0)
MODEL_RGB = (255, 0, 0)
INVALID_RGB = (255, 0, 0)
PERSON_RGB = (0, 255, 255)      # contour of the person mask (selfie segmentation) the fit used
COVERAGE_RGB = (255, 255, 0)    # contour of the rendered mesh
RESIDUAL_FULL_SCALE = 0.25      # |crop − shaded| (0-1 colour units) shown at the top of residual.mp4's colour map


def _load(rep_path: Path, model: Path | None):
    from headrep.rep.format import HeadRep

    rep = HeadRep.load(rep_path, model=model)
    if rep.is_standin:
        print("headrep: this rep was fitted with the procedural STAND-IN model (not SMPL-X)", file=sys.stderr)
    return rep


# ----------------------------------------------------------------------------------------------------------
# drawing


def shade(normal: np.ndarray) -> np.ndarray:
    """Lambert shading (headlight: light from the camera) of camera-space normals [R,R,3] -> float [R,R,3]."""
    lam = np.clip(-normal[..., 2], 0.0, 1.0)
    return (0.25 + 0.75 * lam)[..., None] * SHADE_RGB


def draw_points(img: np.ndarray, pts: np.ndarray, color, radius: int) -> None:
    """Filled dots at finite (u, v) points (pixel centres at integers), in place."""
    import cv2

    H, W = img.shape[:2]
    p = np.asarray(pts, dtype=np.float64)[:, :2]
    u, v = p[:, 0], p[:, 1]
    # the selection and the fixed-point rounding for all points at once (a Python loop over 478 MediaPipe
    # points cost more than the drawing); np.round rounds halves to even like round()
    keep = np.isfinite(u) & np.isfinite(v) & (u >= -radius) & (u < W + radius) & (v >= -radius) & (v < H + radius)
    for x, y in np.round(p[keep] * 16).astype(np.int64).tolist():
        cv2.circle(img, (x, y), radius * 16, color, -1, cv2.LINE_AA, shift=4)


def overlay_frame(crop: np.ndarray | None, maps: dict, detected: np.ndarray | None, model68: np.ndarray,
                  valid: bool, label: str, person: np.ndarray | None = None) -> np.ndarray:
    """The overlay image: shaded mesh alpha-blended over ``crop`` (black if None), dots, invalid marking, and
    the silhouette contours: the person mask the fit used (``person`` [R,R], cyan) and the rendered coverage
    (yellow)."""
    import cv2

    from headrep.render.cpu import clay_over

    mask = maps["mask"].numpy().clip(0, 1)
    R = mask.shape[0]
    # crop · (1 − a) + shade(normal) · a with a = OVERLAY_ALPHA · mask, in one numba pass over the covered pixels
    # (elsewhere a = 0 gives the crop back exactly); the same to the bit as that numpy expression
    img = np.zeros((R, R, 3), np.uint8) if crop is None else np.array(crop, np.uint8)
    clay_over(img, maps["normal"].numpy(), mask, SHADE_RGB, OVERLAY_ALPHA)
    r = max(1, round(R / 256))
    if detected is not None:
        draw_points(img, detected, DETECTED_RGB, r)
    draw_points(img, model68, MODEL_RGB, r)
    for m, colour in ((person, PERSON_RGB), (mask, COVERAGE_RGB)):
        if m is not None:
            contours, _ = cv2.findContours((np.asarray(m) > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL,
                                           cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(img, contours, -1, colour, r, cv2.LINE_AA)
    scale = max(0.3, R / 700)
    cv2.putText(img, label, (4, int(14 * scale / 0.4)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)
    if not valid:
        b = max(2, R // 64)
        cv2.rectangle(img, (b // 2, b // 2), (R - 1 - b // 2, R - 1 - b // 2), INVALID_RGB, b)
        cv2.putText(img, "INVALID", (4 + b, R - 4 - b), cv2.FONT_HERSHEY_SIMPLEX, scale, INVALID_RGB, 1,
                    cv2.LINE_AA)
    return img


def _resized(mask: np.ndarray, R: int) -> np.ndarray:
    import cv2

    m = np.asarray(mask, np.float32)
    return m if m.shape[0] == R else cv2.resize(m, (R, R), interpolation=cv2.INTER_LINEAR)


def shaded_frames(rep, t: int, maps: dict, crop: np.ndarray | None, skin: np.ndarray | None):
    """(shaded, residual) uint8 RGB [R,R,3] of frame ``t``: albedo × SH shading of the rendered normals on black,
    and |crop − shaded| over the skin mask (the rendered coverage when the rep has no masks) as a heat map."""
    batch = {name: maps[name][None] for name in ("albedo", "normal", "mask", "rast")}
    shaded, residual = shaded_batch(rep, [t], batch, [crop], [skin])
    return shaded[0], residual[0]


def shaded_batch(rep, idx, maps: dict, crops: list, skins: list) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shaded_frames` of frames ``idx`` at once: ``maps`` holds render_maps' [B,...] "albedo", "normal",
    "mask", "rast"; ``crops`` / ``skins`` one entry (or None) per frame. -> (shaded, residual) uint8 [B,R,R,3]."""
    import cv2

    from headrep.render.cpu import shaded_colour

    light = rep.tensors["light"][list(idx)].to(maps["normal"].dtype)
    drawn = maps["rast"][..., 3] > 0
    # (albedo · shading(normal, light)).clamp(0, 1) · coverage in one numba pass over the drawn pixels, the same
    # to the bit (elsewhere the interpolated albedo is 0, and so is the product)
    rgb = shaded_colour(maps["normal"], maps["albedo"], maps["mask"], drawn, light).numpy()
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, -1)
    shaded = (rgb * 255).round().astype(np.uint8)
    B, R = shaded.shape[:2]
    residual = np.full((B, R, R, 3), 64, np.uint8)  # grey: no source frame
    have = [i for i, c in enumerate(crops) if c is not None]
    if not have:
        return shaded, residual
    grey = rep.tensors["albedo"].shape[-1] == 1
    drawn = drawn.numpy()
    err = np.zeros((len(have), R, R), np.float32)  # 0 off the skin the mesh covers
    for j, i in enumerate(have):
        where = drawn[i] & (skins[i] > 0.5) if skins[i] is not None else drawn[i]
        c = crops[i][where].astype(np.float32) / 255.0
        if grey:
            c = np.repeat((c * np.array([0.299, 0.587, 0.114], np.float32)).sum(-1, keepdims=True), 3, -1)
        err[j][where] = np.abs(c - rgb[i][where]).mean(-1)
    level = np.clip(err / RESIDUAL_FULL_SCALE * 255, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(level.reshape(-1, R), cv2.COLORMAP_INFERNO).reshape(len(have), R, R, 3)  # a LUT
    residual[have] = heat[..., ::-1]
    return shaded, residual


# ----------------------------------------------------------------------------------------------------------
# render

# x264 settings of render's videos. superfast rather than x264's default (medium): at crf 18 it encodes the five
# 256² videos in about a third of medium's CPU time, and measured against the raw frames its PSNR is as high or
# higher on each of them (what the encoding loses there is mostly yuv420p's halved chroma, not the preset's
# motion search); the files are ~2x larger (~11 kB per frame for all five at 256²). threads=1: the videos are
# encoded side by side in their own threads already (x264's frame threads would only add CPU time), and one
# thread makes the files byte-for-byte reproducible. Figures: benchmarks/throughput.py.
RENDER_VIDEO_OPTIONS = {"crf": 18, "preset": "superfast", "threads": 1}

RENDER_BATCH = 16  # frames per body-model forward and rasterizer call: one frame per call costs ~4x more (profiled)


def map_batches(rep, R: int, ctx, batch: int = RENDER_BATCH,
                positions=None) -> Iterator[tuple[list[int], dict, list]]:
    """(positions, maps, cameras) for ``batch`` frames at a time, in order (of ``positions``; default every
    frame): one body-model forward and one render_maps call per batch (the per-call overheads dominated a
    frame's time). ``maps`` is render_maps' output on the CPU ([B,...] tensors: normal, depth, mask, rast, and
    albedo when the rep has appearance)."""
    from headrep.render.maps import render_maps

    dev = getattr(ctx, "device", torch.device("cpu"))
    faces = rep.head.faces_t.to(dev)
    positions = list(range(rep.num_frames)) if positions is None else [int(t) for t in positions]
    for k in range(0, len(positions), batch):
        idx = positions[k:k + batch]
        cams = [rep.crop_camera(t, R) for t in idx]
        v = rep.vertices(idx, space="camera").to(dev)
        attrs = {"albedo": rep.tensors["albedo"].to(v.dtype).to(dev)} if rep.has_appearance else None
        with torch.no_grad():
            m = render_maps(ctx, v, faces, cams if len(cams) > 1 else cams[0], attributes=attrs)
        yield idx, {name: x.cpu() for name, x in m.items()}, cams


@torch.no_grad()
def shaded_sequence(rep, positions, resolution: int, background: np.ndarray | None = None, ctx=None) -> np.ndarray:
    """uint8 [F,R,R,3]: the rep's photometric render (albedo × SH shading of its per-frame lights) of frame
    ``positions`` at ``resolution``, composited by the antialiased coverage over ``background`` ([R,R,3] uint8,
    e.g. a reference frame; default black) — a classical model-based reenactment, no learned weights."""
    from headrep.render import get_context, shading

    if not rep.has_appearance:
        raise HeadrepError("this rep has no albedo / lighting (fitted without the photometric term)")
    ctx = ctx if ctx is not None else get_context("cpu")
    R = int(resolution)
    bg = np.zeros((R, R, 3), np.float32) if background is None else np.asarray(background, np.float32) / 255.0
    out = np.zeros((len(positions), R, R, 3), np.uint8)
    k = 0
    for idx, m, _ in map_batches(rep, R, ctx, positions=positions):
        rgb = (m["albedo"].float() * shading(m["normal"].float(), rep.tensors["light"][idx].float())).clamp(0, 1)
        if rgb.shape[-1] == 1:
            rgb = rgb.expand(-1, -1, -1, 3)
        a = m["mask"].clamp(0, 1)[..., None].numpy()
        out[k:k + len(idx)] = ((rgb.numpy() * a + bg[None] * (1 - a)) * 255).round().clip(0, 255).astype(np.uint8)
        k += len(idx)
    return out


def render_rep(rep_path: Path, out: Path | None = None, resolution: int | None = None, device: str = "auto",
               overwrite: bool = False, model: Path | None = None) -> Path:
    """`headrep render`: normal.mp4, depth.mp4, depth.npz, overlay.mp4 (+ shaded.mp4, residual.mp4) and
    render.json in OUT."""
    from concurrent.futures import ThreadPoolExecutor

    from headrep.io import BackgroundVideoWriter, atomic_dir, check_output_dir, write_npz, write_video
    from headrep.render import get_context
    from headrep.render.maps import encode_depth, encode_normals

    t0 = time.perf_counter()
    rep_path = Path(rep_path)
    rep = _load(rep_path, model)
    T = rep.num_frames
    if T == 0:
        raise HeadrepError(f"HeadRep {rep_path} has no frames to render")
    R = int(resolution or rep.resolution)
    if not 16 <= R <= 4096:
        raise HeadrepError(f"--resolution must be between 16 and 4096 pixels, got {R}")
    out = Path(out) if out is not None else rep_path / "renders"
    out = check_output_dir(out, overwrite)
    ctx = get_context(device)
    lm_scale = R / rep.resolution
    detected_all = rep.landmarks.numpy() if rep.landmarks is not None else None
    notes: list[str] = []
    model68 = rep.landmarks68(None, space="camera")  # [T,68,3]

    appearance = rep.has_appearance
    if not appearance:
        notes.append("the rep has no albedo / lighting (fitted without the photometric term, or before it "
                     "existed): shaded.mp4 and residual.mp4 are not written")
    fit_masks = rep.masks()
    fps = rep.fps
    with atomic_dir(out) as tmp, contextlib.ExitStack() as videos:
        # normal, overlay, shaded and residual are encoded as their frames are made, each in its own thread
        # (headrep.io.BackgroundVideoWriter); depth.mp4 needs the whole video's near / far, so it is encoded
        # from the depth stack at the end, while depth.npz is compressed beside it
        video = lambda name: videos.enter_context(  # noqa: E731
            BackgroundVideoWriter(tmp / name, fps=fps, **RENDER_VIDEO_OPTIONS))
        normal_w, overlay_w = video("normal.mp4"), video("overlay.mp4")
        shaded_w, residual_w = (video("shaded.mp4"), video("residual.mp4")) if appearance else (None, None)
        depth = np.lib.format.open_memmap(tmp / ".depth.npy", "w+", np.float32, (T, R, R))
        mask = np.lib.format.open_memmap(tmp / ".mask.npy", "w+", np.float32, (T, R, R))
        intrinsics = np.zeros((T, 4), np.float64)
        near, far = np.inf, -np.inf
        crops = source_crops(rep, R, notes)
        valid = rep.valid
        frames = rep.frames
        bar = progress(None, T, "render")

        def draw(idx, maps, cams):
            """The frames of one batch to their videos (in a worker thread, overlapping the next batch's
            rendering: cv2, numpy, torch and the encoders mostly run without the GIL)."""
            m = maps["mask"]
            normals = encode_normals(maps["normal"], m).numpy()
            batch_crops = [next(crops) for _ in idx]
            skins = [None] * len(idx)
            for i, (t, cam) in enumerate(zip(idx, cams)):
                normal_w.write(normals[i])
                uv, _ = cam.project(model68[t].double())
                det = detected_all[t, :, :2] * lm_scale if detected_all is not None else None
                person = None
                if fit_masks is not None:
                    person, skins[i] = (_resized(fit_masks[k][t], R) for k in ("person", "skin"))
                overlay_w.write(overlay_frame(batch_crops[i], {"normal": maps["normal"][i], "mask": m[i]}, det,
                                              uv.numpy(), bool(valid[t]), f"{t} / frame {int(frames[t])}", person))
            if appearance:
                shaded, residual = shaded_batch(rep, idx, maps, batch_crops, skins)
                for i in range(len(idx)):
                    shaded_w.write(shaded[i])
                    residual_w.write(residual[i])
            return len(idx)

        with ThreadPoolExecutor(1, thread_name_prefix="render-draw") as drawing:
            drawn: collections.deque = collections.deque()  # batches in order; at most two wait (memory)
            for idx, maps, cams in map_batches(rep, R, ctx):
                a, b = idx[0], idx[-1] + 1
                d, m = maps["depth"], maps["mask"]
                depth[a:b] = d.numpy()
                mask[a:b] = m.numpy()
                cover = (d > 0) & (m > 0)
                if bool(cover.any()):
                    near, far = min(near, float(d[cover].min())), max(far, float(d[cover].max()))
                for t, cam in zip(idx, cams):
                    intrinsics[t] = (cam.fx, cam.fy, cam.cx, cam.cy)
                drawn.append(drawing.submit(draw, idx, maps, cams))
                while drawn and (len(drawn) > 2 or drawn[0].done()):
                    bar.update(drawn.popleft().result())
            while drawn:
                bar.update(drawn.popleft().result())
        bar.close()
        for _ in crops:  # drain (closes the video)
            pass
        if not np.isfinite(near):
            near, far = 0.0, 1.0
            notes.append("the mesh is outside every crop: all maps are empty")

        def depth_frames(depth, mask):
            for k in range(0, T, RENDER_BATCH):
                grey = encode_depth(torch.from_numpy(np.array(depth[k:k + RENDER_BATCH])),
                                    torch.from_numpy(np.array(mask[k:k + RENDER_BATCH])), near, far).numpy()
                yield from np.repeat(grey[..., None], 3, -1)

        with ThreadPoolExecutor(1) as pool:
            depth_video = pool.submit(write_video, tmp / "depth.mp4", depth_frames(depth, mask), fps=fps,
                                      **RENDER_VIDEO_OPTIONS)
            write_npz(tmp / "depth.npz", compresslevel=1, depth=depth, mask=mask,
                      frame_indices=frames.astype(np.int64), valid=valid.astype(np.uint8), intrinsics=intrinsics,
                      near_far=np.array([near, far]))
            depth_video.result()
        videos.close()  # the streamed videos are finished here
        del depth, mask
        (tmp / ".depth.npy").unlink()
        (tmp / ".mask.npy").unlink()
        info = {
            "tool": "headrep render",
            "rep": str(rep_path.resolve()),
            "standin": rep.is_standin,
            "resolution": R, "frames": T, "valid": int(valid.sum()), "fps": fps,
            "depth_range_m": [near, far],
            "source_used": not any("missing" in n or "cannot read" in n or "driven rep" in n for n in notes),
            "notes": notes,
            "backend": repr(ctx),
            "seconds": time.perf_counter() - t0,
            "outputs": {
                "normal.mp4": "camera-space normals encoded (n+1)/2 as RGB, black background",
                "depth.mp4": "depth as grey, near bright; one fixed near/far (depth_range_m) for the whole video",
                "depth.npz": "depth [T,R,R] float32 metres (0 where empty), mask [T,R,R] float32 coverage, "
                             "frame_indices [T], valid [T], intrinsics [T,4] (fx, fy, cx, cy of each crop), "
                             "near_far [2]",
                "overlay.mp4": "shaded mesh over the input crop; green: detected landmarks, red: the model's "
                               "iBUG-68 landmarks; cyan: the person mask's outline, yellow: the mesh's; invalid "
                               "frames have a red border",
                **({"shaded.mp4": "the photometric reconstruction: albedo × SH shading of the fitted lights",
                    "residual.mp4": f"|crop − shaded| over the skin mask the fit used, colour-mapped (inferno; "
                                    f"full scale {RESIDUAL_FULL_SCALE} in 0-1 colour units); grey: no source"}
                   if appearance else {}),
            },
        }
        (tmp / "render.json").write_text(json.dumps(info, indent=2) + "\n")
    for n in notes:
        print(f"headrep render: note: {n}", file=sys.stderr)
    names = "normal.mp4, depth.mp4, depth.npz, overlay.mp4" + (", shaded.mp4, residual.mp4" if appearance else "")
    print(f"wrote {out}/ ({names}, render.json): {T} frames at "
          f"{R}x{R} in {time.perf_counter() - t0:.1f} s")
    return out


# ----------------------------------------------------------------------------------------------------------
# export


def parse_positions(spec: str | None, T: int) -> np.ndarray:
    """Positions selected by "A:B" / "A:B:C" / "A" (0-based positions in the rep, Python slice semantics)."""
    from headrep.io import parse_slice

    if spec is None or spec.strip() in ("", ":"):
        return np.arange(T)
    sel = parse_slice(spec)
    if isinstance(sel, int):
        if not -T <= sel < T:
            raise HeadrepError(f"--frames {spec!r}: position out of range for a rep of {T} frames")
        return np.array([sel % T])
    sel = np.arange(T)[sel]
    if len(sel) == 0:
        raise HeadrepError(f"--frames {spec!r} selects no frame of a rep of {T} frames")
    return sel


def export_rep(rep_path: Path, out: Path, fmt: str = "ply", frames: str | None = None, space: str = "camera",
               neutral: bool = False, overwrite: bool = False, model: Path | None = None) -> Path:
    """`headrep export`: frame_NNNNNN.<fmt> per selected frame (NNNNNN = source frame index)."""
    from headrep.io import atomic_dir, check_output_dir

    fmt = fmt.lower()
    if fmt not in ("ply", "obj"):
        raise HeadrepError(f"--format must be ply or obj, got {fmt!r}")
    if space not in ("camera", "model"):
        raise HeadrepError(f"--space must be camera or model, got {space!r}")
    t0 = time.perf_counter()
    rep = _load(Path(rep_path), model)
    sel = parse_positions(frames, rep.num_frames)
    out = check_output_dir(Path(out), overwrite)
    fidx = rep.frames
    listing = []
    with atomic_dir(out) as tmp:
        for k in progress(range(0, len(sel), 16), (len(sel) + 15) // 16, "export"):
            chunk = sel[k:k + 16]
            verts = rep.vertices(chunk, space=space)
            for j, t in enumerate(chunk):
                name = f"frame_{int(fidx[t]):06d}.{fmt}"
                rep.to_mesh(verts[j]).export(tmp / name, file_type=fmt)
                listing.append({"file": name, "position": int(t), "frame_index": int(fidx[t]),
                                "valid": bool(rep.valid[t])})
        if neutral:
            rep.neutral_mesh().export(tmp / f"neutral.{fmt}", file_type=fmt)
        (tmp / "export.json").write_text(json.dumps({
            "tool": "headrep export", "rep": str(Path(rep_path).resolve()), "standin": rep.is_standin,
            "space": space if space == "model" else "camera (OpenCV: x right, y down, z forward; = model * [1,-1,-1])",
            "neutral": f"neutral.{fmt} (model space: fitted betas, zero expression/pose, static offsets)"
            if neutral else None,
            "frames": listing}, indent=2) + "\n")
    print(f"wrote {out}/: {len(sel)} {fmt.upper()} mesh(es){' + neutral' if neutral else ''} "
          f"in {space} space in {time.perf_counter() - t0:.1f} s")
    return out
