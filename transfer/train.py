"""Training the transfer model on per-identity sample dicts (`transfer.dataset`).

Adam on the mean squared offset error in millimetres over the face vertices; a held-out fraction of every
identity's frames for validation; deterministic for a given seed (torch's CPU kernels, one generator for the split,
the initialisation and the batches).
"""

from __future__ import annotations

import math

import torch

from .model import ExpressionEncoder, OffsetMLP, TransferModel


def _check(datasets: list[dict]) -> tuple[int, int]:
    if not datasets:
        raise ValueError("train: no datasets")
    nf, ne = datasets[0]["neutral"].shape[0], datasets[0]["expression"].shape[1]
    for i, d in enumerate(datasets):
        T = d["expression"].shape[0]
        if d["neutral"].shape != (nf, 3) or d["normals"].shape != (nf, 3) or d["target"].shape != (T, nf, 3):
            raise ValueError(f"train: dataset {i} has inconsistent shapes (face vertices {nf} expected)")
        if d["expression"].shape[1] != ne or d["jaw"].shape != (T, 3):
            raise ValueError(f"train: dataset {i} has expression/jaw of the wrong shape")
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
    T = dataset["expression"].shape[0]
    out = []
    for k in range(0, T, batch):
        e, j = dataset["expression"][k:k + batch].float(), dataset["jaw"][k:k + batch].float()
        B = e.shape[0]
        out.append(model(dataset["neutral"].float().expand(B, -1, -1), dataset["normals"].float().expand(B, -1, -1),
                         e, j))
    return torch.cat(out, 0)


def offset_error_mm(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean per-vertex Euclidean offset error in millimetres."""
    return float((pred.double() - target.double()).norm(dim=-1).mean() * 1e3)


@torch.no_grad()
def _eval_items(model, datasets, items, batch) -> dict:
    model.eval()
    se, dist, n = 0.0, 0.0, 0
    for k in range(0, len(items), batch):
        _, neutral, normals, e, j, target = _batch(datasets, items[k:k + batch])
        d = (model(neutral, normals, e, j) - target) * 1e3
        se += float((d ** 2).sum())
        dist += float(d.norm(dim=-1).sum())
        n += d.shape[0] * d.shape[1]
    return {"mse_mm2": se / max(1, 3 * n), "mean_mm": dist / max(1, n)}


def train(datasets: list[dict], epochs: int = 30, lr: float = 2e-3, batch: int = 8, seed: int = 0,
          val_fraction: float = 0.1, progress: bool | None = None, *, code: int = 32, hidden: int = 128,
          layers: int = 4, n_freq: int = 6, enc_hidden: int = 128, scale: float = 0.1,
          identity_features: bool = True, vertices_per_step: int | None = None,
          threads: int | None = None) -> tuple[TransferModel, dict]:
    """Train E and G on ``datasets`` (sample dicts with the same face vertices). Returns (model, history).

    history: {"train_mse_mm2": per epoch, "val_mse_mm2", "val_mean_mm": per epoch (when there are validation
    frames), "split": {"train": n, "val": n}, "config": the training settings}. The learning rate follows a
    cosine schedule to lr/20. ``vertices_per_step``: a random subset of that many face vertices per step (the
    same for the whole batch; faster on a CPU), None = all. ``identity_features=False``: the ablation (G sees the
    mean training neutral mesh instead of each identity's). ``progress``: print one line per epoch (None: only on
    a terminal). ``threads``: torch.set_num_threads for the run (restored afterwards).
    """
    import sys

    nf, ne = _check(datasets)
    progress = sys.stderr.isatty() if progress is None else progress
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        torch.manual_seed(int(seed))
        g = torch.Generator().manual_seed(int(seed))
        tr, va = split_frames(datasets, val_fraction, seed)
        if not tr:
            raise ValueError("train: no training frames after the validation split")
        centre = torch.stack([d["neutral"].float().mean(0) for d in datasets]).mean(0)
        tmpl_n = tmpl_m = None
        if not identity_features:
            tmpl_n = torch.stack([d["neutral"].float() for d in datasets]).mean(0)
            m = torch.stack([d["normals"].float() for d in datasets]).mean(0)
            tmpl_m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        E = ExpressionEncoder(ne, 3, code=code, hidden=enc_hidden)
        G = OffsetMLP(code=code, n_freq=n_freq, hidden=hidden, layers=layers)
        model = TransferModel(E, G, centre=centre.tolist(), scale=scale, identity_features=identity_features,
                              template_neutral=tmpl_n, template_normals=tmpl_m)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        steps_per_epoch = math.ceil(len(tr) / batch)
        total = max(1, epochs * steps_per_epoch)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        hist = {"train_mse_mm2": [], "val_mse_mm2": [], "val_mean_mm": [],
                "split": {"train": len(tr), "val": len(va)},
                "config": dict(epochs=epochs, lr=lr, batch=batch, seed=seed, val_fraction=val_fraction,
                               vertices_per_step=vertices_per_step, identity_features=identity_features)}
        for ep in range(epochs):
            model.train()
            order = torch.randperm(len(tr), generator=g).tolist()
            tot, cnt = 0.0, 0
            for k in range(0, len(order), batch):
                items = [tr[i] for i in order[k:k + batch]]
                _, neutral, normals, e, j, target = _batch(datasets, items)
                if vertices_per_step and vertices_per_step < nf:
                    vi = torch.randperm(nf, generator=g)[:vertices_per_step]
                    neutral, normals, target = neutral[:, vi], normals[:, vi], target[:, vi]
                if not identity_features and vertices_per_step and vertices_per_step < nf:
                    # the ablation's template is indexed by vertex: take the same subset of it
                    f = model.G.vertex_features((model.template_neutral[vi] - model.centre) / model.scale,
                                                model.template_normals[vi]).expand(len(items), -1, -1)
                    pred = model.G(f, model.E(e, j))
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
            if va:
                ev = _eval_items(model, datasets, va, 32)
                hist["val_mse_mm2"].append(ev["mse_mm2"])
                hist["val_mean_mm"].append(ev["mean_mm"])
            if progress:
                v = f"  val {hist['val_mean_mm'][-1]:.3f} mm" if va else ""
                print(f"transfer train: epoch {ep + 1}/{epochs}  train mse {hist['train_mse_mm2'][-1]:.4f} mm²{v}",
                      file=sys.stderr, flush=True)
        model.eval()
        return model, hist
    finally:
        torch.set_num_threads(old_threads)
