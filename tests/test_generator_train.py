"""Training and sampling of the generator (generator.train / generator.pipeline / generator.cli).

Numbers are checked against independent references: the flow-matching interpolation and target written out by
hand and against diffusers' scheduler, sampling with an exact "oracle" velocity that must land on the data with
both of Wan's schedulers, one Euler step of classifier-free guidance recomputed from direct model calls, the face
weight on the latent grid by hand, resume from a checkpoint, and (slow) an overfit on one synthetic clip: the loss falls
by a clear factor and samples of the trained model beat an untrained one in PSNR and follow the condition.
"""

import copy
import json
import sys
import types

import pytest
import torch

from generator.config import named_config
from generator.errors import GeneratorInputError
from generator.model import HeadGenerator
from generator.pipeline import denoise_loop, make_scheduler, psnr, sample
from generator.synthetic import SyntheticClips
from generator.train import (TrainConfig, evaluate_loss, flow_loss, flow_noise, flow_target,
                             latent_mask, shift_sigmas, train)


pytestmark = pytest.mark.usefixtures("two_threads")


def _tiny(seed=0, condition="normal_depth"):
    torch.manual_seed(seed)
    return HeadGenerator(named_config("tiny"), condition=condition)


# ----------------------------------------------------------------------------------------------------------------
# the flow-matching objective and the schedulers


def test_flow_interpolation_and_target_by_hand():
    from diffusers import FlowMatchEulerDiscreteScheduler

    torch.manual_seed(0)
    x0, eps = torch.randn(3, 16, 2, 4, 4), torch.randn(3, 16, 2, 4, 4)
    sigma = torch.tensor([0.0, 0.25, 1.0])
    xt = flow_noise(x0, eps, sigma)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[2], eps[2])
    torch.testing.assert_close(xt[1], 0.75 * x0[1] + 0.25 * eps[1])
    assert torch.equal(flow_target(x0, eps), eps - x0)
    # d x_σ / dσ is the target: a finite difference along σ
    d = (flow_noise(x0, eps, sigma + 1e-3) - flow_noise(x0, eps, sigma)) / 1e-3
    torch.testing.assert_close(d, flow_target(x0, eps), rtol=0, atol=1e-3)
    # diffusers' flow-matching scheduler noises the same way at its own timesteps (σ = t / 1000)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(7)
    t = sched.timesteps[2:3]
    s = float(sched.sigmas[2])
    assert abs(float(t) / 1000 - s) < 1e-5
    torch.testing.assert_close(sched.scale_noise(x0[:1], t, eps[:1]), flow_noise(x0[:1], eps[:1], torch.tensor([s])))


def test_training_noise_levels_use_the_samplers_shift():
    from diffusers import FlowMatchEulerDiscreteScheduler

    u = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_sigmas(u, 1.0), u)
    torch.testing.assert_close(shift_sigmas(torch.tensor([0.5]), 3.0), torch.tensor([0.75]))  # 1.5 / 2
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    u = [0.95, 0.7, 0.4, 0.1]
    sched.set_timesteps(sigmas=u)  # the scheduler shifts the noise levels it is given
    torch.testing.assert_close(shift_sigmas(torch.tensor(u), 3.0), sched.sigmas[:-1])


@pytest.mark.parametrize("kind", ["euler", "unipc"])
def test_sampling_with_the_exact_velocity_lands_on_the_data(kind):
    """For a single data point x0 the exact flow velocity at (x, σ) is (x - x0) / σ; integrating it from noise
    with the scheduler must reach x0 — this pins the timestep convention (t = σ·1000) for both schedulers."""
    torch.manual_seed(0)
    x0 = torch.randn(1, 16, 3, 4, 4)
    sched = make_scheduler(named_config("tiny")["scheduler"], kind, shift=3.0)
    sched.set_timesteps(12)
    seen = []

    def oracle(x, t):
        seen.append(float(t))
        sigma = float(sched.sigmas[len(seen) - 1])
        return (x - x0) / sigma

    out = denoise_loop(oracle, torch.randn(1, 16, 3, 4, 4), sched, show_progress=False)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)
    assert len(seen) == 12 and seen[0] > seen[-1]
    assert type(sched).__name__ == {"euler": "FlowMatchEulerDiscreteScheduler",
                                    "unipc": "UniPCMultistepScheduler"}[kind]


