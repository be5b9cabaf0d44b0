"""Throughput of the per-video work at 256²: `headrep render` and `generator prepare`, whole commands and per phase.

1. Whole commands (render_rep, prepare_clip) on a rep of the first --frames frames of single_face.mp4 (fitted
   once with short settings, or --rep), wall and CPU ms per frame (CPU: the process's CPU time, all threads,
   encoder threads included), the median of --repeat runs after one warm-up run, on 1 thread (torch, numba:
   the figure a quiet machine's wall time comes close to, and what a 1-CPU Ray task gets) and on 2 threads.
   Render is also run with the x264 settings it used before (x264's default preset, medium, and threads) to
   show what the encoder settings are worth on their own.
2. Per phase, 1 thread, each phase run alone in this thread (no overlap), CPU ms per frame: where the time goes.

The load average is printed with every table: the machine may be shared, and wall times then swing 2-4x
(CPU times much less). Set OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 in the environment to keep the whole run
to one core when others share the machine (the 2-thread rows then use 1).

    python benchmarks/throughput.py                       # 48 frames, 3 runs per row (~3 min on 2 cores)
    python benchmarks/throughput.py --frames 72 --repeat 5 --rep out/single
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HEADREP_PROGRESS", "0")
R = 256

from tables import load, table  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def set_threads(n: int) -> int:
    import numba
    import torch

    n = min(n, numba.config.NUMBA_NUM_THREADS)
    torch.set_num_threads(n)
    numba.set_num_threads(n)
    return n


def make_rep(tmp: Path, frames: int, model: str) -> Path:
    from headrep.fitting import FitConfig, fit_video
    from headrep.samples import sample_path

    rep = tmp / "rep"
    print(f"(fitting the first {frames} frames of single_face.mp4 with short settings and the {model} model for "
          f"the rep ...)", file=sys.stderr, flush=True)
    fit_video(sample_path("single_face.mp4"), rep, FitConfig(coarse_steps=30, detail_epochs=1), model=model,
              frames=slice(0, frames), progress=False)
    return rep


def source_of(rep_path: Path) -> Path:
    from headrep.rep import HeadRep
    from headrep.rep.sources import source_path

    path = source_path(HeadRep.load(rep_path))
    if path is None or not path.exists():
        raise SystemExit(f"{rep_path}: its source video is not available ({path}); prepare needs it")
    return path


def bench_commands(rep_path: Path, repeat: int) -> None:
    import numba

    import generator.data as gdata
    from headrep.rep import HeadRep
    from headrep.rep import outputs

    T = HeadRep.load(rep_path).num_frames
    video = source_of(rep_path)
    before = {"crf": 18}  # write_video's defaults before: x264's default preset (medium) and threads
    cases = [("headrep render", "now", 1, None), ("headrep render", "now", 2, None),
             ("headrep render", "x264 medium (the old settings)", 1, before),
             ("generator prepare", "now", 1, None), ("generator prepare", "now", 2, None)]
    print(f"## Whole commands at {R}², {T} frames ({load()})\n")
    cases = list({(w, v, min(n, numba.config.NUMBA_NUM_THREADS)): (w, v, n, o) for w, v, n, o in cases}.values())
    real = outputs.RENDER_VIDEO_OPTIONS
    runs: dict[tuple, tuple[list, list]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # round robin: run k of every case, then run k + 1 of every case, so that all cases see the same load
        for run in range(repeat + 1):
            for what, variant, threads, video_options in cases:
                n = set_threads(threads)
                wall, cpu = runs.setdefault((what, variant, n), ([], []))
                outputs.RENDER_VIDEO_OPTIONS = video_options if video_options is not None else real
                out = Path(tmp) / "out"
                shutil.rmtree(out, ignore_errors=True)
                try:
                    t0, c0 = time.perf_counter(), time.process_time()
                    with contextlib.redirect_stdout(io.StringIO()):  # the commands' closing line
                        if what == "headrep render":
                            outputs.render_rep(rep_path, out, device="cpu")
                        else:
                            gdata.prepare_clip(video, rep_path, out, resolution=R)
                    if run:  # the first round is a warm-up (numba's cache, file cache)
                        wall.append((time.perf_counter() - t0) / T * 1000)
                        cpu.append((time.process_time() - c0) / T * 1000)
                finally:
                    outputs.RENDER_VIDEO_OPTIONS = real
            print(f"  round {run} of {repeat} done ({load()})", file=sys.stderr, flush=True)
    rows = [(what, variant, n, f"{statistics.median(wall):.1f}", f"{statistics.median(cpu):.1f}",
             ", ".join(f"{x:.0f}" for x in wall), ", ".join(f"{x:.0f}" for x in cpu))
            for (what, variant, n), (wall, cpu) in runs.items()]
    head = ("command", "variant", "threads", "wall ms/frame", "CPU ms/frame", "wall runs", "CPU runs")
    print(table(head, rows))
    print(f"\n({load()}; medians of {repeat} runs, the cases taking turns; the whole command: loading the rep and "
          "its model, decoding the source, rendering, drawing, encoding, writing; CPU ms/frame counts every thread "
          "of the process)\n")


def _clock(f):
    c = time.process_time()
    out = f()
    return out, time.process_time() - c


def bench_phases(rep_path: Path) -> None:
    """Each phase alone, in order, on one thread, with the library functions the commands call."""
    import numpy as np
    import torch

    import generator.data as gdata
    from headrep.io import write_npz, write_video
    from headrep.render import encode_depth, encode_normals, get_context
    from headrep.rep import HeadRep, outputs
    from headrep.rep.sources import source_crops

    set_threads(1)
    ctx = get_context("cpu")
    rows: dict[str, list[float]] = {}
    for run in range(2):  # the first run is a warm-up
        t: dict[str, float] = {}
        (rep, fit_masks, model68), t["load the rep and its model, masks, landmarks68"] = _clock(lambda: (
            lambda r: (r, r.masks(), r.landmarks68(None, space="camera")))(HeadRep.load(rep_path)))
        T = rep.num_frames
        crops, t["decode + crop the source"] = _clock(lambda: list(source_crops(rep, R, [])))
        batches = []
        t["body-model forward (dense vertices)"] = t["rasterise, interpolate, antialias (render_maps)"] = 0.0
        from headrep.render import render_maps

        for k in range(0, T, outputs.RENDER_BATCH):
            idx = list(range(k, min(T, k + outputs.RENDER_BATCH)))
            cams = [rep.crop_camera(i, R) for i in idx]
            v, s = _clock(lambda: rep.vertices(idx, space="camera"))
            t["body-model forward (dense vertices)"] += s
            attrs = {"albedo": rep.tensors["albedo"].to(v.dtype)} if rep.has_appearance else None
            with torch.no_grad():
                m, s = _clock(lambda: render_maps(ctx, v, rep.head.faces_t, cams, attributes=attrs))
            t["rasterise, interpolate, antialias (render_maps)"] += s
            batches.append((idx, m, cams))
        normals, t["normal map encoding"] = _clock(
            lambda: np.concatenate([encode_normals(m["normal"], m["mask"]).numpy() for _, m, _ in batches]))

        def overlays():
            out = []
            det = rep.landmarks.numpy() if rep.landmarks is not None else None
            for idx, m, cams in batches:
                for i, f in enumerate(idx):
                    uv, _ = cams[i].project(model68[f].double())
                    person = outputs._resized(fit_masks["person"][f], R) if fit_masks is not None else None
                    out.append(outputs.overlay_frame(crops[f], {"normal": m["normal"][i], "mask": m["mask"][i]},
                                                     det[f, :, :2] if det is not None else None, uv.numpy(), True,
                                                     f"{f} / frame {f}", person))
            return out

        over, t["overlay drawing (blend, dots, contours, text)"] = _clock(overlays)
        shaded = residual = None
        if rep.has_appearance:
            def shade_all():
                s, r = [], []
                for idx, m, _ in batches:
                    skins = [outputs._resized(fit_masks["skin"][f], R) if fit_masks is not None else None for f in idx]
                    a, b = outputs.shaded_batch(rep, idx, m, [crops[f] for f in idx], skins)
                    s.append(a)
                    r.append(b)
                return np.concatenate(s), np.concatenate(r)

            (shaded, residual), t["shaded + residual (SH shading, colour map)"] = _clock(shade_all)
        depth = np.concatenate([m["depth"].numpy() for _, m, _ in batches])
        mask = np.concatenate([m["mask"].numpy() for _, m, _ in batches])
        grey, t["depth map encoding (grey)"] = _clock(lambda: np.repeat(encode_depth(
            torch.from_numpy(depth), torch.from_numpy(mask), float(depth[depth > 0].min()),
            float(depth.max())).numpy()[..., None], 3, -1))
        videos = [("normal", normals), ("depth", grey), ("overlay", over)]
        videos += [("shaded", shaded), ("residual", residual)] if shaded is not None else []
        with tempfile.TemporaryDirectory() as tmp:
            for label, opts in ((f"x264 encoding, {len(videos)} videos, now ({outputs.RENDER_VIDEO_OPTIONS['preset']}"
                                 ", 1 thread each)", outputs.RENDER_VIDEO_OPTIONS),
                                (f"x264 encoding, {len(videos)} videos, before (medium, x264's threads)",
                                 {"crf": 18})):
                _, t[label] = _clock(lambda: [write_video(Path(tmp) / f"{n}.mp4", f, fps=30, **opts)
                                              for n, f in videos])
            _, t["depth.npz, zlib level 1 (now)"] = _clock(
                lambda: write_npz(Path(tmp) / "a.npz", compresslevel=1, depth=depth, mask=mask))
            _, t["depth.npz, zlib level 6 (before)"] = _clock(
                lambda: write_npz(Path(tmp) / "b.npz", depth=depth, mask=mask))
        # generator prepare's own phases (its rendering: the full and the offset-free head, face mask, landmarks)
        for what, label in ((("normal_depth", "face_mask"), "prepare: full head maps + face mask"),
                            (("smplx_normal_depth",), "prepare: offset-free head maps"),
                            (("landmarks",), "prepare: model landmarks")):
            t[label] = sum(_clock(lambda: gdata._render_chunk(rep, np.arange(k, min(T, k + gdata._CHUNK)), R, ctx,
                                                                 what))[1] for k in range(0, T, gdata._CHUNK))
        if run:
            for k, v in t.items():
                rows.setdefault(k, []).append(v / T * 1000)
    print(f"## Per phase, 1 thread, each phase alone ({T} frames at {R}², {load()})\n")
    print(table(("phase", "CPU ms/frame"), [(k, f"{v[0]:.1f}") for k, v in rows.items()]))
    print("\n(render = load + decode + body forward + render_maps + the drawing and encoding rows (now); in the "
          "command the encoders, depth.npz and the drawing run in threads beside the rendering; prepare = load + "
          "decode + its three rendering rows + writing the arrays)\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=48, help="frames of single_face.mp4 to fit the rep on (48)")
    ap.add_argument("--rep", type=Path, default=None, help="use this HeadRep folder instead of fitting one")
    ap.add_argument("--model", default="standin", help="model to fit the rep with: standin (default), open or a "
                    "file (the mesh size sets the rendering cost)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per whole-command row after a warm-up (3)")
    ap.add_argument("--parts", nargs="+", default=["commands", "phases"], choices=["commands", "phases"])
    args = ap.parse_args(argv)
    print(f"# Per-video throughput at {R}²: {os.cpu_count()} cores, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '-')}, {load()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        rep = args.rep if args.rep is not None else make_rep(Path(tmp), args.frames, args.model)
        if "commands" in args.parts:
            bench_commands(rep, args.repeat)
        if "phases" in args.parts:
            bench_phases(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
