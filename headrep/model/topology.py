"""Mesh topology for the head representation: submesh, dense subdivision operator, masks, Laplacians.

This module owns everything that depends only on the *connectivity* of the body model (plus, for the
cotangent Laplacian, one set of rest positions). It holds no per-video state.

* :func:`submesh` restricts the coarse body-model faces to the head-and-shoulders vertex subset ``S``.
* :func:`build_dense_topology` builds a :class:`DenseTopology`: ``levels`` rounds of midpoint
  subdivision expressed as a fixed sparse barycentric operator ``U`` of shape ``[Nd, Nc]``, so that

      V_dense = U · M_S        (dense canonical mesh from the coarse neutral mesh)
      W_dense = U · W_S        (dense skinning weights; rows still sum to 1)

  Every row of ``U`` is a convex combination of at most 3 coarse vertices (the corners of the
  coarse triangle the dense vertex lies in), and rows ``0 .. Nc-1`` are the identity.
* :func:`uniform_laplacian` and :func:`cotangent_laplacian` build sparse ``[N, N]`` Laplacians and
  :func:`laplacian_penalty` evaluates the smoothness penalty ``mean ||L·D||²`` on an *offset field* D.

Nothing here ever materialises a dense ``N×N`` (or ``Nd×Nc``) matrix: operators are built with
numpy/scipy.sparse (vectorised, no Python loops over faces) and handed to torch as sparse tensors.

Sign convention for Laplacians: ``L = D − W`` (degree / weight-sum on the diagonal, minus the edge
weights off the diagonal). ``L`` is symmetric positive semi-definite, ``L·1 = 0``, and
``(L·x)_i = Σ_j w_ij (x_i − x_j)``, i.e. it points *away* from the neighbourhood average. Its sign
does not matter for :func:`laplacian_penalty`, which squares it.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from typing import Union

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "submesh",
    "unique_edges",
    "DenseTopology",
    "build_dense_topology",
    "uniform_laplacian",
    "cotangent_weights",
    "cotangent_laplacian",
    "laplacian_penalty",
    "SparseOperator",
    "sparse_matmul",
    "vertex_neighbours",
    "largest_component",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

_HASH_VERSION = b"headrep.topology.DenseTopology/v1"


# --------------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------------


def _as_faces(faces: ArrayLike, num_verts: int | None = None, name: str = "faces") -> np.ndarray:
    """Return ``faces`` as a C-contiguous int64 ``[F, 3]`` array, validating shape and index range."""
    if isinstance(faces, torch.Tensor):
        faces = faces.detach().cpu().numpy()
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"{name} must have shape [F, 3], got {f.shape}")
    if f.size and not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {f.dtype}")
    f = np.ascontiguousarray(f, dtype=np.int64)
    if f.size:
        if f.min() < 0:
            raise ValueError(f"{name} contains negative vertex indices")
        if num_verts is not None and f.max() >= num_verts:
            raise ValueError(f"{name} references vertex {int(f.max())} but num_verts={num_verts}")
    return f


def _torch_sparse(
    m: sp.spmatrix,
    dtype: torch.dtype,
    device: Union[str, torch.device],
    layout: torch.layout,
) -> torch.Tensor:
    """Convert a scipy sparse matrix to a coalesced torch sparse tensor (COO or CSR)."""
    coo = sp.coo_matrix(m)
    coo.sum_duplicates()  # canonical (row-major sorted, unique) order
    if layout == torch.sparse_coo:
        idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        val = torch.from_numpy(np.asarray(coo.data, dtype=np.float64))
        t = torch.sparse_coo_tensor(
            idx, val, size=coo.shape, check_invariants=False, is_coalesced=True
        )
        return t.to(dtype=dtype, device=device)
    if layout == torch.sparse_csr:
        csr = coo.tocsr()
        csr.sort_indices()
        t = torch.sparse_csr_tensor(
            torch.from_numpy(csr.indptr.astype(np.int64)),
            torch.from_numpy(csr.indices.astype(np.int64)),
            torch.from_numpy(np.asarray(csr.data, dtype=np.float64)),
            size=csr.shape,
            check_invariants=False,
        )
        return t.to(dtype=dtype, device=device)
    raise ValueError(f"layout must be torch.sparse_coo or torch.sparse_csr, got {layout}")


class _CsrMatmul(torch.autograd.Function):
    """``A @ x`` whose backward is a second CSR product with a stored ``Aᵀ`` (torch's own backward of a
    sparse product transposes on the fly)."""

    @staticmethod
    def forward(ctx, A, At, x):
        ctx.At = At
        return A @ x

    @staticmethod
    def backward(ctx, g):
        return None, None, ctx.At @ g


class SparseOperator:
    """A fixed sparse matrix ``[N, M]`` applied as ``op @ x`` to dense ``x [M, C]`` (differentiable w.r.t.
    ``x``): it and its transpose kept as CSR. On the CPU torch's COO product is ~20× slower, and CSR with
    torch's backward ~7× (a Laplacian of the 20k-vertex dense head and its gradient: 10 ms against 0.5 ms)."""

    def __init__(self, A: torch.Tensor):
        coo = (A if A.layout == torch.sparse_coo else A.to_sparse_coo()).coalesce()
        self.shape = coo.shape
        self.dtype, self.device = coo.dtype, coo.device
        with warnings.catch_warnings():   # "CSR support is in beta": matrix products are all it is used for
            warnings.simplefilter("ignore", UserWarning)
            self._csr = coo.to_sparse_csr()
            self._csr_t = coo.t().coalesce().to_sparse_csr()

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype or x.device != self.device:
            raise ValueError(f"SparseOperator holds {self.dtype} on {self.device}, got {x.dtype} on {x.device}")
        return _CsrMatmul.apply(self._csr, self._csr_t, x)


