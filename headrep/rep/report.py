"""The human-readable description of a HeadRep (what `headrep info` prints and notebooks show)."""

from __future__ import annotations

import json


def swing_summary(rep) -> str | None:
    """How far a rep's hanging hair swings over its frames ("swings 15° median, 29° at most"), or None when it
    has no swing (fitted without hanging hair, before the swing, or with lr_swing 0)."""
    swing = rep.tensors.get("hair_swing")
    if swing is None or not swing.numel():
        return None
    deg = swing.float().norm(dim=-1).rad2deg()
    return f"swings {float(deg.quantile(0.5)):.0f}° median, {float(deg.max()):.0f}° at most"


def describe(rep) -> str:
    """Human-readable description of a HeadRep (what `headrep info` prints)."""
    m, src, topo, fit = rep.meta["model"], rep.meta["source"], rep.meta["topology"], rep.meta.get("fit", {})
    T, nv = rep.num_frames, int(rep.valid.sum())
    lines = [f"HeadRep {rep.path if rep.path else '(not saved)'}",
             f"  format        {rep.meta['format']} v{rep.meta['version']}, created {rep.meta.get('created')}"]
    if m["standin"]:
        lines.append("  !!! STAND-IN (not SMPL-X): fitted with headrep's procedural stand-in model; "
                     "these are not SMPL-X results !!!")
    size = src.get("image_size")
    lines += [
        f"  source        {src.get('path')} ({src.get('kind')}, {src.get('fps')} fps"
        + (f", {size[1]}x{size[0]} loaded" if size else "")
        + (f", scale {src.get('scale')}" if src.get("scale") not in (None, 1, 1.0) else "")
        + (f", {src.get('num_frames')} frames" if src.get("num_frames") is not None else "") + ")",
        f"  frames        {T} fitted, {nv} valid ({T - nv} invalid)"
        + (f", source frames {int(rep.frames[0])}..{int(rep.frames[-1])} step {rep.stride}" if T else ""),
        f"  model         {m.get('model_name')}: {m['model_path']}",
        f"                sha256 {m['model_sha256']}, {m['num_betas']} betas, "
        f"{m['num_expression']} expression coefficients",
        f"  topology      levels {topo['levels']}, {topo['num_dense']} dense vertices, "
        f"{topo['num_face_vertices']} face vertices, hash {str(topo['hash'])[:16]}…",
        f"  crop          {rep.resolution}x{rep.resolution} px, focal {rep.focal:.1f} px (loaded frame), "
        f"principal ({rep.principal[0]:.1f}, {rep.principal[1]:.1f})",
    ]
    if T:
        ds = rep.tensors["dynamic_offsets"].norm(dim=-1)
        so = rep.tensors["static_offsets"].norm(dim=-1)
        lines.append(f"  offsets       static max {1e3 * float(so.max()):.2f} mm / mean "
                     f"{1e3 * float(so.mean()):.2f} mm"
                     + (f"; dynamic (face) max {1e3 * float(ds.max()):.2f} mm" if ds.numel() else ""))
    if T and topo.get("hair_hangs"):
        swing = swing_summary(rep)
        lines.append("  hair          hangs below the ears" + ("" if swing is None else f"; {swing}"))
    lines.append(f"  landmarks     {'stored (478 MediaPipe points per frame)' if rep.landmarks is not None else 'none'}")
    stats = fit.get("stats") or {}
    cfg = {k: v for k, v in fit.items() if k not in ("stats", "seed")}
    lines.append(f"  fit           seed {fit.get('seed')}"
                 + (f"; config {json.dumps(cfg, sort_keys=True)[:300]}" if cfg else ""))
    for k, v in stats.items():
        lines.append(f"    {k:24s} {json.dumps(v) if not isinstance(v, str) else v}"[:200])
    vers = rep.meta.get("versions", {})
    if vers:
        lines.append("  versions      " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    if rep.path is not None and rep.path.is_dir():
        lines.append("  files")
        for f in sorted(rep.path.iterdir()):
            if f.name.startswith("."):
                continue
            if f.is_dir():
                files = [g for g in f.rglob("*") if g.is_file()]
                lines.append(f"    {f.name + '/':24s} {_human(sum(g.stat().st_size for g in files))} "
                             f"({len(files)} files)")
            else:
                lines.append(f"    {f.name:24s} {_human(f.stat().st_size)}")
    return "\n".join(lines)


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
