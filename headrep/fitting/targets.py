"""Dense per-frame targets (camera-space normals, relative depth, a mask) for fitting a head to face video.

The fitter renders its head's normal and depth maps (:func:`headrep.render.render_maps`) into each face crop
and compares them with the :class:`Targets` an estimator makes from the crops:

* :class:`MediaPipeMeshTargets` (the default, needs no network or weights): renders MediaPipe's own per-frame
  face mesh (its 478 points, the canonical 898-triangle tessellation) with our renderer;
* :class:`NetworkTargets`: a user's own normal (and depth) network, a local TorchScript or ONNX file - see its
  docstring for the input/output contract (this is what ``headrep --estimator PATH`` loads);
* :func:`make_estimator` picks one from a CLI-style spec.

Loss helpers the fitter uses: :func:`scale_shift_invariant_depth_error`, :func:`angular_normal_error` (a
metric, degrees) and :func:`normal_loss` (differentiable 1 - cos with per-frame outlier rejection).

Conventions (the project's): OpenCV camera - x right, y down, z forward; image row 0 at the top; normals are
camera-space unit vectors, a surface facing the camera has n_z < 0; depth is relative (any scale and shift
per frame), larger = farther.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from headrep.errors import HeadrepError
from headrep.model.constants import NUM_MP_FACE

__all__ = [
    "Targets", "TargetEstimator", "MediaPipeMeshTargets", "NetworkTargets", "make_estimator",
    "scale_shift_invariant_depth_error", "angular_normal_error", "normal_loss",
    "MP_LIPS_INNER", "MP_RIGHT_EYE_LOOP", "MP_LEFT_EYE_LOOP",
]

# MediaPipe FACEMESH loops (indices into the 468 face points). The canonical tessellation closes each of
# these polygons with (n - 2) triangles that are not a real surface (the eye opening, the mouth opening).
MP_LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
MP_RIGHT_EYE_LOOP = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
MP_LEFT_EYE_LOOP = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)
_EXCLUDE_LOOPS = {"eyes": (MP_RIGHT_EYE_LOOP, MP_LEFT_EYE_LOOP), "mouth": (MP_LIPS_INNER,)}



# ----------------------------------------------------------------------------------------------------------
# Targets and the estimator protocol.


@dataclass
class Targets:
    """Dense targets for T square crops of R x R pixels.

    normal [T,R,R,3] float32 camera-space unit normals (OpenCV; facing the camera: n_z < 0), 0 where masked out;
    depth [T,R,R] float32 relative depth (any scale and shift per frame; larger = farther), 0 where masked out;
    mask [T,R,R] bool, where the estimate is meaningful; source: estimator description (recorded in the rep);
    has_depth: False when the estimator gives no depth (depth is then all zeros and the depth loss is off);
    coarse: True when the maps are those of a coarse mesh (MediaPipe's 468 points) that holds no expression
    detail: with the photometric term on, they then supervise the geometry without D_dyn (the image does that).
    """

    normal: np.ndarray
    depth: np.ndarray
    mask: np.ndarray
    source: str
    has_depth: bool = True
    coarse: bool = False

    def validate(self, num_frames: int | None = None, size: int | None = None) -> "Targets":
        """Check shapes and dtypes (optionally against T frames of size x size pixels); returns self."""
        n, d, m = self.normal, self.depth, self.mask
        ok = (isinstance(n, np.ndarray) and isinstance(d, np.ndarray) and isinstance(m, np.ndarray)
              and n.ndim == 4 and n.shape[-1] == 3 and d.shape == n.shape[:3] and m.shape == n.shape[:3]
              and n.shape[1] == n.shape[2] and m.dtype == np.bool_)
        if not ok:
            raise HeadrepError(
                "targets must be normal [T,R,R,3], depth [T,R,R], mask [T,R,R] bool numpy arrays; got "
                f"{getattr(n, 'shape', type(n))}, {getattr(d, 'shape', type(d))}, "
                f"{getattr(m, 'shape', type(m))} {getattr(m, 'dtype', '')} from {self.source!r}")
        if num_frames is not None and n.shape[0] != num_frames:
            raise HeadrepError(f"estimator {self.source!r} returned {n.shape[0]} frames for {num_frames} crops")
        if size is not None and n.shape[1] != size:
            raise HeadrepError(f"estimator {self.source!r} returned {n.shape[1]}-pixel maps for {size}-pixel crops")
        return self

    def __len__(self) -> int:
        return int(self.normal.shape[0])


@runtime_checkable
class TargetEstimator(Protocol):
    """Anything with ``estimate(crops, points, valid) -> Targets``.

    crops [T,R,R,3] uint8 RGB square face crops; points [T,478,3] float32 MediaPipe points in crop pixels (x, y
    and z in the same pixel units, smaller z = closer to the camera; NaN on invalid frames); valid [T] bool.
    Invalid frames get an all-False mask.
    """

    def estimate(self, crops: np.ndarray, points: np.ndarray, valid: np.ndarray) -> Targets: ...


def _check_inputs(crops, points, valid, need_crops: bool = True, need_points: bool = True):
    """Validated (crops, points, valid, T, R); crops / points may be None when not needed (R is then None)."""
    if valid is None:
        raise HeadrepError("estimate() needs valid [T] bool")
    valid = np.asarray(valid).astype(bool).reshape(-1)
    T = valid.shape[0]
    R = None
    if crops is not None or need_crops:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2] or crops.shape[0] != T:
            raise HeadrepError(f"crops must be [T,R,R,3] RGB with T={T} (len(valid)), got {crops.shape}")
        if crops.dtype != np.uint8:
            raise HeadrepError(f"crops must be uint8 RGB, got {crops.dtype}")
        R = int(crops.shape[1])
    if points is not None or need_points:
        points = np.asarray(points, dtype=np.float32)
        if points.ndim != 3 or points.shape[0] != T or points.shape[1] < NUM_MP_FACE or points.shape[2] != 3:
            raise HeadrepError(f"points must be [T,478,3] MediaPipe points with T={T}, got {points.shape}")
    return crops, points, valid, T, R


def _progress(total: int, desc: str, enable, automatic_from: int = 3):
    """headrep.io.progress on stderr, or None: ``enable`` None shows it from ``automatic_from`` frames on."""
    if enable is False or total < 1 or (enable is None and total < automatic_from):
        return None
    from headrep.io import progress

    return progress(None, total, desc, "frame", leave=False)


# ----------------------------------------------------------------------------------------------------------
# MediaPipe mesh targets.


def _closing_triangles(tri: np.ndarray, loops) -> np.ndarray:
    """Indices of the triangles whose three corners all lie on one of ``loops`` (the polygon fills)."""
    hit = np.zeros(len(tri), bool)
    for loop in loops:
        on = np.zeros(int(tri.max()) + 1, bool)
        on[list(loop)] = True
        hit |= on[tri].all(1)
    return np.nonzero(hit)[0]


def _mediapipe_triangles() -> np.ndarray:
    """The canonical 898 triangles, wound so that a face looking at an OpenCV camera has normals n_z < 0."""
    from headrep.model.standin import canonical_face

    v, tri = canonical_face()  # model space: y up, z toward the viewer
    cam = np.stack([v[:, 0], -v[:, 1], -v[:, 2]], 1)  # the face seen from the front by an OpenCV camera
    n = np.cross(cam[tri[:, 1]] - cam[tri[:, 0]], cam[tri[:, 2]] - cam[tri[:, 0]])
    if float(n[:, 2].sum()) > 0:  # wound the other way: flip every triangle
        tri = tri[:, [0, 2, 1]]
    return np.ascontiguousarray(tri.astype(np.int64))


def _erode(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Erosion of bool masks [B,H,W] by a (2 radius + 1)^2 square (separable; the image border does not erode)."""
    out = mask.clone()
    for k in range(1, radius + 1):
        out[:, :, k:] &= mask[:, :, :-k]
        out[:, :, :-k] &= mask[:, :, k:]
    rows = out.clone()
    for k in range(1, radius + 1):
        out[:, k:] &= rows[:, :-k]
        out[:, :-k] &= rows[:, k:]
    return out


class MediaPipeMeshTargets:
    """Targets from MediaPipe's own per-frame face mesh, rendered with the project's renderer.

    MediaPipe's points are (nearly) orthographic camera-space coordinates in crop pixels with OpenCV axes. The
    468 face points and the canonical tessellation (898 triangles) are placed far away (Z = z + D, D = 1000 R)
    and seen by a pinhole camera with f = D and the principal point at the crop centre c = (R - 1) / 2; X and Y
    are pre-scaled by Z / D so that each point projects exactly onto its MediaPipe pixel (x, y) (no
    perspective residual at all; the geometry changes by a relative z / D < 1e-3).

    * normal: interpolated, renormalised area-weighted vertex normals of that mesh (camera space, n_z < 0 facing
      the camera). With ``exclude``, the vertex normals are computed from the real-surface triangles only, so
      the eye / mouth fills do not bend the normals of the eyelids and lips.
    * depth: rendered Z - D, i.e. MediaPipe's z in pixel units (relative), perspective-correct.
    * mask: pixel centres covered by the mesh where its normal faces the camera, minus the pixels whose visible triangle fills an excluded
      opening (``exclude``: "eyes" - the two eye loops, "mouth" - the inner-lip loop; occlusion-correct, since
      it is decided by the rasterised triangle id), then eroded by a (2 ``erode`` + 1)^2 square (the mesh
      edge of MediaPipe is unreliable, and so are the rims of the openings).

    Invalid frames, or frames whose 468 face points are not all finite, get an all-False mask and zeros.
    Frames are rendered in batches of ``batch_size`` with a tqdm bar on stderr for long clips
    (``progress``: None = from 4 batches on, True / False = always / never). ``device``: the render context
    (:func:`headrep.render.get_context`: "cpu", "auto", "cuda"). About 1-4 ms a frame at R = 256 on 2 CPU cores.
    ``torch_threads`` (default 1; None leaves torch alone): torch's intra-op threads while rendering on the CPU
    (restored afterwards). The heavy kernels are numba's and run on all cores either way; the many small torch
    ops around them are memory-bound, and with several threads they stall on a busy machine (17 vs 2.5 ms a
    frame measured at R = 256 with other jobs running on 2 cores).

    The normals are those of MediaPipe's (weak-perspective) reconstruction, seen along parallel rays: a
    perspective camera's rays through the crop differ from them by at most atan(R / 2f) (a few degrees for
    a face crop), far below the accuracy of MediaPipe's own geometry.
    """

    def __init__(self, exclude=("eyes", "mouth"), erode: int = 2, device="cpu", batch_size: int = 32,
                 progress=None, distance_factor: float = 1000.0, torch_threads: int | None = 1):
        if exclude is True:
            exclude = ("eyes", "mouth")
        elif exclude is None or exclude is False:
            exclude = ()
        elif isinstance(exclude, str):
            exclude = (exclude,)
        exclude = tuple(exclude)
        unknown = [e for e in exclude if e not in _EXCLUDE_LOOPS]
        if unknown:
            raise HeadrepError(f"unknown exclude region(s) {unknown}; expected a subset of {sorted(_EXCLUDE_LOOPS)}")
        if int(erode) < 0 or int(batch_size) < 1 or not distance_factor > 10:
            raise HeadrepError("MediaPipeMeshTargets needs erode >= 0, batch_size >= 1 and distance_factor > 10")
        self.exclude = exclude
        self.erode = int(erode)
        self.batch_size = int(batch_size)
        self.progress = progress
        self.distance_factor = float(distance_factor)
        self.torch_threads = torch_threads
        self._device = device
        self._ctx = None
        tri = _mediapipe_triangles()
        loops = [loop for name in exclude for loop in _EXCLUDE_LOOPS[name]]
        closing = _closing_triangles(tri, loops) if loops else np.zeros(0, np.int64)
        keep = np.ones(len(tri), bool)
        keep[closing] = False
        self._tri = torch.from_numpy(tri.astype(np.int32))
        self._surface_tri = torch.from_numpy(tri[keep].astype(np.int32))
        excluded = np.zeros(len(tri) + 1, bool)  # indexed by triangle id + 1 (0 = empty pixel)
        excluded[closing + 1] = True
        self._excluded_ids = torch.from_numpy(excluded)

    @property
    def source(self) -> str:
        ex = "+".join(self.exclude) if self.exclude else "none"
        return f"mediapipe-mesh (468 points, 898 triangles; excluded: {ex}; erode {self.erode} px)"

    @property
    def ctx(self):
        if self._ctx is None:
            from headrep.render import get_context

            self._ctx = get_context(self._device)
        return self._ctx

    def camera(self, size: int, window=None):
        """The far pinhole camera the mesh is rendered with (f = D = distance_factor * size); ``window``
        (x0, y0, x1, y1), inclusive pixel bounds, gives the camera of that sub-image of the crop."""
        from headrep.render import PinholeCamera

        D = self.distance_factor * size
        c = (size - 1) / 2.0
        x0, y0, x1, y1 = (0, 0, size - 1, size - 1) if window is None else window
        return PinholeCamera(D, D, c - x0, c - y0, x1 - x0 + 1, y1 - y0 + 1, near=D - 4.0 * size,
                             far=D + 4.0 * size)

    def mesh_vertices(self, points: np.ndarray, size: int) -> torch.Tensor:
        """Camera-space vertices [B,468,3] float64 of the far mesh for MediaPipe points [B,>=468,3] (pixels)."""
        p = torch.as_tensor(np.asarray(points, np.float32)[:, :NUM_MP_FACE], dtype=torch.float64)
        D = self.distance_factor * size
        c = (size - 1) / 2.0
        # keep the mesh between the camera's near and far planes whatever the points' z range
        z = p[..., 2].clamp(-3.5 * size, 3.5 * size)
        Z = z + D
        k = Z / D  # X, Y pre-scaled so that D X / Z + c == x exactly
        return torch.stack([(p[..., 0] - c) * k, (p[..., 1] - c) * k, Z], -1)

    def _window(self, points: np.ndarray, size: int):
        """Inclusive pixel bounds (x0, y0, x1, y1) holding every pixel the meshes of ``points`` can cover
        (their bounding box plus a 1-pixel empty border, clipped to the crop), or None when off the crop."""
        xy = points[:, :NUM_MP_FACE, :2].reshape(-1, 2)
        lo = np.floor(xy.min(0)).astype(np.int64) - 1
        hi = np.ceil(xy.max(0)).astype(np.int64) + 1
        lo, hi = np.maximum(lo, 0), np.minimum(hi, size - 1)
        if (hi < lo).any():
            return None
        return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])

    def render(self, points: np.ndarray, size: int, window=None):
        """(normal [B,h,w,3], depth [B,h,w], mask [B,h,w] bool) torch tensors for B frames of finite points,
        for the crop (h = w = size) or, with ``window`` = (x0, y0, x1, y1), that part of it."""
        from headrep.model.meshops import vertex_normals
        from headrep.render import interpolate, rasterize

        ctx = self.ctx
        dev = getattr(ctx, "device", torch.device("cpu"))
        cam = self.camera(size, window)
        D = self.distance_factor * size
        verts = self.mesh_vertices(points, size)
        # clip space in float64: z_clip = ((f + n) Z - 2 f n) / (f - n) cancels catastrophically in float32 at Z ~ D
        pos = cam.to_clip(verts).to(torch.float32).to(dev)
        # normals and depth from the mesh shifted by -D (same normals, no float32 precision loss at Z ~ D)
        rel = (verts - verts.new_tensor([0.0, 0.0, D])).to(torch.float32).to(dev)
        tri = self._tri.to(dev)
        rast, _ = rasterize(ctx, pos, tri, cam.resolution)
        vn = vertex_normals(rel, self._surface_tri.to(dev).long())
        attr = torch.cat([vn, rel[..., 2:3]], -1).contiguous()
        out, _ = interpolate(attr, rast, tri)
        ids = rast[..., 3].to(torch.int64)  # triangle id + 1, exact in float32
        mask = (ids > 0) & (out[..., 2] < 0)  # a visible back face is a MediaPipe fold-over, not a surface
        if self.exclude:
            mask &= ~self._excluded_ids.to(dev)[ids]
        if self.erode:
            mask = _erode(mask, self.erode)
        n0, n1, n2 = out[..., :3].unbind(-1)
        scale = torch.rsqrt((n0 * n0 + n1 * n1 + n2 * n2).clamp_min(1e-20)) * mask
        return out[..., :3] * scale[..., None], out[..., 3] * mask, mask

    def estimate(self, crops: np.ndarray, points: np.ndarray, valid: np.ndarray) -> Targets:
        crops, points, valid, T, R = _check_inputs(crops, points, valid, need_crops=False)
        if R is None:
            raise HeadrepError("MediaPipeMeshTargets.estimate needs the crops (for their size)")
        normal = np.zeros((T, R, R, 3), np.float32)
        depth = np.zeros((T, R, R), np.float32)
        mask = np.zeros((T, R, R), bool)
        good = valid & np.isfinite(points[:, :NUM_MP_FACE]).all(axis=(1, 2))
        idx = np.nonzero(good)[0]
        bar = _progress(len(idx), "mediapipe targets", self.progress, automatic_from=4 * self.batch_size)
        threads = torch.get_num_threads()
        cpu = getattr(self.ctx, "backend", None) != "cuda"
        try:
            if cpu and self.torch_threads:
                torch.set_num_threads(int(self.torch_threads))
            with torch.no_grad():
                for s in range(0, len(idx), self.batch_size):
                    sel = idx[s:s + self.batch_size]
                    win = self._window(points[sel], R)
                    if win is not None:  # else the faces are off the crop: nothing to render
                        x0, y0, x1, y1 = win
                        n, d, m = self.render(points[sel], R, win)
                        normal[sel, y0:y1 + 1, x0:x1 + 1] = n.cpu().numpy()
                        depth[sel, y0:y1 + 1, x0:x1 + 1] = d.cpu().numpy()
                        mask[sel, y0:y1 + 1, x0:x1 + 1] = m.cpu().numpy()
                    if bar is not None:
                        bar.update(len(sel))
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            if bar is not None:
                bar.close()
        return Targets(normal, depth, mask, self.source, has_depth=True, coarse=True)


