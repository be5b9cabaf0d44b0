"""Benchmark of corpus work (`headrep dataset fit`, `headrep render`, `generator prepare`) on this machine.

Three tables (markdown), each with the load average before/after (the machine may be shared: timings swing
2-4x; medians of --repeat runs where a row says so):

1. Ray: start-up of a local Ray (ray_session), the first task (a worker process starts), a warm task's round
   trip, shutdown.
2. Fits as Ray tasks (headrep.dataset.run_tasks with the dataset's fit task, the first --frames of
   single_face.mp4, FitConfig defaults unless --coarse-steps/--detail-epochs): one fit on 2 threads, one on 1
   thread, two at once on 1 thread each (what `headrep dataset fit` does on 2 cores), and two at once on 2
   threads each (oversubscribed: what happens without per-task threads). Wall time from submission to the last
   result, videos per hour, frames per second overall, each task's seconds and peak resident memory.
   Then a CALCULATED (not measured) estimate for a 4,000-video corpus (about 10 hours of 30 fps video, ~270
   frames per video) on N machines like this one, from the best measured frames/s per machine.
3. Per-video work at 256²: `headrep render` (render_rep) of a 48-frame rep with frames rendered one by one (the
   old way) and RENDER_BATCH at a time, and `generator prepare` (prepare_clip) with 8 (old) and 16 frames per
   chunk; wall and CPU ms per frame, on 2 threads and on 1 thread (the command's whole time: model load,
   source decoding, video encoding included). benchmarks/throughput.py has the per-phase profile and the x264
   settings' share.

    python benchmarks/dataset.py                          # all three (~10 min on 2 busy cores)
    python benchmarks/dataset.py --parts ray fits --frames 24
    python benchmarks/dataset.py --parts render --repeat 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HEADREP_PROGRESS", "0")

from tables import load, table  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def _noop(x: int = 0) -> dict:
    return {"x": x}


def bench_ray() -> None:
    from headrep.dataset import ray_session, run_tasks

    print(f"## Ray start-up ({load()})\n")
    t0 = time.perf_counter()
    got = {}
    with ray_session(num_cpus=2) as info:
        t1 = time.perf_counter()
        run_tasks(_noop, [("a", {})], lambda k, r: got.setdefault(k, r), cpus=1)
        t2 = time.perf_counter()
        run_tasks(_noop, [("b", {})], lambda k, r: got.setdefault(k, r), cpus=1)
        t3 = time.perf_counter()
    t4 = time.perf_counter()
    print(table(("step", "seconds"), [("ray.init (local, 2 CPUs)", f"{info['start_seconds']:.2f}"),
                                      ("first task (a worker starts)", f"{t2 - t1:.2f}"),
                                      ("a warm task's round trip", f"{t3 - t2:.3f}"),
                                      ("ray.shutdown", f"{t4 - t3:.2f}"),
                                      ("total overhead of one command", f"{t4 - t0 - (t3 - t2):.2f}")]))
    print(f"\n({load()})\n")


def bench_fits(frames: int, coarse_steps: int | None, detail_epochs: int | None) -> None:
    from headrep.dataset import fit_task, ray_session, run_tasks
    from headrep.fitting import FitConfig
    from headrep.samples import sample_path

    video = str(sample_path("single_face.mp4"))
    cfg = FitConfig()
    if coarse_steps is not None:
        cfg.coarse_steps = coarse_steps
    if detail_epochs is not None:
        cfg.detail_epochs = detail_epochs
    print(f"## Fits as Ray tasks: single_face.mp4 frames 0:{frames}, coarse_steps {cfg.coarse_steps}, "
          f"detail_epochs {cfg.detail_epochs} ({load()})\n")
    cases = [("1 fit, 2 threads", 1, 2, 2), ("1 fit, 1 thread", 1, 1, 1),
             ("2 fits at once, 1 thread each", 2, 1, 1), ("2 fits at once, 2 threads each (oversubscribed)", 2, 1, 2)]
    rows, best = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for label, n, cpus, threads in cases:
            results = []
            jobs = [(f"{label}-{i}", {"source": video, "out": f"{tmp}/{len(rows)}-{i}", "config": cfg.to_dict(),
                                      "model": "standin", "device": "cpu", "frames": f"0:{frames}", "stride": 1,
                                      "estimator": None, "resume": False}) for i in range(n)]
            with ray_session(num_cpus=2, threads=threads):
                t0 = time.perf_counter()
                run_tasks(fit_task, jobs, lambda k, r: results.append(r), cpus=cpus, threads=threads, max_retries=0)
                wall = time.perf_counter() - t0
            bad = [r["error"] for r in results if not r["ok"]]
            if bad:
                raise SystemExit(f"{label}: {bad}")
            fps = n * frames / wall
            best = max(best, fps)
            rows.append((label, f"{wall:.1f}", f"{n / wall * 3600:.0f}", f"{fps:.2f}",
                         ", ".join(f"{r['seconds']:.1f}" for r in results),
                         ", ".join(f"{r['peak_rss_mb']:.0f}" for r in results), load()))
            print(f"  done: {label} in {wall:.1f} s", file=sys.stderr, flush=True)
    print(table(("case", "wall s", "videos/h", "frames/s", "task s", "peak MB per task", "after"), rows))
    per_video = 270  # 10 h of 30 fps video over 4,000 videos
    total_frames = 4000 * per_video
    print(f"\nCALCULATED, not measured: a 4,000-video corpus (~{per_video} frames each, {total_frames:,} frames) at "
          f"the best measured {best:.2f} frames/s per 2-core machine (these fit settings, this load) takes:\n")
    print(table(("machines (2 cores each)", "hours", "days"),
                [(n, f"{total_frames / (best * n) / 3600:.0f}", f"{total_frames / (best * n) / 86400:.1f}")
                 for n in (1, 4, 16, 64, 256)]))
    print("\n(scales linearly while the per-video tasks outnumber the task slots; Ray start-up and the one-time "
          "numba cache load per worker are per command / per worker, not per video)\n")


def bench_render(repeat: int) -> None:
    import shutil

    import torch

    import generator.data as gdata
    from headrep.fitting import FitConfig, fit_video
    from headrep.rep import outputs
    from headrep.samples import sample_path

    video = sample_path("single_face.mp4")
    print(f"## Per-video work at 256², 48 frames ({load()})\n")
    rows = []
    real_maps = outputs.map_batches
    with tempfile.TemporaryDirectory() as tmp:
        rep = Path(tmp) / "rep"
        fit_video(video, rep, FitConfig(coarse_steps=30, detail_epochs=1), model="standin", frames=slice(0, 48),
                  progress=False)
        for threads in (2, 1):
            torch.set_num_threads(threads)
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            for what, label, setup in (
                    ("render", "1 frame per call (before)", lambda: setattr(outputs, "map_batches",
                                                                           lambda r, R, c: real_maps(r, R, c, batch=1))),
                    ("render", f"{outputs.RENDER_BATCH} frames per call (after)",
                     lambda: setattr(outputs, "map_batches", real_maps)),
                    ("prepare", "8 frames per chunk (before)", lambda: setattr(gdata, "_CHUNK", 8)),
                    ("prepare", "16 frames per chunk (after)", lambda: setattr(gdata, "_CHUNK", 16))):
                setup()
                times, cpu = [], []
                for _ in range(repeat):
                    out = Path(tmp) / "out"
                    shutil.rmtree(out, ignore_errors=True)
                    t0, c0 = time.perf_counter(), time.process_time()
                    if what == "render":
                        outputs.render_rep(rep, out, device="cpu")
                    else:
                        gdata.prepare_clip(video, rep, out, resolution=256)
                    times.append((time.perf_counter() - t0) / 48 * 1000)
                    cpu.append((time.process_time() - c0) / 48 * 1000)
                rows.append((f"headrep {what}" if what == "render" else "generator prepare", label, threads,
                             f"{statistics.median(times):.1f}", f"{statistics.median(cpu):.1f}",
                             ", ".join(f"{t:.0f}" for t in times), load()))
                print(f"  done: {what} {label} {threads} threads", file=sys.stderr, flush=True)
        outputs.map_batches = real_maps
        gdata._CHUNK = 16
    print(table(("command", "variant", "threads", "ms/frame (median)", "CPU ms/frame", "runs (ms/frame)", "after"),
                rows))
    print("\n(CPU ms/frame: the process's CPU time; on 1 thread it is close to the wall time the same run would "
          "take on a quiet machine, which a shared machine cannot show directly)\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", nargs="+", default=["ray", "fits", "render"], choices=["ray", "fits", "render"])
    ap.add_argument("--frames", type=int, default=24, help="frames per fit (default 24)")
    ap.add_argument("--coarse-steps", type=int, default=None)
    ap.add_argument("--detail-epochs", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=3, help="runs per render/prepare row (default 3)")
    args = ap.parse_args(argv)
    print(f"# headrep dataset benchmark: {os.cpu_count()} cores, {load()}\n")
    if "ray" in args.parts:
        bench_ray()
    if "fits" in args.parts:
        bench_fits(args.frames, args.coarse_steps, args.detail_epochs)
    if "render" in args.parts:
        bench_render(args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
