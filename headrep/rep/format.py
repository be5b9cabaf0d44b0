"""The HeadRep file format: a fitted head (SMPL-X-format parameters + dense offsets + camera) for one video.

A HeadRep is a folder::

    REP/rep.safetensors   torch tensors (below), written with safetensors.torch.save_file
    REP/rep.json          provenance: source video, model file (path + sha256, stand-in flag), topology hash,
                          fit configuration / seed / statistics, library versions, frame counts
    REP/masks.npz         optional (fits with the silhouette / photometric terms): the per-frame crop masks the
                          fit used: person [T,R,R] uint8 (selfie segmentation × 255), skin and occluded
                          [T,R,⌈R/8⌉] uint8 (np.packbits of bool masks along the last axis), compressed npz
    REP/renders/          optional, written by `headrep render REP`
    REP/meshes/           optional, e.g. `headrep export REP -o REP/meshes`

Tensors (T frames, nb betas, ne expression coefficients, Nd dense vertices, Nf dense face vertices)::

    betas [nb]  expression [T,ne]  pose [T,55,3] (axis-angle, SMPL-X joint order; pose[:,0] = global orient)
    transl [T,3] (model axes)  focal [1]  principal [2]  boxes [T,3] = (x0, y0, side)  (float64)
    static_offsets [Nd,3]  dynamic_offsets [T,Nf,3] (only on the dense face vertices)
    face_vertices [Nf] int64 (= np.nonzero(DenseHead.face_mask))  valid [T] uint8  frame_indices [T] int64
    landmarks [T,478,3] (optional: detected MediaPipe points in crop pixels, NaN on invalid frames)
    albedo [Nd,C] and light [T,9,C] (optional, together: a photometric fit's static per-vertex albedo in [0,1]
        sRGB (C = 3, or 1 for a grey video) and per-frame second-order SH lighting in camera space; the
        shaded colour of a pixel is albedo · Σ_k basis_k(n) · light[t,k], basis in headrep.render.shading)
    hair_swing [T,3] (optional, only when rep.json's topology records "hair_hangs": true: the hanging hair's
        swing per frame, axis-angle in radians in the head's yaw frame, see headrep.model.head; absent: zero,
        the hair hanging straight)

Conventions. Model space is SMPL-X's (metres, y up, z toward the viewer). The camera is OpenCV's (x right,
y down, z forward) at the origin, and the model-to-camera map is fixed: ``verts_cam = verts_model * [1,-1,-1]``
where ``verts_model`` already includes the frame's global orientation and ``transl`` (a head in front of the
camera has transl z about -0.8 m). No camera rotation is stored.

Intrinsics: one focal length ``focal`` (pixels of the loaded frames, square pixels) and principal point
``principal`` = (cx, cy) (loaded-frame pixels, integer pixel centres). Frame t was fitted in a square crop
``boxes[t] = (x0, y0, side)`` of the loaded frame resized to ``resolution``²; the crop maps loaded-frame
coordinates by ``crop_xy = (xy - (x0, y0)) * s`` with ``s = resolution / side``, so the crop camera is
``fx = fy = focal * s, cx = (principal_x - x0) * s, cy = (principal_y - y0) * s``. "Loaded frames" are the
source video's frames scaled by ``source["scale"]`` (loaded pixels per source pixel; ``source["image_size"]``
is the loaded [H, W]).

Everything is written atomically (a temporary sibling folder moved into place): an interrupted save leaves
no half-written rep.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from headrep.errors import HeadrepError
from headrep.model import NUM_JOINTS, NUM_MP_POINTS, to_camera

FORMAT = "headrep.rep"
VERSION = 1
TENSOR_FILE = "rep.safetensors"
JSON_FILE = "rep.json"

# name -> (shape template, kind); shape symbols come from the json (T, nb, ne, Nd, Nf), ints are fixed
_SPEC: dict[str, tuple[tuple, str]] = {
    "betas": (("nb",), "float"),
    "expression": (("T", "ne"), "float"),
    "pose": (("T", NUM_JOINTS, 3), "float"),
    "transl": (("T", 3), "float"),
    "focal": ((1,), "float"),
    "principal": ((2,), "float"),
    "boxes": (("T", 3), "float"),
    "static_offsets": (("Nd", 3), "float"),
    "dynamic_offsets": (("T", "Nf", 3), "float"),
    "face_vertices": (("Nf",), "int"),
    "valid": (("T",), "int"),
    "frame_indices": (("T",), "int"),
}
_OPTIONAL: dict[str, tuple[tuple, str]] = {"landmarks": (("T", NUM_MP_POINTS, 3), "float"),
                                           "albedo": (("Nd", "C"), "float"), "light": (("T", 9, "C"), "float"),
                                           "hair_swing": (("T", 3), "float")}
MASK_FILE = "masks.npz"
_FLOAT64 = ("focal", "principal", "boxes")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def versions() -> dict:
    """The library versions a file written now records (headrep, torch, smplx, numpy, python)."""
    import smplx

    from headrep import __version__

    return {"headrep": __version__, "torch": torch.__version__,
            "smplx": getattr(smplx, "__version__", None) or _dist_version("smplx"),
            "numpy": np.__version__, "python": platform.python_version()}


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def _jsonable(x: Any) -> Any:
    """Convert numpy / torch scalars and arrays, Paths and tuples into JSON-serialisable values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _jsonable(x.detach().cpu().numpy())
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _index_list(ts, T: int) -> np.ndarray:
    """Positions 0..T-1 from an int, a slice, a sequence / array of ints, or None (all)."""
    if ts is None:
        return np.arange(T)
    if isinstance(ts, slice):
        return np.arange(T)[ts]
    if isinstance(ts, torch.Tensor):
        ts = ts.detach().cpu().numpy()
    arr = np.atleast_1d(np.asarray(ts))
    if arr.dtype == bool:
        if arr.shape != (T,):
            raise IndexError(f"boolean frame mask must have shape ({T},), got {arr.shape}")
        return np.nonzero(arr)[0]
    if not np.issubdtype(arr.dtype, np.integer):
        raise IndexError(f"frame positions must be integers, got {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < -T) | (arr >= T)
    if bad.any():
        raise IndexError(f"frame position {int(arr[bad][0])} out of range for a rep of {T} frames")
    return np.where(arr < 0, arr + T, arr)


# ----------------------------------------------------------------------------------------------------------
# validation (shared by create and load)


def _check_tensors(tensors: dict[str, torch.Tensor], dims: dict[str, int], where: str) -> None:
    """Check presence, shape, dtype kind and finiteness; raise HeadrepError prefixed by ``where``."""
    missing = [k for k in _SPEC if k not in tensors]
    if missing:
        raise HeadrepError(f"{where}: missing tensor(s) {', '.join(missing)}")
    unknown = [k for k in tensors if k not in _SPEC and k not in _OPTIONAL]
    if unknown:
        raise HeadrepError(f"{where}: unknown tensor(s) {', '.join(sorted(unknown))}")
    if ("albedo" in tensors) != ("light" in tensors):
        raise HeadrepError(f"{where}: albedo and light come together (the photometric fit writes both)")
    if "albedo" in tensors:
        dims = {**dims, "C": int(tensors["albedo"].shape[-1]) if tensors["albedo"].dim() == 2 else -1}
        if dims["C"] not in (1, 3):
            raise HeadrepError(f"{where}: albedo must be [Nd,3] (colour) or [Nd,1] (grey), got "
                               f"{list(tensors['albedo'].shape)}")
    for name, (shape, kind) in {**_SPEC, **_OPTIONAL}.items():
        if name not in tensors:
            continue
        x = tensors[name]
        want = tuple(dims[s] if isinstance(s, str) else s for s in shape)
        if tuple(x.shape) != want:
            sym = "[" + ",".join(str(s) for s in shape) + "]"
            raise HeadrepError(f"{where}: tensor '{name}' has shape {list(x.shape)}, expected {list(want)} "
                               f"({sym} with {', '.join(f'{k}={v}' for k, v in dims.items())})")
        if kind == "float" and not x.dtype.is_floating_point:
            raise HeadrepError(f"{where}: tensor '{name}' must be floating point, got {x.dtype}")
        if kind == "int" and (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool):
            raise HeadrepError(f"{where}: tensor '{name}' must hold integers, got {x.dtype}")
        if kind == "float":
            bad = torch.isinf(x) if name == "landmarks" else ~torch.isfinite(x)
            if bool(bad.any()):
                raise HeadrepError(f"{where}: tensor '{name}' holds NaN or infinite values")
    fv = tensors["face_vertices"]
    if fv.numel():
        if int(fv.min()) < 0 or int(fv.max()) >= dims["Nd"]:
            raise HeadrepError(f"{where}: face_vertices must index the {dims['Nd']} dense vertices")
        if fv.numel() > 1 and not bool((fv[1:] > fv[:-1]).all()):
            raise HeadrepError(f"{where}: face_vertices must be strictly increasing")
    fi = tensors["frame_indices"]
    if fi.numel():
        if int(fi.min()) < 0:
            raise HeadrepError(f"{where}: frame_indices must be >= 0")
        if fi.numel() > 1 and not bool((fi[1:] > fi[:-1]).all()):
            raise HeadrepError(f"{where}: frame_indices must be strictly increasing")
    if not bool(((tensors["valid"] == 0) | (tensors["valid"] == 1)).all()):
        raise HeadrepError(f"{where}: valid must hold 0 or 1")
    if float(tensors["focal"][0]) <= 0:
        raise HeadrepError(f"{where}: focal must be positive, got {float(tensors['focal'][0])}")
    if tensors["boxes"].numel() and bool((tensors["boxes"][:, 2] <= 0).any()):
        raise HeadrepError(f"{where}: every box side (boxes[:, 2]) must be positive")


def _check_swing(tensors: dict[str, torch.Tensor], hangs: bool, where: str) -> None:
    """A hair swing turns hanging hair: a rep holding one must be one whose hair hangs."""
    if "hair_swing" in tensors and not hangs:
        raise HeadrepError(f"{where}: it holds hair_swing, but its hair does not hang (topology hair_hangs)")


def _check_json(meta: dict, where: str) -> dict[str, int]:
    """Check the json's required fields; return the dimensions (T, nb, ne, Nd, Nf) it records."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise HeadrepError(f"{where}: not a HeadRep (format is {got!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise HeadrepError(f"{where}: HeadRep format version {meta.get('version')!r} is not supported "
                           f"(this headrep reads version {VERSION})")
    need = {"source": ("path", "fps"), "model": ("model_path", "model_sha256", "standin", "num_betas",
                                                 "num_expression"),
            "topology": ("levels", "hash", "num_dense", "num_face_vertices"), "frames": ("count", "valid")}
    for section, keys in need.items():
        sec = meta.get(section)
        if not isinstance(sec, dict):
            raise HeadrepError(f"{where}: {JSON_FILE} has no '{section}' section")
        miss = [k for k in keys if k not in sec]
        if miss:
            raise HeadrepError(f"{where}: {JSON_FILE} '{section}' lacks {', '.join(miss)}")
    if not isinstance(meta.get("resolution"), int) or meta["resolution"] <= 0:
        raise HeadrepError(f"{where}: {JSON_FILE} 'resolution' must be a positive integer, "
                           f"got {meta.get('resolution')!r}")
    try:
        return {"T": int(meta["frames"]["count"]), "nb": int(meta["model"]["num_betas"]),
                "ne": int(meta["model"]["num_expression"]), "Nd": int(meta["topology"]["num_dense"]),
                "Nf": int(meta["topology"]["num_face_vertices"])}
    except (TypeError, ValueError) as exc:
        raise HeadrepError(f"{where}: {JSON_FILE} holds a malformed count: {exc}") from None


# ----------------------------------------------------------------------------------------------------------
# writing (module-level so that tests can make them fail)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from headrep.io import atomic_write

    with atomic_write(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"format": FORMAT, "version": str(VERSION)})


def _write_json(path: Path, meta: dict) -> None:
    from headrep.io import atomic_write

    text = json.dumps(_jsonable(meta), indent=2)
    with atomic_write(path) as tmp:
        tmp.write_text(text + "\n")


def _check_masks(masks: dict, T: int, R: int, where: str) -> dict[str, np.ndarray]:
    out = {}
    for k in ("person", "skin", "occluded"):
        if k not in masks:
            raise HeadrepError(f"{where}: masks lack '{k}'")
        a = np.asarray(masks[k])
        if a.shape != (T, R, R):
            raise HeadrepError(f"{where}: mask '{k}' has shape {list(a.shape)}, expected {[T, R, R]}")
        out[k] = a.astype(np.float32) if k == "person" else a.astype(bool)
    return out


def _write_masks(path: Path, masks: dict) -> None:
    from headrep.io import atomic_write

    with atomic_write(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, person=np.round(np.clip(masks["person"], 0, 1) * 255).astype(np.uint8),
                                skin=np.packbits(masks["skin"], axis=-1),
                                occluded=np.packbits(masks["occluded"], axis=-1))


def _read_folder(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, int]]:
    """Read rep.json and rep.safetensors of ``path`` and validate them against each other."""
    where = f"HeadRep {path}"
    if not path.exists():
        raise HeadrepError(f"{where} does not exist")
    if not path.is_dir():
        raise HeadrepError(f"{where} is not a folder (a HeadRep is a folder holding {JSON_FILE} and "
                           f"{TENSOR_FILE})")
    jpath, tpath = path / JSON_FILE, path / TENSOR_FILE
    if not jpath.is_file():
        raise HeadrepError(f"{where}: {JSON_FILE} is missing (not a HeadRep folder?)")
    if not tpath.is_file():
        raise HeadrepError(f"{where}: {TENSOR_FILE} is missing")
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeadrepError(f"{where}: {JSON_FILE} cannot be read as JSON: {exc}") from None
    dims = _check_json(meta, where)
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(tpath))
    except Exception as exc:  # safetensors raises several types for damaged files
        raise HeadrepError(f"{where}: {TENSOR_FILE} cannot be read: {exc}") from None
    _check_tensors(tensors, dims, where)
    _check_swing(tensors, bool(meta["topology"].get("hair_hangs", False)), where)
    if int(tensors["valid"].sum()) != int(meta["frames"]["valid"]):
        raise HeadrepError(f"{where}: {JSON_FILE} records {meta['frames']['valid']} valid frames but "
                           f"'valid' has {int(tensors['valid'].sum())}")
    return meta, tensors, dims


def resolve_model(meta: dict, model: str | Path | None, where: str) -> Path:
    """The model file to rebuild a rep with, checked against the recorded sha256 (HeadrepError otherwise).

    ``model`` given: that file. Else the recorded path; for a stand-in rep whose recorded cache file is gone
    or changed, the current stand-in (``headrep.model.standin.standin_path()``, regenerated as needed).
    """
    from headrep.io import file_sha256

    rec = meta["model"]
    sha = str(rec["model_sha256"])
    if model is not None:
        mpath = Path(model).expanduser()
    else:
        mpath = Path(rec["model_path"])
        own = "standin" if rec["standin"] else ("open" if rec.get("kind") == "open" else None)
        if own and not (mpath.is_file() and file_sha256(mpath) == sha):
            from headrep.model.body import resolve_model_path

            mpath = resolve_model_path(own)  # the project's own model file, rebuilt in the cache as needed
    if not mpath.is_file():
        raise HeadrepError(f"{where} was fitted with model {rec['model_path']} (sha256 {sha[:12]}…), "
                           f"which is not there ({mpath}); pass --model with the original file")
    got = file_sha256(mpath)
    if got != sha:
        what = "the current stand-in model " if (model is None and rec["standin"]) else ""
        raise HeadrepError(f"{where} was fitted with model {rec['model_path']} (sha256 {sha[:12]}…); "
                           f"{what}{mpath} differs (sha256 {got[:12]}…); pass --model with the original file")
    return mpath


# ----------------------------------------------------------------------------------------------------------


class HeadRep:
    """A fitted head for one video: parameters, dense offsets, camera and provenance.

    Build one with :meth:`create` (in memory; the fitter does this) and :meth:`save` it, or :meth:`load` a
    saved folder. ``body`` (BodyModel) and ``head`` (DenseHead) are the model it was fitted with; ``tensors``
    holds the tensors listed in the module docs (CPU), ``meta`` the json. All geometry methods run without
    gradients and return CPU tensors.
    """

    def __init__(self, body, head, tensors: dict[str, torch.Tensor], meta: dict, path: Path | None = None):
        self.body = body
        self.head = head
        self.tensors = tensors
        self.meta = meta
        self.path = Path(path) if path is not None else None
        self._fv_t = tensors["face_vertices"].long()
        self._masks = None

    def require_model(self) -> None:
        """HeadrepError unless the rep was loaded with its model (the geometry methods need it)."""
        if self.head is None:
            raise HeadrepError(f"{self!r} was loaded without its model (build=False); load it with build=True")

    # --- construction -----------------------------------------------------------------------------------
    @classmethod
    def create(cls, body, head, tensors: dict, source: dict, resolution: int, fit: dict,
               masks: dict | None = None) -> "HeadRep":
        """Assemble a rep in memory (nothing is written; call :meth:`save`).

        ``tensors``: betas [nb] (or [1,nb]), expression [T,ne], pose [T,55,3], transl [T,3], focal (float or
        [1]), principal [2], boxes [T,3], and optionally static_offsets [Nd,3] (default 0), dynamic_offsets
        [T,Nf,3] compact or [T,Nd,3] dense (only the face vertices are kept; default 0), face_vertices
        (default np.nonzero(head.face_mask)), valid [T] (default all 1), frame_indices [T] (default 0..T-1),
        landmarks [T,478,3], albedo [Nd,C] with light [T,9,C]. numpy arrays and Python numbers are accepted.
        ``masks``: optional per-frame crop masks {"person", "skin", "occluded"} [T,R,R] (saved as masks.npz).
        ``source``: {"path", "kind", "fps",
        "image_size": [H, W] of the loaded frames, "scale": loaded pixels per source pixel, "num_frames"};
        ``fit``: the fit configuration plus "seed" and "stats" (stored as given, made JSON-safe).
        Raises HeadrepError on inconsistent shapes or non-finite values.
        """
        dt = body.dtype
        t: dict[str, torch.Tensor] = {}
        for k, v in tensors.items():
            if v is None:
                continue
            t[k] = v.detach().cpu().clone() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))
        if "betas" in t and t["betas"].dim() == 2 and t["betas"].shape[0] == 1:
            t["betas"] = t["betas"][0]
        if "focal" in t:
            t["focal"] = t["focal"].reshape(-1)
        T = int(t["pose"].shape[0]) if "pose" in t else 0
        Nd = head.num_vertices
        if "face_vertices" not in t:
            t["face_vertices"] = torch.as_tensor(np.nonzero(np.asarray(head.face_mask))[0])
        fv = t["face_vertices"].long()
        Nf = int(fv.numel())
        if "static_offsets" not in t:
            t["static_offsets"] = torch.zeros(Nd, 3, dtype=dt)
        if "dynamic_offsets" not in t:
            t["dynamic_offsets"] = torch.zeros(T, Nf, 3, dtype=dt)
        elif t["dynamic_offsets"].dim() == 3 and t["dynamic_offsets"].shape[1] == Nd and Nd != Nf:
            t["dynamic_offsets"] = t["dynamic_offsets"][:, fv]
        t.setdefault("valid", torch.ones(T, dtype=torch.uint8))
        t.setdefault("frame_indices", torch.arange(T, dtype=torch.int64))
        for k in list(t):
            kind = {**_SPEC, **_OPTIONAL}.get(k, (None, None))[1]
            if k in _FLOAT64:
                t[k] = t[k].to(torch.float64)
            elif kind == "float":
                t[k] = t[k].to(dt)
        t["face_vertices"] = t["face_vertices"].to(torch.int64)
        t["frame_indices"] = t["frame_indices"].to(torch.int64)
        t["valid"] = t["valid"].to(torch.uint8)
        dims = {"T": T, "nb": body.num_betas, "ne": body.num_expression, "Nd": Nd, "Nf": Nf}
        _check_tensors(t, dims, "HeadRep.create")
        _check_swing(t, head.hair_hangs, "HeadRep.create")
        resolution = int(resolution)
        if resolution <= 0:
            raise HeadrepError(f"HeadRep.create: resolution must be positive, got {resolution}")
        src = {"path": None, "kind": "video", "fps": None, "image_size": None, "scale": 1.0, "num_frames": None}
        src.update(source or {})
        if src["path"] is not None and not str(src["path"]).startswith("synthetic"):
            src["path"] = str(Path(src["path"]).expanduser().resolve())
        if src["fps"] is None or not float(src["fps"]) > 0:
            raise HeadrepError(f"HeadRep.create: source fps must be positive, got {src['fps']!r}")
        fit = dict(fit or {})
        fit.setdefault("seed", None)
        fit.setdefault("stats", {})
        meta = {
            "format": FORMAT, "version": VERSION, "created": _utc_now(),
            "source": src, "resolution": resolution, "model": body.provenance(),
            "topology": {"levels": int(head.levels), "hash": head.topology.hash(), "num_dense": int(Nd),
                         "num_face_vertices": Nf, "hair_hangs": head.hair_hangs},
            "fit": fit, "versions": versions(),
            "frames": {"count": T, "valid": int(t["valid"].sum())},
        }
        meta = json.loads(json.dumps(_jsonable(meta)))  # exactly what save() will write
        rep = cls(body, head, t, meta)
        if masks is not None:
            rep._masks = _check_masks(masks, T, resolution, "HeadRep.create")
        return rep

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the folder ``path`` (rep.safetensors + rep.json) atomically.

        A non-empty existing folder is refused unless ``overwrite``; with ``overwrite`` the whole folder is
        replaced (old renders/ and meshes/ included, as they would describe the old rep). Returns the path.
        """
        from headrep.io import atomic_dir, check_output_dir

        path = check_output_dir(Path(path), overwrite)
        masks = self.masks()
        with atomic_dir(path) as tmp:
            _write_tensors(tmp / TENSOR_FILE, self.tensors)
            _write_json(tmp / JSON_FILE, self.meta)
            if masks is not None:
                _write_masks(tmp / MASK_FILE, masks)
        self.path = path
        return path

    def masks(self) -> dict[str, np.ndarray] | None:
        """The fit's per-frame crop masks {"person" float [T,R,R] in [0,1], "skin" bool, "occluded" bool}, or
        None for a rep fitted without them (read from masks.npz on first use)."""
        if self._masks is None and self.path is not None and (self.path / MASK_FILE).is_file():
            with np.load(self.path / MASK_FILE) as d:
                m = {"person": d["person"].astype(np.float32) / 255.0,
                     "skin": np.unpackbits(d["skin"], axis=-1, count=self.resolution).astype(bool),
                     "occluded": np.unpackbits(d["occluded"], axis=-1, count=self.resolution).astype(bool)}
            self._masks = _check_masks(m, self.num_frames, self.resolution, f"HeadRep {self.path}")
        return self._masks

    @property
    def has_appearance(self) -> bool:
        """True when the rep carries an albedo and per-frame lights (a photometric fit)."""
        return "albedo" in self.tensors

    @classmethod
    def load(cls, path: str | Path, model: str | Path | None = None, build: bool = True) -> "HeadRep":
        """Read and validate a rep folder; rebuild its BodyModel and DenseHead.

        ``model``: the SMPL-X-format .npz to use; default the recorded model path (for a stand-in rep, the
        recorded cached file if it is still there, else the current stand-in, regenerated as needed). The
        file's sha256 must equal the recorded one, and the rebuilt dense topology's hash the recorded one.
        ``build=False`` only reads and validates the files (``body`` and ``head`` are None: enough for
        :meth:`summary` and the tensors, not for geometry). Raises HeadrepError naming the folder and the
        problem.
        """
        from headrep.model.body import BodyModel
        from headrep.model.head import DenseHead

        path = Path(path)
        where = f"HeadRep {path}"
        meta, tensors, dims = _read_folder(path)
        if not build:
            return cls(None, None, tensors, meta, path)
        mpath = resolve_model(meta, model, where)
        body = BodyModel(mpath, num_betas=dims["nb"], num_expression=dims["ne"])
        if body.num_betas != dims["nb"] or body.num_expression != dims["ne"]:
            raise HeadrepError(f"{where}: model {mpath} gives {body.num_betas} betas / {body.num_expression} "
                               f"expression coefficients, the rep has {dims['nb']} / {dims['ne']}")
        # a rep from before hanging hair poses its D_static with the head everywhere
        head = DenseHead(body, levels=int(meta["topology"]["levels"]),
                         hair_hangs=bool(meta["topology"].get("hair_hangs", False)))
        if head.num_vertices != dims["Nd"] or head.topology.hash() != meta["topology"]["hash"]:
            raise HeadrepError(f"{where}: the dense topology rebuilt from {mpath} at levels="
                               f"{meta['topology']['levels']} ({head.num_vertices} vertices, hash "
                               f"{head.topology.hash()[:12]}…) differs from the recorded one "
                               f"({dims['Nd']} vertices, hash {str(meta['topology']['hash'])[:12]}…)")
        for k in ("betas", "expression", "pose", "transl", "static_offsets", "dynamic_offsets", "hair_swing"):
            if k in tensors:
                tensors[k] = tensors[k].to(body.dtype)
        return cls(body, head, tensors, meta, path)

    # --- basic properties -------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return int(self.tensors["pose"].shape[0])

    def __len__(self) -> int:
        return self.num_frames

    @property
    def frames(self) -> np.ndarray:
        """Source-video frame index of each rep frame (int64, strictly increasing)."""
        return self.tensors["frame_indices"].numpy().astype(np.int64)

    @property
    def valid(self) -> np.ndarray:
        return self.tensors["valid"].numpy().astype(bool)

    @property
    def source(self) -> dict:
        return self.meta["source"]

    @property
    def resolution(self) -> int:
        return int(self.meta["resolution"])

    @property
    def source_fps(self) -> float:
        return float(self.meta["source"]["fps"])

    @property
    def stride(self) -> int:
        """Typical step between consecutive fitted source frames (1 when every frame was fitted)."""
        f = self.frames
        return int(max(1, np.median(np.diff(f)))) if len(f) > 1 else 1

    @property
    def fps(self) -> float:
        """Frame rate of the rep's frames: the source fps divided by the frame stride."""
        return self.source_fps / self.stride

    @property
    def is_standin(self) -> bool:
        return bool(self.meta["model"]["standin"])

    @property
    def face_vertices(self) -> np.ndarray:
        return self.tensors["face_vertices"].numpy()

    @property
    def landmarks(self) -> torch.Tensor | None:
        return self.tensors.get("landmarks")

    @property
    def focal(self) -> float:
        return float(self.tensors["focal"][0])

    @property
    def principal(self) -> np.ndarray:
        return self.tensors["principal"].numpy().astype(np.float64)

    @property
    def boxes(self) -> np.ndarray:
        return self.tensors["boxes"].numpy().astype(np.float64)

    @property
    def image_size(self) -> tuple[int, int] | None:
        s = self.meta["source"].get("image_size")
        return (int(s[0]), int(s[1])) if s else None

    def __repr__(self) -> str:
        where = f" at {self.path}" if self.path else ""
        tag = " STAND-IN" if self.is_standin else ""
        return f"HeadRep({self.num_frames} frames, {int(self.valid.sum())} valid, R={self.resolution}{tag}{where})"

    # --- geometry ---------------------------------------------------------------------------------------
    def dynamic_offsets_dense(self, ts=None) -> torch.Tensor:
        """Dynamic offsets of frames ``ts`` on all dense vertices [B,Nd,3] (zeros off the face)."""
        self.require_model()
        idx = torch.as_tensor(_index_list(ts, self.num_frames))
        compact = self.tensors["dynamic_offsets"][idx]
        out = compact.new_zeros(len(idx), self.head.num_vertices, 3)
        out[:, self._fv_t] = compact
        return out

    def _forward(self, idx: np.ndarray):
        t = self.tensors
        i = torch.as_tensor(idx)
        with torch.no_grad():
            return self.head(t["betas"][None], t["expression"][i], t["pose"][i], transl=t["transl"][i],
                             static_offsets=t["static_offsets"], dynamic_offsets=self.dynamic_offsets_dense(idx),
                             hair_swing=t["hair_swing"][i] if "hair_swing" in t else None)

    def vertices(self, ts=None, space: str = "camera", batch: int = 32) -> torch.Tensor:
        """Posed dense vertices of frames ``ts`` (int, slice, sequence, None = all) -> [B,Nd,3] CPU.

        space "model": SMPL-X axes, including global orientation and transl; "camera": OpenCV camera
        (model * [1,-1,-1]). Computed ``batch`` frames at a time.
        """
        _check_space(space)
        self.require_model()
        idx = _index_list(ts, self.num_frames)
        parts = [self._forward(idx[k:k + batch]).vertices for k in range(0, len(idx), batch)]
        v = torch.cat(parts, 0) if parts else torch.zeros(0, self.head.num_vertices, 3, dtype=self.body.dtype)
        return to_camera(v) if space == "camera" else v

    def landmarks68(self, ts=None, space: str = "camera", batch: int = 32) -> torch.Tensor:
        """The model's iBUG-68 landmarks of frames ``ts`` [B,68,3] (from the coarse body model, so without the
        dense offsets; [B,51,3] for a model without a contour table)."""
        _check_space(space)
        self.require_model()
        idx = _index_list(ts, self.num_frames)
        t = self.tensors
        parts = []
        for k in range(0, len(idx), batch):
            i = torch.as_tensor(idx[k:k + batch])
            with torch.no_grad():  # the full coarse body (the dense head's forward skips its landmarks)
                out = self.body(t["betas"][None], t["expression"][i], t["pose"][i], transl=t["transl"][i])
            parts.append(out.landmarks68)
        v = torch.cat(parts, 0) if parts else torch.zeros(0, 68, 3, dtype=self.body.dtype)
        return to_camera(v) if space == "camera" else v

    def neutral_vertices(self) -> torch.Tensor:
        """[Nd,3] model space: the fitted betas with zero expression and pose, zero transl, + static offsets."""
        self.require_model()
        p = self.body.zero_params(1)
        with torch.no_grad():
            out = self.head(self.tensors["betas"][None], p["expression"], p["pose"],
                            static_offsets=self.tensors["static_offsets"])
        return out.vertices[0]

    def neutral_mesh(self):
        """trimesh.Trimesh of :meth:`neutral_vertices`."""
        return self.to_mesh(self.neutral_vertices())

    def to_mesh(self, vertices: torch.Tensor):
        """trimesh.Trimesh of dense vertices [Nd,3] with the dense head's faces (no processing)."""
        self.require_model()
        return _trimesh(vertices, self.head.faces)

    def mesh(self, t: int, space: str = "camera"):
        """trimesh.Trimesh of frame position ``t`` (vertex order = the dense head's; no processing)."""
        return _trimesh(self.vertices([t], space=space)[0], self.head.faces)

    # --- cameras ----------------------------------------------------------------------------------------
    def crop_camera(self, t: int, resolution: int | None = None, near: float = 0.05, far: float = 20.0):
        """PinholeCamera of frame position ``t``'s square crop at ``resolution`` (default the fitted one)."""
        from headrep.render.maps import PinholeCamera

        t = int(_index_list(t, self.num_frames)[0])
        R = int(resolution or self.resolution)
        x0, y0, side = (float(v) for v in self.tensors["boxes"][t])
        s = R / side
        px, py = (float(v) for v in self.tensors["principal"])
        f = self.focal * s
        return PinholeCamera(f, f, (px - x0) * s, (py - y0) * s, R, R, near, far)

    def frame_camera(self, near: float = 0.05, far: float = 20.0):
        """PinholeCamera of the full loaded frame (needs source image_size)."""
        from headrep.render.maps import PinholeCamera

        size = self.image_size
        if size is None:
            raise HeadrepError("this HeadRep records no source image_size; the full-frame camera is unknown")
        px, py = (float(v) for v in self.tensors["principal"])
        return PinholeCamera(self.focal, self.focal, px, py, size[1], size[0], near, far)

    def crop_transform(self, t: int, resolution: int | None = None) -> np.ndarray:
        """2×3 affine (for cv2.warpAffine) from loaded-frame pixels to frame ``t``'s crop pixels:
        ``crop_xy = (xy - (x0, y0)) * s``, ``s = resolution / side``."""
        t = int(_index_list(t, self.num_frames)[0])
        R = int(resolution or self.resolution)
        x0, y0, side = (float(v) for v in self.tensors["boxes"][t])
        s = R / side
        return np.array([[s, 0.0, -x0 * s], [0.0, s, -y0 * s]], dtype=np.float64)

    # --- rendering --------------------------------------------------------------------------------------
    def render(self, t: int, resolution: int | None = None, ctx=None) -> dict:
        """Normal / depth / mask maps of frame position ``t`` in its crop camera (see render_maps).

        Returns CPU tensors without a batch axis: normal [R,R,3], depth [R,R] (metres, 0 where empty),
        mask [R,R], and "camera" (the PinholeCamera).
        """
        from headrep.render import get_context
        from headrep.render.maps import render_maps

        ctx = ctx if ctx is not None else get_context("cpu")
        dev = getattr(ctx, "device", torch.device("cpu"))
        cam = self.crop_camera(t, resolution)
        v = self.vertices([t], space="camera").to(dev)
        with torch.no_grad():
            m = render_maps(ctx, v, self.head.faces_t.to(dev), cam)
        out = {k: m[k][0].cpu() for k in ("normal", "depth", "mask")}
        out["camera"] = cam
        return out

def _check_space(space: str) -> None:
    if space not in ("camera", "model"):
        raise ValueError(f"space must be 'camera' or 'model', got {space!r}")




def _trimesh(vertices: torch.Tensor, faces: np.ndarray):
    import trimesh

    return trimesh.Trimesh(vertices=vertices.detach().cpu().numpy().astype(np.float64),
                           faces=np.asarray(faces, dtype=np.int64), process=False)


def load(path: str | Path, model: str | Path | None = None) -> HeadRep:
    """Shorthand for :meth:`HeadRep.load`."""
    return HeadRep.load(path, model=model)
