"""The procedural stand-in: SMPL-X file layout, a closed head mesh, exact MediaPipe embedding, jaw and
expressions that act where SMPL-X's do, and a contour table whose yaw convention matches smplx."""

import numpy as np
import pytest
import smplx
import torch
import trimesh

from headrep.model import standin
from headrep.model.standin import EXPRESSION_NAMES, MP_TO_IBUG68, SHAPE_NAMES


@pytest.fixture(scope="module")
def arrays(standin_file):
    return dict(np.load(standin_file))


def test_generation_is_deterministic(arrays):
    again = standin.build_standin_arrays()
    for key, value in arrays.items():
        assert np.array_equal(np.asarray(value), np.asarray(again[key])), key


def test_mesh_is_closed_consistently_wound_and_outward(arrays):
    mesh = trimesh.Trimesh(arrays["v_template"], arrays["f"], process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert mesh.euler_number == 2
    assert mesh.volume > 0  # outward normals
    assert mesh.area_faces.min() > 1e-9  # no degenerate triangles
    # a real head: 20-27 cm from chin to crown, 14-17 cm wide at eye level
    v = arrays["v_template"]
    chin_y = v[152, 1]
    assert 0.20 < v[:, 1].max() - chin_y < 0.27
    at_eyes = v[np.abs(v[:, 1] - 0.60) < 0.005]
    assert 0.14 < at_eyes[:, 0].max() - at_eyes[:, 0].min() < 0.17


@pytest.mark.parametrize("contour", [False, True])
def test_loads_through_smplx(standin_file, arrays, contour):
    from smplx.vertex_joint_selector import VertexJointSelector

    m = smplx.SMPLX(str(standin_file), num_betas=10, num_expression_coeffs=10, use_face_contour=contour,
                    use_pca=False, flat_hand_mean=True)
    ids = dict(zip(standin.VERTEX_JOINT_KEYS, arrays["headrep_vertex_joint_ids"].tolist()))
    m.vertex_joint_selector = VertexJointSelector(vertex_ids=ids)
    out = m(expression=torch.ones(1, 10) * 0.5, jaw_pose=torch.tensor([[0.2, 0, 0]]))
    assert out.vertices.shape == (1, len(arrays["v_template"]), 3)
    assert out.joints.shape == (1, 144 if contour else 127, 3)
    assert torch.isfinite(out.vertices).all()


def test_mediapipe_points_are_exact_vertices(arrays):
    face_cm = np.load(standin.asset_path("mediapipe_face", "canonical_face.npz"))["vertices_cm"]
    expect = face_cm * 0.01 + standin.MP_OFFSET
    v = arrays["v_template"]
    f = arrays["f"]
    pts = (v[f[arrays["mp478_faces_idx"]]] * arrays["mp478_bary_coords"][:, :, None]).sum(1)
    assert np.abs(pts[:468] - expect).max() < 1e-6
    # iris centres sit on the closed eyelids, within 4 mm of the eye-contour centre
    for centre, contour in ((468, standin.MP_RIGHT_EYE), (473, standin.MP_LEFT_EYE)):
        assert np.linalg.norm(pts[centre] - v[contour].mean(0)) < 0.004
    # the 51 static iBUG points are the MediaPipe points of the mapping table
    lmk = (v[f[arrays["lmk_faces_idx"]]] * arrays["lmk_bary_coords"][:, :, None]).sum(1)
    assert np.abs(lmk - v[MP_TO_IBUG68[17:]]).max() < 1e-6


def test_skinning_weights_are_smooth_partition_of_unity(arrays):
    w = arrays["weights"]
    assert np.allclose(w.sum(1), 1, atol=1e-5) and w.min() >= 0
    mesh = trimesh.Trimesh(arrays["v_template"], arrays["f"], process=False)
    e = mesh.edges_unique
    length = np.linalg.norm(arrays["v_template"][e[:, 0]] - arrays["v_template"][e[:, 1]], axis=1)
    slope = np.abs(w[e[:, 0]] - w[e[:, 1]]).max(1) / length  # weight change per metre along each edge
    # the mouth slit is the one intended sharp seam (upper lip: head, lower lip: jaw), so the MediaPipe
    # face is left out; everywhere else a weight changes by at most ~half over 1 cm
    off_face = (e >= 468).all(1)
    assert slope[off_face].max() < 50.0


def _body_forward(standin_file, arrays, **kw):
    m = smplx.SMPLX(str(standin_file), num_betas=16, num_expression_coeffs=16, use_pca=False,
                    flat_hand_mean=True)
    from smplx.vertex_joint_selector import VertexJointSelector

    m.vertex_joint_selector = VertexJointSelector(
        vertex_ids=dict(zip(standin.VERTEX_JOINT_KEYS, arrays["headrep_vertex_joint_ids"].tolist())))
    return m(**kw).vertices[0].detach().numpy()


def test_jaw_opens_the_mouth_and_moves_only_the_lower_face(standin_file, arrays):
    rest = _body_forward(standin_file, arrays)
    opened = _body_forward(standin_file, arrays, jaw_pose=torch.tensor([[0.25, 0.0, 0.0]]))
    moved = np.linalg.norm(opened - rest, axis=1)
    mouth_y = 0.5 * (rest[13, 1] + rest[14, 1])
    # everything that moves more than 0.5 mm is below the mouth line (lateral margin: the cheeks near the
    # hinge) and in front of the jaw hinge
    big = moved > 1e-3
    central = np.abs(rest[:, 0]) < 0.03
    assert (rest[big & central, 1] < mouth_y + 0.003).all()  # below the lips in the middle
    assert (rest[big, 1] < mouth_y + 0.04).all()  # below the jaw hinges at the sides
    assert (rest[big, 2] > -0.035).all()  # in front of the nape (the jaw hinge is at z = +0.008)
    # the upper lip, nose and eyes stay; the lower lip and chin drop by centimetres
    assert moved[[13, 0, 4, 159, 386]].max() < 2e-4
    assert moved[14] > 0.008 and moved[152] > 0.015
    assert opened[14, 1] < rest[14, 1] - 0.008  # downward: the mouth opens


def _expr(arrays, name):
    return arrays["shapedirs"][:, :, 300 + EXPRESSION_NAMES.index(name)]


def test_expressions_act_on_the_face_only(arrays):
    v = arrays["v_template"]
    assert len(EXPRESSION_NAMES) >= 10 and len(SHAPE_NAMES) >= 10
    below_neck = v[:, 1] < 0.45
    for k in range(len(EXPRESSION_NAMES)):
        d = np.linalg.norm(arrays["shapedirs"][:, :, 300 + k], axis=1)
        assert d.max() > 0.002, EXPRESSION_NAMES[k]
        assert d[below_neck].max() < 1e-4, EXPRESSION_NAMES[k]
    for k in range(len(SHAPE_NAMES)):
        assert np.linalg.norm(arrays["shapedirs"][:, :, k], axis=1).max() > 0.002, SHAPE_NAMES[k]
    assert np.abs(arrays["shapedirs"][:, :, len(SHAPE_NAMES):300]).max() == 0


def test_expressions_do_what_their_names_say(arrays):
    v = arrays["v_template"]
    smile = _expr(arrays, "smile")
    assert smile[61, 1] > 0.003 and smile[291, 1] > 0.003  # mouth corners up
    assert smile[61, 0] < 0 < smile[291, 0]  # and outward
    blink = _expr(arrays, "blink")
    for up, lo in ((159, 145), (386, 374)):
        gap = v[up, 1] - v[lo, 1]
        closed = (v[up, 1] + blink[up, 1]) - (v[lo, 1] + blink[lo, 1])
        assert closed < 0.3 * gap
    brow = _expr(arrays, "brow_raise")
    assert brow[105, 1] > 0.003 and brow[334, 1] > 0.003
    pucker = _expr(arrays, "pucker")
    assert pucker[0, 2] > 0.003 and pucker[17, 2] > 0.003  # lips forward


@pytest.mark.parametrize("yaw_deg", [-25.0, 25.0])
def test_dynamic_contour_follows_the_silhouette(standin_file, arrays, yaw_deg):
    """With the neck turned, the contour landmarks are occluding-contour points of the posed mesh seen from
    +z (surface normal nearly perpendicular to the view), and the side turned away moves toward the nose."""
    from smplx.vertex_joint_selector import VertexJointSelector

    m = smplx.SMPLX(str(standin_file), num_betas=10, num_expression_coeffs=10, use_face_contour=True,
                    use_pca=False, flat_hand_mean=True)
    m.vertex_joint_selector = VertexJointSelector(
        vertex_ids=dict(zip(standin.VERTEX_JOINT_KEYS, arrays["headrep_vertex_joint_ids"].tolist())))

    def contour(yaw):
        body_pose = torch.zeros(1, 21, 3)
        body_pose[0, 11, 1] = np.deg2rad(yaw)  # joint 12 (neck) is body_pose index 11
        out = m(body_pose=body_pose)
        return out.vertices[0].detach().numpy(), out.joints[0, -17:].detach().numpy()

    v, lmk = contour(yaw_deg)
    normals = trimesh.Trimesh(v, arrays["f"], process=False).vertex_normals
    for k in (1, 2, 3, 4, 12, 13, 14, 15):
        near = np.argsort(np.linalg.norm(v - lmk[k], axis=1))[:3]
        assert np.abs(normals[near, 2]).mean() < 0.45, (k, normals[near, 2])
    # rotating about +y by a positive angle turns the face toward +x: on the rest mesh, the +x side's contour
    # points move forward (toward the nose) and the -x side's move back (toward the ear); smplx picks row
    # 39 + yaw for positive yaw and row -yaw for negative yaw
    tmpl, f = arrays["v_template"], arrays["f"]

    def rest_points(row):
        return (tmpl[f[arrays["dynamic_lmk_faces_idx"][row]]] * arrays["dynamic_lmk_bary_coords"][row][:, :, None]).sum(1)

    row = int(39 + yaw_deg) if yaw_deg > 0 else int(-yaw_deg)
    turned, front = rest_points(row), rest_points(0)
    # the side points (iBUG 1-5 and 11-15); the points by the chin barely move with yaw
    toward = slice(11, 16) if yaw_deg > 0 else slice(1, 6)
    back = slice(1, 6) if yaw_deg > 0 else slice(11, 16)
    assert (turned[toward, 2] > front[toward, 2] + 0.003).all()
    assert (turned[back, 2] <= front[back, 2] + 1e-6).all()
