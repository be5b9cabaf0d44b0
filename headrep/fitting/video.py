"""Load any input of ``headrep fit`` as a list of RGB frames: a video, a folder of images, or one image.

:func:`load_frames` is the single entry point. It decodes eagerly (every kept frame is held in memory as a uint8
RGB array, after any downscale): 472 frames of 640×360 take ~330 MB; 1000 frames of 1920×1080 would take ~6 GB,
so long high-resolution clips should be cut with ``frames``/``stride``.

Conventions

* ``indices`` are frame numbers in the source (decoded-frame counts from 0 for a video, positions in the sorted
  list for a folder), so the time of a kept frame is ``indices[i] / fps`` whatever the stride.
* ``fps`` is the source's average frame rate; images have no frame rate and get 25 by convention.
* Frames whose long side exceeds ``max_side`` (e.g. 4K) are downscaled once, here, with ``cv2.INTER_AREA``;
  ``scale`` (≤ 1) is the factor applied: ``loaded_px ≈ source_px * scale`` (pixel-centre convention,
  exact up to the rounding of the output size to whole pixels).
* A folder is read in natural name order (``img2.png`` before ``img10.png``; for zero-padded names this is
  plain name order); other files in it (and hidden files) are ignored; all its images must share one size.

Errors the user can cause (missing path, unsupported extension, a file that is not a video/image, an empty
folder, a video with no decodable frame, a frame range that selects nothing) raise
:class:`headrep.errors.HeadrepError` naming the path. A truncated video yields the frames that decode
(:func:`headrep.io.read_video` warns).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headrep.errors import HeadrepError
from headrep.io import (IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_images, read_image,
                        read_video, video_info)

__all__ = ["Frames", "load_frames", "VIDEO_EXTENSIONS", "IMAGE_EXTENSIONS", "IMAGE_FPS"]

#: frame rate given to image folders and single images (they have none)
IMAGE_FPS = 25.0


@dataclass
class Frames:
    """Frames of one input, ready for face tracking.

    images: uint8 RGB arrays [H,W,3], one per kept frame, all of size ``size``.
    indices: int64 [T], frame numbers in the source.
    fps: source frame rate (25 for images, by convention).
    size: (H, W) of ``images`` (after any downscale).
    scale: downscale factor applied (1.0 when none): loaded pixels = source pixels × scale.
    source: the input path as given.
    kind: 'video', 'images' (a folder) or 'image' (one file).
    """

    images: list[np.ndarray]
    indices: np.ndarray
    fps: float
    size: tuple[int, int]
    scale: float
    source: str
    kind: str

    def __len__(self) -> int:
        return len(self.images)

    @property
    def times(self) -> np.ndarray:
        """Time of each kept frame in seconds (``indices / fps``)."""
        return self.indices / float(self.fps)


# --------------------------------------------------------------------------------------------------------------
# helpers




def _target_size(h: int, w: int, max_side: int | None) -> tuple[int, int, float]:
    """(new_h, new_w, scale) so that the long side is at most max_side (no upscaling)."""
    long_side = max(h, w)
    if not max_side or long_side <= max_side:
        return h, w, 1.0
    s = max_side / long_side
    nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    return nh, nw, max(nh, nw) / long_side


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    import cv2

    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def _check_selection(frames, stride: int) -> tuple[slice, int]:
    if not isinstance(stride, (int, np.integer)) or isinstance(stride, bool) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if frames is None:
        frames = slice(None)
    if isinstance(frames, range):
        frames = slice(frames.start, frames.stop, frames.step)
    if not isinstance(frames, slice):
        raise TypeError(f"frames must be a slice (e.g. slice(10, 20)) or None, got {type(frames).__name__}")
    step = 1 if frames.step is None else int(frames.step)
    if step < 1:
        raise ValueError(f"frames: the slice step must be positive, got {frames.step}")
    return frames, step * int(stride)


def _resolve(frames: slice, step: int, count_fn) -> tuple[int, int | None]:
    """Start/stop over source frame numbers; negative bounds need the total count (``count_fn()``)."""
    start, stop = frames.start, frames.stop
    if (start is not None and start < 0) or (stop is not None and stop < 0):
        n = count_fn()
        start, stop, _ = slice(start, stop, step).indices(n)
        return start, stop
    return (0 if start is None else int(start)), (None if stop is None else int(stop))


def _selection_text(frames: slice, stride: int) -> str:
    if frames == slice(None) and stride == 1:
        return ""
    a = "" if frames.start is None else frames.start
    b = "" if frames.stop is None else frames.stop
    return f" (frames {a}:{b}, stride {stride})"


# --------------------------------------------------------------------------------------------------------------
# public


def load_frames(source: str | os.PathLike, frames: slice | None = None, stride: int = 1,
                max_side: int | None = 1920) -> Frames:
    """Load a video, a folder of images or one image as :class:`Frames`.

    source: a video (mp4/mov/avi/mkv/webm/m4v), a folder of images (png/jpg/jpeg/bmp/webp, natural name
        order) or a single image file.
    frames: a slice over source frame numbers (``--frames A:B`` → ``slice(A, B)``); negative bounds count from
        the end; a slice step multiplies ``stride``.
    stride: keep every ``stride``-th frame of the selection.
    max_side: frames whose long side exceeds it are downscaled (INTER_AREA) to it; None/0: never.

    Raises HeadrepError (naming the path) for a missing path, an unsupported extension, an unreadable
    video/image, an empty folder, a video with no decodable frame, or a selection that keeps no frame.
    """
    sel, step = _check_selection(frames, stride)
    path = Path(source)
    src = str(source)
    if not path.exists():
        raise HeadrepError(f"input {src} does not exist")

    if path.is_dir():
        files = list_images(path)
        if not files:
            raise HeadrepError(f"folder {src} contains no images ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)})")
        start, stop = _resolve(sel, step, lambda: len(files))
        keep = list(range(len(files)))[start:stop:step]
        if not keep:
            raise HeadrepError(f"the selection{_selection_text(sel, stride)} keeps none of the "
                               f"{len(files)} images in {src}")
        images, size, scale = [], None, 1.0
        first_file = None
        for i in keep:
            img = read_image(files[i])
            if size is None:
                first_file = files[i]
                nh, nw, scale = _target_size(img.shape[0], img.shape[1], max_side)
                size, orig = (nh, nw), img.shape[:2]
            elif img.shape[:2] != orig:
                raise HeadrepError(f"image {files[i]} is {img.shape[1]}×{img.shape[0]} but {first_file.name} in "
                                   f"the same folder is {orig[1]}×{orig[0]}; all images of a folder must "
                                   f"share one size")
            images.append(_resize(img, *size))
        return Frames(images, np.asarray(keep, np.int64), IMAGE_FPS, size, scale, src, "images")

    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        start, stop = _resolve(sel, step, lambda: 1)
        if 0 not in range(1)[start:stop:step]:
            raise HeadrepError(f"the selection{_selection_text(sel, stride)} keeps nothing of the single image {src}")
        img = read_image(path)
        nh, nw, scale = _target_size(img.shape[0], img.shape[1], max_side)
        return Frames([_resize(img, nh, nw)], np.zeros(1, np.int64), IMAGE_FPS, (nh, nw), scale, src, "image")

    if ext not in VIDEO_EXTENSIONS:
        raise HeadrepError(
            f"unsupported input {src}: expected a video ({', '.join(e[1:] for e in VIDEO_EXTENSIONS)}), "
            f"an image ({', '.join(e[1:] for e in IMAGE_EXTENSIONS)}) or a folder of images")

    info = video_info(path)  # opens the file: HeadrepError naming it for a non-video
    start, stop = _resolve(sel, step, lambda: info["frames"])
    fps = info["fps"] if info["fps"] > 0 else IMAGE_FPS
    images, indices = [], []
    size, scale = None, 1.0
    if stop is None or stop > start:
        for index, img in read_video(path, start=start, stop=stop, stride=step):
            if size is None:
                nh, nw, scale = _target_size(img.shape[0], img.shape[1], max_side)
                size = (nh, nw)
            images.append(_resize(img, *size))
            indices.append(index)
    if not images:
        raise HeadrepError(f"the selection{_selection_text(sel, stride)} keeps no frame of video {src} "
                           f"({info['frames']} frames)")
    return Frames(images, np.asarray(indices, np.int64), float(fps), size, scale, src, "video")
