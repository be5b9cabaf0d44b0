"""HeadRep file format: round trip, geometry against an independent DenseHead forward, cameras, load errors,
atomic saves."""

import json

import numpy as np
import pytest
import torch

from headrep.errors import HeadrepError
from headrep.model.head import DenseHead
from headrep.rep import JSON_FILE, TENSOR_FILE, HeadRep, describe
from headrep.fitting.synthetic import make_synthetic_rep


@pytest.fixture(scope="module")
def head(body):
    return DenseHead(body, levels=1)


@pytest.fixture(scope="module")
def rep(body, head):
    return make_synthetic_rep(body, head, T=5, seed=3, resolution=96, invalid=(3,))


@pytest.fixture(scope="module")
def saved(rep, tmp_path_factory):
    path = tmp_path_factory.mktemp("reps") / "a.rep"
    rep.save(path)
    return path


def _rewrite_tensors(path, **changes):
    from safetensors.torch import load_file, save_file

    t = load_file(str(path / TENSOR_FILE))
    t.update(changes)
    save_file(t, str(path / TENSOR_FILE))


def _copy_rep(saved, dst):
    import shutil

    shutil.copytree(saved, dst)
    return dst


# --- round trip ---------------------------------------------------------------------------------------------


def test_save_load_round_trip(rep, saved):
    back = HeadRep.load(saved)
    assert set(back.tensors) == set(rep.tensors)
    for k, v in rep.tensors.items():
        assert back.tensors[k].dtype == v.dtype, k
        assert torch.equal(back.tensors[k].nan_to_num(-7.0), v.nan_to_num(-7.0)), k
    assert back.tensors["boxes"].dtype == torch.float64
    assert back.tensors["face_vertices"].dtype == torch.int64
    assert back.tensors["valid"].dtype == torch.uint8
    assert np.array_equal(back.face_vertices, np.nonzero(back.head.face_mask)[0])
    meta = json.loads((saved / JSON_FILE).read_text())
    assert meta == back.meta == rep.meta
    assert meta["format"] == "headrep.rep" and meta["version"] == 1 and meta["created"]
    assert set(meta["source"]) >= {"path", "kind", "fps", "image_size", "scale", "num_frames"}
    assert set(meta["model"]) >= {"model_path", "model_sha256", "standin", "model_name", "num_betas",
                                  "num_expression"}
    assert meta["model"]["standin"] is True and back.is_standin
    assert set(meta["topology"]) == {"levels", "hash", "num_dense", "num_face_vertices", "hair_hangs"}
    assert meta["topology"]["hash"] == back.head.topology.hash()
    assert {"seed", "stats"} <= set(meta["fit"])
    assert set(meta["versions"]) >= {"headrep", "torch", "smplx", "numpy", "python"}
    assert meta["frames"] == {"count": 5, "valid": 4}
    assert meta["resolution"] == 96
    assert back.num_frames == 5 and len(back) == 5
    assert back.valid.tolist() == [True, True, True, False, True]
    assert back.frames.tolist() == [0, 1, 2, 3, 4]
    assert back.fps == pytest.approx(25.0)
    assert torch.isnan(back.landmarks[3]).all() and torch.isfinite(back.landmarks[0]).all()


