"""`headrep fit VIDEO -o OUT`: video → tracked crops → dense targets → staged fit → HeadRep folder.

Preprocessing results and fitter checkpoints live in OUT/.fit-checkpoint/ while the fit runs; the finished
rep replaces OUT atomically (the checkpoint goes with the old contents). An interrupted run leaves only the
checkpoint, which `--resume` continues; OUT never holds a half-written rep.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .errors import HeadrepError

CHECKPOINT = ".fit-checkpoint"


def parse_frames(spec: str | None) -> slice | None:
    """'A:B' or 'A:B:C' (source frame numbers, Python slice semantics, either end optional) -> slice."""
    from .video import parse_slice

    if spec is None:
        return None
    sel = parse_slice(spec)
    if isinstance(sel, int):
        raise HeadrepError(f"--frames must look like A:B (e.g. 0:100, :50 or 20:), got {spec!r}")
    return sel


def _prepare_out(out: Path, resume: bool, overwrite: bool) -> Path:
    ckpt = out / CHECKPOINT
    if out.exists() and not out.is_dir():
        raise HeadrepError(f"output {out} exists and is not a folder")
    contents = [p for p in out.iterdir()] if out.is_dir() else []
    if resume:
        if not ckpt.is_dir():
            raise HeadrepError(f"nothing to resume: {out} holds no interrupted fit ({CHECKPOINT}/ is missing)")
    elif contents:
        if not overwrite:
            what = "an interrupted fit (pass --resume to continue it)" if ckpt.is_dir() else "files"
            raise HeadrepError(f"output folder {out} is not empty: it holds {what}; pass --overwrite to start afresh")
        shutil.rmtree(ckpt, ignore_errors=True)
    ckpt.mkdir(parents=True, exist_ok=True)
    return ckpt


def _summary_table(stats: dict, offsets: bool) -> str:
    rows = [("stage", "landmark NME", "normal err (deg)", "depth err (SSI)", "seconds")]
    for stage in ("coarse", "detail"):
        s = stats.get(stage)
        if s:
            name = stage if (stage == "coarse" or offsets) else "detail (no offsets)"
            rows.append((name, f"{s['landmark_nme']:.4f}", f"{s['normal_deg']:.2f}", f"{s['depth_ssi']:.4f}",
                         f"{s['seconds']:.1f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    from .body import BodyModel
    from .fit import FitConfig, Fitter
    from .landmarks import FaceTrack, track_faces
    from .render import get_context
    from .rep import HeadRep
    from .targets import Targets, make_estimator
    from .video import load_frames

    t0 = time.perf_counter()
    video = Path(args.video)
    out = Path(args.out)
    frames_sel = parse_frames(args.frames)
    if args.stride < 1:
        raise HeadrepError(f"--stride must be at least 1, got {args.stride}")
    if not video.exists():
        raise HeadrepError(f"input {video} does not exist")
    body = BodyModel(args.model)  # a bad model file fails here, before anything is written
    ctx = get_context(args.device)
    ckpt = _prepare_out(out, args.resume, args.overwrite)
    created_out = True
    try:
        if body.is_standin:
            print("headrep fit: using the procedural STAND-IN model (not SMPL-X); the rep records this. "
                  "Pass --model SMPLX_NEUTRAL.npz for SMPL-X.", file=sys.stderr)
        track_file, targets_file = ckpt / "track.npz", ckpt / "targets.npz"
        if args.resume and track_file.exists():
            track = FaceTrack.load(track_file)
        else:
            frames = load_frames(video, frames=frames_sel, stride=args.stride)
            track = track_faces(frames, resolution=args.resolution, progress=True)
            del frames
            track.save(track_file)
        if args.resume and targets_file.exists():
            with np.load(targets_file) as d:
                targets = Targets(normal=d["normal"], depth=d["depth"], mask=d["mask"],
                                  source=str(d["source"]), has_depth=bool(d["has_depth"]))
        else:
            estimator = make_estimator(args.estimator)
            targets = estimator.estimate(track.crops, track.points, track.valid)
            from .io import write_npz

            write_npz(targets_file, normal=targets.normal, depth=targets.depth, mask=targets.mask,
                      source=np.array(targets.source), has_depth=np.array(targets.has_depth))
        cfg = FitConfig(resolution=args.resolution, subdiv=args.subdiv, seed=args.seed,
                        offsets=not args.no_offsets, coarse_steps=args.coarse_steps,
                        detail_epochs=args.detail_epochs, window=args.window)
        (ckpt / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        fitter = Fitter(body, track, targets, cfg, ctx=ctx)
        result = fitter.run(checkpoint_dir=ckpt, resume=args.resume, progress=True)
        tensors = dict(result.tensors)
        tensors["frame_indices"] = torch.as_tensor(np.asarray(track.indices, np.int64))
        tensors["landmarks"] = torch.as_tensor(np.asarray(track.points, np.float32))
        from .video import IMAGE_EXTENSIONS

        kind = "images" if video.is_dir() else ("image" if video.suffix.lower().lstrip(".") in
                                                 {e.lstrip(".") for e in IMAGE_EXTENSIONS} else "video")
        source = {"path": str(video), "kind": kind, "fps": float(track.fps),
                  "image_size": list(track.image_size), "scale": float(track.scale),
                  "num_frames": int(len(track.indices))}
        fit_info = {**cfg.to_dict(), "estimator": targets.source, "stats": result.stats,
                    "total_seconds": time.perf_counter() - t0, "stride": args.stride, "frames": args.frames}
        rep = HeadRep.create(body, result.head, tensors, source, args.resolution, fit_info)
        rep.save(out, overwrite=True)  # atomic: replaces OUT, checkpoint included
        created_out = False
    except KeyboardInterrupt:
        print(f"headrep fit: interrupted; continue with: headrep fit {video} -o {out} --resume (same options)",
              file=sys.stderr)
        raise
    finally:
        if created_out and not any(p.name != CHECKPOINT for p in out.iterdir()) and not any(ckpt.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # nothing was computed: leave no empty folder
    print(_summary_table(result.stats, cfg.offsets))
    total = time.perf_counter() - t0
    valid = int(np.asarray(track.valid).sum())
    print(f"\n{len(track.valid)} frames ({valid} with a face) in {total:.1f} s "
          f"({total / len(track.valid):.2f} s per frame end to end); peak memory "
          f"{result.stats['peak_memory_mb']:.0f} MB")
    print(f"wrote {out}/ (rep.safetensors, rep.json). Next: headrep render {out}   |   headrep info {out}")
    return 0
