"""Training the transfer model on per-identity sample dicts (`transfer.dataset`).

Adam on the mean squared offset error in millimetres over the face vertices; a held-out fraction of every
identity's frames for validation; deterministic for a given seed (torch's CPU kernels, one generator for the split,
the initialisation and the batches).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import torch

from headrep.io import progress as progress_bar

from .errors import TransferError
from .model import ExpressionEncoder, OffsetMLP, TransferModel


@dataclass
class TrainConfig:
    """Training settings: the one source of their defaults (`transfer train` reads its option defaults here,
    and `--config FILE.json` sets any of them)."""

    epochs: int = 15            # on real fits longer training overfits held-out frames (benchmarks/expression_transfer.py)
    lr: float = 2e-3            # Adam, cosine-decayed to lr/20
    batch: int = 8              # frames per step
    seed: int = 0
    val_fraction: float = 0.1   # of each identity's frames, held out
    code: int = 32              # size of the expression code z
    hidden: int = 128           # width of G's hidden layers
    layers: int = 4
    n_freq: int = 6             # positional-encoding frequencies of G
    enc_hidden: int = 128
    scale: float = 0.1
    identity_features: bool = True   # False: the ablation (G sees a template instead of the identity)
    anchor_rest: bool = True
    vertices_per_step: int = 2048    # random face vertices per step (0 = all; faster on a CPU)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        """Fields from a JSON object file (any subset), then ``overrides``; unknown keys are an error."""
        from headrep.io import read_json_object

        d = read_json_object(path, "TrainConfig fields", TransferError)
        return with_overrides(cls(), {**d, **overrides}, str(path))


def with_overrides(cfg: TrainConfig, overrides: dict, where: str = "train()") -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TransferError(f"{where}: unknown TrainConfig key(s) {', '.join(unknown)}")
    return replace(cfg, **overrides)


def _check(datasets: list[dict]) -> tuple[int, int]:
    if not datasets:
        raise TransferError("transfer train: no training data (an empty list of reps)")
    nf, ne = datasets[0]["neutral"].shape[0], datasets[0]["expression"].shape[1]
    for i, d in enumerate(datasets):
        T = d["expression"].shape[0]
        if d["neutral"].shape != (nf, 3) or d["normals"].shape != (nf, 3) or d["target"].shape != (T, nf, 3):
            raise TransferError(f"transfer train: dataset {i} has inconsistent shapes (face vertices {nf} expected)")
        if d["expression"].shape[1] != ne or d["jaw"].shape != (T, 3):
            raise TransferError(f"transfer train: dataset {i} has expression/jaw of the wrong shape")
    return nf, ne


def split_frames(datasets: list[dict], val_fraction: float, seed: int) -> tuple[list, list]:
    """(train, val) lists of (dataset index, frame index); ``val_fraction`` of each identity's frames (at least
    one when the fraction is > 0 and the identity has ≥ 2 frames) go to validation, chosen by ``seed``."""
    g = torch.Generator().manual_seed(int(seed) + 7919)
    tr, va = [], []
    for i, d in enumerate(datasets):
        T = d["expression"].shape[0]
        perm = torch.randperm(T, generator=g).tolist()
        nv = int(round(val_fraction * T))
        if val_fraction > 0 and T >= 2:
            nv = max(1, min(T - 1, nv))
        va += [(i, t) for t in sorted(perm[:nv])]
        tr += [(i, t) for t in sorted(perm[nv:])]
    return tr, va


def _batch(datasets, items):
    di = torch.tensor([i for i, _ in items])
    neutral = torch.stack([datasets[i]["neutral"] for i, _ in items]).float()
    normals = torch.stack([datasets[i]["normals"] for i, _ in items]).float()
    expr = torch.stack([datasets[i]["expression"][t] for i, t in items]).float()
    jaw = torch.stack([datasets[i]["jaw"][t] for i, t in items]).float()
    target = torch.stack([datasets[i]["target"][t] for i, t in items]).float()
    return di, neutral, normals, expr, jaw, target


@torch.no_grad()
def predict(model: TransferModel, dataset: dict, batch: int = 32) -> torch.Tensor:
    """Offsets [T,Nf,3] (metres) for every frame of a sample dict."""
    model.eval()
    dev = next(model.parameters()).device
    T = dataset["expression"].shape[0]
    feats = model.features(dataset["neutral"].float()[None].to(dev), dataset["normals"].float()[None].to(dev))
    out = []
    for k in range(0, T, batch):
        e, j = dataset["expression"][k:k + batch].float().to(dev), dataset["jaw"][k:k + batch].float().to(dev)
        out.append(model.offsets(feats.expand(e.shape[0], -1, -1), e, j).cpu())
    return torch.cat(out, 0) if out else torch.zeros(0, dataset["neutral"].shape[0], 3)


def offset_error_mm(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean per-vertex Euclidean offset error in millimetres."""
    return float((pred.double() - target.double()).norm(dim=-1).mean() * 1e3)