def sparse_matmul(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A @ x`` for ``A [N, M]`` (torch sparse, dense or a SparseOperator) and dense ``x [..., M, C]`` ->
    ``[..., N, C]``.

    Batch dimensions are folded into the column dimension (``[M, B*C]``) so a single sparse-dense
    product is used; differentiable with respect to ``x``.
    """
    if x.dim() < 2:
        raise ValueError(f"expected a tensor of shape [..., M, C], got {tuple(x.shape)}")
    M = x.shape[-2]
    if A.shape[1] != M:
        raise ValueError(f"operator has {A.shape[1]} columns but input has {M} rows (dim -2)")
    if not isinstance(A, SparseOperator) and (A.dtype != x.dtype or A.device != x.device):
        A = A.to(dtype=x.dtype, device=x.device)
    batch = x.shape[:-2]
    C = x.shape[-1]
    xm = x.movedim(-2, 0).reshape(M, -1)  # [M, B*C]
    y = A @ xm if isinstance(A, SparseOperator) or A.layout != torch.sparse_coo else torch.sparse.mm(A, xm)
    return y.reshape(A.shape[0], *batch, C).movedim(0, -2)


def unique_edges(faces: ArrayLike) -> np.ndarray:
    """Undirected edges of a triangle mesh as an int64 ``[E, 2]`` array with ``e[:, 0] < e[:, 1]``.

    Edges are sorted lexicographically by ``(min, max)`` endpoint. Self-loops from degenerate faces
    with a repeated index are dropped.
    """
    f = _as_faces(faces)
    e = f[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    e = np.sort(e, axis=1)
    e = e[e[:, 0] != e[:, 1]]
    if e.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    return _unique_rows(e)[0]


def _unique_rows(e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(e, axis=0, return_inverse=True)`` for nonnegative int ``[M, 2]``, via 1-D int64 keys (fast)."""
    n = int(e.max()) + 1 if e.size else 1
    key = e[:, 0] * n + e[:, 1]
    ukey, inv = np.unique(key, return_inverse=True)
    return np.stack([ukey // n, ukey % n], axis=1).astype(np.int64), inv.reshape(-1)


def vertex_neighbours(faces: ArrayLike, num_verts: int) -> list[np.ndarray]:
    """One-ring vertex neighbours: ``out[i]`` is a sorted int64 array of the vertices sharing an edge with i."""
    e = unique_edges(_as_faces(faces, num_verts))
    a = sp.coo_matrix(
        (np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
        shape=(num_verts, num_verts),
    ).tocsr()
    a.sort_indices()
    return [a.indices[a.indptr[i] : a.indptr[i + 1]].astype(np.int64) for i in range(num_verts)]


# --------------------------------------------------------------------------------------------------
# submesh
# --------------------------------------------------------------------------------------------------


def largest_component(faces: ArrayLike, num_verts: int) -> np.ndarray:
    """[num_verts] bool: the vertices of the mesh's largest edge-connected piece (a head's skin; SMPL-X-format
    models also carry eyeballs, and some a tongue, as separate pieces). Vertices in no face are False."""
    from scipy.sparse.csgraph import connected_components

    f = _as_faces(faces, num_verts)
    e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]]])
    A = sp.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(num_verts, num_verts))
    _, lab = connected_components(A, directed=False)
    used = np.zeros(num_verts, bool)
    used[f.ravel()] = True
    big = np.bincount(lab[used]).argmax()
    return used & (lab == big)


