"""Benchmark of `headrep fit` on the real sample videos: accuracy and speed per stage, offsets vs no offsets.

For each video (WolfgangLanger_Pexels.mp4, 472 frames, and single_face.mp4, 72 frames; from
`headrep.samples.sample_path`) this runs the pipeline of `headrep fit` in-process, with the CLI's defaults
(FitConfig()) unless told otherwise:

    load_frames -> track_faces -> MediaPipeMeshTargets().estimate -> Fitter(...).run()

and then the SMPL-X-only ablation: a second Fitter run with `offsets=False` on the same track and targets.
It prints one markdown table per video with a row per stage - `coarse`, `detail (offsets)` and
`detail (no offsets)` - giving the Fitter's `evaluate()` metrics (landmark NME / inter-ocular distance,
normal angular error in degrees on the targets' face mask, scale-shift-invariant depth error) and that
stage's seconds per frame, followed by the preprocessing times (decode, landmarks, targets, ms/frame), the
end-to-end seconds per frame (decode + landmarks + targets + both stages of the offsets fit; the ablation is
not counted) and the peak memory (getrusage maxrss).

Stage times are the Fitter's own (`stats[stage]["seconds"]`): `detail` includes the evaluation of the coarse
fit that `Fitter.run` does between the stages; the ablation's coarse stage repeats the first run's (same
seed, so its coarse metrics must match; they are checked and printed if they differ).

Each video runs in its own child process, so its peak memory is its own (maxrss never goes down). The machine
may be shared: timings are wall-clock and the load average before/after is printed with them.

    python benchmarks/fit.py                           # whole videos, CLI defaults (~25 min on 2 busy cores)
    python benchmarks/fit.py --quick                   # first 48 frames of each, fewer steps (~5 min)
    python benchmarks/fit.py --frames 96 --videos WolfgangLanger_Pexels.mp4 --json out/fit_bench.json
    python benchmarks/fit.py --models standin,open --quick   # a model column: the stand-in vs the open model

`--models` (default `standin`) runs every video with each model (`standin`, `open` or a model file), each
video x model in its own child process; the tables then carry a model column and a last table compares the
models' coarse and detail rows (NME, normal error, silhouette IoU where the term ran, s/frame).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VIDEOS = ("WolfgangLanger_Pexels.mp4", "single_face.mp4")
QUICK_FRAMES = 48
QUICK_COARSE_STEPS = 100
QUICK_DETAIL_EPOCHS = 4


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _config_kwargs(args) -> dict:
    kw = {"resolution": args.resolution, "subdiv": args.subdiv}
    if args.coarse_steps is not None:
        kw["coarse_steps"] = args.coarse_steps
    if args.detail_epochs is not None:
        kw["detail_epochs"] = args.detail_epochs
    return kw


def run_video(name: str, args, model: str = "standin") -> dict:
    """The fit pipeline on one sample video; returns the numbers (see the module docstring)."""
    import numpy as np
    import torch

    from headrep.model.body import BodyModel
    from headrep.fitting.fitter import FitConfig, Fitter
    from headrep.fitting.landmarks import track_faces
    from headrep.render import get_context
    from headrep.samples import sample_path
    from headrep.fitting.targets import MediaPipeMeshTargets
    from headrep.fitting.video import load_frames

    tty = sys.stderr.isatty()
    path = sample_path(name)
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    body = BodyModel(model)  # "standin", "open" (the CLI's default) or a model file
    ctx = get_context("cpu")
    t_setup = time.perf_counter()

    frames = load_frames(path, frames=None if args.frames is None else slice(0, args.frames))
    t_decode = time.perf_counter()
    track = track_faces(frames, resolution=args.resolution, progress=tty)
    del frames
    t_landmarks = time.perf_counter()
    targets = MediaPipeMeshTargets(progress=tty).estimate(track.crops, track.points, track.valid)
    t_targets = time.perf_counter()

    cfg = FitConfig(**_config_kwargs(args))
    result = Fitter(body, track, targets, cfg, ctx=ctx).run(progress=tty)
    t_fit = time.perf_counter()
    peak_mb = _maxrss_mb()  # before the ablation: the peak of the pipeline `headrep fit` runs
    load1 = os.getloadavg()
    T = len(track.valid)
    d = result.stats["detail"]
    print(f"[{name}: offsets fit done - detail normal err {d['normal_deg']:.2f} deg, NME {d['landmark_nme']:.4f}, "
          f"depth {d['depth_ssi']:.4f}; end to end {(t_fit - t_setup) / T:.2f} s/frame; peak {peak_mb:.0f} MB; "
          f"now the no-offsets ablation]", flush=True)

    cfg_no = FitConfig(**{**_config_kwargs(args), "offsets": False})
    result_no = Fitter(body, track, targets, cfg_no, ctx=ctx).run(progress=tty)
    t_ablation = time.perf_counter()

    st, st_no = result.stats, result_no.stats

    def row(s: dict) -> dict:
        return {k: float(s[k]) for k in ("landmark_nme", "normal_deg", "depth_ssi", "seconds")} | {
            "seconds_per_frame": float(s["seconds"]) / T, "frames_evaluated": int(s["frames"]),
            "silhouette_iou": float(s.get("silhouette_iou", float("nan")))}

    return {
        "video": name, "model": model, "model_kind": body.kind, "num_betas": body.num_betas,
        "num_expression": body.num_expression, "path": str(path), "frames": T, "valid_frames": int(np.asarray(track.valid).sum()),
        "image_size": list(track.image_size), "standin": bool(body.is_standin), "landmarks": st["landmarks"],
        "config": cfg.to_dict(), "torch_threads": torch.get_num_threads(),
        "stages": {"coarse": row(st["coarse"]), "detail (offsets)": row(st["detail"]),
                   "detail (no offsets)": row(st_no["detail"])},
        "ablation_coarse": row(st_no["coarse"]),
        "preprocess_ms_per_frame": {"decode": 1e3 * (t_decode - t_setup) / T,
                                    "landmarks": 1e3 * (t_landmarks - t_decode) / T,
                                    "targets": 1e3 * (t_targets - t_landmarks) / T},
        "setup_seconds": t_setup - t_start,
        "fit_seconds": t_fit - t_targets,
        "end_to_end_seconds": t_fit - t_setup,
        "end_to_end_seconds_per_frame": (t_fit - t_setup) / T,
        "ablation_seconds": t_ablation - t_fit,
        "peak_memory_mb": peak_mb,
        "peak_memory_mb_with_ablation": _maxrss_mb(),
        "loadavg_before": list(load0), "loadavg_after_fit": list(load1),
    }


def format_video(r: dict) -> str:
    T = r["frames"]
    cfg = r["config"]
    lines = [f"## {r['video']} - model {r.get('model', 'standin')} ({r.get('num_betas', '?')} betas, "
             f"{r.get('num_expression', '?')} expressions) - {T} frames ({r['valid_frames']} with a face), "
             f"{r['image_size'][1]}x{r['image_size'][0]}, resolution {cfg['resolution']}, subdiv {cfg['subdiv']}, "
             f"coarse_steps {cfg['coarse_steps']}, detail_epochs {cfg['detail_epochs']}, window {cfg['window']}"
             + (", STAND-IN model" if r["standin"] else "") + f", landmarks {r['landmarks']}", "",
             "| stage | landmark NME | normal err (deg) | depth err (SSI) | s/frame |", "|---|---|---|---|---|"]
    for name, s in r["stages"].items():
        lines.append(f"| {name} | {s['landmark_nme']:.4f} | {s['normal_deg']:.2f} | {s['depth_ssi']:.4f} "
                     f"| {s['seconds_per_frame']:.3f} |")
    p = r["preprocess_ms_per_frame"]
    lines += ["", f"preprocessing (ms/frame): decode {p['decode']:.1f}, landmarks {p['landmarks']:.1f}, "
                  f"targets {p['targets']:.1f}",
              f"end to end (decode + landmarks + targets + both stages): {r['end_to_end_seconds']:.1f} s = "
              f"**{r['end_to_end_seconds_per_frame']:.2f} s/frame**; peak memory {r['peak_memory_mb']:.0f} MB "
              f"({r['peak_memory_mb_with_ablation']:.0f} MB with the ablation); model setup "
              f"{r['setup_seconds']:.1f} s not counted; ablation run {r['ablation_seconds']:.1f} s not counted",
              f"load average (1 min) before {r['loadavg_before'][0]:.2f}, after the fit "
              f"{r['loadavg_after_fit'][0]:.2f}"]
    on, off = r["stages"]["detail (offsets)"]["normal_deg"], r["stages"]["detail (no offsets)"]["normal_deg"]
    verdict = "offsets LOWER the normal error" if on < off else "offsets do NOT lower the normal error"
    lines.append(f"offsets vs SMPL-X only: normal error {on:.2f} vs {off:.2f} deg ({on - off:+.2f}): {verdict}")
    c, ca = r["stages"]["coarse"], r["ablation_coarse"]
    if any(abs(c[k] - ca[k]) > 1e-6 * max(1.0, abs(c[k])) for k in ("landmark_nme", "normal_deg", "depth_ssi")):
        lines.append(f"note: the ablation's coarse fit differs from the first run's (NME {ca['landmark_nme']:.4f}, "
                     f"normal {ca['normal_deg']:.2f} deg, depth {ca['depth_ssi']:.4f})")
    return "\n".join(lines)


def format_models(results: list[dict]) -> str:
    """One table over videos x models: coarse and detail NME, normal error, silhouette IoU, s/frame."""
    lines = ["## models", "", "| video | model | stage | landmark NME | normal err (deg) | silhouette IoU | s/frame |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for stage in ("coarse", "detail (offsets)"):
            s = r["stages"][stage]
            iou = s.get("silhouette_iou", float("nan"))
            lines.append(f"| {r['video']} | {r.get('model', 'standin')} | {stage} | {s['landmark_nme']:.4f} "
                         f"| {s['normal_deg']:.2f} | {'n/a' if iou != iou else f'{iou:.3f}'} "
                         f"| {s['seconds_per_frame']:.3f} |")
    return "\n".join(lines)


def _parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=None, help="first N frames of each video (default: all)")
    ap.add_argument("--resolution", type=int, default=256, choices=[256, 512], help="crop/render size (default 256)")
    ap.add_argument("--subdiv", type=int, default=1, choices=[0, 1, 2], help="dense upsampling levels (default 1)")
    ap.add_argument("--videos", nargs="+", default=list(VIDEOS), choices=list(VIDEOS), metavar="NAME",
                    help=f"subset of {', '.join(VIDEOS)} (default: both)")
    ap.add_argument("--quick", action="store_true",
                    help=f"first {QUICK_FRAMES} frames, {QUICK_COARSE_STEPS} coarse steps, "
                         f"{QUICK_DETAIL_EPOCHS} detail epochs (not the default settings)")
    ap.add_argument("--coarse-steps", type=int, default=None, help="override FitConfig.coarse_steps")
    ap.add_argument("--detail-epochs", type=int, default=None, help="override FitConfig.detail_epochs")
    ap.add_argument("--models", default="standin",
                    help="comma-separated models to compare: standin, open or model files (default standin)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--in-process", action="store_true",
                    help="run all videos in this process (peak memory then accumulates over videos)")
    ap.add_argument("--child-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.frames = QUICK_FRAMES if args.frames is None else min(args.frames, QUICK_FRAMES)
        args.coarse_steps = QUICK_COARSE_STEPS if args.coarse_steps is None else args.coarse_steps
        args.detail_epochs = QUICK_DETAIL_EPOCHS if args.detail_epochs is None else args.detail_epochs
    if args.frames is not None and args.frames < 1:
        ap.error("--frames must be at least 1")
    return args


def _child_argv(args, name: str, model: str, out: Path) -> list[str]:
    argv = [sys.executable, os.path.abspath(__file__), "--videos", name, "--models", model,
            "--resolution", str(args.resolution),
            "--subdiv", str(args.subdiv), "--child-json", str(out)]
    if args.frames is not None:
        argv += ["--frames", str(args.frames)]
    if args.coarse_steps is not None:
        argv += ["--coarse-steps", str(args.coarse_steps)]
    if args.detail_epochs is not None:
        argv += ["--detail-epochs", str(args.detail_epochs)]
    return argv


def main(argv=None) -> int:
    args = _parse(argv)
    if args.child_json is not None:  # one video, numbers to the parent
        results = [run_video(args.videos[0], args, args.models)]
        args.child_json.write_text(json.dumps(results[0]))
        return 0

    import torch

    defaults = args.coarse_steps is None and args.detail_epochs is None and args.resolution == 256 \
        and args.subdiv == 1
    print("# headrep fit benchmark - real sample videos, staged fit vs the SMPL-X-only ablation\n")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); settings: "
          + ("the CLI defaults (FitConfig())" if defaults else "NOT the CLI defaults")
          + (f", first {args.frames} frames" if args.frames else ", whole videos")
          + ". Wall-clock timings; the machine may be shared (load averages below).\n", flush=True)
    results = []
    t0 = time.perf_counter()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in args.videos:
        for model in models:
            if args.in_process:
                r = run_video(name, args, model)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp) / "result.json"
                    rc = subprocess.run(_child_argv(args, name, model, out)).returncode
                    if rc != 0:
                        print(f"benchmark of {name} with model {model} failed (exit status {rc})", file=sys.stderr)
                        return rc
                    r = json.loads(out.read_text())
            results.append(r)
            print(format_video(r) + "\n", flush=True)
    if len(models) > 1:
        print(format_models(results) + "\n", flush=True)
    print(f"total benchmark time {time.perf_counter() - t0:.0f} s")
    if args.json is not None:
        from headrep.io import atomic_write

        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {"settings": {"models": models, "frames": args.frames, "resolution": args.resolution, "subdiv": args.subdiv,
                                "quick": args.quick, "cli_defaults": defaults}, "videos": results}
        with atomic_write(args.json) as tmp:
            Path(tmp).write_text(json.dumps(payload, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
