"""Video and image reading/writing helpers.

Every writer here is atomic: it writes to a temporary file in the destination folder (same suffix, so format
detection by extension still works) and moves it onto the final name with ``os.replace`` only when the write
has fully succeeded. On any error (including KeyboardInterrupt) the temporary file is removed, so a reader
never sees a half-written file under the final name, and a failed write leaves nothing behind.

Video goes through PyAV (FFmpeg). Decoding/opening problems surface as :class:`headrep.errors.HeadrepError`
naming the file.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import secrets
import shutil
import threading
import warnings
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from headrep.errors import HeadrepError

__all__ = ["BackgroundVideoWriter", "atomic_write", "atomic_dir", "check_output_dir", "crop_image", "file_sha256",
           "list_images", "parse_slice", "pip_download", "progress",
           "read_image", "read_video", "video_codec", "video_info", "write_npz", "write_png", "write_video",
           "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS"]


# --------------------------------------------------------------------------------------------------------------
# atomic writes


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager giving a temporary path next to ``path``; on success it is moved onto ``path``.

    The temporary name is ``.<name>.<random>.tmp<suffix>`` in the same folder (so ``os.replace`` is an atomic
    rename on the same filesystem, and the suffix, e.g. ``.mp4``, is kept for writers that pick a format by
    extension). The parent folder is created if needed. The body must create the file at the temporary path.
    If the body raises (any exception, KeyboardInterrupt included) the temporary file is removed and the
    exception propagates; ``path`` is left untouched (an older file there survives).

    Example::

        with atomic_write("out/result.json") as tmp:
            tmp.write_text(data)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}"
    try:
        yield tmp
        if not tmp.exists():
            raise HeadrepError(f"writing {path} produced no file (temporary {tmp.name} was never created)")
        with contextlib.suppress(OSError):  # best effort: make the data durable before the rename
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------------------------
# reading sources: what `headrep fit` reads, and what re-reads a rep's source, use these

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def parse_slice(spec: str, what: str = "--frames") -> slice | int:
    """Parse "A:B", "A:B:C" (Python slice semantics, either end optional) or a single "A" -> slice or int."""
    parts = spec.strip().split(":")
    try:
        nums = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise HeadrepError(f"{what} {spec!r}: expected integers, as in A:B (e.g. 0:10, 5:, :-1)") from None
    if len(nums) == 1:
        if nums[0] is None:
            raise HeadrepError(f"{what} {spec!r}: expected A:B (integers, e.g. 0:10, 5:, :-1) or a single A")
        return nums[0]
    if len(nums) > 3:
        raise HeadrepError(f"{what} {spec!r}: expected A:B or A:B:C")
    if len(nums) == 3 and nums[2] == 0:
        raise HeadrepError(f"{what} {spec!r}: the step cannot be 0")
    return slice(*nums)


def read_json_object(path: str | os.PathLike, what: str, error=HeadrepError) -> dict:
    """The JSON object in ``path``; ``error`` (a HeadrepError subclass, so a package can raise its own) when the
    file cannot be read or parsed, or holds something other than an object (``what`` names what it should hold)."""
    import json

    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"cannot read config {path}: {exc}") from None
    if not isinstance(d, dict):
        raise error(f"config {path} must hold a JSON object of {what}")
    return d


def list_images(folder: str | os.PathLike) -> list[Path]:
    """A folder's images in natural name order (frame2 before frame10), hidden files skipped."""
    import re

    def key(name: str):
        return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]

    return sorted((p for p in Path(folder).iterdir()
                   if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS),
                  key=lambda p: key(p.name))