def submesh(faces: np.ndarray, vertex_subset: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Restrict a triangle mesh to a vertex subset.

    Args:
        faces: ``[F, 3]`` integer vertex indices of the full mesh.
        vertex_subset: ``[K]`` distinct integer vertex indices to keep. Its order defines the vertex
            order of the submesh: submesh vertex ``k`` is original vertex ``vertex_subset[k]``.

    Returns:
        ``(sub_faces, face_index)``: ``sub_faces`` is ``[F', 3]`` int64 with indices in ``0..K-1``
        (the faces whose three vertices are all in the subset, winding preserved), and
        ``face_index`` is ``[F']`` int64, the row of each kept face in ``faces`` (ascending).
    """
    f = _as_faces(faces)
    s = np.asarray(vertex_subset)
    if s.ndim != 1:
        raise ValueError(f"vertex_subset must be 1-D, got shape {s.shape}")
    if s.size and not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"vertex_subset must be integer, got dtype {s.dtype}")
    s = s.astype(np.int64)
    if s.size and s.min() < 0:
        raise ValueError("vertex_subset contains negative indices")
    if np.unique(s).size != s.size:
        raise ValueError("vertex_subset contains duplicate indices")
    n = max(int(f.max()) + 1 if f.size else 0, int(s.max()) + 1 if s.size else 0)
    remap = np.full(n, -1, dtype=np.int64)
    remap[s] = np.arange(s.size, dtype=np.int64)
    if f.size == 0:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)
    mapped = remap[f]
    keep = np.all(mapped >= 0, axis=1)
    face_index = np.nonzero(keep)[0].astype(np.int64)
    return np.ascontiguousarray(mapped[keep]), face_index


# --------------------------------------------------------------------------------------------------
# dense topology (midpoint subdivision as a sparse barycentric operator)
# --------------------------------------------------------------------------------------------------


def _subdivide_once(faces: np.ndarray, nv: int) -> tuple[np.ndarray, sp.csr_matrix]:
    """One round of midpoint (1-to-4) subdivision.

    Returns the new faces ``[4F, 3]`` and the level operator ``[nv + E, nv]`` (identity on the old
    vertices, ``0.5/0.5`` on each edge midpoint). Midpoint ``nv + e`` belongs to edge ``e`` of
    :func:`unique_edges` order, so each edge's midpoint is created once and shared by both sides.

    Triangle ``(a, b, c)`` with midpoints ``ab, bc, ca`` becomes, in this order,
    ``(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)`` — all with the parent's winding, and the
    children of face ``f`` are faces ``4f .. 4f+3``.
    """
    F = faces.shape[0]
    half = faces[:, [[0, 1], [1, 2], [2, 0]]]  # [F, 3, 2]: ab, bc, ca
    lo = half.min(axis=2)
    hi = half.max(axis=2)
    key = (lo * nv + hi).reshape(-1)
    ukey, inv = np.unique(key, return_inverse=True)
    E = ukey.size
    mid = (nv + inv.reshape(F, 3)).astype(np.int64)  # [F, 3]: m_ab, m_bc, m_ca
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    mab, mbc, mca = mid[:, 0], mid[:, 1], mid[:, 2]
    new_faces = np.stack(
        [
            np.stack([a, mab, mca], axis=1),
            np.stack([b, mbc, mab], axis=1),
            np.stack([c, mca, mbc], axis=1),
            np.stack([mab, mbc, mca], axis=1),
        ],
        axis=1,
    ).reshape(4 * F, 3)
    e0 = ukey // nv
    e1 = ukey % nv
    rows = np.concatenate([np.arange(nv), nv + np.arange(E), nv + np.arange(E)])
    cols = np.concatenate([np.arange(nv), e0, e1])
    vals = np.concatenate([np.ones(nv), np.full(E, 0.5), np.full(E, 0.5)])
    U = sp.csr_matrix((vals, (rows, cols)), shape=(nv + E, nv))
    return np.ascontiguousarray(new_faces, dtype=np.int64), U


@dataclass(frozen=True, eq=False)
class DenseTopology:
    """Fixed dense mesh obtained from a coarse mesh by ``levels`` rounds of midpoint subdivision.

    The dense canonical mesh is ``V_dense = U · V_coarse`` for a sparse barycentric operator
    ``U [num_dense, num_coarse]``: each row has at most 3 nonzeros, all positive, summing to 1, and
    rows ``0 .. num_coarse-1`` are the identity (the coarse vertices come first, unchanged). Build one
    with :func:`build_dense_topology`; it is immutable (arrays are read-only) and hashable.

    Fields:
        num_coarse: number of coarse vertices ``Nc`` (columns of ``U``).
        num_dense: number of dense vertices ``Nd`` (rows of ``U``).
        levels: number of subdivision rounds (0 = identity).
        faces: ``[Fd, 3]`` int64 dense faces. Dense face ``d`` lies inside coarse face
            ``d // 4**levels`` (see :attr:`face_parent`) with the same winding.
        U_indices: ``[2, nnz]`` int64 ``(row, col)`` of the nonzeros of ``U``, row-major sorted.
        U_values: ``[nnz]`` float64 values of ``U`` (dyadic, hence exact).
    """

    num_coarse: int
    num_dense: int
    levels: int
    faces: np.ndarray
    U_indices: np.ndarray
    U_values: np.ndarray

    def __post_init__(self) -> None:
        nc, nd, lv = int(self.num_coarse), int(self.num_dense), int(self.levels)
        if nc < 0 or nd < nc or lv < 0:
            raise ValueError(f"bad sizes: num_coarse={nc}, num_dense={nd}, levels={lv}")
        faces = _as_faces(self.faces, nd, "faces")
        idx = np.ascontiguousarray(np.asarray(self.U_indices), dtype=np.int64)
        val = np.ascontiguousarray(np.asarray(self.U_values), dtype=np.float64)
        if idx.ndim != 2 or idx.shape[0] != 2 or val.shape != (idx.shape[1],):
            raise ValueError(f"U_indices must be [2, nnz] and U_values [nnz]; got {idx.shape}, {val.shape}")
        if idx.size and (idx.min() < 0 or idx[0].max() >= nd or idx[1].max() >= nc):
            raise ValueError("U_indices out of range for [num_dense, num_coarse]")
        # own private copies so freezing them never touches the caller's arrays
        faces, idx, val = faces.copy(), idx.copy(), val.copy()
        for arr in (faces, idx, val):
            arr.setflags(write=False)
        object.__setattr__(self, "num_coarse", nc)
        object.__setattr__(self, "num_dense", nd)
        object.__setattr__(self, "levels", lv)
        object.__setattr__(self, "faces", faces)
        object.__setattr__(self, "U_indices", idx)
        object.__setattr__(self, "U_values", val)
        object.__setattr__(self, "_cache", {})

    # ---- identity -------------------------------------------------------------------------------

    def hash(self) -> str:
        """Stable sha256 hex digest of (sizes, levels, dense faces, U).

        Computed from little-endian int64/float64 bytes, so it is identical across runs, machines and
        save/load round trips; record it with anything built on this topology.
        """
        h = self._cache.get("hash")
        if h is None:
            m = hashlib.sha256()
            m.update(_HASH_VERSION)
            m.update(np.array([self.num_coarse, self.num_dense, self.levels], dtype="<i8").tobytes())
            m.update(np.array(self.faces.shape, dtype="<i8").tobytes())
            m.update(self.faces.astype("<i8").tobytes())
            m.update(np.array(self.U_indices.shape, dtype="<i8").tobytes())
            m.update(self.U_indices.astype("<i8").tobytes())
            m.update(self.U_values.astype("<f8").tobytes())
            h = m.hexdigest()
            self._cache["hash"] = h
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DenseTopology):
            return NotImplemented
        return (
            self.num_coarse == other.num_coarse
            and self.num_dense == other.num_dense
            and self.levels == other.levels
            and np.array_equal(self.faces, other.faces)
            and np.array_equal(self.U_indices, other.U_indices)
            and np.array_equal(self.U_values, other.U_values)
        )

    def __hash__(self) -> int:
        return hash(self.hash())

    def __repr__(self) -> str:
        return (
            f"DenseTopology(num_coarse={self.num_coarse}, num_dense={self.num_dense}, "
            f"levels={self.levels}, num_faces={len(self.faces)}, nnz={self.U_values.size}, "
            f"hash={self.hash()[:12]})"
        )

    # ---- serialisation --------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (safetensors / npz friendly): ``faces``, ``U_indices``, ``U_values``, ``meta``.

        ``meta`` is int64 ``[num_coarse, num_dense, levels]``. Inverse: :meth:`from_arrays`.
        """
        return {
            "faces": np.array(self.faces, dtype=np.int64),
            "U_indices": np.array(self.U_indices, dtype=np.int64),
            "U_values": np.array(self.U_values, dtype=np.float64),
            "meta": np.array([self.num_coarse, self.num_dense, self.levels], dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, d: dict) -> "DenseTopology":
        """Rebuild from :meth:`to_arrays` output (values may be numpy arrays or torch tensors).

        Extra keys are ignored, so the arrays can live under a prefix-stripped dict of a larger file.
        """

        def npy(x):
            return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

        missing = {"faces", "U_indices", "U_values", "meta"} - set(d)
        if missing:
            raise ValueError(f"DenseTopology.from_arrays: missing keys {sorted(missing)}")
        meta = npy(d["meta"]).astype(np.int64).reshape(-1)
        if meta.size != 3:
            raise ValueError(f"meta must hold [num_coarse, num_dense, levels], got {meta}")
        return cls(
            num_coarse=int(meta[0]),
            num_dense=int(meta[1]),
            levels=int(meta[2]),
            faces=npy(d["faces"]),
            U_indices=npy(d["U_indices"]),
            U_values=npy(d["U_values"]),
        )

    # ---- operator -------------------------------------------------------------------------------

    @property
    def U_scipy(self) -> sp.csr_matrix:
        """``U`` as a scipy CSR matrix ``[num_dense, num_coarse]`` (float64, cached; do not modify)."""
        m = self._cache.get("U_scipy")
        if m is None:
            m = sp.csr_matrix(
                (self.U_values, (self.U_indices[0], self.U_indices[1])),
                shape=(self.num_dense, self.num_coarse),
            )
            m.sort_indices()
            self._cache["U_scipy"] = m
        return m

    def U(
        self,
        dtype: torch.dtype = torch.float32,
        device: Union[str, torch.device] = "cpu",
        layout: torch.layout = torch.sparse_coo,
    ) -> torch.Tensor:
        """``U`` as a coalesced torch sparse tensor ``[num_dense, num_coarse]`` (COO by default, or CSR).

        Cached per (dtype, device, layout); treat the result as read-only.
        """
        key = ("U", dtype, str(torch.device(device)), layout)
        t = self._cache.get(key)
        if t is None:
            t = _torch_sparse(self.U_scipy, dtype, device, layout)
            self._cache[key] = t
        return t

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Dense values ``U · x`` for per-coarse-vertex data ``x [..., num_coarse, C]`` -> ``[..., num_dense, C]``.

        Any leading batch dims are folded into one sparse-dense matmul. Uses ``U`` in ``x``'s dtype and
        device; differentiable with respect to ``x``.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError("upsample expects a torch.Tensor; use dense_weights for numpy arrays")
        if x.dim() < 2 or x.shape[-2] != self.num_coarse:
            raise ValueError(f"expected [..., {self.num_coarse}, C], got {tuple(x.shape)}")
        key = ("U_op", x.dtype, str(x.device))
        op = self._cache.get(key)
        if op is None:
            op = self._cache[key] = SparseOperator(self.U(x.dtype, x.device))
        return sparse_matmul(op, x)

    def dense_weights(self, W: ArrayLike) -> ArrayLike:
        """Dense skinning weights ``U · W`` for ``W [num_coarse, J]`` -> ``[num_dense, J]``.

        numpy in -> numpy float64 out (via scipy); torch in -> torch out (same dtype/device,
        differentiable). If the rows of ``W`` sum to 1 so do the rows of the result (U is row-stochastic),
        and nonnegative weights stay nonnegative.
        """
        if isinstance(W, torch.Tensor):
            if W.dim() != 2:
                raise ValueError(f"W must be [num_coarse, J], got {tuple(W.shape)}")
            return self.upsample(W)
        W = np.asarray(W, dtype=np.float64)
        if W.ndim != 2 or W.shape[0] != self.num_coarse:
            raise ValueError(f"W must be [{self.num_coarse}, J], got {W.shape}")
        return np.asarray(self.U_scipy @ W)

    def upsample_np(self, x: np.ndarray) -> np.ndarray:
        """numpy version of :meth:`upsample` for ``x [num_coarse, C]`` (float64), e.g. rest vertices."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.num_coarse:
            raise ValueError(f"expected [{self.num_coarse}, C], got {x.shape}")
        return np.asarray(self.U_scipy @ x)

    # ---- masks / provenance ---------------------------------------------------------------------

    def dense_mask(self, coarse_mask: ArrayLike, rule: str = "all") -> ArrayLike:
        """Lift a per-coarse-vertex boolean mask (e.g. face region) to the dense vertices.

        A dense vertex's *parents* are the coarse vertices with a nonzero in its ``U`` row.
        ``rule="all"``: in the region iff all its parents are (erodes the region boundary);
        ``rule="any"``: iff any parent is (dilates it). Coarse vertices are their own single parent,
        so both rules agree with ``coarse_mask`` on rows ``0 .. num_coarse-1``.

        numpy in -> numpy ``bool[num_dense]``; torch in -> torch bool on the same device.
        """
        if rule not in ("all", "any"):
            raise ValueError(f"rule must be 'all' or 'any', got {rule!r}")
        is_torch = isinstance(coarse_mask, torch.Tensor)
        dev = coarse_mask.device if is_torch else None
        m = coarse_mask.detach().cpu().numpy() if is_torch else np.asarray(coarse_mask)
        if m.shape != (self.num_coarse,):
            raise ValueError(f"coarse_mask must have shape ({self.num_coarse},), got {m.shape}")
        m = m.astype(bool)
        rows, cols = self.U_indices
        nnz_per_row = np.bincount(rows, minlength=self.num_dense)
        in_per_row = np.bincount(rows, weights=m[cols].astype(np.float64), minlength=self.num_dense)
        in_per_row = in_per_row.astype(np.int64)
        if rule == "all":
            out = (in_per_row == nnz_per_row) & (nnz_per_row > 0)
        else:
            out = in_per_row > 0
        return torch.from_numpy(out).to(dev) if is_torch else out

    def parents(self, dense_index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(coarse_indices, weights)`` of one dense vertex: the nonzeros of its ``U`` row (≤ 3)."""
        i = int(dense_index)
        if not 0 <= i < self.num_dense:
            raise IndexError(f"dense index {i} out of range [0, {self.num_dense})")
        U = self.U_scipy
        sl = slice(U.indptr[i], U.indptr[i + 1])
        return U.indices[sl].astype(np.int64), U.data[sl].copy()

    @property
    def face_parent(self) -> np.ndarray:
        """``[Fd]`` int64: the coarse face each dense face lies in (``d // 4**levels``)."""
        return np.arange(len(self.faces), dtype=np.int64) // (4**self.levels)

    def face_mask(self, coarse_face_mask: np.ndarray) -> np.ndarray:
        """Lift a per-coarse-face boolean mask to the dense faces (each dense face inherits its parent's)."""
        m = np.asarray(coarse_face_mask, dtype=bool)
        nf = len(self.faces) // (4**self.levels)
        if m.shape != (nf,):
            raise ValueError(f"coarse_face_mask must have shape ({nf},), got {m.shape}")
        return m[self.face_parent]


def build_dense_topology(faces: np.ndarray, num_verts: int, levels: int) -> DenseTopology:
    """Midpoint-subdivide a triangle mesh ``levels`` times and return the :class:`DenseTopology`.

    Args:
        faces: ``[F, 3]`` integer coarse faces (indices in ``0 .. num_verts-1``, no repeated index in a
            face). Vertices not used by any face are kept as identity rows.
        num_verts: number of coarse vertices ``Nc``.
        levels: subdivision rounds, ``>= 0`` (0 = identity operator and the same faces; the design
            uses 0–2).

    Dense vertex order: the ``Nc`` coarse vertices first (identity rows of ``U``), then the edge
    midpoints of level 1 (edges in lexicographic ``(min, max)`` order), then those of level 2, etc.
    A closed mesh with ``V, E, F`` gets ``V + E`` vertices and ``4F`` faces per level; each face is
    split into 4 with its winding preserved and each edge's midpoint is shared by both neighbours.
    Levels are composed sparsely, ``U = U_L ··· U_2 · U_1``, with explicit zeros pruned. All loops
    are over levels only (vectorised numpy/scipy inside).
    """
    nv = int(num_verts)
    if nv < 0:
        raise ValueError(f"num_verts must be >= 0, got {num_verts}")
    lv = int(levels)
    if lv != levels or lv < 0:
        raise ValueError(f"levels must be a non-negative integer, got {levels}")
    f = _as_faces(faces, nv)
    if f.size and np.any((f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 2] == f[:, 0])):
        raise ValueError("faces contain a degenerate triangle with a repeated vertex index")
    U = sp.identity(nv, dtype=np.float64, format="csr")
    cur_faces, cur_nv = f, nv
    for _ in range(lv):
        cur_faces, U_level = _subdivide_once(cur_faces, cur_nv)
        cur_nv = U_level.shape[0]
        U = (U_level @ U).tocsr()
    U.eliminate_zeros()
    U.sum_duplicates()
    U.sort_indices()
    coo = U.tocoo()
    # csr -> coo keeps row-major order with sorted columns inside each row
    idx = np.vstack([coo.row, coo.col]).astype(np.int64)
    return DenseTopology(
        num_coarse=nv,
        num_dense=cur_nv,
        levels=lv,
        faces=cur_faces,
        U_indices=idx,
        U_values=coo.data.astype(np.float64),
    )


# --------------------------------------------------------------------------------------------------
# Laplacians
# --------------------------------------------------------------------------------------------------


def _laplacian_from_edge_weights(
    edges: np.ndarray, w: np.ndarray, n: int
) -> sp.csr_matrix:
    """``L = D − W`` from unique undirected edges ``[E, 2]`` and weights ``[E]`` (exactly symmetric)."""
    i, j = edges[:, 0], edges[:, 1]
    diag = np.bincount(i, weights=w, minlength=n) + np.bincount(j, weights=w, minlength=n)
    rows = np.concatenate([i, j, np.arange(n)])
    cols = np.concatenate([j, i, np.arange(n)])
    vals = np.concatenate([-w, -w, diag])
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def graph_laplacian(faces: ArrayLike, num_verts: int) -> "sp.csr_matrix":
    """The combinatorial Laplacian ``L = D − A`` of the mesh edges as a SciPy CSR matrix (float64, symmetric
    PSD): for sparse solvers; :func:`uniform_laplacian` gives the same as a torch sparse tensor."""
    return _uniform_laplacian_scipy(faces, num_verts, normalized=False)


def uniform_laplacian(
    faces: ArrayLike,
    num_verts: int,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device] = "cpu",
    normalized: bool = False,
    layout: torch.layout = torch.sparse_coo,
    regions: ArrayLike | None = None,
    across: float = 1.0,
) -> torch.Tensor:
    """Graph (umbrella) Laplacian of the mesh edges as a torch sparse ``[N, N]`` tensor.

    ``normalized=False``: ``L = D − A`` with ``A`` the 0/1 edge adjacency and ``D`` the valence on the
    diagonal (symmetric PSD, ``L·1 = 0``, ``(L·x)_i = deg_i·x_i − Σ_{j~i} x_j``).
    ``normalized=True``: ``L = I − D⁻¹A`` (random-walk; not symmetric, ``(L·x)_i = x_i − mean_{j~i} x_j``,
    still ``L·1 = 0``). Isolated vertices get an all-zero row in both cases.
    ``regions`` [N] labels: an edge joining two labels weighs ``across`` instead of 1 (0: each region smooth on
    its own, a step between them free).
    """
    return _torch_sparse(_uniform_laplacian_scipy(faces, num_verts, normalized, regions, across), dtype, device,
                         layout)


def _uniform_laplacian_scipy(faces: ArrayLike, num_verts: int, normalized: bool, regions: ArrayLike | None = None,
                             across: float = 1.0) -> sp.csr_matrix:
    n = int(num_verts)
    e = unique_edges(_as_faces(faces, n))
    w = np.ones(len(e))
    if regions is not None:
        lab = np.asarray(regions).reshape(-1)
        if lab.shape[0] != n:
            raise ValueError(f"regions has {lab.shape[0]} labels for {n} vertices")
        w[lab[e[:, 0]] != lab[e[:, 1]]] = float(across)
    L = _laplacian_from_edge_weights(e, w, n)
    if normalized:
        deg = L.diagonal()
        inv = np.zeros(n)
        inv[deg > 0] = 1.0 / deg[deg > 0]
        L = (sp.diags(inv) @ L).tocsr()
    return L


def base_smoother(topology: DenseTopology, base_faces: ArrayLike, idx: ArrayLike,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Two torch sparse operators for a field on the dense vertices ``idx`` (a low-pass at the base model's
    edge length, whatever the subdivision level): R ``[m, n]`` averages the field onto the m base vertices
    among ``idx`` (the first ``num_coarse`` dense vertices), each over the dense vertices its upsampling
    weights reach; A ``[m, m]`` is one step ``x -> (x + mean of the base-mesh neighbours) / 2``, neighbours
    outside ``idx`` counting as 0 (a field that is 0 there). ``base_faces``: the base mesh U subdivides."""
    i = np.asarray(idx, dtype=np.int64)
    U = topology.U_scipy
    base = i[i < topology.num_coarse]
    Rt = sp.csr_matrix(U[i][:, base].T)
    R = sp.diags(1.0 / np.maximum(np.asarray(Rt.sum(1)).ravel(), 1e-12)) @ Rt
    L = _uniform_laplacian_scipy(base_faces, topology.num_coarse, normalized=True)[base][:, base]
    A = sp.identity(len(base)) - 0.5 * L
    return _torch_sparse(R, dtype, "cpu", torch.sparse_coo), _torch_sparse(A, dtype, "cpu", torch.sparse_coo)


def cotangent_weights(
    verts: ArrayLike, faces: ArrayLike, cot_clamp: float = 1e3
) -> tuple[np.ndarray, np.ndarray]:
    """Cotangent edge weights ``w_ij = (cot α_ij + cot β_ij) / 2`` (one cotangent on boundary edges).

    Returns ``(edges [E, 2] int64, weights [E] float64)`` with edges as in :func:`unique_edges`.
    Computed in float64. Degenerate (zero-area) triangles are handled by flooring ``|e1 × e2|`` at a
    small fraction of the triangle's squared edge lengths and clipping each cotangent to
    ``[-cot_clamp, cot_clamp]``; the result is always finite. Weights can be negative for obtuse
    angles (standard cotangent Laplacian, not the intrinsic-Delaunay one).
    """
    if isinstance(verts, torch.Tensor):
        verts = verts.detach().cpu().numpy()
    v = np.asarray(verts, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"verts must have shape [N, 3], got {v.shape}")
    f = _as_faces(faces, v.shape[0])
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    if f.shape[0] == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    p = v[f]  # [F, 3(corner), 3(xyz)]
    # corner k: opposite edge (k+1, k+2); vectors from corner k to the other two
    u = p[:, [1, 2, 0]] - p  # corner -> next
    w = p[:, [2, 0, 1]] - p  # corner -> prev
    dot = np.einsum("fkc,fkc->fk", u, w)
    cross = np.linalg.norm(np.cross(u, w), axis=-1)  # 2·area, same at all corners up to rounding
    sq = (u * u).sum(-1) + (w * w).sum(-1)
    floor = 1e-12 * sq + np.finfo(np.float64).tiny
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        cot = dot / np.maximum(cross, floor)
    cot = np.clip(np.nan_to_num(cot, nan=0.0, posinf=cot_clamp, neginf=-cot_clamp), -cot_clamp, cot_clamp)
    # corner k's cotangent goes to the opposite edge (k+1, k+2)
    opp = f[:, [[1, 2], [2, 0], [0, 1]]].reshape(-1, 2)
    opp = np.sort(opp, axis=1)
    edges, inv = _unique_rows(opp)
    weights = np.bincount(inv.reshape(-1), weights=0.5 * cot.reshape(-1), minlength=len(edges))
    return edges.astype(np.int64), weights


def cotangent_laplacian(
    verts: ArrayLike,
    faces: ArrayLike,
    dtype: torch.dtype = torch.float32,
    device: Union[str, torch.device] = "cpu",
    cot_clamp: float = 1e3,
    layout: torch.layout = torch.sparse_coo,
) -> torch.Tensor:
    """Cotangent Laplacian ``L = D − W`` as a torch sparse ``[N, N]`` tensor (N = ``len(verts)``).

    ``W_ij = (cot α_ij + cot β_ij) / 2`` over the (one or two) triangles sharing edge ij, and
    ``D_ii = Σ_j W_ij``; so ``L`` is symmetric, ``L·1 = 0``, and positive semi-definite for
    Delaunay-like meshes. It is *not* mass-normalised. On a planar mesh ``L·x = 0`` at interior
    vertices for any linear function x. Built from ``verts`` (numpy or torch; detached, computed in
    float64) — it is a fixed operator, not differentiable w.r.t. ``verts``. See
    :func:`cotangent_weights` for degenerate-triangle handling (always finite).
    """
    n = (verts.shape[0] if isinstance(verts, torch.Tensor) else np.asarray(verts).shape[0])
    edges, w = cotangent_weights(verts, faces, cot_clamp=cot_clamp)
    L = _laplacian_from_edge_weights(edges, w, int(n))
    return _torch_sparse(L, dtype, device, layout)


def laplacian_penalty(L, offsets: torch.Tensor) -> torch.Tensor:
    """Smoothness penalty ``mean_i ||(L·D)_i||²`` for an offset field ``D`` of shape ``[N, 3]`` or ``[B, N, 3]``.

    The mean is over L's rows (and batch); the squared norm is over the last (xyz) dim. Apply it to
    the *offsets* D (dense displacement from the template), never to the posed vertices V. ``L`` is
    any ``[M, N]`` Laplacian from this module (torch sparse, dense or a :class:`SparseOperator`; M < N: the
    rows of a region, as the fitter's face Laplacian); a torch matrix is cast to ``offsets``' dtype/device.
    Differentiable with respect to ``offsets``.
    """
    if offsets.dim() not in (2, 3):
        raise ValueError(f"offsets must be [N, C] or [B, N, C], got {tuple(offsets.shape)}")
    if len(L.shape) != 2 or L.shape[1] != offsets.shape[-2]:
        raise ValueError(f"L {tuple(L.shape)} does not match offsets {tuple(offsets.shape)}")
    y = sparse_matmul(L, offsets)
    return (y * y).sum(-1).mean()
