"""`headrep render-model`: every promised file, the stand-in recorded, the head facing the camera."""

import json

import numpy as np

from headrep.commands import main as cli
from headrep.io import read_video


def test_render_model_writes_everything(tmp_path):
    out = tmp_path / "rm"
    assert cli.main(["render-model", "-o", str(out), "--resolution", "96", "--frames", "5", "--subdiv", "0"]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {"neutral_normal.png", "neutral_depth.png", "expressive_normal.png", "expressive_depth.png",
                     "maps.npz", "turntable.mp4", "render_model.json", "expressions.png"}
    info = json.loads((out / "render_model.json").read_text())
    assert info["model"]["standin"] is True and "STAND-IN" in info["standin_notice"]
    maps = np.load(out / "maps.npz")
    mask = maps["neutral_mask"] > 0.5
    assert 0.1 < mask.mean() < 0.9
    centre = maps["neutral_normal"][48, 48]
    assert centre[2] < -0.8  # the face looks at the camera (OpenCV: n_z < 0)
    # the expressive head differs around the mouth, not on the crown
    diff = np.abs(maps["expressive_depth_m"] - maps["neutral_depth_m"])
    assert diff[60:80].max() > 1e-3 and diff[:15].max() < 1e-4
    frames = [f for _, f in read_video(out / "turntable.mp4")]
    assert len(frames) == 5 and frames[0].shape == (96, 192, 3)
    # refusing a non-empty folder, leaving it as it was
    assert cli.main(["render-model", "-o", str(out)]) == 2
    assert (out / "turntable.mp4").exists()