def read_image(path: Path) -> np.ndarray:
    """Read an image file as uint8 RGB [H,W,3] (EXIF orientation applied, alpha dropped, 16-bit scaled)."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise HeadrepError(f"cannot read image {path}: {exc}") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise HeadrepError(f"cannot read image {path}: not a readable image file")
    return np.ascontiguousarray(image[:, :, ::-1])


def crop_in_frame(boxes, image_size, resolution: int) -> np.ndarray:
    """[B,R,R] bool: the crop pixels that show the image, for square ``boxes`` [B,3] = (x0, y0, side) of an
    image of ``image_size`` (H, W). Beyond the image's edges :func:`crop_image` pads with black, where a
    segmenter can only say "no person"; what covers those pixels is unknown, not background (crop pixel u is
    image pixel u·side/R + x0; the edge pixels, half blended with the padding, count as outside)."""
    H, W = (int(v) for v in image_size)
    b = np.asarray(boxes, np.float64).reshape(-1, 3)
    u = np.arange(int(resolution), dtype=np.float64)[None] * (b[:, 2:3] / int(resolution))
    x, y = u + b[:, 0:1], u + b[:, 1:2]
    return ((y >= 0) & (y <= H - 1))[:, :, None] & ((x >= 0) & (x <= W - 1))[:, None, :]


def crop_image(image: np.ndarray, box, resolution: int) -> np.ndarray:
    """Crop ``image`` to the square ``box`` = (x0, y0, side) and resize to resolution², exactly following
    ``crop_xy = (image_xy − (x0, y0)) · resolution / side`` (pixel-index coordinates); outside: black."""
    import cv2

    x0, y0, side = (float(v) for v in box)
    r = int(resolution)
    s = r / side
    if s >= 0.75:  # mild or no downscale: one bilinear warp
        m = np.array([[s, 0.0, -s * x0], [0.0, s, -s * y0]])
        return cv2.warpAffine(image, m, (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=(0, 0, 0))
    # strong downscale: warp exactly to an integer multiple (m·r)² first, then average m×m blocks (INTER_AREA).
    # Block u of the result averages intermediate pixels m·u .. m·u+m−1, centred at (u + 0.5)·m − 0.5; the
    # intermediate warp maps x' = (x − x0 + 0.5·side/r)·k − 0.5 with k = m·r/side, so u ↔ x = u·side/r + x0.
    mult = int(math.ceil(side / r))
    n = mult * r
    k = n / side
    off = 0.5 * side / r
    m = np.array([[k, 0.0, k * (off - x0) - 0.5], [0.0, k, k * (off - y0) - 0.5]])
    big = cv2.warpAffine(image, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=(0, 0, 0))
    return cv2.resize(big, (r, r), interpolation=cv2.INTER_AREA)



# --------------------------------------------------------------------------------------------------------------
# images and arrays


class LogProgress:
    """What a progress bar becomes in a log (stderr is not a terminal): one line every ``interval`` seconds and
    one at the end (``desc: n/total (p%) elapsed, rate, postfix``), never a line per step. Implements the
    part of tqdm's interface the project uses (iteration, update, set_postfix, close, n, total, context)."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", interval=None, file=None, initial=0, **_):
        import sys
        import time

        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.postfix = total, int(initial), ""
        self._start = self.n
        self.interval = float(os.environ.get("HEADREP_PROGRESS_INTERVAL", 10.0) if interval is None else interval)
        self.file = file or sys.stderr
        self._clock = time.monotonic
        self._t0 = self._last = self._clock()
        self._closed = False

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def __len__(self):
        return self.total or 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, ordered_dict=None, refresh=True, **kw):
        items = {**(ordered_dict or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc=None, refresh=True):
        self.desc = desc or ""

    def write(self, text):
        print(text, file=self.file, flush=True)

    def update(self, n=1):
        self.n += n
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._line()

    def _line(self):
        elapsed = self._clock() - self._t0
        done = f"{self.n}/{self.total} ({100.0 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        done_here = self.n - self._start
        rate = f", {done_here / elapsed:.2f} {self.unit}/s" if elapsed > 0 and done_here else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}s in {elapsed:.0f} s{rate}{post}", file=self.file, flush=True)

    def close(self):
        if not self._closed:
            self._closed = True
            if self.n > self._start:
                self._line()

    def refresh(self):
        pass


