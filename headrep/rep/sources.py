"""Re-reading a rep's source frames, cropped exactly as the fit cropped them (one reader for `headrep render`,
`generator prepare` and evaluation)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from headrep.errors import HeadrepError
from headrep.io import IMAGE_EXTENSIONS, crop_image, list_images, read_image, read_video


def source_path(rep) -> Path | None:
    """The rep's recorded source as a path (relative paths resolved against the rep folder; it may not exist),
    or None for a driven rep (`transfer drive`), which has none."""
    src = rep.source
    raw = src.get("path")
    if not raw or src.get("kind") == "driven":
        return None
    path = Path(raw)
    if not path.is_absolute() and rep.path is not None and not path.exists():
        path = rep.path / path
    return path


def source_crops(rep, resolution: int | None = None, notes: list[str] | None = None,
                 video: str | Path | None = None) -> Iterator[np.ndarray | None]:
    """Yield, for each rep frame t, its input crop (uint8 [R,R,3] RGB).

    Re-reads the source (``video``, default the recorded one) the way the fit loaded it: a video, a folder of
    images in natural name order, or one image; each frame resized to the recorded loaded size ``image_size``
    (INTER_AREA) when the fit downscaled it, then cropped with its recorded box by the fit's similarity
    transform ``crop_xy = (xy - (x0, y0)) * R / side`` (``headrep.io.crop_image``).

    ``notes`` given (a list): problems are appended to it and the affected frames are None (a renderer can
    draw on black). ``notes`` None: strict, the first problem raises HeadrepError.
    """
    import cv2

    R = int(resolution or rep.resolution)
    T = rep.num_frames
    strict = notes is None
    notes = [] if notes is None else notes

    def problem(text: str):
        if strict:
            raise HeadrepError(text)
        notes.append(text)

    path = Path(video) if video is not None else source_path(rep)
    if path is None:
        problem("a driven rep (transfer drive) has no source video; the overlay shows the model on black")
        yield from (None for _ in range(T))
        return
    if not path.exists():
        problem(f"source {rep.source.get('path')} is missing; the overlay shows the model on black")
        yield from (None for _ in range(T))
        return
    frames, size, boxes = rep.frames, rep.image_size, rep.boxes

    def crop(t: int, frame: np.ndarray) -> np.ndarray:
        if size is not None and frame.shape[:2] != tuple(size):
            if abs(frame.shape[0] / size[0] - frame.shape[1] / size[1]) > 0.02 * frame.shape[1] / size[1]:
                if not any("aspect" in n for n in notes):
                    problem(f"source frames are {frame.shape[1]}x{frame.shape[0]} but the rep records "
                            f"{size[1]}x{size[0]} (another aspect ratio): is this the right source?")
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return crop_image(np.ascontiguousarray(frame), boxes[t], R)

    if path.is_dir() or path.suffix.lower() in IMAGE_EXTENSIONS:
        files = list_images(path) if path.is_dir() else [path]
        for t in range(T):
            i = int(frames[t])
            if i >= len(files):
                if strict or not any("images" in n for n in notes):
                    problem(f"source {path} has only {len(files)} image(s); later frames are on black")
                yield None
                continue
            try:
                yield crop(t, read_image(files[i]))
            except HeadrepError as exc:
                problem(str(exc))
                yield None
        return

    t = 0
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for index, frame in read_video(path, start=int(frames[0]), stop=int(frames[-1]) + 1):
                if t < T and frames[t] == index:  # frame indices are strictly increasing
                    yield crop(t, frame)
                    t += 1
            for w in caught:
                notes.append(str(w.message))
    except HeadrepError as exc:
        problem(f"cannot read source {path}: {exc}")
    if t < T:
        why = "; ".join(str(w.message) for w in caught)
        problem(f"source {path} ended before source frame {int(frames[t])} (rep frame {t} of {T})"
                + (f": {why}" if why and strict else "") + "; is it the rep's source? Later frames are on black")
    while t < T:
        yield None
        t += 1
