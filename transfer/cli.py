"""`transfer train` and `transfer drive`: the identity-adaptive expression-transfer commands (ExpPortrait §3.2).

train: fitted HeadReps -> a transfer model file (E and G, safetensors, with what it was trained on).
drive: B's identity performing A's motion -> a new HeadRep that `headrep render` turns into normal/depth videos.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path

from headrep.devices import DEVICE_CHOICES, DEVICE_HELP
from headrep.errors import HeadrepError, run_cli

from .errors import TransferError

EPILOG_TRAIN = """\
examples:
  transfer train --reps out/wolfgang out/single -o models/transfer.safetensors
  transfer train --reps out/wolfgang -o m.safetensors --resume   # continue an interrupted run (same settings)
  transfer train --dataset data/corpus -o m.safetensors          # every fitted rep of `headrep dataset fit`

Every valid frame of every rep is a sample: the identity's neutral dense geometry (U·M(β) + D_static), the
driving signals (ψ_t, jaw_t) and the fitted D_dyn,t as the target. --val-fraction of each rep's frames are held
out and reported as the mean per-vertex offset error (mm). After every epoch a checkpoint MODEL.ckpt is written
next to MODEL; --resume continues from it (same reps and settings), and it is removed when training finishes.
All reps must come from the same model file and subdivision level.
"""

EPILOG_DRIVE = """\
examples:
  transfer drive --src out/wolfgang --tgt out/single -o out/single_as_wolfgang --model models/transfer.safetensors
  transfer drive --src out/wolfgang --tgt out/single -o out/direct --mode direct
  headrep render out/single_as_wolfgang        # B's normal/depth videos, ready for `generator animate`

