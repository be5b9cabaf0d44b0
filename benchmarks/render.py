"""Benchmark of the differentiable rasterizer: normal + depth maps, forward and forward+backward.

The workload is render_maps without antialiasing: clip transform, rasterize, area-weighted vertex normals
(index_add), interpolate of normals and camera depth, renormalisation, and an L1 loss backward to the
vertices. The mesh is a subdivided icosphere (20,480 / 81,920 / 327,680 triangles) filling about half of the
image. Backends: the numba CPU backend, the pure-torch oracle, and nvdiffrast when a CUDA GPU is at hand.

Each cell is the median of --reps runs after --warmup runs (numba JIT and caches stay out of the timings),
with the best run in brackets (the machine may be shared: the best run shows the uncontended cost); the
torch oracle at 327,680 triangles uses --oracle-big-reps runs.

    python benchmarks/render.py            # full table (about a minute on 2 cores)
    python benchmarks/render.py --quick    # 256^2 and 512^2 at 20k / 80k triangles, CPU + oracle at 256^2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from headrep.model.meshops import icosphere
from headrep.render import PinholeCamera, get_context, render_maps
from headrep.render.cpu import numba


def _mesh(subdiv: int):
    v, f = icosphere(subdiv)
    return (v * 0.5 + torch.tensor([0.0, 0.0, 1.8]))[None].contiguous(), f.int()


def _sync(ctx):
    if getattr(ctx, "backend", "") == "cuda":
        torch.cuda.synchronize()


def _time(fn, ctx, reps: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    _sync(ctx)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(ctx)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def bench(ctx, verts, faces, res: int, reps: int, warmup: int, antialias: bool = False):
    cam = PinholeCamera.from_fov(40.0, res, res)
    dev = getattr(ctx, "device", torch.device("cpu"))
    verts = verts.to(dev)
    faces = faces.to(dev)
    x = verts.clone().requires_grad_()

    def fwd():
        with torch.no_grad():
            m = render_maps(ctx, verts, faces, cam, antialias=antialias)
            return m["normal"].abs().sum() + m["depth"].abs().sum() + m["mask"].sum()

    def fwd_bwd():
        x.grad = None
        m = render_maps(ctx, x, faces, cam, antialias=antialias)
        loss = m["normal"].abs().mean() + m["depth"].abs().mean()
        if antialias:
            loss = loss + m["mask"].mean()
        loss.backward()

    cover = float((render_maps(ctx, verts, faces, cam, antialias=False)["depth"] > 0).float().mean())
    return _time(fwd, ctx, reps, warmup), _time(fwd_bwd, ctx, reps, warmup), cover


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small subset (about 30 s)")
    ap.add_argument("--reps", type=int, default=20, help="timed runs per cell (median), default 20")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first, default 2")
    ap.add_argument("--oracle-big-reps", type=int, default=10,
                    help="timed runs of the torch oracle at 327,680 triangles (the slowest cells), default 10")
    ap.add_argument("--no-oracle", action="store_true", help="skip the pure-torch oracle")
    args = ap.parse_args(argv)

    backends = [("numba CPU", get_context("cpu"))]
    if not args.no_oracle:
        backends.append(("torch oracle", get_context("torch")))
    if torch.cuda.is_available():
        try:
            backends.append(("nvdiffrast CUDA", get_context("cuda")))
        except Exception as exc:  # no nvdiffrast build: say so, keep going
            print(f"(nvdiffrast unavailable: {exc})")
    resolutions = [256, 512]
    subdivs = [5, 6] if args.quick else [5, 6, 7]

    print("# headrep.render benchmark - normal + depth maps (rasterize + vertex normals + interpolate + L1)\n")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numba {numba.__version__} ({numba.get_num_threads()} threads)"
          + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA GPU"))
    print(f"median of {args.reps} runs after {args.warmup} warm-up runs "
          f"(torch oracle at 327,680 triangles: {args.oracle_big_reps} runs)\n")
    print("| backend | resolution | triangles | coverage | forward ms | forward+backward ms | (best fwd / fwd+bwd) |")
    print("|---|---|---|---|---|---|---|")
    t_start = time.perf_counter()
    for subdiv in subdivs:
        verts, faces = _mesh(subdiv)
        for res in resolutions:
            for name, ctx in backends:
                reps = args.reps
                if name == "torch oracle":
                    if args.quick and res > 256:
                        continue
                    if subdiv >= 7:
                        reps = args.oracle_big_reps
                fwd, fb, cover = bench(ctx, verts, faces, res, reps, args.warmup if reps >= 5 else 1)
                print(f"| {name} | {res}x{res} | {faces.shape[0]:,} | {cover:.0%} | {fwd[0]:.1f} | {fb[0]:.1f} "
                      f"| ({fwd[1]:.1f} / {fb[1]:.1f}) |", flush=True)
    print("\nWith the antialiased mask as well (render_maps(..., antialias=True), + mask in the loss):\n")
    print("| backend | resolution | triangles | forward ms | forward+backward ms | (best fwd / fwd+bwd) |")
    print("|---|---|---|---|---|---|")
    for subdiv in subdivs:
        verts, faces = _mesh(subdiv)
        for name, ctx in backends:
            if name == "torch oracle":
                continue
            fwd, fb, _ = bench(ctx, verts, faces, 512, args.reps, args.warmup, antialias=True)
            print(f"| {name} | 512x512 | {faces.shape[0]:,} | {fwd[0]:.1f} | {fb[0]:.1f} "
                  f"| ({fwd[1]:.1f} / {fb[1]:.1f}) |", flush=True)
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
