"""`fit_video`: video → tracked crops → dense targets → staged fit → HeadRep (the library call behind
`headrep fit`, the notebook and corpus jobs).

With ``out``, preprocessing results and fitter checkpoints live in OUT/.fit-checkpoint/ while the fit runs;
the finished rep replaces OUT atomically (the checkpoint goes with the old contents). An interrupted run
leaves only the checkpoint, which ``resume=True`` continues; OUT never holds a half-written rep.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from headrep.errors import HeadrepError
from headrep.fitting.config import FitConfig

CHECKPOINT = ".fit-checkpoint"


def prepare_output(out: Path, resume: bool, overwrite: bool) -> Path:
    """The checkpoint folder inside OUT, after checking OUT may be written (see the module docstring)."""
    ckpt = out / CHECKPOINT
    if out.exists() and not out.is_dir():
        raise HeadrepError(f"output {out} exists and is not a folder")
    contents = list(out.iterdir()) if out.is_dir() else []
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


def _source_kind(source: Path) -> str:
    from headrep.io import IMAGE_EXTENSIONS

    if source.is_dir():
        return "images"
    return "image" if source.suffix.lower() in IMAGE_EXTENSIONS else "video"


def prepare_inputs(source: Path, config: FitConfig, frames, stride: int, estimator, ckpt: Path | None, resume: bool,
                   progress: bool):
    """(track, targets or None, observations or None), each cached in the checkpoint folder: what the fitter
    needs from the video, computed once."""
    from headrep.fitting.landmarks import FaceTrack, track_faces
    from headrep.fitting.observe import Observations, observe
    from headrep.fitting.targets import Targets, make_estimator
    from headrep.fitting.video import load_frames
    from headrep.io import write_npz

    terms = config.term_list()
    want_obs = "silhouette" in terms or "photometric" in terms
    files = {k: (ckpt / f"{k}.npz" if ckpt is not None else None) for k in ("track", "targets", "observations")}

    def cached(key):
        return resume and files[key] is not None and files[key].exists()

    track = FaceTrack.load(files["track"]) if cached("track") else None
    obs = Observations.load(files["observations"]) if want_obs and cached("observations") else None
    if track is None or (want_obs and obs is None):
        loaded = load_frames(source, frames=frames, stride=stride)
        if track is None:
            track = track_faces(loaded, resolution=config.resolution, progress=progress)
            if files["track"] is not None:
                track.save(files["track"])
        if want_obs:
            obs = observe(loaded.images, track, progress=progress)
            if files["observations"] is not None:
                obs.save(files["observations"])
        del loaded
    targets = None
    if "normals" in terms:
        if cached("targets"):
            with np.load(files["targets"]) as d:
                targets = Targets(normal=d["normal"], depth=d["depth"], mask=d["mask"],
                                  source=str(d["source"]), has_depth=bool(d["has_depth"]),
                                  coarse=bool(d["coarse"]) if "coarse" in d.files
                                  else str(d["source"]).startswith("mediapipe-mesh"))
        else:
            targets = make_estimator(estimator).estimate(track.crops, track.points, track.valid)
            if files["targets"] is not None:
                write_npz(files["targets"], normal=targets.normal, depth=targets.depth, mask=targets.mask,
                          source=np.array(targets.source), has_depth=np.array(targets.has_depth),
                          coarse=np.array(targets.coarse))
    return track, targets, obs


def _say(progress: bool, text: str) -> None:
    if progress:
        print(f"headrep fit: {text}", file=sys.stderr)


def fit_video(source, out=None, config: FitConfig | None = None, model=None, device="auto", progress: bool = True,
              frames: slice | None = None, stride: int = 1, estimator: str | None = None, resume: bool = False,
              overwrite: bool = False):
    """Fit the dense head to a video file, an image folder or one image and return the HeadRep.

    ``config``: FitConfig (defaults when None). ``model``: an SMPL-X-format .npz path, "open", "standin" or a
    BodyModel (None: the default model, the open one unless $HEADREP_DEFAULT_MODEL says otherwise).
    ``frames``: a slice of source frame numbers; ``stride``: keep every k-th. ``estimator``: a
    TorchScript/ONNX normal/depth network (None: MediaPipe-mesh targets). ``out``: a folder to save the rep
    into (atomically, with checkpoints and ``resume``/``overwrite`` as `headrep fit`); None: nothing is
    written. Raises HeadrepError on bad input before anything is written.
    """
    from headrep.model import BodyModel
    from headrep.render import get_context
    from headrep.rep import HeadRep
    from headrep.fitting.fitter import Fitter

    t0 = time.perf_counter()
    config = config or FitConfig()
    source = Path(source)
    if stride < 1:
        raise HeadrepError(f"stride must be at least 1, got {stride}")
    if not source.exists():
        raise HeadrepError(f"input {source} does not exist")
    body = model if isinstance(model, BodyModel) else BodyModel(model)  # a bad model file fails here
    ctx = get_context(device)
    out = Path(out) if out is not None else None
    ckpt = prepare_output(out, resume, overwrite) if out is not None else None
    created_out = out is not None
    try:
        if body.is_standin:
            _say(progress, "using the procedural STAND-IN model (not SMPL-X); the rep records this. "
                           "Pass --model SMPLX_NEUTRAL.npz for SMPL-X.")
        elif body.kind == "open":
            _say(progress, f"using the {body.open_meta['model']} head model ({body.num_betas} identity slots; not "
                           "SMPL-X: its numbers do not transfer to SMPL-X results); the rep records this. "
                           "--model standin for the fast stand-in, --model SMPLX_NEUTRAL.npz for SMPL-X.")
        track, targets, obs = prepare_inputs(source, config, frames, stride, estimator, ckpt, resume, progress)
        if obs is not None:
            missing = np.nonzero(np.asarray(track.valid) & ~obs.has_person)[0]
            if len(missing):
                _say(progress, f"segmentation found no person in {len(missing)} frame(s) with a face; the silhouette "
                               "term leaves them out (recorded in the rep)")
            if obs.grayscale:
                _say(progress, "the video is grayscale: the photometric term works on luminance")
        if ckpt is not None:
            (ckpt / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
        fitter = Fitter(body, track, targets, config, ctx=ctx, observations=obs)
        if fitter.occluded_frames.any():
            _say(progress, f"{int(fitter.occluded_frames.sum())} frame(s) have a mostly occluded face (a hand?): "
                           "they are interpolated like face-less frames")
        result = fitter.run(checkpoint_dir=ckpt, resume=resume, progress=progress)
        tensors = dict(result.tensors)
        tensors["frame_indices"] = torch.as_tensor(np.asarray(track.indices, np.int64))
        tensors["landmarks"] = torch.as_tensor(np.asarray(track.points, np.float32))
        src = {"path": str(source), "kind": _source_kind(source), "fps": float(track.fps),
               "image_size": list(track.image_size), "scale": float(track.scale),
               "num_frames": int(len(track.indices))}
        sel = None if frames is None else ":".join("" if v is None else str(v) for v in
                                                   (frames.start, frames.stop, frames.step)).rstrip(":")
        fit_info = {**config.to_dict(), "estimator": targets.source if targets is not None else None,
                    "stats": result.stats,
                    "total_seconds": time.perf_counter() - t0, "stride": stride, "frames": sel}
        masks = None if obs is None else {"person": obs.person, "skin": obs.skin, "occluded": obs.occluded}
        rep = HeadRep.create(body, result.head, tensors, src, config.resolution, fit_info, masks=masks)
        if out is not None:
            rep.save(out, overwrite=True)  # atomic: replaces OUT, checkpoint included
            rep.path = out
            created_out = False
        return rep
    finally:
        if created_out and out.is_dir() and not any(p.name != CHECKPOINT for p in out.iterdir()) \
                and not any(ckpt.iterdir()):
            shutil.rmtree(out, ignore_errors=True)  # nothing was computed: leave no empty folder
