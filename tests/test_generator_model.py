"""The generator network (generator.model / generator.config): latent-grid shapes through VAE → pose encoder → DiT
→ VAE decode, the zero-init property against the base transformer called directly, causality of the pose encoder,
save/load round trips, loading a diffusers-format Wan2.1 folder, and the real 1.3B config built on the meta device
and checked against a parameter count computed by hand and the real checkpoint's tensor count (825)."""

import copy
import json

import pytest
import torch

from generator.config import (CONDITION_CHANNELS, WAN21_13B_TRANSFORMER, WAN21_MODEL_INDEX, WAN21_SCHEDULER,
                              WAN21_VAE, component_kwargs, latent_frames, named_config)
from generator.errors import GeneratorInputError
from generator.model import ARCHITECTURE, HeadGenerator, PoseEncoder, check_wan_base, resolve_checkpoint


pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return HeadGenerator(named_config("tiny")).eval()


def _base_transformer(seed=0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(**component_kwargs(named_config("tiny")["transformer"])).eval()


def _perturb(module, scale=0.05, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


# ----------------------------------------------------------------------------------------------------------------
# shapes


def test_latent_frames_arithmetic():
    assert [latent_frames(f) for f in (1, 5, 9, 17, 33, 81)] == [1, 2, 3, 5, 9, 21]
    for bad in (0, 2, 8, 10, 16):
        with pytest.raises(GeneratorInputError, match="4k\\+1"):
            latent_frames(bad)


@pytest.mark.parametrize("frames,res", [(9, 64), (17, 64), (9, 96), (17, 96)])
def test_shapes_through_vae_pose_encoder_dit_and_decode(tiny, frames, res):
    torch.manual_seed(frames + res)
    video = torch.rand(1, 3, frames, res, res) * 2 - 1
    cond = torch.rand(1, 4, frames, res, res) * 2 - 1
    ref = torch.rand(1, 3, res, res) * 2 - 1
    T, h = 1 + (frames - 1) // 4, res // 8  # the causal VAE keeps frame 0 and groups the rest in fours; space 8×
    with torch.no_grad():
        z = tiny.encode_video(video)
        pose = tiny.encode_condition(cond)
        ref_latent, ref_feat = tiny.encode_reference(ref)
        v = tiny(z, torch.tensor([500.0]), pose, ref_latent, ref_feat)
        out = tiny.decode_latents(v)
    assert z.shape == (1, 16, T, h, h)
    assert pose.shape == (1, 16, T, h, h)
    assert ref_latent.shape == (1, 16, 1, h, h) and ref_feat.shape == (1, 16, 1, h, h)
    assert v.shape == z.shape and v.dtype == torch.float32
    assert out.shape == (1, 3, frames, res, res)
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("mode", list(CONDITION_CHANNELS))
def test_condition_modes_set_the_pose_encoder_inputs(mode):
    m = HeadGenerator(named_config("tiny"), condition=mode)
    assert m.pose_encoder.stem.in_channels == CONDITION_CHANNELS[mode]
    with torch.no_grad():
        f = m.encode_condition(torch.zeros(1, CONDITION_CHANNELS[mode], 5, 32, 32))
    assert f.shape == (1, 16, 2, 4, 4)


def test_condition_channels_agree_with_data_module():
    import generator.data as data
    for mode, c in CONDITION_CHANNELS.items():
        assert data.condition_channels(mode) == c
    assert tuple(data.CONDITIONS) == tuple(CONDITION_CHANNELS)


def test_pose_encoder_is_causal_and_groups_frames_like_the_vae():
    torch.manual_seed(0)
    enc = PoseEncoder(4, [8, 16, 32], 16).eval()
    cond = torch.randn(1, 4, 17, 32, 32)
    with torch.no_grad():
        base = enc(cond)
        for frame in (0, 1, 4, 5, 8, 16):
            bumped = cond.clone()
            bumped[:, :, frame] += 1.0
            diff = (enc(bumped) - base).abs().amax(dim=(0, 1, 3, 4))
            first = 0 if frame == 0 else 1 + (frame - 1) // 4  # the latent whose group holds this frame
            assert torch.all(diff[:first] == 0), (frame, diff)  # nothing earlier sees a later frame
            assert diff[first] > 0, (frame, diff)


def test_bad_sizes_raise(tiny):
    with pytest.raises(GeneratorInputError, match="4k\\+1"):
        tiny.encode_condition(torch.zeros(1, 4, 8, 32, 32))
    with pytest.raises(GeneratorInputError, match="multiple of 8"):
        tiny.encode_condition(torch.zeros(1, 4, 9, 36, 36))
    with pytest.raises(GeneratorInputError, match="latent grid"):
        tiny(torch.zeros(1, 16, 3, 4, 4), torch.tensor([1.0]), torch.zeros(1, 16, 2, 4, 4))


# ----------------------------------------------------------------------------------------------------------------
# zero-init: a fresh condition branch leaves the base unchanged


def test_patch_embedding_expansion_copies_old_and_zeroes_new_channels():
    base = _base_transformer()
    m = HeadGenerator(named_config("tiny"), transformer=copy.deepcopy(base))
    w, w0 = m.transformer.patch_embedding.weight, base.patch_embedding.weight
    assert w.shape == (32, 16 + 16, 1, 2, 2) and w0.shape == (32, 16, 1, 2, 2)
    assert torch.equal(w[:, :16], w0) and torch.count_nonzero(w[:, 16:]) == 0
    assert torch.equal(m.transformer.patch_embedding.bias, base.patch_embedding.bias)
    assert m.transformer.config.in_channels == 32 and m.transformer.config.out_channels == 16


def test_zero_init_leaves_the_base_output_unchanged():
    base = _base_transformer(seed=3)
    _perturb(base, 0.02)  # make every part of the base matter
    m = HeadGenerator(named_config("tiny"), transformer=copy.deepcopy(base)).eval()
    _perturb(m.pose_encoder, 0.5)  # a non-trivial condition branch
    _perturb(m.ref_encoder, 0.5)
    torch.manual_seed(1)
    x = torch.randn(2, 16, 3, 8, 8)
    t = torch.tensor([700.0, 250.0])
    cond = torch.rand(2, 4, 9, 64, 64) * 2 - 1
    text = m.null_text.expand(2, -1, -1)
    with torch.no_grad():
        pose = m.encode_condition(cond)
        assert pose.abs().mean() > 1e-3
        ours = m(x, t, pose)
        theirs = base(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)[0]
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        # with the reference frame: the base sees [ref latent, x] in time, timestep 0 on the reference tokens
        ref_latent, ref_feat = torch.randn(2, 16, 1, 8, 8), m.ref_encoder(torch.rand(2, 3, 64, 64))[:, :, None]
        ours = m(x, t, pose, ref_latent, ref_feat)
        ts = torch.cat([torch.zeros(2, 16), t[:, None].expand(2, 3 * 16)], dim=1)
        theirs = base(hidden_states=torch.cat([ref_latent, x], 2), timestep=ts, encoder_hidden_states=text,
                      return_dict=False)[0][:, :, 1:]
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
        # any other condition gives the same output while the new channels are zero ...
        assert torch.equal(m(x, t, pose, ref_latent, ref_feat), m(x, t, torch.zeros_like(pose), ref_latent, ref_feat))
    # ... and a trained (here: perturbed) condition branch makes the output depend on the condition
    with torch.no_grad():
        m.transformer.patch_embedding.weight[:, 16:].normal_(0, 0.1)
        changed = (m(x, t, pose) - m(x, t, torch.zeros_like(pose))).abs().mean()
    assert changed > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# saving and loading


def test_save_pretrained_round_trip(tmp_path):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    m = HeadGenerator(named_config("tiny"), condition="landmarks").eval()
    _perturb(m, 0.02)
    m.vae.register_to_config(latents_mean=[0.1] * 16, latents_std=[2.0] * 16)
    out = m.save_pretrained(tmp_path / "gen")
    meta = json.loads((out / "generator.json").read_text())
    assert meta["architecture"] == ARCHITECTURE and meta["condition"] == "landmarks"
    assert meta["config"]["transformer"]["in_channels"] == 16  # the base's; the saved transformer has 32
    assert sorted(p.name for p in out.iterdir()) == ["adapters.safetensors", "generator.json", "scheduler",
                                                     "transformer", "vae"]
    alone = WanTransformer3DModel.from_pretrained(out / "transformer")  # a plain diffusers folder
    assert alone.config.in_channels == 32
    m2 = HeadGenerator.from_pretrained(out).eval()
    assert m2.condition == "landmarks" and m2.vae.config.latents_std == [2.0] * 16
    for (k, a), (k2, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    torch.manual_seed(2)
    args = (torch.randn(1, 16, 2, 4, 4), torch.tensor([300.0]), torch.randn(1, 16, 2, 4, 4),
            torch.randn(1, 16, 1, 4, 4), torch.randn(1, 16, 1, 4, 4))
    with torch.no_grad():  # same weights; the loaded copy may take another kernel path (last-bit differences)
        torch.testing.assert_close(m(*args), m2(*args), rtol=0, atol=1e-6)
    # a training folder holding model/ resolves to it
    (tmp_path / "run").mkdir()
    m.save_pretrained(tmp_path / "run" / "model")
    assert resolve_checkpoint(tmp_path / "run") == tmp_path / "run" / "model"


def test_precomputed_null_text(tmp_path):
    m = HeadGenerator(named_config("tiny"))
    emb = torch.randn(7, 32)
    m.set_null_text(emb)
    assert m.null_text.shape == (1, 7, 32) and m.config["text_len"] == 7 and m.null_text.requires_grad
    with torch.no_grad():
        out = m(torch.randn(1, 16, 2, 4, 4), torch.tensor([10.0]), torch.zeros(1, 16, 2, 4, 4))
    assert out.shape == (1, 16, 2, 4, 4)
    m2 = HeadGenerator.from_pretrained(m.save_pretrained(tmp_path / "g"))
    assert torch.equal(m2.null_text, m.null_text)
    with pytest.raises(GeneratorInputError, match="null text"):
        m.set_null_text(torch.zeros(3, 4096))


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path, tiny):
    with pytest.raises(GeneratorInputError, match="does not exist"):
        HeadGenerator.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GeneratorInputError, match="not a generator checkpoint"):
        HeadGenerator.from_pretrained(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "generator.json").write_text(json.dumps({"architecture": "some-unet-generator"}))
    with pytest.raises(GeneratorInputError, match="another architecture"):
        HeadGenerator.from_pretrained(other)
    pipe = tmp_path / "pipe"
    pipe.mkdir()
    (pipe / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(GeneratorInputError, match="--base"):
        HeadGenerator.from_pretrained(pipe)
    # a generator folder whose transformer was swapped for another model class
    good = tiny.save_pretrained(tmp_path / "good")
    cfg = json.loads((good / "transformer" / "config.json").read_text())
    (good / "transformer" / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(GeneratorInputError, match="UNet2DConditionModel"):
        HeadGenerator.from_pretrained(good)
    # adapters that do not fit the recorded config
    good = tiny.save_pretrained(tmp_path / "good2")
    meta = json.loads((good / "generator.json").read_text())
    meta["config"]["pose_channels"] = [4, 4, 4]
    (good / "generator.json").write_text(json.dumps(meta))
    with pytest.raises(GeneratorInputError, match="adapter weights"):
        HeadGenerator.from_pretrained(good)


def _write_wan_base(root, transformer, vae):
    """A folder with the layout of Wan-AI/Wan2.1-T2V-1.3B-Diffusers (tiny weights; text encoder stubs)."""
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({**WAN21_MODEL_INDEX, "_diffusers_version": "0.33.0.dev0"}))
    # the real transformer ships as shards + an index; force shards here too
    transformer.save_pretrained(root / "transformer", max_shard_size="40KB")
    vae.save_pretrained(root / "vae")
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(WAN21_SCHEDULER))
    for sub, name in (("text_encoder", "config.json"), ("tokenizer", "tokenizer_config.json")):
        (root / sub).mkdir()
        (root / sub / name).write_text("{}")  # never read
    return root


def test_from_wan_base_loads_the_diffusers_layout(tmp_path):
    from diffusers import AutoencoderKLWan

    base = _base_transformer(seed=5)
    _perturb(base, 0.02)
    vae = AutoencoderKLWan(**component_kwargs(named_config("tiny")["vae"]))
    root = _write_wan_base(tmp_path / "Wan2.1-T2V-tiny-Diffusers", base, vae)
    assert (root / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    m = HeadGenerator.from_wan_base(root).eval()
    assert m.config["scheduler"]["_class_name"] == "UniPCMultistepScheduler" and m.flow_shift == 3.0
    assert m.config["vae_trained"] is True  # a pretrained VAE: no reconstruction stage
    w = m.transformer.patch_embedding.weight
    assert torch.equal(w[:, :16], base.patch_embedding.weight) and torch.count_nonzero(w[:, 16:]) == 0
    x, t = torch.randn(1, 16, 2, 4, 4), torch.tensor([900.0])
    with torch.no_grad():
        ours = m(x, t, torch.randn(1, 16, 2, 4, 4))
        theirs = base(hidden_states=x, timestep=t, encoder_hidden_states=m.null_text, return_dict=False)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    # and it saves as a generator checkpoint like any other
    m2 = HeadGenerator.from_pretrained(m.save_pretrained(tmp_path / "gen"))
    assert torch.equal(m2.transformer.patch_embedding.weight, w)


def test_wan_base_of_another_kind_is_a_clear_error(tmp_path, tiny):
    bad = tmp_path / "sd"
    bad.mkdir()
    (bad / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                      "unet": ["diffusers", "UNet2DConditionModel"],
                                                      "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(GeneratorInputError, match="StableDiffusionPipeline"):
        check_wan_base(bad)
    i2v = tmp_path / "i2v"
    (i2v / "transformer").mkdir(parents=True)
    (i2v / "model_index.json").write_text(json.dumps({**WAN21_MODEL_INDEX, "_class_name": "WanImageToVideoPipeline"}))
    (i2v / "transformer" / "config.json").write_text(json.dumps({**WAN21_13B_TRANSFORMER, "in_channels": 36,
                                                                 "image_dim": 1280}))
    with pytest.raises(GeneratorInputError, match="text-to-video"):
        check_wan_base(i2v)
    with pytest.raises(GeneratorInputError, match="no model_index.json"):
        check_wan_base(tmp_path)
    gen = tiny.save_pretrained(tmp_path / "gen")
    with pytest.raises(GeneratorInputError, match="generator checkpoint"):
        check_wan_base(gen)


# ----------------------------------------------------------------------------------------------------------------
# the real Wan2.1-T2V-1.3B architecture, without weights


def _wan_transformer_params_by_hand(c: dict, in_channels: int) -> int:
    """WanTransformer3DModel's parameter count from its config, layer by layer (biases included)."""
    d = c["num_attention_heads"] * c["attention_head_dim"]
    p = 1
    for k in c["patch_size"]:
        p *= k
    lin = lambda i, o: i * o + o  # noqa: E731
    n = lin(in_channels * p, d)                                      # patch embedding (Conv3d = linear on patches)
    n += lin(c["freq_dim"], d) + lin(d, d)                           # time embedder
    n += lin(d, 6 * d)                                               # time projection (6 modulation vectors)
    n += lin(c["text_dim"], d) + lin(d, d)                           # text projection
    attn = 4 * lin(d, d) + 2 * d                                     # q, k, v, out + RMS norms of q and k
    block = 2 * attn + 2 * d + lin(d, c["ffn_dim"]) + lin(c["ffn_dim"], d) + 6 * d  # + norm2 affine + table
    n += c["num_layers"] * block
    n += lin(d, c["out_channels"] * p) + 2 * d                       # head + its modulation table
    return n


def test_real_wan21_13b_config_on_meta_device():
    cfg = named_config("wan2.1-1.3b")
    assert cfg["transformer"] == WAN21_13B_TRANSFORMER and cfg["vae"] == WAN21_VAE
    with torch.device("meta"):
        m = HeadGenerator(cfg)
    tr = m.transformer
    assert all(p.is_meta for p in m.parameters())
    sd = tr.state_dict()
    # Wan-AI/Wan2.1-T2V-1.3B-Diffusers: transformer/diffusion_pytorch_model.safetensors.index.json lists 825 tensors
    assert len(sd) == 825
    n_base = _wan_transformer_params_by_hand(WAN21_13B_TRANSFORMER, 16)
    assert n_base == 1_418_996_800  # "1.3B": the DiT alone
    n_ours = sum(p.numel() for p in tr.parameters())
    assert n_ours == _wan_transformer_params_by_hand(WAN21_13B_TRANSFORMER, 32) == n_base + 1536 * 16 * 4
    assert tuple(sd["patch_embedding.weight"].shape) == (1536, 32, 1, 2, 2)
    assert tuple(sd["condition_embedder.text_embedder.linear_1.weight"].shape) == (1536, 4096)
    assert tuple(sd["blocks.29.ffn.net.0.proj.weight"].shape) == (8960, 1536)
    assert tuple(sd["blocks.0.attn1.norm_q.weight"].shape) == (1536,)
    assert tuple(sd["scale_shift_table"].shape) == (1, 2, 1536) and tuple(sd["proj_out.weight"].shape) == (64, 1536)
    assert m.null_text.shape == (1, 1, 4096)
    vsd = m.vae.state_dict()
    assert 126e6 < sum(p.numel() for p in m.vae.parameters()) < 128e6  # Wan-VAE: 127M parameters (Wan report)
    # the real vae/ file: the decoder side (decoder.* + post_quant_conv) holds 108 tensors
    assert sum(k.startswith("decoder.") for k in vsd) + 2 == 108
    assert tuple(vsd["encoder.conv_in.weight"].shape) == (96, 3, 3, 3, 3)
    assert tuple(vsd["quant_conv.weight"].shape) == (32, 32, 1, 1, 1)
    assert tuple(vsd["decoder.conv_in.weight"].shape) == (384, 16, 3, 3, 3)