# ----------------------------------------------------------------------------------------------------------
# A user's own network.


_CONVENTIONS = {"opencv": (1.0, 1.0, 1.0), "opengl": (1.0, -1.0, -1.0)}


class NetworkTargets:
    """Targets from your own normal (and depth) estimator: a local TorchScript, torch.export or ONNX file.

    Files: ``.pt`` / ``.ts`` / ``.pth`` / ``.jit`` - TorchScript (``torch.jit.load``; export with
    ``torch.jit.script(model).save(path)`` or ``torch.jit.trace``); ``.pt2`` - a ``torch.export`` program
    (``torch.export.save(torch.export.export(model, (example,)), path)``, static input size); ``.onnx`` - ONNX,
    run with onnxruntime (``pip install onnxruntime``). Nothing is downloaded. Exports of e.g. Meta's Sapiens
    normal / depth models or Microsoft's DAViD (normals, relative depth, foreground mask) fit this contract once
    wrapped to take and give the tensors below (mind their normal convention and input size).

    Contract, per frame (batch 1):

    * input: float32 ``[1, 3, H, W]``, RGB in [0, 1]. H = W = the crop size, or ``input_size`` (an int or
      (H, W)) when given - the crop is resized (bilinear, antialiased) to it.
    * outputs, one of:
        - a dict (TorchScript) or named outputs (ONNX) with ``normal`` ``[1, 3, h, w]``, optionally ``depth``
          ``[1, 1, h, w]`` and optionally ``mask`` ``[1, 1, h, w]`` (a soft foreground / face mask);
        - a tuple / list (ONNX: the outputs in order): (normal[, depth[, mask]]) with those shapes;
        - a single tensor ``[1, 3, h, w]`` (normals only) or ``[1, 4, h, w]`` (normal + depth).
      Any h, w: the maps are resized back to the crop (bilinear; normals renormalised).
    * normals: unit camera-space vectors in ``normal_convention``: "opencv" (x right, y down, z forward,
      away from the viewer - our convention) or "opengl" (x right, y up, z toward the viewer: y and z are
      flipped). They are renormalised.
    * depth: relative, any scale and shift per frame, larger = farther (``depth_convention="depth"``); for
      networks that give disparity / inverse depth (larger = nearer) pass ``depth_convention="disparity"``
      (negated: an affine approximation, which the scale-and-shift-invariant depth loss absorbs locally).
      No depth output: ``Targets.depth`` is zeros and ``Targets.has_depth`` False (the fitter switches the
      depth loss off).
    * mask = finite & |n| > 0.5 (before renormalising) & finite depth & (``mask`` output > ``mask_threshold``,
      default 0.5, when the network gives a mask). ``face_mask=True`` also intersects it with the MediaPipe
      mesh mask (no exclusions, 2 px erosion) so that background / hair / body normals are not fitted.

    ``device``: "cpu" or "cuda[:N]" (TorchScript: where the module runs; ONNX: CUDAExecutionProvider first).
    Errors (missing file, unknown extension, a file that does not load, wrong output shapes) raise
    :class:`HeadrepError` naming the file and what was expected.
    """

    TORCHSCRIPT_EXTS = (".pt", ".ts", ".pth", ".jit", ".torchscript")
    EXPORT_EXTS = (".pt2",)
    ONNX_EXTS = (".onnx",)

    def __init__(self, path, normal_convention: str = "opencv", device="cpu", input_size=None,
                 mask_threshold: float | None = None, depth_convention: str = "depth", face_mask: bool = False,
                 progress=None):
        self.path = Path(path).expanduser()
        conv = str(normal_convention).lower()
        if conv not in _CONVENTIONS:
            raise HeadrepError(f"normal_convention must be one of {sorted(_CONVENTIONS)}, got {normal_convention!r}")
        if depth_convention not in ("depth", "disparity"):
            raise HeadrepError(f"depth_convention must be 'depth' or 'disparity', got {depth_convention!r}")
        self.normal_convention = conv
        self.depth_convention = depth_convention
        self.mask_threshold = mask_threshold
        self.face_mask = bool(face_mask)
        self.progress = progress
        self.device = torch.device(device)
        self._has_depth = None
        if input_size is None:
            self.input_size = None
        elif isinstance(input_size, (int, np.integer)):
            self.input_size = (int(input_size), int(input_size))
        else:
            self.input_size = tuple(int(s) for s in input_size)
            if len(self.input_size) != 2:
                raise HeadrepError(f"input_size must be an int or (H, W), got {input_size!r}")
        if self.input_size is not None and min(self.input_size) < 1:
            raise HeadrepError(f"input_size must be positive, got {input_size!r}")
        if not self.path.is_file():
            raise HeadrepError(f"estimator file {str(self.path)!r} does not exist (expected a TorchScript "
                               f"{'/'.join(self.TORCHSCRIPT_EXTS)}, torch.export .pt2 or ONNX .onnx file)")
        ext = self.path.suffix.lower()
        if ext in self.TORCHSCRIPT_EXTS:
            self.kind = "torchscript"
            self._load_torchscript()
        elif ext in self.EXPORT_EXTS:
            self.kind = "torch.export"
            self._load_export()
        elif ext in self.ONNX_EXTS:
            self.kind = "onnx"
            self._load_onnx()
        else:
            raise HeadrepError(f"estimator file {str(self.path)!r} has an unknown extension {ext!r}; expected a "
                               f"TorchScript ({', '.join(self.TORCHSCRIPT_EXTS)}), torch.export (.pt2) or "
                               "ONNX (.onnx) file")

    # -- loading ---------------------------------------------------------------------------------------------

    def _load_torchscript(self):
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated in recent torch but still loads
                warnings.simplefilter("ignore", DeprecationWarning)
                self._module = torch.jit.load(str(self.path), map_location=self.device)
            self._module.eval()
        except Exception as exc:
            raise HeadrepError(f"could not load estimator {str(self.path)!r} as TorchScript (torch.jit.load): "
                               f"{type(exc).__name__}: {exc}") from exc

    def _load_export(self):
        try:
            program = torch.export.load(str(self.path))
            self._module = program.module().to(self.device)
        except Exception as exc:
            raise HeadrepError(f"could not load estimator {str(self.path)!r} as a torch.export program "
                               f"(torch.export.load): {type(exc).__name__}: {exc}") from exc
        if self.input_size is None:  # a static-shape program tells its input size
            try:
                names = set(program.graph_signature.user_inputs)
                shapes = [tuple(n.meta["val"].shape) for n in program.graph.nodes
                          if n.op == "placeholder" and n.name in names]
                if len(shapes) == 1 and len(shapes[0]) == 4:
                    self.input_size = (int(shapes[0][2]), int(shapes[0][3]))
            except (KeyError, AttributeError, TypeError, ValueError):  # symbolic sizes: use the crop size
                pass

    def _load_onnx(self):
        try:
            import onnxruntime as ort
        except ImportError:
            raise HeadrepError(f"estimator {str(self.path)!r} is an ONNX file, but onnxruntime is not installed; "
                               "run `pip install onnxruntime` (or onnxruntime-gpu)") from None
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            self._session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as exc:
            raise HeadrepError(f"could not load estimator {str(self.path)!r} with onnxruntime: "
                               f"{type(exc).__name__}: {exc}") from exc
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise HeadrepError(f"estimator {str(self.path)!r} has {len(inputs)} inputs; expected one "
                               "float32 [1,3,H,W] RGB image")
        self._input_name = inputs[0].name
        self._output_names = [o.name for o in self._session.get_outputs()]
        if self.input_size is None:  # a fixed-size model tells its size
            shape = inputs[0].shape
            if len(shape) == 4 and all(isinstance(s, int) and s > 0 for s in shape[2:]):
                self.input_size = (int(shape[2]), int(shape[3]))

    @property
    def source(self) -> str:
        size = f", input {self.input_size[0]}x{self.input_size[1]}" if self.input_size else ""
        return f"network {self.path.name} ({self.kind}, {self.normal_convention} normals{size})"

    # -- running ---------------------------------------------------------------------------------------------

    def _run(self, x: torch.Tensor):
        """Raw network outputs for input x [1,3,H,W] float32 on CPU: a dict / tuple / tensor of CPU tensors."""
        if self.kind != "onnx":
            try:
                with torch.no_grad():
                    out = self._module(x.to(self.device))
            except Exception as exc:
                raise HeadrepError(f"estimator {str(self.path)!r} failed on a float32 {list(x.shape)} RGB input "
                                   f"in [0, 1]: {type(exc).__name__}: {exc}") from exc
            return _to_cpu(out)
        try:
            res = self._session.run(None, {self._input_name: x.numpy()})
        except Exception as exc:
            raise HeadrepError(f"estimator {str(self.path)!r} failed on a float32 {list(x.shape)} input: "
                               f"{type(exc).__name__}: {exc}") from exc
        res = [torch.from_numpy(np.asarray(r)) for r in res]
        names = [n.lower() for n in self._output_names]
        if "normal" in names or "normals" in names:
            return {n: r for n, r in zip(names, res)}
        return res[0] if len(res) == 1 else tuple(res)

    def _split(self, out):
        """(normal [3,h,w], depth [1,h,w] or None, mask [1,h,w] or None) from the network's raw output."""
        expect = ("expected a [1,3,H,W] normal tensor, a [1,4,H,W] normal+depth tensor, a (normal[, depth[, "
                  "mask]]) tuple or a dict with 'normal' (and optionally 'depth', 'mask')")
        depth = mask = None
        if isinstance(out, dict):
            key = "normal" if "normal" in out else "normals" if "normals" in out else None
            if key is None:
                raise HeadrepError(f"estimator {str(self.path)!r} returned a dict with keys {sorted(out)}; {expect}")
            normal = out[key]
            depth = out.get("depth")
            mask = out.get("mask")
        elif isinstance(out, (tuple, list)):
            if not 1 <= len(out) <= 3:
                raise HeadrepError(f"estimator {str(self.path)!r} returned {len(out)} outputs; {expect}")
            normal = out[0]
            depth = out[1] if len(out) > 1 else None
            mask = out[2] if len(out) > 2 else None
        elif isinstance(out, torch.Tensor):
            normal = out
            if out.dim() == 4 and out.shape[1] == 4:
                normal, depth = out[:, :3], out[:, 3:]
        else:
            raise HeadrepError(f"estimator {str(self.path)!r} returned a {type(out).__name__}; {expect}")

        def check(t, channels, name):
            if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != channels \
                    or t.shape[2] < 1 or t.shape[3] < 1:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise HeadrepError(f"estimator {str(self.path)!r} returned {name} of shape {shape}; expected "
                                   f"[1,{channels},H,W] ({expect})")
            return t[0].float()

        normal = check(normal, 3, "normal")
        depth = check(depth, 1, "depth") if depth is not None else None
        mask = check(mask, 1, "mask") if mask is not None else None
        return normal, depth, mask

    def estimate_frame(self, crop: np.ndarray):
        """(normal [R,R,3], depth [R,R] or None, mask [R,R] bool) numpy for one uint8 RGB crop [R,R,3]."""
        R = int(crop.shape[0])
        x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float() / 255.0
        if self.input_size is not None and tuple(self.input_size) != (R, R):
            x = _resize(x, self.input_size)
        normal, depth, mask = self._split(self._run(x.contiguous()))
        sx, sy, sz = _CONVENTIONS[self.normal_convention]
        normal = normal * torch.tensor([sx, sy, sz]).view(3, 1, 1)
        maps = [normal] + [m for m in (depth, mask) if m is not None]
        stacked = torch.cat(maps, 0)[None]
        if tuple(stacked.shape[2:]) != (R, R):
            stacked = _resize(stacked, (R, R))
        stacked = stacked[0]
        n = stacked[:3].permute(1, 2, 0)
        k = 3
        d = None
        if depth is not None:
            d = stacked[k]
            k += 1
            if self.depth_convention == "disparity":
                d = -d
        length = n.norm(dim=-1)
        ok = torch.isfinite(n).all(-1) & (length > 0.5)
        if d is not None:
            ok &= torch.isfinite(d)
        if mask is not None:
            thr = 0.5 if self.mask_threshold is None else float(self.mask_threshold)
            ok &= stacked[k] > thr
        n = torch.where(ok[..., None], n / length.clamp_min(1e-12)[..., None], torch.zeros_like(n))
        if d is not None:
            d = torch.where(ok, d, torch.zeros_like(d))
        return n.numpy().astype(np.float32), None if d is None else d.numpy().astype(np.float32), ok.numpy()

    def estimate(self, crops: np.ndarray, points: np.ndarray, valid: np.ndarray) -> Targets:
        crops, points, valid, T, R = _check_inputs(crops, points, valid, need_points=self.face_mask)
        normal = np.zeros((T, R, R, 3), np.float32)
        depth = np.zeros((T, R, R), np.float32)
        mask = np.zeros((T, R, R), bool)
        has_depth = None
        idx = np.nonzero(valid)[0]
        bar = _progress(len(idx), f"estimator {self.path.name}", self.progress)
        try:
            for t in idx:
                n, d, m = self.estimate_frame(crops[t])
                normal[t], mask[t] = n, m
                if d is not None:
                    depth[t] = d
                has_depth = (d is not None) if has_depth is None else (has_depth and d is not None)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        if has_depth is None:  # no valid frame: ask the network once, so that every chunk of a clip agrees
            if self._has_depth is None:
                self._has_depth = self.estimate_frame(np.zeros((R, R, 3), np.uint8))[1] is not None
            has_depth = self._has_depth
        else:
            self._has_depth = has_depth
        if self.face_mask and len(idx):
            face = MediaPipeMeshTargets(exclude=(), erode=2, progress=False).estimate(crops, points, valid).mask
            mask &= face
            normal *= mask[..., None]
            depth *= mask
        if not has_depth:
            depth[:] = 0.0
        return Targets(normal, depth, mask, self.source, has_depth=bool(has_depth))


