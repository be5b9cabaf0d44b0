"""Tests for headrep.model.topology: submesh, dense subdivision operator, masks, Laplacians."""

import numpy as np
import pytest
import torch
from scipy.spatial import ConvexHull

from headrep.model.topology import (
    DenseTopology,
    SparseOperator,
    build_dense_topology,
    cotangent_laplacian,
    laplacian_penalty,
    submesh,
    unique_edges,
    uniform_laplacian,
    vertex_neighbours,
)

# ------------------------------------------------------------------------------------------------
# fixtures / helpers
# ------------------------------------------------------------------------------------------------


def face_normals(v, f):
    return np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])


def icosahedron():
    """Unit-circumradius icosahedron with outward-oriented faces (V, E, F) = (12, 30, 20)."""
    phi = (1 + 5**0.5) / 2
    v = []
    for s1 in (-1, 1):
        for s2 in (-1, 1):
            v += [(0, s1, s2 * phi), (s1, s2 * phi, 0), (s2 * phi, 0, s1)]
    v = np.array(v, dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    f = ConvexHull(v).simplices.astype(np.int64)
    flip = (face_normals(v, f) * v[f].mean(1)).sum(1) < 0
    f[flip] = f[flip][:, ::-1]
    return v, f


def grid(n, m, jitter=0.0, seed=0):
    """Planar n×m grid in z=0 (open mesh), two triangles per cell, consistent +z winding."""
    ys, xs = np.meshgrid(np.arange(n, dtype=float), np.arange(m, dtype=float), indexing="ij")
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * m)], 1)
    if jitter:
        rng = np.random.default_rng(seed)
        inner = np.zeros((n, m), bool)
        inner[1:-1, 1:-1] = True
        v[inner.ravel(), :2] += rng.uniform(-jitter, jitter, (inner.sum(), 2))
    g = np.arange(n * m).reshape(n, m)
    a, b, c, d = g[:-1, :-1].ravel(), g[:-1, 1:].ravel(), g[1:, 1:].ravel(), g[1:, :-1].ravel()
    f = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    return v, f.astype(np.int64)


def n_edges(f):
    return len(unique_edges(f))


def dense_U(topo):
    return topo.U(torch.float64).to_dense().numpy()


# ------------------------------------------------------------------------------------------------
# submesh
# ------------------------------------------------------------------------------------------------


def test_submesh_reindexes_in_subset_order():
    faces = np.array([[0, 1, 2], [1, 3, 2], [2, 3, 4], [4, 5, 0]])
    sub, idx = submesh(faces, np.array([3, 2, 1, 4]))
    # kept: faces 1 (1,3,2) and 2 (2,3,4); new index = position in subset
    np.testing.assert_array_equal(idx, [1, 2])
    np.testing.assert_array_equal(sub, [[2, 0, 1], [1, 0, 3]])
    assert sub.dtype == np.int64 and idx.dtype == np.int64
    # mapping back reproduces the original faces, winding included
    np.testing.assert_array_equal(np.array([3, 2, 1, 4])[sub], faces[idx])


def test_submesh_rejects_duplicates_and_empty_ok():
    with pytest.raises(ValueError):
        submesh(np.array([[0, 1, 2]]), np.array([0, 0, 1]))
    sub, idx = submesh(np.array([[0, 1, 2]]), np.array([0, 1]))
    assert sub.shape == (0, 3) and idx.shape == (0,)


# ------------------------------------------------------------------------------------------------
# dense topology: operator structure
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [0, 1, 2])
def test_U_identity_on_coarse_rows_and_convex(levels):
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), levels)
    U = dense_U(t)
    assert U.shape == (t.num_dense, t.num_coarse)
    np.testing.assert_array_equal(U[: t.num_coarse], np.eye(t.num_coarse))
    # convex combination of at most 3 coarse vertices
    assert (U >= 0).all()
    np.testing.assert_allclose(U.sum(1), 1.0, atol=0, rtol=0)  # dyadic values: exact
    assert ((U > 0).sum(1) <= 3).all()
    assert (t.U_values > 0).all()  # explicit zeros pruned
    # coarse mesh maps exactly onto itself at coarse vertices
    vd = t.upsample(torch.from_numpy(v)).numpy()
    np.testing.assert_array_equal(vd[: len(v)], v)


