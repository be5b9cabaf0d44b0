"""One device policy for every command: ``--device auto|cpu|cuda`` (auto = CUDA when torch sees a GPU)."""

from __future__ import annotations

import torch

from headrep.errors import HeadrepError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEVICE_HELP = "compute device: auto (CUDA when present, else CPU), cpu, or cuda"


def resolve_device(device: str | torch.device = "auto", error=HeadrepError) -> torch.device:
    """torch.device for "auto" / "cpu" / "cuda[:N]"; ``error`` (a HeadrepError subclass, so a package can raise
    its own) when CUDA is asked for and torch sees no GPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise error("--device cuda was asked for, but torch sees no CUDA GPU here (use --device cpu or auto)")
    return dev