def progress(iterable=None, total: int | None = None, desc: str = "", unit: str = "frame",
             enabled: bool | None = None, **kw):
    """The project's progress bar on stderr: a live tqdm bar on a terminal; in a log (stderr not a terminal)
    a :class:`LogProgress` line every ~10 s (``HEADREP_PROGRESS_INTERVAL``). ``enabled=False`` or
    ``HEADREP_PROGRESS=0`` silences it."""
    import sys

    if enabled is None:
        enabled = True
    if os.environ.get("HEADREP_PROGRESS") == "0":
        enabled = False
    if enabled and not sys.stderr.isatty():
        return LogProgress(iterable, total=total, desc=desc, unit=unit, **kw)
    from tqdm import tqdm

    kw.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled, **kw)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write a uint8 image (H×W grey, H×W×3 RGB or H×W×4 RGBA) as a PNG, atomically. Returns the path."""
    from PIL import Image

    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"write_png expects uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise ValueError(f"write_png expects H×W, H×W×3 or H×W×4, got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    path = Path(path)
    with atomic_write(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return path


def write_npz(path: str | os.PathLike, compresslevel: int | None = None, **arrays) -> Path:
    """Write arrays with ``np.savez_compressed`` atomically. The name is used as given (no ``.npz`` appended).

    ``compresslevel`` (1 fastest ... 9 smallest; None: zlib's default, 6, as ``np.savez_compressed``) trades file
    size for time; the arrays read back are the same at every level (e.g. a float32 depth stack: level 1 writes
    it in about half the time of level 6, ~2 % larger)."""
    path = Path(path)
    with atomic_write(path) as tmp:
        if compresslevel is None:
            with open(tmp, "wb") as f:  # a file object: numpy then does not append ".npz" to the temp name
                np.savez_compressed(f, **arrays)
        else:  # what np.savez_compressed writes (one NPY member per array), at the given zlib level
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=int(compresslevel)) as zf:
                for name, a in arrays.items():
                    with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(a), allow_pickle=False)
    return path


# --------------------------------------------------------------------------------------------------------------
# video writing

_CODEC: str | None = None


def video_codec() -> str:
    """The encoder ``write_video`` uses: 'libx264' when this PyAV build has it, else 'mpeg4'."""
    global _CODEC
    if _CODEC is None:
        import av

        try:
            av.codec.Codec("libx264", "w")
            _CODEC = "libx264"
        except Exception:  # PyAV built without GPL x264
            _CODEC = "mpeg4"
    return _CODEC


def _as_frame(frame, index: int, size: tuple[int, int] | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame {index}: expected uint8 [H,W,3], got {frame.dtype} {frame.shape}")
    if size is not None and frame.shape[:2] != size:
        raise ValueError(f"frame {index}: size {frame.shape[:2]} differs from the first frame's {size}")
    return frame


def write_video(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float = 24,
                crf: int = 18, preset: str | None = None, threads: int | None = None) -> Path:
    """Encode RGB frames to an MP4 (H.264, yuv420p) with PyAV, atomically. Returns the path.

    ``frames`` is a uint8 array [T,H,W,3] or any iterable of uint8 [H,W,3] frames; an iterable is consumed
    one frame at a time (streaming: the frames are never all held in memory). All frames must share one size.

    * Codec: ``libx264`` with ``-crf crf`` (18 is visually lossless), pixel format yuv420p, ``+faststart``
      (index at the front, so players can start before the whole file arrives). If this PyAV build lacks
      libx264, the ``mpeg4`` (MPEG-4 Part 2) encoder is used instead, at a high bit rate (crf is ignored);
      :func:`video_codec` tells which.
    * ``preset`` / ``threads``: libx264's speed preset (None: x264's default, ``medium``) and encoder threads
      (None: x264's default, about 1.5 per core; 1 also makes the output byte-for-byte reproducible). Ignored by
      the mpeg4 fallback.
    * Odd sizes: yuv420p needs even width and height, so an odd-sized frame gets its last row and/or column
      replicated once (e.g. 65×33 is written as 66×34). Reading back gives the padded size.
    * ``fps`` may be fractional (29.97 is stored as 2997/100).
    * Zero frames, or a bad frame, raise ValueError; an exception from the frame iterator propagates. In every
      failure case no file (and no temporary file) is left behind.
    """
    import av

    path = Path(path)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    codec = video_codec()
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"write_video({path}): no frames to write")
    first = _as_frame(first, 0, None)
    h, w = first.shape[:2]
    pad_h, pad_w = h % 2, w % 2

    def padded(frame: np.ndarray) -> np.ndarray:
        if pad_h or pad_w:
            frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        return frame

    with atomic_write(path) as tmp:
        options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
        with av.open(str(tmp), mode="w", options=options) as container:
            if codec == "libx264":
                x264 = {"crf": str(int(crf))}
                if preset is not None:
                    x264["preset"] = str(preset)
                if threads is not None:
                    x264["threads"] = str(int(threads))
                stream = container.add_stream("libx264", rate=rate, options=x264)
            else:
                stream = container.add_stream("mpeg4", rate=rate)
                stream.bit_rate = int(max(2_000_000, (h + pad_h) * (w + pad_w) * float(rate) * 0.6))
            stream.width, stream.height = w + pad_w, h + pad_h
            stream.pix_fmt = "yuv420p"
            index = 0
            frame = first
            while True:
                vf = av.VideoFrame.from_ndarray(padded(frame), format="rgb24")
                for packet in stream.encode(vf):
                    container.mux(packet)
                index += 1
                nxt = next(it, None)
                if nxt is None:
                    break
                frame = _as_frame(nxt, index, (h, w))
            for packet in stream.encode(None):  # flush the encoder
                container.mux(packet)
    return path


class BackgroundVideoWriter:
    """:func:`write_video` running in a background thread, fed one frame at a time: a renderer hands each frame
    over as it is made and goes on while the encoder works (PyAV releases the GIL while encoding, so on two or
    more cores the encoding overlaps the rendering; the file is the same as ``write_video`` would write).

        with BackgroundVideoWriter(out / "a.mp4", fps=30, preset="superfast") as video:
            for frame in frames:
                video.write(frame)      # a copy is queued; the frame may be reused at once

    ``queue_size`` frames wait at most (``write`` blocks beyond that, bounding the memory). Leaving the ``with``
    normally finishes the file (:meth:`close`) and raises what the encoder raised; leaving it by an exception
    aborts (:meth:`abort`: no file and no temporary file is left). An encoder error also surfaces at the next
    ``write``. Keyword arguments are :func:`write_video`'s.
    """

    _END = object()

    def __init__(self, path: str | os.PathLike, fps: float = 24, queue_size: int = 8, **options):
        self.path = Path(path)
        self._queue: queue.Queue = queue.Queue(max(1, int(queue_size)))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fps, options), name=f"encode {self.path.name}",
                                        daemon=True)
        self._thread.start()

    def _frames(self) -> Iterator[np.ndarray]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self, fps: float, options: dict) -> None:
        try:
            write_video(self.path, self._frames(), fps=fps, **options)
        except BaseException as exc:  # handed to the caller's thread
            self._error = exc
            while True:  # unblock a writer waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break

    def _put(self, item) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            if isinstance(exc, _AbortedWrite):
                return
            raise exc

    def write(self, frame: np.ndarray) -> None:
        """Queue a copy of one uint8 [H,W,3] frame (validated by the encoder as :func:`write_video` does)."""
        if not self._thread.is_alive():
            self._raise()
            raise ValueError(f"{self.path}: the video writer is closed")
        self._put(np.array(frame, copy=True))

    def close(self) -> Path:
        """Encode what is queued, finish the file and return its path; re-raises the encoder's error."""
        self._put(self._END)
        self._thread.join()
        self._raise()
        return self.path

    def abort(self) -> None:
        """Stop without a file: the encoder removes its temporary file."""
        self._put(_AbortedWrite(f"writing {self.path} was aborted"))
        self._thread.join()
        self._error = None

    def __enter__(self) -> "BackgroundVideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _AbortedWrite(Exception):
    """Sent to a BackgroundVideoWriter's thread to make write_video fail and clean up."""


# --------------------------------------------------------------------------------------------------------------
# video reading


def _open_video(path: str | os.PathLike):
    """Open ``path`` with PyAV and return (container, video stream); HeadrepError for anything unreadable."""
    import av

    path = Path(path)
    if not path.exists():
        raise HeadrepError(f"video {path} does not exist")
    if not path.is_file():
        raise HeadrepError(f"video {path} is not a file")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise HeadrepError(f"cannot read video {path}: not a readable video file ({exc})") from None
    if not container.streams.video:
        container.close()
        raise HeadrepError(f"no video stream found in {path} (not a video, or its header is damaged)")
    return container, container.streams.video[0]


def video_info(path: str | os.PathLike) -> dict:
    """Return ``dict(frames, fps, width, height)`` of the first video stream of ``path`` (no decoding).

    ``frames`` is the count the container's index records (for variable-frame-rate phone videos it can exceed
    the decodable count by a few frames); when the container records none, packets are counted (demuxing,
    still no decoding). ``fps`` is the average frame rate as a float (e.g. 23.976 for 24000/1001).
    """
    import av

    container, stream = _open_video(path)
    try:
        frames = int(stream.frames or 0)
        if frames <= 0:
            try:
                frames = sum(1 for p in container.demux(stream) if p.size)
            except av.FFmpegError:
                pass
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        return {
            "frames": frames,
            "fps": float(rate) if rate else 0.0,
            "width": int(stream.codec_context.width),
            "height": int(stream.codec_context.height),
        }
    finally:
        container.close()


def read_video(path: str | os.PathLike, start: int = 0, stop: int | None = None,
               stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Decode ``path`` and yield ``(index, frame)`` with frame uint8 RGB [H,W,3], for index in
    ``range(start, stop, stride)`` (``stop=None``: to the end). Indices count decoded frames from 0.

    The file is opened at call time, so a missing file, a non-video (e.g. a text file named .mp4) or a file
    whose header/index is destroyed raises HeadrepError immediately, naming the file. Frames before ``start``
    are decoded but not converted (no seeking: exact indices at some cost for a large ``start``).

    Damaged/truncated video (chosen behaviour): the frames decodable up to the damage are yielded; then a
    ``RuntimeWarning`` says the file is damaged and after how many frames decoding stopped, and iteration ends
    normally (no exception), so a partly downloaded video still gives its first frames. Damage is detected from
    decoder errors, packets cut short by the end of the file, or fewer packets than the container's index lists.
    If not a single frame can be decoded, HeadrepError is raised (from the iteration) instead. A truncated MP4
    whose index ("moov") sat at the end of the file cannot be opened at all: HeadrepError at call time.
    (``write_video`` puts the index at the front, so its truncated files take the first path.)
    """
    if start < 0 or stride < 1 or (stop is not None and stop < 0):
        raise ValueError(f"read_video: need start >= 0, stop >= 0 or None, stride >= 1; got {start}, {stop}, {stride}")
    container, stream = _open_video(path)
    return _iter_frames(Path(path), container, stream, start, stop, stride)


def _iter_frames(path: Path, container, stream, start: int, stop: int | None,
                 stride: int) -> Iterator[tuple[int, np.ndarray]]:
    import av

    expected = int(stream.frames or 0)  # what the container's index promises (0: unknown)
    stream.thread_type = "AUTO"
    index = -1
    packets = 0
    problem = None  # why decoding stopped early, if it did

    def frames_of(packet):
        nonlocal index
        for frame in stream.decode(packet):
            index += 1
            yield frame

    try:
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end marker; the decoder is flushed below
                    continue
                if packet.is_corrupt:  # e.g. a packet cut short by the end of a truncated file
                    problem = "a packet is cut short"
                    break
                packets += 1
                for frame in frames_of(packet):
                    if stop is not None and index >= stop:
                        return
                    if index >= start and (index - start) % stride == 0:
                        yield index, frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            problem = str(exc)
        try:
            for frame in frames_of(None):  # flush frames still buffered in the decoder
                if stop is not None and index >= stop:
                    return
                if index >= start and (index - start) % stride == 0:
                    yield index, frame.to_ndarray(format="rgb24")
        except av.FFmpegError as exc:
            problem = problem or str(exc)
        if problem is None and expected and packets < expected:
            problem = f"the file ends after {packets} of the {expected} frames its index lists"
        decoded = index + 1
        if decoded == 0:
            why = f": {problem}" if problem else ""
            raise HeadrepError(f"no frame of video {path} could be decoded; the file is damaged or truncated{why}")
        if problem is not None:
            warnings.warn(
                f"video {path} is damaged or truncated: decoding stopped after {decoded} frames ({problem})",
                RuntimeWarning,
                stacklevel=2,
            )
    finally:
        container.close()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: what pip prints when it cannot reach the registry at all (offline, proxy, DNS)
_UNREACHABLE = ("NewConnectionError", "Failed to establish", "Temporary failure in name resolution",
                "ConnectTimeout", "ReadTimeout", "ProxyError", "SSLError")


def pip_download(requirement: str, folder: str | os.PathLike, pattern: str, advice: str, sdist: bool = False,
                 sha256: str | None = None, timeout: float = 900) -> Path:
    """One file of a registry distribution, fetched with ``pip download --no-deps`` into ``folder``; its path.

    pip writes into a temporary folder inside ``folder`` and the file matching the glob ``pattern`` is renamed
    into place, so an interrupted download (or one whose ``sha256`` is not the expected) never stands under the
    final name. ``sdist``: the source distribution (else a wheel). Every failure (no pip, a timeout, pip's exit status with
    its last line and whether the registry was unreachable, no matching file) is a HeadrepError that ends with
    ``advice``: how to get the file by hand.
    """
    import subprocess
    import sys
    import tempfile

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadrepError(f"cannot create the download folder {folder}: {exc}") from None
    tmpdir = Path(tempfile.mkdtemp(prefix=".pip-", dir=folder))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--no-binary=:all:" if sdist else "--only-binary=:all:", requirement, "-d", str(tmpdir)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise HeadrepError(f"pip download of {requirement} timed out after {timeout:.0f} s; {advice}") from None
        except OSError as exc:
            raise HeadrepError(f"could not run pip ({exc}); {advice}") from None
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
            hint = (" (pip could not reach the package registry)"
                    if any(s in (proc.stderr or "") for s in _UNREACHABLE) else "")
            raise HeadrepError(f"pip could not download {requirement} (exit status {proc.returncode}): "
                               f"{lines[-1] if lines else 'no output'}{hint}; {advice}")
        got = sorted(tmpdir.glob(pattern))
        if not got:
            raise HeadrepError(f"pip reported success but left no file {pattern} for {requirement}; {advice}")
        if sha256 is not None and (sha := file_sha256(got[0])) != sha256:
            raise HeadrepError(f"{got[0].name} from the registry has sha256 {sha}, expected {sha256}; not used")
        final = folder / got[0].name
        os.replace(got[0], final)
        return final
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def check_output_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an output folder that is a file, or non-empty without ``overwrite``; returns it as a Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise HeadrepError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HeadrepError(f"output folder {out} is not empty; pass --overwrite to replace its contents")
    return out


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike) -> Iterator[Path]:
    """Context manager giving a fresh temporary sibling folder that replaces ``out`` when the body succeeds.

    On any exception the temporary folder is removed and ``out`` (if it existed) is left as it was; on
    success an old ``out`` is swapped aside and deleted only after the new folder is in place.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