def test_vertices_equal_an_independent_dense_forward(rep, head):
    ts = [0, 2, 4]
    t = rep.tensors
    i = torch.as_tensor(ts)
    dyn = torch.zeros(len(ts), head.num_vertices, 3, dtype=t["dynamic_offsets"].dtype)
    dyn[:, torch.as_tensor(np.nonzero(head.face_mask)[0])] = t["dynamic_offsets"][i]
    with torch.no_grad():
        want = head(t["betas"][None], t["expression"][i], t["pose"][i], transl=t["transl"][i],
                    static_offsets=t["static_offsets"], dynamic_offsets=dyn).vertices
    model = rep.vertices(ts, space="model")
    assert torch.allclose(model, want, atol=1e-6)
    cam = rep.vertices(ts, space="camera")
    assert torch.equal(cam, model * torch.tensor([1.0, -1.0, -1.0]))
    assert torch.allclose(rep.vertices(ts, space="model", batch=1), model, atol=1e-6)
    # dense dynamic offsets: zero off the face, the stored values on it
    dd = rep.dynamic_offsets_dense(ts)
    assert torch.equal(dd, dyn)
    assert (dd[:, ~torch.as_tensor(head.face_mask)] == 0).all()
    # the head is in front of the camera, about 0.8 m away
    assert 0.6 < float(cam[..., 2].median()) < 1.0
    mesh = rep.mesh(2)
    assert np.allclose(mesh.vertices, cam[1].numpy(), atol=1e-6)  # batch of 1 vs 3: float32 rounding
    assert np.array_equal(mesh.faces, head.faces)
    with pytest.raises(ValueError):
        rep.vertices([0], space="world")


def test_neutral_vertices(rep, head):
    p = rep.body.zero_params(1)
    with torch.no_grad():
        want = head(rep.tensors["betas"][None], p["expression"], p["pose"],
                    static_offsets=rep.tensors["static_offsets"]).vertices[0]
    assert torch.allclose(rep.neutral_vertices(), want, atol=1e-7)
    assert rep.neutral_mesh().vertices.shape == (head.num_vertices, 3)


def test_crop_camera_matches_the_box_mapping(rep):
    full = rep.frame_camera()
    assert (full.width, full.height) == (640, 480)
    pts = torch.tensor([[0.03, -0.02, 0.8], [-0.05, 0.07, 0.75], [0.0, 0.0, 0.9]], dtype=torch.float64)
    uv_full, _ = full.project(pts)
    for t in range(rep.num_frames):
        for R in (None, 200):
            cam = rep.crop_camera(t, R)
            R_ = R or rep.resolution
            x0, y0, side = rep.boxes[t]
            s = R_ / side
            want = (uv_full.numpy() - np.array([x0, y0])) * s  # the box formula, by hand
            got, _ = cam.project(pts)
            assert np.abs(got.numpy() - want).max() < 1e-6
            assert (cam.width, cam.height) == (R_, R_)
            assert cam.fx == cam.fy == pytest.approx(rep.focal * s)
            # the 2x3 warp used on video frames maps full-frame pixels the same way
            M = rep.crop_transform(t, R_)
            mapped = uv_full.numpy() @ M[:, :2].T + M[:, 2]
            assert np.abs(mapped - want).max() < 1e-9


def test_render_in_the_crop_camera(rep):
    m = rep.render(1)
    R = rep.resolution
    assert m["normal"].shape == (R, R, 3) and m["depth"].shape == (R, R) and m["mask"].shape == (R, R)
    cover = m["mask"] > 0.99
    assert 0.1 < float(cover.float().mean()) < 0.9  # the head is framed in the crop
    assert 0.5 < float(m["depth"][cover].median()) < 1.1
    # the model's landmarks project inside the crop
    uv, _ = m["camera"].project(rep.landmarks68([1])[0])
    assert (uv > 0).all() and (uv < R).all()


def test_synthetic_rep_is_reproducible(body, head, rep):
    again = make_synthetic_rep(body, head, T=5, seed=3, resolution=96, invalid=(3,))
    for k, v in rep.tensors.items():
        assert torch.equal(again.tensors[k].nan_to_num(0), v.nan_to_num(0)), k


def test_summary_without_model(saved):
    r = HeadRep.load(saved, build=False)
    assert r.body is None
    from headrep.rep import describe
    text = describe(r)
    assert "STAND-IN (not SMPL-X)" in text and "5 fitted, 4 valid" in text and "rep.safetensors" in text
    with pytest.raises(HeadrepError, match="without its model"):
        r.vertices([0])


# --- load errors --------------------------------------------------------------------------------------------


