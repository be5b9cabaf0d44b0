"""Face tracking for ``headrep fit``: detect 478 MediaPipe points per frame, choose the face, crop it stably.

Pipeline (:func:`track_faces`):

1. per frame, a :class:`FaceDetector` returns every face it finds (:class:`Detection`: 478×3 points in image
   pixels). Several faces: the largest (area of its points' bounding box) is kept and one warning per clip says
   on how many frames that happened. No face: the frame is invalid (its points are NaN).
2. a square box per valid frame: centre = centre of the points' bounding box, moved up by ``box_shift`` × the
   face height along the face's own up direction (chin → forehead, so the skull top and the neck both fit),
   side = ``box_scale`` × the larger side of the bounding box.
3. over time: invalid frames get centre and side interpolated (in time) from their valid neighbours (held
   constant before the first / after the last valid frame), then centre and side are smoothed with a centred
   Gaussian-weighted moving average over ``smooth_window`` frames. Where smoothing would cut off part of a
   frame's face, the side is grown locally (a dilation followed by the same average), so every valid frame's
   points lie inside its crop with a margin. Boxes are not clamped to the image: crops are padded with black.
4. each frame is cropped to its box and resized to ``resolution``² by the exact similarity
   ``crop_xy = (image_xy − (x0, y0)) · resolution / side`` (``cv2.warpAffine``; strong downscales go through an
   exact intermediate warp plus an area average, so they are anti-aliased yet follow the same formula).

Pixel coordinates throughout are pixel-index coordinates: the centre of pixel (row i, column j) is (x=j, y=i).
A :class:`FaceTrack` holds boxes, crops and points in crop pixels; :meth:`FaceTrack.to_crop` /
:meth:`FaceTrack.to_image` map between the two frames.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from headrep.errors import HeadrepError
from headrep.io import crop_image, write_npz
from headrep.model.constants import MP_TO_IBUG68, NUM_MP_POINTS as NUM_POINTS
from headrep.fitting.quiet import quiet_native_stderr, started
from headrep.fitting.video import Frames

__all__ = ["NUM_POINTS", "Detection", "FaceDetector", "MediaPipeDetector", "FaceTrack", "track_faces",
           "crop_image", "smooth_boxes"]

TRACK_FORMAT = 1
# MediaPipe face-mesh indices used for the face's up direction: chin bottom and forehead top.
_MP_CHIN, _MP_FOREHEAD = 152, 10


@dataclass
class Detection:
    """One face: ``points`` float32 [478,3] — x, y in pixels of the image given to the detector, z in the same
    pixel units (MediaPipe's normalised z × image width; smaller z = closer to the camera, origin near the head
    centre); ``score`` the detector's confidence (1.0 when it gives none)."""

    points: np.ndarray
    score: float = 1.0


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(image_rgb) -> list[Detection]`` (all faces found in a uint8 RGB [H,W,3] image)."""

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        ...


class MediaPipeDetector(FaceDetector):
    """MediaPipe Face Mesh (legacy solution, ``refine_landmarks=True``: 468 mesh + 10 iris points = 478).

    video=True: tracking mode (landmarks of one frame seed the next; for consecutive frames of one stream);
    video=False: static mode (each image detected from scratch; image folders and single images).
    Use one instance per stream and close it (``with MediaPipeDetector(...) as det:`` or ``det.close()``).
    The models ship inside the mediapipe wheel, so it runs offline. FaceMesh gives no per-face score: 1.0.
    """

    def __init__(self, video: bool = True, max_num_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5):
        try:
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - a broken install
            raise HeadrepError(f"mediapipe is not importable ({exc}); reinstall headrep's dependencies") from None
        self.video = bool(video)
        with quiet_native_stderr():  # MediaPipe's C++ start-up log lines
            self._mesh = started(mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not self.video,
                max_num_faces=int(max_num_faces),
                refine_landmarks=True,
                min_detection_confidence=float(min_detection_confidence),
                min_tracking_confidence=float(min_tracking_confidence),
            ))

    def detect(self, image_rgb: np.ndarray) -> list[Detection]:
        if self._mesh is None:
            raise RuntimeError("MediaPipeDetector is closed")
        image = np.ascontiguousarray(image_rgb)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"detect expects a uint8 RGB [H,W,3] image, got {image.dtype} {image.shape}")
        h, w = image.shape[:2]
        with quiet_native_stderr():
            result = self._mesh.process(image)
        faces = []
        for face in result.multi_face_landmarks or ():
            pts = np.array([(lm.x, lm.y, lm.z) for lm in face.landmark], dtype=np.float32)
            pts *= np.array([w, h, w], np.float32)
            faces.append(Detection(pts, 1.0))
        return faces

    def close(self) -> None:
        if self._mesh is not None:
            with quiet_native_stderr():
                self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "MediaPipeDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort
        try:
            self.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------------------------
# the track


@dataclass
class FaceTrack:
    """Face crops and landmarks of one clip (T kept frames).

    source, indices [T] (source frame numbers), fps, image_size (H, W) of the loaded frames, scale (downscale
    applied when loading: loaded px = source px × scale), resolution R,
    boxes float64 [T,3] (x0, y0, side) in loaded-frame pixels, crops uint8 [T,R,R,3],
    points float32 [T,478,3] in crop pixels (z scaled like x, y; NaN on invalid frames),
    valid bool [T], num_faces int [T] (faces the detector found on each frame).
    """

    source: str
    indices: np.ndarray
    fps: float
    image_size: tuple[int, int]
    scale: float
    resolution: int
    boxes: np.ndarray
    crops: np.ndarray
    points: np.ndarray
    valid: np.ndarray
    num_faces: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def valid_fraction(self) -> float:
        return float(np.mean(self.valid)) if len(self.valid) else 0.0

    def _factor(self, t: int) -> tuple[np.ndarray, float]:
        x0, y0, side = self.boxes[t]
        return np.array([x0, y0]), self.resolution / side

    def to_crop(self, xy_image: np.ndarray, t: int) -> np.ndarray:
        """Loaded-frame pixels → crop pixels of frame ``t`` (position 0..T-1). [...,2] or [...,3] (z scaled)."""
        xy = np.asarray(xy_image, dtype=np.float64)
        origin, s = self._factor(t)
        out = xy * s
        out[..., :2] = (xy[..., :2] - origin) * s
        return out

    def to_image(self, xy_crop: np.ndarray, t: int) -> np.ndarray:
        """Crop pixels of frame ``t`` → loaded-frame pixels. [...,2] or [...,3] (z scaled)."""
        xy = np.asarray(xy_crop, dtype=np.float64)
        origin, s = self._factor(t)
        out = xy / s
        out[..., :2] = xy[..., :2] / s + origin
        return out

    def ibug68(self) -> np.ndarray:
        """The 68 iBUG points (via ``standin.MP_TO_IBUG68``), float32 [T,68,2] in crop pixels (NaN if invalid)."""
        return self.points[:, MP_TO_IBUG68, :2].copy()

    def save(self, path: str | os.PathLike):
        """Write the track as a compressed .npz, atomically (``io.write_npz``). Returns the path."""
        return write_npz(
            path,
            format=np.int64(TRACK_FORMAT),
            source=np.array(self.source),
            indices=np.asarray(self.indices, np.int64),
            fps=np.float64(self.fps),
            image_size=np.asarray(self.image_size, np.int64),
            scale=np.float64(self.scale),
            resolution=np.int64(self.resolution),
            boxes=np.asarray(self.boxes, np.float64),
            crops=np.asarray(self.crops, np.uint8),
            points=np.asarray(self.points, np.float32),
            valid=np.asarray(self.valid, bool),
            num_faces=np.asarray(self.num_faces, np.int64),
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FaceTrack":
        """Read a track written by :meth:`save`; HeadrepError for a missing or foreign file."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise HeadrepError(f"cannot read face track {path}: {exc}") from None
        need = {"format", "source", "indices", "fps", "image_size", "scale", "resolution", "boxes", "crops",
                "points", "valid", "num_faces"}
        if not need <= set(data):
            raise HeadrepError(f"{path} is not a headrep face track (missing {', '.join(sorted(need - set(data)))})")
        if int(data["format"]) > TRACK_FORMAT:
            raise HeadrepError(f"face track {path} has format {int(data['format'])}; this headrep reads "
                               f"up to {TRACK_FORMAT}")
        return cls(
            source=str(data["source"]),
            indices=data["indices"],
            fps=float(data["fps"]),
            image_size=tuple(int(v) for v in data["image_size"]),
            scale=float(data["scale"]),
            resolution=int(data["resolution"]),
            boxes=data["boxes"],
            crops=data["crops"],
            points=data["points"],
            valid=data["valid"],
            num_faces=data["num_faces"],
        )


