"""Training samples for the transfer model: one dict per identity.

    {"neutral": [Nf,3], "normals": [Nf,3], "expression": [T,ne], "jaw": [T,3], "target": [T,Nf,3]}

neutral: the identity's neutral dense mesh U·M(β) + D_static on its face vertices (model space, metres); normals:
area-weighted vertex normals of that full neutral dense mesh, on the face vertices; target: the per-frame dynamic
offsets D_dyn,t on the face vertices (metres). Only valid frames are kept.

`synthetic_identity` builds the same dict for a random β (+ smooth D_static bumps) on the stand-in, with D_dyn
given by a KNOWN identity-dependent rule (`expression_detail`), so the transfer model can be tested without fitting.
"""

from __future__ import annotations

import numpy as np
import torch

from headrep.model.meshops import vertex_normals

SPACING = 0.022  # furrow spacing of the synthetic rule (m)
BROW_RAISE = 3  # the stand-in's expression index of "brow_raise" (headrep.model.standin.EXPRESSION_NAMES)


def neutral_face(rep) -> tuple[torch.Tensor, torch.Tensor]:
    """(neutral [Nf,3], normals [Nf,3]) of a rep's identity on its face vertices: U·M(β) + D_static in model
    space, with area-weighted vertex normals of the whole neutral dense mesh. What G is conditioned on."""
    rep.require_model()
    fv = torch.as_tensor(rep.face_vertices).long()
    neutral_full = rep.neutral_vertices().float()
    normals_full = vertex_normals(neutral_full, torch.tensor(np.asarray(rep.head.faces)))
    return neutral_full[fv].clone(), normals_full[fv].clone()


def samples_from_rep(rep) -> dict:
    """Samples from a HeadRep (loaded with its model): valid frames only."""
    fv = torch.as_tensor(rep.face_vertices).long()
    valid = torch.as_tensor(np.nonzero(rep.valid)[0])
    neutral, normals = neutral_face(rep)
    t = rep.tensors
    return {"neutral": neutral, "normals": normals,
            "expression": t["expression"][valid].float().clone(), "jaw": t["pose"][valid, 22].float().clone(),
            "target": t["dynamic_offsets"][valid].float().clone(), "face_vertices": fv}


def identity_key(rep) -> dict:
    """What two reps must share to exchange expressions and offsets: the model file and the dense topology."""
    return {"model_sha256": rep.meta["model"]["model_sha256"], "topology_hash": rep.meta["topology"]["hash"],
            "levels": int(rep.meta["topology"]["levels"]), "num_face_vertices": int(rep.face_vertices.shape[0])}


def check_compatible(reps: list, what: str = "reps") -> dict:
    """The common `identity_key` of ``reps``; TransferError naming the first rep that differs (another model file
    or another subdivision level)."""
    from .errors import TransferError

    key = identity_key(reps[0])
    for r in reps[1:]:
        k = identity_key(r)
        if k != key:
            why = ("another model file (sha256 " + k["model_sha256"][:12] + "… vs " + key["model_sha256"][:12] + "…)"
                   if k["model_sha256"] != key["model_sha256"] else
                   f"another dense topology (levels {k['levels']}, hash {k['topology_hash'][:12]}… vs levels "
                   f"{key['levels']}, hash {key['topology_hash'][:12]}…)")
            raise TransferError(f"{what}: {r.path} and {reps[0].path} were fitted with {why}; expressions and "
                                f"offsets can only move between reps of the same model and subdivision (--subdiv)")
    return key


def load_training_reps(paths: list, body_model=None) -> tuple[list[dict], list[dict], dict]:
    """Load HeadRep folders for training: (sample dicts, per-rep records for the model file, common key).

    TransferError for an empty list, an unreadable rep, a rep without valid frames, or reps of different models
    or topologies."""
    from pathlib import Path

    from headrep.errors import HeadrepError
    from headrep.io import file_sha256
    from headrep.rep import TENSOR_FILE, HeadRep

    from .errors import TransferError

    if not paths:
        raise TransferError("transfer train: no reps given (pass one or more HeadRep folders to --reps)")
    reps = []
    for p in paths:
        try:
            reps.append(HeadRep.load(p, model=body_model))
        except HeadrepError as exc:
            raise TransferError(f"transfer train: {exc}") from None
    for r in reps:
        if int(r.valid.sum()) == 0:
            raise TransferError(f"transfer train: {r.path} has no valid frames (no face was found in any frame)")
    key = check_compatible(reps, "transfer train")
    records = [{"path": str(Path(r.path).resolve()), "sha256": file_sha256(Path(r.path) / TENSOR_FILE),
                "frames": int(r.num_frames), "valid_frames": int(r.valid.sum()), "standin": bool(r.is_standin)}
               for r in reps]
    return [samples_from_rep(r) for r in reps], records, key


# ------------------------------------------------------------------------------------------------------------
# synthetic identities with a known identity-dependent expression-detail rule