@pytest.mark.parametrize("levels", [1, 2])
def test_dense_weights_row_stochastic(levels):
    rng = np.random.default_rng(1)
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), levels)
    W = rng.random((len(v), 7))
    W /= W.sum(1, keepdims=True)
    Wd = t.dense_weights(W)
    assert Wd.shape == (t.num_dense, 7)
    np.testing.assert_allclose(Wd.sum(1), 1.0, atol=1e-12)
    assert (Wd >= 0).all()
    np.testing.assert_allclose(Wd[: len(v)], W)
    # torch path agrees with numpy path
    Wt = t.dense_weights(torch.from_numpy(W))
    assert isinstance(Wt, torch.Tensor)
    np.testing.assert_allclose(Wt.numpy(), Wd, atol=1e-12)


def test_dense_rows_are_corners_of_one_parent_face():
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 2)
    parent = t.face_parent
    U = t.U_scipy
    for d in range(len(t.faces)):
        cols = np.unique(np.concatenate([U[i].indices for i in t.faces[d]]))
        assert set(cols) <= set(f[parent[d]])


def test_level0_is_identity():
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 0)
    assert t.num_dense == t.num_coarse == 12
    np.testing.assert_array_equal(t.faces, f)
    assert f.flags.writeable  # caller's array is not frozen along with the topology's copy
    f[0, 0] = f[0, 0]


# ------------------------------------------------------------------------------------------------
# counts (Euler)
# ------------------------------------------------------------------------------------------------


def test_counts_icosahedron():
    v, f = icosahedron()
    assert (len(v), n_edges(f), len(f)) == (12, 30, 20)
    t1 = build_dense_topology(f, 12, 1)
    assert (t1.num_dense, len(t1.faces)) == (42, 80)
    t2 = build_dense_topology(f, 12, 2)
    assert (t2.num_dense, len(t2.faces)) == (162, 320)
    # still a closed 2-manifold: Euler characteristic 2, every edge in exactly 2 faces
    E2 = n_edges(t2.faces)
    assert t2.num_dense - E2 + len(t2.faces) == 2
    e = np.sort(t2.faces[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert (counts == 2).all()
    # midpoints shared: no two dense vertices coincide
    vd = t2.upsample_np(v)
    assert len(np.unique(np.round(vd, 12), axis=0)) == t2.num_dense


def test_counts_open_grid():
    v, f = grid(4, 5)
    V, E, F = len(v), n_edges(f), len(f)
    assert (V, F) == (20, 24)
    t1 = build_dense_topology(f, V, 1)
    assert (t1.num_dense, len(t1.faces)) == (V + E, 4 * F)
    E1 = 2 * E + 3 * F
    assert n_edges(t1.faces) == E1
    t2 = build_dense_topology(f, V, 2)
    assert (t2.num_dense, len(t2.faces)) == (V + E + E1, 16 * F)


def test_unused_vertices_kept_as_identity_rows():
    f = np.array([[0, 1, 2]])
    t = build_dense_topology(f, 5, 1)
    assert t.num_dense == 8
    np.testing.assert_array_equal(dense_U(t)[:5], np.eye(5))


def test_rejects_bad_faces():
    with pytest.raises(ValueError):
        build_dense_topology(np.array([[0, 1, 1]]), 3, 1)
    with pytest.raises(ValueError):
        build_dense_topology(np.array([[0, 1, 3]]), 3, 1)
    with pytest.raises(ValueError):
        build_dense_topology(np.array([[0, 1, 2]]), 3, -1)


# ------------------------------------------------------------------------------------------------
# geometry
# ------------------------------------------------------------------------------------------------


def test_flat_mesh_stays_flat():
    rng = np.random.default_rng(2)
    v2, f = grid(5, 6, jitter=0.2)
    # put the grid on a random tilted plane n·x = c
    R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    v = v2 @ R.T + np.array([0.3, -1.0, 2.0])
    n = R[:, 2]
    c = v[0] @ n
    t = build_dense_topology(f, len(v), 2)
    vd = t.upsample_np(v)
    np.testing.assert_allclose(vd @ n, c, atol=1e-12)


def test_icosphere_midpoints_inside_sphere():
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 1)
    vd = t.upsample_np(v)
    r = np.linalg.norm(vd, axis=1)
    np.testing.assert_allclose(r[:12], 1.0, atol=1e-15)
    # hand computation: edge a = 4/sqrt(10+2√5) for unit circumradius; midpoint radius
    # sqrt(1 - (a/2)^2) = sqrt((5+√5)/10) ≈ 0.850651, i.e. 0.149349 inside the sphere
    a = 4 / np.sqrt(10 + 2 * np.sqrt(5))
    expected = np.sqrt(1 - a * a / 4)
    assert abs(expected - np.sqrt((5 + np.sqrt(5)) / 10)) < 1e-15
    np.testing.assert_allclose(r[12:], expected, atol=1e-12)
    assert abs((1 - r[12:]).mean() - 0.1493487) < 1e-6
    # renormalised: all on the sphere
    vn = vd / r[:, None]
    np.testing.assert_allclose(np.linalg.norm(vn, axis=1), 1.0, atol=1e-15)


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("renormalise", [False, True])
def test_orientation_matches_parent(levels, renormalise):
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), levels)
    vd = t.upsample_np(v)
    if renormalise:
        vd /= np.linalg.norm(vd, axis=1, keepdims=True)
    nd = face_normals(vd, t.faces)
    npar = face_normals(v, f)[t.face_parent]
    cos = (nd * npar).sum(1) / np.linalg.norm(nd, axis=1) / np.linalg.norm(npar, axis=1)
    assert (cos > 0.5).all()  # a flipped child would give cos < 0
    if not renormalise:  # children are coplanar with the parent
        np.testing.assert_allclose(cos, 1.0, atol=1e-12)


