"""Cross-reenactment: a new HeadRep with B's identity performing A's motion (`transfer drive`).

What the driven rep takes from whom (T = A's frame count):

* from B (the target identity): β, D_static, the face vertices, the camera (focal, principal point, loaded
  image size), the crop size (resolution), every body joint that is not motion (shoulders, spine, …: B's
  reference frame) and, with a photometric fit, the albedo and the reference frame's light; the hanging hair's
  swing, when B has one, is the reference frame's on every frame (B's hair moved with B's video, not A's).
* from A (the source of motion): ψ_t, the jaw and eye rotations, the validity flags, frame indices and fps.
* head pose, retargeted relative to each one's reference frame (default: the first valid frame):
  ``R_out,t = R_A,t · R_A,ref⁻¹ · R_B,ref`` for the global orientation, the neck and the head joint, and the
  head joint's position ``h_out,t = h_B,ref + s·(h_A,t − h_A,ref)`` with ``s = z_B,ref / z_A,ref`` (A's motion
  scaled to B's distance from the camera); ``transl`` is solved so the posed head joint lands there.
  Each frame's crop box follows the head: it keeps B's reference box's offset from the projected head joint and
  scales with the head's distance.
* D_dyn,t by ``mode``: "mlp" (G evaluated on B's neutral geometry with A's ψ_t and jaw), "direct" (A's fitted
  offsets copied by vertex index, the paper's ablation) or "none" (the SMPL-X expression alone).

Both reps must come from the same model file and dense topology (TransferError otherwise).
"""

from __future__ import annotations

import numpy as np
import torch

from headrep.model.body import axis_angle_to_matrix

from .errors import TransferError

MODES = ("mlp", "direct", "none")
MOTION_ROTATIONS = (0, 12, 15)   # global orientation, neck, head: retargeted relative to the reference frames
EXPRESSION_JOINTS = (22, 23, 24)  # jaw and eyes: copied from the source as they are


def _axis_angle(R: torch.Tensor) -> torch.Tensor:
    from kornia.geometry.conversions import rotation_matrix_to_axis_angle

    return rotation_matrix_to_axis_angle(R.reshape(-1, 3, 3)).reshape(*R.shape[:-2], 3)


def reference_frame(rep, ref: int | None, role: str) -> int:
    """The reference frame position of ``rep``: ``ref`` if given (must be a valid frame), else the first valid."""
    valid = np.nonzero(rep.valid)[0]
    if valid.size == 0:
        raise TransferError(f"transfer drive: the {role} rep {rep.path} has no valid frames")
    if ref is None:
        return int(valid[0])
    if not 0 <= int(ref) < rep.num_frames:
        raise TransferError(f"transfer drive: --{role}-ref {ref} is out of range (the {role} rep has "
                            f"{rep.num_frames} frames)")
    if not rep.valid[int(ref)]:
        raise TransferError(f"transfer drive: --{role}-ref {ref} is an invalid frame (no face) of {rep.path}")
    return int(ref)


def _head_joint(rep, betas, pose, transl) -> torch.Tensor:
    """Model-space position of the head joint (SMPL-X 15) [B,3], with the expression at zero: SMPL-X regresses
    joints from the expression-deformed mesh too, and the head's placement should not move with a smile."""
    with torch.no_grad():
        zero = torch.zeros(pose.shape[0], rep.body.num_expression, dtype=pose.dtype)
        return rep.body(betas[None], zero, pose, transl=transl).joints[:, 15]


def retarget(src, tgt, src_ref: int, tgt_ref: int) -> dict:
    """Pose, expression and transl of the driven rep (float64 math, the target body's dtype out)."""
    dt = tgt.body.dtype
    A, B = src.tensors, tgt.tensors
    T = src.num_frames
    pose_a = A["pose"].double()
    pose = B["pose"][tgt_ref].double()[None].repeat(T, 1, 1)
    for j in EXPRESSION_JOINTS:
        pose[:, j] = pose_a[:, j]
    for j in MOTION_ROTATIONS:
        Ra, Ra0 = axis_angle_to_matrix(pose_a[:, j]), axis_angle_to_matrix(pose_a[src_ref, j])
        Rb0 = axis_angle_to_matrix(B["pose"][tgt_ref, j].double())
        pose[:, j] = _axis_angle(Ra @ Ra0.transpose(-1, -2) @ Rb0)
    expression = A["expression"].to(dt).clone()
    pose = pose.to(dt)
    # the head joint's path: A's displacement from its reference, scaled to B's distance
    ha = _head_joint(src, A["betas"], A["pose"], A["transl"]).double()
    hb0 = _head_joint(tgt, B["betas"], B["pose"][tgt_ref:tgt_ref + 1], B["transl"][tgt_ref:tgt_ref + 1]).double()[0]
    s = float(hb0[2] / ha[src_ref, 2])
    h_out = hb0 + s * (ha - ha[src_ref])
    zero = torch.zeros(T, 3, dtype=dt)
    h0 = _head_joint(tgt, B["betas"], pose, zero).double()
    transl = (h_out - h0).to(dt)
    return {"pose": pose, "expression": expression, "transl": transl, "head": h_out, "head_ref": hb0, "scale": s}