def test_load_missing_folder_and_files(saved, tmp_path):
    with pytest.raises(HeadrepError, match="does not exist"):
        HeadRep.load(tmp_path / "nope.rep")
    (tmp_path / "file").write_text("x")
    with pytest.raises(HeadrepError, match="not a folder"):
        HeadRep.load(tmp_path / "file")
    d = _copy_rep(saved, tmp_path / "nojson.rep")
    (d / JSON_FILE).unlink()
    with pytest.raises(HeadrepError, match=r"nojson\.rep.*rep\.json is missing"):
        HeadRep.load(d)
    d = _copy_rep(saved, tmp_path / "notensors.rep")
    (d / TENSOR_FILE).unlink()
    with pytest.raises(HeadrepError, match="rep.safetensors is missing"):
        HeadRep.load(d)
    d = _copy_rep(saved, tmp_path / "badjson.rep")
    (d / JSON_FILE).write_text("{not json")
    with pytest.raises(HeadrepError, match="cannot be read as JSON"):
        HeadRep.load(d)
    d = _copy_rep(saved, tmp_path / "badst.rep")
    (d / TENSOR_FILE).write_bytes(b"garbage")
    with pytest.raises(HeadrepError, match="rep.safetensors cannot be read"):
        HeadRep.load(d)