# --------------------------------------------------------------------------------------------------------------
# boxes and crops


def _gauss_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred Gaussian-weighted moving average along axis 0 (edges replicated); window 1: identity."""
    if window <= 1 or len(x) <= 1:
        return x.copy()
    half = window // 2
    k = np.exp(-0.5 * (np.arange(-half, half + 1) / max(half / 2.0, 0.5)) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], half, 0), x, np.repeat(x[-1:], half, 0)], 0)
    out = np.empty_like(x, dtype=np.float64)
    for j in range(x.shape[1]):
        out[:, j] = np.convolve(pad[:, j], k, mode="valid")
    return out


def _max_filter(x: np.ndarray, window: int) -> np.ndarray:
    half = window // 2
    pad = np.concatenate([np.full(half, -np.inf), x, np.full(half, -np.inf)])
    return np.max(np.lib.stride_tricks.sliding_window_view(pad, 2 * half + 1), axis=1)


def _raw_boxes(points: np.ndarray, valid: np.ndarray, box_scale: float, box_shift: float):
    """Per frame: centre (2), side, tight bbox (xmin, ymin, xmax, ymax); NaN on invalid frames."""
    t = len(points)
    centre = np.full((t, 2), np.nan)
    side = np.full(t, np.nan)
    tight = np.full((t, 4), np.nan)
    for i in np.flatnonzero(valid):
        xy = points[i, :, :2].astype(np.float64)
        lo, hi = xy.min(0), xy.max(0)
        tight[i] = (*lo, *hi)
        size = hi - lo
        up = xy[_MP_FOREHEAD] - xy[_MP_CHIN]
        norm = np.linalg.norm(up)
        up = up / norm if norm > 1e-6 else np.array([0.0, -1.0])
        centre[i] = (lo + hi) / 2 + box_shift * norm * up
        side[i] = box_scale * max(size[0], size[1], 1.0)
    return centre, side, tight


def smooth_boxes(centre: np.ndarray, side: np.ndarray, tight: np.ndarray, valid: np.ndarray, times: np.ndarray,
                 window: int, margin: float = 1.1) -> np.ndarray:
    """Interpolate invalid frames, smooth centre/side over ``window`` frames, keep every valid frame's tight
    box (grown by ``margin``) inside; returns boxes [T,3] (x0, y0, side)."""
    idx = np.flatnonzero(valid)
    times = np.asarray(times, np.float64)
    c = np.stack([np.interp(times, times[idx], centre[idx, j]) for j in range(2)], 1)
    s = np.interp(times, times[idx], side[idx])
    window = max(1, int(window) | 1)  # odd
    c = _gauss_average(c, window)
    s = _gauss_average(s[:, None], window)[:, 0]
    # the smoothed box must still hold every valid frame's points (with a margin): grow the side locally
    need = np.zeros_like(s)
    reach = np.maximum.reduce([c[idx, 0] - tight[idx, 0], tight[idx, 2] - c[idx, 0],
                               c[idx, 1] - tight[idx, 1], tight[idx, 3] - c[idx, 1]])
    need[idx] = 2 * margin * reach
    excess = np.maximum(need - s, 0.0)
    if np.any(excess > 0):
        # max-filter then average over the same window: the result is >= excess at every frame
        s = s + _gauss_average(_max_filter(excess, window)[:, None], window)[:, 0] * 1.0001
        s = np.maximum(s, need)
    return np.column_stack([c[:, 0] - s / 2, c[:, 1] - s / 2, s])


def _auto_window(frames: Frames) -> int:
    """~0.3 s of source time, in kept frames (odd, >= 1); 1 for a single image."""
    if frames.kind == "image" or len(frames) < 3:
        return 1
    step = float(np.median(np.diff(frames.indices))) if len(frames.indices) > 1 else 1.0
    w = int(round(0.3 * float(frames.fps) / max(step, 1.0)))
    return max(1, w | 1)


def _largest(faces: Sequence[Detection]) -> Detection:
    def area(d: Detection) -> float:
        xy = np.asarray(d.points)[:, :2]
        return float(np.prod(xy.max(0) - xy.min(0)))

    return max(faces, key=area)


def track_faces(frames: Frames, detector: FaceDetector | None = None, resolution: int = 256,
                smooth_window: int | None = None, progress: bool = True, box_scale: float = 1.7,
                box_shift: float = 0.12) -> FaceTrack:
    """Detect, choose and crop the face on every frame of ``frames``; see the module docstring.

    detector: any :class:`FaceDetector`; default a :class:`MediaPipeDetector` in tracking mode for a video,
        static mode for images (created and closed here; a detector passed in is not closed).
    resolution: side of the square crops in pixels.
    smooth_window: frames of the centred temporal average of boxes (odd; 1 = none); default ~0.3 s of source
        time in kept frames (7 at 24 fps, stride 1).
    progress: a tqdm bar on stderr ("landmarks").
    box_scale: crop side / larger side of the points' bounding box. box_shift: centre moved up (along the
        face's chin→forehead direction) by this × the chin–forehead distance.

    Raises HeadrepError when no frame has a face ("no face found in any of the N frames of X"). Warns once
    (UserWarning) when some frames had several faces (the largest is used).
    """
    from headrep.io import progress as progress_bar

    t_count = len(frames)
    if t_count == 0:
        raise HeadrepError(f"no frames to track in {frames.source}")
    resolution = int(resolution)
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    own = detector is None
    if own:
        detector = MediaPipeDetector(video=frames.kind == "video")
    points = np.full((t_count, NUM_POINTS, 3), np.nan, np.float32)
    valid = np.zeros(t_count, bool)
    num_faces = np.zeros(t_count, np.int64)
    try:
        bar = progress_bar(frames.images, t_count, "landmarks", "frame", enabled=progress, leave=False)
        for i, image in enumerate(bar):
            faces = list(detector.detect(image))
            num_faces[i] = len(faces)
            if not faces:
                continue
            best = _largest(faces) if len(faces) > 1 else faces[0]
            pts = np.asarray(best.points, np.float32)
            if pts.shape != (NUM_POINTS, 3):
                raise ValueError(f"detector returned points of shape {pts.shape}, expected ({NUM_POINTS}, 3)")
            if not np.all(np.isfinite(pts)):
                continue
            points[i] = pts
            valid[i] = True
        bar.close()
    finally:
        if own:
            detector.close()

    if not valid.any():
        raise HeadrepError(f"no face found in any of the {t_count} frames of {frames.source}")
    several = int(np.sum(num_faces > 1))
    if several:
        warnings.warn(f"{frames.source}: {several} frames had several faces; the largest was used",
                      UserWarning, stacklevel=2)

    window = _auto_window(frames) if smooth_window is None else max(1, int(smooth_window))
    centre, side, tight = _raw_boxes(points, valid, box_scale, box_shift)
    boxes = smooth_boxes(centre, side, tight, valid, frames.indices, window)

    crops = np.empty((t_count, resolution, resolution, 3), np.uint8)
    for i, image in enumerate(frames.images):
        crops[i] = crop_image(image, boxes[i], resolution)
    s = (resolution / boxes[:, 2]).astype(np.float32)
    crop_pts = points.copy()
    crop_pts[..., 0] = (points[..., 0] - boxes[:, None, 0]) * s[:, None]
    crop_pts[..., 1] = (points[..., 1] - boxes[:, None, 1]) * s[:, None]
    crop_pts[..., 2] = points[..., 2] * s[:, None]

    return FaceTrack(
        source=frames.source,
        indices=np.asarray(frames.indices, np.int64).copy(),
        fps=float(frames.fps),
        image_size=tuple(int(v) for v in frames.size),
        scale=float(frames.scale),
        resolution=resolution,
        boxes=boxes,
        crops=crops,
        points=crop_pts,
        valid=valid,
        num_faces=num_faces,
    )
