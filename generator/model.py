"""The generator network: diffusers' Wan DiT and Wan VAE, plus a pose encoder and a reference encoder.

ExpPortrait §3.3 on Wan components (`WanTransformer3DModel`, `AutoencoderKLWan`, used as they are):

* the 3D-conv :class:`PoseEncoder` turns the rendered normal + depth video (or drawn landmarks) into features on
  the VAE's latent grid (time 4× with the first frame kept, space 8×); they are concatenated with the noisy latent
  on the channel axis before the patch embedding, whose new input channels start at zero, so a pretrained base
  starts out computing exactly what it computed before;
* the reference portrait enters as an extra *frame* in front of the video: its VAE latent in the latent channels
  and a 2D-conv :class:`ReferenceEncoder`'s features in the condition channels, with timestep 0 for its tokens
  (it is clean), so DiT self-attention can copy appearance from it; its output is dropped (no loss on it);
* no text encoder: a learned null text embedding of the base's ``text_dim`` feeds the cross-attention.

A saved generator is a folder: ``generator.json`` (architecture marker, condition mode, config),
``transformer/`` and ``vae/`` (diffusers ``save_pretrained`` layout, loadable on their own), ``scheduler/``,
and ``adapters.safetensors`` (pose encoder, reference encoder, null text).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import component_kwargs, condition_channels, latent_frames, named_config
from .errors import GeneratorInputError

ARCHITECTURE = "headrep-wan-pose-generator"
FORMAT_VERSION = 1
MARKER = "generator.json"


# --------------------------------------------------------------------------------------------------------------
# encoders


def _causal_pad(x: torch.Tensor, frames: int) -> torch.Tensor:
    """Pad ``frames`` copies of the first frame in front (time) and 1 pixel around (space), replicating."""
    return F.pad(x, (1, 1, 1, 1, frames, 0), mode="replicate")


class PoseEncoder(nn.Module):
    """3D convs from a condition video [B,C,F,H,W] (F = 4k+1) to features [B,cond_dim,1+k,H/8,W/8].

    Why this layout: it must land on the causal VAE's latent grid. Three copies of frame 0 are put in front,
    making 4(k+1) frames, and two time-stride-2 convolutions without overlap then group frames in fours, so
    latent 0 sees only frame 0 and latent j ≥ 1 sees frames 4j-3..4j (and earlier ones through the causal
    3×3×3 convolutions), just like the VAE. Nothing depends on later frames.
    """

    def __init__(self, in_channels: int, channels: list[int], out_channels: int):
        super().__init__()
        if len(channels) < 3:
            raise ValueError("PoseEncoder needs at least 3 widths")
        c0, c1, c2, c3 = channels[0], channels[1], channels[2], channels[-1]
        self.stem = nn.Conv3d(in_channels, c0, 3)
        self.down_t1 = nn.Conv3d(c0, c1, (2, 4, 4), stride=(2, 2, 2), padding=(0, 1, 1))
        self.down_t2 = nn.Conv3d(c1, c2, (2, 4, 4), stride=(2, 2, 2), padding=(0, 1, 1))
        self.down_s3 = nn.Conv3d(c2, c3, (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1))
        self.mix = nn.Conv3d(c3, c3, 3)
        self.out = nn.Conv3d(c3, out_channels, 1)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        latent_frames(cond.shape[2])  # 4k+1 check
        if cond.shape[-1] % 8 or cond.shape[-2] % 8:
            raise GeneratorInputError(f"condition size {tuple(cond.shape[-2:])} is not a multiple of 8")
        x = torch.cat([cond[:, :, :1].expand(-1, -1, 3, -1, -1), cond], dim=2)
        x = F.silu(self.stem(_causal_pad(x, 2)))
        x = F.silu(self.down_t1(x))
        x = F.silu(self.down_t2(x))
        x = F.silu(self.down_s3(x))
        x = F.silu(self.mix(_causal_pad(x, 2)))
        return self.out(x)


class ReferenceEncoder(nn.Module):
    """2D convs from the reference image [B,3,H,W] to features [B,cond_dim,H/8,W/8] for the reference frame.

    Why besides the VAE latent: the latent is built for reconstruction; a trained encoder can add identity cues
    in the same condition channels the pose features use on the video frames.
    """

    def __init__(self, channels: list[int], out_channels: int):
        super().__init__()
        if len(channels) < 3:
            raise ValueError("ReferenceEncoder needs at least 3 widths")
        c0, c1, c2, c3 = channels[0], channels[1], channels[2], channels[-1]
        self.stem = nn.Conv2d(3, c0, 3, padding=1)
        self.down = nn.ModuleList([nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in ((c0, c1), (c1, c2), (c2, c3))])
        self.out = nn.Conv2d(c3, out_channels, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] % 8 or image.shape[-2] % 8:
            raise GeneratorInputError(f"reference size {tuple(image.shape[-2:])} is not a multiple of 8")
        x = F.silu(self.stem(image))
        for conv in self.down:
            x = F.silu(conv(x))
        return self.out(x)


def expand_patch_embedding(transformer, extra: int) -> None:
    """Give the transformer's patch embedding ``extra`` more input channels, zero-initialised, in place.

    The old weights are copied into the first channels and the bias kept, so for any input whose new channels
    hold anything the output equals the base's output on the old channels: the base starts unchanged.
    """
    old = transformer.patch_embedding
    new = nn.Conv3d(old.in_channels + extra, old.out_channels, old.kernel_size, stride=old.stride,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    transformer.patch_embedding = new
    transformer.register_to_config(in_channels=old.in_channels + extra,
                                   out_channels=transformer.config.out_channels or old.in_channels)


# --------------------------------------------------------------------------------------------------------------
# the generator


class HeadGenerator(nn.Module):
    """Wan DiT + Wan VAE + pose encoder + reference encoder + null text; see the module docstring.

    ``config``: a generator config (:mod:`generator.config`); ``transformer``/``vae``: already built diffusers
    modules (a loaded base or a loaded checkpoint); a transformer with the base's 16 input channels is expanded.
    """

    def __init__(self, config: dict, condition: str = "normal_depth", transformer=None, vae=None):
        super().__init__()
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        self.config = copy.deepcopy(config)
        self.condition = condition
        cond_dim = int(config["cond_dim"])
        self.vae = vae if vae is not None else AutoencoderKLWan(**component_kwargs(config["vae"]))
        tr = transformer
        if tr is None:
            tr = WanTransformer3DModel(**component_kwargs(config["transformer"]))
        z = int(self.vae.config.z_dim)
        if tr.config.in_channels == z:
            expand_patch_embedding(tr, cond_dim)
        elif tr.config.in_channels != z + cond_dim:
            raise GeneratorInputError(f"the transformer takes {tr.config.in_channels} input channels; expected {z} "
                                      f"(a Wan T2V base) or {z + cond_dim} (a generator checkpoint)")
        if (tr.config.out_channels or z) != z:
            raise GeneratorInputError(f"the transformer outputs {tr.config.out_channels} channels, the VAE has {z}")
        self.transformer = tr
        self.pose_encoder = PoseEncoder(condition_channels(condition), config["pose_channels"], cond_dim)
        self.ref_encoder = ReferenceEncoder(config["ref_channels"], cond_dim)
        text_dim = int(tr.config.text_dim)
        self.null_text = nn.Parameter(torch.zeros(1, int(config.get("text_len", 1)), text_dim,
                                                  device=tr.patch_embedding.weight.device))
        self.config["transformer"] = {**config["transformer"], "in_channels": z,
                                      "out_channels": z, "text_dim": text_dim}

    def set_null_text(self, embedding: torch.Tensor) -> None:
        """Use a precomputed text embedding [L, text_dim] or [1, L, text_dim] (e.g. the base's empty prompt)
        as the (still trainable) null text."""
        emb = embedding.detach().float()
        emb = emb[None] if emb.ndim == 2 else emb
        if emb.ndim != 3 or emb.shape[0] != 1 or emb.shape[2] != self.null_text.shape[2]:
            raise GeneratorInputError(f"a null text embedding must be [L, {self.null_text.shape[2]}] for this "
                                      f"model, got {tuple(embedding.shape)}")
        self.null_text = nn.Parameter(emb.to(self.null_text.device, self.null_text.dtype).contiguous())
        self.config["text_len"] = int(emb.shape[1])

    # ---- properties -----------------------------------------------------------------------------------------

    @property
    def z_dim(self) -> int:
        return int(self.vae.config.z_dim)

    @property
    def flow_shift(self) -> float:
        """The flow-matching time shift of the base's scheduler (training samples noise levels with it too)."""
        s = self.config["scheduler"]
        return float(s.get("shift", s.get("flow_shift", 1.0)))

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean, device=like.device, dtype=torch.float32).view(shape)
        std = torch.tensor(self.vae.config.latents_std, device=like.device, dtype=torch.float32).view(shape)
        return mean, std

    # ---- VAE ------------------------------------------------------------------------------------------------

    def encode_video(self, video: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """[B,3,F,H,W] in [-1,1] → normalised latents [B,z,1+(F-1)/4,H/8,W/8] ((z - mean) / std, as Wan)."""
        vdtype = self.vae.dtype
        dist = self.vae.encode(video.to(vdtype)).latent_dist
        z = (dist.sample() if sample else dist.mode()).float()
        mean, std = self._stats(z)
        return (z - mean) / std

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents → video [B,3,F,H,W] in [-1,1]."""
        mean, std = self._stats(latents)
        z = latents.float() * std + mean
        return self.vae.decode(z.to(self.vae.dtype)).sample.float()

    # ---- conditions -----------------------------------------------------------------------------------------

    def encode_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """Condition video [B,C,F,H,W] → pose features on the latent grid [B,cond_dim,T,h,w]."""
        dtype = self.pose_encoder.out.weight.dtype
        return self.pose_encoder(cond.to(dtype))

    def encode_reference(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference image [B,3,H,W] → (normalised VAE latent [B,z,1,h,w], features [B,cond_dim,1,h,w])."""
        latent = self.encode_video(ref[:, :, None])
        feat = self.ref_encoder(ref.to(self.ref_encoder.out.weight.dtype))[:, :, None]
        return latent, feat

    # ---- denoiser -------------------------------------------------------------------------------------------

    def forward(self, latents: torch.Tensor, timestep: torch.Tensor, pose: torch.Tensor,
                ref_latent: torch.Tensor | None = None, ref_feat: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted flow velocity (noise - data) for the generated frames, [B,z,T,h,w], float32.

        ``latents``: noisy normalised latents [B,z,T,h,w]; ``timestep``: [B] in [0, 1000] (σ·1000); ``pose``:
        pose features [B,cond_dim,T,h,w] (zeros: no condition); ``ref_latent``/``ref_feat``: the reference frame
        (optional), prepended in time with timestep 0 for its tokens.
        """
        dtype = self.transformer.patch_embedding.weight.dtype
        B, _, T, h, w = latents.shape
        if pose.shape[2:] != latents.shape[2:]:
            raise GeneratorInputError(f"pose features {tuple(pose.shape[2:])} do not match the latent grid "
                                      f"{tuple(latents.shape[2:])}")
        x = torch.cat([latents.to(dtype), pose.to(dtype)], dim=1)
        timestep = timestep.reshape(-1).expand(B).float()
        if ref_latent is not None:
            if ref_feat is None:  # the latent alone: empty condition channels on the reference frame
                ref_feat = torch.zeros_like(pose[:, :, :1])
            ref = torch.cat([ref_latent.to(dtype), ref_feat.to(dtype)], dim=1)
            x = torch.cat([ref, x], dim=2)
            ph, pw = self.transformer.config.patch_size[1:]
            per_frame = (h // ph) * (w // pw)
            timestep = torch.cat([torch.zeros(B, per_frame, device=x.device),
                                  timestep[:, None].expand(B, T * per_frame)], dim=1)
        text = self.null_text.to(dtype).expand(B, -1, -1)
        out = self.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=text,
                               return_dict=False)[0]
        if ref_latent is not None:
            out = out[:, :, 1:]
        return out.float()

    # ---- saving / loading -----------------------------------------------------------------------------------

    def marker(self) -> dict:
        return {"architecture": ARCHITECTURE, "format_version": FORMAT_VERSION, "condition": self.condition,
                "config": self.config}

    def adapter_state(self) -> dict[str, torch.Tensor]:
        sd = {f"pose_encoder.{k}": v for k, v in self.pose_encoder.state_dict().items()}
        sd.update({f"ref_encoder.{k}": v for k, v in self.ref_encoder.state_dict().items()})
        sd["null_text"] = self.null_text.detach()
        return {k: v.detach().contiguous().cpu() for k, v in sd.items()}

    def save_pretrained(self, path: str | Path) -> Path:
        """Write the generator folder atomically (a complete new folder replaces ``path``)."""
        from safetensors.torch import save_file

        from headrep.io import atomic_dir

        path = Path(path)
        with atomic_dir(path) as tmp:
            self.transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
            self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
            (tmp / "scheduler").mkdir()
            (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(self.config["scheduler"], indent=2))
            save_file(self.adapter_state(), str(tmp / "adapters.safetensors"))
            (tmp / MARKER).write_text(json.dumps(self.marker(), indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> "HeadGenerator":
        """Load a folder written by :meth:`save_pretrained` (or a training folder holding one in ``model/``).

        GeneratorInputError for a folder of another architecture (a diffusers Wan base, another pipeline,
        a generator.json of another kind) or with missing/mismatched weights.
        """
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from safetensors.torch import load_file

        root = resolve_checkpoint(path)
        meta = json.loads((root / MARKER).read_text())
        transformer = _load_component(WanTransformer3DModel, root / "transformer", dtype)
        vae = _load_component(AutoencoderKLWan, root / "vae", None)
        model = cls(meta["config"], meta.get("condition", "normal_depth"), transformer=transformer, vae=vae)
        try:
            sd = load_file(str(root / "adapters.safetensors"))
        except Exception as exc:  # missing or damaged file
            raise GeneratorInputError(f"cannot read {root / 'adapters.safetensors'}: {exc}") from None
        model.null_text.data = sd.pop("null_text").to(model.null_text.dtype)
        try:
            for name in ("pose_encoder", "ref_encoder"):
                prefix = name + "."
                getattr(model, name).load_state_dict({k.removeprefix(prefix): v for k, v in sd.items()
                                                      if k.startswith(prefix)})
        except RuntimeError as exc:
            raise GeneratorInputError(f"{root}: the adapter weights do not fit the recorded config ({exc})") from None
        if dtype is not None:
            model.pose_encoder.to(dtype)
            model.ref_encoder.to(dtype)
            model.null_text.data = model.null_text.data.to(dtype)
        return model

    @classmethod
    def from_wan_base(cls, path: str | Path, condition: str = "normal_depth", dtype: torch.dtype | None = None,
                      adapters: str = "wan2.1-1.3b") -> "HeadGenerator":
        """Start from a local diffusers-format Wan2.1 T2V folder (model_index.json, transformer/, vae/,
        scheduler/; text_encoder/ and tokenizer/ are not read). The patch embedding gains zero-initialised
        condition channels; the adapters get the widths of the named config ``adapters``."""
        from diffusers import AutoencoderKLWan, WanTransformer3DModel

        root = check_wan_base(path)
        transformer = _load_component(WanTransformer3DModel, root / "transformer", dtype)
        vae = _load_component(AutoencoderKLWan, root / "vae", None)
        sched_file = root / "scheduler" / "scheduler_config.json"
        cfg = named_config(adapters)
        if sched_file.is_file():
            cfg["scheduler"] = {k: v for k, v in json.loads(sched_file.read_text()).items()
                                if k != "_diffusers_version"}
        cfg["name"] = f"wan-base:{root.name}"
        cfg["transformer"] = {k: v for k, v in dict(transformer.config).items() if not k.startswith("_")}
        cfg["transformer"]["_class_name"] = "WanTransformer3DModel"
        cfg["vae"] = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
        cfg["vae"]["_class_name"] = "AutoencoderKLWan"
        cfg["base"] = str(root)
        cfg["vae_trained"] = True
        return cls(cfg, condition, transformer=transformer, vae=vae)


def _load_component(klass, folder: Path, dtype):
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise GeneratorInputError(f"{folder} has no config.json (not a diffusers model folder)")
    name = json.loads(cfg_file.read_text()).get("_class_name")
    if name != klass.__name__:
        raise GeneratorInputError(f"{folder} holds a {name!r} model, not {klass.__name__} (another architecture)")
    try:
        kw = {"torch_dtype": dtype} if dtype is not None else {}
        return klass.from_pretrained(str(folder), local_files_only=True, **kw)
    except (OSError, ValueError, RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GeneratorInputError(f"cannot load {klass.__name__} from {folder}: {first}") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """The generator folder at ``path`` (or ``path/model``); GeneratorInputError naming what was found instead."""
    path = Path(path)
    if not path.exists():
        raise GeneratorInputError(f"checkpoint {path} does not exist")
    if not path.is_dir():
        raise GeneratorInputError(f"checkpoint {path} is not a folder")
    for root in (path, path / "model"):
        marker = root / MARKER
        if marker.is_file():
            try:
                meta = json.loads(marker.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise GeneratorInputError(f"{marker} is not valid JSON") from None
            if not isinstance(meta, dict) or meta.get("architecture") != ARCHITECTURE:
                got = meta.get("architecture") if isinstance(meta, dict) else None
                raise GeneratorInputError(f"{root} is a checkpoint of another architecture ({got!r}, expected "
                                          f"{ARCHITECTURE!r})")
            if int(meta.get("format_version", 0)) > FORMAT_VERSION:
                raise GeneratorInputError(f"{root} was written by a newer version (format "
                                          f"{meta.get('format_version')}); this one reads {FORMAT_VERSION}")
            return root
    if (path / "model_index.json").is_file():
        raise GeneratorInputError(f"{path} is a diffusers pipeline folder, not a generator checkpoint; to start "
                                  f"from a Wan2.1 base use `generator train --base {path}`")
    raise GeneratorInputError(f"{path} is not a generator checkpoint (no {MARKER}); make one with "
                              f"`generator init` or `generator train`")


def check_wan_base(path: str | Path) -> Path:
    """Check that ``path`` is a diffusers-format Wan2.1 text-to-video folder; returns it."""
    root = Path(path)
    index = root / "model_index.json"
    if not root.is_dir():
        raise GeneratorInputError(f"Wan base {root} is not a folder")
    if not index.is_file():
        if (root / MARKER).is_file() or (root / "model" / MARKER).is_file():
            raise GeneratorInputError(f"{root} is a generator checkpoint, not a Wan base; continue from it with "
                                      f"`generator train --init {root}`")
        raise GeneratorInputError(f"{root} has no model_index.json (not a diffusers-format Wan2.1 folder)")
    try:
        idx = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise GeneratorInputError(f"{index} is not valid JSON") from None
    pipe = idx.get("_class_name")
    tr = (idx.get("transformer") or [None, None])[1]
    vae = (idx.get("vae") or [None, None])[1]
    if tr != "WanTransformer3DModel" or vae != "AutoencoderKLWan":
        raise GeneratorInputError(f"{root} holds a {pipe} (transformer {tr}, vae {vae}); expected a Wan2.1 "
                                  f"pipeline with WanTransformer3DModel and AutoencoderKLWan")
    if idx.get("transformer_2") not in (None, [None, None]):
        raise GeneratorInputError(f"{root} is a two-expert Wan2.2 pipeline; only single-transformer Wan2.1 "
                                  f"T2V bases are supported")
    tcfg_file = root / "transformer" / "config.json"
    if tcfg_file.is_file():
        tcfg = json.loads(tcfg_file.read_text())
        if tcfg.get("image_dim") is not None or tcfg.get("in_channels", 16) != 16:
            raise GeneratorInputError(f"{root} is not a text-to-video Wan base (in_channels "
                                      f"{tcfg.get('in_channels')}, image_dim {tcfg.get('image_dim')}); "
                                      f"use Wan2.1-T2V")
    return root
