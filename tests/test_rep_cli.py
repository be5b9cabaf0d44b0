"""`headrep render`, `headrep export`, `headrep info` on a synthetic HeadRep with a short real source video."""

import json
import subprocess
import sys

import numpy as np
import pytest

from headrep.commands.main import main
from headrep.errors import HeadrepError
from headrep.model.head import DenseHead
from headrep.io import read_video, write_video
from headrep.rep import HeadRep
from headrep.fitting.synthetic import make_synthetic_rep
from headrep.rep.outputs import parse_positions

T, R, H, W = 5, 64, 240, 320


@pytest.fixture(scope="module")
def head(body):
    return DenseHead(body, levels=1)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 5-frame 320x240 video with a smooth colour pattern that changes per frame."""
    yy, xx = np.mgrid[0:H, 0:W]
    frames = [np.stack([xx * 255 // W, yy * 255 // H, np.full_like(xx, 60 + 30 * t)], -1).astype(np.uint8)
              for t in range(T)]
    return write_video(tmp_path_factory.mktemp("src") / "clip.mp4", frames, fps=25)


@pytest.fixture(scope="module")
def rep_dir(body, head, source, tmp_path_factory):
    rep = make_synthetic_rep(body, head, T=T, seed=1, resolution=R, image_size=(H, W), source_path=source,
                             invalid=(2,))
    return rep.save(tmp_path_factory.mktemp("reps") / "clip.rep")


@pytest.fixture(scope="module")
def rendered(rep_dir):
    assert main(["render", str(rep_dir), "--device", "cpu"]) == 0
    return rep_dir / "renders"


def _frames(path):
    return [f for _, f in read_video(path)]


def _raw_crops(rep, source):
    """The input crops computed by hand from the box formula: crop_xy = (xy - (x0, y0)) * R / side."""
    import cv2

    out = []
    for t, (_, frame) in enumerate(read_video(source)):
        x0, y0, side = rep.boxes[t]
        s = R / side
        M = np.array([[s, 0, -x0 * s], [0, s, -y0 * s]])
        out.append(cv2.warpAffine(frame, M, (R, R), flags=cv2.INTER_LINEAR))
    return out


def test_render_writes_videos_and_lossless_depth(rendered, rep_dir, source):
    rep = HeadRep.load(rep_dir)
    for name in ("normal.mp4", "depth.mp4", "overlay.mp4"):
        frames = _frames(rendered / name)
        assert len(frames) == T, name
        assert all(f.shape == (R, R, 3) for f in frames), name
    z = np.load(rendered / "depth.npz")
    assert z["depth"].shape == (T, R, R) and z["depth"].dtype == np.float32
    assert z["mask"].shape == (T, R, R)
    assert z["frame_indices"].tolist() == rep.frames.tolist()
    for t in range(T):
        m = rep.render(t)
        assert np.allclose(z["depth"][t], m["depth"].numpy().astype(np.float32), rtol=1e-6, atol=1e-7)
        assert np.allclose(z["mask"][t], m["mask"].numpy(), atol=1e-6)
    info = json.loads((rendered / "render.json").read_text())
    assert info["standin"] is True and info["source_used"] is True and info["frames"] == T
    # depth.mp4 uses one range: a pixel's grey level follows its depth across frames
    near, far = info["depth_range_m"]
    assert 0.4 < near < far < 2.0
    # normals: (n+1)/2, so a face toward the camera (n_z < 0) has a low blue channel in the middle of the face
    n = _frames(rendered / "normal.mp4")[0]
    cover = z["mask"][0] > 0.99
    assert n[..., 2][cover].mean() < 110 and n[..., 2][~cover].mean() < 10


def test_overlay_differs_from_the_input_crop_where_the_mesh_is(rendered, rep_dir, source):
    rep = HeadRep.load(rep_dir)
    raw = _raw_crops(rep, source)
    over = _frames(rendered / "overlay.mp4")
    mask = np.load(rendered / "depth.npz")["mask"]
    for t in range(T):
        diff = np.abs(over[t].astype(np.int16) - raw[t].astype(np.int16)).max(-1)
        inside = mask[t] > 0.999
        assert inside.sum() > 100
        assert np.median(diff[inside]) > 25, t
        # away from the mesh, the landmarks, the label and the invalid border the input shows through
        outside = mask[t] == 0
        outside[:16] = False
        outside[:, :4] = outside[:, -4:] = outside[-4:] = False
        assert np.median(diff[outside]) < 10, t
    # the invalid frame (position 2) carries a red border
    top = over[2][0:1, R // 4: 3 * R // 4].reshape(-1, 3).astype(int)
    assert (top[:, 0] > 180).all() and (top[:, 1] < 90).all()
    top_ok = over[1][0:1, R // 4: 3 * R // 4].reshape(-1, 3).astype(int)
    assert not ((top_ok[:, 0] > 180) & (top_ok[:, 1] < 90)).all()


def test_render_without_source_and_refusals(body, head, tmp_path, capsys):
    rep = make_synthetic_rep(body, head, T=2, seed=2, resolution=48, image_size=(H, W),
                             source_path=tmp_path / "gone.mp4")
    d = rep.save(tmp_path / "nosrc.rep")
    out = tmp_path / "r"
    assert main(["render", str(d), "-o", str(out), "--resolution", "40", "--device", "cpu"]) == 0
    assert "missing" in capsys.readouterr().err
    info = json.loads((out / "render.json").read_text())
    assert info["source_used"] is False and any("missing" in n for n in info["notes"])
    over = _frames(out / "overlay.mp4")
    mask = np.load(out / "depth.npz")["mask"]
    assert over[0].shape == (40, 40, 3)
    assert np.median(over[0][(mask[0] == 0)]) < 10  # black background (bar the label and dots)
    # a non-empty output folder is refused without --overwrite, accepted with it
    assert main(["render", str(d), "-o", str(out), "--device", "cpu"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["render", str(d), "-o", str(out), "--device", "cpu", "--overwrite"]) == 0
    assert len(_frames(out / "normal.mp4")) == 2


def test_export_ply_vertices(rep_dir, tmp_path):
    import trimesh

    rep = HeadRep.load(rep_dir)
    out = tmp_path / "meshes"
    assert main(["export", str(rep_dir), "--format", "ply", "-o", str(out)]) == 0
    plys = sorted(out.glob("frame_*.ply"))
    assert [p.name for p in plys] == [f"frame_{i:06d}.ply" for i in rep.frames]
    for t, p in enumerate(plys):
        m = trimesh.load(p, process=False)
        want = rep.mesh(t)
        assert m.vertices.shape == want.vertices.shape
        assert np.allclose(m.vertices, want.vertices, atol=1e-6)
        assert np.array_equal(m.faces, want.faces)
    listing = json.loads((out / "export.json").read_text())
    assert [f["position"] for f in listing["frames"]] == list(range(T))


def test_export_slice_space_neutral_obj(rep_dir, tmp_path):
    import trimesh

    rep = HeadRep.load(rep_dir)
    out = tmp_path / "m"
    assert main(["export", str(rep_dir), "--format", "obj", "--frames", "1:3", "--space", "model",
                 "--neutral", "-o", str(out)]) == 0
    objs = sorted(out.glob("frame_*.obj"))
    assert [p.name for p in objs] == ["frame_000001.obj", "frame_000002.obj"]
    m = trimesh.load(objs[0], process=False)
    assert np.allclose(m.vertices, rep.mesh(1, space="model").vertices, atol=1e-5)
    neutral = trimesh.load(out / "neutral.obj", process=False)
    assert np.allclose(neutral.vertices, rep.neutral_vertices().numpy(), atol=1e-5)
    out2 = tmp_path / "m2"
    assert main(["export", str(rep_dir), "--frames=-2:", "-o", str(out2)]) == 0
    assert sorted(p.name for p in out2.glob("*.ply")) == ["frame_000003.ply", "frame_000004.ply"]


def test_parse_positions():
    assert parse_positions("0:3", 5).tolist() == [0, 1, 2]
    assert parse_positions("3:", 5).tolist() == [3, 4]
    assert parse_positions(":-3", 5).tolist() == [0, 1]
    assert parse_positions("::2", 5).tolist() == [0, 2, 4]
    assert parse_positions("4", 5).tolist() == [4]
    assert parse_positions("-1", 5).tolist() == [4]
    assert parse_positions(None, 3).tolist() == [0, 1, 2]
    for bad in ("7:9", "a:b", "5", "1:2:0", "1:2:3:4"):
        with pytest.raises(HeadrepError):
            parse_positions(bad, 5)


def test_info_prints_standin_line(rep_dir, capsys):
    assert main(["info", str(rep_dir)]) == 0
    out = capsys.readouterr().out
    assert "STAND-IN (not SMPL-X)" in out
    assert "5 fitted, 4 valid" in out and "model check   OK" in out


@pytest.mark.parametrize("argv", [["info"], ["render"], ["export", "-o", "unused-out"]])
def test_bad_rep_path_exit_2(argv, tmp_path, capsys):
    missing = str(tmp_path / "no-such.rep")
    assert main([argv[0], missing, *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "unused-out").exists()


def test_bad_rep_path_subprocess_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "headrep", "info", str(tmp_path / "nope.rep")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "nope.rep does not exist" in proc.stderr


def test_render_help_teaches():
    with pytest.raises(SystemExit) as exc:
        main(["render", "--help"])
    assert exc.value.code == 0
    with pytest.raises(SystemExit):
        main(["export", "--help"])


def test_overlay_of_a_downscaled_source(body, head, tmp_path):
    """A source larger than the loaded frames (the fit downscaled it, scale 0.5) is resized back first."""
    import cv2

    yy, xx = np.mgrid[0:2 * H, 0:2 * W]
    big = [np.stack([(xx * 255) // (2 * W), (yy * 255) // (2 * H), np.full_like(xx, 90 + 60 * t)], -1)
           .astype(np.uint8) for t in range(2)]
    src = write_video(tmp_path / "big.mp4", big, fps=30)
    rep = make_synthetic_rep(body, head, T=2, seed=4, resolution=48, image_size=(H, W), source_path=src)
    rep.source["scale"] = 0.5
    d = rep.save(tmp_path / "big.rep")
    assert main(["render", str(d), "--device", "cpu"]) == 0
    over = _frames(d / "renders" / "overlay.mp4")
    mask = np.load(d / "renders" / "depth.npz")["mask"]
    for t, (_, frame) in enumerate(read_video(src)):
        loaded = cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA)
        x0, y0, side = rep.boxes[t]
        s = 48 / side
        raw = cv2.warpAffine(loaded, np.array([[s, 0, -x0 * s], [0, s, -y0 * s]]), (48, 48))
        outside = mask[t] == 0
        outside[:16] = False
        diff = np.abs(over[t].astype(np.int16) - raw.astype(np.int16)).max(-1)
        assert np.median(diff[outside]) < 10