@pytest.mark.parametrize("field, value, message", [
    ("format", "something.else", "not a HeadRep"),
    ("version", 2, "version 2 is not supported"),
])
def test_load_wrong_format_or_version(saved, tmp_path, field, value, message):
    d = _copy_rep(saved, tmp_path / "x.rep")
    meta = json.loads((d / JSON_FILE).read_text())
    meta[field] = value
    (d / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(HeadrepError, match=message):
        HeadRep.load(d)


def test_load_tensor_with_wrong_shape(saved, tmp_path):
    d = _copy_rep(saved, tmp_path / "shape.rep")
    _rewrite_tensors(d, expression=torch.zeros(4, 16))
    with pytest.raises(HeadrepError, match=r"shape\.rep.*'expression' has shape \[4, 16\], expected \[5, 16\]"):
        HeadRep.load(d)
    d = _copy_rep(saved, tmp_path / "dyn.rep")
    _rewrite_tensors(d, dynamic_offsets=torch.zeros(5, 10, 3))
    with pytest.raises(HeadrepError, match="'dynamic_offsets' has shape"):
        HeadRep.load(d)


def test_load_missing_tensor_and_nan(saved, tmp_path):
    from safetensors.torch import load_file, save_file

    d = _copy_rep(saved, tmp_path / "missing.rep")
    t = load_file(str(d / TENSOR_FILE))
    del t["transl"]
    save_file(t, str(d / TENSOR_FILE))
    with pytest.raises(HeadrepError, match="missing tensor.*transl"):
        HeadRep.load(d)
    d = _copy_rep(saved, tmp_path / "nan.rep")
    pose = load_file(str(d / TENSOR_FILE))["pose"].clone()
    pose[2, 15, 0] = float("nan")
    _rewrite_tensors(d, pose=pose)
    with pytest.raises(HeadrepError, match="'pose' holds NaN"):
        HeadRep.load(d)


def test_load_json_count_mismatch(saved, tmp_path):
    d = _copy_rep(saved, tmp_path / "count.rep")
    meta = json.loads((d / JSON_FILE).read_text())
    meta["frames"]["count"] = 6
    (d / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(HeadrepError, match="expected \\[6"):
        HeadRep.load(d)


def test_load_with_a_model_file_that_differs(saved, standin_file, tmp_path):
    data = dict(np.load(standin_file, allow_pickle=False))
    data["v_template"] = data["v_template"].copy()
    data["v_template"][0, 0] += 1e-3
    bad = tmp_path / "changed.npz"
    np.savez(bad, **data)
    with pytest.raises(HeadrepError, match=r"was fitted with model .*changed\.npz differs.*pass --model"):
        HeadRep.load(saved, model=bad)
    with pytest.raises(HeadrepError, match="not there"):
        HeadRep.load(saved, model=tmp_path / "absent.npz")
    # the original file passed explicitly is fine
    assert HeadRep.load(saved, model=standin_file).num_frames == 5


def test_load_recorded_model_moved(saved, tmp_path):
    """A non-stand-in rep whose model file is gone says so and asks for --model."""
    d = _copy_rep(saved, tmp_path / "moved.rep")
    meta = json.loads((d / JSON_FILE).read_text())
    meta["model"]["standin"] = False
    meta["model"]["model_path"] = str(tmp_path / "SMPLX_NEUTRAL.npz")
    (d / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(HeadrepError, match="SMPLX_NEUTRAL.npz.*pass --model"):
        HeadRep.load(d)


def test_load_topology_mismatch(saved, tmp_path):
    d = _copy_rep(saved, tmp_path / "topo.rep")
    meta = json.loads((d / JSON_FILE).read_text())
    meta["topology"]["hash"] = "0" * 64
    (d / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(HeadrepError, match="dense topology"):
        HeadRep.load(d)


def test_hanging_hair_is_recorded_and_a_rep_from_before_poses_as_it_was_made(body, head, rep, tmp_path):
    """A rep made with hanging hair records it and loads posing the same vertices; the same files without the
    record (a rep written before hanging hair) pose D_static with the head everywhere, as the head without
    the flag does (vertices against a direct computation with each head)."""
    from headrep.model import DenseHead

    hanging = DenseHead(body, levels=head.levels, hair_hangs=True)
    t = dict(rep.tensors)
    t["static_offsets"] = 0.01 * torch.ones_like(t["static_offsets"])
    made = HeadRep.create(body, hanging, t, rep.source, 96, {})
    path = made.save(tmp_path / "hangs.rep")
    back = HeadRep.load(path)
    assert back.meta["topology"]["hair_hangs"] is True and back.head.hair_hangs
    assert torch.allclose(back.vertices(), made.vertices(), atol=1e-7)
    meta = json.loads((path / JSON_FILE).read_text())
    del meta["topology"]["hair_hangs"]
    (path / JSON_FILE).write_text(json.dumps(meta))
    old = HeadRep.load(path)
    assert not old.head.hair_hangs
    want = HeadRep.create(body, head, t, rep.source, 96, {}).vertices()
    assert torch.allclose(old.vertices(), want, atol=1e-7)
    assert (old.vertices() - back.vertices()).abs().max() > 1e-3  # the frames' head turns: hanging differs


# --- create / save ------------------------------------------------------------------------------------------


def test_create_rejects_inconsistent_tensors(body, head, rep):
    t = {k: v for k, v in rep.tensors.items()}
    t["transl"] = t["transl"][:4]
    with pytest.raises(HeadrepError, match="'transl' has shape"):
        HeadRep.create(body, head, t, rep.source, 96, {})
    t = {k: v for k, v in rep.tensors.items() if k not in ("static_offsets", "dynamic_offsets", "valid",
                                                             "frame_indices", "face_vertices", "landmarks")}
    r = HeadRep.create(body, head, t, {"path": "x.mp4", "fps": 30}, 96, {"lr": 0.01})
    assert r.valid.all() and (r.tensors["static_offsets"] == 0).all()
    assert r.tensors["dynamic_offsets"].shape == (5, int(head.face_mask.sum()), 3)
    assert r.meta["fit"] == {"lr": 0.01, "seed": None, "stats": {}}
    # dense dynamic offsets are stored compactly
    dense = rep.dynamic_offsets_dense(None)
    r = HeadRep.create(body, head, {**t, "dynamic_offsets": dense}, {"path": "x.mp4", "fps": 30}, 96, {})
    assert torch.equal(r.tensors["dynamic_offsets"], rep.tensors["dynamic_offsets"])
    with pytest.raises(HeadrepError, match="fps"):
        HeadRep.create(body, head, t, {"path": "x.mp4"}, 96, {})


def test_save_refuses_non_empty_target(rep, tmp_path):
    target = tmp_path / "busy.rep"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(HeadrepError, match="not empty"):
        rep.save(target)
    assert (target / "keep.txt").read_text() == "mine"
    rep.save(target, overwrite=True)
    assert not (target / "keep.txt").exists()
    assert HeadRep.load(target).num_frames == 5
    empty = tmp_path / "empty.rep"
    empty.mkdir()
    rep.save(empty)  # an empty existing folder is fine
    assert (empty / JSON_FILE).is_file()


def test_failed_save_leaves_nothing(rep, tmp_path, monkeypatch):
    import headrep.rep.format as rep_module

    def boom(path, meta):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rep_module, "_write_json", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        rep.save(tmp_path / "new.rep")
    assert list(tmp_path.iterdir()) == []
    # an existing rep survives a failed overwrite untouched
    monkeypatch.undo()
    rep.save(tmp_path / "old.rep")
    before = {p.name: p.read_bytes() for p in (tmp_path / "old.rep").iterdir()}
    monkeypatch.setattr(rep_module, "_write_json", boom)
    with pytest.raises(RuntimeError):
        rep.save(tmp_path / "old.rep", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.rep"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "old.rep").iterdir()} == before


def test_hair_swing_is_saved_and_poses_the_frames_and_needs_hanging_hair(body, head, rep, tmp_path):
    """A rep's hair_swing [T,3] round-trips and poses each frame as the head given that frame's swing (direct
    computation); a rep without it poses like a zero swing; a swing on a head whose hair does not hang is
    refused at create and at load."""
    from headrep.model import DenseHead

    hanging = DenseHead(body, levels=head.levels, hair_hangs=True)
    t = dict(rep.tensors)
    t["static_offsets"] = 0.01 * torch.ones_like(t["static_offsets"])
    T = t["pose"].shape[0]
    t["hair_swing"] = torch.linspace(-0.3, 0.3, T)[:, None] * torch.tensor([0.2, 0.3, 1.0])
    path = HeadRep.create(body, hanging, t, rep.source, 96, {}).save(tmp_path / "swing.rep")
    back = HeadRep.load(path)
    assert torch.allclose(back.tensors["hair_swing"], t["hair_swing"])
    deg = t["hair_swing"].norm(dim=-1).rad2deg()
    assert f"swings {float(deg.median()):.0f}° median, {float(deg.max()):.0f}° at most" in describe(back)
    with torch.no_grad():
        want = hanging(t["betas"][None], t["expression"], t["pose"], transl=t["transl"],
                       static_offsets=t["static_offsets"], dynamic_offsets=back.dynamic_offsets_dense(),
                       hair_swing=t["hair_swing"]).vertices
    assert torch.allclose(back.vertices(space="model"), want, atol=1e-6)
    still = dict(t)
    del still["hair_swing"]
    straight = HeadRep.create(body, hanging, still, rep.source, 96, {})
    assert (straight.vertices() - back.vertices()).abs().max() > 1e-3
    with torch.no_grad():
        zero = hanging(t["betas"][None], t["expression"], t["pose"], transl=t["transl"],
                       static_offsets=t["static_offsets"], dynamic_offsets=back.dynamic_offsets_dense(),
                       hair_swing=torch.zeros(T, 3)).vertices
    assert torch.allclose(straight.vertices(space="model"), zero, atol=1e-6)
    with pytest.raises(HeadrepError, match="hair_swing"):
        HeadRep.create(body, head, t, rep.source, 96, {})
    meta = json.loads((path / JSON_FILE).read_text())
    meta["topology"]["hair_hangs"] = False
    (path / JSON_FILE).write_text(json.dumps(meta))
    with pytest.raises(HeadrepError, match="hair_swing"):
        HeadRep.load(path)
