"""Identity-adaptive expression transfer (ExpPortrait §3.2): an expression encoder and a vertex-wise geometry MLP.

    z_t        = E(ψ_t, θ_jaw,t)                                   expression code [B, code]
    D_dyn,t(v) = G( PE(n(x_v)), normal_v, z_t )                     offset of face vertex v [B, Nf, 3] (metres)

x_v is vertex v's position on the target identity's neutral dense mesh (U·M(β) + D_static, i.e.
``HeadRep.neutral_vertices()``) in model space (metres), normal_v its unit normal there. Because G sees the
identity's own neutral geometry, the same expression code gives identity-specific detail (wrinkles that sit where
*this* forehead is, …) instead of one person's offsets copied by vertex index ("direct").

Position normalisation (the "head scale"): n(x) = (x − centre) / scale with ``centre`` a fixed point in model space
(by default the mean neutral face vertex of the training identities, recorded in the config at training time, the
same for every identity so that identities keep their differences) and ``scale`` = 0.1 m (half a head height), so
face positions land in about [−1, 1].

Rest anchoring (``anchor_rest``, on by default): the model returns G(·, z_t) − G(·, z_rest) with z_rest = E(0, 0),
so an expression at rest (ψ = 0, jaw closed) gets exactly zero detail and a driven face at rest is exactly the
target's neutral face; the subtraction is part of the model in training as well.

``identity_features=False`` builds the ablation: G is fed a fixed template neutral mesh and normals (buffers)
instead of the identity's own — it still knows *which* vertex it is evaluating, but not whose face it is.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

FORMAT = "headrep-transfer-model/1"


def positional_encoding(x: torch.Tensor, n_freq: int) -> torch.Tensor:
    """NeRF-style encoding of x [..., d] (already normalised, ~[−1, 1]) -> [..., d + 2·d·n_freq]:
    [x, sin(2^0 π x), cos(2^0 π x), …, sin(2^(n−1) π x), cos(2^(n−1) π x)], frequency-major (each block is d wide).
    """
    if n_freq <= 0:
        return x
    freqs = (2.0 ** torch.arange(n_freq, dtype=x.dtype, device=x.device)) * torch.pi   # [n]
    xf = x[..., None, :] * freqs[:, None]                                             # [..., n, d]
    enc = torch.stack([torch.sin(xf), torch.cos(xf)], -2)                             # [..., n, 2, d]
    return torch.cat([x, enc.flatten(-3)], -1)


def _mlp(dims: list[int], act=nn.SiLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class ExpressionEncoder(nn.Module):
    """E: (ψ [B,ne], jaw axis-angle [B,jaw_dims]) -> z [B,code]. The jaw is multiplied by ``jaw_scale`` (its
    angles are ~0.1–0.3 rad; ψ is ~unit scale)."""

    def __init__(self, ne: int, jaw_dims: int = 3, code: int = 32, hidden: int = 128, jaw_scale: float = 5.0):
        super().__init__()
        self.config = dict(ne=int(ne), jaw_dims=int(jaw_dims), code=int(code), hidden=int(hidden),
                           jaw_scale=float(jaw_scale))
        self.jaw_scale = float(jaw_scale)
        self.net = _mlp([ne + jaw_dims, hidden, hidden, code])

    def forward(self, expression: torch.Tensor, jaw: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([expression, jaw * self.jaw_scale], -1))


class OffsetMLP(nn.Module):
    """G: per-vertex [PE(normalised neutral position), normal] ⊕ z -> 3D offset (metres).

    ``layers`` linear layers (``layers − 1`` hidden of width ``hidden``). The network works in millimetres: its
    raw output is multiplied by ``out_scale`` = 1e-3, and the last layer starts small (weights ×0.1, bias 0) so an
    untrained model predicts offsets of a fraction of a millimetre.
    """

    def __init__(self, code: int = 32, n_freq: int = 6, hidden: int = 128, layers: int = 4, out_scale: float = 1e-3):
        super().__init__()
        self.config = dict(code=int(code), n_freq=int(n_freq), hidden=int(hidden), layers=int(layers),
                           out_scale=float(out_scale))
        self.n_freq = int(n_freq)
        self.out_scale = float(out_scale)
        self.feat_dim = 3 + 6 * self.n_freq + 3
        self.net = _mlp([self.feat_dim + code] + [hidden] * (layers - 1) + [3])
        last = self.net[-1]
        with torch.no_grad():
            last.weight.mul_(0.1)
            last.bias.zero_()

    def vertex_features(self, pos_normalised: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        return torch.cat([positional_encoding(pos_normalised, self.n_freq), normals], -1)

    def forward(self, features: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """features [B,Nf,feat_dim], z [B,code] -> offsets [B,Nf,3] metres."""
        zb = z[:, None, :].expand(-1, features.shape[1], -1)
        return self.net(torch.cat([features, zb], -1)) * self.out_scale


class TransferModel(nn.Module):
    """E and G together: ``forward(neutral [B,Nf,3], normals [B,Nf,3], expression [B,ne], jaw [B,3])`` ->
    offsets [B,Nf,3] (metres, canonical space, on the face vertices given)."""

    def __init__(self, E: ExpressionEncoder, G: OffsetMLP, centre=(0.0, 0.0, 0.0), scale: float = 0.1,
                 identity_features: bool = True, template_neutral: torch.Tensor | None = None,
                 template_normals: torch.Tensor | None = None, anchor_rest: bool = True):
        super().__init__()
        self.E, self.G = E, G
        self.anchor_rest = bool(anchor_rest)
        self.training_info: dict | None = None   # what `save(training=...)` recorded / `load` read back
        self.identity_features = bool(identity_features)
        self.scale = float(scale)
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32).reshape(3))
        if not self.identity_features:
            if template_neutral is None or template_normals is None:
                raise ValueError("identity_features=False needs template_neutral and template_normals [Nf,3]")
            self.register_buffer("template_neutral", torch.as_tensor(template_neutral, dtype=torch.float32))
            self.register_buffer("template_normals", torch.as_tensor(template_normals, dtype=torch.float32))

    @property
    def config(self) -> dict:
        return {"format": FORMAT, "encoder": self.E.config, "offset_mlp": self.G.config,
                "centre": [float(c) for c in self.centre.tolist()], "scale": self.scale,
                "identity_features": self.identity_features, "anchor_rest": self.anchor_rest,
                "num_face_vertices": (int(self.template_neutral.shape[0]) if not self.identity_features else None)}

    def features(self, neutral: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
        """Per-vertex features [B,Nf,feat_dim] (the ablation swaps in the template)."""
        if not self.identity_features:
            if neutral.shape[-2] != self.template_neutral.shape[0]:
                raise ValueError(f"this model was trained without identity features on {self.template_neutral.shape[0]} "
                                 f"face vertices, got {neutral.shape[-2]}")
            neutral = self.template_neutral.to(neutral.dtype).expand_as(neutral)
            normals = self.template_normals.to(normals.dtype).expand_as(normals)
        pos = (neutral - self.centre.to(neutral.dtype)) / self.scale
        return self.G.vertex_features(pos, normals)

    def forward(self, neutral: torch.Tensor, normals: torch.Tensor, expression: torch.Tensor,
                jaw: torch.Tensor) -> torch.Tensor:
        return self.offsets(self.features(neutral, normals), expression, jaw)

    def offsets(self, features: torch.Tensor, expression: torch.Tensor, jaw: torch.Tensor) -> torch.Tensor:
        """G on precomputed vertex features [B,Nf,feat_dim] (rest-anchored when ``anchor_rest``)."""
        out = self.G(features, self.E(expression, jaw))
        if self.anchor_rest:
            z0 = self.E(expression.new_zeros(1, expression.shape[-1]), jaw.new_zeros(1, jaw.shape[-1]))
            out = out - self.G(features, z0.expand(features.shape[0], -1))
            # exactly at rest the difference is float rounding (~1e-8 m): make it the exact zero it stands for
            rest = (expression == 0).all(-1) & (jaw == 0).all(-1)
            out = torch.where(rest[:, None, None], torch.zeros_like(out), out)
        return out

    # --- persistence ----------------------------------------------------------------------------------------
    def save(self, path: str | Path, training: dict | None = None) -> Path:
        """One safetensors file, written atomically: the state dict, with the config as JSON in its metadata
        ("config") and, when given, what it was trained on ("training": reps, topology, settings, history)."""
        from safetensors.torch import save_file

        from headrep.io import atomic_write

        path = Path(path)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"config": json.dumps(self.config)}
        if training is not None:
            meta["training"] = json.dumps(training)
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        self.training_info = training
        return path

    @classmethod
    def from_config(cls, config: dict, state: dict | None = None) -> "TransferModel":
        if config.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} config: format={config.get('format')!r}")
        E = ExpressionEncoder(**config["encoder"])
        G = OffsetMLP(**config["offset_mlp"])
        tn = tm = None
        if not config["identity_features"]:
            n = int(config["num_face_vertices"])
            tn = state["template_neutral"] if state is not None else torch.zeros(n, 3)
            tm = state["template_normals"] if state is not None else torch.zeros(n, 3)
        model = cls(E, G, centre=config["centre"], scale=config["scale"],
                    identity_features=config["identity_features"], template_neutral=tn, template_normals=tm,
                    anchor_rest=config.get("anchor_rest", False))
        if state is not None:
            model.load_state_dict(state)
        return model

    @classmethod
    def load(cls, path: str | Path) -> "TransferModel":
        """Read a saved model; ``training_info`` holds its "training" metadata (or None). A missing, corrupt or
        foreign file raises TransferError naming it."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        from .errors import TransferError

        path = Path(path)
        if not path.is_file():
            raise TransferError(f"transfer model {path}: no such file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            config = json.loads(meta["config"]) if "config" in meta else None
            if config is None or config.get("format") != FORMAT:
                raise TransferError(f"transfer model {path}: not a {FORMAT} file (no transfer-model config in its "
                                    f"metadata)")
            model = cls.from_config(config, load_file(str(path))).eval()
            model.training_info = json.loads(meta["training"]) if "training" in meta else None
        except TransferError:
            raise
        except Exception as exc:  # safetensors / json / state-dict errors: the file is damaged
            raise TransferError(f"transfer model {path}: cannot read it ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else 'corrupt file'})") from None
        return model
