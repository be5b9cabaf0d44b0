"""Body model loading: our forward against smplx's own, the subset S and face region, and bad model files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headrep.model.body import BodyModel, validate_model_file
from headrep.errors import ModelFileError


def _smplx_forward(body, p):
    B = p["pose"].shape[0]
    pose = p["pose"]
    return body.smplx(betas=p["betas"], expression=p["expression"], global_orient=pose[:, 0],
                      body_pose=pose[:, 1:22].reshape(B, -1), jaw_pose=pose[:, 22], leye_pose=pose[:, 23],
                      reye_pose=pose[:, 24], left_hand_pose=pose[:, 25:40].reshape(B, -1),
                      right_hand_pose=pose[:, 40:55].reshape(B, -1), transl=p["transl"])


def test_forward_matches_smplx(body):
    torch.manual_seed(0)
    p = body.zero_params(3)
    p["betas"].normal_()
    p["expression"].normal_()
    p["pose"][:, [0, 12, 15, 22]] = 0.2 * torch.randn(3, 4, 3)
    p["transl"].normal_()
    ours = body(p["betas"], p["expression"], p["pose"], p["transl"])
    ref = _smplx_forward(body, p)
    assert torch.allclose(ours.vertices, ref.vertices, atol=1e-6)
    assert torch.allclose(ours.joints, ref.joints[:, :55], atol=1e-6)
    # smplx appends 51 static then 17 contour landmarks; ours are in iBUG order (contour first)
    ref_lmk = torch.cat([ref.joints[:, -17:], ref.joints[:, -68:-17]], 1)
    assert torch.allclose(ours.landmarks68, ref_lmk, atol=1e-6)


def test_pose_correctives_match_smplx_for_all_vertices_and_subsets(tmp_path, standin_file):
    """Our models have none (their product is skipped); a file that has them (SMPL-X's) must get them, for
    the whole mesh and for vertex subsets, also when the subset changes between calls."""
    arrays = dict(np.load(standin_file))
    rng = np.random.default_rng(0)
    arrays["posedirs"] = (1e-3 * rng.standard_normal(arrays["posedirs"].shape)).astype(arrays["posedirs"].dtype)
    path = tmp_path / "with_posedirs.npz"
    np.savez(path, **arrays)
    body = BodyModel(path)
    torch.manual_seed(1)
    p = body.zero_params(2)
    p["betas"].normal_()
    p["pose"][:, [0, 12, 15, 22]] = 0.3 * torch.randn(2, 4, 3)
    ref = _smplx_forward(body, p).vertices
    ours = body(p["betas"], p["expression"], p["pose"], p["transl"]).vertices
    assert torch.allclose(ours, ref, atol=1e-6)
    plain = BodyModel(standin_file)(p["betas"], p["expression"], p["pose"], p["transl"]).vertices
    assert float((ref - plain).abs().max()) > 1e-4  # the correctives do move the mesh
    for ids in (torch.arange(0, 400, 3), torch.arange(0, 400, 3), torch.arange(100, 900, 7)):
        sub = body(p["betas"], p["expression"], p["pose"], p["transl"], vertex_ids=ids).vertices
        assert torch.allclose(sub, ref[:, ids], atol=1e-6)


def test_records_standin_provenance(body):
    prov = body.provenance()
    assert prov["standin"] is True and "NOT SMPL-X" in prov["model_name"]
    assert len(prov["model_sha256"]) == 64


def test_subset_and_face_region(body):
    v = body.smplx.v_template.numpy()
    S = set(body.subset.tolist())
    assert set(range(468)) <= S  # the whole MediaPipe face
    assert not (v[body.subset, 1] < 0.29).any()  # nothing below spine3
    assert body.face_mask[:468].all()  # the face region holds every MediaPipe vertex
    assert not body.face_mask[v[:, 2] < -0.01].any()  # and nothing behind the ears (z = 0 +- 1 cm)
    assert body.face_mask.sum() < 3 * 468


def _write(path, arrays):
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def good_arrays(standin_file):
    return dict(np.load(standin_file))


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("text", "not an .npz archive"),
    ("folder", "is a folder"),
    ("pkl", ".pkl model files are not supported"),
    ("flame", "looks like a FLAME model"),
    ("no_weights", "missing keys weights"),
    ("bad_shape", "unexpected shapes"),
    ("nan", "NaN"),
    ("bad_faces", "face indices out of range"),
    ("truncated", "cannot be read|not an .npz archive"),
])
def test_bad_model_files_give_clear_errors(tmp_path, good_arrays, standin_file, case, message):
    p = tmp_path / "model.npz"
    a = dict(good_arrays)
    if case == "missing":
        p = tmp_path / "nope.npz"
    elif case == "text":
        p.write_text("not a model")
    elif case == "folder":
        p = tmp_path
    elif case == "pkl":
        p = tmp_path / "SMPLX_NEUTRAL.pkl"
        p.write_bytes(b"\x80\x04")
    elif case == "flame":
        _write(p, {"v_template": np.zeros((5023, 3)), "f": np.zeros((9976, 3), int)})
    elif case == "no_weights":
        a.pop("weights")
        _write(p, a)
    elif case == "bad_shape":
        a["J_regressor"] = a["J_regressor"][:50]
        _write(p, a)
    elif case == "nan":
        a["v_template"] = a["v_template"].copy()
        a["v_template"][3, 1] = np.nan
        _write(p, a)
    elif case == "bad_faces":
        a["f"] = a["f"].copy()
        a["f"][0, 0] = len(a["v_template"]) + 5
        _write(p, a)
    elif case == "truncated":
        data = standin_file.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=message):
        validate_model_file(p)
    with pytest.raises(ModelFileError):
        BodyModel(p)


def test_cli_reports_bad_model_without_traceback_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("hello")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "headrep", "render-model", "--model", str(bad), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "not an .npz archive" in r.stderr
    assert not out.exists()


# --------------------------------------------------------------------------------------------------------------
# which model None means (the suite itself runs with HEADREP_DEFAULT_MODEL=standin, see conftest.py)


@pytest.fixture
def spies(monkeypatch, tmp_path):
    """The two own models' path functions replaced by spies (nothing is built): open's returns a marker file,
    the stand-in's records the call."""
    from headrep.model import open_model, standin

    calls = []
    marker = tmp_path / "OPEN_MARKER.npz"
    marker.write_bytes(b"")
    monkeypatch.setattr(open_model, "open_model_path", lambda: calls.append("open") or marker)
    monkeypatch.setattr(standin, "standin_path", lambda: calls.append("standin") or tmp_path / "STANDIN.npz")
    return calls, marker


def test_default_model_is_the_open_model_when_the_variable_is_unset(monkeypatch, spies):
    from headrep.model.body import DEFAULT_MODEL_ENV, default_model, resolve_model_path

    calls, marker = spies
    monkeypatch.delenv(DEFAULT_MODEL_ENV, raising=False)
    assert default_model() == "open"
    assert resolve_model_path(None) == marker and calls == ["open"]
    monkeypatch.setenv(DEFAULT_MODEL_ENV, "  ")                     # empty counts as unset
    assert resolve_model_path(None) == marker
    # the names and files still mean themselves whatever the default
    assert resolve_model_path("standin").name == "STANDIN.npz" and calls[-1] == "standin"
    assert resolve_model_path("some/file.npz") == Path("some/file.npz")


def test_default_model_variable(monkeypatch, spies, tmp_path):
    from headrep.model.body import DEFAULT_MODEL_ENV, resolve_model_path

    calls, marker = spies
    monkeypatch.setenv(DEFAULT_MODEL_ENV, "standin")
    assert resolve_model_path(None).name == "STANDIN.npz" and calls == ["standin"]
    monkeypatch.setenv(DEFAULT_MODEL_ENV, "open")
    assert resolve_model_path(None) == marker
    own = tmp_path / "mine.npz"
    own.write_bytes(b"")
    monkeypatch.setenv(DEFAULT_MODEL_ENV, str(own))
    assert resolve_model_path(None) == own
    monkeypatch.setenv(DEFAULT_MODEL_ENV, "smplx-please")
    with pytest.raises(ModelFileError, match="HEADREP_DEFAULT_MODEL='smplx-please'.*standin nor open"):
        resolve_model_path(None)


def test_commands_without_model_use_the_default(monkeypatch, tmp_path, capsys):
    """`headrep fit`, `headrep render-model` and `headrep dataset fit` without --model resolve the default model
    (the open one when the variable is unset); --model standin the stand-in. The open model's path function is
    stopped with an error, so nothing is built or fitted."""
    from headrep.commands.main import main
    from headrep.errors import HeadrepError
    from headrep.model import open_model

    def stop():
        raise HeadrepError("OPEN MODEL REQUESTED")

    monkeypatch.delenv("HEADREP_DEFAULT_MODEL", raising=False)
    monkeypatch.setattr(open_model, "open_model_path", stop)
    img = tmp_path / "face.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    vid = tmp_path / "v.mp4"
    vid.write_bytes(b"not a video")
    for argv in (["fit", str(img), "-o", str(tmp_path / "fit")],
                 ["render-model", "-o", str(tmp_path / "rm")],
                 ["dataset", "fit", str(vid), "-o", str(tmp_path / "ds")]):
        assert main(argv) == 2
        assert "OPEN MODEL REQUESTED" in capsys.readouterr().err, argv
    # an explicit --model standin never asks for the open model (this one fails later: no face in the image)
    assert main(["fit", str(img), "-o", str(tmp_path / "fit2"), "--model", "standin"]) == 2
    err = capsys.readouterr().err
    assert "OPEN MODEL REQUESTED" not in err and "STAND-IN" in err


def test_dataset_resume_keeps_the_recorded_model():
    from headrep.commands.dataset import dataset_model

    assert dataset_model(None, None) is None                          # a new dataset: the default model
    assert dataset_model(None, {"model": "open"}) == "open"
    assert dataset_model(None, {"model": None}) == "standin"          # recorded before open became the default
    assert dataset_model(Path("m.npz"), {"model": None}) == Path("m.npz")
