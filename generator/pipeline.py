"""Sampling: reference portrait + condition video → RGB video, with the flow-matching scheduler Wan uses.

The denoiser predicts the flow velocity v = noise - data at noise level σ = timestep / 1000 (x_σ = (1-σ)·data
+ σ·noise), which is what both of Wan's schedulers expect (``FlowMatchEulerDiscreteScheduler`` and
``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True)``). Classifier-free guidance
is over the pose condition only: the unconditional branch gets zero pose features (which is exactly the
untouched base at initialisation) and keeps the reference frame.

Memory options as users of Wan expect them: VAE tiling / slicing, bf16 for the DiT on a GPU (the VAE stays
in float32, as Wan recommends), and model CPU offload (each component visits the GPU only while it works).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from headrep.io import progress

from .errors import GeneratorInputError

SCHEDULERS = ("euler", "unipc")


def make_scheduler(config: dict, kind: str | None = None, shift: float | None = None):
    """The scheduler recorded in a generator config, or ``kind`` ('euler' / 'unipc') with the same shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    name = config.get("_class_name", "FlowMatchEulerDiscreteScheduler")
    base_shift = float(cfg.get("shift", cfg.get("flow_shift", 1.0)))
    shift = base_shift if shift is None else float(shift)
    n_train = int(cfg.get("num_train_timesteps", 1000))
    if kind is None:
        kind = "unipc" if name == "UniPCMultistepScheduler" else "euler"
    if kind == "euler":
        if name == "FlowMatchEulerDiscreteScheduler":
            return FlowMatchEulerDiscreteScheduler.from_config({**cfg, "shift": shift})
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=n_train, shift=shift)
    if kind == "unipc":
        if name == "UniPCMultistepScheduler":
            return UniPCMultistepScheduler.from_config({**cfg, "flow_shift": shift})
        return UniPCMultistepScheduler(num_train_timesteps=n_train, prediction_type="flow_prediction",
                                       use_flow_sigmas=True, flow_shift=shift)
    raise GeneratorInputError(f"unknown scheduler {kind!r}; choose one of {', '.join(SCHEDULERS)}")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """headrep's device policy, raising this package's error."""
    from headrep.devices import resolve_device as resolve

    return resolve(device, GeneratorInputError)


@contextlib.contextmanager
def _on(module: torch.nn.Module, device: torch.device, offload: bool):
    """Keep ``module`` on ``device`` for the body; with offload, send it back to the CPU afterwards."""
    module.to(device)
    try:
        yield module
    finally:
        if offload:
            module.to("cpu")
            if device.type == "cuda":
                torch.cuda.empty_cache()


def cast_transformer(transformer, dtype: torch.dtype):
    """Cast the DiT to ``dtype`` but keep the modules diffusers keeps in float32 (``_keep_in_fp32_modules``:
    rope, time embedder, modulation tables, norms), as ``from_pretrained(torch_dtype=...)`` does."""
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or [])
    for name, module in transformer.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            want = torch.float32 if keep & set(full.split(".")) else dtype
            if param.dtype != want:
                param.data = param.data.to(want)
    return transformer


def prepare_model(model, device: torch.device, dtype: torch.dtype | None = None, vae_tiling: bool = False,
                  vae_slicing: bool = False):
    """Set the precision (bf16 DiT on a GPU by default, float32 VAE) and the VAE memory options, in place."""
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    cast_transformer(model.transformer, dtype)
    for module in (model.pose_encoder, model.ref_encoder):
        torch.nn.Module.to(module, dtype)
    model.null_text.data = model.null_text.data.to(dtype)
    torch.nn.Module.to(model.vae, torch.float32)
    if vae_tiling:
        model.vae.enable_tiling()
    else:
        model.vae.disable_tiling()
    if vae_slicing:
        model.vae.enable_slicing()
    else:
        model.vae.disable_slicing()
    return model