def test_orientation_open_grid():
    v, f = grid(4, 4)
    t = build_dense_topology(f, len(v), 2)
    nd = face_normals(t.upsample_np(v), t.faces)
    assert (nd[:, 2] > 0).all()


# ------------------------------------------------------------------------------------------------
# masks / parents
# ------------------------------------------------------------------------------------------------


def test_dense_mask_all_vs_any_hand_example():
    # one triangle, level 1: dense 3 = mid(0,1), 4 = mid(0,2), 5 = mid(1,2)
    t = build_dense_topology(np.array([[0, 1, 2]]), 3, 1)
    np.testing.assert_array_equal(t.faces, [[0, 3, 4], [1, 5, 3], [2, 4, 5], [3, 5, 4]])
    m = np.array([True, True, False])
    np.testing.assert_array_equal(t.dense_mask(m, "all"), [1, 1, 0, 1, 0, 0])
    np.testing.assert_array_equal(t.dense_mask(m, "any"), [1, 1, 0, 1, 1, 1])
    # torch in -> torch out
    out = t.dense_mask(torch.tensor([True, False, False]), "any")
    assert out.dtype == torch.bool and out.tolist() == [True, False, False, True, True, False]
    cols, w = t.parents(5)
    np.testing.assert_array_equal(cols, [1, 2])
    np.testing.assert_array_equal(w, [0.5, 0.5])
    with pytest.raises(ValueError):
        t.dense_mask(m, "most")


def test_dense_mask_level2_all_subset_of_any():
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 2)
    m = v[:, 2] > 0.2
    a, b = t.dense_mask(m, "all"), t.dense_mask(m, "any")
    assert (a <= b).all() and a.sum() < b.sum()
    np.testing.assert_array_equal(a[:12], m)
    np.testing.assert_array_equal(b[:12], m)


# ------------------------------------------------------------------------------------------------
# serialisation / hash
# ------------------------------------------------------------------------------------------------


def test_round_trip_and_hash(tmp_path):
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 2)
    d = t.to_arrays()
    assert all(isinstance(x, np.ndarray) for x in d.values())
    np.savez(tmp_path / "topo.npz", **d)
    t2 = DenseTopology.from_arrays(dict(np.load(tmp_path / "topo.npz")))
    assert t2 == t and t2.hash() == t.hash()
    assert t.hash() == build_dense_topology(f, len(v), 2).hash()
    assert t.hash() != build_dense_topology(f, len(v), 1).hash()
    assert len({t.hash(), build_dense_topology(f, len(v), 0).hash()}) == 2
    assert t.hash() != build_dense_topology(f[:, [0, 2, 1]], len(v), 2).hash()
    # known-value pin: the single-triangle level-1 topology must not silently change
    one = build_dense_topology(np.array([[0, 1, 2]]), 3, 1)
    assert len(one.hash()) == 64 and one.hash() == DenseTopology.from_arrays(one.to_arrays()).hash()
    # arrays are read-only
    with pytest.raises(ValueError):
        t.faces[0, 0] = 1