@torch.no_grad()
def _eval_items(model, datasets, items, batch, device="cpu") -> dict:
    model.eval()
    se, dist, n = 0.0, 0.0, 0
    for k in range(0, len(items), batch):
        _, neutral, normals, e, j, target = (x.to(device) for x in _batch(datasets, items[k:k + batch]))
        d = (model(neutral, normals, e, j) - target) * 1e3
        se += float((d ** 2).sum())
        dist += float(d.norm(dim=-1).sum())
        n += d.shape[0] * d.shape[1]
    return {"mse_mm2": se / max(1, 3 * n), "mean_mm": dist / max(1, n)}


def _save_checkpoint(path: Path, state: dict) -> None:
    from headrep.io import atomic_write

    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def train(datasets: list[dict], config: TrainConfig | None = None, *, progress: bool | None = None,
          threads: int | None = None, device: str | torch.device = "cpu", checkpoint: str | Path | None = None,
          resume: bool = False, on_epoch: Callable[[int, dict], None] | None = None,
          **settings) -> tuple[TransferModel, dict]:
    """Train E and G on ``datasets`` (sample dicts with the same face vertices). Returns (model, history).

    ``config``: TrainConfig (defaults when None); keyword ``settings`` override its fields (``epochs=4``).

    history: {"train_mse_mm2": per epoch, "val_mse_mm2", "val_mean_mm": per epoch (when there are validation
    frames), "split": {"train": n, "val": n}, "config": the training settings, "seconds": training time}. The
    learning rate follows a cosine schedule to lr/20. ``vertices_per_step``: a random subset of that many face
    vertices per step (the same for the whole batch; faster on a CPU), None = all. ``identity_features=False``:
    the ablation (G sees the mean training neutral mesh instead of each identity's). ``progress``: a progress bar
    over epochs on stderr (None: on a terminal or with HEADREP_PROGRESS set). ``threads``: torch.set_num_threads
    for the run (restored afterwards). ``device``: where the model and batches live.

    ``checkpoint``: a file written (atomically) after every epoch with everything needed to continue: model,
    optimiser, schedule, the batch generator's state, the history. ``resume=True`` continues from it (the
    settings must be the ones it was written with) and gives the same weights as an uninterrupted run.
    ``on_epoch(epoch, history)`` is called after each epoch (and after the checkpoint is written).
    """
    import time

    cfg = with_overrides(config or TrainConfig(), settings)
    (epochs, lr, batch, seed, val_fraction, code, hidden, layers, n_freq, enc_hidden, scale, identity_features,
     anchor_rest) = (cfg.epochs, cfg.lr, cfg.batch, cfg.seed, cfg.val_fraction, cfg.code, cfg.hidden, cfg.layers,
                     cfg.n_freq, cfg.enc_hidden, cfg.scale, cfg.identity_features, cfg.anchor_rest)
    vertices_per_step = cfg.vertices_per_step or None
    nf, ne = _check(datasets)
    settings = dict(epochs=epochs, lr=lr, batch=batch, seed=seed, val_fraction=val_fraction, code=code,
                    hidden=hidden, layers=layers, n_freq=n_freq, enc_hidden=enc_hidden, scale=scale,
                    identity_features=identity_features, anchor_rest=anchor_rest,
                    vertices_per_step=vertices_per_step, num_face_vertices=nf, num_expression=ne,
                    frames=[int(d["expression"].shape[0]) for d in datasets])
    device = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(int(seed))
        g = torch.Generator().manual_seed(int(seed))
        tr, va = split_frames(datasets, val_fraction, seed)
        if not tr:
            raise TransferError("transfer train: no training frames left after the validation split")
        centre = torch.stack([d["neutral"].float().mean(0) for d in datasets]).mean(0)
        tmpl_n = tmpl_m = None
        if not identity_features:
            tmpl_n = torch.stack([d["neutral"].float() for d in datasets]).mean(0)
            m = torch.stack([d["normals"].float() for d in datasets]).mean(0)
            tmpl_m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        E = ExpressionEncoder(ne, 3, code=code, hidden=enc_hidden)
        G = OffsetMLP(code=code, n_freq=n_freq, hidden=hidden, layers=layers)
        model = TransferModel(E, G, centre=centre.tolist(), scale=scale, identity_features=identity_features,
                              template_neutral=tmpl_n, template_normals=tmpl_m, anchor_rest=anchor_rest).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(tr) / batch)
        total = max(1, epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        hist = {"train_mse_mm2": [], "val_mse_mm2": [], "val_mean_mm": [],
                "split": {"train": len(tr), "val": len(va)}, "config": settings, "seconds": 0.0}
        first = 0
        checkpoint = Path(checkpoint) if checkpoint is not None else None
        if resume:
            if checkpoint is None or not checkpoint.is_file():
                raise TransferError(f"transfer train: nothing to resume ({checkpoint} does not exist)")
            try:
                state = torch.load(checkpoint, map_location="cpu", weights_only=False)
            except Exception as exc:
                raise TransferError(f"transfer train: cannot read checkpoint {checkpoint}: {exc}") from None
            if state.get("settings") != settings:
                diff = sorted(k for k in set(settings) | set(state.get("settings", {}))
                              if settings.get(k) != state.get("settings", {}).get(k))
                raise TransferError(f"transfer train: checkpoint {checkpoint} was written with other settings "
                                    f"or data (differs in: {', '.join(diff)}); start again without --resume")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            g.set_state(state["generator"])
            hist = state["hist"]
            first = int(state["epoch"])
        t0 = time.perf_counter() - hist["seconds"]
        bar = progress_bar(None, epochs, "transfer train", "epoch", enabled=progress)
        bar.update(first)
        try:
            for ep in range(first, epochs):
                model.train()
                order = torch.randperm(len(tr), generator=g).tolist()
                tot, cnt = 0.0, 0
                for k in range(0, len(order), batch):
                    items = [tr[i] for i in order[k:k + batch]]
                    _, neutral, normals, e, j, target = _batch(datasets, items)
                    vi = None
                    if vertices_per_step and vertices_per_step < nf:
                        vi = torch.randperm(nf, generator=g)[:vertices_per_step]
                        neutral, normals, target = neutral[:, vi], normals[:, vi], target[:, vi]
                    neutral, normals, e, j, target = (x.to(device) for x in (neutral, normals, e, j, target))
                    if not identity_features and vi is not None:
                        # the ablation's template is indexed by vertex: take the same subset of it
                        vd = vi.to(device)
                        f = model.G.vertex_features((model.template_neutral[vd] - model.centre) / model.scale,
                                                    model.template_normals[vd]).expand(len(items), -1, -1)
                        pred = model.offsets(f, e, j)
                    else:
                        pred = model(neutral, normals, e, j)
                    loss = ((pred - target) * 1e3).pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    tot += float(loss.detach()) * len(items)
                    cnt += len(items)
                hist["train_mse_mm2"].append(tot / max(1, cnt))
                post = {"train_mm2": f"{hist['train_mse_mm2'][-1]:.4f}"}
                if va:
                    ev = _eval_items(model, datasets, va, 32, device)
                    hist["val_mse_mm2"].append(ev["mse_mm2"])
                    hist["val_mean_mm"].append(ev["mean_mm"])
                    post["val_mm"] = f"{ev['mean_mm']:.4f}"
                hist["seconds"] = time.perf_counter() - t0
                bar.set_postfix(post)
                bar.update(1)
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, {
                        "epoch": ep + 1, "settings": settings, "model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "generator": g.get_state(), "hist": hist})
                if on_epoch is not None:
                    on_epoch(ep + 1, hist)
        finally:
            bar.close()
        model.eval()
        return model, hist
    finally:
        torch.set_num_threads(old_threads)
