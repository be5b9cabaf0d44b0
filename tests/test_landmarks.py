"""headrep.fitting.landmarks: face choice, invalid frames, stable boxes, exact crop mapping; real MediaPipe on samples."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from headrep.errors import HeadrepError
from headrep.fitting.landmarks import (NUM_POINTS, Detection, FaceDetector, FaceTrack, MediaPipeDetector, crop_image,
                               track_faces)
from headrep.paths import asset_path
from headrep.model.standin import MP_LEFT_EYE, MP_RIGHT_EYE, MP_TO_IBUG68
from headrep.fitting.video import Frames, load_frames


def sample(name: str):
    """Path of a real cached sample video; skip (with the reason) when it cannot be had, e.g. offline."""
    from headrep.samples import sample_path

    try:
        return sample_path(name)
    except HeadrepError as exc:
        pytest.skip(f"sample video {name} unavailable (offline?): {exc}")


# --------------------------------------------------------------------------------------------------------------
# a synthetic face and a fake detector

_CANON = np.load(asset_path("mediapipe_face", "canonical_face.npz"))["vertices_cm"].astype(np.float64)


def synthetic_face(cx: float, cy: float, height: float) -> np.ndarray:
    """478 MediaPipe-like points (image pixels, y down, smaller z closer) of a frontal face ``height`` px tall."""
    k = height / np.ptp(_CANON[:, 1])
    pts = np.empty((NUM_POINTS, 3))
    pts[:468, 0] = cx + k * _CANON[:, 0]
    pts[:468, 1] = cy - k * (_CANON[:, 1] - _CANON[:, 1].mean())
    pts[:468, 2] = -k * (_CANON[:, 2] - _CANON[:, 2].mean())
    for start, eye in ((468, MP_RIGHT_EYE), (473, MP_LEFT_EYE)):  # iris centre + 4 around it
        c = pts[eye].mean(0)
        pts[start] = c
        pts[start + 1:start + 5] = c + np.array([[2, 0, 0], [0, -2, 0], [-2, 0, 0], [0, 2, 0]]) * k * 0.5
    return pts.astype(np.float32)


class ScriptedDetector:
    """Returns a prepared list of faces per call (the frame order of track_faces)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = 0

    def detect(self, image_rgb):
        faces = self.script[self.calls]
        self.calls += 1
        return [Detection(p.copy(), 0.9) for p in faces]


def blank_frames(t: int, h: int = 240, w: int = 320, fps: float = 25.0) -> Frames:
    images = [np.full((h, w, 3), 60, np.uint8) for _ in range(t)]
    return Frames(images, np.arange(t), fps, (h, w), 1.0, "synthetic.mp4", "video")


def test_fake_detector_is_a_face_detector():
    assert isinstance(ScriptedDetector([]), FaceDetector)


