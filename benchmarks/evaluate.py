"""Benchmark of `generator evaluate`: the paper's table for the tiny generator, and what each metric costs.

1. Fits two real sample videos with `headrep fit` (single_face, WolfgangLanger_Pexels), each twice: a training
   range and a later, held-out evaluation range; prepares the four clips at 64² (`generator prepare`).
2. Trains one tiny generator per condition (normal_depth, smplx_normal_depth = the SMPL-X-only ablation,
   landmarks = the landmark-driven baseline) from scratch on the two training clips (`generator train`, as
   the demo does; the first model's VAE stage is shared by the other two). --quick: 60 VAE + 80 DiT steps.
3. Runs the protocol (`generator evaluate-set`, library call) on the two held-out clips: self-reenactment on
   frames after each clip's reference, cross-reenactment between the two people (`transfer drive`, mode
   "none": the SMPL-X expression alone, no transfer model), with the baselines "reference repeated" and
   "ground truth" in the same table.
4. Times each metric (ms per frame at 64², 256², 512²; the AED/APD fit per frame at two step counts).

Everything is cached in --work (default out/bench_evaluate): a second run only redoes step 3 and 4.
A tiny CPU model is expected to score poorly; the point is an honest table in which the conditions can be
compared. With a Wan2.1 base trained on a GPU (`generator train --base`), the same protocol gives numbers
comparable in kind with the papers' (except CSIM (SFace) and AED/APD (ours), which are defined here).

    python benchmarks/evaluate.py               # about 30 minutes on 2 CPU cores the first time
    python benchmarks/evaluate.py --quick       # shorter fits and training (about 12 minutes)
    python benchmarks/evaluate.py --cost-only   # only the metric cost table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = {  # name: (sample, training frames, evaluation frames)
    "single": ("single_face.mp4", "0:40", "40:72"),
    "wolfgang": ("WolfgangLanger_Pexels.mp4", "0:48", "200:240"),
}
CONDITIONS = ("normal_depth", "smplx_normal_depth", "landmarks")


def sh(*cmd: str) -> None:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def prepare(work: Path, quick: bool) -> tuple[list[Path], list[Path]]:
    """Reps, clips and the three trained generators (cached); returns (evaluation clips, checkpoints)."""
    from headrep.samples import sample_path

    fit_extra = ["--coarse-steps", "150", "--detail-epochs", "4"] if quick else []
    steps = "150" if quick else "300"
    eval_clips = []
    for name, (sample, train_range, eval_range) in VIDEOS.items():
        video = str(sample_path(sample))
        for part, rng in (("train", train_range), ("eval", eval_range)):
            rep = work / "reps" / f"{name}_{part}"
            if not (rep / "rep.json").is_file():
                sh("headrep", "fit", video, "-o", str(rep), "--frames", rng, "--overwrite", "--model", "standin",
                   *fit_extra)  # the stand-in, as in the published table
            clip = work / f"clips_{part}" / name
            if not (clip / "clip.json").is_file():
                sh("generator", "prepare", "--video", video, "--rep", str(rep), "-o", str(clip), "--resolution",
                   "64", "--overwrite")
            if part == "eval":
                eval_clips.append(clip)
    # one VAE for the three: the first model's VAE stage is shared (the conditions differ in the DiT only)
    vae_steps, steps = ("60", "80") if quick else ("300", "300")
    ckpts = []
    for cond in CONDITIONS:
        ck = work / "generators" / cond
        if not (ck / "model").is_dir():
            if not ckpts:
                sh("generator", "train", "--data", str(work / "clips_train"), "-o", str(ck), "--condition", cond,
                   "--steps", steps, "--vae-steps", vae_steps, "--overwrite")
            else:
                init = work / "generators" / f"{cond}.init"
                _init_sharing_vae(ckpts[0], cond, init)
                sh("generator", "train", "--data", str(work / "clips_train"), "-o", str(ck), "--init", str(init),
                   "--steps", steps, "--overwrite")
        ckpts.append(ck / "model")
    return eval_clips, ckpts


def _init_sharing_vae(trained: Path, condition: str, out: Path) -> None:
    """A fresh generator for ``condition`` (seed 0) carrying the trained model's VAE."""
    import torch

    from generator.model import HeadGenerator

    first = HeadGenerator.from_pretrained(trained)
    torch.manual_seed(0)
    HeadGenerator(first.config, condition=condition, vae=first.vae).save_pretrained(out)