@torch.no_grad()
def sample(model, ref: torch.Tensor, cond: torch.Tensor, steps: int = 30, guidance: float = 1.0, seed: int = 0,
           scheduler: str | None = None, shift: float | None = None, device: str | torch.device = "cpu",
           dtype: torch.dtype | None = None, offload: bool = False, vae_tiling: bool = False,
           vae_slicing: bool = False, show_progress: bool | None = None, return_latents: bool = False):
    """Generate the video of the reference person following the condition.

    ``ref``: [3,H,W] or [B,3,H,W] in [-1,1]; ``cond``: [C,F,H,W] or [B,C,F,H,W] in [-1,1] (F = 4k+1).
    Returns the video [3,F,H,W] (or [B,3,F,H,W]) in [-1,1] on the CPU, float32; with ``return_latents`` also
    the final normalised latents. ``guidance`` > 1 runs classifier-free guidance over the pose condition;
    ``offload`` keeps the model on the CPU and moves each component to ``device`` only while it runs.
    The model is prepared in place (precision as :func:`prepare_model`, VAE options, device).
    """
    batched = cond.ndim == 5
    if not batched:
        cond, ref = cond[None], ref[None]
    if ref.ndim != 4 or ref.shape[1] != 3:
        raise GeneratorInputError(f"the reference must be [3,H,W] or [B,3,H,W], got {tuple(ref.shape)}")
    if ref.shape[-2:] != cond.shape[-2:]:
        raise GeneratorInputError(f"reference size {tuple(ref.shape[-2:])} differs from the condition's "
                                  f"{tuple(cond.shape[-2:])}")
    if steps < 1:
        raise GeneratorInputError(f"--steps must be at least 1, got {steps}")
    expected = model.pose_encoder.stem.in_channels
    if cond.shape[1] != expected:
        raise GeneratorInputError(f"the condition has {cond.shape[1]} channels; this model ({model.condition}) "
                                  f"takes {expected}")
    if cond.shape[-1] % 16 or cond.shape[-2] % 16:
        raise GeneratorInputError(f"the frame size {tuple(cond.shape[-2:])} must be a multiple of 16 "
                                  f"(VAE 8× times patch 2×)")
    device = resolve_device(device)
    prepare_model(model, device, dtype, vae_tiling, vae_slicing)
    model.eval()
    B = cond.shape[0]
    with _on(model.vae, device, offload):
        ref_latent = model.encode_video(ref.to(device)[:, :, None])
    with _on(model.pose_encoder, device, offload), _on(model.ref_encoder, device, offload):
        pose = model.encode_condition(cond.to(device))
        ref_feat = model.ref_encoder(ref.to(device, model.ref_encoder.out.weight.dtype))[:, :, None]
    g = torch.Generator().manual_seed(int(seed))
    x = torch.randn((B, model.z_dim, *pose.shape[2:]), generator=g).to(device)
    sched = make_scheduler(model.config["scheduler"], scheduler, shift)
    sched.set_timesteps(int(steps), device=device)
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(0)
    cfg = guidance != 1.0
    if cfg:  # one batched call: conditional half, then unconditional half (zero pose features)
        pose_in = torch.cat([pose, torch.zeros_like(pose)])
        rl_in, rf_in = torch.cat([ref_latent, ref_latent]), torch.cat([ref_feat, ref_feat])
    else:
        pose_in, rl_in, rf_in = pose, ref_latent, ref_feat

    def velocity(x, t):
        xin = torch.cat([x, x]) if cfg else x
        v = model(xin, t.float().expand(xin.shape[0]), pose_in, rl_in, rf_in)
        if cfg:
            v_cond, v_uncond = v.chunk(2)
            v = v_uncond + guidance * (v_cond - v_uncond)
        return v

    with _on(model.transformer, device, offload):
        model.null_text.data = model.null_text.data.to(device)
        x = denoise_loop(velocity, x, sched, show_progress)
    with _on(model.vae, device, offload):
        video = model.decode_latents(x).cpu()
    if not batched:
        video, x = video[0], x[0]
    return (video, x.cpu()) if return_latents else video


def denoise_loop(velocity, x: torch.Tensor, sched, show_progress: bool | None = None) -> torch.Tensor:
    """Integrate from noise ``x`` with a scheduler whose timesteps are already set; ``velocity(x, t)`` gives the
    flow velocity at timestep ``t`` (σ·1000)."""
    for t in progress(sched.timesteps, len(sched.timesteps), "denoise", "step", enabled=show_progress):
        x = sched.step(velocity(x, t), t, x, return_dict=False)[0]
    return x


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3,F,H,W] in [-1,1] → uint8 [F,H,W,3] for :func:`headrep.io.write_video`."""
    v = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return v.permute(1, 2, 3, 0).contiguous().numpy()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two videos in [-1,1] (peak-to-peak 2)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * float(np.log10(4.0 / mse))