def test_largest_face_invalid_frames_and_one_warning():
    big = [synthetic_face(160 + 0.5 * t, 120, 100) for t in range(12)]
    small = synthetic_face(60, 60, 40)
    script = [[big[t]] for t in range(12)]
    script[3] = [small, big[3]]
    script[4] = [big[4], small]
    script[5] = []
    script[6] = []
    det = ScriptedDetector(script)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = track_faces(blank_frames(12), detector=det, resolution=128, progress=False)
    several = [w for w in caught if "several faces" in str(w.message)]
    assert len(several) == 1 and "2 frames had several faces; the largest was used" in str(several[0].message)
    assert det.calls == 12
    np.testing.assert_array_equal(tr.num_faces, [1, 1, 1, 2, 2, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(tr.valid, [True] * 5 + [False] * 2 + [True] * 5)
    assert tr.valid_fraction == pytest.approx(10 / 12)
    assert np.isnan(tr.points[5]).all() and np.isnan(tr.points[6]).all()
    assert np.isfinite(tr.points[tr.valid]).all()
    # the chosen face is the big one, and the crop-pixel points map back to it exactly
    for t in np.flatnonzero(tr.valid):
        np.testing.assert_allclose(tr.to_image(tr.points[t], t), big[t], atol=1e-3)
    # invalid frames still get a box (interpolated) and a crop
    assert np.isfinite(tr.boxes).all() and tr.crops.shape == (12, 128, 128, 3)
    assert tr.boxes[4, 0] - 1e-6 <= tr.boxes[5, 0] <= tr.boxes[6, 0] <= tr.boxes[7, 0] + 1e-6


def test_sudden_jump_keeps_the_face_inside():
    """Smoothing must not cut off a face that jumps (a cut, or unrelated images): the box grows locally."""
    faces = [synthetic_face(90 if t < 10 else 250, 120 if t < 10 else 100, 90 if t < 10 else 110)
             for t in range(20)]
    tr = track_faces(blank_frames(20), detector=ScriptedDetector([[f] for f in faces]), resolution=128,
                     smooth_window=9, progress=False)
    xy = tr.points[..., :2]
    assert xy.min() > 0 and xy.max() < 128
    # far from the jump the boxes are the plain ones (1.7 × face size)
    assert tr.boxes[0, 2] == pytest.approx(1.7 * np.ptp(faces[0][:, 1]), rel=0.02)
    assert tr.boxes[19, 2] == pytest.approx(1.7 * np.ptp(faces[19][:, 1]), rel=0.02)
    assert tr.boxes[9, 2] > 1.3 * tr.boxes[0, 2]  # grown around the jump


def test_no_face_anywhere_raises():
    det = ScriptedDetector([[]] * 5)
    with pytest.raises(HeadrepError, match="no face found in any of the 5 frames of synthetic.mp4"):
        track_faces(blank_frames(5), detector=det, progress=False)


def test_ibug68_and_mapping_round_trip():
    faces = [synthetic_face(150, 130, 90) for _ in range(3)]
    tr = track_faces(blank_frames(3), detector=ScriptedDetector([[f] for f in faces]), resolution=200,
                     progress=False)
    lm = tr.ibug68()
    assert lm.shape == (3, 68, 2) and lm.dtype == np.float32
    np.testing.assert_array_equal(lm, tr.points[:, MP_TO_IBUG68, :2])
    np.testing.assert_allclose(tr.to_image(lm[1], 1), faces[1][MP_TO_IBUG68, :2], atol=1e-3)
    np.testing.assert_allclose(tr.to_crop(faces[2], 2), tr.points[2], atol=1e-3)
    # a still face: boxes constant, the whole face inside the crop with a margin, side = 1.7 × face size
    assert np.ptp(tr.boxes, axis=0).max() < 1e-6
    assert tr.points[..., :2].min() > 10 and tr.points[..., :2].max() < 190
    assert tr.boxes[0, 2] == pytest.approx(1.7 * np.ptp(faces[0][:, 1]), rel=1e-3)


def test_save_load_round_trip(tmp_path):
    script = [[synthetic_face(150, 130, 90)], [], [synthetic_face(152, 131, 90)]]
    tr = track_faces(blank_frames(3), detector=ScriptedDetector(script), resolution=64, progress=False)
    path = tr.save(tmp_path / "track.npz")
    back = FaceTrack.load(path)
    assert back.source == tr.source and back.fps == tr.fps and back.image_size == tr.image_size
    assert back.resolution == 64 and back.scale == tr.scale
    for name in ("indices", "boxes", "crops", "points", "valid", "num_faces"):
        np.testing.assert_array_equal(getattr(back, name), getattr(tr, name))
    with pytest.raises(HeadrepError, match="nope.npz"):
        FaceTrack.load(tmp_path / "nope.npz")


# --------------------------------------------------------------------------------------------------------------
# exact crop mapping


def dot_image(h, w, dots, radius=4):
    img = np.zeros((h, w, 3), np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for x, y in dots:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = 255
    return img


def centroid_near(crop, u, v, half):
    g = crop[..., 0].astype(np.float64)
    y0, x0 = max(int(v) - half, 0), max(int(u) - half, 0)
    win = g[y0:int(v) + half + 1, x0:int(u) + half + 1]
    yy, xx = np.mgrid[y0:y0 + win.shape[0], x0:x0 + win.shape[1]]
    return (xx * win).sum() / win.sum(), (yy * win).sum() / win.sum()


@pytest.mark.parametrize("box", [(100.0, 50.0, 300.0),   # mild downscale (one warp)
                                 (37.3, -80.6, 900.2),   # strong downscale, box partly outside the image
                                 (250.5, 200.25, 120.0)])  # upscale
def test_crop_mapping_is_exact(box):
    dots = [(300, 200), (180, 130), (377, 311), (260, 260)]
    img = dot_image(600, 800, dots, radius=6)
    res = 256
    crop = crop_image(img, box, res)
    x0, y0, side = box
    s = res / side
    for x, y in dots:
        u, v = (x - x0) * s, (y - y0) * s
        if not (8 <= u < res - 8 and 8 <= v < res - 8):
            continue
        half = int(np.ceil(6 * s)) + 3
        cu, cv = centroid_near(crop, u, v, half)
        assert abs(cu - u) < 1.0 and abs(cv - v) < 1.0, (box, (x, y), (u, v), (cu, cv))
    if box[1] < 0:  # outside the image: black
        assert crop[:5].max() == 0


def test_track_crop_lands_on_the_dots():
    """Through track_faces: dots drawn at some landmark positions appear at the tracked crop points."""
    marks = [1, 10, 152, 33, 263]
    faces, images = [], []
    for t in range(6):
        f = synthetic_face(400 + 3 * t, 300 - 2 * t, 260)
        faces.append([f])
        images.append(dot_image(600, 800, [tuple(f[i, :2]) for i in marks], radius=5))
    frames = Frames(images, np.arange(6), 25.0, (600, 800), 1.0, "dots", "video")
    tr = track_faces(frames, detector=ScriptedDetector(faces), resolution=128, progress=False)
    for t in range(6):
        for i in marks:
            u, v = tr.points[t, i, :2]
            cu, cv = centroid_near(tr.crops[t], u, v, int(np.ceil(5 * 128 / tr.boxes[t, 2])) + 3)
            assert abs(cu - u) < 1.0 and abs(cv - v) < 1.0, (t, i, (u, v), (cu, cv))


# --------------------------------------------------------------------------------------------------------------
# real MediaPipe on the real samples


@pytest.fixture(scope="module")
def wolfgang_track():
    frames = load_frames(sample("WolfgangLanger_Pexels.mp4"), frames=slice(0, 60))
    return frames, track_faces(frames, progress=False)


def test_mediapipe_real_video(wolfgang_track):
    frames, tr = wolfgang_track
    assert len(tr) == 60 and tr.valid.all() and (tr.num_faces == 1).all()
    assert tr.points.shape == (60, 478, 3) and tr.crops.shape == (60, 256, 256, 3)
    assert tr.image_size == (360, 640) and tr.fps == pytest.approx(23.976, abs=0.01)
    # the whole face inside every crop
    xy = tr.points[..., :2]
    assert xy.min() > 0 and xy.max() < 256
    # boxes change smoothly: small centre jumps and size changes from frame to frame
    centre = tr.boxes[:, :2] + tr.boxes[:, 2:] / 2
    jump = np.linalg.norm(np.diff(centre, axis=0), axis=1) / tr.boxes[1:, 2]
    assert jump.max() < 0.03, jump.max()
    assert np.abs(np.diff(tr.boxes[:, 2])).max() / tr.boxes[:, 2].mean() < 0.03
    # the face is large in the crop (side 1.7 × face), and the crop is centred on it
    face_h = np.ptp(xy[..., 1], axis=1)
    assert 256 / 1.9 < face_h.mean() < 256 / 1.5
    # points map back to the image where MediaPipe put them: a skin-coloured nose tip, not background
    t = 30
    nose = tr.to_image(tr.points[t, 4, :2], t)
    assert 0 <= nose[0] < 640 and 0 <= nose[1] < 360
    u, v = np.round(tr.points[t, 4, :2]).astype(int)
    np.testing.assert_allclose(tr.crops[t, v, u].astype(int), frames.images[t][int(round(nose[1])),
                               int(round(nose[0]))].astype(int), atol=40)
    assert tr.ibug68().shape == (60, 68, 2)


def test_mediapipe_single_image(tmp_path, wolfgang_track):
    from headrep.io import write_png

    frames, _ = wolfgang_track
    path = write_png(tmp_path / "face.png", frames.images[10])
    tr = track_faces(load_frames(path), progress=False)
    assert len(tr) == 1 and tr.valid.all()
    xy = tr.points[0, :, :2]
    assert xy.min() > 0 and xy.max() < 256


def test_mediapipe_detector_api(wolfgang_track):
    frames, _ = wolfgang_track
    with MediaPipeDetector(video=False) as det:
        faces = det.detect(frames.images[0])
        assert len(faces) == 1
        p = faces[0].points
        assert p.shape == (478, 3) and p.dtype == np.float32
        assert 0 < p[:, 0].min() and p[:, 0].max() < 640 and 0 < p[:, 1].min() and p[:, 1].max() < 360
        # z: nose tip (4) is closer to the camera than the cheek edges (234, 454)
        assert p[4, 2] < p[234, 2] and p[4, 2] < p[454, 2]
        assert det.detect(np.zeros((120, 160, 3), np.uint8)) == []
    with pytest.raises(RuntimeError):
        det.detect(frames.images[0])


def test_mediapipe_no_face_video():
    frames = load_frames(sample("no_face.mp4"), stride=4)
    with pytest.raises(HeadrepError, match=rf"no face found in any of the {len(frames)} frames of .*no_face.mp4"):
        track_faces(frames, progress=False)


def test_mediapipe_face_appears():
    # the face enters at frame 96: MediaPipe finds it on frames 96..167 (72 of the 169; not on the last one)
    frames = load_frames(sample("noface_face.mov"), stride=6)
    tr = track_faces(frames, progress=False)
    assert 0 < tr.valid.sum() < len(tr)
    assert not tr.valid[tr.indices < 90].any()
    assert tr.valid[(tr.indices >= 100) & (tr.indices < 160)].all()
    assert np.isnan(tr.points[~tr.valid]).all() and np.isfinite(tr.points[tr.valid]).all()
    assert np.isfinite(tr.boxes).all()
    xy = tr.points[tr.valid][..., :2]
    assert xy.min() > 0 and xy.max() < 256