def test_latent_face_mask_follows_the_vae_grouping():
    mask = torch.zeros(1, 1, 9, 16, 16)
    mask[:, :, 5, :8, :8] = 1  # a face only in frame 5, top-left quarter
    m = latent_mask(mask, (3, 2, 2))
    expect = torch.zeros(1, 1, 3, 2, 2)
    expect[0, 0, 2, 0, 0] = 1.0  # frames 5-8 form latent 2; the 8×8 block is fully covered
    assert torch.equal(m, expect)
    mask = torch.zeros(1, 1, 9, 16, 16)
    mask[:, :, 0, :4, :8] = 1  # frame 0 alone is latent 0; half of the block covered
    assert torch.equal(latent_mask(mask, (3, 2, 2))[0, 0, :, 0, 0], torch.tensor([0.5, 0.0, 0.0]))


def test_face_weighted_loss_by_hand():
    class Zero(torch.nn.Module):  # predicts v = 0: the loss is then the mean of the weighted squared target
        model = None

        def forward(self, noisy, *args):
            return torch.zeros_like(noisy)

    torch.manual_seed(0)
    x0, eps = torch.randn(1, 16, 3, 2, 2), torch.randn(1, 16, 3, 2, 2)
    mask = torch.zeros(1, 1, 9, 16, 16)
    mask[:, :, 1:5] = 1  # latent 1 fully inside the face
    batch = {"cond": None, "ref": None, "face_mask": mask}
    one = torch.ones(1)
    plain = flow_loss(Zero(), batch, torch.tensor([0.3]), eps, one, 0.0, (x0, None))
    weighted = flow_loss(Zero(), batch, torch.tensor([0.3]), eps, one, 4.0, (x0, None))
    sq = (eps - x0) ** 2
    torch.testing.assert_close(plain, sq.mean())
    w = torch.ones_like(sq)
    w[:, :, 1] = 5.0
    torch.testing.assert_close(weighted, (sq * w).mean())


def test_train_config_file(tmp_path):
    f = tmp_path / "train.json"
    f.write_text(json.dumps({"steps": 7, "lr": 3e-4, "face_weight": 2.0}))
    cfg = TrainConfig.from_file(f, steps=9, lr=None)
    assert (cfg.steps, cfg.lr, cfg.face_weight, cfg.batch_size) == (9, 3e-4, 2.0, 1)
    f.write_text(json.dumps({"stepz": 1}))
    with pytest.raises(GeneratorInputError, match="stepz"):
        TrainConfig.from_file(f)
    f.write_text("{not json")
    with pytest.raises(GeneratorInputError, match="not valid JSON"):
        TrainConfig.from_file(f)
    with pytest.raises(GeneratorInputError, match="trainable"):
        TrainConfig.from_dict({"trainable": "some"})


# ----------------------------------------------------------------------------------------------------------------
# sampling


def test_sampling_bad_input_is_a_clear_error():
    m = _tiny()
    ref, cond = torch.zeros(3, 32, 32), torch.zeros(4, 9, 32, 32)
    with pytest.raises(GeneratorInputError, match="differs"):
        sample(m, torch.zeros(3, 48, 48), cond, steps=1)
    with pytest.raises(GeneratorInputError, match="channels"):
        sample(m, ref, torch.zeros(3, 9, 32, 32), steps=1)
    with pytest.raises(GeneratorInputError, match="4k\\+1"):
        sample(m, ref, torch.zeros(4, 8, 32, 32), steps=1)
    with pytest.raises(GeneratorInputError, match="multiple of 16"):
        sample(m, torch.zeros(3, 40, 40), torch.zeros(4, 9, 40, 40), steps=1)
    with pytest.raises(GeneratorInputError, match="scheduler"):
        sample(m, ref, cond, steps=1, scheduler="ddim")


def test_memory_options_do_not_change_the_result():
    m = _tiny().eval()
    clip = SyntheticClips(2, 5, 32)
    ref, cond = torch.stack([c["ref"] for c in clip.items]), torch.stack([c["cond"] for c in clip.items])
    plain = sample(m, ref, cond, steps=2, seed=1, show_progress=False)
    saving = sample(m, ref, cond, steps=2, seed=1, offload=True, vae_tiling=True, vae_slicing=True,
                    show_progress=False)
    assert m.vae.use_tiling and m.vae.use_slicing
    assert plain.shape == (2, 3, 5, 32, 32)
    torch.testing.assert_close(saving, plain, rtol=0, atol=1e-5)


