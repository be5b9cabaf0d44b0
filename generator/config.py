"""Named model sizes of the generator, and the real Wan2.1-T2V-1.3B-Diffusers component configs as data.

Why data here: ``generator init --config wan2.1-1.3b`` and the meta-device test must build the exact 1.3B
architecture without downloading anything, and ``from_wan_base`` checks a local folder against these values.
The ``WAN21_*`` dicts are the ``config.json`` files of the public ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``
repository (transformer/, vae/, scheduler/ and model_index.json), minus the ``_diffusers_version`` stamps.

A generator config is a plain JSON-able dict::

    {"name", "transformer": WanTransformer3DModel kwargs (in_channels = the base's 16, before expansion),
     "vae": AutoencoderKLWan kwargs, "scheduler": scheduler config with "_class_name",
     "pose_channels": widths of the 3D pose encoder, "ref_channels": widths of the 2D reference encoder,
     "cond_dim": channels both encoders add to the patch embedding, "text_len": tokens of the null text
     embedding, "num_frames", "resolution": the defaults used by train/animate}
"""

from __future__ import annotations

import copy

from .errors import GeneratorInputError

# Channels of each conditioning mode; must agree with generator.data.condition_channels.
CONDITION_CHANNELS = {"normal_depth": 4, "smplx_normal_depth": 4, "landmarks": 3}

WAN21_MODEL_INDEX = {
    "_class_name": "WanPipeline",
    "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    "text_encoder": ["transformers", "UMT5EncoderModel"],
    "tokenizer": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "WanTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLWan"],
}

WAN21_13B_TRANSFORMER = {
    "_class_name": "WanTransformer3DModel",
    "added_kv_proj_dim": None,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 8960,
    "freq_dim": 256,
    "image_dim": None,
    "in_channels": 16,
    "num_attention_heads": 12,
    "num_layers": 30,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 1024,
    "text_dim": 4096,
}

WAN21_VAE = {
    "_class_name": "AutoencoderKLWan",
    "attn_scales": [],
    "base_dim": 96,
    "dim_mult": [1, 2, 4, 4],
    "dropout": 0.0,
    "latents_mean": [-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                     0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921],
    "latents_std": [2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
    "z_dim": 16,
}

WAN21_SCHEDULER = {
    "_class_name": "UniPCMultistepScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "disable_corrector": [],
    "dynamic_thresholding_ratio": 0.995,
    "final_sigmas_type": "zero",
    "flow_shift": 3.0,
    "lower_order_final": True,
    "num_train_timesteps": 1000,
    "predict_x0": True,
    "prediction_type": "flow_prediction",
    "rescale_betas_zero_snr": False,
    "sample_max_value": 1.0,
    "solver_order": 2,
    "solver_p": None,
    "solver_type": "bh2",
    "steps_offset": 0,
    "thresholding": False,
    "timestep_spacing": "linspace",
    "trained_betas": None,
    "use_beta_sigmas": False,
    "use_exponential_sigmas": False,
    "use_flow_sigmas": True,
    "use_karras_sigmas": False,
}

_TINY = {
    "name": "tiny",
    "transformer": {
        "_class_name": "WanTransformer3DModel",
        "patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 16,
        "out_channels": 16, "text_dim": 32, "freq_dim": 32, "ffn_dim": 64, "num_layers": 2,
        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "eps": 1e-06, "image_dim": None,
        "added_kv_proj_dim": None, "rope_max_seq_len": 256,
    },
    "vae": {
        # Wan2.2's residual, patchified layout of AutoencoderKLWan, at 8× (patch 2 × two downsamples) instead of
        # Wan2.2's 16×: the parameter-free average-down / duplicate-up shortcuts let a random VAE learn a
        # latent-dependent reconstruction in a few hundred CPU steps (the Wan2.1 layout at this width needed
        # thousands), and the patchify makes each step ~4× cheaper
        "_class_name": "AutoencoderKLWan",
        "base_dim": 8, "z_dim": 16, "dim_mult": [1, 2, 2], "num_res_blocks": 1, "attn_scales": [],
        "temperal_downsample": [True, True], "dropout": 0.0, "is_residual": True, "patch_size": 2,
        "in_channels": 12, "out_channels": 12, "scale_factor_spatial": 8, "scale_factor_temporal": 4,
        # a random VAE has no latent statistics yet; training's VAE stage measures and stores them
        "latents_mean": [0.0] * 16, "latents_std": [1.0] * 16,
    },
    "scheduler": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 2.0},
    "pose_channels": [8, 16, 32],
    "ref_channels": [8, 16, 32],
    "cond_dim": 16,
    "text_len": 1,
    "num_frames": 9,
    "resolution": 64,
}

_WAN13B = {
    "name": "wan2.1-1.3b",
    "transformer": WAN21_13B_TRANSFORMER,
    "vae": WAN21_VAE,
    "scheduler": WAN21_SCHEDULER,
    "pose_channels": [16, 32, 64, 128],
    "ref_channels": [32, 64, 128, 256],
    "cond_dim": 16,
    # No text encoder: a learned null text embedding. An empty prompt through UMT5 is one end-of-sequence token
    # followed by zero padding (diffusers pads to 512); one learned token starting at zero starts from that
    # padding. A precomputed embedding (e.g. WanPipeline.encode_prompt("") saved once) can replace it:
    # HeadGenerator.set_null_text / `generator train --null-text FILE`.
    "text_len": 1,
    "num_frames": 33,
    "resolution": 480,
}

NAMED = {"tiny": _TINY, "wan2.1-1.3b": _WAN13B}


def named_config(name: str) -> dict:
    """A fresh copy of a named generator config ('tiny' or 'wan2.1-1.3b')."""
    if name not in NAMED:
        raise GeneratorInputError(f"unknown model config {name!r}; choose one of {', '.join(NAMED)}")
    return copy.deepcopy(NAMED[name])


def component_kwargs(cfg: dict) -> dict:
    """A diffusers config dict without the bookkeeping keys (``_class_name``, ``_diffusers_version``, ...)."""
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def condition_channels(mode: str) -> int:
    """Input channels of the pose encoder for a conditioning mode."""
    if mode not in CONDITION_CHANNELS:
        raise GeneratorInputError(f"unknown condition {mode!r}; choose one of {', '.join(CONDITION_CHANNELS)}")
    return CONDITION_CHANNELS[mode]


def latent_frames(num_frames: int) -> int:
    """Latent frames of an F-frame video: the causal VAE keeps the first frame and compresses the rest 4×."""
    if num_frames < 1 or (num_frames - 1) % 4:
        raise GeneratorInputError(f"the frame count must be 4k+1 (1, 5, 9, 17, 33, ...), got {num_frames}")
    return 1 + (num_frames - 1) // 4
