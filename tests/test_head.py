"""Dense head: U maps the coarse mesh onto itself, dense weights are a partition of unity, offsets live in
the canonical space and move with the head."""

import numpy as np
import pytest
import torch

from headrep.model.head import DenseHead


@pytest.fixture(scope="module", params=[0, 1, 2])
def head(request, body):
    return DenseHead(body, levels=request.param)


def _params(body):
    p = body.zero_params(2)
    p["expression"][:, :4] = torch.tensor([1.0, 0.5, -0.5, 1.0])
    p["pose"][:, 22, 0] = 0.2
    p["pose"][1, 12] = torch.tensor([0.1, 0.3, 0.0])
    p["pose"][:, 0] = torch.tensor([0.0, 0.2, 0.1])
    p["transl"][:] = torch.tensor([0.02, -0.5, 1.2])
    return p


def test_dense_agrees_with_coarse_at_coarse_vertices(head, body):
    p = _params(body)
    out = head(p["betas"], p["expression"], p["pose"], p["transl"])
    n = len(head.subset)
    assert head.num_vertices >= n
    full = body(p["betas"], p["expression"], p["pose"], p["transl"])  # the whole coarse body, smplx's path
    assert torch.allclose(out.vertices[:, :n], full.vertices[:, head.subset_t], atol=1e-6)
    assert torch.allclose(out.body.vertices, full.vertices[:, head.subset_t], atol=1e-6)
    assert torch.allclose(head.weights.sum(1), torch.ones(head.num_vertices), atol=1e-5)


def test_counts_follow_subdivision(head):
    F0 = len(DenseHead(head.body, 0).faces)
    assert len(head.faces) == F0 * 4 ** head.levels
    assert head.face_mask.sum() > 0 and (~head.face_mask).sum() > 0


def test_offsets_are_canonical_and_rotate_with_the_head(body):
    head = DenseHead(body, levels=1)
    p = body.zero_params(1)
    angle = 0.4
    p["pose"][0, 0] = torch.tensor([0.0, angle, 0.0])  # global yaw: every vertex rotates rigidly
    d = torch.zeros(head.num_vertices, 3)
    d[:, 2] = 0.01
    base = head(p["betas"], p["expression"], p["pose"])
    moved = head(p["betas"], p["expression"], p["pose"], static_offsets=d)
    delta = (moved.vertices - base.vertices)[0]
    expect = torch.tensor([0.01 * np.sin(angle), 0.0, 0.01 * np.cos(angle)], dtype=delta.dtype)
    assert torch.allclose(delta, expect.expand_as(delta), atol=1e-6)
    # dynamic offsets add the same way per frame
    dyn = head(p["betas"], p["expression"], p["pose"], dynamic_offsets=d[None])
    assert torch.allclose(dyn.vertices, moved.vertices, atol=1e-7)


def test_base_is_the_head_posed_without_its_dynamic_offsets(body):
    head = DenseHead(body, levels=1)
    p = _params(body)
    g = torch.Generator().manual_seed(0)
    static = 0.003 * torch.randn(head.num_vertices, 3, generator=g)
    dyn = 0.002 * torch.randn(2, head.num_vertices, 3, generator=g)
    out = head(p["betas"], p["expression"], p["pose"], p["transl"], static, dyn, base=True)
    without = head(p["betas"], p["expression"], p["pose"], p["transl"], static)
    assert torch.allclose(out.base, without.vertices, atol=1e-7)
    assert (out.vertices - out.base).abs().max() > 1e-3           # ...and the full head still has them
    assert head(p["betas"], p["expression"], p["pose"], p["transl"], static, dyn).base is None