def expression_detail(neutral: torch.Tensor, normals: torch.Tensor, expression: torch.Tensor, jaw: torch.Tensor,
                      anchors: dict) -> torch.Tensor:
    """The ground-truth rule D_dyn [T,Nf,3] (metres) of the synthetic identities.

    1. forehead wrinkles: when the brows go up (ψ_brow_raise > 0), horizontal furrows along the normal,
       depth 2.0 mm × ψ⁺, with a fixed spacing of 16 mm in head height and confined to a band around a fixed
       height of the head and to forward-facing skin (n_z⁺). The furrows are fixed in the head frame, so on each
       identity they fall on *different* vertices (a taller forehead gets them lower on its skin, a wider face
       further out): copying another person's offsets by vertex index misplaces them.
    2. chin / mentalis bulge when the jaw opens (θ_jaw,x > 0): 1.5 mm per 0.2 rad along the normal, an
       anisotropic Gaussian blob at a fixed point of the head frame modulated by a vertical ripple.

    ``anchors``: {"forehead_y", "chin": [3]} in model space (fixed for all identities; from the template).
    """
    y = neutral[:, 1]
    brow = expression[:, BROW_RAISE].clamp_min(0)                                            # [T]
    band = torch.exp(-0.5 * ((y - anchors["forehead_y"]) / 0.03) ** 2) * normals[:, 2].clamp_min(0)
    furrows = torch.sin(2 * np.pi * y / SPACING)
    wr = 3.0e-3 * brow[:, None] * (band * furrows)[None]                                     # [T,Nf]
    chin = torch.as_tensor(anchors["chin"], dtype=neutral.dtype)
    d = (neutral - chin) / torch.tensor([0.04, 0.025, 0.04], dtype=neutral.dtype)
    blob = torch.exp(-0.5 * (d ** 2).sum(-1)) * torch.cos(2 * np.pi * (y - chin[1]) / 0.04)
    jw = 2.0e-3 * (jaw[:, 0].clamp_min(0) / 0.2)[:, None] * blob[None]
    return (wr + jw)[..., None] * normals[None]


def template_anchors(body, head) -> dict:
    """Anchor points of `expression_detail`, from the model's β = 0 neutral face (model space)."""
    p = body.zero_params(1)
    with torch.no_grad():
        v = head(p["betas"], p["expression"], p["pose"]).vertices[0]
    f = v[torch.as_tensor(head.face_mask)]
    top, bottom = float(f[:, 1].max()), float(f[:, 1].min())
    front = float(f[:, 2].max())
    return {"forehead_y": top - 0.03, "chin": [0.0, bottom + 0.02, front - 0.01]}


def random_expressions(T: int, ne: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame ψ [T,ne] ~ N(0, 0.8²) and jaw [T,3] (opening 0–0.3 rad about x)."""
    expression = 0.8 * torch.randn(T, ne, generator=g)
    jaw = torch.zeros(T, 3)
    jaw[:, 0] = 0.3 * torch.rand(T, generator=g)
    return expression, jaw


def synthetic_identity(body, head, seed: int, T: int = 48, beta_std: float = 1.0, static_mm: float = 1.0,
                       expression: torch.Tensor | None = None, jaw: torch.Tensor | None = None,
                       anchors: dict | None = None) -> dict:
    """A synthetic identity: random β (std ``beta_std``) and smooth D_static bumps (±``static_mm``), T frames
    of random expressions (or the ``expression``/``jaw`` given: the same expressions on another identity), the
    D_dyn target from `expression_detail`. Returns the `samples_from_rep` dict plus "betas" and "static"."""
    from headrep.fitting.synthetic import smooth_field

    g = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    anchors = anchors or template_anchors(body, head)
    betas = beta_std * torch.randn(1, body.num_betas, generator=g)
    p = body.zero_params(1)
    fm = torch.as_tensor(np.nonzero(np.asarray(head.face_mask))[0])
    with torch.no_grad():
        canonical = head(betas, p["expression"], p["pose"]).vertices[0]
        pick = rng.choice(head.num_vertices, 16, replace=False)
        amp = 1e-3 * static_mm * rng.choice([-1.0, 1.0], 16) * rng.uniform(0.5, 1.0, 16)
        static = smooth_field(head, canonical[pick].numpy(), 0.015, amp, canonical)
        neutral_full = canonical + static
        normals_full = vertex_normals(neutral_full, torch.tensor(np.asarray(head.faces)))
    if expression is None:
        expression, jaw = random_expressions(T, body.num_expression, g)
    neutral, normals = neutral_full[fm].clone(), normals_full[fm].clone()
    target = expression_detail(neutral, normals, expression, jaw, anchors)
    return {"neutral": neutral, "normals": normals, "expression": expression.clone(), "jaw": jaw.clone(),
            "target": target, "face_vertices": fm, "betas": betas[0], "static": static}
