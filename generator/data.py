"""Data layer of the generator: prepared clip folders, the training dataset, condition and reference loading.

Conditions (``CONDITIONS``; every one is a float32 video [C,F,H,W] in [-1, 1], aligned with the video's crops):

* ``normal_depth`` (C = 4): the rep's full dense head (SMPL-X-format model + static and dynamic offsets) rendered
  in each frame's crop camera. Channels 0-2: camera-space normals, stored as ``headrep.render.encode_normals``
  does ((n + 1) / 2 · 255, weighted by the antialiased coverage, black background) and mapped back to [-1, 1],
  so on the head they *are* the unit normals (up to 8-bit quantisation) and the background is (-1, -1, -1).
  Channel 3: depth, normalised over the frames returned (one training window, or the sequence
  :func:`load_condition` returns) by :func:`normalize_depth`: with ``near`` / ``far`` the 0.5th / 99.5th
  percentiles of the covered depths (metres) of those frames, ``1 - 1.75 · clamp((z - near) / (far - near), 0, 1)``
  so the nearest surface is +1, the farthest -0.75, and empty pixels exactly -1 (the gap keeps the
  background apart from the farthest surface; the same grey levels as ``headrep render``'s depth.mp4).
* ``smplx_normal_depth`` (C = 4): the same, rendered from the rep *without* its static and dynamic offsets
  (the SMPL-X-only ablation).
* ``landmarks`` (C = 3): the rep's iBUG-68 landmarks (the model's, :meth:`HeadRep.landmarks68`) projected into
  the crop and drawn on black as polylines plus dots, one colour per facial part (``LANDMARK_PARTS``), as the
  landmark-driven baselines (e.g. Follow-Your-Emoji) do; RGB mapped to [-1, 1].

A clip folder (``prepare_clip``, ``generator prepare``; format ``generator.clip`` version 1) holds, for the T
frames of one HeadRep at resolution R (uncompressed .npy, so that training windows are read by memory map)::

    clip.json             provenance and layout (see prepare_clip)
    frames.npy            uint8 [T,R,R,3]  RGB crops of the source video with the rep's crop boxes
    reference.png         the reference frame (RGB, R×R; a copy of one frame of frames.npy)
    normal.npy            uint8 [T,R,R,3]  full-head normals, (n + 1) / 2 · 255 · coverage
    depth.npy             float32 [T,R,R] full-head depth in metres, 0 where empty
    smplx_normal.npy      uint8 [T,R,R,3]  the same without offsets
    smplx_depth.npy       float32 [T,R,R]
    landmarks68.npy       float32 [T,68,2] the model's iBUG-68 points in crop pixels (u, v) at R (pixel
                          centres at integers; NaN behind the camera); the landmark image is drawn from them
    face_mask.npy         uint8 [T,R,R]    1 where the rep's face vertices (the region of the dynamic offsets)
                          are visible

Invalid frames (no face detected by the fit) are kept in order and flagged in clip.json; :class:`ClipDataset`
avoids windows that contain them when the clip allows.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from headrep.errors import HeadrepError
from headrep.rep import source_crops

from .config import CONDITION_CHANNELS, condition_channels
from .errors import GeneratorInputError

__all__ = ["CONDITIONS", "FORMAT", "VERSION", "LANDMARK_PARTS", "ClipDataset", "condition_channels",
           "check_num_frames", "normalize_depth", "draw_landmarks", "find_clips", "read_clip", "load_condition",
           "load_reference", "prepare_clip"]

FORMAT = "generator.clip"
VERSION = 1
CLIP_JSON = "clip.json"
CONDITIONS = tuple(CONDITION_CHANNELS)  # the table lives in generator.config (the model needs it too)

DEPTH_NEAR = 1.0        # value of the nearest covered depth
DEPTH_FAR = -0.75       # value of the farthest covered depth
DEPTH_EMPTY = -1.0      # value where no surface is
DEPTH_PERCENTILES = (0.5, 99.5)
_MIN_DEPTH_RANGE = 1e-4  # metres

#: iBUG-68 parts: (name, point indices, closed polyline, RGB colour)
LANDMARK_PARTS: tuple[tuple[str, tuple[int, ...], bool, tuple[int, int, int]], ...] = (
    ("jaw", tuple(range(0, 17)), False, (255, 255, 255)),
    ("right_brow", tuple(range(17, 22)), False, (255, 128, 0)),
    ("left_brow", tuple(range(22, 27)), False, (255, 255, 0)),
    ("nose_bridge", tuple(range(27, 31)), False, (0, 128, 255)),
    ("nose_lower", tuple(range(31, 36)), False, (0, 255, 255)),
    ("right_eye", tuple(range(36, 42)), True, (0, 255, 0)),
    ("left_eye", tuple(range(42, 48)), True, (128, 255, 128)),
    ("outer_lip", tuple(range(48, 60)), True, (255, 0, 0)),
    ("inner_lip", tuple(range(60, 68)), True, (255, 0, 255)),
)

# clip files
_FILES = {
    "frames": "frames.npy", "normal": "normal.npy", "depth": "depth.npy", "smplx_normal": "smplx_normal.npy",
    "smplx_depth": "smplx_depth.npy", "landmarks68": "landmarks68.npy", "face_mask": "face_mask.npy",
}
REFERENCE_FILE = "reference.png"
_CHUNK = 16  # frames rendered per batch: each body-model forward and render call has a fixed cost (profiled: 8 -> 16 saves ~20%)


def _note(msg: str) -> None:
    print(f"generator: note: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# small public helpers


def _check_mode(mode: str) -> str:
    condition_channels(mode)  # GeneratorInputError for an unknown mode
    return mode


def check_num_frames(num_frames: int, what: str = "num_frames") -> int:
    """``num_frames`` as an int; GeneratorInputError unless it is 4k+1 (1, 5, 9, 17, ...), as the video VAE's
    temporal compression needs."""
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)):
        raise GeneratorInputError(f"{what} must be an integer of the form 4k+1 (9, 17, 33, ...), got {num_frames!r}")
    n = int(num_frames)
    if n < 1 or n % 4 != 1:
        lo = max(1, n - (n - 1) % 4) if n >= 1 else 1
        raise GeneratorInputError(f"{what} must be of the form 4k+1 (9, 17, 33, ...), got {n} "
                                  f"(nearest below: {lo}; above: {lo + 4})")
    return n


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or not 8 <= int(resolution) <= 4096:
        raise GeneratorInputError(f"resolution must be an integer between 8 and 4096 pixels, got {resolution!r}")
    return int(resolution)


def normalize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth in metres [..., H, W] (0 where empty) -> float32 in [-1, 1], normalised over the whole array.

    near / far = the 0.5th / 99.5th percentiles of the covered (> 0) depths (so a few stray pixels do not set
    the range; at least 0.1 mm apart); covered pixels get ``1 - 1.75 · clamp((z - near) / (far - near), 0, 1)``
    (near +1, far -0.75: nearer is larger, monotonically), empty pixels exactly -1.
    """
    d = np.asarray(depth, dtype=np.float32)
    cover = d > 0
    out = np.full(d.shape, DEPTH_EMPTY, np.float32)
    if not cover.any():
        return out
    near, far = (float(v) for v in np.percentile(d[cover], DEPTH_PERCENTILES))
    far = max(far, near + _MIN_DEPTH_RANGE)
    t = np.clip((d[cover] - near) / (far - near), 0.0, 1.0)
    out[cover] = DEPTH_NEAR + (DEPTH_FAR - DEPTH_NEAR) * t
    return out


