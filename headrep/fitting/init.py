"""Initial values: per-frame rigid pose by PnP of the neutral landmarks, and D_static pushed a little outward
outside the face (so the silhouette and the Laplacian have something to shape from the first step)."""

from __future__ import annotations

import numpy as np
import torch

from headrep.model import MODEL_TO_CAMERA, vertex_normals
from headrep.fitting.params import FitParams, interpolate_invalid


def init_rigid_pnp(scene, params: FitParams, valid: np.ndarray) -> None:
    """Per-frame rotation/translation from PnP of the neutral landmarks (model → camera incl. the flip)."""
    import cv2

    f = float(params.log_focal.exp())
    K = np.array([[f, 0, float(scene.principal[0])], [0, f, float(scene.principal[1])], [0, 0, 1]])
    F = np.diag(MODEL_TO_CAMERA)
    obj = scene.rest_landmarks.numpy().astype(np.float64) @ F  # the flip first: PnP then finds the camera
    pivot = scene.pivot.numpy().astype(np.float64)
    root = scene.head_joint.numpy().astype(np.float64) - pivot
    rot, tau = np.zeros((scene.T, 3)), np.zeros((scene.T, 3))
    det = scene.det_full.numpy().astype(np.float64)
    for t in np.nonzero(valid)[0]:
        ok, rvec, tvec = cv2.solvePnP(obj, det[t], K, None, flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            continue
        ok, rvec, tvec = cv2.solvePnP(obj, det[t], K, None, rvec, tvec, True, flags=cv2.SOLVEPNP_ITERATIVE)
        Rc, _ = cv2.Rodrigues(rvec)
        # camera = Rc·F·x + t  and  camera = F·(Rm·(x − root − pivot) + root + pivot + tau')  with Rm = F·Rc·F
        Rm = F @ Rc @ F
        rot[t] = cv2.Rodrigues(Rm)[0][:, 0]
        c = root + pivot
        tau[t] = F @ tvec[:, 0] - c + Rm @ c
    params.rot = interpolate_invalid(torch.as_tensor(rot, dtype=torch.float32), valid)
    params.tau = interpolate_invalid(torch.as_tensor(tau, dtype=torch.float32), valid)


def init_static_offsets(head, body, millimetres: float) -> torch.Tensor:
    """D_static [Nd,3]: ``millimetres`` along the neutral vertex normals outside the face, zero on it (and on
    pieces other than the skin)."""
    if millimetres <= 0:
        return torch.zeros(head.num_vertices, 3)
    rest = body.zero_params(1)
    with torch.no_grad():
        v = head(rest["betas"], rest["expression"], rest["pose"]).canonical[0]
        n = vertex_normals(v, head.faces_t.long())
    outside = torch.as_tensor(~head.face_mask & head.surface_mask, dtype=torch.float32)[:, None]
    return 1e-3 * millimetres * n * outside
