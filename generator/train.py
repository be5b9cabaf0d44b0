"""Training the generator: flow matching on the generated frames, through `accelerate`.

Objective. Wan is a flow-matching model: x_σ = (1-σ)·x₀ + σ·ε and the DiT predicts the velocity v = ε - x₀ at
timestep σ·1000. Fine-tuning must keep the base's parameterisation, so the loss here is ‖v̂ - (ε - x₀)‖², not the
paper's ε-prediction loss (ExpPortrait §3.3 builds on an ε-parameterised model). The two are one objective under
different weights: ε = x_σ + (1-σ)·v, so ‖ε̂ - ε‖² = (1-σ)²·‖v̂ - v‖²; an ε-loss would just down-weight the
high-noise end. Noise levels are drawn as σ = shift·u / (1 + (shift-1)·u), u ~ U(0,1), the time shift the sampler
uses. The loss covers the generated frames only (the reference frame is clean and its output is dropped); an
optional face weight multiplies the error inside the face mask by (1 + face_weight), the fine-grained face loss of
Follow-Your-Emoji / SkyReels-A1. With probability ``cond_drop`` a sample's pose features are zeroed, which trains
the unconditional branch classifier-free guidance needs.

From scratch the VAE is random, so decoded samples would mean nothing: a short reconstruction stage first fits
the VAE to the data's clips (MSE of the reconstruction from the posterior mean + a tiny KL, random flips, Adam
with a cosine-decaying rate), then measures the per-channel latent mean / std (stored in the VAE config, as Wan's
are) and freezes it. (A few hundred steps give a usable tiny VAE; a real one wants thousands, or a Wan base.)

Output folder: ``model/`` (the latest weights, a full generator folder that ``generator animate`` reads),
``state/step-NNNNNN/`` (accelerate state for ``--resume``: weights, optimizer, LR schedule, RNG), ``train_config.json``
and ``log.jsonl`` (one line per logged step). The CPU, one GPU, or several: ``accelerate launch --multi_gpu
--num_processes N -m generator.cli train ...`` (or ``torchrun --nproc_per_node N -m generator.cli train ...``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from headrep.io import progress

from .errors import GeneratorInputError

DEFAULT_VAE_STEPS = 300


@dataclasses.dataclass
class TrainConfig:
    """Training settings; a JSON file with any of these keys is read by :meth:`from_file` (``--config``)."""

    steps: int = 1000                 # optimizer steps (after gradient accumulation)
    batch_size: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    cond_drop: float = 0.1            # probability of zero pose features (for classifier-free guidance)
    face_weight: float = 0.0          # extra loss weight inside the face mask
    num_frames: int | None = None     # None: the model's default
    resolution: int | None = None
    trainable: str = "all"            # "all": DiT + adapters; "adapters": encoders, patch embedding, null text
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"       # "no", "bf16", "fp16" (accelerate)
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    vae_steps: int | None = None      # VAE reconstruction stage; None: 300 for an untrained VAE, else 0
    vae_lr: float = 2e-3
    vae_kl: float = 1e-6

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise GeneratorInputError(f"config file {path} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GeneratorInputError(f"config file {path} is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise GeneratorInputError(f"config file {path} must hold a JSON object")
        return cls.from_dict({**data, **{k: v for k, v in overrides.items() if v is not None}}, str(path))

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise GeneratorInputError(f"{where}: unknown training settings {unknown}; known: {sorted(names)}")
        cfg = cls(**data)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.grad_accum < 1 or self.lr <= 0:
            raise GeneratorInputError("training needs steps >= 0, batch_size >= 1, grad_accum >= 1, lr > 0")
        if self.trainable not in ("all", "adapters"):
            raise GeneratorInputError(f"trainable must be 'all' or 'adapters', got {self.trainable!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise GeneratorInputError(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if not 0 <= self.cond_drop < 1:
            raise GeneratorInputError(f"cond_drop must be in [0, 1), got {self.cond_drop}")


# --------------------------------------------------------------------------------------------------------------
# the objective


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's time shift σ = s·u / (1 + (s-1)·u) (the same map FlowMatchEulerDiscreteScheduler applies)."""
    return shift * u / (1 + (shift - 1) * u)


def flow_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_σ = (1-σ)·x₀ + σ·ε, σ per batch item."""
    s = sigma.view(-1, *([1] * (x0.ndim - 1)))
    return (1 - s) * x0 + s * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity a flow-matching model predicts: dx_σ/dσ = ε - x₀."""
    return noise - x0


