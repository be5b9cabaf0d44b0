"""`headrep render-model`: normal and depth maps of a body model's dense head, neutral and expressive, plus a
turntable video. The first thing to run on a new model file, and the demo of the foundation.

Everything is written into a temporary sibling folder (`headrep.io.atomic_dir`) and moved onto OUT at the end,
so an interrupted or failed run leaves nothing behind (and an existing OUT survives a failed --overwrite).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from headrep.errors import HeadrepError


def head_camera(verts: torch.Tensor, face_mask: np.ndarray, resolution: int, fov_deg: float = 20.0):
    """A front camera framing the head: returns (camera, model->camera function, head centre).

    Model space is SMPL-X's (y up, z toward the viewer); camera space is OpenCV's (y down, z away), so
    the camera looks down model -z from in front of the face and the subject's left is on the image right.
    """
    from headrep.model.head import to_camera as model_to_camera
    from headrep.render.maps import PinholeCamera

    v = verts.detach()
    face = v[torch.as_tensor(face_mask)]
    # frame the head from 4 cm below the chin to the crown, with a 15% margin
    head = v[v[:, 1] > face[:, 1].min() - 0.04]
    lo, hi = head.min(0).values, head.max(0).values
    centre = 0.5 * (lo + hi)
    half = 0.5 * float(hi[1] - lo[1]) * 1.15
    dist = half / math.tan(math.radians(fov_deg) / 2) + float(hi[2] - centre[2])
    cam = PinholeCamera.from_fov(fov_deg, resolution, resolution, near=0.05, far=10.0)
    eye = centre + torch.tensor([0.0, 0.0, dist], dtype=v.dtype)

    def to_camera(points: torch.Tensor, yaw: float = 0.0) -> torch.Tensor:
        c, s = math.cos(yaw), math.sin(yaw)
        rot = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=points.dtype)
        p = (points - centre) @ rot.T + centre  # turn the head about its vertical axis
        return model_to_camera(p - eye)

    return cam, to_camera, centre


# The open model's expression slots are ARKit face units (unit = full activation, in [0, 1]).
_ARKIT_EXPRESSIVE = (("mouthSmileLeft", 0.8), ("mouthSmileRight", 0.8), ("browInnerUp", 0.8),
                     ("browOuterUpLeft", 0.6), ("browOuterUpRight", 0.6), ("jawOpen", 0.3))


def _expressive_params(body):
    """Neutral and expressive parameters: jaw open plus a smile and raised brows."""
    p = body.zero_params(2)
    names = body.model_meta.get("expression_names", [])
    if body.kind == "open":
        for name, value in _ARKIT_EXPRESSIVE:
            if name in names and names.index(name) < body.num_expression:
                p["expression"][1, names.index(name)] = value
    elif names:
        for name, value in (("smile", 2.0), ("brow_raise", 1.5), ("mouth_open", 1.0)):
            if name in names and names.index(name) < body.num_expression:
                p["expression"][1, names.index(name)] = value
    else:  # a licensed SMPL-X: its first components are the strongest mouth/brow modes
        p["expression"][1, :3] = torch.tensor([2.0, -1.0, 1.0])[: body.num_expression]
    p["pose"][1, 22, 0] = 0.22  # jaw open about x
    return p


def _contact_sheet(body, head, ctx, dev, cam, to_camera, faces, names, tile: int = 192, cols: int = 8):
    """One normal-map tile per named expression direction (coefficient 1 alone), labelled, on a grid."""
    from PIL import Image, ImageDraw

    from headrep.render.maps import encode_normals, render_maps

    rows = (len(names) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows * tile), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    p = body.zero_params(1)
    res = cam.width
    # crop the face: the middle 60% of the framed head, scaled to the tile
    lo, hi = int(0.2 * res), int(0.8 * res)
    for k, name in enumerate(names):
        e = torch.zeros(1, body.num_expression)
        e[0, k] = 1.0
        with torch.no_grad():
            v = head(p["betas"], e, p["pose"]).vertices[0]
            m = render_maps(ctx, to_camera(v).to(dev)[None], faces, cam)
        img = encode_normals(m["normal"][0], m["mask"][0]).numpy()[lo:hi, lo:hi]
        im = Image.fromarray(img).resize((tile, tile), Image.BILINEAR)
        x, y = (k % cols) * tile, (k // cols) * tile
        sheet.paste(im, (x, y))
        draw.text((x + 4, y + 2), f"{k}: {name}", fill=(255, 255, 255))
    return np.asarray(sheet)


def run(model: Path | None, out: Path, resolution: int = 512, subdiv: int = 1, frames: int = 48,
        device: str = "auto", overwrite: bool = False) -> Path:
    from headrep.model.body import BodyModel
    from headrep.model.head import DenseHead
    from headrep.io import atomic_dir, check_output_dir, progress, write_npz, write_png, write_video
    from headrep.render import get_context
    from headrep.render.maps import encode_depth, encode_normals, render_maps

    if not 32 <= resolution <= 4096:
        raise HeadrepError(f"--resolution must be between 32 and 4096 pixels, got {resolution}")
    if frames < 1:
        raise HeadrepError(f"--frames must be at least 1, got {frames}")
    out = check_output_dir(out, overwrite)

    t0 = time.perf_counter()
    body = BodyModel(model)  # validates the file before anything is written
    if body.kind == "open":  # all 52 ARKit units, for the contact sheet
        body = BodyModel(model, num_expression=len(body.model_meta["expression_names"]))
    head = DenseHead(body, levels=subdiv)
    ctx = get_context(device)
    dev = torch.device("cuda" if type(ctx).__name__.lower().startswith("cuda") else "cpu")
    if body.is_standin:
        print("headrep render-model: using the procedural STAND-IN model (not SMPL-X); the default is the open "
              "head model (--model open), or pass --model SMPLX_NEUTRAL.npz", file=sys.stderr)
    elif body.kind == "open":
        print(f"headrep render-model: using the {body.open_meta['model']} head model (not SMPL-X; "
              f"{body.path.name})", file=sys.stderr)
    p = _expressive_params(body)
    with torch.no_grad():
        verts = head(p["betas"], p["expression"], p["pose"]).vertices
    cam, to_camera, centre = head_camera(verts[0], head.face_mask, resolution)
    faces = torch.as_tensor(head.faces.astype(np.int32), device=dev)

    with atomic_dir(out) as tmp:
        timings = {}
        maps_np = {}
        for i, name in enumerate(("neutral", "expressive")):
            t = time.perf_counter()
            with torch.no_grad():
                m = render_maps(ctx, to_camera(verts[i]).to(dev)[None], faces, cam)
            timings[f"{name}_render_ms"] = 1e3 * (time.perf_counter() - t)
            write_png(tmp / f"{name}_normal.png", encode_normals(m["normal"][0], m["mask"][0]).numpy())
            write_png(tmp / f"{name}_depth.png", encode_depth(m["depth"][0], m["mask"][0]).numpy())
            maps_np[f"{name}_depth_m"] = m["depth"][0].cpu().numpy().astype(np.float32)
            maps_np[f"{name}_normal"] = m["normal"][0].cpu().numpy().astype(np.float32)
            maps_np[f"{name}_mask"] = m["mask"][0].cpu().numpy().astype(np.float32)
        write_npz(tmp / "maps.npz", **maps_np)
        names = body.model_meta.get("expression_names", [])[: body.num_expression]
        if names:
            t = time.perf_counter()
            write_png(tmp / "expressions.png", _contact_sheet(body, head, ctx, dev, cam, to_camera, faces, names))
            timings["expressions_s"] = time.perf_counter() - t

        # turntable: the expressive head, normal | depth side by side, depth range fixed over the video
        radius = float((verts[1] - centre).norm(dim=-1)[torch.as_tensor(head.face_mask)].max())
        near_far = (float(to_camera(centre[None])[0, 2]) - radius, float(to_camera(centre[None])[0, 2]) + radius)

        def turntable():
            for k in progress(range(frames), frames, "turntable"):
                yaw = 2 * math.pi * k / frames
                with torch.no_grad():
                    m = render_maps(ctx, to_camera(verts[1], yaw).to(dev)[None], faces, cam)
                n = encode_normals(m["normal"][0], m["mask"][0]).numpy()
                d = encode_depth(m["depth"][0], m["mask"][0], *near_far).numpy()
                yield np.concatenate([n, np.repeat(d[..., None], 3, -1)], 1)

        t = time.perf_counter()
        write_video(tmp / "turntable.mp4", turntable(), fps=24)
        timings["turntable_s"] = time.perf_counter() - t
        info = {
            "tool": "headrep render-model",
            "model": body.provenance(),
            "standin_notice": ("rendered with the headrep procedural STAND-IN model, not SMPL-X"
                               if body.is_standin else None),
            "dense": {"levels": subdiv, "vertices": head.num_vertices, "faces": int(len(head.faces)),
                      "face_region_vertices": int(head.face_mask.sum()), "topology_hash": head.topology.hash()},
            "camera": {"convention": "OpenCV (x right, y down, z forward), row 0 at the top",
                       "fx": cam.fx, "fy": cam.fy, "cx": cam.cx, "cy": cam.cy,
                       "width": cam.width, "height": cam.height},
            "expressive_params": {"expression": p["expression"][1].tolist(), "jaw_pose": p["pose"][1, 22].tolist()},
            "backend": repr(ctx),
            "timings": timings,
            "total_s": time.perf_counter() - t0,
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
            "outputs": {
                "neutral_normal.png": "camera-space normals encoded (n+1)/2, neutral head",
                "neutral_depth.png": "depth, near bright, background black",
                "expressive_normal.png": "normals, jaw open + smile + raised brows",
                "expressive_depth.png": "depth of the expressive head",
                "maps.npz": "float32 normal [H,W,3], depth in metres [H,W] and mask [H,W] of both heads",
                "turntable.mp4": f"{frames} frames, normal | depth, the expressive head turning 360 degrees",
                **({"expressions.png": "contact sheet: each named expression direction alone (open model: "
                                       "each ARKit unit at 1, its full activation), face crop, normals"}
                   if body.model_meta.get("expression_names") else {}),
            },
        }
        (tmp / "render_model.json").write_text(json.dumps(info, indent=2))
    sheet = ", expressions.png" if body.model_meta.get("expression_names") else ""
    print(f"wrote {out}/ (neutral_*.png, expressive_*.png{sheet}, maps.npz, turntable.mp4, render_model.json) "
          f"in {time.perf_counter() - t0:.1f} s")
    return out
