"""The transfer model (ExpPortrait §3.2): expression encoder + vertex-wise geometry MLP.

The main test trains on 4 synthetic identities whose expression detail follows a KNOWN identity-dependent rule
(`transfer.dataset.expression_detail`: brow-raise furrows and a jaw-open chin bulge fixed in the head frame, so they
land on different vertices of different faces) and checks on 2 held-out identities that the MLP beats copying a
training identity's offsets by vertex index ("direct"), and that an ablation whose G does not see the identity's
neutral geometry (a fixed template instead) is clearly worse.
"""

import numpy as np
import pytest
import torch

from transfer.dataset import samples_from_rep, synthetic_identity, template_anchors
from transfer.model import ExpressionEncoder, OffsetMLP, TransferModel, positional_encoding
from transfer.train import offset_error_mm, predict, split_frames, train


@pytest.fixture(scope="module")
def head0(body):
    from headrep.model.head import DenseHead

    return DenseHead(body, levels=0)


@pytest.fixture(scope="module")
def identities(body, head0):
    anchors = template_anchors(body, head0)
    train_ids = [synthetic_identity(body, head0, s, T=48, anchors=anchors) for s in range(4)]
    test_ids = [synthetic_identity(body, head0, 100 + s, T=24, anchors=anchors) for s in range(2)]
    # "direct": each training identity driven by the held-out identity's expressions, its offsets copied by index
    direct = [[synthetic_identity(body, head0, s, expression=te["expression"], jaw=te["jaw"], anchors=anchors)
               ["target"] for s in range(4)] for te in test_ids]
    return train_ids, test_ids, direct


def test_positional_encoding_values():
    x = torch.tensor([[0.0, 0.5, -0.25]])
    e = positional_encoding(x, 3)
    assert e.shape == (1, 3 + 2 * 3 * 3)
    assert torch.equal(e[0, :3], x[0])
    # block k = 0: sin(π x), cos(π x)
    assert torch.allclose(e[0, 3:6], torch.sin(torch.pi * x[0]), atol=1e-6)
    assert torch.allclose(e[0, 6:9], torch.cos(torch.pi * x[0]), atol=1e-6)
    assert torch.allclose(e[0, 3:6], torch.tensor([0.0, 1.0, -(0.5 ** 0.5)]), atol=1e-6)
    # block k = 2: frequency 4π
    assert torch.allclose(e[0, 15:18], torch.sin(4 * torch.pi * x[0]), atol=1e-5)
    assert torch.allclose(e[0, 18:21], torch.cos(4 * torch.pi * x[0]), atol=1e-5)
    assert positional_encoding(torch.zeros(2, 5, 3), 6).shape == (2, 5, 39)
    assert torch.equal(positional_encoding(x, 0), x)


def test_model_shapes_and_small_init():
    m = TransferModel(ExpressionEncoder(16), OffsetMLP(), centre=(0.0, 0.55, 0.05))
    out = m(torch.rand(2, 50, 3) * 0.1, torch.nn.functional.normalize(torch.randn(2, 50, 3), dim=-1),
            torch.randn(2, 16), 0.1 * torch.rand(2, 3))
    assert out.shape == (2, 50, 3)
    assert out.abs().max() < 1e-3   # an untrained model predicts sub-millimetre offsets


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    for idf in (True, False):
        kw = {} if idf else dict(template_neutral=torch.rand(40, 3), template_normals=torch.rand(40, 3))
        m = TransferModel(ExpressionEncoder(10, code=8, hidden=16), OffsetMLP(code=8, n_freq=4, hidden=16, layers=3),
                          centre=(0.0, 0.5, 0.0), scale=0.12, identity_features=idf, **kw)
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
        path = m.save(tmp_path / f"m{int(idf)}.safetensors")
        m2 = TransferModel.load(path)
        assert m2.config == m.config
        args = (torch.rand(3, 40, 3), torch.rand(3, 40, 3), torch.randn(3, 10), torch.randn(3, 3))
        with torch.no_grad():
            assert torch.equal(m.eval()(*args), m2(*args))


