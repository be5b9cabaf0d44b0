"""headrep.fitting.video.load_frames: videos, image folders, single images, selection, downscale, clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from headrep import io as hio
from headrep.errors import HeadrepError
from headrep.fitting.video import IMAGE_FPS, load_frames


def sample(name: str):
    """Path of a real cached sample video; skip (with the reason) when it cannot be had, e.g. offline."""
    from headrep.samples import sample_path

    try:
        return sample_path(name)
    except HeadrepError as exc:
        pytest.skip(f"sample video {name} unavailable (offline?): {exc}")


def coloured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[...] = rng.integers(0, 256, 3, dtype=np.uint8)
    img[h // 4: h // 2, w // 4: w // 2] = (250, 20, 20)
    return img


# --------------------------------------------------------------------------------------------------------------
# real video


def test_real_video_full():
    fr = load_frames(sample("WolfgangLanger_Pexels.mp4"))
    assert fr.kind == "video" and len(fr) == 472
    assert fr.size == (360, 640) and fr.scale == 1.0
    assert fr.fps == pytest.approx(23.976, abs=0.01)
    np.testing.assert_array_equal(fr.indices, np.arange(472))
    assert all(im.dtype == np.uint8 and im.shape == (360, 640, 3) for im in fr.images)
    assert fr.source.endswith("WolfgangLanger_Pexels.mp4")


def test_real_video_selection():
    path = sample("WolfgangLanger_Pexels.mp4")
    fr = load_frames(path, frames=slice(10, 20), stride=2)
    np.testing.assert_array_equal(fr.indices, [10, 12, 14, 16, 18])
    assert len(fr.images) == 5
    np.testing.assert_allclose(fr.times, fr.indices / fr.fps)
    # a slice step multiplies the stride; negative bounds count from the end
    np.testing.assert_array_equal(load_frames(path, frames=slice(10, 20, 2)).indices, [10, 12, 14, 16, 18])
    np.testing.assert_array_equal(load_frames(path, frames=slice(-3, None)).indices, [469, 470, 471])
    # the same frame decoded through a selection equals the one decoded in full
    full_10 = next(im for i, im in hio.read_video(path, start=10, stop=11))
    np.testing.assert_array_equal(fr.images[0], full_10)
    with pytest.raises(HeadrepError, match="WolfgangLanger_Pexels.mp4"):
        load_frames(path, frames=slice(500, 600))


# --------------------------------------------------------------------------------------------------------------
# images


def test_image_folder(tmp_path):
    imgs = [coloured(48, 64, s) for s in range(3)]
    for name, img in zip(["f10.png", "f2.png", "f1.png"], [imgs[2], imgs[1], imgs[0]]):
        hio.write_png(tmp_path / name, img)
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"not an image, and hidden")
    fr = load_frames(tmp_path)
    assert fr.kind == "images" and len(fr) == 3
    assert fr.fps == IMAGE_FPS == 25.0 and fr.size == (48, 64) and fr.scale == 1.0
    np.testing.assert_array_equal(fr.indices, [0, 1, 2])
    for got, want in zip(fr.images, imgs):  # natural order f1, f2, f10; PNG is lossless
        np.testing.assert_array_equal(got, want)
    sub = load_frames(tmp_path, frames=slice(1, None))
    np.testing.assert_array_equal(sub.indices, [1, 2])
    np.testing.assert_array_equal(sub.images[0], imgs[1])


def test_single_image_png_and_jpg(tmp_path):
    img = coloured(40, 30, 7)
    fr = load_frames(hio.write_png(tmp_path / "one.png", img))
    assert fr.kind == "image" and len(fr) == 1 and fr.size == (40, 30) and fr.fps == 25.0
    np.testing.assert_array_equal(fr.indices, [0])
    np.testing.assert_array_equal(fr.images[0], img)
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "one.JPG", quality=95)
    jpg = load_frames(tmp_path / "one.JPG")
    assert jpg.size == (40, 30) and np.abs(jpg.images[0].astype(int) - img).mean() < 8


def test_4k_image_downscaled(tmp_path):
    img = np.zeros((2160, 3840, 3), np.uint8)
    img[:, 1920:] = (200, 100, 50)
    path = hio.write_png(tmp_path / "big.png", img)
    fr = load_frames(path)
    assert fr.size == (1080, 1920) and fr.images[0].shape == (1080, 1920, 3)
    assert fr.scale == pytest.approx(0.5)
    assert tuple(fr.images[0][500, 1500]) == (200, 100, 50) and tuple(fr.images[0][500, 400]) == (0, 0, 0)
    small = load_frames(path, max_side=1000)
    assert max(small.size) == 1000 and small.scale == pytest.approx(1000 / 3840)
    assert load_frames(path, max_side=None).size == (2160, 3840)


def test_large_video_downscaled(tmp_path):
    frames = np.stack([coloured(400, 800, s) for s in range(3)])
    path = hio.write_video(tmp_path / "wide.mp4", frames, fps=30)
    fr = load_frames(path, max_side=400)
    assert fr.kind == "video" and len(fr) == 3 and fr.size == (200, 400) and fr.scale == pytest.approx(0.5)
    assert fr.fps == pytest.approx(30.0)


# --------------------------------------------------------------------------------------------------------------
# errors


def test_errors_name_the_path(tmp_path):
    with pytest.raises(HeadrepError, match="missing.mp4"):
        load_frames(tmp_path / "missing.mp4")
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(HeadrepError, match="notes.mp4"):
        load_frames(fake)
    other = tmp_path / "clip.gif"
    other.write_bytes(b"GIF89a")
    with pytest.raises(HeadrepError, match="clip.gif"):
        load_frames(other)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HeadrepError, match="empty"):
        load_frames(empty)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(HeadrepError, match="contains no images"):
        load_frames(empty)
    bad = tmp_path / "bad.png"
    bad.write_text("not a png")
    with pytest.raises(HeadrepError, match="bad.png"):
        load_frames(bad)


def test_folder_of_mixed_sizes(tmp_path):
    hio.write_png(tmp_path / "a.png", coloured(20, 30, 0))
    hio.write_png(tmp_path / "b.png", coloured(21, 30, 1))
    with pytest.raises(HeadrepError, match="b.png"):
        load_frames(tmp_path)


def test_video_without_decodable_frames(tmp_path):
    full = hio.write_video(tmp_path / "full.mp4", np.stack([coloured(64, 96, s) for s in range(12)]))
    data = full.read_bytes()
    mdat = data.find(b"mdat")
    assert mdat > 0  # faststart: the index comes first, then the media data
    cut = tmp_path / "nothing.mp4"
    cut.write_bytes(data[: mdat + 8])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HeadrepError, match="nothing.mp4"):
            load_frames(cut)


def test_truncated_video_yields_what_decodes(tmp_path):
    full = hio.write_video(tmp_path / "full.mp4", np.stack([coloured(64, 96, s) for s in range(24)]))
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.warns(RuntimeWarning, match="cut.mp4"):
        fr = load_frames(cut)
    assert 0 < len(fr) < 24
    np.testing.assert_array_equal(fr.indices, np.arange(len(fr)))


def test_bad_arguments(tmp_path):
    path = hio.write_png(tmp_path / "one.png", coloured(8, 8, 0))
    with pytest.raises(ValueError):
        load_frames(path, stride=0)
    with pytest.raises(ValueError):
        load_frames(path, frames=slice(None, None, -1))
    with pytest.raises(TypeError):
        load_frames(path, frames=(0, 5))