def latent_mask(mask: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """A pixel mask [B,1,F,H,W] on the latent grid (T,h,w): frame 0 alone, then each group of 4 frames, by
    max over time (a face in any frame of the group counts) and area average over each 8×8 block."""
    T, h, w = grid
    m = torch.cat([mask[:, :, :1].expand(-1, -1, 3, -1, -1), mask], dim=2).float()
    B, _, F4, H, W = m.shape
    m = m.view(B, 1, F4 // 4, 4, H, W).amax(dim=3)
    return F.adaptive_avg_pool3d(m, (T, h, w))


class Denoiser(torch.nn.Module):
    """One training forward (condition encoders + DiT) as a single module, so DDP sees every used weight."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, noisy, timestep, cond, ref, ref_latent, keep):
        pose = self.model.encode_condition(cond) * keep.view(-1, 1, 1, 1, 1).to(cond.dtype)
        ref_feat = self.model.ref_encoder(ref)[:, :, None]
        return self.model(noisy, timestep, pose, ref_latent, ref_feat)


def flow_loss(denoiser, batch: dict, sigma: torch.Tensor, noise: torch.Tensor, keep: torch.Tensor,
              face_weight: float = 0.0, latents: tuple | None = None) -> torch.Tensor:
    """The training loss of one batch at given noise levels / noise / condition-keep flags."""
    if latents is None:
        model = getattr(denoiser, "module", denoiser).model
        with torch.no_grad():
            x0 = model.encode_video(batch["video"])
            ref_latent = model.encode_video(batch["ref"][:, :, None])
    else:
        x0, ref_latent = latents
    noisy = flow_noise(x0, noise, sigma)
    v = denoiser(noisy, sigma * 1000.0, batch["cond"], batch["ref"], ref_latent, keep)
    err = (v - flow_target(x0, noise)) ** 2
    if face_weight and "face_mask" in batch:
        err = err * (1 + face_weight * latent_mask(batch["face_mask"], tuple(x0.shape[2:])))
    return err.mean()


@torch.no_grad()
def evaluate_loss(model, batch: dict, sigmas=(0.1, 0.3, 0.5, 0.7, 0.9), seed: int = 0) -> float:
    """The flow loss at fixed noise levels and noise (no condition dropout): a low-variance progress measure."""
    was = model.training
    model.eval()
    den = Denoiser(model)
    x0 = model.encode_video(batch["video"])
    ref_latent = model.encode_video(batch["ref"][:, :, None])
    g = torch.Generator().manual_seed(seed)
    total = 0.0
    for s in sigmas:
        noise = torch.randn(x0.shape, generator=g).to(x0.device)
        sigma = torch.full((x0.shape[0],), float(s), device=x0.device)
        total += float(flow_loss(den, batch, sigma, noise, torch.ones_like(sigma), latents=(x0, ref_latent)))
    model.train(was)
    return total / len(sigmas)


# --------------------------------------------------------------------------------------------------------------
# VAE stage (training from scratch)


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Random horizontal / vertical flips and time direction (kept causal: frame 0 stays first).

    Why: with few clips a decoder can memorise them and ignore its latent (then any latent decodes to a
    training clip and sampling looks good for the wrong reason); varied inputs make it use the code.
    """
    r = torch.rand(3, generator=g)
    if r[0] < 0.5:
        x = x.flip(-1)
    if r[1] < 0.5:
        x = x.flip(-2)
    if r[2] < 0.5:
        x = torch.cat([x[:, :, :1], x[:, :, 1:].flip(2)], dim=2)
    return x


def fit_vae(vae, dataset, steps: int, lr: float = 2e-3, kl: float = 1e-6, batch_size: int = 1, seed: int = 0,
            augment: bool = True, device: torch.device | str = "cpu", show_progress: bool | None = None) -> list[float]:
    """Fit a (random) Wan VAE to the dataset's videos for ``steps`` Adam steps with a cosine-decaying learning
    rate: MSE of the reconstruction from the posterior mean plus ``kl`` × KL. Returns the loss history."""
    from torch.utils.data import DataLoader

    device = torch.device(device)
    vae.to(device).train()
    vae.requires_grad_(True)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    g = torch.Generator().manual_seed(seed + 1)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=g, drop_last=False)
    history = []
    passes = 0
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)
    it = iter(loader)
    for _ in progress(range(steps), steps, "vae", "step", enabled=show_progress):
        try:
            batch = next(it)
        except StopIteration:
            passes += 1
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(passes)
            it = iter(loader)
            batch = next(it)
        x = batch["video"].to(device)
        if augment:
            x = _augment(x, g)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mode()).sample
        loss = F.mse_loss(rec, x) + kl * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
    vae.eval()
    vae.requires_grad_(False)
    return history