def test_samples_from_rep(body, head0):
    from headrep.fitting.synthetic import make_synthetic_rep

    rep = make_synthetic_rep(body, head0, T=4, seed=1, invalid=[2], landmarks=False)
    s = samples_from_rep(rep)
    nf = int(np.asarray(head0.face_mask).sum())
    assert s["neutral"].shape == (nf, 3) and s["normals"].shape == (nf, 3)
    assert s["expression"].shape == (3, body.num_expression) and s["jaw"].shape == (3, 3)
    assert s["target"].shape == (3, nf, 3)
    fv = torch.as_tensor(rep.face_vertices).long()
    assert torch.allclose(s["neutral"], rep.neutral_vertices()[fv].float())
    assert torch.allclose(s["target"], rep.dynamic_offsets_dense([0, 1, 3])[:, fv].float())
    assert torch.allclose(s["jaw"], rep.tensors["pose"][[0, 1, 3], 22].float())
    assert torch.allclose(s["normals"].norm(dim=-1), torch.ones(nf), atol=1e-4)


def test_training_is_deterministic(identities):
    train_ids = identities[0][:2]
    kw = dict(epochs=2, lr=2e-3, batch=8, seed=3, val_fraction=0.2, progress=False, hidden=32, enc_hidden=32,
              vertices_per_step=128, threads=1)
    m1, h1 = train(train_ids, **kw)
    m2, h2 = train(train_ids, **kw)
    assert h1["train_mse_mm2"] == h2["train_mse_mm2"] and h1["val_mse_mm2"] == h2["val_mse_mm2"]
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    m3, h3 = train(train_ids, **{**kw, "seed": 4})
    assert h3["train_mse_mm2"] != h1["train_mse_mm2"]
    tr, va = split_frames(train_ids, 0.2, 3)
    assert len(va) == 2 * round(0.2 * 48) and not set(tr) & set(va)


def test_identity_adaptive_transfer_beats_direct(identities):
    train_ids, test_ids, direct = identities
    kw = dict(epochs=100, lr=3e-3, batch=8, seed=0, val_fraction=0.1, progress=False, hidden=64, enc_hidden=64,
              vertices_per_step=256, threads=1)
    full, hist = train(train_ids, **kw)
    noid, _ = train(train_ids, identity_features=False, **kw)
    err_full = np.array([offset_error_mm(predict(full, te), te["target"]) for te in test_ids])
    err_noid = np.array([offset_error_mm(predict(noid, te), te["target"]) for te in test_ids])
    err_direct = np.array([[offset_error_mm(src, te["target"]) for src in d] for te, d in zip(test_ids, direct)])
    err_zero = np.array([offset_error_mm(torch.zeros_like(te["target"]), te["target"]) for te in test_ids])
    print(f"\nheld-out identities, mean per-vertex offset error (mm) on the face:"
          f"\n  MLP (identity features)    {err_full.round(4)}  mean {err_full.mean():.4f}"
          f"\n  MLP (no identity features) {err_noid.round(4)}  mean {err_noid.mean():.4f}"
          f"\n  direct (mean over sources) {err_direct.mean(1).round(4)}  mean {err_direct.mean():.4f}"
          f"\n  direct (best source)       {err_direct.min(1).round(4)}"
          f"\n  zero offsets               {err_zero.round(4)}"
          f"\n  train-identity val frames  {hist['val_mean_mm'][-1]:.4f}")
    assert hist["val_mean_mm"][-1] < 0.5 * hist["val_mean_mm"][0]
    # clearly better than copying offsets by vertex index, per held-out identity and on average
    assert err_full.mean() < 0.7 * err_direct.mean()
    assert np.all(err_full < 0.7 * err_direct.mean(1))
    assert np.all(err_full < err_zero)
    # G has to use the identity's neutral geometry: the template-fed ablation is clearly worse
    assert err_full.mean() < 0.6 * err_noid.mean()
