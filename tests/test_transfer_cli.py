"""`transfer train` / `transfer drive`: training from rep folders with checkpoints and resume, cross-reenactment
that keeps the target's identity, the retargeting algebra (a rep driving itself reproduces itself), bad input."""

import json

import numpy as np
import pytest
import torch

from headrep.rep import HeadRep
from headrep.fitting.synthetic import make_synthetic_rep
from transfer.cli import main
from transfer.dataset import load_training_reps, samples_from_rep
from transfer.drive import drive
from transfer.errors import TransferError
from transfer.model import TransferModel
from transfer.train import train

SMALL = ["--epochs", "3", "--hidden", "16", "--code", "8", "--vertices-per-step", "128", "--threads", "1",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def head0(body):
    from headrep.model.head import DenseHead

    return DenseHead(body, levels=0)


@pytest.fixture(scope="module")
def reps(body, head0, tmp_path_factory):
    """Two saved synthetic reps (different identities, cameras, motions) of the same model and topology."""
    root = tmp_path_factory.mktemp("reps")
    a = make_synthetic_rep(body, head0, T=6, seed=1, invalid=[4], landmarks=False)
    b = make_synthetic_rep(body, head0, T=4, seed=2, image_size=(360, 480), landmarks=False)
    a.save(root / "a")
    b.save(root / "b")
    return root / "a", root / "b"


@pytest.fixture(scope="module")
def model_file(reps, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "transfer.safetensors"
    assert main(["train", "--reps", str(reps[0]), str(reps[1]), "-o", str(out)] + SMALL) == 0
    return out


def test_train_writes_a_model_that_records_its_data(model_file, reps):
    m = TransferModel.load(model_file)
    info = m.training_info
    assert [r["path"] for r in info["reps"]] == [str(p.resolve()) for p in reps]
    assert [r["valid_frames"] for r in info["reps"]] == [5, 4]
    a = HeadRep.load(reps[0], build=False)
    assert info["identity"]["topology_hash"] == a.meta["topology"]["hash"]
    assert info["identity"]["model_sha256"] == a.meta["model"]["model_sha256"]
    assert info["settings"]["epochs"] == 3 and info["split"]["train"] + info["split"]["val"] == 9
    assert info["final"]["val_mean_mm"] is not None
    assert not model_file.with_name(model_file.name + ".ckpt").exists()   # the checkpoint goes when done
    assert main(["train", "--reps", str(reps[0]), "-o", str(model_file)] + SMALL) == 2   # exists, no --overwrite


def test_resume_gives_the_uninterrupted_result(body, head0, tmp_path):
    data = [samples_from_rep(make_synthetic_rep(body, head0, T=8, seed=s, landmarks=False)) for s in (3, 4)]
    kw = dict(epochs=4, batch=4, seed=5, hidden=16, enc_hidden=16, code=8, vertices_per_step=64, threads=1,
              progress=False)
    full, hfull = train(data, **kw)
    ck = tmp_path / "m.ckpt"

    def stop_after_two(epoch, hist):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(data, checkpoint=ck, on_epoch=stop_after_two, **kw)
    assert torch.load(ck, weights_only=False)["epoch"] == 2
    resumed, hres = train(data, checkpoint=ck, resume=True, **kw)
    assert hres["train_mse_mm2"] == hfull["train_mse_mm2"]
    for (k, x), (_, y) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(x, y), k
    with pytest.raises(TransferError, match="other settings"):
        train(data, checkpoint=ck, resume=True, **{**kw, "seed": 6})


def responsive_model(ne: int = 16) -> TransferModel:
    """A random model whose offsets respond to the expression (~1 mm), as a trained one does (the synthetic reps'
    D_dyn does not depend on ψ, so a model trained on them predicts almost nothing)."""
    from transfer.model import ExpressionEncoder, OffsetMLP

    torch.manual_seed(0)
    m = TransferModel(ExpressionEncoder(ne, code=8, hidden=16), OffsetMLP(code=8, hidden=16), centre=(0, 0.5, 0))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m.eval()


def test_rest_anchor_gives_zero_detail_at_rest():
    m = responsive_model()
    nf = 30
    out = m(torch.rand(2, nf, 3) * 0.1, torch.nn.functional.normalize(torch.randn(2, nf, 3), dim=-1),
            torch.stack([torch.zeros(16), torch.randn(16)]), torch.tensor([[0.0, 0, 0], [0.2, 0, 0]]))
    assert torch.equal(out[0], torch.zeros(nf, 3)) and out[1].abs().max() > 1e-6
    # near rest the offsets go continuously to zero (the anchor is G(x, E(0, 0)), not only the snap at 0)
    near = m(torch.rand(1, nf, 3) * 0.1, torch.nn.functional.normalize(torch.randn(1, nf, 3), dim=-1),
             torch.full((1, 16), 1e-6), torch.zeros(1, 3))
    assert near.abs().max() < 1e-6   # float32 rounding of the difference is ~1e-7 m


def test_self_drive_reproduces_the_rep(reps):
    a = HeadRep.load(reps[0])
    d = drive(a, a, mode="direct")
    assert torch.allclose(d.tensors["pose"], a.tensors["pose"], atol=1e-6)
    assert torch.allclose(d.tensors["transl"], a.tensors["transl"], atol=1e-6)
    assert torch.allclose(d.vertices(), a.vertices(), atol=1e-6)
    assert np.array_equal(d.valid, a.valid) and np.array_equal(d.frames, a.frames)


def test_cross_drive_keeps_the_target_identity(reps):
    a, b = HeadRep.load(reps[0]), HeadRep.load(reps[1])
    # make frame 2 of A a rest frame: no expression, jaw/eyes closed, the head exactly as in A's reference frame
    ref = int(np.nonzero(a.valid)[0][0])
    t = a.tensors
    t["expression"][2] = 0
    t["pose"][2, 22:25] = 0
    t["pose"][2, [0, 12, 15]] = t["pose"][ref, [0, 12, 15]]
    t["transl"][2] = t["transl"][ref]
    d = drive(a, b, mode="mlp", model=responsive_model(a.tensors["expression"].shape[1]))
    assert d.num_frames == a.num_frames and d.resolution == b.resolution and d.focal == b.focal
    assert torch.equal(d.neutral_vertices(), b.neutral_vertices())      # B's β and D_static, bit for bit
    # B's own model with the driven parameters and no D_dyn: identical off the face, on every frame (to float32
    # rounding of posed coordinates ~0.9 m away: 1e-7 m)
    dt = d.tensors
    with torch.no_grad():
        plain = b.head(b.tensors["betas"][None], dt["expression"], dt["pose"], transl=dt["transl"],
                       static_offsets=b.tensors["static_offsets"]).vertices
    dv = d.vertices(space="model")
    off_face = torch.ones(dv.shape[1], dtype=torch.bool)
    off_face[torch.as_tensor(d.face_vertices)] = False
    assert (dv[:, off_face] - plain[:, off_face]).abs().max() < 1e-6
    assert (dv[:, ~off_face] - plain[:, ~off_face]).abs().max() > 1e-6   # G's detail is there, on the face
    # at rest the face is B's neutral face, in B's reference pose and place
    rb = int(np.nonzero(b.valid)[0][0])
    pose = b.tensors["pose"][rb].clone()
    pose[22:25] = 0
    with torch.no_grad():
        rest = b.head(b.tensors["betas"][None], torch.zeros(1, dt["expression"].shape[1], dtype=pose.dtype),
                      pose[None], transl=b.tensors["transl"][rb:rb + 1],
                      static_offsets=b.tensors["static_offsets"]).vertices[0]
    assert (dv[2] - rest).abs().max() < 1e-6
    # the crop follows the head: B's reference box at the rest frame
    assert np.allclose(d.boxes[2], b.boxes[rb], atol=1e-6)
    # mode none vs mlp: same everywhere but the face
    n = drive(a, b, mode="none")
    nv = n.vertices(space="model")
    assert (nv[:, off_face] - dv[:, off_face]).abs().max() < 1e-6
    assert torch.equal(n.tensors["dynamic_offsets"], torch.zeros_like(n.tensors["dynamic_offsets"]))


def test_the_driven_hair_hangs_as_the_targets_did_at_its_reference_frame(body):
    """A target whose hair swings gives the driven rep its reference frame's swing on every frame (its hair
    moved with its own video, not the source's); a target without a swing gives none."""
    from headrep.model.head import DenseHead

    hanging = DenseHead(body, levels=0, hair_hangs=True)
    a = make_synthetic_rep(body, hanging, T=5, seed=1, landmarks=False)
    b = make_synthetic_rep(body, hanging, T=4, seed=2, invalid=[0], landmarks=False)
    assert "hair_swing" not in drive(a, b, mode="none").tensors
    t = dict(b.tensors)
    t["hair_swing"] = torch.arange(12, dtype=t["pose"].dtype).reshape(4, 3) / 20
    b = HeadRep.create(body, hanging, t, b.source, b.resolution, {})
    d = drive(a, b, mode="none", tgt_ref=2)
    assert d.tensors["hair_swing"].shape == (5, 3)
    assert torch.equal(d.tensors["hair_swing"], t["hair_swing"][2].expand(5, 3))


def test_drive_cli_and_render(reps, model_file, tmp_path):
    from headrep.commands.main import main as headrep_main

    out = tmp_path / "driven"
    assert main(["drive", "--src", str(reps[0]), "--tgt", str(reps[1]), "-o", str(out),
                 "--model", str(model_file)]) == 0
    d = HeadRep.load(out)
    meta = json.loads((out / "rep.json").read_text())
    assert meta["source"]["kind"] == "driven" and meta["fit"]["drive"]["mode"] == "mlp"
    assert d.num_frames == 6 and list(d.valid) == [1, 1, 1, 1, 0, 1]
    assert headrep_main(["render", str(out), "--resolution", "96"]) == 0
    assert (out / "renders" / "normal.mp4").is_file() and (out / "renders" / "depth.npz").is_file()
    info = json.loads((out / "renders" / "render.json").read_text())
    assert info["source_used"] is False and any("driven rep" in n for n in info["notes"])
    # direct needs no model; an existing OUT is refused
    assert main(["drive", "--src", str(reps[0]), "--tgt", str(reps[1]), "-o", str(tmp_path / "direct"),
                 "--mode", "direct"]) == 0
    assert main(["drive", "--src", str(reps[0]), "--tgt", str(reps[1]), "-o", str(out), "--mode", "none"]) == 2


def test_bad_input(reps, body, tmp_path, capsys):
    from headrep.model.head import DenseHead

    a, b = (str(p) for p in reps)
    # an empty rep list
    with pytest.raises(SystemExit) as e:
        main(["train", "--reps", "-o", str(tmp_path / "m.safetensors")])
    assert e.value.code == 2
    with pytest.raises(TransferError, match="no reps given"):
        load_training_reps([])
    # a rep with no valid frames
    dead = make_synthetic_rep(body, DenseHead(body, levels=0), T=3, seed=7, invalid=[0, 1, 2], landmarks=False)
    dead.save(tmp_path / "dead")
    capsys.readouterr()
    assert main(["train", "--reps", a, str(tmp_path / "dead"), "-o", str(tmp_path / "m.safetensors")] + SMALL) == 2
    assert "no valid frames" in capsys.readouterr().err
    assert main(["drive", "--src", str(tmp_path / "dead"), "--tgt", b, "-o", str(tmp_path / "o1"),
                 "--mode", "none"]) == 2
    assert "no valid frames" in capsys.readouterr().err
    # mismatched topologies (another subdivision level)
    fine = make_synthetic_rep(body, DenseHead(body, levels=1), T=2, seed=8, landmarks=False)
    fine.save(tmp_path / "fine")
    assert main(["drive", "--src", a, "--tgt", str(tmp_path / "fine"), "-o", str(tmp_path / "o2"),
                 "--mode", "direct"]) == 2
    err = capsys.readouterr().err
    assert "another dense topology" in err and "--subdiv" in err
    assert main(["train", "--reps", a, str(tmp_path / "fine"), "-o", str(tmp_path / "m.safetensors")] + SMALL) == 2
    # corrupt / foreign model files, and mlp without a model
    for name, data in (("garbage.safetensors", b"\x00\x01not a safetensors file"),
                       ("empty.safetensors", b"")):
        (tmp_path / name).write_bytes(data)
        assert main(["drive", "--src", a, "--tgt", b, "-o", str(tmp_path / "o3"), "--model",
                     str(tmp_path / name)]) == 2
        assert "cannot read it" in capsys.readouterr().err
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    assert main(["drive", "--src", a, "--tgt", b, "-o", str(tmp_path / "o3"), "--model",
                 str(tmp_path / "foreign.safetensors")]) == 2
    assert "not a headrep-transfer-model" in capsys.readouterr().err
    assert main(["drive", "--src", a, "--tgt", b, "-o", str(tmp_path / "o3")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3", "m.safetensors"))
    # --resume with nothing to resume
    assert main(["train", "--reps", a, "-o", str(tmp_path / "m2.safetensors"), "--resume"] + SMALL) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_train_defaults_come_from_train_config(tmp_path, capsys, monkeypatch):
    """One source for transfer's training defaults: `train()`, `transfer train --help` and the options all read
    TrainConfig; --config sets fields; options given on the command line win."""
    import json
    from dataclasses import fields

    from transfer.cli import build_parser, train_config_from_args
    from transfer.errors import TransferError
    from transfer.train import TrainConfig

    def help_text():
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "--help"])
        return " ".join(capsys.readouterr().out.split())

    assert f"(default {TrainConfig().epochs}:" in help_text()
    monkeypatch.setattr({f.name: f for f in fields(TrainConfig)}["epochs"], "default", 77)
    assert "(default 77:" in help_text()
    monkeypatch.undo()
    args = build_parser().parse_args(["train", "--reps", "a", "-o", "m.safetensors"])
    assert train_config_from_args(args) == TrainConfig()
    cfg = tmp_path / "t.json"
    cfg.write_text(json.dumps({"epochs": 3, "hidden": 16}))
    args = build_parser().parse_args(["train", "--reps", "a", "-o", "m", "--config", str(cfg), "--hidden", "24"])
    got = train_config_from_args(args)
    assert (got.epochs, got.hidden, got.lr) == (3, 24, TrainConfig().lr)
    cfg.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(TransferError, match="unknown TrainConfig key"):
        train_config_from_args(args)
