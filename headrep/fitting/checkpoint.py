"""The fitter's checkpoint: every unknown, the stage and how far it got, optimiser states, the configuration
and the model file's sha256 (a resume with another configuration or another model -- e.g. the default model
changed since the run began -- is refused). The fitter writes nothing else."""

from __future__ import annotations

from pathlib import Path

import torch

from headrep.errors import HeadrepError
from headrep.io import atomic_write

FILE = "fit.pt"


class Checkpoints:
    """Checkpoints in ``folder`` (None: none are written)."""

    def __init__(self, folder: Path | None, every: int):
        self.folder = Path(folder) if folder is not None else None
        self.every = every

    def due(self, step: int) -> bool:
        return self.folder is not None and bool(self.every) and (step + 1) % self.every == 0

    def save(self, fitter, stage: str, progress: int, **extra) -> None:
        if self.folder is None:
            return
        payload = {"stage": stage, "progress": progress, "params": fitter.params.state(),
                   "config": fitter.cfg.to_dict(), "model_sha256": _model_sha256(fitter), "stats": fitter.stats,
                   **extra}
        with atomic_write(self.folder / FILE) as tmp:
            torch.save(payload, tmp)

    def load(self, fitter) -> dict | None:
        """The saved checkpoint (its unknowns loaded into the fitter), or None when there is none."""
        path = None if self.folder is None else self.folder / FILE
        if path is None or not path.exists():
            return None
        ck = torch.load(path, weights_only=False)
        if ck["config"] != fitter.cfg.to_dict():
            raise HeadrepError(f"checkpoint {path} was made with another configuration; "
                               "rerun with the same options or use --overwrite to start afresh")
        made, now = ck.get("model_sha256"), _model_sha256(fitter)
        if made is not None and now is not None and made != now:
            raise HeadrepError(f"checkpoint {path} was made with another model file (sha256 {made[:12]}…, this run's "
                               f"is {now[:12]}…); rerun with the --model it began with, or use --overwrite to start "
                               "afresh")
        fitter.params.load_state(ck["params"])
        fitter.stats = ck.get("stats", {})
        return ck


def _model_sha256(fitter) -> str | None:
    body = getattr(getattr(fitter, "scene", None), "body", None)
    return getattr(body, "sha256", None)
