"""Benchmark of the generator: seconds per training step, per sampling step, VAE encode / decode, peak memory.

Rows: the tiny config on the CPU (9 frames at 64², 17 frames at 96²) and, when a CUDA GPU is at hand, the tiny
config and the real Wan2.1-T2V-1.3B architecture (random weights, bf16) on the GPU. Each row runs in its own
process so that its peak memory is its own (CPU: peak resident set size of that process; GPU: peak allocated
by torch).

* train s/step: one optimizer step of `generator train`'s objective on one clip: VAE encode of the clip and the
  reference (no grad), pose + reference encoders, DiT forward with the reference frame, flow-matching loss,
  backward, AdamW step (all DiT and encoder weights trained; on the GPU bf16 autocast and, for 1.3B,
  gradient checkpointing).
* sample s/step: one denoising step of `generator animate` (one DiT call; "cfg" = guidance on, a doubled batch).
* encode / decode s: the VAE on the whole clip.

Each time is the median of --reps runs after --warmup runs (best in brackets).

    python benchmarks/video_generator.py            # tiny on CPU (about a minute on 2 cores); + GPU rows with CUDA
    python benchmarks/video_generator.py --quick    # fewer repetitions
    python benchmarks/video_generator.py --frames-1p3b 33 --res-1p3b 480   # the 1.3B row's clip (GPU only)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path



def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, reps: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def run_row(config: str, device_name: str, frames: int, res: int, reps: int, warmup: int) -> dict:
    """One benchmark row in this process; returns its numbers."""
    import torch

    from generator.config import named_config
    from generator.model import HeadGenerator
    from generator.pipeline import cast_transformer
    from generator.synthetic import synthetic_clip
    from generator.train import Denoiser, flow_loss

    device = torch.device(device_name)
    torch.manual_seed(0)
    with torch.device(device):  # build in place: the 1.3B model never sits in CPU memory
        model = HeadGenerator(named_config(config))
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    if config != "tiny" and gpu:
        model.transformer.enable_gradient_checkpointing()
    clip = synthetic_clip(frames, res)
    batch = {k: v[None].to(device) for k, v in clip.items()}
    params = [p for n, p in model.named_parameters() if not n.startswith("vae.")]
    model.vae.requires_grad_(False)
    opt = torch.optim.AdamW(params, lr=1e-5)
    den = Denoiser(model)
    g = torch.Generator().manual_seed(0)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            with torch.no_grad():
                x0 = model.encode_video(batch["video"])
                ref_latent = model.encode_video(batch["ref"][:, :, None])
            sigma = torch.rand(1, generator=g).to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            loss = flow_loss(den, batch, sigma, noise, torch.ones(1, device=device), 0.0, (x0, ref_latent))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    row = {"config": config, "device": device_name, "frames": frames, "resolution": res}
    row["train"] = _time(train_step, device, reps, warmup)
    opt.state.clear()  # free the optimizer's moments before the sampling timings
    model.eval()
    if gpu:
        cast_transformer(model.transformer, dtype)
        model.pose_encoder.to(dtype)
        model.ref_encoder.to(dtype)
    with torch.no_grad():
        z = model.encode_video(batch["video"])
        pose = model.encode_condition(batch["cond"])
        rl, rf = model.encode_reference(batch["ref"])
        t = torch.tensor([500.0], device=device)
        row["sample"] = _time(lambda: model(z, t, pose, rl, rf), device, reps, warmup)
        z2, p2, rl2, rf2 = (torch.cat([a, a]) for a in (z, pose, rl, rf))
        row["sample_cfg"] = _time(lambda: model(z2, t.expand(2), p2, rl2, rf2), device, reps, warmup)
        row["encode"] = _time(lambda: model.encode_video(batch["video"]), device, max(1, reps // 2), 1)
        row["decode"] = _time(lambda: model.decode_latents(z), device, max(1, reps // 2), 1)
    row["params"] = sum(p.numel() for p in model.parameters())
    row["tokens"] = int(z.shape[2] + 1) * (z.shape[3] // 2) * (z.shape[4] // 2)
    if gpu:
        row["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        row["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    return row


def _fmt(cell) -> str:
    med, best = cell
    return f"{med:.3f} ({best:.3f})" if med < 10 else f"{med:.1f} ({best:.1f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (3 after 1 warm-up)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per cell (median), default 5")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first, default 2")
    ap.add_argument("--frames-1p3b", type=int, default=33, help="frames of the 1.3B row's clip, default 33")
    ap.add_argument("--res-1p3b", type=int, default=480, help="size of the 1.3B row's clip, default 480")
    ap.add_argument("--no-gpu", action="store_true", help="CPU rows only")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.warmup = 3, 1

    if args.child is not None:  # one row, numbers to the parent as JSON on stdout
        import torch

        spec = json.loads(args.child)
        if spec["device_name"] == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        print("ROW " + json.dumps(run_row(**spec, reps=args.reps, warmup=args.warmup)))
        return 0

    import torch

    rows = [("tiny", "cpu", 9, 64), ("tiny", "cpu", 17, 96)]
    if torch.cuda.is_available() and not args.no_gpu:
        rows += [("tiny", "cuda", 17, 96), ("wan2.1-1.3b", "cuda", args.frames_1p3b, args.res_1p3b)]
    print("# generator benchmark - tiny config on CPU, tiny + Wan2.1-1.3B (random weights) on GPU\n")
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
          + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA GPU"))
    print(f"median of {args.reps} runs after {args.warmup} warm-up runs, seconds (best in brackets); "
          f"load average at start {os.getloadavg()[0]:.1f}\n")
    print("| config | device | clip | DiT tokens | params | train s/step | sample s/step | sample s/step (cfg) "
          "| VAE encode s | VAE decode s | peak memory |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    results = []
    t_start = time.perf_counter()
    for config, device, frames, res in rows:
        spec = json.dumps({"config": config, "device_name": device, "frames": frames, "res": res})
        cmd = [sys.executable, __file__, "--child", spec, "--reps", str(args.reps), "--warmup", str(args.warmup)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")), None)
        if proc.returncode != 0 or line is None:
            tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(f"| {config} | {device} | {frames}x{res}² | failed: {tail} |||||||")
            continue
        r = json.loads(line[4:])
        results.append(r)
        mem = "GPU " if device == "cuda" else "RSS "
        print(f"| {config} | {device} | {frames}x{res}² | {r['tokens']:,} | {r['params'] / 1e6:.1f} M "
              f"| {_fmt(r['train'])} | {_fmt(r['sample'])} | {_fmt(r['sample_cfg'])} | {_fmt(r['encode'])} "
              f"| {_fmt(r['decode'])} | {mem}{r['peak_mb']:,.0f} MB |", flush=True)
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False) as f:
            json.dump(results, f, indent=2)
        os.replace(f.name, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