@torch.no_grad()
def measure_latent_stats(vae, dataset, items: int = 16, device: torch.device | str = "cpu") -> tuple[list, list]:
    """Per-channel mean / std of the VAE's latents over up to ``items`` dataset items, stored into the VAE
    config (``latents_mean`` / ``latents_std``) so normalised latents are near unit scale, as Wan's are."""
    zs = []
    for i in range(min(items, len(dataset))):
        x = dataset[i]["video"][None].to(device)
        zs.append(vae.encode(x).latent_dist.mode().float().transpose(0, 1).reshape(vae.config.z_dim, -1))
    z = torch.cat(zs, dim=1)
    mean = z.mean(dim=1)
    std = z.std(dim=1).clamp_min(1e-3) if z.shape[1] > 1 else torch.ones_like(mean)
    mean, std = [round(float(v), 5) for v in mean], [round(float(v), 5) for v in std]
    vae.register_to_config(latents_mean=mean, latents_std=std)
    return mean, std


# --------------------------------------------------------------------------------------------------------------
# training loop


# With a single null-text token the cross-attention weight is 1 whatever q·k is: these parameters cannot change
# the output, and Adam would turn their float-noise gradients into a random drift of the base's weights.
_NO_EFFECT_WITH_ONE_TOKEN = ("attn2.to_q.", "attn2.to_k.", "attn2.norm_q.", "attn2.norm_k.", "norm2.")


def _trainable(model, which: str) -> list[torch.nn.Parameter]:
    model.requires_grad_(False)
    named = list(model.pose_encoder.named_parameters()) + list(model.ref_encoder.named_parameters())
    tr = model.transformer if which == "all" else model.transformer.patch_embedding
    skip = _NO_EFFECT_WITH_ONE_TOKEN if model.null_text.shape[1] == 1 else ()
    named += [(n, p) for n, p in tr.named_parameters() if not any(s in n for s in skip)]
    params = [p for _, p in named] + [model.null_text]
    for p in params:
        p.requires_grad_(True)
    return params


def latest_state(out: Path) -> Path | None:
    """The newest complete accelerate state folder under ``out/state`` (one with its step.json)."""
    states = sorted(p for p in (out / "state").glob("step-*") if (p / "step.json").is_file())
    return states[-1] if states else None


