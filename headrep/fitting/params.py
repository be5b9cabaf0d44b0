"""The fitted unknowns as one container, and the per-row optimiser the detail stage needs."""

from __future__ import annotations

import math

import numpy as np
import torch

#: per-frame unknowns of the coarse stage (rows = frames)
POSE_AND_EXPRESSION = ("expression", "jaw", "neck", "rot", "tau")


class RowAdam:
    """Adam over the rows (frames) of a tensor: only the rows in a step's batch are updated.

    torch's Adam would keep moving rows that got no gradient on their stale momentum.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.p, self.lr, self.b1, self.b2, self.eps = param, lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(param)
        self.v = torch.zeros_like(param)
        self.t = torch.zeros(param.shape[0], dtype=torch.float64)

    @torch.no_grad()
    def step(self, rows: torch.Tensor) -> None:
        g = self.p.grad
        if g is None:
            return
        g = g[rows]
        self.t[rows] += 1
        t = self.t[rows].to(g.dtype).view(-1, *([1] * (g.dim() - 1)))
        self.m[rows] = self.b1 * self.m[rows] + (1 - self.b1) * g
        self.v[rows] = self.b2 * self.v[rows] + (1 - self.b2) * g * g
        mh = self.m[rows] / (1 - self.b1 ** t)
        vh = self.v[rows] / (1 - self.b2 ** t)
        self.p[rows] -= self.lr * mh / (vh.sqrt() + self.eps)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, d: dict) -> None:
        self.m.copy_(d["m"]), self.v.copy_(d["v"]), self.t.copy_(d["t"])


def interpolate_invalid(x: torch.Tensor, valid: np.ndarray) -> torch.Tensor:
    """Linear interpolation of per-frame rows x [T,...] at invalid frames from the valid ones."""
    if valid.all() or not valid.any():
        return x
    t = np.arange(len(valid))
    flat = x.detach().reshape(len(valid), -1).cpu().numpy()
    out = flat.copy()
    for c in range(flat.shape[1]):
        out[~valid, c] = np.interp(t[~valid], t[valid], flat[valid, c])
    return torch.as_tensor(out, dtype=x.dtype).view_as(x)


class FitParams:
    """Every unknown of a fit. Shared: ``betas``, ``log_focal``, ``static`` (D_static [Nd,3]) and, when the
    photometric term is on, ``albedo`` [Nd,C]. Per frame (rows): ``expression``, ``jaw``, ``neck``, ``rot``,
    ``tau`` (head rotation/translation, see Scene.transl), ``dynamic`` (D_dyn [T,Nf,3] on the face
    vertices), ``light`` (SH coefficients [T,9,C]) and ``swing`` (the hanging hair's swing [T,3], axis-angle;
    see headrep.model.head)."""

    SHARED = ("log_focal", "betas", "static", "albedo")
    PER_FRAME = POSE_AND_EXPRESSION + ("dynamic", "light", "swing")

    def __init__(self, T: int, num_betas: int, num_expression: int, num_dense: int, num_face: int, focal: float,
                 channels: int = 3):
        self.log_focal = torch.tensor(math.log(focal), dtype=torch.float32)
        self.betas = torch.zeros(num_betas)
        self.expression = torch.zeros(T, num_expression)
        self.jaw = torch.zeros(T, 3)
        self.neck = torch.zeros(T, 3)
        self.rot = torch.zeros(T, 3)
        self.tau = torch.zeros(T, 3)
        self.static = torch.zeros(num_dense, 3)
        self.dynamic = torch.zeros(T, num_face, 3)
        self.albedo = torch.full((num_dense, channels), 0.5)
        self.light = torch.zeros(T, 9, channels)
        self.swing = torch.zeros(T, 3)

    @property
    def names(self) -> tuple[str, ...]:
        return self.SHARED + self.PER_FRAME

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.names:
            raise KeyError(name)
        return getattr(self, name)

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        if name not in self.names:
            raise KeyError(name)
        setattr(self, name, value)

    def view(self, idx: torch.Tensor) -> dict:
        """The unknowns a step over frames ``idx`` sees (per-frame rows indexed; autograd flows back)."""
        v = {n: self[n] for n in ("betas", "static", "albedo")}
        v.update({n: self[n][idx] for n in self.PER_FRAME})
        v["focal"] = self.log_focal.exp()
        return v

    def requires_grad(self, names, flag: bool = True) -> list[torch.Tensor]:
        out = [self[n] for n in names]
        for x in out:
            x.requires_grad_(flag)
        return out

    @torch.no_grad()
    def fill_invalid(self, names, valid: np.ndarray) -> None:
        """Per-frame rows of ``names`` at invalid frames become the interpolation of the valid ones."""
        for n in names:
            self[n] = interpolate_invalid(self[n], valid)

    def state(self) -> dict:
        return {n: self[n].detach().clone() for n in self.names}

    def load_state(self, state: dict) -> None:
        for n, v in state.items():
            self[n] = v.clone()