def test_round_trip_safetensors(tmp_path):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 1)
    safetensors_numpy.save_file(t.to_arrays(), str(tmp_path / "t.safetensors"))
    t2 = DenseTopology.from_arrays(safetensors_numpy.load_file(str(tmp_path / "t.safetensors")))
    assert t2.hash() == t.hash()


# ------------------------------------------------------------------------------------------------
# upsample (torch)
# ------------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta")
def test_upsample_sparse_batched_and_gradcheck():
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 1)
    U = t.U()
    assert U.is_sparse and U.layout == torch.sparse_coo and U.dtype == torch.float32
    Ucsr = t.U(torch.float64, layout=torch.sparse_csr)
    assert Ucsr.layout == torch.sparse_csr
    x = torch.randn(2, 3, 12, 4, dtype=torch.float64)
    y = t.upsample(x)
    assert y.shape == (2, 3, t.num_dense, 4)
    Ud = torch.from_numpy(dense_U(t))
    torch.testing.assert_close(y, Ud @ x)
    x = torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(t.upsample, (x,))
    with pytest.raises(ValueError):
        t.upsample(torch.randn(11, 3))


def test_sparse_operator_product_and_gradient_match_the_dense_matrix():
    """A rectangular sparse matrix (duplicate entries summed, as COO allows) against its dense float64 self:
    the product, and the gradient through the stored transpose, by gradcheck's finite differences too."""
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 7, 40), rng.integers(0, 11, 40)
    vals = rng.normal(size=40)
    A = torch.sparse_coo_tensor(torch.as_tensor(np.stack([rows, cols])), torch.as_tensor(vals), (7, 11),
                                check_invariants=True)
    dense = np.zeros((7, 11))
    np.add.at(dense, (rows, cols), vals)
    op = SparseOperator(A)
    assert op.shape == (7, 11)
    x = torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    y = op @ x
    torch.testing.assert_close(y, torch.as_tensor(dense) @ x)
    g = torch.randn(7, 4, dtype=torch.float64)
    (y * g).sum().backward()
    torch.testing.assert_close(x.grad, torch.as_tensor(dense).T @ g)
    assert torch.autograd.gradcheck(lambda z: op @ z, (torch.randn(11, 2, dtype=torch.float64, requires_grad=True),))
    with pytest.raises(ValueError, match="float64"):
        op @ torch.randn(11, 4)


# ------------------------------------------------------------------------------------------------
# Laplacians
# ------------------------------------------------------------------------------------------------


def oracle_cot_laplacian(v, f):
    """Straightforward float64 per-triangle loop with angles via arccos (independent of the module)."""
    n = len(v)
    L = np.zeros((n, n))
    for tri in f:
        for k in range(3):
            i, j, o = tri[(k + 1) % 3], tri[(k + 2) % 3], tri[k]
            a, b = v[i] - v[o], v[j] - v[o]
            ang = np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1))
            w = 0.5 / np.tan(ang)
            L[i, j] -= w
            L[j, i] -= w
            L[i, i] += w
            L[j, j] += w
    return L


def random_mesh(seed=3):
    rng = np.random.default_rng(seed)
    v, f = icosahedron()
    t = build_dense_topology(f, len(v), 1)
    vd = t.upsample_np(v)
    vd *= rng.uniform(0.8, 1.2, (len(vd), 1))
    vd += rng.normal(scale=0.03, size=vd.shape)
    fd = t.faces[rng.permutation(len(t.faces))[:60]]  # drop some faces -> boundary edges too
    return vd, fd


def test_cotangent_matches_oracle():
    v, f = random_mesh()
    L = cotangent_laplacian(v, f, dtype=torch.float64)
    assert L.is_sparse
    Ld = L.to_dense().numpy()
    np.testing.assert_allclose(Ld, oracle_cot_laplacian(v, f), atol=1e-10)
    np.testing.assert_array_equal(Ld, Ld.T)  # exactly symmetric
    np.testing.assert_allclose(Ld @ np.ones(len(v)), 0, atol=1e-12)
    # torch input gives the same operator
    L2 = cotangent_laplacian(torch.from_numpy(v).float(), torch.from_numpy(f), dtype=torch.float64)
    np.testing.assert_allclose(L2.to_dense().numpy(), Ld, atol=1e-5)