The driven rep has B's identity (β, D_static, camera) and A's motion: ψ_t, jaw and eyes as they are, head pose
(global orientation, neck, head) relative to each one's reference frame (--src-ref / --tgt-ref, default the first
valid frame), and the head's displacement scaled to B's distance. D_dyn,t comes from the transfer model for B's
geometry (mlp), is copied from A by vertex index (direct), or is left out (none: SMPL-X expression only).
"""


def _device(name: str) -> str:
    from headrep.devices import resolve_device

    return str(resolve_device(name, TransferError))


def _train_default(name: str):
    from dataclasses import fields

    from .train import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}[name]


#: `transfer train` option dest -> TrainConfig field
TRAIN_OPTIONS = ("epochs", "batch", "lr", "val_fraction", "vertices_per_step", "hidden", "code", "seed")


def train_config_from_args(args):
    """TrainConfig defaults, then --config FILE, then the options given on the command line."""
    from .train import TrainConfig, with_overrides

    given = {k: getattr(args, k) for k in TRAIN_OPTIONS if getattr(args, k) is not None}
    if args.config is not None:
        return TrainConfig.from_file(args.config, **given)
    return with_overrides(TrainConfig(), given)


def _train_reps(args) -> list[str]:
    """--reps as given, or the fitted reps of --dataset (headrep.dataset.fitted_reps)."""
    if args.reps:
        return list(args.reps)
    from headrep.dataset import fitted_reps

    try:
        return [str(p) for p in fitted_reps(args.dataset)]
    except TransferError:
        raise
    except HeadrepError as exc:
        raise TransferError(str(exc)) from None


def _checkpoint_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def cmd_train(args) -> int:
    from headrep.rep import versions

    from .dataset import load_training_reps
    from .train import train

    out = Path(args.out)
    ckpt = _checkpoint_path(out)
    if out.is_dir():
        raise TransferError(f"-o {out} is a folder; give a file name such as {out / 'transfer.safetensors'}")
    if out.exists() and not args.overwrite and not args.resume:
        raise TransferError(f"{out} exists; pass --overwrite to replace it")
    if args.resume and not ckpt.is_file():
        raise TransferError(f"nothing to resume: {ckpt} does not exist")
    cfg = train_config_from_args(args)
    if cfg.epochs < 1:
        raise TransferError(f"--epochs must be at least 1, got {cfg.epochs}")
    if not 0 <= cfg.val_fraction < 1:
        raise TransferError(f"--val-fraction must be in [0, 1), got {cfg.val_fraction}")
    device = _device(args.device)
    datasets, records, key = load_training_reps(_train_reps(args), body_model=args.body_model)
    n_frames = sum(r["valid_frames"] for r in records)
    print(f"transfer train: {len(records)} rep(s), {n_frames} valid frames, {key['num_face_vertices']} face "
          f"vertices, device {device}" + (f", resuming from {ckpt}" if args.resume else ""), file=sys.stderr)
    if any(r["standin"] for r in records):
        print("transfer train: the reps were fitted with the procedural STAND-IN model (not SMPL-X)",
              file=sys.stderr)
    model, hist = train(datasets, cfg, device=device, checkpoint=ckpt, resume=args.resume, threads=args.threads)
    training = {"reps": records, "identity": key, "settings": hist["config"], "split": hist["split"],
                "final": {"train_mse_mm2": hist["train_mse_mm2"][-1],
                          "val_mean_mm": hist["val_mean_mm"][-1] if hist["val_mean_mm"] else None},
                "seconds": round(hist["seconds"], 2), "device": device,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "versions": versions()}
    model.cpu().save(out, training=training)
    ckpt.unlink(missing_ok=True)
    val = training["final"]["val_mean_mm"]
    print(f"transfer train: wrote {out} ({hist['seconds']:.1f} s; train mse {hist['train_mse_mm2'][-1]:.4f} mm²"
          + (f", held-out frames {val:.4f} mm per vertex" if val is not None else "") + ")", file=sys.stderr)
    return 0


def cmd_drive(args) -> int:
    from headrep.io import check_output_dir
    from headrep.rep import HeadRep

    from .drive import drive
    from .model import TransferModel

    out = check_output_dir(Path(args.out), args.overwrite)
    model = None
    if args.mode == "mlp":
        if args.model is None:
            raise TransferError("--mode mlp needs --model MODEL (train one with `transfer train`); "
                                "or pass --mode direct / --mode none")
        model = TransferModel.load(args.model)
    elif args.model is not None:
        print(f"transfer drive: --mode {args.mode} does not use --model; ignoring it", file=sys.stderr)
    try:
        src = HeadRep.load(args.src, model=args.body_model)
        tgt = HeadRep.load(args.tgt, model=args.body_model)
    except HeadrepError as exc:
        raise TransferError(str(exc)) from None
    if tgt.is_standin:
        print("transfer drive: the reps were fitted with the procedural STAND-IN model (not SMPL-X)", file=sys.stderr)
    rep = drive(src, tgt, mode=args.mode, model=model, src_ref=args.src_ref, tgt_ref=args.tgt_ref,
                model_path=str(Path(args.model).resolve()) if model is not None else None)
    rep.save(out, overwrite=args.overwrite)
    d = rep.meta["fit"]["drive"]
    print(f"transfer drive: wrote {out}: {rep.num_frames} frames of {args.tgt} performing {args.src} (mode "
          f"{args.mode}; reference frames src {d['src_ref']}, tgt {d['tgt_ref']}; motion scale "
          f"{d['motion_scale']:.3f}). Next: headrep render {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transfer", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="{train,drive}")
    t = sub.add_parser("train", help="train the expression encoder E and vertex MLP G on fitted reps",
                       description="Train the identity-adaptive expression-transfer model on HeadReps.",
                       epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    reps = t.add_mutually_exclusive_group(required=True)
    reps.add_argument("--reps", nargs="+", metavar="REP", help="HeadRep folders from `headrep fit`")
    reps.add_argument("--dataset", metavar="DATASET",
                      help="every fitted rep of a dataset folder from `headrep dataset fit` (manifest order)")
    t.add_argument("-o", "--out", required=True, metavar="MODEL", help="the model file to write (.safetensors)")
    d = _train_default
    t.add_argument("--config", default=None, metavar="FILE.json",
                   help="TrainConfig fields as a JSON object (any subset; see transfer/train.py); options win")
    t.add_argument("--epochs", type=int, default=None,
                   help=f"passes over the training frames (default {d('epochs')}: on real fits longer training "
                        "overfits the held-out frames, see benchmarks/expression_transfer.py)")
    t.add_argument("--batch", type=int, default=None, help=f"frames per step (default {d('batch')})")
    t.add_argument("--lr", type=float, default=None,
                   help=f"Adam learning rate, cosine-decayed to 1/20 (default {d('lr')})")
    t.add_argument("--val-fraction", type=float, default=None,
                   help=f"fraction of each rep's valid frames held out for validation (default {d('val_fraction')})")
    t.add_argument("--vertices-per-step", type=int, default=None,
                   help=f"random face vertices per step (default {d('vertices_per_step')}; 0 = all, slower on a CPU)")
    t.add_argument("--hidden", type=int, default=None, help=f"width of G's hidden layers (default {d('hidden')})")
    t.add_argument("--code", type=int, default=None, help=f"size of the expression code z (default {d('code')})")
    t.add_argument("--seed", type=int, default=None, help=f"random seed (default {d('seed')})")
    t.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=DEVICE_HELP)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--resume", action="store_true", help="continue from MODEL.ckpt")
    t.add_argument("--overwrite", action="store_true", help="replace an existing MODEL")
    t.add_argument("--body-model", default=None, metavar="NPZ",
                   help="the SMPL-X-format .npz the reps were fitted with (default: the path they record)")
    t.set_defaults(func=cmd_train)
    d = sub.add_parser("drive", help="make B perform A's expressions and head motion (a new HeadRep)",
                       description="Cross-reenactment: a new HeadRep with the target's identity and the source's "
                                   "motion.", epilog=EPILOG_DRIVE, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--src", required=True, metavar="A", help="HeadRep giving the motion")
    d.add_argument("--tgt", required=True, metavar="B", help="HeadRep giving the identity and camera")
    d.add_argument("-o", "--out", required=True, metavar="OUT", help="the driven HeadRep folder to write")
    d.add_argument("--model", default=None, metavar="MODEL", help="transfer model from `transfer train` (mode mlp)")
    d.add_argument("--mode", default="mlp", choices=("mlp", "direct", "none"),
                   help="D_dyn from G for B (mlp, default), copied from A (direct), or none")
    d.add_argument("--src-ref", type=int, default=None, metavar="T", help="A's reference frame (default: first valid)")
    d.add_argument("--tgt-ref", type=int, default=None, metavar="T", help="B's reference frame (default: first valid)")
    d.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    d.add_argument("--body-model", default=None, metavar="NPZ",
                   help="the SMPL-X-format .npz the reps were fitted with (default: the path they record)")
    d.set_defaults(func=cmd_drive)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, "transfer", {"train": " (continue with --resume)"})


if __name__ == "__main__":
    sys.exit(main())