def _boxes(tgt, tgt_ref: int, head: torch.Tensor, head_ref: torch.Tensor) -> np.ndarray:
    """Crop boxes [T,3] following the head: B's reference box, moved with the projected head joint and scaled
    with its depth."""
    f = tgt.focal
    px, py = (float(v) for v in tgt.principal)

    def project(h):
        c = h.numpy() * np.array([1.0, -1.0, -1.0])   # model -> OpenCV camera (headrep.model.head.to_camera)
        return f * c[..., 0] / c[..., 2] + px, f * c[..., 1] / c[..., 2] + py, c[..., 2]

    x0, y0, side0 = (float(v) for v in tgt.boxes[tgt_ref])
    u0, v0, z0 = project(head_ref)
    u, v, z = project(head)
    side = side0 * z0 / z
    # keep the head joint at the same relative place in the crop as in B's reference crop
    x = u - (u0 - x0) * side / side0
    y = v - (v0 - y0) * side / side0
    return np.stack([x, y, side], 1)


def dynamic_offsets(mode: str, src, tgt, model=None, batch: int = 64) -> torch.Tensor:
    """D_dyn [T,Nf,3] of the driven rep for ``mode`` (see the module docs)."""
    T, Nf = src.num_frames, int(tgt.face_vertices.shape[0])
    dt = tgt.body.dtype
    if mode == "none":
        return torch.zeros(T, Nf, 3, dtype=dt)
    if mode == "direct":
        return src.tensors["dynamic_offsets"].to(dt).clone()
    if mode != "mlp":
        raise TransferError(f"transfer drive: unknown mode {mode!r} (choose one of {', '.join(MODES)})")
    if model is None:
        raise TransferError("transfer drive: --mode mlp needs a trained model (--model MODEL, from "
                            "`transfer train`); or use --mode direct / none")
    from .dataset import neutral_face
    from .train import predict

    neutral, normals = neutral_face(tgt)
    jaw = src.tensors["pose"][:, 22]
    sample = {"neutral": neutral, "normals": normals, "expression": src.tensors["expression"], "jaw": jaw}
    return predict(model, sample, batch=batch).to(dt)


def check_model(model, tgt) -> None:
    """The transfer model must fit B: same number of expression coefficients and face vertices, and (when the
    model records it) the same model file and topology it was trained on."""
    cfg = model.config
    ne = int(tgt.tensors["expression"].shape[1])
    if cfg["encoder"]["ne"] != ne:
        raise TransferError(f"transfer drive: the transfer model takes {cfg['encoder']['ne']} expression "
                            f"coefficients, the reps have {ne}")
    info = getattr(model, "training_info", None) or {}
    key = info.get("identity")
    if key:
        if key.get("topology_hash") != tgt.meta["topology"]["hash"] or \
                key.get("model_sha256") != tgt.meta["model"]["model_sha256"]:
            raise TransferError("transfer drive: the transfer model was trained on reps of another model file or "
                                f"topology (levels {key.get('levels')}, hash {str(key.get('topology_hash'))[:12]}…) "
                                f"than the target (levels {tgt.meta['topology']['levels']}, hash "
                                f"{str(tgt.meta['topology']['hash'])[:12]}…)")


def drive(src, tgt, mode: str = "mlp", model=None, src_ref: int | None = None, tgt_ref: int | None = None,
          model_path: str | None = None):
    """B = ``tgt`` performing A = ``src``'s motion: a new (unsaved) HeadRep. See the module docs."""
    from headrep.rep import HeadRep

    from .dataset import check_compatible

    if mode not in MODES:
        raise TransferError(f"transfer drive: unknown mode {mode!r} (choose one of {', '.join(MODES)})")
    src.require_model()
    tgt.require_model()
    check_compatible([tgt, src], "transfer drive")
    ra = reference_frame(src, src_ref, "src")
    rb = reference_frame(tgt, tgt_ref, "tgt")
    if mode == "mlp" and model is not None:
        check_model(model, tgt)
    dyn = dynamic_offsets(mode, src, tgt, model)
    rt = retarget(src, tgt, ra, rb)
    B = tgt.tensors
    tensors = {"betas": B["betas"], "expression": rt["expression"], "pose": rt["pose"], "transl": rt["transl"],
               "focal": B["focal"], "principal": B["principal"],
               "boxes": _boxes(tgt, rb, rt["head"], rt["head_ref"]),
               "static_offsets": B["static_offsets"], "dynamic_offsets": dyn, "face_vertices": B["face_vertices"],
               "valid": src.tensors["valid"], "frame_indices": src.tensors["frame_indices"]}
    if tgt.has_appearance:  # B's albedo under B's reference light: a shaded render of B performing A's motion
        tensors["albedo"] = B["albedo"]
        tensors["light"] = B["light"][rb:rb + 1].expand(src.num_frames, -1, -1).clone()
    if "hair_swing" in B:
        tensors["hair_swing"] = B["hair_swing"][rb:rb + 1].expand(src.num_frames, -1).clone()
    source = {"path": None, "kind": "driven", "fps": src.source_fps, "image_size": tgt.source.get("image_size"),
              "scale": tgt.source.get("scale", 1.0), "num_frames": src.num_frames}
    fit = {"drive": {"src": str(src.path), "tgt": str(tgt.path), "mode": mode, "src_ref": ra, "tgt_ref": rb,
                     "transfer_model": model_path, "motion_scale": rt["scale"]},
           "seed": None, "stats": {}}
    return HeadRep.create(tgt.body, tgt.head, tensors, source, tgt.resolution, fit)