def test_cotangent_psd_on_sphere():
    v, f = icosahedron()
    t = build_dense_topology(f, 12, 2)
    vd = t.upsample_np(v)
    vd /= np.linalg.norm(vd, axis=1, keepdims=True)
    Ld = cotangent_laplacian(vd, t.faces, dtype=torch.float64).to_dense().numpy()
    assert np.linalg.eigvalsh(Ld).min() > -1e-10
    # icosahedron: every edge has two 60° angles opposite -> w = cot(60°) = 1/√3
    L0 = cotangent_laplacian(v, f, dtype=torch.float64).to_dense().numpy()
    np.testing.assert_allclose(np.diag(L0), 5 / np.sqrt(3), rtol=1e-12)


def test_cotangent_linear_precision_on_flat_grid():
    v, f = grid(6, 7, jitter=0.25, seed=4)
    L = cotangent_laplacian(v, f, dtype=torch.float64).to_dense().numpy()
    lin = 0.7 * v[:, 0] - 1.3 * v[:, 1] + 2.0
    r = L @ lin
    interior = np.ones((6, 7), bool)
    interior[[0, -1], :] = False
    interior[:, [0, -1]] = False
    np.testing.assert_allclose(r[interior.ravel()], 0, atol=1e-12)
    assert np.abs(r[~interior.ravel()]).max() > 1e-3  # boundary rows are not zero: test is live
    np.testing.assert_allclose(L @ np.ones(len(v)), 0, atol=1e-12)


def test_cotangent_degenerate_triangle_finite():
    v = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=np.float64)
    # face 0 collinear (zero area), face 2 has two coincident vertices
    f = np.array([[0, 1, 2], [0, 2, 3], [1, 3, 4]])
    L = cotangent_laplacian(v, f, dtype=torch.float64)
    Ld = L.to_dense().numpy()
    assert np.isfinite(Ld).all()
    np.testing.assert_allclose(Ld.sum(1), 0, atol=1e-9)
    np.testing.assert_array_equal(Ld, Ld.T)
    Lf = cotangent_laplacian(v, f, dtype=torch.float32)
    assert torch.isfinite(Lf.to_dense()).all()


def test_uniform_laplacian_icosahedron():
    v, f = icosahedron()
    L = uniform_laplacian(f, 12)
    assert L.is_sparse and L.dtype == torch.float32
    Ld = L.to_dense().numpy()
    np.testing.assert_array_equal(np.diag(Ld), 5)
    np.testing.assert_array_equal(Ld.sum(1), 0)
    np.testing.assert_array_equal(Ld, Ld.T)
    assert set(np.unique(Ld[~np.eye(12, dtype=bool)])) == {0.0, -1.0}
    Ln = uniform_laplacian(f, 12, dtype=torch.float64, normalized=True).to_dense().numpy()
    np.testing.assert_allclose(np.diag(Ln), 1)
    np.testing.assert_allclose(Ln.sum(1), 0, atol=1e-15)
    np.testing.assert_allclose(Ln[Ln < 0], -0.2)
    nb = vertex_neighbours(f, 12)
    assert all(len(x) == 5 for x in nb)
    np.testing.assert_array_equal(nb[0], np.nonzero(Ld[0] < 0)[0])


def test_uniform_laplacian_grid_valence_and_isolated():
    v, f = grid(3, 3)
    L = uniform_laplacian(f, 10, dtype=torch.float64).to_dense().numpy()  # vertex 9 isolated
    deg = np.array([len(x) for x in vertex_neighbours(f, 10)])
    np.testing.assert_array_equal(np.diag(L), deg)
    assert deg[4] == 6 and deg[9] == 0
    np.testing.assert_array_equal(L.sum(1), 0)
    Ln = uniform_laplacian(f, 10, normalized=True).to_dense().numpy()
    np.testing.assert_array_equal(Ln[9], 0)
    assert np.isfinite(Ln).all()


