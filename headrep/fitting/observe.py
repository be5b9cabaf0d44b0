"""What the video shows besides landmarks, per frame and in the fit's crops: the person mask (MediaPipe selfie
segmentation: head, hair, neck, body), the skin mask (the face oval minus eyes, brows and lips, from the
detected MediaPipe points), occluders (hands, from MediaPipe Hands on the full frame) and the rows where the
silhouette is meaningful (above the neck: the torso below the mesh's lower cut must not pull it).

Both MediaPipe models ship inside the pinned mediapipe wheel and run offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from headrep.errors import HeadrepError
from headrep.fitting.quiet import quiet_native_stderr, started
from headrep.io import crop_in_frame, progress as progress_bar

# MediaPipe point sets (mediapipe.solutions.face_mesh_connections), as polygons by convex hull
MP_FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
                148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
MP_CHIN, MP_FOREHEAD = 152, 10
HAND_DILATE = 0.04       # hand hull grown by this fraction of the crop side (fingers are thicker than points)
NECK_MARGIN = 0.35       # silhouette rows: down to the chin plus this × the chin–forehead distance
MIN_PERSON = 0.02        # a person mask covering less of the crop than this: no person found


@dataclass
class Observations:
    """Per-frame masks in crop pixels [T,R,R] (person float in [0,1]; the others bool) and per-frame facts."""

    person: np.ndarray        # selfie segmentation, soft
    skin: np.ndarray          # face skin (oval minus eyes, brows, lips), not occluded
    occluded: np.ndarray      # occluders (hands), dilated
    silhouette_rows: np.ndarray  # [T] int: the silhouette term uses rows < this (0: none)
    has_person: np.ndarray    # [T] bool: segmentation found a person
    occluded_fraction: np.ndarray  # [T] float: share of the face oval covered by occluders
    grayscale: bool           # the video has no colour: the photometric term works on luminance
    source: str = "mediapipe selfie segmentation + hands"

    def save(self, path) -> None:
        from headrep.io import write_npz

        write_npz(path, person=(self.person * 255).round().astype(np.uint8), skin=self.skin,
                  occluded=self.occluded, silhouette_rows=self.silhouette_rows, has_person=self.has_person,
                  occluded_fraction=self.occluded_fraction, grayscale=np.array(self.grayscale),
                  source=np.array(self.source))

    @classmethod
    def load(cls, path) -> "Observations":
        with np.load(path) as d:
            return cls(d["person"].astype(np.float32) / 255, d["skin"], d["occluded"], d["silhouette_rows"],
                       d["has_person"], d["occluded_fraction"], bool(d["grayscale"]), str(d["source"]))


def _hull_mask(points_xy: np.ndarray, R: int, grow: float = 0.0) -> np.ndarray:
    import cv2

    m = np.zeros((R, R), np.uint8)
    pts = points_xy[np.isfinite(points_xy).all(-1)]
    if len(pts) < 3:
        return m.astype(bool)
    hull = cv2.convexHull(np.round(pts * 4).astype(np.int32))
    cv2.fillConvexPoly(m, hull, 1, lineType=cv2.LINE_8, shift=2)
    if grow > 0:
        k = max(1, int(round(grow)))
        m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    return m.astype(bool)


def skin_mask(points: np.ndarray, R: int) -> np.ndarray:
    """Face skin [R,R] bool from MediaPipe points [478,≥2] in crop pixels: the face oval minus the eyes,
    brows and lips (each hull dilated by ~1.5 % of the crop, so their rims stay out)."""
    from mediapipe.python.solutions import face_mesh_connections as fmc

    def ids(conns):
        return sorted({i for e in conns for i in e})

    xy = np.asarray(points, np.float32)[:, :2]
    face = _hull_mask(xy[MP_FACE_OVAL], R)
    grow = 0.015 * R
    for part in (fmc.FACEMESH_LEFT_EYE, fmc.FACEMESH_RIGHT_EYE, fmc.FACEMESH_LEFT_EYEBROW,
                 fmc.FACEMESH_RIGHT_EYEBROW, fmc.FACEMESH_LIPS):
        face &= ~_hull_mask(xy[ids(part)], R, grow)
    return face


def silhouette_rows(points: np.ndarray, R: int) -> int:
    """Rows above the neck (chin + NECK_MARGIN × chin–forehead distance), where the mesh should cover the
    person mask; 0 when the points are missing."""
    p = np.asarray(points, np.float64)
    if not np.isfinite(p[[MP_CHIN, MP_FOREHEAD], :2]).all():
        return 0
    chin, top = p[MP_CHIN, 1], p[MP_FOREHEAD, 1]
    return int(np.clip(np.ceil(chin + NECK_MARGIN * abs(chin - top)), 0, R))


class PersonSegmenter:
    """MediaPipe selfie segmentation (general model) on uint8 RGB images -> float mask in [0,1]."""

    def __init__(self):
        import mediapipe as mp

        with quiet_native_stderr():
            self._seg = started(mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        with quiet_native_stderr():
            r = self._seg.process(np.ascontiguousarray(image))
        return np.clip(np.asarray(r.segmentation_mask, np.float32), 0.0, 1.0)

    def close(self):
        with quiet_native_stderr():
            self._seg.close()


class HandDetector:
    """MediaPipe Hands in tracking mode on full frames -> list of [21,2] pixel points per hand."""

    def __init__(self, video: bool = True):
        import mediapipe as mp

        with quiet_native_stderr():
            self._hands = started(mp.solutions.hands.Hands(static_image_mode=not video, max_num_hands=2,
                                                           min_detection_confidence=0.3,
                                                           min_tracking_confidence=0.3))

    def __call__(self, image: np.ndarray) -> list[np.ndarray]:
        h, w = image.shape[:2]
        with quiet_native_stderr():
            r = self._hands.process(np.ascontiguousarray(image))
        return [np.array([(lm.x * w, lm.y * h) for lm in hand.landmark], np.float32)
                for hand in (r.multi_hand_landmarks or ())]

    def close(self):
        with quiet_native_stderr():
            self._hands.close()


def is_grayscale(crops: np.ndarray, tol: float = 2.0) -> bool:
    """True when R, G and B agree everywhere (within ``tol`` grey levels on average): a grey video."""
    c = np.asarray(crops[:: max(1, len(crops) // 16)], np.float32)
    return bool(np.abs(c - c.mean(-1, keepdims=True)).mean() < tol)


def observe(images, track, progress: bool = True, hands: bool = True) -> Observations:
    """Observations for every frame of ``track`` (FaceTrack); ``images`` are the loaded frames it was tracked
    on (hands are detected on them, then mapped into each crop with its box)."""
    T, R = len(track.valid), int(track.resolution)
    if len(images) != T:
        raise HeadrepError(f"observe: {len(images)} images for a track of {T} frames")
    person = np.zeros((T, R, R), np.float32)
    skin = np.zeros((T, R, R), bool)
    occluded = np.zeros((T, R, R), bool)
    rows = np.zeros(T, np.int64)
    frac = np.zeros(T, np.float32)
    inside = crop_in_frame(track.boxes, track.image_size, R)  # beyond the frame the crop is padding, not skin
    seg = PersonSegmenter()
    hand = HandDetector(video=getattr(track, "fps", 0) > 0 and T > 1) if hands else None
    try:
        for t in progress_bar(range(T), T, "masks", enabled=progress):
            person[t] = seg(track.crops[t])
            if hand is not None:
                x0, y0, side = (float(v) for v in track.boxes[t])
                for pts in hand(images[t]):
                    crop_pts = (pts - np.array([x0, y0], np.float32)) * (R / side)
                    occluded[t] |= _hull_mask(crop_pts, R, HAND_DILATE * R)
            if track.valid[t]:
                pts = np.asarray(track.points[t])
                oval = _hull_mask(pts[MP_FACE_OVAL, :2], R)
                frac[t] = float((oval & occluded[t]).sum()) / max(int(oval.sum()), 1)
                skin[t] = skin_mask(pts, R) & ~occluded[t] & inside[t]
                rows[t] = silhouette_rows(pts, R)
    finally:
        seg.close()
        if hand is not None:
            hand.close()
    has_person = person.reshape(T, -1).mean(1) >= MIN_PERSON
    return Observations(person, skin, occluded, rows, has_person, frac, is_grayscale(track.crops))
