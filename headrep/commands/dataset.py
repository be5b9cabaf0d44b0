"""`headrep dataset fit|status`: argparse and printing around :mod:`headrep.dataset` (the folder format, the
manifest and the Ray runner are specified there)."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from headrep.devices import DEVICE_CHOICES, DEVICE_HELP
from headrep.commands.fit import MODEL_HELP, add_config_options, config_from_args
from headrep.errors import HeadrepError

#: exit status when the run finished but some videos failed (2 stays "bad input to the command", 130 Ctrl-C)
EXIT_SOME_FAILED = 1

FIT_DESCRIPTION = """\
Fit every video of a corpus into the dataset folder DATASET, one Ray task per video (the same fit as
`headrep fit`, with the same options for every video). Without --address a local Ray is started for the
command (nothing to set up); with --address it runs on your Ray cluster.

VIDEOS are video files, folders (their videos, recursively), globs ('clips/**/*.mp4', quoted) or list files
(.txt: one path or glob per line, # comments, relative to the list's folder).

DATASET/dataset.jsonl, the manifest, gets one row per video: status pending | fitted | prepared | failed, the
error of a failed video, timings, peak memory, the rep's path (DATASET/reps/ID) and its metrics (NME, ...).
A video that cannot be fitted (no face, an unreadable file) is recorded as failed and the others go on; a
crashed or out-of-memory task is retried --max-retries times first. Ctrl-C stops the running fits (their
checkpoints stay); `headrep dataset fit -o DATASET --resume` continues where it stopped: videos already
fitted with the same file (sha256) and settings are skipped, failed ones are kept (--retry-failed tries them
again). With --resume the recorded fit options are reused unless you give others.

Exit status: 0 all fitted, 1 some failed (listed at the end), 2 bad input, 130 interrupted."""

FIT_EPILOG = """\
examples:
  headrep dataset fit ~/videos/*.mp4 -o data/corpus --frames 0:300
  headrep dataset fit videos.txt -o data/corpus --cpus-per-video 2 --coarse-steps 200
  headrep dataset fit -o data/corpus --resume                  # after Ctrl-C, a crash, or to retry
  ray start --head  (then on each worker: ray start --address HEAD_IP:6379)
  headrep dataset fit videos.txt -o /shared/corpus --address auto --gpus-per-video 1
then: headrep dataset status data/corpus | transfer train --dataset data/corpus -o t.safetensors |
      generator prepare --dataset data/corpus && generator train --data data/corpus/clips -o ckpt"""


def add_parser(sub: argparse._SubParsersAction) -> None:

    p = sub.add_parser("dataset", help="fit a corpus of videos on Ray (locally or on a cluster), resumable",
                       description="Work on a corpus of videos as one dataset folder (see `headrep dataset fit "
                                   "--help`).")
    dsub = p.add_subparsers(dest="dataset_command", metavar="{fit,status}")
    f = dsub.add_parser("fit", help="fit every video of a corpus into a dataset folder (Ray tasks)",
                        formatter_class=argparse.RawDescriptionHelpFormatter, description=FIT_DESCRIPTION,
                        epilog=FIT_EPILOG)
    f.add_argument("videos", nargs="*", metavar="VIDEOS", help="video files, folders, globs or .txt lists")
    f.add_argument("-o", "--out", type=Path, required=True, metavar="DATASET", help="the dataset folder")
    f.add_argument("--resume", action="store_true",
                   help="continue the dataset in DATASET (VIDEOS, if given, are added)")
    f.add_argument("--retry-failed", action="store_true", help="with --resume: fit failed videos again too")
    ray = f.add_argument_group("Ray")
    ray.add_argument("--address", default=None, metavar="auto|HOST:PORT",
                     help="a running Ray cluster (auto: the one `ray start` made on this machine); default: "
                          "start a local Ray for this command")
    ray.add_argument("--cpus", type=int, default=None, metavar="N",
                     help="CPUs the local Ray may use (default: all of this machine's; not with --address)")
    ray.add_argument("--cpus-per-video", type=float, default=1, metavar="N",
                     help="CPUs per fit task; the task's torch/numba/OpenMP threads are set to it (default 1)")
    ray.add_argument("--gpus-per-video", type=float, default=0, metavar="G",
                     help="GPUs per fit task (e.g. 1, or 0.5 to share one); >0 fits on CUDA (default 0)")
    ray.add_argument("--max-retries", type=int, default=1, metavar="K",
                     help="retries of a task whose worker crashed, ran out of memory or raised an unexpected "
                          "error (input errors are not retried; default 1)")
    fo = f.add_argument_group("fit options (as `headrep fit`; the same for every video)")
    fo.add_argument("--model", type=Path, default=None, metavar="open|standin|NPZ", help=MODEL_HELP)
    fo.add_argument("--device", default=None, choices=DEVICE_CHOICES, help=DEVICE_HELP + " (default auto)")
    fo.add_argument("--frames", default=None, metavar="A:B", help="source frame range of every video (default all)")
    fo.add_argument("--stride", type=int, default=None, help="keep every K-th frame (default 1)")
    fo.add_argument("--estimator", default=None, metavar="PATH", help="TorchScript/ONNX normal/depth network")
    add_config_options(fo)
    f.set_defaults(func=run_fit)
    s = dsub.add_parser("status", help="the manifest of a dataset as a table (status, errors, metrics)",
                        description="Print one line per video of DATASET's manifest and the counts per status.")
    s.add_argument("dataset", type=Path, metavar="DATASET")
    s.add_argument("--failed", action="store_true", help="only the failed videos, with their errors")
    s.set_defaults(func=run_status)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _config(args, recorded: dict | None):
    """FitConfig: --config FILE, else the recorded one (with --resume), else the defaults; then the options given."""
    from headrep.fitting import FitConfig

    base = FitConfig.from_dict(recorded["config"], "the dataset's recorded settings") if recorded else None
    return config_from_args(args, base)


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict], width: int = 60) -> str:
    """One line per row: id, status, frames fitted, valid, NME, s/frame, task seconds, peak MB, error."""
    head = ("id", "status", "frames", "valid", "NME", "s/frame", "task s", "peak MB", "error")
    lines = [head]
    for r in rows:
        m, f = r.get("metrics") or {}, r.get("fit") or {}
        err = (f"[{r['stage']}] " if r.get("stage") else "") + (r.get("error") or "")
        lines.append((r["id"], r["status"], _fmt(m.get("frames_fitted"), "d"), _fmt(m.get("valid_frames"), "d"),
                      _fmt(m.get("landmark_nme"), ".4f"), _fmt(m.get("s_per_frame"), ".2f"),
                      _fmt(f.get("seconds"), ".1f"), _fmt(f.get("peak_rss_mb"), ".0f"),
                      err if len(err) <= width else err[:width - 1] + "…"))
    widths = [max(len(x[i]) for x in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _counts(rows: list[dict]) -> str:
    from headrep.dataset import summary_rows

    return ", ".join(f"{n} {s}" for s, n in summary_rows(rows).items() if n)


def _failures(rows: list[dict]) -> str:
    return "\n".join(f"  {r['id']} ({r['source']}): [{r['stage']}] {r['error']}" for r in rows
                     if r["status"] == "failed")


def dataset_model(given, recorded: dict | None):
    """The model of a dataset run: --model, else what the resumed dataset recorded, else None (the default
    model). A recorded null comes from a dataset begun when the stand-in was the default: it goes on with the
    stand-in, so that a resume does not refit everything with another model."""
    if given is not None:
        return given
    if recorded and "model" in recorded:
        return recorded["model"] if recorded["model"] is not None else "standin"
    return None


def run_fit(args) -> int:
    from headrep.dataset import Manifest, fit_dataset

    recorded = Manifest(args.out).info().get("fit") if args.resume else None
    if not args.resume and args.retry_failed:
        raise HeadrepError("--retry-failed goes with --resume")
    if not args.videos and not args.resume:
        raise HeadrepError("no VIDEOS given (pass video files, folders, globs or a .txt list)")
    if args.address and args.cpus is not None:
        raise HeadrepError("--cpus sizes the local Ray; a cluster given with --address has its own CPUs")
    rec = recorded or {}
    pick = lambda given, key, default: given if given is not None else rec.get(key, default)  # noqa: E731
    cfg = _config(args, recorded)
    model = dataset_model(args.model, recorded)
    frames = pick(args.frames, "frames", None)
    stride = pick(args.stride, "stride", 1)
    estimator = pick(args.estimator, "estimator", None)
    device = args.device or "auto"

    def stop(signum, frame):  # `kill` (SIGTERM) stops as cleanly as Ctrl-C
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, stop)
    try:
        result = fit_dataset(args.videos, args.out, cfg, model=model, device=device, frames=frames,
                             stride=stride, estimator=estimator, address=args.address, num_cpus=args.cpus,
                             cpus_per_video=args.cpus_per_video, gpus_per_video=args.gpus_per_video,
                             max_retries=args.max_retries, resume=args.resume, retry_failed=args.retry_failed)
    except KeyboardInterrupt:
        print(f"headrep dataset fit: interrupted; the running fits were stopped (their rows stay pending). "
              f"Continue with: headrep dataset fit -o {args.out} --resume", file=sys.stderr)
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
    rows = result["rows"]
    ran = set(result["ran"])
    shown = [r for r in rows if r["id"] in ran] or rows
    print(table(shown))
    dt = result["seconds"]
    fps = f", {result['frames'] / dt:.2f} frames/s overall" if result["frames"] and dt > 0 else ""
    print(f"\nthis run: {len(ran)} video(s) in {dt:.1f} s{fps}; {len(result['skipped'])} skipped (already done). "
          f"Dataset {args.out}: {_counts(rows)}.")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        print(f"\n{len(failed)} video(s) failed:\n{_failures(rows)}", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def run_status(args) -> int:
    from headrep.dataset import Manifest

    m = Manifest(args.dataset)
    if not m.exists():
        raise HeadrepError(f"{args.dataset} is not a dataset folder (dataset.jsonl is missing)")
    rows = m.read()
    shown = [r for r in rows if r["status"] == "failed"] if args.failed else rows
    print(table(shown, width=200 if args.failed else 60))
    print(f"\n{len(rows)} video(s): {_counts(rows)}")
    return 0