def test_hanging_hair_keeps_its_direction_while_the_head_rolls_and_turns_with_its_yaw(body):
    """hair_hangs: a global roll (about the viewing axis) turns the head and with it the offsets of vertices
    that do not hang (h = 0: the face, the crown), while an offset that hangs fully (h = 1) keeps its rest
    direction; a blend h in (0,1) is h·d + (1−h)·R·d (by hand). A global yaw turns every offset, hanging or
    not, as without hanging (the test above); with the flag off nothing hangs."""
    hanging = DenseHead(body, levels=1, hair_hangs=True)
    h = hanging.hang_weights
    face = torch.as_tensor(hanging.face_mask)
    assert float(h[face].abs().max()) == 0.0 and float(h.max()) == 1.0
    y = hanging(*[body.zero_params(1)[k] for k in ("betas", "expression", "pose")]).vertices[0, :, 1]
    assert float(y[h == 1].max()) < float(y[face].mean()) < float(y[h == 0].max())  # it hangs below the face
    d = torch.zeros(hanging.num_vertices, 3)
    d[:, 0] = 0.01
    for angle, axis, turns in ((0.3, 2, False), (0.4, 1, True)):   # roll, then yaw
        p = body.zero_params(1)
        p["pose"][0, 0, axis] = angle
        bare = hanging(p["betas"], p["expression"], p["pose"]).vertices[0]
        delta = (hanging(p["betas"], p["expression"], p["pose"], static_offsets=d).vertices[0] - bare).double()
        c, s = np.cos(angle), np.sin(angle)
        rotated = torch.tensor([0.01 * c, 0.01 * s, 0.0] if axis == 2 else [0.01 * c, 0.0, -0.01 * s],
                               dtype=torch.float64)
        hh = h.double()[:, None]
        want = rotated if turns else hh * torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64) + (1 - hh) * rotated
        assert torch.allclose(delta, want.expand_as(delta), atol=1e-6)
        flat = DenseHead(body, levels=1)
        moved = flat(p["betas"], p["expression"], p["pose"], static_offsets=d).vertices[0] - bare
        assert torch.allclose(moved.double(), rotated.expand_as(moved), atol=1e-6)


def test_rejects_bad_levels(body):
    with pytest.raises(ValueError):
        DenseHead(body, levels=3)


def test_hair_swing_turns_the_hanging_offsets_in_the_heads_yaw_frame(body):
    """hair_swing S: a fully hanging offset d becomes R_yaw·S·d, a blended one h·R_yaw·S·d + (1−h)·R·d, and an
    offset that does not hang (h = 0) ignores the swing. By hand: S a turn about the model's z (viewing) axis
    by 0.2 rad after a yaw of 0.4 rad (R = R_yaw for a global yaw), d along x. A zero swing is no swing; a head
    whose hair does not hang refuses one."""
    hanging = DenseHead(body, levels=1, hair_hangs=True)
    hh = hanging.hang_weights.double()[:, None]
    p = body.zero_params(1)
    yaw, roll = 0.4, 0.2
    p["pose"][0, 0, 1] = yaw
    d = torch.zeros(hanging.num_vertices, 3)
    d[:, 0] = 0.01
    swing = torch.tensor([[0.0, 0.0, roll]])
    bare = hanging(p["betas"], p["expression"], p["pose"]).vertices[0]
    delta = (hanging(p["betas"], p["expression"], p["pose"], static_offsets=d, hair_swing=swing).vertices[0]
             - bare).double()
    cy, sy, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    R_yaw = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    S = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], dtype=torch.float64)
    dd = torch.tensor([0.01, 0.0, 0.0], dtype=torch.float64)
    want = hh * (R_yaw @ S @ dd) + (1 - hh) * (R_yaw @ dd)
    assert torch.allclose(delta, want, atol=1e-6)
    assert float((delta - (R_yaw @ dd)).norm(dim=-1).max()) > 1e-3          # the swing moved something
    still = hanging(p["betas"], p["expression"], p["pose"], static_offsets=d).vertices
    zero = hanging(p["betas"], p["expression"], p["pose"], static_offsets=d, hair_swing=torch.zeros(1, 3)).vertices
    assert torch.allclose(still, zero, atol=1e-7)
    with pytest.raises(ValueError, match="hangs"):
        DenseHead(body, levels=1)(p["betas"], p["expression"], p["pose"], static_offsets=d, hair_swing=swing)
