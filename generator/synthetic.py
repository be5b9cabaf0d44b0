"""Synthetic clips in the training-item format, for tests and benchmarks (no video, no fit needed).

A shaded sphere ("head") with two dark eyes moves over a coloured background. The condition is the sphere's
own camera-space normal map and depth, so the video is a function of the condition plus an identity (the
colours), as in the real data; the face mask is the sphere's disc.
"""

from __future__ import annotations

import math

import torch

from .config import condition_channels


def synthetic_clip(num_frames: int = 9, resolution: int = 64, seed: int = 0, condition: str = "normal_depth",
                   motion: float = 1.0) -> dict:
    """One item: ``video`` [3,F,H,W], ``cond`` [C,F,H,W], ``ref`` [3,H,W] (all in [-1,1]),
    ``face_mask`` [1,F,H,W] in {0,1}. ``seed`` picks the colours and the motion phase."""
    g = torch.Generator().manual_seed(seed)
    skin = torch.rand(3, generator=g) * 0.6 + 0.3
    bg_a, bg_b = torch.rand(3, generator=g), torch.rand(3, generator=g)
    phase = float(torch.rand(1, generator=g)) * 2 * math.pi
    R = resolution
    ys, xs = torch.meshgrid(torch.linspace(0, 1, R), torch.linspace(0, 1, R), indexing="ij")
    bg = bg_a.view(3, 1, 1) * (1 - ys) + bg_b.view(3, 1, 1) * ys
    video, normal, depth, mask = [], [], [], []
    light = torch.tensor([0.4, -0.5, 0.77])
    for t in range(num_frames):
        a = phase + motion * 2 * math.pi * t / max(1, num_frames)
        cx, cy, r = 0.5 + 0.18 * math.sin(a), 0.5 + 0.1 * math.cos(a), 0.28
        dx, dy = (xs - cx) / r, (ys - cy) / r
        d2 = dx ** 2 + dy ** 2
        inside = d2 < 1
        nz = torch.sqrt((1 - d2).clamp_min(0))
        n = torch.stack([dx, -dy, nz]) * inside
        shade = (n * light.view(3, 1, 1)).sum(0).clamp_min(0) * 0.8 + 0.2
        eyes = (((xs - (cx - 0.35 * r)) ** 2 + (ys - (cy - 0.2 * r)) ** 2) < (0.12 * r) ** 2) | \
               (((xs - (cx + 0.35 * r)) ** 2 + (ys - (cy - 0.2 * r)) ** 2) < (0.12 * r) ** 2)
        face = skin.view(3, 1, 1) * shade * (~eyes).float() + 0.05 * eyes.float()
        frame = torch.where(inside, face, bg)
        video.append(frame * 2 - 1)
        normal.append(n)
        depth.append(torch.where(inside, nz * 2 - 1, torch.full_like(nz, -1.0)))
        mask.append(inside.float())
    video = torch.stack(video, dim=1)
    normal, depth = torch.stack(normal, dim=1), torch.stack(depth, dim=0)[None]
    if condition_channels(condition) == 3:  # "landmarks" (3 channels): a stand-in, not drawn landmarks
        cond = torch.cat([normal[:2], depth], dim=0)
    else:
        cond = torch.cat([normal, depth], dim=0)
    return {"video": video.float(), "cond": cond.float(), "ref": video[:, 0].clone().float(),
            "face_mask": torch.stack(mask, dim=0)[None].float()}


class SyntheticClips(torch.utils.data.Dataset):
    """``n`` synthetic clips (seeds seed..seed+n-1), made once and held in memory."""

    def __init__(self, n: int = 1, num_frames: int = 9, resolution: int = 64, condition: str = "normal_depth",
                 seed: int = 0):
        self.items = [synthetic_clip(num_frames, resolution, seed + i, condition) for i in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]
