"""headrep.rep.outputs' drawing shortcuts give exactly the pixels of the plain full-image formulas: dots drawn
from vectorised selection / rounding, the overlay blended where the mesh covers only, and the shaded / residual
frames of a whole batch shaded where triangles were drawn only."""

import numpy as np
import pytest
import torch

from headrep.rep import outputs


def _dots_one_by_one(img, pts, color, radius):
    """The definition: every finite point within ``radius`` of the image, rounded to 1/16 pixel."""
    import cv2

    H, W = img.shape[:2]
    for u, v in np.asarray(pts, dtype=np.float64)[:, :2]:
        if not (np.isfinite(u) and np.isfinite(v)) or not (-radius <= u < W + radius and -radius <= v < H + radius):
            continue
        cv2.circle(img, (int(round(u * 16)), int(round(v * 16))), radius * 16, color, -1, cv2.LINE_AA, shift=4)


def test_draw_points_matches_drawing_point_by_point():
    rng = np.random.default_rng(3)
    pts = rng.uniform(-6, 70, (300, 2))
    pts[:40] = np.round(pts[:40] * 32) / 32  # exact halves of 1/16 pixel: round-half-even either way
    pts[40:45, 0] = np.nan
    pts[45:50, 1] = np.inf
    pts[50:55] = [[-2.0, 10.0], [65.99, 3.0], [66.0, 3.0], [10.0, -2.0], [10.0, -2.01]]  # on the edges, r = 2
    for radius in (1, 2):
        a = np.zeros((64, 64, 3), np.uint8)
        b = a.copy()
        outputs.draw_points(a, pts, (255, 0, 0), radius)
        _dots_one_by_one(b, pts, (255, 0, 0), radius)
        assert a.any() and np.array_equal(a, b)


@pytest.fixture(scope="module")
def batch(body):
    """A 4-frame synthetic rep with a coloured albedo and varied lights, rendered at 48² in one batch."""
    from headrep.fitting.synthetic import make_synthetic_rep
    from headrep.model import DenseHead
    from headrep.render import get_context, neutral_light
    from headrep.rep import HeadRep

    head = DenseHead(body, levels=0)
    T, R = 4, 48
    plain = make_synthetic_rep(body, head, T=T, resolution=R, seed=2)
    g = torch.Generator().manual_seed(0)
    t = dict(plain.tensors)
    t["albedo"] = 0.3 + 0.6 * torch.rand(head.num_vertices, 3, generator=g)
    t["light"] = neutral_light(T, 3) + 0.4 * torch.randn(T, 9, 3, generator=g)  # some pixels clip at 0 and 1
    rep = HeadRep.create(body, head, t, plain.source, R, plain.meta["fit"])
    idx, maps, cams = next(outputs.map_batches(rep, R, get_context("cpu"), batch=T))
    crops = list(np.random.default_rng(1).integers(0, 256, (T, R, R, 3), dtype=np.uint8))
    crops[2] = None  # a frame without its source
    skins = [np.random.default_rng(2).random((R, R)).astype(np.float32), None, None, np.ones((R, R), np.float32)]
    return rep, idx, maps, crops, skins


def test_shaded_batch_matches_the_full_image_formula(batch):
    from headrep.render import shading

    rep, idx, maps, crops, skins = batch
    shaded, residual = outputs.shaded_batch(rep, idx, maps, crops, skins)
    assert (maps["mask"] > 0).any() and (maps["rast"][..., 3] == 0).any()
    for i, t in enumerate(idx):
        light = rep.tensors["light"][t:t + 1]
        rgb = (maps["albedo"][i][None] * shading(maps["normal"][i][None], light))[0].clamp(0, 1)
        rgb = (rgb * maps["mask"][i].clamp(0, 1)[..., None]).numpy()
        assert np.array_equal(shaded[i], (rgb * 255).round().astype(np.uint8))
        if crops[i] is None:
            assert (residual[i] == 64).all()
            continue
        import cv2

        where = (maps["rast"][i][..., 3] > 0).numpy() & (skins[i] > 0.5 if skins[i] is not None else True)
        err = np.abs(crops[i].astype(np.float32) / 255.0 - rgb).mean(-1) * where
        level = np.clip(err / outputs.RESIDUAL_FULL_SCALE * 255, 0, 255).astype(np.uint8)
        assert np.array_equal(residual[i], cv2.applyColorMap(level, cv2.COLORMAP_INFERNO)[..., ::-1])
    one = outputs.shaded_frames(rep, idx[1], {k: v[1] for k, v in maps.items()}, crops[1], skins[1])
    assert np.array_equal(one[0], shaded[1]) and np.array_equal(one[1], residual[1])


def test_overlay_blend_matches_the_full_image_formula(batch):
    rep, idx, maps, crops, _ = batch
    R = maps["mask"].shape[-1]
    for i in range(len(idx)):
        m = {"normal": maps["normal"][i], "mask": maps["mask"][i]}
        got = outputs.overlay_frame(crops[i], m, None, np.full((68, 2), np.nan), True, "")
        mask = m["mask"].numpy().clip(0, 1)
        base = np.zeros((R, R, 3), np.float32) if crops[i] is None else crops[i].astype(np.float32) / 255.0
        a = (outputs.OVERLAY_ALPHA * mask)[..., None]
        want = ((base * (1 - a) + outputs.shade(m["normal"].numpy()) * a) * 255).round().clip(0, 255).astype(np.uint8)
        # the rendered coverage's contour (yellow) and the empty label are drawn over the blend afterwards
        import cv2

        contours, _ = cv2.findContours((mask > 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(want, contours, -1, outputs.COVERAGE_RGB, 1, cv2.LINE_AA)
        assert np.array_equal(got, want)


def test_a_failure_while_drawing_stops_render_and_leaves_nothing(body, tmp_path, monkeypatch):
    """The frames are drawn and encoded in worker threads: an error there reaches the caller, and no output
    folder (nor a temporary one) is left behind; the same render without the error writes every video."""
    import threading

    from headrep.fitting.synthetic import make_synthetic_rep
    from headrep.model import DenseHead

    rep = make_synthetic_rep(body, DenseHead(body, levels=0), T=outputs.RENDER_BATCH + 3, resolution=32)
    rep_dir = rep.save(tmp_path / "rep")
    real = outputs.overlay_frame

    def failing(crop, maps, detected, model68, valid, label, person=None):
        if label.startswith(f"{outputs.RENDER_BATCH + 1} /"):
            raise RuntimeError("drawing failed")
        return real(crop, maps, detected, model68, valid, label, person)

    monkeypatch.setattr(outputs, "overlay_frame", failing)
    before = threading.active_count()
    with pytest.raises(RuntimeError, match="drawing failed"):
        outputs.render_rep(rep_dir, tmp_path / "out", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]
    assert threading.active_count() == before  # the encoder and drawing threads have ended
    monkeypatch.setattr(outputs, "overlay_frame", real)
    out = outputs.render_rep(rep_dir, tmp_path / "out", device="cpu")
    assert sorted(p.name for p in out.iterdir()) == ["depth.mp4", "depth.npz", "normal.mp4", "overlay.mp4",
                                                     "render.json"]