def train(model, dataset, out: str | Path, cfg: TrainConfig | None = None, resume: bool = False,
          device: str = "auto", show_progress: bool | None = None) -> dict:
    """Train ``model`` (a :class:`~generator.model.HeadGenerator`) on ``dataset`` (items as
    :class:`generator.data.ClipDataset` gives them) into the folder ``out``; see the module docstring.

    ``resume``: continue from the newest ``out/state/step-*`` (the caller loads ``out/model`` as ``model``).
    Returns ``{"losses": [...per step...], "step": last step, "vae_losses": [...], "processes": how many,
    "main": whether this is the main process}``.
    """
    from accelerate import Accelerator
    from accelerate.utils import GradientAccumulationPlugin, set_seed
    from torch.utils.data import DataLoader

    cfg = cfg or TrainConfig()
    cfg.check()
    out = Path(out)
    if len(dataset) == 0:
        raise GeneratorInputError("the training data holds no clips")
    first = dataset[0]["video"]  # record the trained clip shape: animate's defaults
    model.config["num_frames"], model.config["resolution"] = int(first.shape[1]), int(first.shape[-1])
    from .pipeline import resolve_device

    use_cpu = resolve_device(device).type == "cpu"
    # accumulate across epoch ends too (small data sets: an epoch can be shorter than one accumulation)
    plugin = GradientAccumulationPlugin(num_steps=cfg.grad_accum, sync_with_dataloader=False)
    acc = Accelerator(gradient_accumulation_plugin=plugin, mixed_precision=cfg.mixed_precision, cpu=use_cpu,
                      project_dir=str(out))
    set_seed(cfg.seed)
    main = acc.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))

    vae_losses: list[float] = []
    state = latest_state(out) if resume else None
    if resume and state is None:
        acc.print("generator train: nothing to resume in this folder; starting from step 0")
    vae_steps = cfg.vae_steps if cfg.vae_steps is not None else (
        0 if model.config.get("vae_trained") else DEFAULT_VAE_STEPS)
    if state is None and vae_steps > 0:
        vae_losses = _vae_stage(acc, model, dataset, vae_steps, cfg, out, show_progress)
    model.vae.requires_grad_(False).eval()
    if cfg.gradient_checkpointing:
        model.transformer.enable_gradient_checkpointing()
    params = _trainable(model, cfg.trainable)
    model.train()
    model.vae.eval()

    denoiser = Denoiser(model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    g = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=g, drop_last=False,
                        num_workers=cfg.num_workers)
    denoiser, opt, loader, sched = acc.prepare(denoiser, opt, loader, sched)
    model.vae.to(acc.device)

    step = 0
    if state is not None:
        acc.load_state(str(state))
        step = int(json.loads((state / "step.json").read_text())["step"])
        acc.print(f"generator train: resumed from {state.name} (step {step})")
    micro = 0  # micro-batches since the last optimizer step: noise is seeded by (seed, step, micro, process)
    losses: list[float] = []
    log = open(out / "log.jsonl", "a") if main else None
    bar = progress(range(step, cfg.steps), cfg.steps - step, "train", "step", enabled=show_progress if main else False)
    running, seen = 0.0, 0
    epoch = (step * cfg.grad_accum) // max(1, len(loader))  # passes over the data so far (approximately)
    try:
        while step < cfg.steps:
            if hasattr(dataset, "set_epoch"):  # ClipDataset: another draw of training windows per pass
                dataset.set_epoch(epoch)
            epoch += 1
            for batch in loader:
                with acc.accumulate(denoiser):
                    B = batch["video"].shape[0]
                    noise_gen = torch.Generator().manual_seed(
                        ((cfg.seed * 1_000_003 + step) * 1009 + micro) * 101 + acc.process_index)
                    micro += 1
                    u = torch.rand(B, generator=noise_gen)
                    sigma = shift_sigmas(u, model.flow_shift).to(acc.device)
                    keep = (torch.rand(B, generator=noise_gen) >= cfg.cond_drop).float().to(acc.device)
                    with torch.no_grad():
                        x0 = model.encode_video(batch["video"])
                        ref_latent = model.encode_video(batch["ref"][:, :, None])
                    noise = torch.randn(x0.shape, generator=noise_gen).to(acc.device)
                    loss = flow_loss(denoiser, batch, sigma, noise, keep, cfg.face_weight, (x0, ref_latent))
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                running += float(loss.detach())
                seen += 1
                if not acc.sync_gradients:
                    continue
                step += 1
                micro = 0
                value = float(acc.reduce(torch.tensor(running / seen, device=acc.device), "mean"))  # over processes
                running, seen = 0.0, 0
                losses.append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if log is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                    log.write(json.dumps({"step": step, "loss": value, "lr": sched.get_last_lr()[0]}) + "\n")
                    log.flush()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    _checkpoint(acc, model, out, step, cfg.keep_checkpoints)
                if step >= cfg.steps:
                    break
    finally:
        bar.close()
        if log is not None:
            log.close()
    if cfg.steps == step and not (out / "model").exists() and main:
        model.save_pretrained(out / "model")
    acc.wait_for_everyone()
    model.eval()
    return {"losses": losses, "step": step, "vae_losses": vae_losses, "processes": acc.num_processes,
            "main": main}


def _vae_stage(acc, model, dataset, steps: int, cfg: TrainConfig, out: Path, show_progress) -> list[float]:
    """Fit the VAE on the main process, store its latent statistics, and give the others the same VAE."""
    losses: list[float] = []
    stage = out / "vae_stage"
    if acc.is_main_process:
        losses = fit_vae(model.vae, dataset, steps, lr=cfg.vae_lr, kl=cfg.vae_kl, batch_size=cfg.batch_size,
                         seed=cfg.seed, device=acc.device, show_progress=show_progress)
        measure_latent_stats(model.vae, dataset, device=acc.device)
        if acc.num_processes > 1:
            model.vae.save_pretrained(stage)
    acc.wait_for_everyone()
    if not acc.is_main_process:
        from diffusers import AutoencoderKLWan

        loaded = AutoencoderKLWan.from_pretrained(str(stage))
        model.vae.load_state_dict(loaded.state_dict())
        model.vae.register_to_config(latents_mean=list(loaded.config.latents_mean),
                                     latents_std=list(loaded.config.latents_std))
    acc.wait_for_everyone()
    if acc.is_main_process and stage.exists():
        shutil.rmtree(stage, ignore_errors=True)
    model.config["vae_trained"] = True
    model.config["vae"] = {**model.config["vae"], "latents_mean": list(model.vae.config.latents_mean),
                           "latents_std": list(model.vae.config.latents_std)}
    return losses


def _checkpoint(acc, model, out: Path, step: int, keep: int) -> None:
    """Save the model folder and the accelerate state for this step, each written whole before it appears."""
    acc.wait_for_everyone()
    tmp = out / "state" / f".step-{step:06d}.partial"
    final = out / "state" / f"step-{step:06d}"
    if acc.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        (tmp / "step.json").write_text(json.dumps({"step": step}))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        model.save_pretrained(out / "model")
        states = sorted(p for p in (out / "state").glob("step-*") if p.is_dir())
        for old in states[: max(0, len(states) - max(1, keep))]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()

