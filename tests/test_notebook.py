"""notebooks/explore_headrep.ipynb: committed without outputs, and runs end to end headless.

The notebook is executed with nbclient in a fresh ipykernel running *this* interpreter (the venv's python),
on a small synthetic HeadRep (``make_synthetic_rep``: no fit, and its source video does not exist, so the
notebook's missing-source path runs too). A slow test runs the notebook's own fallback: with no rep at
``HEADREP_REP`` it fits one from the sample video.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "explore_headrep.ipynb"
SYNTH_T = 8
SYNTH_INVALID = (2, 5)


def _private_kernelspec(folder: Path) -> Path:
    """A JUPYTER_PATH folder whose "python3" kernel is this interpreter (it takes precedence over any
    user-level python3 kernelspec that might point at another python)."""
    kdir = folder / "kernels" / "python3"
    kdir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (headrep test)", "language": "python"}
    (kdir / "kernel.json").write_text(json.dumps(spec))
    return folder


def execute_notebook(tmp: Path, rep_path: Path, monkeypatch, interactive: bool = False):
    """Run the notebook (plus one cell reporting the kernel's interpreter) in ``tmp``; return it executed.

    The kernel inherits the environment: HEADREP_REP selects the rep, TMPDIR keeps the PLY export in ``tmp``.
    nbclient raises CellExecutionError (with the traceback) if any cell fails.
    """
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import sys as _s; print('KERNEL-PYTHON', _s.executable)"))
    work = tmp / "work"
    (tmp / "tmpdir").mkdir()
    work.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(_private_kernelspec(tmp / "jupyter")))
    monkeypatch.setenv("HEADREP_REP", str(rep_path))
    monkeypatch.setenv("HEADREP_INTERACTIVE", "1" if interactive else "0")
    monkeypatch.setenv("TMPDIR", str(tmp / "tmpdir"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must use the inline backend (PNG outputs)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()
    return nb


def outputs(nb, kind: str) -> list:
    """All outputs of code cells: kind "stream" -> texts, or a MIME type -> the data of that type."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if kind == "stream" and out.output_type == "stream":
                found.append(out.text)
            elif kind != "stream" and kind in out.get("data", {}):
                found.append(out["data"][kind])
    return found


# ----------------------------------------------------------------------------------------------------------


def test_notebook_is_committed_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 6
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"code cell {i} holds outputs: clear them before committing"
        assert cell.execution_count is None, f"code cell {i} has an execution count: clear outputs"
    assert "HEADREP_REP" in code[0].source


@pytest.fixture(scope="module")
def executed(tmp_path_factory, body):
    import torch

    from headrep.fitting.synthetic import make_synthetic_rep
    from headrep.model.head import DenseHead
    from headrep.rep import HeadRep

    tmp = tmp_path_factory.mktemp("notebook")
    head = DenseHead(body, levels=1, hair_hangs=True)
    rep = make_synthetic_rep(body, head, T=SYNTH_T, seed=3, invalid=SYNTH_INVALID)
    t = dict(rep.tensors)   # hair that swings 10° about the viewing axis and back
    t["hair_swing"] = torch.zeros(SYNTH_T, 3)
    t["hair_swing"][:, 2] = np.radians(10) * torch.sin(torch.linspace(0, np.pi, SYNTH_T))
    rep = HeadRep.create(body, head, t, rep.source, rep.resolution, rep.meta["fit"])
    rep_path = rep.save(tmp / "synthetic.rep")
    mp = pytest.MonkeyPatch()
    try:
        nb = execute_notebook(tmp, rep_path, mp, interactive=True)
    finally:
        mp.undo()
    return nb, tmp, head.num_vertices


def test_notebook_runs_in_this_python(executed):
    nb, _, _ = executed
    text = "".join(outputs(nb, "stream"))
    line = next(ln for ln in text.splitlines() if ln.startswith("KERNEL-PYTHON"))
    assert Path(line.split(" ", 1)[1]).resolve() == Path(sys.executable).resolve()


def test_notebook_summary_and_standin_warning(executed):
    nb, tmp, _ = executed
    text = "".join(outputs(nb, "stream"))
    assert f"frames        {SYNTH_T} fitted, {SYNTH_T - len(SYNTH_INVALID)} valid" in text
    assert "STAND-IN" in text                                  # from rep.summary()
    assert "static_offsets   [" in text                        # the tensor table
    assert any("STAND-IN MODEL, NOT SMPL-X" in md for md in outputs(nb, "text/markdown"))
    assert "source" in text and "is missing" in text           # the synthetic rep has no source video


def test_notebook_figures(executed):
    nb, _, _ = executed
    import base64
    import io

    from PIL import Image

    pngs = outputs(nb, "image/png")
    assert len(pngs) >= 3                                      # renders, heat maps, curves
    for data in pngs:
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
        assert img.shape[0] > 200 and img.shape[1] > 400
        assert img.std() > 5                                   # not a blank canvas
    text = "".join(outputs(nb, "stream"))
    assert "|D_static|: max" in text and "|D_dyn| frame" in text
    deg = np.degrees(np.sin(np.linspace(0, np.pi, SYNTH_T)) * np.radians(10))
    assert f"swings {np.median(deg):.0f}° median, {deg.max():.0f}° at most" in text


def test_notebook_interactive_view(executed):
    nb, _, _ = executed
    html = outputs(nb, "text/html")
    assert html and max(len(h) for h in html) > 100_000         # trimesh's embedded three.js viewer


def test_notebook_exports_ply(executed):
    import trimesh

    nb, tmp, num_vertices = executed
    plys = sorted((tmp / "tmpdir").glob("headrep-ply-*/frame_*.ply"))
    assert len(plys) == 1
    assert (plys[0].parent / "neutral.ply").is_file()
    mesh = trimesh.load(plys[0], process=False)
    assert len(mesh.vertices) == num_vertices
    colours = np.asarray(mesh.visual.vertex_colors)
    assert colours.shape == (num_vertices, 4) and len(np.unique(colours[:, :3], axis=0)) > 10


@pytest.mark.slow
def test_notebook_fits_a_rep_when_none_exists(tmp_path, monkeypatch):
    """With nothing at HEADREP_REP, the first cell fits 24 frames of the sample video with `fit_video`."""
    from headrep.errors import HeadrepError
    from headrep.samples import sample_path

    try:
        sample_path("WolfgangLanger_Pexels.mp4")
    except HeadrepError as exc:
        pytest.skip(f"sample video unavailable (offline?): {exc}")
    rep_path = tmp_path / "fitted"
    nb = execute_notebook(tmp_path, rep_path, monkeypatch)
    text = "".join(outputs(nb, "stream"))
    assert "fitting 24 frames of WolfgangLanger_Pexels.mp4" in text and (rep_path / "rep.json").is_file()
    assert "frames        24 fitted" in text
    assert len(outputs(nb, "image/png")) >= 3


@pytest.mark.slow
def test_notebook_on_an_open_model_rep(tmp_path, monkeypatch):
    """A rep of the open model (the default): the notebook names the model and its licence note, with no
    stand-in warning, and runs every cell on its mesh."""
    from headrep.errors import HeadrepError
    from headrep.fitting.synthetic import make_synthetic_rep
    from headrep.model import BodyModel, DenseHead

    try:
        body = BodyModel("open")
    except HeadrepError as exc:  # no registry and no cached wheel
        pytest.skip(f"the open model cannot be built here: {exc}")
    rep = make_synthetic_rep(body, DenseHead(body, levels=1), T=4, seed=1)
    nb = execute_notebook(tmp_path, rep.save(tmp_path / "open.rep"), monkeypatch)
    md = "".join(outputs(nb, "text/markdown"))
    assert "Open head model" in md and "CC0" in md and "NOT SMPL-X" in md and "STAND-IN" not in md
    assert len(outputs(nb, "image/png")) >= 3