def test_uniform_laplacian_regions_leave_a_step_free():
    """With two regions and ``across`` 0 each row averages over its own region's neighbours only: a field that is
    constant on each region (a step at the border) has L·x = 0; ``across`` 1 is the plain Laplacian, and a
    value in between weighs the crossing edges by hand."""
    v, f = grid(3, 4)  # 12 vertices; columns 0-1 one region, columns 2-3 the other
    lab = (np.arange(12) % 4 >= 2).astype(int)
    step = torch.as_tensor(lab, dtype=torch.float64)[:, None] * 7.0
    L0 = uniform_laplacian(f, 12, dtype=torch.float64, normalized=True, regions=lab, across=0.0).to_dense()
    assert float((L0 @ step).abs().max()) < 1e-12
    L1 = uniform_laplacian(f, 12, dtype=torch.float64, normalized=True, regions=lab, across=1.0).to_dense()
    torch.testing.assert_close(L1, uniform_laplacian(f, 12, dtype=torch.float64, normalized=True).to_dense())
    assert float((L1 @ step).abs().max()) > 1.0
    # vertex 5 (row 1, column 1): neighbours 1, 4, 6, 9 and the diagonals 0 (cell a-c) and 10; 6 and 10 lie
    # across the border, so with across 0.5: x_5 - (x_0 + x_1 + x_4 + x_9 + 0.5 x_6 + 0.5 x_10) / 5
    nb = set(vertex_neighbours(f, 12)[5].tolist())
    assert nb == {0, 1, 4, 6, 9, 10}
    x = torch.arange(12, dtype=torch.float64)[:, None] ** 2
    Lh = uniform_laplacian(f, 12, dtype=torch.float64, normalized=True, regions=lab, across=0.5).to_dense()
    ref = x[5] - (x[0] + x[1] + x[4] + x[9] + 0.5 * x[6] + 0.5 * x[10]) / 5
    torch.testing.assert_close((Lh @ x)[5], ref)
    with pytest.raises(ValueError, match="labels"):
        uniform_laplacian(f, 12, regions=lab[:5])


def test_laplacian_penalty():
    v, f = icosahedron()
    t = build_dense_topology(f, 12, 1)
    L = cotangent_laplacian(t.upsample_np(v), t.faces, dtype=torch.float64)
    N = t.num_dense
    # constant offsets (translation) cost nothing
    D = torch.ones(N, 3, dtype=torch.float64) * torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    assert laplacian_penalty(L, D).item() < 1e-20
    D = torch.randn(2, N, 3, dtype=torch.float64, requires_grad=True)
    p = laplacian_penalty(L, D)
    Ld = L.to_dense()
    ref = ((Ld @ D) ** 2).sum(-1).mean()
    torch.testing.assert_close(p, ref)
    assert p.dim() == 0
    p.backward()
    assert D.grad is not None and torch.isfinite(D.grad).all()
    # float32 offsets with a float64 operator: cast internally
    p32 = laplacian_penalty(L, D.detach().float())
    assert p32.dtype == torch.float32
    assert torch.autograd.gradcheck(lambda x: laplacian_penalty(L, x), (D[:1].detach().requires_grad_(),))
    # a region's rows (the fitter's face Laplacian, [M,N]) as a SparseOperator: the mean is over its M rows
    rows = torch.arange(0, N, 3)
    Lr = L.to_dense()[rows].to_sparse()
    op = SparseOperator(Lr.float())
    x = D.detach().float()
    torch.testing.assert_close(laplacian_penalty(op, x), ((Ld[rows].float() @ x) ** 2).sum(-1).mean())
    torch.testing.assert_close(laplacian_penalty(Lr, D.detach()), ((Ld[rows] @ D.detach()) ** 2).sum((0, 2)).sum()
                               / (len(rows) * 2))
    with pytest.raises(ValueError, match="does not match"):
        laplacian_penalty(Lr, D.detach()[:, :-1])


def test_build_speed_is_vectorised():
    """~20k coarse faces, level 2 (speed sanity only, no timing assertion; ~0.05 s when vectorised)."""
    v, f = grid(101, 101)  # 20000 faces
    t = build_dense_topology(f, len(v), 2)
    assert len(t.faces) == 16 * 20000
    assert t.num_dense == len(v) + n_edges(f) + (2 * n_edges(f) + 3 * len(f))


def test_largest_component_keeps_the_skin_not_the_separate_pieces():
    """Offsets live on the largest piece only: an eyeball-like separate piece and an unused vertex are out."""
    from headrep.model.topology import largest_component

    skin = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1]])      # a fan of 4 triangles on 5 vertices
    eye = np.array([[5, 6, 7]])                                        # a separate piece of 3 vertices
    mask = largest_component(np.concatenate([skin, eye]), 9)           # vertex 8 is in no face
    assert mask.tolist() == [True] * 5 + [False] * 4