def test_guidance_is_the_documented_combination():
    m = _tiny().eval()
    torch.manual_seed(3)
    ref, cond = torch.rand(3, 32, 32) * 2 - 1, torch.rand(4, 5, 32, 32) * 2 - 1
    # at initialisation the condition channels are zero: guidance cannot change anything
    a = sample(m, ref, cond, steps=2, guidance=1.0, seed=4, show_progress=False)
    b = sample(m, ref, cond, steps=2, guidance=4.0, seed=4, show_progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with torch.no_grad():
        m.transformer.patch_embedding.weight[:, 16:].normal_(0, 0.2)
    g = 3.0
    _, lat = sample(m, ref, cond, steps=1, guidance=g, seed=4, scheduler="euler", return_latents=True,
                    show_progress=False)
    with torch.no_grad():  # one Euler step from σ = 1 to 0 by hand: x1 - v
        x = torch.randn((1, 16, 2, 4, 4), generator=torch.Generator().manual_seed(4))
        pose = m.encode_condition(cond[None])
        rl, rf = m.encode_reference(ref[None])
        t = torch.tensor([1000.0])
        v_uncond = m(x, t, torch.zeros_like(pose), rl, rf)
        v = v_uncond + g * (m(x, t, pose, rl, rf) - v_uncond)
    torch.testing.assert_close(lat, (x - v)[0], rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# the training loop


def test_training_writes_checkpoints_and_resumes_where_it_stopped(tmp_path):
    data = SyntheticClips(1, num_frames=5, resolution=32)
    kw = dict(lr=1e-3, cond_drop=0.5, checkpoint_every=2, log_every=1, grad_accum=2, vae_steps=3, seed=5,
              face_weight=1.0)
    straight = _tiny(seed=1)
    h = train(straight, data, tmp_path / "a", TrainConfig(steps=4, **kw), device="cpu", show_progress=False)
    out = tmp_path / "a"
    assert h["step"] == 4 and len(h["losses"]) == 4 and len(h["vae_losses"]) == 3
    assert sorted(p.name for p in (out / "state").iterdir()) == ["step-000002", "step-000004"]
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert json.loads((out / "train_config.json").read_text())["grad_accum"] == 2
    saved = HeadGenerator.from_pretrained(out)  # out/model
    assert saved.config["vae_trained"] and saved.config["num_frames"] == 5 and saved.config["resolution"] == 32
    assert saved.vae.config.latents_std != [1.0] * 16  # the VAE stage measured its latent statistics
    for (k, a), (_, b) in zip(straight.state_dict().items(), saved.state_dict().items()):
        assert torch.equal(a, b), k
    # the same run interrupted after 2 steps and resumed from the folder gives the same weights (to float
    # rounding: the reloaded model may take other kernel paths)
    first = _tiny(seed=1)
    train(first, data, tmp_path / "b", TrainConfig(steps=2, **kw), device="cpu", show_progress=False)
    again = HeadGenerator.from_pretrained(tmp_path / "b")
    h2 = train(again, data, tmp_path / "b", TrainConfig(steps=4, **kw), resume=True, device="cpu",
               show_progress=False)
    assert h2["step"] == 4 and h2["vae_losses"] == [] and len(h2["losses"]) == 2
    torch.testing.assert_close(h2["losses"], h["losses"][2:], rtol=1e-5, atol=1e-6)
    for (k, a), (_, b) in zip(straight.state_dict().items(), again.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


def test_adapters_only_training_leaves_the_dit_blocks_alone(tmp_path):
    m = _tiny(seed=2)
    m.config["vae_trained"] = True
    before = copy.deepcopy(m.transformer.blocks.state_dict())
    pe = m.transformer.patch_embedding.weight.detach().clone()
    calls = []

    class Counting(SyntheticClips):
        def __getitem__(self, i):
            calls.append(i)
            return super().__getitem__(i)

    h = train(m, Counting(1, 5, 32), tmp_path / "o", TrainConfig(steps=2, lr=1e-2, trainable="adapters", grad_accum=3),
              device="cpu", show_progress=False)
    assert h["step"] == 2 and len(calls) == 1 + 2 * 3  # the shape probe, then 3 micro-batches per step
    for k, v in m.transformer.blocks.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(m.transformer.patch_embedding.weight, pe)


def test_empty_data_is_a_clear_error(tmp_path):
    with pytest.raises(GeneratorInputError, match="no clips"):
        train(_tiny(), [], tmp_path / "o", TrainConfig(steps=1), device="cpu")


# ----------------------------------------------------------------------------------------------------------------
# the command line


def _fake_data(monkeypatch, frames=5, res=32):
    """Stand in for generator.data (files → tensors is the data module's job, tested on its own)."""
    import generator

    clip = SyntheticClips(1, frames, res)[0]
    fake = types.ModuleType("generator.data")
    fake.ClipDataset = lambda root, num_frames, resolution, condition, seed=0: SyntheticClips(
        1, num_frames, resolution, condition)
    fake.load_reference = lambda path, resolution, require_face=True: SyntheticClips(1, 5, resolution)[0]["ref"]

    def load_condition(path, mode, num_frames, resolution, start=0, **kw):  # a 9-frame sequence
        if num_frames is not None and (num_frames - 1) % 4:
            raise GeneratorInputError(f"num_frames must be 4k+1, got {num_frames}")
        if (num_frames or 9) + start > 9:
            raise GeneratorInputError(f"the condition {path} has 9 frames, fewer than the {num_frames} asked for")
        return SyntheticClips(1, num_frames or 9, resolution, mode)[0]["cond"]

    fake.load_condition = load_condition
    monkeypatch.setitem(sys.modules, "generator.data", fake)
    monkeypatch.setattr(generator, "data", fake, raising=False)
    return clip


def _cli(argv, capsys):
    from generator.cli import main

    rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_help_teaches(capsys):
    from generator.cli import main

    for cmd, words in ((None, ["init", "prepare", "train", "animate", "workflow"]),
                       ("train", ["--base", "--resume", "--grad-accum", "accelerate launch"]),
                       ("animate", ["--cpu-offload", "--vae-tiling", "--guidance", "headrep render"]),
                       ("init", ["tiny", "wan2.1-1.3b"]), ("prepare", ["--video", "--rep"])):
        with pytest.raises(SystemExit) as e:
            main(([cmd] if cmd else []) + ["--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        for w in words:
            assert w in text, (cmd, w)


def test_cli_init_train_animate_round_trip(tmp_path, capsys, monkeypatch):
    from headrep.io import video_info

    _fake_data(monkeypatch)
    rc, out, err = _cli(["init", "--config", "tiny", "-o", tmp_path / "init"], capsys)
    assert rc == 0 and "random weights" in out
    assert json.loads((tmp_path / "init" / "generator.json").read_text())["config"]["name"] == "tiny"
    rc, _, err = _cli(["init", "--config", "tiny", "-o", tmp_path / "init"], capsys)
    assert rc == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    # train from the init folder, 2 steps, with a precomputed null text, then animate with the trained checkpoint
    from safetensors.torch import save_file

    save_file({"prompt_embeds": torch.randn(3, 32)}, str(tmp_path / "empty_prompt.safetensors"))
    rc, out, err = _cli(["train", "--data", tmp_path / "clips", "-o", tmp_path / "run", "--init", tmp_path / "init",
                         "--steps", "2", "--frames", "5", "--resolution", "32", "--vae-steps", "2",
                         "--null-text", tmp_path / "empty_prompt.safetensors", "--device", "cpu"], capsys)
    assert rc == 0, err
    assert "trained to step 2" in out and (tmp_path / "run" / "model" / "generator.json").is_file()
    assert json.loads((tmp_path / "run" / "model" / "generator.json").read_text())["config"]["text_len"] == 3
    rc, _, err = _cli(["train", "--data", tmp_path / "clips", "-o", tmp_path / "run", "--steps", "2"], capsys)
    assert rc == 2 and "--resume" in err
    rc, out, err = _cli(["animate", "--ref", "ref.png", "--cond", "render", "-o", tmp_path / "out.mp4",
                         "--checkpoint", tmp_path / "run", "--steps", "2", "--device", "cpu"], capsys)
    assert rc == 0, err
    info = video_info(tmp_path / "out.mp4")
    assert (info["frames"], info["width"], info["height"]) == (9, 32, 32)  # whole sequence, trained size
    rc, _, err = _cli(["animate", "--ref", "ref.png", "--cond", "render", "-o", tmp_path / "out.mp4",
                       "--checkpoint", tmp_path / "run", "--steps", "2"], capsys)
    assert rc == 2 and "--overwrite" in err


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    _fake_data(monkeypatch)
    HeadGenerator(named_config("tiny")).save_pretrained(tmp_path / "ckpt")
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    cases = [
        (["animate", "--ref", "r.png", "--cond", "c", "-o", tmp_path / "a.mp4", "--checkpoint", pipe], "--base"),
        (["animate", "--ref", "r.png", "--cond", "c", "-o", tmp_path / "a.mp4", "--checkpoint", tmp_path / "ckpt",
          "--frames", "17"], "fewer than"),
        (["animate", "--ref", "r.png", "--cond", "c", "-o", tmp_path / "a.mp4", "--checkpoint", tmp_path / "ckpt",
          "--frames", "8"], "4k+1"),
        (["animate", "--ref", "r.png", "--cond", "c", "-o", tmp_path / "a.gif", "--checkpoint", tmp_path / "ckpt"],
         ".mp4"),
        (["train", "--data", "d", "-o", tmp_path / "t", "--base", pipe], "StableDiffusionPipeline"),
        (["train", "--data", "d", "-o", tmp_path / "t", "--init", pipe], "--base"),
    ]
    monkeypatch.delenv("HEADREP_GENERATOR_CHECKPOINT", raising=False)
    cases.append((["animate", "--ref", "r.png", "--cond", "c", "-o", tmp_path / "a.mp4"], "--checkpoint"))
    for argv, words in cases:
        rc, _, err = _cli(argv, capsys)
        assert rc == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and words in err, (argv, err)
        assert "Traceback" not in err


def test_cli_reference_without_a_face(tmp_path, capsys):
    pytest.importorskip("generator.data")
    import numpy as np

    from headrep.io import write_png

    HeadGenerator(named_config("tiny")).save_pretrained(tmp_path / "ckpt")
    write_png(tmp_path / "wall.png", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    rc, _, err = _cli(["animate", "--ref", tmp_path / "wall.png", "--cond", tmp_path, "-o", tmp_path / "a.mp4",
                       "--checkpoint", tmp_path / "ckpt"], capsys)
    assert rc == 2 and "generator animate: error:" in err and "face" in err


# ----------------------------------------------------------------------------------------------------------------
# overfitting one clip (slow: ~1 min on 2 cores, most of it the VAE stage)


@pytest.mark.slow
def test_overfit_one_clip_from_scratch(tmp_path):
    data = SyntheticClips(1, num_frames=9, resolution=32, seed=0)
    clip = data[0]
    batch = {k: v[None] for k, v in clip.items()}
    model = _tiny(seed=0)
    # VAE stage only (steps=0): a random VAE is first fitted to the clip's frames
    h = train(model, data, tmp_path / "vae", TrainConfig(steps=0, vae_steps=500, seed=0), device="cpu",
              show_progress=False)
    with torch.no_grad():
        z = model.encode_video(batch["video"])
        recon = model.decode_latents(z)[0]
        other = model.decode_latents(torch.randn_like(z))[0]
    vae_psnr, other_psnr = psnr(recon, clip["video"]), psnr(other, clip["video"])
    untrained = copy.deepcopy(model)
    loss0 = evaluate_loss(model, batch)
    h = train(model, data, tmp_path / "dit", TrainConfig(steps=150, lr=3e-3, warmup_steps=10, cond_drop=0.0,
                                                          vae_steps=0, checkpoint_every=1000, seed=0),
              device="cpu", show_progress=False)
    loss1 = evaluate_loss(model, batch)
    first, last = sum(h["losses"][:10]) / 10, sum(h["losses"][-10:]) / 10
    kw = dict(steps=10, seed=1, show_progress=False)
    trained_out = sample(model, clip["ref"], clip["cond"], **kw)
    untrained_out = sample(untrained, clip["ref"], clip["cond"], **kw)
    p_trained, p_untrained = psnr(trained_out, clip["video"]), psnr(untrained_out, clip["video"])
    moved = clip["cond"].flip(-1)  # the head on the other side
    changed = (sample(model, clip["ref"], moved, **kw) - trained_out).abs().mean()
    unchanged = (sample(untrained, clip["ref"], moved, **kw) - untrained_out).abs().mean()
    print(f"\nVAE stage: recon {vae_psnr:.2f} dB, random latent {other_psnr:.2f} dB"
          f"\nflow loss (fixed σ, noise): {loss0:.3f} -> {loss1:.3f} (x{loss0 / loss1:.2f}); running train loss "
          f"{first:.3f} -> {last:.3f}\nsample PSNR: trained {p_trained:.2f} dB, untrained {p_untrained:.2f} dB"
          f"\nmean |Δ output| when the condition moves: trained {changed:.4f}, untrained {unchanged:.2e}")
    assert vae_psnr > other_psnr + 2  # the fitted VAE decodes its latent, not a memorised clip
    assert loss0 / loss1 > 1.8 and first / last > 1.8
    assert p_trained > p_untrained + 3
    assert p_trained > vae_psnr - 4  # close to the best the VAE allows
    assert changed > 0.02 and unchanged < 1e-5


_DDP_SCRIPT = """
import sys, torch
from generator.config import named_config
from generator.model import HeadGenerator
from generator.synthetic import SyntheticClips
from generator.train import TrainConfig, train
torch.set_num_threads(1)
torch.manual_seed(0)
m = HeadGenerator(named_config("tiny"))
h = train(m, SyntheticClips(2, 5, 32), sys.argv[1], TrainConfig(steps=3, vae_steps=2, grad_accum=2,
          checkpoint_every=2, lr=1e-3), device="cpu", show_progress=False)
rank = int(__import__("os").environ["RANK"])
torch.save({"h": h, "sd": m.state_dict()}, f"{sys.argv[1]}/rank{rank}.pt")
"""


@pytest.mark.slow
def test_two_processes_train_one_model(tmp_path):
    """Data-parallel training through accelerate (gloo on the CPU): the VAE stage runs once and is shared, both
    processes end with the same weights, and the main process writes the folder."""
    import subprocess

    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{i}.pt", weights_only=False) for i in (0, 1))
    assert r0["h"]["processes"] == 2 and r0["h"]["main"] and not r1["h"]["main"]
    assert r0["h"]["losses"] == r1["h"]["losses"]  # the logged loss is the mean over processes
    for k, v in r0["sd"].items():
        assert torch.equal(v, r1["sd"][k]), k
    assert sorted(p.name for p in (out / "state").iterdir()) == ["step-000002", "step-000003"]
    assert HeadGenerator.from_pretrained(out).config["vae_trained"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_sampling_on_gpu_matches_float32():
    m = _tiny(seed=0)
    with torch.no_grad():
        m.transformer.patch_embedding.weight[:, 16:].normal_(0, 0.1)
    clip = SyntheticClips(1, 9, 64)[0]
    m32 = copy.deepcopy(m)
    a = sample(m, clip["ref"], clip["cond"], steps=2, device="cuda", show_progress=False)  # bf16 DiT by default
    assert m.transformer.patch_embedding.weight.dtype == torch.bfloat16
    assert m.transformer.scale_shift_table.dtype == torch.float32  # kept in float32 as diffusers does
    b = sample(m32, clip["ref"], clip["cond"], steps=2, device="cuda", dtype=torch.float32, show_progress=False)
    c = sample(copy.deepcopy(m32), clip["ref"], clip["cond"], steps=2, device="cuda", offload=True,
               vae_tiling=True, vae_slicing=True, show_progress=False)
    assert a.shape == (3, 9, 64, 64) and torch.isfinite(a).all()
    assert (a - b).abs().mean() < 0.05
    assert c.device.type == "cpu" and (c - a).abs().mean() < 0.05


def test_animate_fps_follows_the_condition(tmp_path, body):
    from generator.cli import _condition_fps
    from headrep.model.head import DenseHead
    from headrep.fitting.synthetic import make_synthetic_rep

    (tmp_path / "render").mkdir()
    (tmp_path / "render" / "render.json").write_text(json.dumps({"fps": 29.97}))
    assert _condition_fps(tmp_path / "render") == 29.97
    rep = make_synthetic_rep(body, DenseHead(body, levels=0), T=3, fps=30.0, frame_indices=[0, 2, 4],
                             landmarks=False)
    rep.save(tmp_path / "rep")
    assert _condition_fps(tmp_path / "rep") == 15.0          # every other source frame of a 30 fps video
    assert _condition_fps(tmp_path / "nothing") == 16.0      # Wan's rate when nothing is recorded