def draw_landmarks(points: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 RGB [R,R,3]: iBUG points [68,2] (or [51,2] without the jaw contour; pixel-index coordinates at
    ``resolution``) drawn as per-part polylines and dots (``LANDMARK_PARTS`` colours) on black. Non-finite
    points are skipped (with the segments touching them)."""
    import cv2

    R = int(resolution)
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    if pts.shape[0] == 51:
        pts = np.concatenate([np.full((17, 2), np.nan), pts], 0)
    if pts.shape[0] != 68:
        raise ValueError(f"draw_landmarks expects 68 (or 51) points, got {pts.shape[0]}")
    img = np.zeros((R, R, 3), np.uint8)
    thick = max(1, int(round(R / 128)))
    radius = max(1, int(round(R / 128)))
    ok = np.isfinite(pts).all(1) & (np.abs(pts) < 8 * R).all(1)  # far-off points would overflow cv2's ints
    fixed = np.round(np.where(ok[:, None], pts, 0) * 16).astype(np.int64)
    for _, idx, closed, colour in LANDMARK_PARTS:
        seq = list(idx) + ([idx[0]] if closed else [])
        for a, b in zip(seq[:-1], seq[1:]):
            if ok[a] and ok[b]:
                cv2.line(img, tuple(int(v) for v in fixed[a]), tuple(int(v) for v in fixed[b]), colour, thick,
                         cv2.LINE_AA, shift=4)
    for _, idx, _, colour in LANDMARK_PARTS:
        for i in idx:
            if ok[i]:
                cv2.circle(img, tuple(int(v) for v in fixed[i]), radius * 16, colour, -1, cv2.LINE_AA, shift=4)
    return img


def _to_unit(x: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [-1, 1]."""
    return np.asarray(x, np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)


def _resize_stack(x: np.ndarray, R: int, binary: bool = False) -> np.ndarray:
    """Resize [F,H,W] or [F,H,W,C] float32 frames to R×R (INTER_AREA down, INTER_LINEAR up); ``binary``:
    threshold at 0.5 afterwards."""
    import cv2

    if x.shape[1] == R and x.shape[2] == R:
        return x
    interp = cv2.INTER_AREA if x.shape[1] > R else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(np.ascontiguousarray(f), (R, R), interpolation=interp) for f in x], 0)
    if x.ndim == 4 and out.ndim == 3:  # cv2 drops a single channel
        out = out[..., None]
    if binary:
        out = (out >= 0.5).astype(np.float32)
    return out.astype(np.float32, copy=False)


def _cond_from_maps(normal_u8: np.ndarray, depth: np.ndarray, R: int) -> np.ndarray:
    """[F,h,w,3] uint8 normals + [F,h,w] depth (m) -> [F,R,R,4] float32 in [-1, 1]."""
    c = np.concatenate([_to_unit(normal_u8), normalize_depth(depth)[..., None]], -1)
    return _resize_stack(c, R)


def _cond_landmarks(points: np.ndarray, scale: float, R: int) -> np.ndarray:
    """[F,68,2] crop pixels (× scale to reach R) -> [F,R,R,3] float32 in [-1, 1]."""
    return np.stack([_to_unit(draw_landmarks(p * scale, R)) for p in np.asarray(points, np.float64)], 0)