def metric_costs(quick: bool) -> tuple[list[tuple[str, dict]], dict]:
    """ms per frame of each metric at three sizes on real frames (a sample video's centre crops)."""
    import cv2
    import numpy as np

    from generator import metrics as M
    from generator.evaluate import EvalConfig, video_motion
    from headrep.io import read_video
    from headrep.samples import sample_path

    frames = []
    for _, f in read_video(sample_path("single_face.mp4"), 0, 16):
        s = min(f.shape[:2])
        y0, x0 = (f.shape[0] - s) // 2, (f.shape[1] - s) // 2
        frames.append(f[y0:y0 + s, x0:x0 + s])
    lp, fi = M.load_lpips(), M.FaceIdentity()
    rows = []
    n = 8 if quick else 16
    for R in (64, 256, 512):
        a = np.stack([cv2.resize(f, (R, R), interpolation=cv2.INTER_AREA) for f in frames[:n]])
        b = np.roll(a, 1, axis=0)
        cost = {}
        for name, fn in (("PSNR", lambda: [M.psnr(x, y) for x, y in zip(a, b)]),
                         ("L1", lambda: [M.l1(x, y) for x, y in zip(a, b)]),
                         ("SSIM", lambda: M.ssim_batch(a, b)),
                         ("LPIPS", lambda: lp.distance(a, b)),
                         ("CSIM (SFace), per video frame", lambda: [fi.embed(x) for x in a])):
            fn()  # warm-up
            t0 = time.perf_counter()
            fn()
            cost[name] = 1000 * (time.perf_counter() - t0) / len(a)
        rows.append((f"{R}²", cost))
    a = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA) for f in frames[:9]])
    fit_cost = {}
    for steps in ((50,) if quick else (100, 300)):
        t0 = time.perf_counter()
        video_motion(a, 30.0, EvalConfig(fit_steps=steps, device="cpu"))
        fit_cost[f"AED/APD: headrep coarse fit of a 9-frame 64² video, {steps} steps"] = \
            1000 * (time.perf_counter() - t0) / len(a)
    return rows, fit_cost


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "bench_evaluate")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cost-only", action="store_true")
    ap.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = {}
    t0 = time.perf_counter()
    if not args.cost_only:
        from generator.protocol import ProtocolConfig, evaluate_set

        clips, ckpts = prepare(args.work, args.quick)
        cfg = ProtocolConfig(steps=args.steps, stride=1, fit_steps=50 if args.quick else 100, device="cpu")
        res = evaluate_set(clips, ckpts, args.work / "evaluation", config=cfg, overwrite=True)
        print(res["table"])
        print(f"\n(protocol: {res['seconds']:.0f} s; per-row folders under {args.work / 'evaluation'})\n")
        out["self"], out["cross"] = res["self"], res["cross"]
    rows, fit_cost = metric_costs(args.quick)
    names = sorted({k for _, c in rows for k in c}, key=lambda k: [k for _, c in rows for k in c].index(k))
    print("**Metric cost (ms per frame, 2-core CPU)**\n")
    print("| metric | " + " | ".join(r for r, _ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for k in names:
        print(f"| {k} | " + " | ".join(f"{c[k]:.1f}" if k in c else "" for _, c in rows) + " |")
    for k, v in fit_cost.items():
        print(f"\n{k}: {v:.0f} ms per frame (per video; twice for self-reenactment: generated + real)")
    out["cost_ms_per_frame"] = {**{r: c for r, c in rows}, "fit": fit_cost}
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
