"""The evaluation protocol over a set of clips (`generator evaluate-set`): the paper's two-part table.

For each clip folder (from `generator prepare`) and each checkpoint (one per condition):

* **self-reenactment**: reference = the clip's reference frame (its stored crop, as in training), condition =
  the clip's own rep rendered as the checkpoint's condition, ``num_frames`` generated from position ``start``
  (default: right after the reference, so the compared frames differ from it), compared with the clip's real
  crops at ``stride`` (:func:`generator.evaluate.evaluate` with ``offset = start``).
* **cross-reenactment** (two or more clips): for every ordered pair (A, B), A ≠ B: B's rep performs A's motion
  (``transfer.drive.drive``; mode "mlp" with a transfer model, else "none": the SMPL-X expression alone), the
  generator animates B's reference along it, and AED / APD are measured against that driven rep, CSIM
  against B's reference.

Baselines, evaluated the same way: **reference repeated** (the reference frame as every generated frame: what
no motion scores) and, for self-reenactment, **ground truth** (the real crops against themselves: PSNR ∞,
CSIM 1, AED = APD = 0), and the **shaded render** of the clip's rep when it was fitted with the photometric term
(albedo × per-frame SH shading composited over the reference frame: a model-based reenactment with no diffusion
weights; in cross-reenactment B's albedo on the driven rep).

Generated frames are evaluated as sampled (before MP4 encoding; ``generated.mp4`` is written for viewing), so
the codec's loss is not counted against the model. Each row's numbers are the mean over clips (pairs) of the
per-clip means. Output folder: ``results.json``
(every evaluation's metrics.json, the aggregated rows, the settings), ``table.md``, and per clip
``self/<clip>/<row>/`` (``generated.mp4`` + the evaluation folder ``eval/``) and ``cross/<A>_to_<B>/<row>/``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import GeneratorInputError
from .evaluate import COLUMNS_CROSS, COLUMNS_SELF, EvalConfig, Frames, evaluate, format_table

__all__ = ["ProtocolConfig", "evaluate_set"]

REF_ROW = "reference repeated"
SHADED_ROW = "shaded render (rep albedo × SH)"
GT_ROW = "ground truth"


def _note(msg: str) -> None:
    print(f"generator: note: {msg}", file=sys.stderr, flush=True)


@dataclass
class ProtocolConfig:
    num_frames: int | None = None   # frames generated (4k+1; default: the checkpoint's)
    start: int | None = None        # first generated position (default: reference + 1)
    stride: int = 2                 # compare every k-th generated frame
    steps: int = 30                 # denoising steps
    seed: int = 0
    cross: bool = True
    motion: bool = True
    fit_steps: int | None = 100     # coarse steps of the AED/APD fits
    device: str = "auto"


def _clip_rep(clip):
    """The HeadRep a clip was prepared from, when it is there and carries albedo / lighting; else None."""
    from headrep.rep import HeadRep

    path = (clip.meta.get("rep") or {}).get("path")
    if not path or not Path(path).is_dir():
        return None
    rep = HeadRep.load(Path(path))
    return rep if rep.has_appearance else None


def _write_frames(path: Path, frames: np.ndarray, fps: float) -> Frames:
    """Write ``generated.mp4`` for viewing; the evaluation reads the frames themselves (before MP4 encoding)."""
    from headrep.io import write_video

    fps = float(fps) if fps and fps > 0 else 16.0
    write_video(path, frames, fps=fps)
    return Frames(np.asarray(frames), fps, path, "video")


def _generate(model, ref: np.ndarray, cond, cfg: ProtocolConfig) -> np.ndarray:
    import torch

    from .pipeline import sample, to_uint8_frames

    ref_t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(ref, -1, 0)))
    video = sample(model, ref_t, cond, steps=cfg.steps, seed=cfg.seed, device=cfg.device, show_progress=False)
    return to_uint8_frames(video)


def _condition_picture(cond) -> np.ndarray:
    """The condition the model was given [C,F,H,W] in [-1, 1] as uint8 pictures [F,H,W,3] (normals or the
    landmark drawing: its first three channels)."""
    c = cond[:3].permute(1, 2, 3, 0).float().numpy()
    return np.clip((c + 1.0) * 127.5, 0, 255).round().astype(np.uint8)


def _label(model) -> str:
    return f"generator: {model.condition}"


def _aggregate(evals: dict[str, list[dict]], columns) -> list[dict]:
    rows = []
    for label, results in evals.items():
        means = {}
        for c in columns:
            vals = [r["means"].get(c) for r in results]
            if any(v == "inf" for v in vals):
                means[c] = "inf"
                continue
            vals = [float(v) for v in vals if v is not None]
            means[c] = float(np.mean(vals)) if vals else None
        counts = {}
        for r in results:
            for k, v in r["counts"].items():
                counts[k] = counts.get(k, 0) + int(v)
        rows.append({"label": label, "means": means, "n": len(results), "counts": counts})
    return rows


def evaluate_set(clips, checkpoints, out, config: ProtocolConfig | None = None, transfer=None,
                 overwrite: bool = False) -> dict:
    """Run the protocol (module docs); returns {"self": rows, "cross": rows, "table": markdown, ...} and writes
    ``out``. GeneratorInputError for bad clips / checkpoints or an existing ``out`` without ``overwrite``."""
    from headrep.errors import HeadrepError
    from headrep.io import check_output_dir

    from . import data
    from .model import HeadGenerator

    cfg = config or ProtocolConfig()
    t0 = time.perf_counter()
    out = Path(out)
    try:
        check_output_dir(out, overwrite)
    except HeadrepError as exc:
        raise GeneratorInputError(str(exc)) from None
    clips = [data._Clip(Path(c)) for c in clips]
    if not clips:
        raise GeneratorInputError("no clips given")
    if len({c.path.name for c in clips}) != len(clips):
        raise GeneratorInputError("clip folders must have distinct names (they name the output folders)")
    models = []
    for ck in checkpoints:
        try:
            models.append(HeadGenerator.from_pretrained(ck))
        except HeadrepError:
            raise
        except Exception as exc:  # not a generator folder
            raise GeneratorInputError(f"cannot load the checkpoint {ck}: {exc}") from None
    F = cfg.num_frames or int(models[0].config.get("num_frames", 9))
    data.check_num_frames(F, "--frames")
    R = int(models[0].config.get("resolution", 64))
    import shutil

    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(clips, models, checkpoints, out, cfg, transfer, F, R, t0)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # nothing partial left behind
        raise


def _run(clips, models, checkpoints, out: Path, cfg: ProtocolConfig, transfer, F: int, R: int, t0: float) -> dict:
    from headrep.rep.outputs import shaded_sequence

    from . import data
    from .metrics import FaceIdentity, load_lpips

    lp, fi = load_lpips(), FaceIdentity()
    ecfg = dict(stride=cfg.stride, motion=cfg.motion, device=cfg.device, fit_steps=cfg.fit_steps)
    self_evals: dict[str, list[dict]] = {}
    cross_evals: dict[str, list[dict]] = {}

    def run_eval(bucket, label, pred, folder, **kw):
        res = evaluate(pred, out=folder / "eval", config=EvalConfig(**kw.pop("ecfg")), label=label,
                       lpips_model=lp, identity=fi, progress=False, overwrite=True, **kw)
        bucket.setdefault(label, []).append(res)
        return res

    # self-reenactment
    for clip in clips:
        s = cfg.start if cfg.start is not None else clip.reference + 1
        if s + F > clip.T:
            s2 = max(0, clip.T - F)
            _note(f"clip {clip.path.name}: {F} frames from {s} do not fit its {clip.T}; starting at {s2}"
                  + (" (the reference frame is among the compared ones)" if s2 <= clip.reference < s2 + F else ""))
            s = s2
        ref = np.asarray(clip.array("frames")[clip.reference])
        ref_r = np.asarray(((data._resize_stack(ref[None].astype(np.float32), R)[0]).round()).clip(0, 255), np.uint8)
        base = out / "self" / clip.path.name
        kw = dict(gt=clip.path, ref=clip.path / data.REFERENCE_FILE, ecfg={**ecfg, "frames": slice(0, F),
                                                                           "offset": s})
        # baselines
        folder = base / "reference_repeated"
        folder.mkdir(parents=True, exist_ok=True)
        pred = _write_frames(folder / "generated.mp4", np.repeat(ref_r[None], F, 0), clip.meta.get("fps", 16))
        run_eval(self_evals, REF_ROW, pred, folder, **{**kw, "ecfg": dict(kw["ecfg"])})
        folder = base / "ground_truth"
        folder.mkdir(parents=True, exist_ok=True)
        run_eval(self_evals, GT_ROW, clip.path, folder, **{**kw, "ecfg": {**ecfg, "frames": slice(s, s + F),
                                                                          "offset": 0}})
        rep = _clip_rep(clip)
        if rep is not None:
            folder = base / "shaded_render"
            folder.mkdir(parents=True, exist_ok=True)
            pred = _write_frames(folder / "generated.mp4", shaded_sequence(rep, np.arange(s, s + F), R, ref_r),
                                 clip.meta.get("fps", 16))
            run_eval(self_evals, SHADED_ROW, pred, folder, **{**kw, "ecfg": dict(kw["ecfg"])})
        for model in models:
            cond = data.load_condition(clip.path, model.condition, F, R, start=s)
            video = _generate(model, data._resize_stack(data._to_unit(ref)[None], R)[0], cond, cfg)
            folder = base / model.condition
            folder.mkdir(parents=True, exist_ok=True)
            pred = _write_frames(folder / "generated.mp4", video, clip.meta.get("fps", 16))
            run_eval(self_evals, _label(model), pred, folder, cond=_condition_picture(cond),
                     **{**kw, "ecfg": dict(kw["ecfg"])})
    # cross-reenactment
    if cfg.cross and len(clips) >= 2:
        from headrep.rep import HeadRep
        from transfer.drive import drive

        tmodel = None
        if transfer is not None:
            from transfer.model import TransferModel

            tmodel = TransferModel.load(transfer)
        reps = {}
        for c in clips:
            path = (c.meta.get("rep") or {}).get("path")
            if not path or not Path(path).is_dir():
                raise GeneratorInputError(f"clip {c.path}: its rep {path} is not there (cross-reenactment drives "
                                          f"the reps); pass --no-cross")
            reps[c.path.name] = HeadRep.load(Path(path))
        for a in clips:
            for b in clips:
                if a is b:
                    continue
                base = out / "cross" / f"{a.path.name}_to_{b.path.name}"
                driven = drive(reps[a.path.name], reps[b.path.name], mode="mlp" if tmodel is not None else "none",
                               model=tmodel, model_path=str(transfer) if transfer else None)
                driven_path = base / "driven.rep"
                driven.save(driven_path, overwrite=True)
                s = cfg.start if cfg.start is not None else a.reference + 1
                if s + F > driven.num_frames:
                    s = max(0, driven.num_frames - F)
                ref = np.asarray(b.array("frames")[b.reference])
                ref_r = np.asarray(data._resize_stack(ref[None].astype(np.float32), R)[0].round().clip(0, 255),
                                   np.uint8)
                kw = dict(driver=driven_path, ref=b.path / data.REFERENCE_FILE,
                          ecfg={**ecfg, "frames": slice(0, F), "offset": s})
                folder = base / "reference_repeated"
                folder.mkdir(parents=True, exist_ok=True)
                pred = _write_frames(folder / "generated.mp4", np.repeat(ref_r[None], F, 0), a.meta.get("fps", 16))
                run_eval(cross_evals, REF_ROW, pred, folder, **{**kw, "ecfg": dict(kw["ecfg"])})
                if driven.has_appearance:  # B's albedo (and reference light) on the driven rep
                    folder = base / "shaded_render"
                    folder.mkdir(parents=True, exist_ok=True)
                    pred = _write_frames(folder / "generated.mp4",
                                         shaded_sequence(driven, np.arange(s, s + F), R, ref_r), a.meta.get("fps", 16))
                    run_eval(cross_evals, SHADED_ROW, pred, folder, **{**kw, "ecfg": dict(kw["ecfg"])})
                for model in models:
                    cond = data.load_condition(driven_path, model.condition, F, R, start=s)
                    video = _generate(model, data._resize_stack(data._to_unit(ref)[None], R)[0], cond, cfg)
                    folder = base / model.condition
                    folder.mkdir(parents=True, exist_ok=True)
                    pred = _write_frames(folder / "generated.mp4", video, a.meta.get("fps", 16))
                    run_eval(cross_evals, _label(model), pred, folder, cond=_condition_picture(cond),
                             **{**kw, "ecfg": dict(kw["ecfg"])})
    self_rows = _aggregate(self_evals, COLUMNS_SELF)
    cross_rows = _aggregate(cross_evals, COLUMNS_CROSS)
    n_clips = len(clips)
    table = format_table(self_rows, COLUMNS_SELF, f"Self-reenactment ({n_clips} clip(s), {F} frames, stride "
                                                  f"{cfg.stride})")
    if cross_rows:
        table += "\n\n" + format_table(cross_rows, COLUMNS_CROSS,
                                       f"Cross-reenactment ({n_clips * (n_clips - 1)} ordered pair(s))")
    table += ("\n\nCSIM (SFace) and AED/APD (headrep's tracker) are this project's definitions, not comparable "
              "with papers' ArcFace / 3DMM numbers; n/a: no face found in any compared frame (by SFace's detector "
              "for CSIM, by the tracker for AED/APD). Cross-reenactment AED/APD compare a fit of the generated "
              "crops with the driven rep (fitted on full frames), so they carry that difference of pipelines; "
              "compare rows, not absolute values. The shaded-render row (a rep fitted with the photometric term: "
              "its albedo × SH shading over the reference frame) needs no diffusion weights; it is absent for "
              "reps fitted without the photometric term.")
    result = {"format": "generator.evaluation-set", "version": 1, "config": asdict(cfg),
              "clips": [str(c.path) for c in clips], "checkpoints": [str(c) for c in checkpoints],
              "transfer": str(transfer) if transfer else None, "self": self_rows, "cross": cross_rows,
              "evaluations": {"self": self_evals, "cross": cross_evals}, "table": table,
              "seconds": time.perf_counter() - t0}
    from headrep.io import atomic_write

    with atomic_write(out / "results.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1, allow_nan=False, default=str) + "\n")
    with atomic_write(out / "table.md") as tmp:
        tmp.write_text(table + "\n")
    return result