def _channels_first(x: np.ndarray) -> torch.Tensor:
    """[F,H,W,C] -> torch float32 [C,F,H,W]."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float32), -1, 0)))


# ----------------------------------------------------------------------------------------------------------
# rendering a rep's conditions


def _load_rep(rep, model=None):
    """A HeadRep from a path (loaded with its model; errors as GeneratorInputError) or a HeadRep as is."""
    from headrep.rep import HeadRep

    if isinstance(rep, HeadRep):
        rep.require_model()
        return rep
    try:
        return HeadRep.load(Path(rep), model=model)
    except GeneratorInputError:
        raise
    except HeadrepError as exc:
        raise GeneratorInputError(str(exc)) from None


def _smplx_vertices(rep, idx: np.ndarray) -> torch.Tensor:
    """Camera-space dense vertices of rep positions ``idx`` WITHOUT static and dynamic offsets [B,Nd,3]."""
    from headrep.model.head import to_camera

    t = rep.tensors
    i = torch.as_tensor(np.asarray(idx, np.int64))
    with torch.no_grad():
        out = rep.head(t["betas"][None], t["expression"][i], t["pose"][i], transl=t["transl"][i])
    return to_camera(out.vertices)


def _render_chunk(rep, idx: np.ndarray, R: int, ctx, what: Iterable[str]) -> dict[str, np.ndarray]:
    """Maps of rep positions ``idx`` at R×R in their crop cameras. ``what`` ⊆ {"normal_depth",
    "smplx_normal_depth", "face_mask", "landmarks"} -> "normal" uint8 [B,R,R,3] + "depth" float32 [B,R,R];
    "smplx_normal" / "smplx_depth"; "face_mask" uint8 [B,R,R]; "landmarks68" float32 [B,68,2] crop pixels."""
    from headrep.render import encode_normals, render_maps

    what = set(what)
    idx = np.asarray(idx, np.int64)
    cams = [rep.crop_camera(int(t), R) for t in idx]
    cam_arg = cams if len(cams) > 1 else cams[0]
    faces = rep.head.faces_t
    dev = getattr(ctx, "device", torch.device("cpu"))
    out: dict[str, np.ndarray] = {}
    with torch.no_grad():
        if "normal_depth" in what or "face_mask" in what:
            full = rep.vertices(idx, space="camera").to(dev)
            face = torch.zeros(full.shape[1], 1, dtype=full.dtype)
            face[torch.as_tensor(rep.face_vertices, dtype=torch.long)] = 1.0
            m = render_maps(ctx, full, faces.to(dev), cam_arg, attributes={"face": face})
            if "normal_depth" in what:
                out["normal"] = encode_normals(m["normal"], m["mask"]).numpy()
                out["depth"] = m["depth"].float().cpu().numpy()
            if "face_mask" in what:
                out["face_mask"] = ((m["face"][..., 0] > 0.5) & (m["rast"][..., 3] > 0)).to(torch.uint8).cpu().numpy()
        if "smplx_normal_depth" in what:
            v = _smplx_vertices(rep, idx).to(dev)
            m = render_maps(ctx, v, faces.to(dev), cam_arg)
            out["smplx_normal"] = encode_normals(m["normal"], m["mask"]).numpy()
            out["smplx_depth"] = m["depth"].float().cpu().numpy()
    if "landmarks" in what:
        lm = rep.landmarks68(idx, space="camera").double()
        pts = np.empty((len(idx), lm.shape[1], 2), np.float32)
        for k, c in enumerate(cams):
            uv, z = c.project(lm[k])
            uv = uv.numpy()
            uv[z.numpy() <= 0] = np.nan
            pts[k] = uv
        out["landmarks68"] = pts
    return out


def _render_condition(rep, positions: np.ndarray, mode: str, R: int, ctx, progress: bool = False) -> np.ndarray:
    """[F,R,R,C] float32 in [-1, 1] of condition ``mode`` for rep positions ``positions``, rendered at R."""
    from headrep.io import progress as progress_bar

    chunks = range(0, len(positions), _CHUNK)
    if progress:
        chunks = progress_bar(chunks, len(chunks), "condition")
    parts: dict[str, list[np.ndarray]] = {}
    for k in chunks:
        for name, arr in _render_chunk(rep, positions[k:k + _CHUNK], R, ctx, [mode]).items():
            parts.setdefault(name, []).append(arr)
    cat = {k: np.concatenate(v, 0) for k, v in parts.items()}
    if mode == "landmarks":
        return _cond_landmarks(cat["landmarks68"], 1.0, R)
    pre = "smplx_" if mode == "smplx_normal_depth" else ""
    return _cond_from_maps(cat[pre + "normal"], cat[pre + "depth"], R)


# ----------------------------------------------------------------------------------------------------------
# clip folders


class _Clip:
    """A prepared clip folder (validated clip.json and files; arrays opened by memory map on demand)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.meta = read_clip(self.path)
        self.T = int(self.meta["frames"]["count"])
        self.R = int(self.meta["resolution"])
        self.valid = np.asarray(self.meta["frames"]["valid"], bool)
        self.reference = int(self.meta["reference"]["position"])
        for key, name in _FILES.items():
            f = self.path / name
            if not f.is_file():
                raise GeneratorInputError(f"clip {self.path}: {name} is missing (prepare the clip again)")
            try:
                arr = np.load(f, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise GeneratorInputError(f"clip {self.path}: {name} cannot be read: {exc}") from None
            if arr.shape[0] != self.T or (key != "landmarks68" and arr.shape[1:3] != (self.R, self.R)):
                raise GeneratorInputError(f"clip {self.path}: {name} has shape {list(arr.shape)}; clip.json "
                                          f"records {self.T} frames at {self.R}x{self.R}")
        if not (self.path / REFERENCE_FILE).is_file():
            raise GeneratorInputError(f"clip {self.path}: {REFERENCE_FILE} is missing (prepare the clip again)")

    def array(self, key: str) -> np.ndarray:
        return np.load(self.path / _FILES[key], mmap_mode="r")

    def video(self, s: int, F: int, R: int) -> np.ndarray:
        """[F,R,R,3] float32 in [-1, 1]."""
        return _resize_stack(_to_unit(self.array("frames")[s:s + F]), R)

    def cond(self, mode: str, s: int, F: int, R: int) -> np.ndarray:
        """[F,R,R,C] float32 in [-1, 1]."""
        if mode == "landmarks":
            return _cond_landmarks(self.array("landmarks68")[s:s + F], R / self.R, R)
        pre = "smplx_" if mode == "smplx_normal_depth" else ""
        return _cond_from_maps(self.array(pre + "normal")[s:s + F], self.array(pre + "depth")[s:s + F], R)

    def face_mask(self, s: int, F: int, R: int) -> np.ndarray:
        """[F,R,R,1] float32 in {0, 1}."""
        m = np.asarray(self.array("face_mask")[s:s + F], np.float32)[..., None]
        return _resize_stack(m, R, binary=True)

    def ref(self, R: int) -> np.ndarray:
        """[R,R,3] float32 in [-1, 1]."""
        from PIL import Image

        with Image.open(self.path / REFERENCE_FILE) as im:
            img = np.asarray(im.convert("RGB"))
        return _resize_stack(_to_unit(img)[None], R)[0]


def read_clip(path: str | Path) -> dict:
    """The validated clip.json of a clip folder (GeneratorInputError when it is not one)."""
    path = Path(path)
    jpath = path / CLIP_JSON
    if not jpath.is_file():
        raise GeneratorInputError(f"{path} is not a clip folder ({CLIP_JSON} is missing)")
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeneratorInputError(f"clip {path}: {CLIP_JSON} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GeneratorInputError(f"clip {path}: not a generator clip (format "
                                  f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise GeneratorInputError(f"clip {path}: clip format version {meta.get('version')!r} is not supported "
                                  f"(this generator reads version {VERSION}); prepare the clip again")
    try:
        T = int(meta["frames"]["count"])
        valid = meta["frames"]["valid"]
        R = int(meta["resolution"])
        int(meta["reference"]["position"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GeneratorInputError(f"clip {path}: {CLIP_JSON} is malformed ({exc!r})") from None
    if len(valid) != T or R <= 0:
        raise GeneratorInputError(f"clip {path}: {CLIP_JSON} is inconsistent (frames.valid has {len(valid)} "
                                  f"entries for {T} frames, resolution {R})")
    return meta


def find_clips(root: str | Path) -> list[Path]:
    """Clip folders under ``root`` (``root`` itself when it holds clip.json; else every folder below it
    holding one, in sorted order, hidden folders skipped). GeneratorInputError when there is none."""
    root = Path(root)
    if not root.exists():
        raise GeneratorInputError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise GeneratorInputError(f"data folder {root} is not a folder")
    if (root / CLIP_JSON).is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob(CLIP_JSON)
                   if not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not found:
        if not any(root.iterdir()):
            raise GeneratorInputError(f"data folder {root} is empty; write clips into it with "
                                      f"`generator prepare --video V --rep REP -o {root}/NAME`")
        raise GeneratorInputError(f"data folder {root} contains no clips (folders with {CLIP_JSON}, written by "
                                  f"`generator prepare`)")
    return found


class ClipDataset(torch.utils.data.Dataset):
    """Training windows of ``num_frames`` consecutive frames from the clip folders under ``root``.

    Item (float32, all in [-1, 1] except the mask)::

        video [3,F,H,W]  RGB crops      cond [C,F,H,W]  condition ``condition`` (see the module docs)
        ref [3,H,W]      the clip's reference frame      face_mask [1,F,H,W]  {0, 1}

    H = W = ``resolution``; clips stored at another resolution are resized (INTER_AREA down, bilinear up; the
    landmark image is drawn at ``resolution``; the face mask is thresholded at 0.5).

    Windows: clip k of T_k frames gives ``max(1, T_k // F)`` items (``len`` is their sum). Item i of clip k
    draws its start at random from the k-th clip's start positions in its share (segment) of the clip, with
    ``numpy.random.default_rng((seed, epoch, i))`` (deterministic given seed, epoch and index, whatever the
    DataLoader worker; :meth:`set_epoch` changes the draw). Starts whose window holds an invalid frame (no face in
    the fit) are avoided: the draw is among fully valid windows of the segment, else of the whole clip, else
    among the windows with the fewest invalid frames.

    GeneratorInputError: ``num_frames`` not 4k+1, an unknown condition, a missing / empty ``root``, no clips,
    or clips shorter than ``num_frames`` (each named with its length; ``skip_short=True`` drops them with a
    note instead, an error only when none is left).
    """

    def __init__(self, root: str | Path, num_frames: int, resolution: int, condition: str, seed: int = 0,
                 skip_short: bool = False):
        self.num_frames = F = check_num_frames(num_frames)
        self.resolution = _check_resolution(resolution)
        self.condition = _check_mode(condition)
        self.channels = condition_channels(condition)
        self.seed = int(seed)
        self.epoch = 0
        self.root = Path(root)
        clips = [_Clip(p) for p in find_clips(self.root)]
        short = [c for c in clips if c.T < F]
        if short:
            listing = ", ".join(f"{c.path} ({c.T} frames)" for c in short[:5]) + (
                f" and {len(short) - 5} more" if len(short) > 5 else "")
            if not skip_short or len(short) == len(clips):
                raise GeneratorInputError(f"{len(short)} of {len(clips)} clip(s) under {self.root} are shorter "
                                          f"than num_frames={F}: {listing}")
            _note(f"skipping {len(short)} clip(s) shorter than {F} frames: {listing}")
            clips = [c for c in clips if c.T >= F]
        self.clips = clips
        self._counts = np.array([max(1, c.T // F) for c in clips], np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self._counts)])
        # invalid frames per window start, per clip
        self._bad = []
        for c in clips:
            inv = np.concatenate([[0], np.cumsum(~c.valid)])
            self._bad.append(inv[F:] - inv[:-F])                      # [T-F+1]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def set_epoch(self, epoch: int) -> None:
        """Use another draw of window starts (e.g. call with the epoch number before each epoch)."""
        self.epoch = int(epoch)

    def window(self, index: int) -> tuple[int, int]:
        """(clip number in ``self.clips``, start position) of item ``index``."""
        n = len(self)
        if not -n <= int(index) < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} windows")
        i = int(index) % n
        k = int(np.searchsorted(self._offsets, i, side="right") - 1)
        j, count = i - int(self._offsets[k]), int(self._counts[k])
        bad = self._bad[k]
        S = len(bad)                                                  # number of possible starts
        lo, hi = (j * S) // count, max((j + 1) * S // count, (j * S) // count + 1)
        starts = np.arange(S)
        seg = starts[lo:hi]
        choices = seg[bad[seg] == 0]
        if len(choices) == 0:
            choices = starts[bad == 0]
        if len(choices) == 0:
            choices = starts[bad == bad.min()]
        rng = np.random.default_rng((self.seed, self.epoch, i))
        return k, int(choices[rng.integers(len(choices))])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        k, s = self.window(index)
        clip, F, R = self.clips[k], self.num_frames, self.resolution
        return {
            "video": _channels_first(clip.video(s, F, R)),
            "cond": _channels_first(clip.cond(self.condition, s, F, R)),
            "ref": torch.from_numpy(np.ascontiguousarray(np.moveaxis(clip.ref(R), -1, 0))),
            "face_mask": _channels_first(clip.face_mask(s, F, R)),
        }


# ----------------------------------------------------------------------------------------------------------
# condition sequences for `generator animate --cond`


def _frame_range(path: Path, T: int, num_frames: int | None, start: int) -> tuple[int, int]:
    """(start, F) after checks; F = num_frames, or all frames from ``start`` trimmed to 4k+1."""
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= int(start) < max(T, 1):
        raise GeneratorInputError(f"start frame {start!r} is out of range for {path} ({T} frames)")
    start = int(start)
    if T == 0:
        raise GeneratorInputError(f"{path} has no frames")
    if num_frames is None:
        avail = T - start
        F = avail - (avail - 1) % 4
        if F != avail:
            _note(f"using {F} of the {avail} frames of {path} from frame {start} (the generator needs 4k+1 frames)")
        return start, F
    F = check_num_frames(num_frames)
    if start + F > T:
        raise GeneratorInputError(f"{path} has {T} frames; {F} frames from frame {start} need {start + F} "
                                  f"(use a shorter num_frames or an earlier start)")
    return start, F


def _kind_of(path: Path) -> str:
    from headrep.rep import JSON_FILE

    if not path.exists():
        raise GeneratorInputError(f"condition {path} does not exist")
    if not path.is_dir():
        raise GeneratorInputError(f"condition {path} is not a folder (expected a HeadRep folder, a `headrep render` "
                                  f"output folder with normal.mp4 and depth.npz, or a prepared clip)")
    if (path / JSON_FILE).is_file():
        return "rep"
    if (path / CLIP_JSON).is_file():
        return "clip"
    if (path / "normal.mp4").is_file() and (path / "depth.npz").is_file():
        return "render"
    if (path / "normal.mp4").is_file() or (path / "depth.npz").is_file():
        missing = "depth.npz" if (path / "normal.mp4").is_file() else "normal.mp4"
        raise GeneratorInputError(f"condition {path} looks like a `headrep render` output but {missing} is "
                                  f"missing")
    raise GeneratorInputError(f"condition {path} is neither a HeadRep folder (rep.json), a `headrep render` output "
                              f"folder (normal.mp4 + depth.npz) nor a prepared clip (clip.json)")


def load_condition(path: str | Path, mode: str, num_frames: int | None, resolution: int, start: int = 0,
                   device: str = "cpu", model: str | Path | None = None) -> torch.Tensor:
    """Condition video [C,F,R,R] float32 in [-1, 1] (see the module docs) for ``generator animate --cond PATH``.

    ``path``: a HeadRep folder (rendered on the fly in each frame's crop camera at ``resolution`` with the
    renderer of ``device``, default the CPU one; any mode; ``model`` as for HeadRep.load), a `headrep render`
    output folder (normals from normal.mp4, depth from the lossless depth.npz; ``normal_depth`` only), or a
    clip folder from `generator prepare` (any mode). Frames ``start .. start+F-1`` (rep positions); ``num_frames``
    None: every frame from ``start``, trimmed down to 4k+1 (with a note on stderr). Stored maps of another size
    are resized to ``resolution`` with a one-line note on stderr. The depth channel is normalised over the F
    frames returned.

    GeneratorInputError: unknown mode, a path that is none of the above, a mode the folder cannot give,
    ``num_frames`` not 4k+1, or a sequence shorter than ``start + num_frames``.
    """
    _check_mode(mode)
    R = _check_resolution(resolution)
    path = Path(path)
    kind = _kind_of(path)
    if kind == "rep":
        from headrep.render import get_context

        rep = _load_rep(path, model)
        s, F = _frame_range(path, rep.num_frames, num_frames, start)
        ctx = get_context(device)
        cond = _render_condition(rep, np.arange(s, s + F), mode, R, ctx, progress=True)
        return _channels_first(cond)
    if kind == "clip":
        clip = _Clip(path)
        s, F = _frame_range(path, clip.T, num_frames, start)
        if clip.R != R and mode != "landmarks":  # landmarks are drawn at R: nothing to resize
            _note(f"{path} is stored at {clip.R}x{clip.R}; resized to {R}x{R}")
        return _channels_first(clip.cond(mode, s, F, R))
    # `headrep render` output
    if mode != "normal_depth":
        raise GeneratorInputError(f"condition {mode!r} needs the HeadRep itself (a `headrep render` folder such as "
                                  f"{path} only holds the full head's normals and depth: use normal_depth, or pass "
                                  f"the rep folder)")
    from headrep.io import read_video

    try:
        with np.load(path / "depth.npz") as z:
            depth_all = z["depth"]
    except (OSError, ValueError, KeyError) as exc:
        raise GeneratorInputError(f"cannot read {path / 'depth.npz'}: {exc}") from None
    T = int(depth_all.shape[0])
    s, F = _frame_range(path, T, num_frames, start)
    depth = np.asarray(depth_all[s:s + F], np.float32)
    h, w = depth.shape[1:3]
    try:
        normal = np.stack([f for _, f in read_video(path / "normal.mp4", start=s, stop=s + F)], 0)
    except (HeadrepError, ValueError) as exc:
        raise GeneratorInputError(f"cannot read {path / 'normal.mp4'}: {exc}") from None
    if normal.shape[0] != F:
        raise GeneratorInputError(f"{path / 'normal.mp4'} gave {normal.shape[0]} frames from frame {s}; "
                                  f"depth.npz has {T} (re-run `headrep render`)")
    normal = normal[:, :h, :w]  # write_video pads odd sizes by one row / column
    if (h, w) != (R, R):
        _note(f"{path} holds {w}x{h} maps; resized to {R}x{R}")
    return _channels_first(_cond_from_maps(normal, depth, R))


# ----------------------------------------------------------------------------------------------------------
# reference images


def load_reference(path: str | Path, resolution: int, require_face: bool = True) -> torch.Tensor:
    """Reference image [3,R,R] float32 in [-1, 1]: the face of the image at ``path`` framed as the fit frames
    its crops (MediaPipe face mesh, static mode; square box 1.7 × the face's extent, centre shifted up by 0.12
    of its height; see headrep.fitting.landmarks.track_faces), resized to R. A video gives its first frame.

    GeneratorInputError for a missing or unreadable file, and ("no face found in …") when MediaPipe finds no
    face and ``require_face``; without ``require_face`` a faceless image gives its centred square crop.
    """
    from headrep.fitting.landmarks import MediaPipeDetector, crop_image, track_faces
    from headrep.fitting.video import load_frames

    R = _check_resolution(resolution)
    path = Path(path)
    if not path.exists():
        raise GeneratorInputError(f"reference image {path} does not exist")
    if path.is_dir():
        raise GeneratorInputError(f"reference image {path} is a folder, not an image")
    try:
        frames = load_frames(path, frames=slice(0, 1))
    except HeadrepError as exc:
        raise GeneratorInputError(f"cannot read reference image {path}: {exc}") from None
    image = frames.images[0]
    try:
        with MediaPipeDetector(video=False, max_num_faces=4) as det:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # several faces: the largest is used
                track = track_faces(frames, detector=det, resolution=R, progress=False)
        crop = track.crops[0]
    except HeadrepError:
        if require_face:
            raise GeneratorInputError(f"no face found in {path}") from None
        h, w = image.shape[:2]
        side = min(h, w)
        crop = crop_image(image, ((w - side) / 2.0, (h - side) / 2.0, float(side)), R)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(_to_unit(crop), -1, 0)))


# ----------------------------------------------------------------------------------------------------------
# prepare


def _check_source(video: Path, rep) -> dict:
    """video_info of ``video`` after checking it can be the rep's source (size, fps, frame count)."""
    from headrep.io import video_info
    from headrep.fitting.video import VIDEO_EXTENSIONS

    if not video.exists():
        raise GeneratorInputError(f"video {video} does not exist")
    if not video.is_file() or video.suffix.lower() not in VIDEO_EXTENSIONS:
        raise GeneratorInputError(f"{video} is not a video file ({', '.join(e[1:] for e in VIDEO_EXTENSIONS)})")
    try:
        info = video_info(video)
    except HeadrepError as exc:
        raise GeneratorInputError(str(exc)) from None
    where = f"HeadRep {rep.path}" if rep.path is not None else "the HeadRep"
    src = rep.source
    hint = f"is {video} the video {where} was fitted on (recorded source: {src.get('path')})?"
    size = rep.image_size
    if size is not None:
        scale = float(src.get("scale") or 1.0)
        eh, ew = size[0] / scale, size[1] / scale
        tol = max(2.0, 0.01 * max(eh, ew))
        if abs(info["height"] - eh) > tol or abs(info["width"] - ew) > tol:
            raise GeneratorInputError(f"video {video} is {info['width']}x{info['height']} but {where} was fitted on a "
                                      f"{round(ew)}x{round(eh)} source; {hint}")
    fps = float(src.get("fps") or 0)
    if fps > 0 and info["fps"] > 0 and abs(info["fps"] - fps) > 0.01 * fps:
        raise GeneratorInputError(f"video {video} runs at {info['fps']:.3f} fps but {where}'s source ran at "
                                  f"{fps:.3f} fps; {hint}")
    need = int(rep.frames[-1]) + 1
    if info["frames"] and info["frames"] < need:
        raise GeneratorInputError(f"video {video} has {info['frames']} frames but {where} uses source frames up to "
                                  f"{need - 1}; {hint}")
    rec = src.get("path")
    if rec and not str(rec).startswith("synthetic") and Path(rec).resolve() != video.resolve():
        _note(f"using {video} as the source of {where} (recorded: {rec})")
    return info


def _checked(crops):
    """headrep's source reader with its errors as this package's (the video is the rep's source, checked)."""
    try:
        yield from crops
    except HeadrepError as exc:
        raise GeneratorInputError(str(exc)) from None


def _dump_json(meta: dict) -> str:
    """json.dumps(indent=2) with the per-frame lists (frames.valid, frames.frame_indices) kept on one line."""
    frames = dict(meta["frames"])
    inline = {k: json.dumps(frames[k], separators=(",", ":")) for k in ("valid", "frame_indices")}
    for k in inline:
        frames[k] = f"@@{k}@@"
    text = json.dumps({**meta, "frames": frames}, indent=2)
    for k, v in inline.items():
        text = text.replace(f'"@@{k}@@"', v)
    return text


def _reference_position(reference, valid: np.ndarray) -> int:
    T = len(valid)
    if reference is None or reference == "first":
        ok = np.flatnonzero(valid)
        if len(ok) == 0:
            raise GeneratorInputError("the rep has no valid frame (no face was found in any frame) to take the "
                                      "reference from; pass a frame index")
        return int(ok[0])
    if isinstance(reference, str):
        try:
            reference = int(reference)
        except ValueError:
            raise GeneratorInputError(f"reference must be 'first' or a frame position, got {reference!r}") from None
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)):
        raise GeneratorInputError(f"reference must be 'first' or a frame position, got {reference!r}")
    r = int(reference)
    if not -T <= r < T:
        raise GeneratorInputError(f"reference frame {r} is out of range for a rep of {T} frames")
    r %= T
    if not valid[r]:
        _note(f"reference frame {r} is flagged invalid (no face detected there by the fit)")
    return r


def prepare_clip(video: str | Path, rep, out: str | Path, resolution: int = 256, overwrite: bool = False,
                 reference: int | str = "first", device: str = "cpu", model: str | Path | None = None) -> Path:
    """Write the clip folder ``out`` (layout in the module docs) from a video and the HeadRep fitted on it.

    ``rep``: a HeadRep folder (or a loaded HeadRep). ``video`` must be the rep's source: its size (times the
    fit's loading scale), fps and frame count are checked against the rep (GeneratorInputError otherwise).
    Every rep frame (``rep.frames``) is cropped with the rep's box at ``resolution`` and the three conditions,
    the face mask and the landmarks are rendered in the same crop cameras (``device``'s renderer). Invalid frames
    are kept and flagged. ``reference``: "first" (the first valid frame) or a frame position 0..T-1 (negative
    counts from the end). Written atomically (headrep.io.atomic_dir); a non-empty ``out`` is refused unless
    ``overwrite``. Progress bar on stderr. Returns ``out``.

    clip.json: format / version, created, tool, source {path, sha256, fps, frames, width, height}, rep {path,
    standin, model_sha256, topology_hash, resolution}, standin, resolution, fps (of the rep's frames),
    frames {count, valid (list of 0/1), num_valid, frame_indices}, reference {position, frame_index},
    conditions (descriptions), files, seconds.
    """
    from headrep.io import atomic_dir, check_output_dir, file_sha256, write_png
    from headrep.render import get_context
    from headrep.io import progress

    t0 = time.perf_counter()
    R = _check_resolution(resolution)
    video, out = Path(video), Path(out)
    rep = _load_rep(rep, model)
    T = rep.num_frames
    if T == 0:
        raise GeneratorInputError(f"HeadRep {rep.path} has no frames")
    info = _check_source(video, rep)
    ref = _reference_position(reference, rep.valid)
    try:
        out = check_output_dir(out, overwrite)
    except GeneratorInputError:
        raise
    except HeadrepError as exc:
        raise GeneratorInputError(str(exc)) from None
    if rep.is_standin:
        _note("this rep was fitted with the procedural STAND-IN model (not SMPL-X); clip.json records it")
    ctx = get_context(device)
    sha = file_sha256(video)
    valid = rep.valid
    with atomic_dir(out) as tmp:
        mm = lambda key, dtype, shape: np.lib.format.open_memmap(tmp / _FILES[key], "w+", dtype, shape)  # noqa: E731
        arrays = {
            "frames": mm("frames", np.uint8, (T, R, R, 3)),
            "normal": mm("normal", np.uint8, (T, R, R, 3)),
            "depth": mm("depth", np.float32, (T, R, R)),
            "smplx_normal": mm("smplx_normal", np.uint8, (T, R, R, 3)),
            "smplx_depth": mm("smplx_depth", np.float32, (T, R, R)),
            "landmarks68": mm("landmarks68", np.float32, (T, 68, 2)),
            "face_mask": mm("face_mask", np.uint8, (T, R, R)),
        }
        crops = _checked(source_crops(rep, R, video=video))
        bar = progress(None, T, "prepare")
        for k in range(0, T, _CHUNK):
            idx = np.arange(k, min(T, k + _CHUNK))
            maps = _render_chunk(rep, idx, R, ctx, ("normal_depth", "smplx_normal_depth", "face_mask", "landmarks"))
            lm = maps["landmarks68"]
            if lm.shape[1] == 51:  # a model without the jaw contour
                lm = np.concatenate([np.full((len(idx), 17, 2), np.nan, np.float32), lm], 1)
            maps["landmarks68"] = lm
            for key, arr in maps.items():
                arrays[key][idx] = arr
            for t in idx:
                arrays["frames"][t] = next(crops)
            bar.update(len(idx))
        bar.close()
        for _ in crops:  # drain (checks the video reached the last frame, closes it)
            pass
        for key in arrays:
            arrays[key].flush()
        write_png(tmp / REFERENCE_FILE, np.array(arrays["frames"][ref]))
        del arrays
        meta = {
            "format": FORMAT, "version": VERSION,
            "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
            "tool": "generator prepare",
            "source": {"path": str(video.resolve()), "sha256": sha, "fps": info["fps"], "frames": info["frames"],
                       "width": info["width"], "height": info["height"]},
            "rep": {"path": str(rep.path.resolve()) if rep.path is not None else None, "standin": rep.is_standin,
                    "model_sha256": rep.meta["model"]["model_sha256"], "topology_hash": rep.meta["topology"]["hash"],
                    "resolution": rep.resolution},
            "standin": rep.is_standin,
            "resolution": R,
            "fps": rep.fps,
            "frames": {"count": T, "valid": [int(v) for v in valid], "num_valid": int(valid.sum()),
                       "frame_indices": [int(f) for f in rep.frames]},
            "reference": {"position": ref, "frame_index": int(rep.frames[ref])},
            "conditions": {
                "normal_depth": "normal.npy (uint8 (n+1)/2*255*coverage) + depth.npy (float32 metres, 0 empty): the "
                                "full dense head with static and dynamic offsets",
                "smplx_normal_depth": "smplx_normal.npy + smplx_depth.npy: the same without offsets",
                "landmarks": "landmarks68.npy: the model's iBUG-68 points in crop pixels, drawn per facial part",
            },
            "files": {**{v: k for k, v in _FILES.items()}, REFERENCE_FILE: "reference frame (RGB)"},
            "seconds": time.perf_counter() - t0,
        }
        (tmp / CLIP_JSON).write_text(_dump_json(meta) + "\n")
    return out


# ----------------------------------------------------------------------------------------------------------
# a whole dataset (`generator prepare --dataset`)


def _prepare_one(video: str, rep: str, out: str, resolution: int, device: str) -> dict:
    """The body of one prepare task (a Ray task of :func:`prepare_dataset`)."""
    prepare_clip(video, rep, out, resolution=resolution, overwrite=True, device=device)
    return {"frames": int(read_clip(out)["frames"]["count"])}


def prepare_dataset(dataset: str | Path, resolution: int = 256, overwrite: bool = False, device: str = "cpu",
                    address: str | None = None, num_cpus: int | None = None, cpus_per_video: float = 1,
                    max_retries: int = 1, progress: bool = True) -> dict:
    """Clip folders DATASET/clips/ID for every fitted video of a `headrep dataset fit` folder, one Ray task each
    (headrep.dataset.run_tasks: locally, or on the cluster at ``address``), with :func:`prepare_clip`'s layout.

    Rows become "prepared" (``clip`` = "clips/ID", ``prepare`` = {seconds, resolution, peak_rss_mb, node,
    finished}); a video whose clip fails is "failed" with stage "prepare" and its error (its rep stays
    usable). Rows prepared at the same ``resolution`` whose clip exists are skipped unless ``overwrite``.
    Returns {"rows", "ran", "skipped", "seconds", "frames"}. GeneratorInputError when DATASET is not a dataset
    or holds no fitted video.
    """
    from headrep.dataset import Manifest, fitted_reps, ray_session, run_tasks
    from headrep.io import progress as progress_bar

    R = _check_resolution(resolution)
    root = Path(dataset)
    try:
        fitted_reps(root)  # a dataset with at least one fitted video
    except GeneratorInputError:
        raise
    except HeadrepError as exc:
        raise GeneratorInputError(str(exc)) from None
    man = Manifest(root)
    jobs, skipped = [], []
    for r in man.read():
        has_rep = r["rep"] is not None and (root / r["rep"] / "rep.json").is_file()
        if not has_rep or not (r["status"] in ("fitted", "prepared") or (r["status"] == "failed"
                                                                            and r["stage"] == "prepare")):
            continue
        done = (r["status"] == "prepared" and r["clip"] is not None and (root / r["clip"] / CLIP_JSON).is_file()
                and (r["prepare"] or {}).get("resolution") == R)
        if done and not overwrite:
            skipped.append(r["id"])
            continue
        jobs.append((r["id"], {"video": r["source"], "rep": str(root / r["rep"]),
                               "out": str(root / "clips" / r["id"]), "resolution": R, "device": device}))
    t0 = time.perf_counter()
    ran: list[str] = []
    stats = {"frames": 0}
    if skipped:
        _note(f"{len(skipped)} clip(s) already prepared at {R}x{R}: skipped (--overwrite prepares them again)")
    if jobs:
        with ray_session(address, num_cpus, threads=max(1, int(round(cpus_per_video)))) as info:
            _note(f"{len(jobs)} clip(s) to prepare on Ray ({info['address']}: {info['cpus']:g} CPU)")
            bar = progress_bar(None, len(jobs), "dataset prepare", unit="clip", enabled=progress)

            def on_result(rid: str, res: dict) -> None:
                ran.append(rid)
                task = {"resolution": R, **{k: res.get(k) for k in ("seconds", "peak_rss_mb", "threads", "node",
                                                                     "finished")}}
                if res["ok"]:
                    stats["frames"] += res["frames"]
                    man.update(rid, status="prepared", stage=None, error=None, traceback=None,
                               clip=f"clips/{rid}", prepare=task)
                else:
                    man.update(rid, status="failed", stage="prepare", error=res["error"],
                               traceback=res.get("traceback"), clip=None, prepare=task)
                bar.update(1)

            try:
                run_tasks(_prepare_one, jobs, on_result, cpus=cpus_per_video, max_retries=max_retries)
            finally:
                bar.close()
    return {"rows": man.read(), "ran": ran, "skipped": skipped, "seconds": time.perf_counter() - t0,
            "frames": stats["frames"]}
