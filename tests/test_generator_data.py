"""generator.data: prepared clips, ClipDataset, load_condition, load_reference - checked against independent
references (hand crops with cv2.warpAffine, rep.render, projected landmarks, `headrep render` outputs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from generator.data import (CONDITIONS, LANDMARK_PARTS, ClipDataset, check_num_frames, condition_channels,
                            draw_landmarks, load_condition, load_reference, normalize_depth, prepare_clip)
from generator.errors import GeneratorInputError
from headrep.errors import HeadrepError
from headrep.model.head import DenseHead
from headrep.io import file_sha256, read_video, write_png, write_video
from headrep.rep import HeadRep
from headrep.fitting.synthetic import make_synthetic_rep

T, H, W = 14, 240, 320        # rep frames, source frame size
FIRST = 1                     # the rep starts at source frame 1 (the video has T + 2 frames)
INVALID = 4                   # rep position without a face
RC = 48                       # clip resolution (the rep's own is 64)


def _pattern(i: int) -> np.ndarray:
    """Source frame i: smooth gradients in red / green, blue = 10 + 15 i (tells the frames apart)."""
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 10 + 15 * i)], -1).astype(np.uint8)


@pytest.fixture(scope="module")
def head(body):
    return DenseHead(body, levels=1)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("gsrc") / "clip.mp4", [_pattern(i) for i in range(T + 2)], fps=25)


@pytest.fixture(scope="module")
def rep_dir(body, head, source, tmp_path_factory):
    rep = make_synthetic_rep(body, head, T=T, seed=3, resolution=64, image_size=(H, W), source_path=source,
                             invalid=(INVALID,), frame_indices=range(FIRST, FIRST + T))
    return rep.save(tmp_path_factory.mktemp("greps") / "clip.rep")


@pytest.fixture(scope="module")
def rep(rep_dir):
    return HeadRep.load(rep_dir)


@pytest.fixture(scope="module")
def clips_root(source, rep_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("gclips")
    prepare_clip(source, rep_dir, root / "a", resolution=RC)
    return root


@pytest.fixture(scope="module")
def clip(clips_root):
    return clips_root / "a"


def _offsets_rep(body, head, path, static: bool, dynamic: bool, T_=5):
    """A small saved rep whose static / dynamic offsets are kept or zeroed."""
    rep = make_synthetic_rep(body, head, T=T_, seed=7, resolution=RC, image_size=(H, W))
    if not static:
        rep.tensors["static_offsets"].zero_()
    if not dynamic:
        rep.tensors["dynamic_offsets"].zero_()
    return rep.save(path)


# ----------------------------------------------------------------------------------------------------------
# small helpers


def test_channels_and_num_frames():
    assert CONDITIONS == ("normal_depth", "smplx_normal_depth", "landmarks")
    assert [condition_channels(m) for m in CONDITIONS] == [4, 4, 3]
    with pytest.raises(GeneratorInputError, match="unknown condition"):
        condition_channels("rgb")
    for ok in (1, 5, 9, 17, 33):
        assert check_num_frames(ok) == ok
    for bad in (0, 8, 16, -3, 2.0, "9"):
        with pytest.raises(GeneratorInputError, match="4k\\+1"):
            check_num_frames(bad)


def test_normalize_depth_monotone_and_empty():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.6, 1.0, size=(3, 20, 20)).astype(np.float32)
    d[:, :5] = 0.0
    c = normalize_depth(d)
    assert c.dtype == np.float32 and c.shape == d.shape
    assert (c[:, :5] == -1.0).all()
    cov = d > 0
    order = np.argsort(d[cov], kind="stable")
    assert (np.diff(c[cov][order]) <= 1e-7).all()            # nearer -> larger
    assert c[cov].max() == pytest.approx(1.0) and c[cov].min() == pytest.approx(-0.75)
    assert (c[cov] >= -0.75).all() and (c[cov] <= 1.0).all()
    assert (normalize_depth(np.zeros((2, 4, 4))) == -1).all()  # nothing covered
    flat = normalize_depth(np.full((1, 4, 4), 0.8, np.float32))  # zero range: no division by zero
    assert np.isfinite(flat).all()


# ----------------------------------------------------------------------------------------------------------
# prepare_clip


def test_prepare_layout_and_json(clip, rep, source):
    meta = json.loads((clip / "clip.json").read_text())
    assert meta["format"] == "generator.clip" and meta["version"] == 1
    assert meta["source"]["sha256"] == file_sha256(source)
    assert meta["source"]["path"] == str(source.resolve())
    assert meta["rep"]["path"] == str(rep.path.resolve())
    assert meta["standin"] is True and meta["rep"]["standin"] is True
    assert meta["resolution"] == RC and meta["fps"] == pytest.approx(25.0)
    assert meta["frames"]["count"] == T and meta["frames"]["num_valid"] == T - 1
    assert meta["frames"]["valid"] == [0 if t == INVALID else 1 for t in range(T)]
    assert meta["frames"]["frame_indices"] == list(range(FIRST, FIRST + T))
    assert meta["reference"] == {"position": 0, "frame_index": FIRST}
    shapes = {"frames.npy": ((T, RC, RC, 3), np.uint8), "normal.npy": ((T, RC, RC, 3), np.uint8),
              "depth.npy": ((T, RC, RC), np.float32), "smplx_normal.npy": ((T, RC, RC, 3), np.uint8),
              "smplx_depth.npy": ((T, RC, RC), np.float32), "landmarks68.npy": ((T, 68, 2), np.float32),
              "face_mask.npy": ((T, RC, RC), np.uint8)}
    for name, (shape, dtype) in shapes.items():
        a = np.load(clip / name, mmap_mode="r")
        assert a.shape == shape and a.dtype == dtype, name
    assert set(np.unique(np.load(clip / "face_mask.npy"))) <= {0, 1}
    assert (clip / "reference.png").is_file()
    assert not [p for p in clip.parent.iterdir() if p.name.startswith(".")]  # nothing half-written left


def test_crops_equal_hand_crops(clip, rep, source):
    """frames.npy = the decoded source frames rep.frames cropped by crop_xy = (xy - (x0, y0)) * RC / side."""
    import cv2
    from PIL import Image

    frames = np.load(clip / "frames.npy")
    decoded = {i: f for i, f in read_video(source)}
    vv, uu = np.mgrid[0:RC, 0:RC]
    for t in range(T):
        x0, y0, side = rep.boxes[t]
        s = RC / side
        M = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]])
        hand = cv2.warpAffine(decoded[int(rep.frames[t])], M, (RC, RC), flags=cv2.INTER_LINEAR)
        # compare where the crop samples well inside the frame (the border mixes in black differently)
        x, y = uu / s + x0, vv / s + y0
        inside = (x > 2 / s) & (x < W - 1 - 2 / s) & (y > 2 / s) & (y < H - 1 - 2 / s)
        assert inside.sum() > 0.3 * RC * RC, t
        diff = np.abs(frames[t].astype(int) - hand.astype(int))[inside]
        assert diff.mean() < 1.5 and np.percentile(diff, 99) <= 4, (t, diff.mean())
        # the right source frame: blue = 10 + 15 * frame index
        assert abs(np.median(frames[t][inside][:, 2]) - (10 + 15 * int(rep.frames[t]))) <= 3, t
    ref = np.asarray(Image.open(clip / "reference.png").convert("RGB"))
    assert np.array_equal(ref, frames[0])


def test_normal_condition_matches_render(clip, rep):
    cond = load_condition(clip, "normal_depth", 9, RC).numpy()      # [4,9,RC,RC]
    assert cond.shape == (4, 9, RC, RC) and cond.dtype == np.float32
    assert cond.min() >= -1 and cond.max() <= 1
    for t in (0, 5, 8):
        m = rep.render(t, RC)
        mask, normal, depth = m["mask"].numpy(), m["normal"].numpy(), m["depth"].numpy()
        n = np.moveaxis(cond[:3, t], 0, -1)
        inner = mask > 0.999
        assert inner.sum() > 200
        assert np.abs(np.linalg.norm(n[inner], axis=-1) - 1).max() < 0.02     # decode to unit vectors
        assert np.abs(n[inner] - normal[inner]).max() < 0.006                 # 8-bit quantisation
        empty = mask == 0
        assert (n[empty] == -1).all() and (cond[3, t][depth == 0] == -1).all()


def test_depth_condition_monotone_and_minus_one_off_mask(clip, rep):
    cond = load_condition(clip, "normal_depth", 5, RC, start=2).numpy()
    depth = np.stack([rep.render(t, RC)["depth"].numpy() for t in range(2, 7)], 0)
    c = cond[3]
    assert (c[depth == 0] == -1.0).all()
    cov = depth > 0
    assert (c[cov] >= -0.75 - 1e-6).all() and c[cov].max() == pytest.approx(1.0)
    order = np.argsort(depth[cov], kind="stable")
    assert (np.diff(c[cov][order]) <= 1e-6).all()   # nearer -> larger (over the whole window)
    assert np.ptp(c[cov]) > 1.0                      # the range is used


def test_smplx_condition_equals_full_when_offsets_are_zero(body, head, tmp_path):
    d = _offsets_rep(body, head, tmp_path / "zero.rep", static=False, dynamic=False)
    full = load_condition(d, "smplx_normal_depth", 5, RC)
    assert full.shape == (4, 5, RC, RC)
    assert torch.equal(full, load_condition(d, "normal_depth", 5, RC))


def test_smplx_condition_differs_where_offsets_are_nonzero(body, head, tmp_path, source):
    """Static offsets 0, dynamic offsets on the face only: the maps differ on the face, agree away from it."""
    import cv2

    d = _offsets_rep(body, head, tmp_path / "dyn.rep", static=False, dynamic=True)
    vid = write_video(tmp_path / "v.mp4", [_pattern(i) for i in range(5)], fps=25)
    c = prepare_clip(vid, d, tmp_path / "dynclip", resolution=RC)
    face = np.load(c / "face_mask.npy").astype(bool)
    n_full, n_smplx = np.load(c / "normal.npy").astype(int), np.load(c / "smplx_normal.npy").astype(int)
    z_full, z_smplx = np.load(c / "depth.npy"), np.load(c / "smplx_depth.npy")
    assert face.sum() > 5 * 100
    diff = np.abs(n_full - n_smplx).max(-1)
    assert (diff[face] > 0).mean() > 0.3 and diff[face].mean() > 1.0
    assert np.abs(z_full - z_smplx)[face].max() > 2e-4
    near_face = np.stack([cv2.dilate(f.astype(np.uint8), np.ones((7, 7), np.uint8)) for f in face], 0) > 0
    assert (~near_face & (z_full > 0)).sum() > 500
    assert (diff[~near_face] == 0).all()
    assert np.array_equal(z_full[~near_face], z_smplx[~near_face])
    # the conditions as the dataset gives them
    a = ClipDataset(c, 5, RC, "normal_depth")[0]["cond"]
    b = ClipDataset(c, 5, RC, "smplx_normal_depth")[0]["cond"]
    assert a.shape == b.shape == (4, 5, RC, RC) and not torch.equal(a, b)


def test_face_mask_is_inside_the_head(clip):
    face = np.load(clip / "face_mask.npy").astype(bool)
    depth = np.load(clip / "depth.npy")
    assert face.any(axis=(1, 2)).all()
    assert (depth[face] > 0).all()
    assert 0.05 < face.sum() / (depth > 0).sum() < 0.8


def test_landmark_condition_at_projected_landmarks(clip, rep):
    R = 128
    cond = load_condition(clip, "landmarks", 5, R).numpy()
    assert cond.shape == (3, 5, R, R) and cond.min() >= -1 and cond.max() <= 1
    lm = rep.landmarks68(range(5), space="camera").double()
    palette = np.array([p[3] for p in LANDMARK_PARTS], float)
    part_of = np.zeros(68, int)
    for k, (_, idx, _, _) in enumerate(LANDMARK_PARTS):
        part_of[list(idx)] = k
    hits = []
    for t in range(5):
        uv, _ = rep.crop_camera(t, R).project(lm[t])
        img = (np.moveaxis(cond[:, t], 0, -1) + 1) * 127.5
        assert (img.max(-1) < 1).mean() > 0.8                         # mostly black
        for i, (u, v) in enumerate(uv.numpy()):
            px = img[int(round(v)), int(round(u))]
            assert px.max() > 100, (t, i)                             # drawn at the landmark
            hits.append(np.argmin(((palette - px) ** 2).sum(-1)) == part_of[i])
    assert np.mean(hits) > 0.8                                        # in its part's colour
    # 51-point models (no jaw contour): the jaw is not drawn, the rest is
    pts = np.stack([np.linspace(10, 50, 68), np.linspace(20, 40, 68)], 1)
    assert draw_landmarks(pts[17:], 64)[int(round(pts[0, 1])), int(round(pts[0, 0]))].max() == 0
    assert draw_landmarks(pts[17:], 64)[int(round(pts[40, 1])), int(round(pts[40, 0]))].max() > 0


# ----------------------------------------------------------------------------------------------------------
# ClipDataset


def test_dataset_items(clips_root, clip):
    ds = ClipDataset(clips_root, 5, RC, "normal_depth", seed=1)
    assert len(ds) == T // 5
    frames = np.load(clip / "frames.npy")
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"video", "cond", "ref", "face_mask"}
        assert item["video"].shape == (3, 5, RC, RC) and item["cond"].shape == (4, 5, RC, RC)
        assert item["ref"].shape == (3, RC, RC) and item["face_mask"].shape == (1, 5, RC, RC)
        for k, v in item.items():
            assert v.dtype == torch.float32 and v.min() >= -1 and v.max() <= 1, k
        assert set(torch.unique(item["face_mask"]).tolist()) <= {0.0, 1.0}
        _, s = ds.window(i)
        want = torch.from_numpy(frames[s:s + 5]).permute(3, 0, 1, 2).float() / 127.5 - 1
        assert torch.allclose(item["video"], want, atol=1e-6)
        assert torch.allclose(item["ref"], torch.from_numpy(frames[0]).permute(2, 0, 1).float() / 127.5 - 1,
                              atol=1e-6)
    for mode in CONDITIONS:
        c = ClipDataset(clip, 9, 32, mode)[0]                   # a clip folder as root; resized 48 -> 32
        assert c["cond"].shape == (condition_channels(mode), 9, 32, 32)
        assert c["video"].shape == (3, 9, 32, 32) and c["ref"].shape == (3, 32, 32)
        assert set(torch.unique(c["face_mask"]).tolist()) <= {0.0, 1.0}


def test_dataset_determinism_and_invalid_frames(clips_root):
    a, b = ClipDataset(clips_root, 5, RC, "landmarks", seed=3), ClipDataset(clips_root, 5, RC, "landmarks", seed=3)
    for i in range(len(a)):
        assert a.window(i) == b.window(i)
        x, y = a[i], b[i]
        assert all(torch.equal(x[k], y[k]) for k in x)
    # windows avoid the invalid frame (position 4): with F=5 the clean starts are 5..9
    starts = {ClipDataset(clips_root, 5, RC, "landmarks", seed=s).window(i)[1] for s in range(30) for i in range(2)}
    assert starts <= set(range(5, 10)) and len(starts) > 2
    # another seed / epoch draws other windows
    c = ClipDataset(clips_root, 5, RC, "landmarks", seed=3)
    draws = set()
    for e in range(10):
        c.set_epoch(e)
        draws.add(tuple(c.window(i)[1] for i in range(len(c))))
    assert len(draws) > 1
    # no clean window at all (F=13 always holds frame 4): still an item
    d = ClipDataset(clips_root, 13, 32, "landmarks")
    assert len(d) == 1 and d[0]["cond"].shape == (3, 13, 32, 32)


def test_dataset_errors(clips_root, tmp_path):
    with pytest.raises(GeneratorInputError, match="4k\\+1"):
        ClipDataset(clips_root, 8, RC, "normal_depth")
    with pytest.raises(GeneratorInputError, match="does not exist"):
        ClipDataset(tmp_path / "missing", 9, RC, "normal_depth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeneratorInputError, match="empty"):
        ClipDataset(tmp_path / "empty", 9, RC, "normal_depth")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(GeneratorInputError, match="no clips"):
        ClipDataset(tmp_path / "junk", 9, RC, "normal_depth")
    with pytest.raises(GeneratorInputError, match=r"shorter than num_frames=17: .*a \(14 frames\)"):
        ClipDataset(clips_root, 17, RC, "normal_depth")
    with pytest.raises(GeneratorInputError, match="unknown condition"):
        ClipDataset(clips_root, 9, RC, "depth")


# ----------------------------------------------------------------------------------------------------------
# load_condition


@pytest.fixture(scope="module")
def small_rep_and_render(body, head, tmp_path_factory):
    """A 5-frame rep (no source video) and its `headrep render` output."""
    from headrep.commands.main import main

    root = tmp_path_factory.mktemp("grender")
    d = make_synthetic_rep(body, head, T=5, seed=11, resolution=64, image_size=(H, W)).save(root / "r.rep")
    assert main(["render", str(d), "-o", str(root / "renders"), "--device", "cpu"]) == 0
    return d, root / "renders"


def test_load_condition_render_dir_agrees_with_rep(small_rep_and_render, capsys):
    d, renders = small_rep_and_render
    a = load_condition(renders, "normal_depth", 5, 64).numpy()
    b = load_condition(d, "normal_depth", 5, 64).numpy()
    assert a.shape == b.shape == (4, 5, 64, 64)
    mask = np.load(renders / "depth.npz")["mask"] > 0.999
    na, nb = np.moveaxis(a[:3], 0, -1)[mask], np.moveaxis(b[:3], 0, -1)[mask]
    # normal.mp4 is H.264 yuv420p: at 64x64 the chroma subsampling costs ~10 grey levels on average
    err = np.abs(na - nb).mean()
    assert err < 0.1
    cos = (na / np.linalg.norm(na, axis=1, keepdims=True) * nb).sum(1)
    assert cos.mean() > 0.97
    other = np.moveaxis(b[:3, [1, 2, 3, 4, 0]], 0, -1)[mask]                          # the wrong frames
    assert np.abs(na - other).mean() > 1.5 * err
    assert np.abs(a[3] - b[3]).max() < 1e-5                                           # lossless depth
    # resolution mismatch: resized, with one note
    capsys.readouterr()
    c = load_condition(renders, "normal_depth", 5, 32)
    assert c.shape == (4, 5, 32, 32)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resized to 32x32" in err
    # all frames from start 1 (4 left): trimmed to 4k+1 = 1, with a note
    assert load_condition(renders, "normal_depth", None, 64, start=1).shape == (4, 1, 64, 64)
    assert "4k+1" in capsys.readouterr().err
    assert load_condition(d, "landmarks", None, 40).shape == (3, 5, 40, 40)


def test_load_condition_errors(small_rep_and_render, tmp_path):
    d, renders = small_rep_and_render
    with pytest.raises(GeneratorInputError, match="has 5 frames"):
        load_condition(renders, "normal_depth", 9, 64)
    with pytest.raises(GeneratorInputError, match="has 5 frames"):
        load_condition(d, "normal_depth", 5, 64, start=1)
    with pytest.raises(GeneratorInputError, match="HeadRep itself"):
        load_condition(renders, "smplx_normal_depth", 5, 64)
    with pytest.raises(GeneratorInputError, match="4k\\+1"):
        load_condition(d, "normal_depth", 4, 64)
    with pytest.raises(GeneratorInputError, match="does not exist"):
        load_condition(tmp_path / "nope", "normal_depth", 5, 64)
    with pytest.raises(GeneratorInputError, match="neither"):
        load_condition(tmp_path, "normal_depth", 5, 64)


# ----------------------------------------------------------------------------------------------------------
# prepare errors


def test_prepare_refuses_a_video_that_is_not_the_source(rep, rep_dir, source, clip, tmp_path):
    small = write_video(tmp_path / "small.mp4", [np.zeros((120, 160, 3), np.uint8)] * (T + 2), fps=25)
    with pytest.raises(GeneratorInputError, match="160x120 .*320x240"):
        prepare_clip(small, rep_dir, tmp_path / "x")
    short = write_video(tmp_path / "short.mp4", [_pattern(i) for i in range(6)], fps=25)
    with pytest.raises(GeneratorInputError, match="has 6 frames"):
        prepare_clip(short, rep, tmp_path / "x")
    other_fps = write_video(tmp_path / "fps.mp4", [_pattern(i) for i in range(T + 2)], fps=30)
    with pytest.raises(GeneratorInputError, match="fps"):
        prepare_clip(other_fps, rep, tmp_path / "x")
    with pytest.raises(GeneratorInputError, match="does not exist"):
        prepare_clip(tmp_path / "none.mp4", rep, tmp_path / "x")
    with pytest.raises(GeneratorInputError, match="does not exist"):
        prepare_clip(source, tmp_path / "none.rep", tmp_path / "x")
    with pytest.raises(GeneratorInputError, match="out of range"):
        prepare_clip(source, rep, tmp_path / "x", reference=T)
    with pytest.raises(GeneratorInputError, match="not empty"):
        prepare_clip(source, rep, clip)
    assert not (tmp_path / "x").exists()


def test_prepare_reference_index(body, head, tmp_path):
    from PIL import Image

    vid = write_video(tmp_path / "v.mp4", [_pattern(i) for i in range(5)], fps=25)
    rep = make_synthetic_rep(body, head, T=5, seed=5, resolution=RC, image_size=(H, W), invalid=(0,))
    c = prepare_clip(vid, rep, tmp_path / "c", resolution=32)              # an in-memory HeadRep
    meta = json.loads((c / "clip.json").read_text())
    assert meta["reference"]["position"] == 1                               # "first" = the first valid frame
    c2 = prepare_clip(vid, rep, tmp_path / "c2", resolution=32, reference=3)
    assert json.loads((c2 / "clip.json").read_text())["reference"] == {"position": 3, "frame_index": 3}
    ref = np.asarray(Image.open(c2 / "reference.png").convert("RGB"))
    assert np.array_equal(ref, np.load(c2 / "frames.npy")[3])
    c3 = prepare_clip(vid, rep, c2, resolution=32, reference=-1, overwrite=True)
    assert json.loads((c3 / "clip.json").read_text())["reference"]["position"] == 4


# ----------------------------------------------------------------------------------------------------------
# load_reference


def test_load_reference_errors(tmp_path):
    yy, xx = np.mgrid[0:200, 0:300]
    grad = np.stack([xx * 255 // 300, yy * 255 // 200, np.full_like(xx, 128)], -1).astype(np.uint8)
    p = write_png(tmp_path / "gradient.png", grad)
    with pytest.raises(GeneratorInputError, match="no face found in .*gradient.png"):
        load_reference(p, 64)
    r = load_reference(p, 64, require_face=False)                # centred square crop
    assert r.shape == (3, 64, 64) and r.dtype == torch.float32 and r.min() >= -1 and r.max() <= 1
    assert r[2].mean().item() == pytest.approx(128 / 127.5 - 1, abs=0.01)
    with pytest.raises(GeneratorInputError, match="does not exist"):
        load_reference(tmp_path / "missing.png", 64)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(GeneratorInputError, match="cannot read"):
        load_reference(bad, 64)


def test_load_reference_real_face(tmp_path):
    from headrep.fitting.landmarks import MediaPipeDetector
    from headrep.samples import sample_path

    try:
        video = sample_path("WolfgangLanger_Pexels.mp4")
    except HeadrepError as exc:
        pytest.skip(f"sample video unavailable (offline?): {exc}")
    frame = next(f for i, f in read_video(video, start=10, stop=11))
    p = write_png(tmp_path / "face.png", frame)
    R = 128
    ref = load_reference(p, R)
    assert ref.shape == (3, R, R) and ref.min() >= -1 and ref.max() <= 1
    crop = ((ref.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    with MediaPipeDetector(video=False) as det:
        faces = det.detect(crop)
    assert len(faces) == 1
    xy = faces[0].points[:, :2]
    # framed as the fit frames: the face fills ~1/1.7 of the crop and sits near its centre
    assert R / 2.0 < np.ptp(xy[:, 1]) < R / 1.4 or R / 2.0 < np.ptp(xy[:, 0]) < R / 1.4
    centre = (xy.min(0) + xy.max(0)) / 2
    assert np.abs(centre - R / 2).max() < 0.15 * R
