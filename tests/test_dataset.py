"""`headrep dataset fit` on real samples plus broken inputs (on a local Ray with 2 CPUs), resume after an
interruption, the manifest, and the corpus flowing into `transfer train --dataset` / `generator prepare --dataset`.

References are independent of the code under test: single `headrep fit` runs of the same videos and options
(on one thread, as each dataset task), hashlib for the sha256, the samples' known frame counts (REFERENCE.md:
WolfgangLanger 472, single_face 72), the per-rep `transfer train --reps` and `generator prepare --video --rep`.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from headrep.dataset import Manifest, collect_videos, fit_settings, fitted_reps, settings_key

FIT = ["--frames", "0:5", "--coarse-steps", "8", "--detail-epochs", "1", "--window", "4"]
ENV1 = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "HEADREP_PROGRESS_INTERVAL": "2",
        "RAY_USAGE_STATS_ENABLED": "0"}


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "headrep", *map(str, args)], capture_output=True, text=True,
                          env=ENV1, **kw)


def _sample(name):
    from headrep.samples import sample_path

    try:
        return sample_path(name)
    except Exception as exc:  # offline
        pytest.skip(f"sample videos unavailable: {exc}")


def _tensors(rep_dir):
    from safetensors.torch import load_file

    return load_file(str(Path(rep_dir) / "rep.safetensors"))


def _rows(root):
    return {r["id"]: r for r in Manifest(root).read()}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    fake = d / "notes.mp4"
    fake.write_text("this is a text file, not a video\n")
    vids = [_sample("WolfgangLanger_Pexels.mp4"), _sample("single_face.mp4"), _sample("no_face.mp4"), fake]
    lst = d / "videos.txt"
    lst.write_text("# the corpus\n" + "\n".join(str(v) for v in vids[:3]) + "\nnotes.mp4\n")
    return {"list": lst, "videos": vids, "fake": fake}


@pytest.fixture(scope="module")
def fitted(inputs, tmp_path_factory):
    """One dataset run over the list (2 CPUs, 1 per video) and, at the same time, the single-fit references."""
    root = tmp_path_factory.mktemp("ds") / "corpus"
    refs = tmp_path_factory.mktemp("refs")
    singles = {name: subprocess.Popen([sys.executable, "-m", "headrep", "fit", str(v), "-o", str(refs / name)] + FIT,
                                      env=ENV1, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for name, v in (("WolfgangLanger_Pexels", inputs["videos"][0]), ("single_face", inputs["videos"][1]))}
    r = _cli("dataset", "fit", inputs["list"], "-o", root, "--cpus", 2, "--cpus-per-video", 1, *FIT)
    for name, p in singles.items():
        _, err = p.communicate()
        assert p.returncode == 0, err[-2000:]
    return root, refs, r


def test_collect_videos_list_glob_folder(tmp_path):
    for name in ("b.mp4", "a.mov", "sub/c.mkv", "skip.txt.bak", ".hidden/d.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    lst = tmp_path / "l.txt"
    lst.write_text("b.mp4  # a comment\n\n*.mov\nmissing.mp4\nb.mp4\n")
    got = collect_videos([lst, tmp_path / "sub", str(tmp_path / "**" / "*.mkv")])
    assert got == [tmp_path / "b.mp4", tmp_path / "a.mov", tmp_path / "missing.mp4", tmp_path / "sub" / "c.mkv"]
    assert collect_videos([tmp_path]) == [tmp_path / "a.mov", tmp_path / "b.mp4", tmp_path / "sub" / "c.mkv"]
    from headrep.errors import HeadrepError

    with pytest.raises(HeadrepError, match="matches no file"):
        collect_videos([str(tmp_path / "*.avi")])


def test_settings_key_follows_the_settings():
    from headrep.fitting import FitConfig

    a = fit_settings(FitConfig(), "m" * 64, "0:5", 1)
    assert settings_key(a) == settings_key(fit_settings(FitConfig(), "m" * 64, "0:5", 1))
    for other in (fit_settings(FitConfig(seed=1), "m" * 64, "0:5", 1), fit_settings(FitConfig(), "n" * 64, "0:5", 1),
                  fit_settings(FitConfig(), "m" * 64, "0:6", 1), fit_settings(FitConfig(), "m" * 64, "0:5", 2)):
        assert settings_key(other) != settings_key(a)


def test_manifest_rows_survive_concurrent_writers(tmp_path):
    import threading

    m = Manifest(tmp_path)
    m.add([{"id": f"v{i}", "source": f"/v{i}.mp4", "status": "pending"} for i in range(8)])

    def work(i):
        for k in range(5):
            m.update(f"v{i}", attempts=k + 1, status="fitted" if k == 4 else "pending")

    ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    rows = m.read()
    assert [r["id"] for r in rows] == [f"v{i}" for i in range(8)]
    assert all(r["status"] == "fitted" and r["attempts"] == 5 for r in rows)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dataset.jsonl")]  # no temporary left


@pytest.mark.slow
def test_dataset_fit_real_and_broken_videos(fitted, inputs):
    root, refs, r = fitted
    assert r.returncode == 1, r.stderr[-3000:]                       # finished, but some failed
    assert "Traceback" not in r.stderr
    rows = _rows(root)
    assert list(rows) == ["WolfgangLanger_Pexels", "single_face", "no_face", "notes"]
    assert Manifest(root).info()["fit"]["model"] == "standin"         # the default (tests: standin), by name
    assert {k: v["status"] for k, v in rows.items()} == {"WolfgangLanger_Pexels": "fitted", "single_face": "fitted",
                                                         "no_face": "failed", "notes": "failed"}
    assert "no face" in rows["no_face"]["error"] and rows["no_face"]["stage"] == "fit"
    assert "notes.mp4" in rows["notes"]["error"] and "cannot read video" in rows["notes"]["error"]
    for rid in ("no_face", "notes"):                                   # the failures are printed, with their errors
        assert rid in r.stderr and rows[rid]["error"][:40] in r.stderr
        assert not (root / "reps" / rid).exists()                       # nothing half-written
    for rid, frames in (("WolfgangLanger_Pexels", 472), ("single_face", 72)):
        row = rows[rid]
        assert row["sha256"] == hashlib.sha256(Path(row["source"]).read_bytes()).hexdigest()
        assert row["frames"] == frames
        assert row["rep"] == f"reps/{rid}" and row["metrics"]["frames_fitted"] == 5
        assert row["fit"]["threads"] == 1 and row["fit"]["peak_rss_mb"] > 100
        # the same rep, bit for bit, as a single `headrep fit` with the same options on one thread
        a, b = _tensors(root / row["rep"]), _tensors(refs / rid)
        assert sorted(a) == sorted(b)
        for k in a:
            assert torch.equal(a[k], b[k]), (rid, k)
        ref_stats = json.loads((refs / rid / "rep.json").read_text())["fit"]["stats"]["detail"]
        assert row["metrics"]["landmark_nme"] == pytest.approx(ref_stats["landmark_nme"], rel=1e-6)
    assert "WolfgangLanger_Pexels" in r.stdout and "fitted" in r.stdout and "failed" in r.stdout  # the table
    assert "2 fitted, 2 failed" in r.stdout
    assert fitted_reps(root) == [root / "reps/WolfgangLanger_Pexels", root / "reps/single_face"]


@pytest.mark.slow
def test_rerun_skips_done_videos_and_status(fitted):
    root, _, _ = fitted
    before = {k: (v["fit"], v["attempts"]) for k, v in _rows(root).items()}
    r = _cli("dataset", "fit", "-o", root, "--resume")               # recorded settings reused: nothing to do
    assert r.returncode == 1 and "4 skipped" in r.stdout, r.stderr[-2000:]
    assert {k: (v["fit"], v["attempts"]) for k, v in _rows(root).items()} == before
    r = _cli("dataset", "fit", "x.mp4", "-o", root)
    assert r.returncode == 2 and "--resume" in r.stderr                # an existing dataset needs --resume
    r = _cli("dataset", "status", root, "--failed")
    assert r.returncode == 0 and "no_face" in r.stdout and "single_face" not in r.stdout
    assert "2 fitted, 2 failed" in r.stdout


@pytest.mark.slow
def test_interrupted_run_resumes_without_refitting(tmp_path):
    """Kill the driver (SIGTERM) after the first video is fitted; --resume fits the rest, not the first again."""
    vids = [_sample("single_face.mp4"), _sample("WolfgangLanger_Pexels.mp4")]
    root = tmp_path / "ds"
    args = [sys.executable, "-m", "headrep", "dataset", "fit", *map(str, vids), "-o", str(root), "--cpus", "1", *FIT]
    p = subprocess.Popen(args, env=ENV1, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and p.poll() is None:
        if (root / "dataset.jsonl").exists() and any(r["status"] == "fitted" for r in Manifest(root).read()):
            break
        time.sleep(0.5)
    assert p.poll() is None, p.communicate()[1][-3000:]
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-3000:]
    assert "--resume" in err
    rows = _rows(root)
    assert rows["single_face"]["status"] == "fitted" and rows["WolfgangLanger_Pexels"]["status"] == "pending"
    first = rows["single_face"]["fit"]
    mtime = (root / "reps/single_face/rep.safetensors").stat().st_mtime_ns
    r = _cli("dataset", "fit", "-o", root, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(root)
    assert all(v["status"] == "fitted" for v in rows.values())
    assert rows["single_face"]["fit"] == first and rows["single_face"]["attempts"] == 1
    assert (root / "reps/single_face/rep.safetensors").stat().st_mtime_ns == mtime
    assert "1 skipped" in r.stdout


@pytest.mark.slow
def test_transfer_train_dataset_equals_reps(fitted, tmp_path):
    from transfer.cli import main
    from transfer.model import TransferModel

    root = fitted[0]
    small = ["--epochs", "2", "--hidden", "16", "--code", "8", "--vertices-per-step", "64", "--threads", "1",
             "--device", "cpu", "--val-fraction", "0.2"]
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert main(["train", "--dataset", str(root), "-o", str(a)] + small) == 0
    assert main(["train", "--reps", str(root / "reps/WolfgangLanger_Pexels"), str(root / "reps/single_face"),
                 "-o", str(b)] + small) == 0
    ma, mb = TransferModel.load(a), TransferModel.load(b)
    for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(x, y), k
    assert ma.training_info["reps"] == mb.training_info["reps"]
    assert main(["train", "--dataset", str(tmp_path), "-o", str(tmp_path / "c.safetensors")] + small) == 2


@pytest.mark.slow
def test_generator_prepare_dataset_equals_per_rep(fitted, tmp_path):
    from generator.cli import main
    from generator.data import ClipDataset

    root = fitted[0]
    assert main(["prepare", "--dataset", str(root), "--resolution", "64", "--cpus", "2"]) == 0
    rows = _rows(root)
    assert rows["single_face"]["status"] == "prepared" and rows["single_face"]["clip"] == "clips/single_face"
    assert rows["no_face"]["status"] == "failed" and rows["no_face"]["clip"] is None
    for rid in ("WolfgangLanger_Pexels", "single_face"):
        own = tmp_path / rid
        r = subprocess.run([sys.executable, "-m", "generator.cli", "prepare", "--video", rows[rid]["source"], "--rep",
                            str(root / rows[rid]["rep"]), "-o", str(own), "--resolution", "64"],
                           capture_output=True, text=True, env=ENV1)     # one thread, as the dataset's tasks
        assert r.returncode == 0, r.stderr[-2000:]
        clip = root / rows[rid]["clip"]
        names = sorted(p.name for p in own.iterdir())
        assert names == sorted(p.name for p in clip.iterdir())
        for name in names:
            if name.endswith(".npy"):
                assert np.array_equal(np.load(own / name), np.load(clip / name)), (rid, name)
        ja, jb = json.loads((own / "clip.json").read_text()), json.loads((clip / "clip.json").read_text())
        for k in ("source", "rep", "frames", "reference", "resolution"):
            assert ja[k] == jb[k], k
    ds = ClipDataset(root / "clips", 5, 64, "normal_depth")          # `generator train --data DATASET/clips`
    assert len(ds.clips) == 2
    assert len(ClipDataset(root, 5, 64, "normal_depth").clips) == 2   # or the dataset folder itself
    # a second run has nothing to do
    assert main(["prepare", "--dataset", str(root), "--resolution", "64"]) == 0


def _job(kind: str, marker: str) -> dict:
    """A task body for test_run_tasks_...: counts its attempts in ``marker``, then does what ``kind`` says."""
    import numba

    from headrep.errors import HeadrepError

    p = Path(marker)
    n = int(p.read_text()) + 1 if p.exists() else 1
    p.write_text(str(n))
    if kind == "input":
        raise HeadrepError("no face here")
    if kind == "boom":
        raise RuntimeError(f"boom {n}")
    if kind == "crash":
        os._exit(3)
    return {"torch": torch.get_num_threads(), "numba": numba.get_num_threads(), "omp": os.environ["OMP_NUM_THREADS"]}


@pytest.mark.slow
def test_run_tasks_retries_crashes_not_input_errors(tmp_path):
    import ray
    import ray.cloudpickle

    from headrep.dataset import ray_session, run_tasks

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # workers cannot import this test module
    got = {}
    jobs = [(k, {"kind": k, "marker": str(tmp_path / k)}) for k in ("ok", "input", "boom", "crash")]
    with ray_session(num_cpus=2, threads=1):
        run_tasks(_job, jobs, lambda k, r: got.setdefault(k, r), cpus=1, max_retries=1)
    assert not ray.is_initialized()                                     # the local Ray is stopped
    attempts = {k: int((tmp_path / k).read_text()) for k in got}
    assert got["ok"]["ok"] and (got["ok"]["torch"], got["ok"]["numba"], got["ok"]["omp"]) == (1, 1, "1")
    assert got["ok"]["threads"] == 1 and got["ok"]["peak_rss_mb"] > 10
    assert not got["input"]["ok"] and got["input"]["error"] == "no face here" and attempts["input"] == 1
    assert not got["boom"]["ok"] and got["boom"]["error"].startswith("RuntimeError: boom 2") and attempts["boom"] == 2
    assert "RuntimeError: boom 2" in got["boom"]["traceback"]
    assert not got["crash"]["ok"] and attempts["crash"] == 2 and got["crash"]["error"]
    print(got["crash"]["error"])