def _to_cpu(out):
    if isinstance(out, torch.Tensor):
        return out.detach().cpu()
    if isinstance(out, dict):
        return {str(k).lower(): _to_cpu(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_to_cpu(v) for v in out)
    return out


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of [B,C,H,W] to ``size`` (antialiased when shrinking); NaNs stay local."""
    size = (int(size[0]), int(size[1]))
    shrink = size[0] < x.shape[2] or size[1] < x.shape[3]
    return F.interpolate(x.float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)


def make_estimator(spec=None, **kwargs) -> TargetEstimator:
    """The estimator for a CLI-style ``spec``: None / "mediapipe" -> :class:`MediaPipeMeshTargets`; a path to a
    TorchScript / ONNX file -> :class:`NetworkTargets` (``kwargs`` go to the constructor)."""
    if spec is None or str(spec).lower() in ("mediapipe", "mediapipe-mesh", "default"):
        return MediaPipeMeshTargets(**kwargs)
    return NetworkTargets(spec, **kwargs)


# ----------------------------------------------------------------------------------------------------------
# Losses and metrics (torch; batched over frames).


def _weights(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(mask, device=like.device)
    return m.to(like.dtype) if m.dtype == torch.bool else m.to(like.dtype).clamp_min(0)


def scale_shift_invariant_depth_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                                      positive_scale: bool = True, eps: float = 1e-12):
    """Scale-and-shift-invariant depth error per frame: ``(loss [B], aligned_pred [B,H,W])``.

    pred [B,H,W] (rendered depth, any units), target [B,H,W] (relative depth, larger = farther), mask [B,H,W]
    (bool, or non-negative weights). Per frame, the scale s and shift b minimising sum m (s pred + b - target)^2
    are solved in closed form (the 2x2 normal equations, centred for conditioning):

        s = sum m (p - p_mean)(t - t_mean) / sum m (p - p_mean)^2,   b = t_mean - s p_mean,

    i.e. the *prediction is aligned to the target* (MiDaS-style), differentiably w.r.t. pred. The loss is the
    masked mean of |s pred + b - target| divided by the target's spread (its masked mean absolute deviation):
    unit-free, 0 for a perfect match up to scale and shift, about 0.8-1 for a prediction unrelated to the target
    (a flat prediction scores exactly the spread ratio ~1), and it cannot be lowered by shrinking the
    prediction. With ``positive_scale`` (default) a negative s (a depth-inverted prediction) is replaced by
    s = 0 (no gradient then; the normal loss has to fix such a frame). Frames with fewer than 3 mask pixels
    or a flat target give loss 0. ``aligned_pred`` = s pred + b (in target units), 0 outside the mask.
    """
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target, device=pred.device).to(pred.dtype)
    if pred.dim() != 3 or target.shape != pred.shape:
        raise HeadrepError(f"depth error needs pred and target [B,H,W] of one shape, got {tuple(pred.shape)} "
                           f"and {tuple(target.shape)}")
    w = _weights(mask, pred)
    if w.shape != pred.shape:
        raise HeadrepError(f"depth mask must be [B,H,W] like pred {tuple(pred.shape)}, got {tuple(w.shape)}")
    target = torch.where(w > 0, target, torch.zeros_like(target))  # NaN targets outside the mask do no harm
    pz = torch.where(w > 0, pred, torch.zeros_like(pred))
    dims = (1, 2)
    sw = w.sum(dims)
    count = (w > 0).sum(dims)
    swc = sw.clamp_min(eps)
    p_mean = (w * pz).sum(dims) / swc
    t_mean = (w * target).sum(dims) / swc
    pc = pz - p_mean[:, None, None]
    tc = target - t_mean[:, None, None]
    var_p = (w * pc * pc).sum(dims)
    cov = (w * pc * tc).sum(dims)
    scale_ref = (w * pz.detach().abs()).sum(dims) / swc  # for a relative flatness threshold
    flat = var_p <= (1e-12 * (scale_ref * scale_ref + 1e-30)) * swc
    s = cov / torch.where(flat, torch.ones_like(var_p), var_p)
    s = torch.where(flat, torch.zeros_like(s), s)
    if positive_scale:
        s = s.clamp_min(0.0)
    b = t_mean - s * p_mean
    aligned = s[:, None, None] * pz + b[:, None, None]
    resid = (w * (aligned - target).abs()).sum(dims) / swc
    spread = ((w * tc.abs()).sum(dims) / swc).detach()
    ok = (count >= 3) & (spread > eps)
    loss = torch.where(ok, resid / torch.where(ok, spread, torch.ones_like(spread)), torch.zeros_like(resid))
    aligned = torch.where(w > 0, aligned, torch.zeros_like(aligned))
    return loss, aligned


def _check_normals(pred, target, mask):
    """(pred, target with non-finite pixels zeroed, weights [B,H,W] zero there, valid = weights > 0)."""
    pred = torch.as_tensor(pred)
    target = torch.as_tensor(target, device=pred.device).to(pred.dtype)
    if pred.dim() != 4 or pred.shape[-1] != 3 or target.shape != pred.shape:
        raise HeadrepError(f"normal error needs pred and target [B,H,W,3] of one shape, got {tuple(pred.shape)} "
                           f"and {tuple(target.shape)}")
    w = _weights(mask, pred)
    if w.shape != pred.shape[:3]:
        raise HeadrepError(f"normal mask must be [B,H,W] like pred {tuple(pred.shape[:3])}, got {tuple(w.shape)}")
    if not bool(torch.isfinite(target).all()):  # NaN / inf targets: left out (rare; checked once, cheaply)
        bad = ~torch.isfinite(target.sum(-1))
        target = torch.nan_to_num(target, nan=0.0, posinf=0.0, neginf=0.0)
        w = torch.where(bad, torch.zeros_like(w), w)
    return pred, target, w, w > 0


def _cos(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """cos of the angle between p and t [..., 3] (unnormalised inputs; 0-vectors give 0), channel-unrolled:
    several times faster than reductions over a last dimension of 3, forward and backward."""
    p0, p1, p2 = p.unbind(-1)
    t0, t1, t2 = t.unbind(-1)
    dot = p0 * t0 + p1 * t1 + p2 * t2
    nn = (p0 * p0 + p1 * p1 + p2 * p2) * (t0 * t0 + t1 * t1 + t2 * t2)
    return dot * torch.rsqrt(nn.clamp_min(1e-30))


def angular_normal_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                         outlier_deg: float | None = None) -> torch.Tensor:
    """Per-frame mean angle in degrees [B] between normals pred and target [B,H,W,3] over mask [B,H,W] (bool or
    weights). Pixels off by more than ``outlier_deg`` are left out of the mean when it is given. NaN for a frame
    with no pixel. The angle is atan2(|p x t|, p . t), accurate at small angles; inputs need not be unit."""
    pred, target, w, valid = _check_normals(pred, target, mask)
    p, t = pred, target  # atan2 needs no normalisation
    ang = torch.rad2deg(torch.atan2(torch.linalg.cross(p, t, dim=-1).norm(dim=-1), (p * t).sum(-1)))
    if outlier_deg is not None:
        w = torch.where(ang <= float(outlier_deg), w, torch.zeros_like(w))
    sw = w.sum((1, 2))
    out = (w * ang).sum((1, 2)) / sw.clamp_min(1e-30)
    return torch.where(sw > 0, out, torch.full_like(out, float("nan")))


def normal_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                outlier_quantile: float | None = 0.9, max_samples: int = 16384) -> torch.Tensor:
    """Differentiable normal loss per frame [B]: the (weighted) mean of 1 - cos(pred, target) over the mask,
    keeping per frame only the pixels whose residual is at most its ``outlier_quantile`` quantile (0.9: the
    worst 10% are dropped as outliers, Pixel3DMM-style; the threshold carries no gradient). None or >= 1 keeps
    every pixel. The quantile is taken over at most ``max_samples`` evenly strided pixels of each frame (exact
    for images up to that size; a sort of every pixel each iteration would cost more than the render). pred
    need not be unit (it is normalised). 0 for a frame with no pixel."""
    pred, target, w, valid = _check_normals(pred, target, mask)
    r = 1.0 - _cos(pred, target)
    if outlier_quantile is not None and float(outlier_quantile) < 1.0:
        q = float(outlier_quantile)
        if not 0.0 < q:
            raise HeadrepError(f"outlier_quantile must be in (0, 1], got {outlier_quantile}")
        B = r.shape[0]
        rd = torch.where(valid, r.detach(), torch.full_like(r, float("inf"))).reshape(B, -1)
        stride = max(1, -(-rd.shape[1] // max(int(max_samples), 1)))
        sample = rd[:, ::stride]
        srt = sample.sort(dim=1).values
        n = torch.isfinite(sample).sum(1)
        k = (torch.ceil(q * n.to(r.dtype)) - 1).clamp_min(0).long().clamp_max(srt.shape[1] - 1)
        thr = srt.gather(1, k[:, None])[:, 0]
        w = torch.where(r.detach() <= thr[:, None, None], w, torch.zeros_like(w))
    sw = w.sum((1, 2))
    return (w * r).sum((1, 2)) / sw.clamp_min(1e-30)
