"""headrep.io: atomic writers, video round trip, and clear errors for bad/damaged videos."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from headrep import io as hio
from headrep.errors import HeadrepError


def moving_square(t: int = 10, h: int = 64, w: int = 96) -> np.ndarray:
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[...] = (40, 80, 120)
    for i in range(t):
        frames[i, 12:36, 4 + 6 * i:28 + 6 * i] = (220, 60, 30)
        frames[i, 40:56, 60 - 3 * i:76 - 3 * i] = (30, 200, 90)
    return frames


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_video_round_trip(tmp_path):
    frames = moving_square()
    out = hio.write_video(tmp_path / "a.mp4", frames, fps=24, crf=18)
    assert out == tmp_path / "a.mp4"
    assert leftovers(tmp_path) == ["a.mp4"]  # no temp file left
    info = hio.video_info(out)
    assert info == {"frames": 10, "fps": pytest.approx(24.0), "width": 96, "height": 64}
    got = list(hio.read_video(out))
    assert [i for i, _ in got] == list(range(10))
    for (_, frame), orig in zip(got, frames):
        assert frame.dtype == np.uint8 and frame.shape == (64, 96, 3)
    err = np.mean([np.abs(f.astype(int) - o.astype(int)).mean() for (_, f), o in zip(got, frames)])
    assert err < 3.0, err


def test_read_video_range(tmp_path):
    out = hio.write_video(tmp_path / "a.mp4", moving_square())
    assert [i for i, _ in hio.read_video(out, start=2, stop=9, stride=3)] == [2, 5, 8]
    assert list(hio.read_video(out, stop=0)) == []


def test_streaming_generator_and_odd_size(tmp_path):
    frames = moving_square(6, 33, 65)
    out = hio.write_video(tmp_path / "odd.mp4", (f for f in frames), fps=30)
    info = hio.video_info(out)
    assert (info["frames"], info["width"], info["height"]) == (6, 66, 34)
    assert info["fps"] == pytest.approx(30.0)
    first = next(hio.read_video(out))[1]
    # the padding replicates the last row/column
    assert np.abs(first[:33, :65].astype(int) - frames[0]).mean() < 3.0
    assert np.abs(first[33].astype(int) - first[32].astype(int)).mean() < 3.0


def test_error_mid_stream_leaves_nothing(tmp_path):
    frames = moving_square()

    def gen():
        yield from frames[:4]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        hio.write_video(tmp_path / "x.mp4", gen())
    assert leftovers(tmp_path) == []


def test_bad_frames_leave_nothing(tmp_path):
    with pytest.raises(ValueError):
        hio.write_video(tmp_path / "x.mp4", [])
    with pytest.raises(ValueError):
        hio.write_video(tmp_path / "x.mp4", [moving_square(1)[0], moving_square(1, 32, 32)[0]])
    with pytest.raises(ValueError):
        hio.write_video(tmp_path / "x.mp4", moving_square().astype(np.float32))
    assert leftovers(tmp_path) == []


def test_failed_write_keeps_old_file(tmp_path):
    target = tmp_path / "a.mp4"
    hio.write_video(target, moving_square())
    before = target.read_bytes()

    def gen():
        yield moving_square(1)[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hio.write_video(target, gen())
    assert target.read_bytes() == before
    assert leftovers(tmp_path) == ["a.mp4"]


def test_atomic_write_contract(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with hio.atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".txt" and tmp != target
        tmp.write_text("hello")
        assert not target.exists()
    assert target.read_text() == "hello"
    with pytest.raises(ZeroDivisionError):
        with hio.atomic_write(target) as tmp:
            tmp.write_text("partial")
            1 / 0
    assert target.read_text() == "hello"
    assert leftovers(target.parent) == ["f.txt"]
    with pytest.raises(HeadrepError):  # the body never created the file
        with hio.atomic_write(tmp_path / "never.txt"):
            pass
    assert not (tmp_path / "never.txt").exists()


def test_png_and_npz(tmp_path):
    from PIL import Image

    rgb = moving_square(1)[0]
    grey = rgb[:, :, 0].copy()
    hio.write_png(tmp_path / "rgb.png", rgb)
    hio.write_png(tmp_path / "grey.png", grey)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "rgb.png")), rgb)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "grey.png")), grey)
    with pytest.raises(ValueError):
        hio.write_png(tmp_path / "bad.png", rgb.astype(np.float32))

    hio.write_npz(tmp_path / "a.npz", x=np.arange(5), y=np.eye(3))
    hio.write_npz(tmp_path / "noext", z=np.ones(2))  # name used as given, no ".npz" appended
    with np.load(tmp_path / "a.npz") as d:
        assert np.array_equal(d["x"], np.arange(5)) and np.array_equal(d["y"], np.eye(3))
    with np.load(tmp_path / "noext") as d:
        assert np.array_equal(d["z"], np.ones(2))
    depth = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    hio.write_npz(tmp_path / "fast.npz", compresslevel=1, depth=depth, k=np.arange(3))
    with np.load(tmp_path / "fast.npz") as d:
        assert sorted(d.files) == ["depth", "k"]
        assert d["depth"].dtype == np.float32 and np.array_equal(d["depth"], depth)
        assert np.array_equal(d["k"], np.arange(3))
    assert leftovers(tmp_path) == ["a.npz", "fast.npz", "grey.png", "noext", "rgb.png"]


def test_missing_and_non_video(tmp_path):
    with pytest.raises(HeadrepError, match="missing.mp4"):
        hio.read_video(tmp_path / "missing.mp4")
    with pytest.raises(HeadrepError, match="missing.mp4"):
        hio.video_info(tmp_path / "missing.mp4")
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n" * 20)
    with pytest.raises(HeadrepError, match="notes.mp4"):
        list(hio.read_video(fake))
    with pytest.raises(HeadrepError, match="notes.mp4"):
        hio.video_info(fake)


@pytest.mark.parametrize("fraction", [0.05, 0.3, 0.6, 0.9, 0.97])
def test_truncated_video(tmp_path, fraction):
    full = hio.write_video(tmp_path / "full.mp4", moving_square(24))
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = list(hio.read_video(cut))
        except HeadrepError as exc:
            assert "cut.mp4" in str(exc)
            return
    # some frames came out, fewer than written, and a warning said the file is damaged
    assert 0 < len(got) < 24
    assert [i for i, _ in got] == list(range(len(got)))
    assert all(f.shape == (64, 96, 3) for _, f in got)
    assert any("truncated" in str(w.message) for w in caught)


def test_truncated_video_gives_partial_frames(tmp_path):
    """The index is written at the front (faststart), so a file cut near its end still yields early frames."""
    full = hio.write_video(tmp_path / "full.mp4", moving_square(24))
    data = full.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.9)])
    with pytest.warns(RuntimeWarning, match="cut.mp4"):
        got = list(hio.read_video(cut))
    assert 0 < len(got) < 24


def test_codec_reported():
    assert hio.video_codec() in ("libx264", "mpeg4")


def test_mpeg4_fallback_round_trip(tmp_path, monkeypatch):
    """The encoder used when PyAV lacks libx264 (forced here) still writes a readable video."""
    monkeypatch.setattr(hio, "_CODEC", "mpeg4")
    frames = moving_square()
    out = hio.write_video(tmp_path / "m.mp4", frames, fps=25)
    info = hio.video_info(out)
    assert (info["frames"], info["width"], info["height"]) == (10, 96, 64)
    got = [f for _, f in hio.read_video(out)]
    assert len(got) == 10
    assert np.mean([np.abs(f.astype(int) - o.astype(int)).mean() for f, o in zip(got, frames)]) < 6.0


def test_background_video_writer_writes_what_write_video_writes(tmp_path):
    """Frames handed over one by one (and the caller's buffer reused at once) give the same file as
    write_video with the same settings (one x264 thread: byte-for-byte reproducible)."""
    frames = moving_square(12)
    hio.write_video(tmp_path / "direct.mp4", frames, fps=25, preset="superfast", threads=1)
    buf = np.empty_like(frames[0])
    with hio.BackgroundVideoWriter(tmp_path / "background.mp4", fps=25, queue_size=2, preset="superfast",
                                   threads=1) as video:
        for f in frames:
            buf[...] = f
            video.write(buf)
    assert (tmp_path / "background.mp4").read_bytes() == (tmp_path / "direct.mp4").read_bytes()
    assert leftovers(tmp_path) == ["background.mp4", "direct.mp4"]
    got = np.stack([f for _, f in hio.read_video(tmp_path / "background.mp4")])
    assert got.shape == frames.shape and np.abs(got.astype(int) - frames).mean() < 3.0


def test_write_video_preset_changes_the_encoding(tmp_path):
    frames = moving_square(12)
    a = hio.write_video(tmp_path / "a.mp4", frames, preset="ultrafast", threads=1).read_bytes()
    b = hio.write_video(tmp_path / "b.mp4", frames, preset="veryslow", threads=1).read_bytes()
    if hio.video_codec() == "libx264":
        assert a != b
    for name in ("a.mp4", "b.mp4"):
        got = np.stack([f for _, f in hio.read_video(tmp_path / name)])
        assert np.abs(got.astype(int) - frames).mean() < 3.0


def test_background_video_writer_failures_leave_nothing(tmp_path):
    frames = moving_square(6)
    with pytest.raises(RuntimeError, match="caller failed"):  # the caller's error: aborted, no file
        with hio.BackgroundVideoWriter(tmp_path / "a.mp4", fps=25) as video:
            for f in frames[:3]:
                video.write(f)
            raise RuntimeError("caller failed")
    with pytest.raises(ValueError, match="expected uint8"):  # the encoder's error reaches the caller
        with hio.BackgroundVideoWriter(tmp_path / "b.mp4", fps=25, queue_size=1) as video:
            video.write(frames[0])
            for _ in range(50):
                video.write(frames[1].astype(np.float32))
    with pytest.raises(ValueError, match="no frames"):
        hio.BackgroundVideoWriter(tmp_path / "c.mp4").close()
    assert leftovers(tmp_path) == []


def test_pip_download_places_the_file_or_leaves_nothing(tmp_path, monkeypatch):
    """The one place that runs `pip download`: the matching file lands under its own name, an sdist is asked
    for with --no-binary, and a run that leaves no matching file (or fails) leaves nothing behind."""
    import subprocess

    calls = []

    def fake_pip(write):
        def run(cmd, **kwargs):
            calls.append(cmd)
            if write:
                dest = cmd[cmd.index("-d") + 1]
                open(f"{dest}/{write}", "wb").write(b"payload")
            return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")
        return run

    monkeypatch.setattr(subprocess, "run", fake_pip("pkg-1.0.tar.gz"))
    got = hio.pip_download("pkg==1.0", tmp_path / "dl", "pkg-1.0.tar.gz", "get it by hand", sdist=True)
    assert got == tmp_path / "dl" / "pkg-1.0.tar.gz" and got.read_bytes() == b"payload"
    assert "--no-binary=:all:" in calls[-1] and "pkg==1.0" in calls[-1]
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["pkg-1.0.tar.gz"]   # temp folder gone

    import hashlib

    with pytest.raises(HeadrepError, match="sha256"):   # not the expected bytes: never under the final name
        hio.pip_download("pkg==1.0", tmp_path / "dl3", "pkg-1.0.tar.gz", "", sdist=True, sha256="0" * 64)
    assert list((tmp_path / "dl3").iterdir()) == []
    good = hashlib.sha256(b"payload").hexdigest()
    assert hio.pip_download("pkg==1.0", tmp_path / "dl3", "pkg-1.0.tar.gz", "", sdist=True, sha256=good).is_file()

    monkeypatch.setattr(subprocess, "run", fake_pip("other-2.0.whl"))
    with pytest.raises(HeadrepError, match="left no file pkg-1.0-.*get it by hand"):
        hio.pip_download("pkg==1.0", tmp_path / "dl2", "pkg-1.0-*.whl", "get it by hand")
    assert "--only-binary=:all:" in calls[-1]
    assert list((tmp_path / "dl2").iterdir()) == []


def test_crop_in_frame_marks_the_pixels_that_show_the_image():
    """By hand: a 100×200 image, box (−50, 20, 100) at R=10 maps crop (u, v) to image (10u − 50, 10v + 20), in
    the image for u ≥ 5 and v ≤ 7. And against crop_image itself: a white image cropped at an integer offset
    and scale 1 is white exactly where the mask says the crop shows it, black elsewhere."""
    from headrep.io import crop_image, crop_in_frame

    m = crop_in_frame([[-50.0, 20.0, 100.0]], (100, 200), 10)[0]
    v, u = np.mgrid[:10, :10]
    assert (m == ((u >= 5) & (v <= 7))).all()

    white = np.full((12, 30, 3), 255, np.uint8)
    for box in ((-5.0, 3.0, 20.0), (14.0, -9.0, 20.0)):
        crop = crop_image(white, box, 20)
        mask = crop_in_frame([box], white.shape[:2], 20)[0]
        assert mask.any() and (~mask).any()
        assert (mask == (crop[..., 0] == 255)).all() and (crop[~mask] == 0).all()
